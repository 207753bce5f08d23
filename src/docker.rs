//! Where the engine is and how to reach it.
//!
//! [`Endpoint`] comes from `DOCKER_HOST` and the rules file's `[engine]`
//! (else `/var/run/docker.sock`; with TLS as the docker CLI reads it, see
//! [`settings`] and [`tls`]) and is used both by the event source's own
//! streaming connection and by the bollard client handlers use.
//! [`DockerHandle`] holds that client once the source has connected and
//! negotiated the API version. [`reason`] turns a connection failure into
//! the one word an operator needs: missing, permission denied, refused,
//! unknown CA. [`retry`] is the one retry of a call that got no answer.
//!
//! It must not decide what to call or when: handlers and the source do.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub mod engine;
pub mod http1;
pub mod reads;
pub mod settings;
pub mod tls;
pub mod unix;

pub use engine::{Engine, Transport};
pub use settings::EngineConfig;
pub use tls::TlsEndpoint;

/// Default engine socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Seconds bollard waits for response headers on an API call.
const API_TIMEOUT_SECS: u64 = 60;

/// How to reach the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path/to/docker.sock`
    Unix(PathBuf),
    /// `tcp://host:port` or `http://host:port` (plain HTTP).
    Tcp(String),
    /// `tcp://host:port` with TLS (`DOCKER_TLS_VERIFY`).
    Tls(TlsEndpoint),
}

/// Errors about reaching the engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("unsupported DOCKER_HOST \"{host}\": {why}")]
    BadHost { host: String, why: &'static str },
    #[error("Cannot reach Docker at {endpoint}: {reason} ({detail})")]
    Unreachable {
        endpoint: String,
        reason: &'static str,
        detail: String,
    },
    #[error("Docker at {endpoint} answered {status}: {message}")]
    Status {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("Docker is not connected yet")]
    NotConnected,
    #[error("{why}")]
    BadTls { why: String },
    #[error("{error} (from {from})")]
    TlsFile { from: String, error: tls::FileError },
}

impl DockerError {
    /// A fixed string for metric labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            DockerError::BadHost { .. } => "bad_host",
            DockerError::Unreachable { reason, .. } => reason,
            DockerError::Status { .. } => "status",
            DockerError::NotConnected => "not_connected",
            DockerError::BadTls { .. } => "bad_tls",
            DockerError::TlsFile { .. } => "tls_file",
        }
    }
}

impl Endpoint {
    /// From the environment alone (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`,
    /// `DOCKER_CERT_PATH`), else the default socket.
    pub fn from_env() -> Result<Endpoint, DockerError> {
        Endpoint::resolve(&EngineConfig::default())
    }

    /// From the environment, else the rules file's `[engine]`, else the
    /// default socket.
    pub fn resolve(config: &EngineConfig) -> Result<Endpoint, DockerError> {
        settings::resolve(config, &|key| std::env::var(key).ok())
    }

    /// A `DOCKER_HOST` value, as plain `unix://` or `tcp://`; whether TCP
    /// gets TLS is [`Endpoint::resolve`]'s decision.
    pub fn parse(host: &str) -> Result<Endpoint, DockerError> {
        let bad = |why| DockerError::BadHost {
            host: host.to_owned(),
            why,
        };
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("the unix:// address has no path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        for scheme in ["tcp://", "http://"] {
            if let Some(rest) = host.strip_prefix(scheme) {
                let addr = rest.trim_end_matches('/');
                if addr.is_empty() {
                    return Err(bad("the address has no host"));
                }
                let addr = if addr.contains(':') {
                    addr.to_owned()
                } else {
                    format!("{addr}:2375")
                };
                return Ok(Endpoint::Tcp(addr));
            }
        }
        if host.starts_with("https://") {
            return Err(bad(
                "for TLS use tcp://host:port with DOCKER_TLS_VERIFY=1 (or [engine] tls_verify)",
            ));
        }
        Err(bad("expected unix:///path or tcp://host:port"))
    }

    /// A client for this endpoint, at bollard's default API version
    /// (negotiate before use). Fails if a unix socket does not exist.
    pub fn client(&self) -> Result<Engine, DockerError> {
        let made = match self {
            Endpoint::Unix(path) => unix::client(path.clone(), API_TIMEOUT_SECS),
            Endpoint::Tcp(addr) => tcp_client(addr),
            Endpoint::Tls(tls) => return tls.client(API_TIMEOUT_SECS),
        };
        made.map_err(|e| self.unreachable(&e))
    }

    /// Wraps a connection failure with the endpoint and the reason; a
    /// failed TLS handshake is named for its cause (unknown CA, …).
    pub fn unreachable(&self, err: &(dyn std::error::Error + 'static)) -> DockerError {
        let (reason, detail) = match tls_failure(err) {
            Some(e) => {
                let tls = match self {
                    Endpoint::Tls(t) => Some(t),
                    _ => None,
                };
                tls::explain(e, tls)
            }
            None => (reason(err), innermost(err)),
        };
        DockerError::Unreachable {
            endpoint: self.to_string(),
            reason,
            detail,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Tls(t) => write!(f, "tcp://{} (TLS)", t.addr),
        }
    }
}

/// Every error in `err`'s chain, including those that wrappers hide from
/// `source()`: an `io::Error`'s payload (where tokio-rustls puts rustls's
/// error) and what bollard's transparent I/O and hyper errors wrap.
fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
    out: &mut Vec<&'a (dyn std::error::Error + 'static)>,
) {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if out.len() > 32 {
            return;
        }
        out.push(e);
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            causes(inner, out);
        }
        match e.downcast_ref::<bollard::errors::Error>() {
            Some(bollard::errors::Error::IOError { err }) => causes(err, out),
            Some(bollard::errors::Error::HyperResponseError { err }) => causes(err, out),
            _ => {}
        }
        cur = e.source();
    }
}

