//! The engine's API as handlers call it: bollard's client, and the two reads
//! that handlers make on most events, done on the same transport without
//! bollard.
//!
//! With the default rules every `exec_start` costs an exec inspect and
//! every `create` a container inspect (the exec audit verifies what the
//! event cannot tell). bollard builds each request through `url` (parse,
//! join, percent-encode) and decodes a container's whole inspect, dozens of
//! `HostConfig` fields, networks and mounts, into owned values, when the
//! view keeps a few of them: at an offered 100 k events/s that was a sixth
//! of the handlers' thread. [`Engine::inspect_exec`] and
//! [`Engine::inspect_container_as`] send the same `GET` on the same
//! connections, and the latter decodes only the shape its caller asks for
//! (the container view's). Their errors are bollard's (a refusal is `DockerResponseServerError`, as the callers'
//! retry and denial reporting expect). A recreate's create goes through
//! [`Engine::create_container_json`], for a field bollard's model lacks.
//! Every other call is bollard's ([`Engine`] derefs to [`Docker`]).
//!
//! It must not decide what to call or when: handlers do.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error;
use bollard::models::ExecInspectResponse;
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;

use super::reads::Reads;

/// What sends one request to the engine and gives back its response: the
/// kept-alive unix client, a TLS connection of its own, or plain HTTP.
pub type Transport = Arc<
    dyn Fn(
            BollardRequest,
        )
            -> Pin<Box<dyn Future<Output = Result<hyper::Response<Incoming>, Error>> + Send>>
        + Send
        + Sync,
>;

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
/// IDs are hex; anything else is escaped, as bollard's `url` would.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An answer's JSON as `T`. The body is checked as UTF-8 once, as a whole:
/// serde_json's slice reader checks every string it takes on its own (a
/// container's inspect has scores of them). A body that is not UTF-8 is
/// read as a slice again, for serde_json to say where.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// `id` as one path segment; `.`, `..` and nothing are no ID.
fn segment(id: &str) -> Result<String, Error> {
    if matches!(id, "" | "." | "..") {
        return Err(Error::IOError {
            err: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not an ID: {id:?}"),
            ),
        });
    }
    Ok(utf8_percent_encode(id, SEGMENT).to_string())
}

/// bollard's client and the transport under it. A clone is a reference
/// count: every handler run takes one.
#[derive(Clone)]
pub struct Engine(Arc<Parts>);

#[derive(Clone)]
struct Parts {
    docker: Docker,
    transport: Transport,
    /// What bollard puts before `/v1.NN/…`: `http://docker.sock`,
    /// `http://host:port`, `https://host:port`.
    base: Arc<str>,
    /// How long the response headers may take (bollard's timeout).
    timeout: Duration,
    /// Over the unix socket, [`get`](Engine::get) reads in its own task
    /// ([`Reads`]); else through `transport`.
    reads: Option<Arc<Reads>>,
}

impl Deref for Engine {
    type Target = Docker;

    fn deref(&self) -> &Docker {
        &self.0.docker
    }
}

/// The engine's error body, `{"message": "…"}`.
#[derive(serde::Deserialize)]
struct ServerMessage {
    message: String,
}

impl Engine {
    /// A client whose every request goes through `transport`, to `base`
    /// (scheme and authority), at bollard's default API version until
    /// [`negotiate_version`](Engine::negotiate_version).
    pub fn new(transport: Transport, base: &str, timeout_secs: u64) -> Result<Engine, Error> {
        let send = transport.clone();
        let docker = Docker::connect_with_custom_transport(
            move |request: BollardRequest| send(request),
            Some(base),
            timeout_secs,
            API_DEFAULT_VERSION,
        )?;
        Ok(Engine(Arc::new(Parts {
            docker,
            transport,
            base: base.into(),
            timeout: Duration::from_secs(timeout_secs),
            reads: None,
        })))
    }

    /// The same client, its reads of [`get`](Engine::get) done by `reads`.
    pub fn reading_with(self, reads: Reads) -> Engine {
        Engine(Arc::new(Parts {
            reads: Some(Arc::new(reads)),
            ..Arc::unwrap_or_clone(self.0)
        }))
    }

    /// The same client, every call allowed `timeout` (bollard's calls and
    /// this client's own).
    pub fn with_timeout(&self, timeout: Duration) -> Engine {
        Engine(Arc::new(Parts {
            docker: self.0.docker.clone().with_timeout(timeout),
            timeout,
            ..(*self.0).clone()
        }))
    }

    /// Asks the engine which API version to speak, as bollard does.
    pub async fn negotiate_version(self) -> Result<Engine, Error> {
        let docker = self.0.docker.clone().negotiate_version().await?;
        Ok(Engine(Arc::new(Parts {
            docker,
            ..Arc::unwrap_or_clone(self.0)
        })))
    }

