//! The one long-lived consumer of `GET /events`.
//!
//! The reader only reads, decodes and enqueues: it never waits on a handler
//! and never calls the Docker API while streaming, because the daemon drops a
//! subscriber whose 1024-event buffer stalls for 100 ms. It speaks HTTP itself
//! (hyper, over the unix socket or TCP) instead of using bollard's `events()`,
//! whose closed `Type` enum ends the whole stream on an event type it does not
//! know; here such an event is counted and dispatched like any other.
//!
//! On error or end of stream it reconnects with exponential backoff and full
//! jitter, resuming with `since=<last timeNano>`. `since` is inclusive and the
//! engine replays what is left of its 256-event ring, so [`Dedup`] drops the
//! events already seen.
//!
//! When the queue to the dispatcher is full the event is dropped and counted
//! in `dockwarden_events_dropped_total` (and logged): stalling the reader would
//! make the daemon drop the whole subscription instead.
//!
//! The files, in the order bytes travel: `session.rs` (one connection: open,
//! read, watch for a dead stream), `http.rs` (the request itself),
//! `framer.rs` (bytes → lines → events), `sink.rs` (events → checkpoint and
//! dedup checks → counted batches in the queue), `dedup.rs` (what was read
//! and where to resume). This file owns the reconnect loop, with
//! `backoff.rs`; it must not read the stream itself. What the source
//! observes about its stream is logged and counted through
//! [`crate::internal_events::source`].

mod backoff;
mod dedup;
mod framer;
mod http;
mod outage;
mod session;
mod sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use dedup::{Dedup, format_since};
pub use framer::{Framer, Lines, MAX_LINE_BYTES, decode_line};
pub use sink::Sink;

use crate::dispatch::Enqueue;
use crate::docker::calls::{self, Call};
use crate::docker::{DockerError, DockerHandle, Endpoint};
use crate::internal_events::denied::CallDenied;
use crate::internal_events::source::{ReaderStopped, StreamLost};
use crate::internal_events::{InternalEvent, OwnEvents};
use crate::metrics::Metrics;
use crate::progress::Checkpoint;
use session::End;

/// A connection that lived this long, or delivered an event, resets the
/// reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Why a streaming session ended.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("HTTP error talking to Docker at {endpoint}: {detail}")]
    Http { endpoint: String, detail: String },
    #[error("Docker at {endpoint} did not answer {what} within {secs}s")]
    Timeout {
        endpoint: String,
        what: &'static str,
        secs: u64,
    },
    #[error("no event for {idle_secs}s and {why}: the stream is dead")]
    Stalled { idle_secs: u64, why: String },
    /// A socket proxy refused the call (403): `/version` or `/events`.
    #[error("{} {} denied by {endpoint} (403): {}", call.method(), call.path(), calls::plain(message))]
    Denied {
        endpoint: String,
        call: Call,
        message: String,
    },
}

impl SourceError {
    /// A fixed string for log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Docker(e) => e.kind(),
            SourceError::Http { .. } => "http",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Stalled { .. } => "stalled",
            SourceError::Denied { .. } => "denied",
        }
    }

    /// A 403 answer to `call` (a socket proxy's refusal) as
    /// [`SourceError::Denied`]; anything else as it is.
    fn or_denied(self, call: Call) -> SourceError {
        match self {
            SourceError::Docker(DockerError::Status {
                endpoint,
                status: 403,
                message,
            }) => SourceError::Denied {
                endpoint,
                call,
                message,
            },
            other => other,
        }
    }
}

/// Readiness shared with `/readyz`.
#[derive(Default)]
pub struct Health {
    connected: AtomicBool,
}

impl Health {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// The event source: connect, read, reconnect, until shutdown.
pub struct Source {
    endpoint: Endpoint,
    docker: DockerHandle,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    framer: Framer,
    sink: Sink,
    backoff: Backoff,
    sessions: u64,
    /// Silence after which the engine is pinged.
    idle_ping: Duration,
    outage: outage::Outage,
}

/// What the source is connected to.
pub struct Wiring {
    pub endpoint: Endpoint,
    /// Where events go.
    pub queue: Enqueue,
    pub metrics: Arc<Metrics>,
    /// Set once connected, for handlers.
    pub docker: DockerHandle,
    /// Readiness for `/readyz`.
    pub health: Arc<Health>,
    pub shutdown: CancellationToken,
    /// Silence after which the stream is checked.
    pub idle_ping: Duration,
    /// The checkpoint to resume from.
    pub resume: Option<Checkpoint>,
    /// Where gaps and drops ask for a resync.
    pub resync: crate::progress::ResyncRequests,
    /// Where `dockwarden.stream_lost` and `stream_restored` go.
    pub own: Arc<dyn OwnEvents>,
    /// Down this long, the stream is reported lost.
    pub lost_after: Duration,
}

impl Source {
    pub fn new(w: Wiring) -> Self {
        let Wiring {
            endpoint,
            queue,
            metrics,
            docker,
            health,
            shutdown,
            idle_ping,
            resume,
            resync,
            own,
            lost_after,
        } = w;
        let sink = Sink::new(queue, metrics.clone())
            .resuming(resume)
            .with_resync(resync);
        Source {
            idle_ping,
            endpoint,
            docker,
            health,
            shutdown,
            framer: Framer::default(),
            sink,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
            sessions: 0,
            outage: outage::Outage::new(lost_after, own, metrics.clone()),
            metrics,
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let delivered_before = self.sink.delivered();
            let result = self.session().await;
            self.health.set_connected(false);
            let (error, kind) = match result {
                Ok(End::Shutdown) => break,
                Ok(End::Eof) => ("the engine ended the event stream".to_owned(), "eof"),
                Err(e) => {
                    // Logged once, with what to allow; retried with the
                    // backoff, as the proxy's configuration may change.
                    if let SourceError::Denied { call, message, .. } = &e {
                        let during = "connecting to the event stream";
                        CallDenied {
                            call: *call,
                            during,
                            message,
                        }
                        .emit(&self.metrics);
                    }
                    (e.to_string(), e.kind())
                }
            };
            if started.elapsed() >= STABLE_AFTER || self.sink.delivered() > delivered_before {
                self.backoff.reset();
            }
            let delay = self.backoff.next_delay();
            StreamLost {
                error: &error,
                kind,
                retry_in: delay,
                resume_since: self.sink.since().as_deref(),
                never_connected: self.sessions == 0,
            }
            .emit(&self.metrics);
            self.outage.failed(&error);
            // Sleep out the backoff, announcing a long outage on time.
            let wake = Instant::now() + delay;
            loop {
                self.outage.check();
                let until = match self.outage.due_in() {
                    Some(due) => wake.min(Instant::now() + due),
                    None => wake,
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = self.shutdown.cancelled() => break,
                }
                if Instant::now() >= wake || self.shutdown.is_cancelled() {
                    break;
                }
            }
            if self.shutdown.is_cancelled() {
                break;
            }
        }
        ReaderStopped.emit(&self.metrics);
    }
}
