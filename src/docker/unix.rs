//! Engine API calls over the unix socket on kept-alive connections.
//!
//! bollard's own unix client opens a connection for every call (it sets
//! `pool_max_idle_per_host(0)`): a connect, an HTTP handshake, a
//! connection task and a close for each inspect, and handlers make one on
//! most exec starts and on every container create. This client keeps up
//! to [`MAX_IDLE`] idle connections for [`IDLE_TIMEOUT`] and reuses them.
//! hyper's pool hands out only a connection whose previous response is
//! complete (a streamed body keeps its connection to itself), drops one the
//! engine or a socket proxy closed, and sends again only a request that
//! never left. The event stream does not use it: it has a connection of
//! its own (`source/http.rs`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::BollardRequest;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;

use super::engine::{Engine, Transport};
use super::reads::Reads;

/// Idle connections kept: as many as handler runs in flight at once
/// (`[dispatch] max_concurrency`, 64 by default), each making at most one
/// call at a time. With fewer, every burst closes the surplus and the next
/// one connects again (8 made the pipeline bench open 25 k connections for
/// 45 k calls in 10 s). An idle connection costs dockerd one goroutine.
pub const MAX_IDLE: usize = 64;
/// An idle connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The authority of every request URI: one pool for the one socket.
const AUTHORITY: &str = "http://docker.sock";

/// Connects every new connection to the socket at `path`: the connector of
/// a hyper client over a unix socket.
#[derive(Clone)]
pub struct Connector {
    path: Arc<PathBuf>,
}

impl Connector {
    pub fn new(path: impl Into<PathBuf>) -> Connector {
        Connector {
            path: Arc::new(path.into()),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(&*path).await?)) })
    }
}

/// A client for the socket at `path` (which must exist, as for bollard's
/// own), whose calls share kept-alive connections.
pub fn client(path: PathBuf, timeout_secs: u64) -> Result<Engine, bollard::errors::Error> {
    if !path.exists() {
        return Err(bollard::errors::Error::SocketNotFoundError(
            path.display().to_string(),
        ));
    }
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_max_idle_per_host(MAX_IDLE)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_timer(hyper_util::rt::TokioTimer::new());
    let path = Arc::new(path);
    let reads = Reads::new(path.clone());
    let http = Arc::new(builder.build(Connector { path }));
    let transport: Transport = Arc::new(move |request: BollardRequest| {
        let http = http.clone();
        Box::pin(async move {
            http.request(request)
                .await
                .map_err(bollard::errors::Error::from)
        })
    });
    Ok(Engine::new(transport, AUTHORITY, timeout_secs)?.reading_with(reads))
}
