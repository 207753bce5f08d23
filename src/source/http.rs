//! One HTTP request from the source to the engine: connect over the unix
//! socket, TCP, or TCP with TLS (the configuration the bollard client uses
//! too, from [`crate::docker::tls`]), `GET`, check the status, and the body
//! read in the reader's own task ([`crate::docker::http1`]).
//!
//! The source speaks HTTP itself rather than through bollard's `events()`,
//! whose closed `Type` enum ends the whole stream on an event type it does
//! not know, and rather than through hyper, which hands every chunk (one
//! per event) from a connection task of its own to the reader's task. This
//! file owns the connection, the request, and turning HTTP failures into
//! [`SourceError`]s. It must not interpret a successful body: reading the
//! stream is the session's job.

use std::fmt::Display;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::SourceError;
use crate::docker::http1::{Body, parse_head};
use crate::docker::{DockerError, Endpoint};

/// How long connecting and receiving the response headers may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

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

/// The body of an answer, read from its connection in the reader's task.
pub(super) struct Stream {
    io: Box<dyn Io>,
    /// Read from the socket, not yet taken.
    buf: BytesMut,
    body: Body,
}

/// How much a socket read asks for: a burst's worth of events.
const READ_BYTES: usize = 64 * 1024;

impl Stream {
    /// Waits for the socket to have more of the body, and reads it: how
    /// many bytes (0 when the connection ended).
    pub(super) async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_BYTES / 4 {
            self.buf.reserve(READ_BYTES);
        }
        self.io.read_buf(&mut self.buf).await
    }

    /// Hands what was read of the body to `out`; true once it is complete.
    pub(super) fn drain(&mut self, out: &mut impl FnMut(&[u8])) -> std::io::Result<bool> {
        self.body.take(&mut self.buf, out)
    }

    /// The connection ended: whether the body was complete.
    pub(super) fn ended(&mut self) -> std::io::Result<()> {
        self.body.at_eof()
    }

    /// The rest of the body, to its end.
    async fn read_to_end(mut self, max: usize) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            let done = self.drain(&mut |d| {
                let room = max.saturating_sub(all.len());
                all.extend_from_slice(&d[..d.len().min(room)]);
            })?;
            if done {
                return Ok(all);
            }
            if self.fill().await? == 0 {
                self.ended()?;
            }
        }
    }
}

/// Opens `GET path` on a fresh connection and checks the status; the body
/// is read from the returned stream.
pub(super) async fn open(endpoint: &Endpoint, path: &str) -> Result<Stream, SourceError> {
    let (mut io, host): (Box<dyn Io>, &str) = match endpoint {
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
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dockwarden/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    // With TLS 1.3 the engine judges our certificate after the handshake:
    // its refusal arrives here, and is named like any TLS failure.
    let broken = |e: std::io::Error| {
        if crate::docker::tls_failure(&e).is_some() {
            SourceError::from(endpoint.unreachable(&e))
        } else {
            failed(endpoint, &e)
        }
    };
    io.write_all(request.as_bytes()).await.map_err(broken)?;
    let mut buf = BytesMut::with_capacity(READ_BYTES);
    let head = loop {
        if io.read_buf(&mut buf).await.map_err(broken)? == 0 {
            return Err(failed(
                endpoint,
                &"the connection closed before the engine answered",
            ));
        }
        if let Some(head) = parse_head(&buf).map_err(|e| failed(endpoint, &e))? {
            break head;
        }
    };
    buf.advance(head.len);
    let stream = Stream {
        io,
        buf,
        body: Body::new(head.framing),
    };
    if !(200..300).contains(&head.status) {
        let body = stream.read_to_end(512).await.unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_owned();
        return Err(DockerError::Status {
            endpoint: endpoint.to_string(),
            status: head.status,
            message,
        }
        .into());
    }
    Ok(stream)
}

/// `GET path` on a fresh connection, read to its end (for a bounded
/// request such as `/events?until=…`).
pub(super) async fn get_all(endpoint: &Endpoint, path: &str) -> Result<Vec<u8>, SourceError> {
    open(endpoint, path)
        .await?
        .read_to_end(usize::MAX)
        .await
        .map_err(|e| failed(endpoint, &e))
}
