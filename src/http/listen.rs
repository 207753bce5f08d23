//! Serving the router on the listen address: as before without
//! `--web-config`; with one, through the [`guard`](super::guard) and, when
//! the file turns TLS on, over TLS (tokio-rustls, ring).
//!
//! axum's own `serve` runs both, so graceful shutdown is the same: stop
//! accepting, let open requests finish. With TLS, connections are accepted
//! and their handshakes run in tasks of their own (at most
//! [`MAX_HANDSHAKES`] at once, each within [`HANDSHAKE_TIMEOUT`]), so a
//! slow client never holds up the others; only finished handshakes reach
//! axum. Each new connection takes the TLS configuration in force, read
//! again if its files changed, as the toolkit does.
//!
//! It owns the sockets; who may pass is the guard's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::guard::{self, Web};

/// TLS handshakes in progress at once; more connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;

/// A handshake not done by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// It presented a client certificate (verified, when the configuration
    /// verifies them) in the TLS handshake.
    pub client_cert: bool,
}

impl Connected<IncomingStream<'_, WebListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, WebListener>) -> Self {
        stream.remote_addr().clone()
    }
}

type Io = Either<TcpStream, TlsStream<TcpStream>>;

/// The connections the accept task has made ready, for axum.
pub struct WebListener {
    ready: mpsc::Receiver<(Io, Peer)>,
    local: SocketAddr,
}

impl Listener for WebListener {
    type Io = Io;
    type Addr = Peer;

    async fn accept(&mut self) -> (Io, Peer) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (it only does when this is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            client_cert: false,
        })
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets open
/// requests finish (the caller bounds the wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: Option<Arc<Web>>,
    stop: CancellationToken,
) -> io::Result<()> {
    let Some(web) = web else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    };
    let local = listener.local_addr()?;
    let (tx, ready) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, web.clone(), tx));
    let router = router.layer(axum::middleware::from_fn_with_state(web, guard::gate));
    axum::serve(
        WebListener { ready, local },
        router.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned())
    .await
}

/// Accepts connections and hands them to axum, after a TLS handshake when
/// the configuration has TLS. Ends when axum drops the listener.
async fn accept_loop(listener: TcpListener, web: Arc<Web>, ready: mpsc::Sender<(Io, Peer)>) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = ready.closed() => return,
            p = handshakes.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, addr) = tokio::select! {
            _ = ready.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: as axum does,
                    // wait rather than spin.
                    warn!(error = %e, "Cannot accept an HTTP connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let config = web.current(true);
        let Some(tls) = &config.tls else {
            let peer = Peer {
                addr,
                client_cert: false,
            };
            if ready.send((Either::Left(tcp), peer)).await.is_err() {
                return;
            }
            continue;
        };
        let acceptor = TlsAcceptor::from(tls.server.clone());
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    let _ = ready
                        .send((Either::Right(stream), Peer { addr, client_cert }))
                        .await;
                }
                Ok(Err(e)) => debug!(peer = %addr, error = %e, "TLS handshake failed."),
                Err(_) => debug!(peer = %addr, "TLS handshake timed out."),
            }
        });
    }
}