/// A client for the engine at `addr` over plain HTTP, on kept-alive
/// connections (as bollard's own HTTP client).
fn tcp_client(addr: &str) -> Result<Engine, bollard::errors::Error> {
    use hyper_util::client::legacy::{Client, connect::HttpConnector};
    let http =
        Arc::new(Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new()));
    let transport: Transport = Arc::new(move |request: bollard::BollardRequest| {
        let http = http.clone();
        Box::pin(async move {
            http.request(request)
                .await
                .map_err(bollard::errors::Error::from)
        })
    });
    Engine::new(transport, &format!("http://{addr}"), API_TIMEOUT_SECS)
}

/// The TLS failure behind `err`, if that is what it is.
pub fn tls_failure<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut all = Vec::new();
    causes(err, &mut all);
    all.into_iter()
        .find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// The one word an operator needs about a failed connection.
pub fn reason(err: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut all = Vec::new();
    causes(err, &mut all);
    if let Some(e) = all.iter().find_map(|e| e.downcast_ref::<rustls::Error>()) {
        return tls::explain(e, None).0;
    }
    for e in all {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::NotFound => "socket missing",
                io::ErrorKind::PermissionDenied => "permission denied",
                io::ErrorKind::ConnectionRefused => "connection refused",
                io::ErrorKind::TimedOut => "timed out",
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => "connection lost",
                _ => "I/O error",
            };
        }
        if let Some(bollard::errors::Error::SocketNotFoundError(_)) =
            e.downcast_ref::<bollard::errors::Error>()
        {
            return "socket missing";
        }
    }
    "error"
}

/// The innermost message of an error chain: the OS's own words.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut all = Vec::new();
    causes(err, &mut all);
    all.last()
        .map_or_else(|| err.to_string(), |e| e.to_string())
}

/// `docker` for a call that may wait out a container's stop timeout (a
/// restart, stop or recreate): the usual limit on top of it, so a long
/// graceful stop is not reported as failed while the engine is still
/// stopping the container (docker-autoheal's #119).
pub fn outliving_stop(docker: &Engine, stop_timeout_secs: u32) -> Engine {
    docker.with_timeout(std::time::Duration::from_secs(
        API_TIMEOUT_SECS + u64::from(stop_timeout_secs),
    ))
}

/// The bollard client handlers use, set once the source has negotiated.
#[derive(Clone, Default)]
pub struct DockerHandle {
    inner: Arc<RwLock<Option<Engine>>>,
    /// Wakes [`DockerHandle::connected`] at each `set`.
    set_signal: Arc<tokio::sync::Notify>,
}

impl DockerHandle {
    /// The client, once there is one: waits for the first connect without
    /// polling (an engine that stays down must not keep waking the
    /// process).
    pub async fn connected(&self) -> Engine {
        loop {
            let notified = self.set_signal.notified();
            tokio::pin!(notified);
            // Registered before looking, so a `set` in between is not missed.
            notified.as_mut().enable();
            if let Ok(engine) = self.get() {
                return engine;
            }
            notified.await;
        }
    }

    /// The client, or [`DockerError::NotConnected`] before the first connect.
    pub fn get(&self) -> Result<Engine, DockerError> {
        self.inner
            .read()
            .map_err(|_| DockerError::NotConnected)?
            .clone()
            .ok_or(DockerError::NotConnected)
    }

    pub fn set(&self, docker: Engine) {
        if let Ok(mut slot) = self.inner.write() {
            *slot = Some(docker);
        }
        self.set_signal.notify_waiters();
    }
}

/// Retries an engine call that failed on the way (a dropped connection), not
/// one the engine answered (404): enrichment should survive a blip.
pub async fn retry<T, F, Fut>(mut call: F) -> Result<T, bollard::errors::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, bollard::errors::Error>>,
{
    let mut last = None;
    for delay_ms in [0u64, 50, 250] {
        if delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        }
        match call().await {
            Ok(v) => return Ok(v),
            Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(bollard::errors::Error::RequestTimeoutError))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_host_forms() {
        assert_eq!(
            Endpoint::parse("unix:///run/d.sock").ok(),
            Some(Endpoint::Unix(PathBuf::from("/run/d.sock")))
        );
        assert_eq!(
            Endpoint::parse("tcp://10.0.0.1:2375").ok(),
            Some(Endpoint::Tcp("10.0.0.1:2375".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://docker").ok(),
            Some(Endpoint::Tcp("docker:2375".into()))
        );
        assert!(Endpoint::parse("ssh://host").is_err());
        assert!(Endpoint::parse("unix://").is_err());
        assert_eq!(
            Endpoint::Unix(PathBuf::from("/x.sock")).to_string(),
            "unix:///x.sock"
        );
    }

    #[test]
    fn reasons_name_the_failure() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(reason(&e), "socket missing");
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(reason(&e), "permission denied");
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(reason(&e), "connection refused");
    }
}

/// The API calls dockwarden makes, and telling a socket proxy's refusal.
pub mod calls;