    /// `GET /containers/{id}/json`, decoded as `T`: a shape with only the
    /// fields its caller reads (the container view's) skips the rest.
    pub async fn inspect_container_as<T: DeserializeOwned>(&self, id: &str) -> Result<T, Error> {
        let path = format!("/containers/{}/json", segment(id)?);
        let body = self.get(&path).await?;
        Ok(decode(&body)?)
    }

    /// `GET /containers/json?all=1`, each container decoded as `T`: the
    /// listing of every container, of which a resync reads IDs and names.
    pub async fn list_containers_as<T: DeserializeOwned>(&self) -> Result<Vec<T>, Error> {
        let body = self.get("/containers/json?all=1").await?;
        Ok(decode(&body)?)
    }

    /// `GET /exec/{id}/json`.
    pub async fn inspect_exec(&self, id: &str) -> Result<ExecInspectResponse, Error> {
        let path = format!("/exec/{}/json", segment(id)?);
        let body = self.get(&path).await?;
        Ok(decode(&body)?)
    }

    /// `POST /containers/create?name={name}` with `body` as it is: for
    /// what bollard's model of the request cannot carry (a fixed MAC
    /// address is `Config.MacAddress` below API 1.44, and its model has no
    /// such field). The new container's ID.
    pub async fn create_container_json(
        &self,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<String, Error> {
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let path = format!(
            "/containers/create?name={}",
            utf8_percent_encode(name, SEGMENT)
        );
        let json = Bytes::from(serde_json::to_vec(body)?);
        let answer = self.send(hyper::Method::POST, &path, json).await?;
        Ok(decode::<Created>(&answer)?.id)
    }

    /// `GET /v1.NN{path}`: the body of a successful answer; any other is
    /// an error as bollard makes it (the engine's message, else its body).
    async fn get(&self, path: &str) -> Result<Bytes, Error> {
        self.send(hyper::Method::GET, path, Bytes::new()).await
    }

    /// `method /v1.NN{path}` with `body` (JSON, or nothing); over the unix
    /// socket a `GET` goes through [`Reads`], anything else through the
    /// transport bollard uses.
    async fn send(&self, method: hyper::Method, path: &str, body: Bytes) -> Result<Bytes, Error> {
        let version = self.0.docker.client_version();
        let target = format!(
            "/v{}.{}{path}",
            version.major_version, version.minor_version
        );
        let (status, body) = match &self.0.reads {
            Some(reads) if method == hyper::Method::GET => {
                let answer = reads.get(&target, self.0.timeout).await?;
                (answer.status, answer.body)
            }
            _ => {
                let request = hyper::Request::builder()
                    .method(method)
                    .uri(format!("{}{target}", self.0.base))
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(bollard::body_full(body))?;
                let response = tokio::time::timeout(self.0.timeout, (self.0.transport)(request))
                    .await
                    .map_err(|_| Error::RequestTimeoutError)??;
                let status = response.status().as_u16();
                (status, response.into_body().collect().await?.to_bytes())
            }
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = match serde_json::from_slice::<ServerMessage>(&body) {
            Ok(m) => m.message,
            Err(_) => String::from_utf8_lossy(&body).into_owned(),
        };
        Err(Error::DockerResponseServerError {
            status_code: status,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        let seg = |s| segment(s).ok();
        assert_eq!(seg("3f2a9c01").as_deref(), Some("3f2a9c01"));
        assert_eq!(seg("web-1_a.b~c").as_deref(), Some("web-1_a.b~c"));
        assert_eq!(seg("../../_ping").as_deref(), Some("..%2F..%2F_ping"));
        assert_eq!(seg("a?b#c d").as_deref(), Some("a%3Fb%23c%20d"));
        for no_id in ["", ".", ".."] {
            assert_eq!(seg(no_id), None, "{no_id:?}");
        }
    }

    #[test]
    fn an_answer_decodes_whole_and_a_bad_byte_is_placed() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Named {
            #[serde(rename = "Name")]
            name: String,
        }
        let named = |body: &[u8]| decode::<Named>(body);
        assert_eq!(
            named(br#"{"Name":"/w\u00e9b","Id":"x"}"#).expect("JSON"),
            Named {
                name: "/w\u{e9}b".into()
            }
        );
        assert_eq!(
            named("{\"Name\":\"/caf\u{e9}\"}".as_bytes()).expect("UTF-8"),
            Named {
                name: "/caf\u{e9}".into()
            }
        );
        let bad = named(b"{\n\"Name\": \"/ab\xffc\"}").expect_err("not UTF-8");
        assert_eq!((bad.line(), bad.column()), (2, 13), "{bad}");
        assert!(bad.to_string().contains("invalid unicode"), "{bad}");
    }
}
