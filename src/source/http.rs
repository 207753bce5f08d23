//! One HTTP request from the source to the engine: connect over the unix
//! socket, TCP, or TCP with TLS (the configuration the bollard client uses
//! too, from [`crate::docker::tls`]), hyper's HTTP/1 handshake, `GET`, check
//! the status.
//!
//! The source speaks HTTP itself rather than through bollard's `events()`,
//! whose closed `Type` enum ends the whole stream on an event type it does
//! not know. This file owns the connection task (aborted when its owner
//! drops it), the time allowed to connect, and turning HTTP failures into
//! [`SourceError`]s. It must not interpret a successful body: reading the
//! stream is the session's job.

use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use super::SourceError;
use crate::docker::{DockerError, Endpoint};

/// How long connecting and receiving the response headers may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Aborts the HTTP connection task when the session ends.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `what` (e.g. `the events request`) took longer than [`CONNECT_TIMEOUT`].
pub(super) fn timed_out(endpoint: &Endpoint, what: &'static str) -> SourceError {
    SourceError::Timeout {
        endpoint: endpoint.to_string(),
        what,
        secs: CONNECT_TIMEOUT.as_secs(),
    }
}

/// An HTTP failure talking to `endpoint`.
pub(super) fn failed(endpoint: &Endpoint, e: &dyn Display) -> SourceError {
    SourceError::Http {
        endpoint: endpoint.to_string(),
        detail: e.to_string(),
    }
}

/// Opens `GET path` on a fresh connection and checks the status; the body
/// streams as long as the returned guard is kept.
pub(super) async fn open(
    endpoint: &Endpoint,
    path: &str,
) -> Result<(Incoming, AbortOnDrop), SourceError> {
    let (io, host): (Box<dyn Io>, &str) = match endpoint {
        Endpoint::Unix(p) => (
            Box::new(
                UnixStream::connect(p)
                    .await
                    .map_err(|e| endpoint.unreachable(&e))?,
            ),
            "docker",
        ),
        Endpoint::Tcp(addr) => (
            Box::new(
                TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| endpoint.unreachable(&e))?,
            ),
            addr.as_str(),
        ),
        Endpoint::Tls(tls) => {
            // The files are read at each connection: renewed ones are used.
            let connector = tls.connector()?;
            (
                Box::new(
                    tls.connect(&connector)
                        .await
                        .map_err(|e| endpoint.unreachable(&e))?,
                ),
                tls.addr.as_str(),
            )
        }
    };
    let http = |e: &dyn Display| failed(endpoint, e);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| http(&e))?;
    let conn = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "Event stream connection closed.");
        }
    }));
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(
            hyper::header::USER_AGENT,
            concat!("dockwarden/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(&e))?;
    // With TLS 1.3 the engine judges our certificate after the handshake:
    // its refusal arrives here, and is named like any TLS failure.
    let response = sender.send_request(request).await.map_err(|e| {
        if crate::docker::tls_failure(&e).is_some() {
            SourceError::from(endpoint.unreachable(&e))
        } else {
            http(&e)
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&body[..body.len().min(512)])
            .trim()
            .to_owned();
        return Err(DockerError::Status {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            message,
        }
        .into());
    }
    Ok((response.into_body(), conn))
}

/// `GET path` on a fresh connection, read to its end (for a bounded
/// request such as `/events?until=…`).
pub(super) async fn get_all(endpoint: &Endpoint, path: &str) -> Result<Bytes, SourceError> {
    let (body, _conn) = open(endpoint, path).await?;
    Ok(body
        .collect()
        .await
        .map_err(|e| failed(endpoint, &e))?
        .to_bytes())
}
