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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::dispatch::Enqueue;
use crate::docker::{DockerError, DockerHandle, Endpoint};
use crate::event::{Event, Labels};
use crate::metrics::Metrics;
use crate::progress::Checkpoint;

/// Most events sent to the dispatcher in one batch.
const MAX_BATCH: usize = 256;

/// Longest line the reader buffers while waiting for its newline. Real events
/// are a few KiB at most (labels included); anything longer is garbage.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How long connecting and receiving the response headers may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Events remembered for deduplicating a replay: more than the engine's
/// 256-event ring, so everything it can replay is recognised.
const DEDUP_WINDOW: usize = 4096;

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
}

impl SourceError {
    /// A fixed string for log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Docker(e) => e.kind(),
            SourceError::Http { .. } => "http",
            SourceError::Timeout { .. } => "timeout",
            SourceError::Stalled { .. } => "stalled",
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

/// Remembers recent events so the inclusive `since` replay is not handled
/// twice, and where to resume from.
#[derive(Debug, Default)]
pub struct Dedup {
    order: VecDeque<u64>,
    seen: HashSet<u64>,
    /// The newest `timeNano` read; the next connection resumes from it.
    last_time_nano: i64,
}

impl Dedup {
    /// True if `event` is new (and remembers it), false for a replay.
    pub fn admit(&mut self, event: &Event) -> bool {
        let fp = event.fingerprint();
        if !self.seen.insert(fp) {
            return false;
        }
        self.order.push_back(fp);
        if self.order.len() > DEDUP_WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.last_time_nano = self.last_time_nano.max(event.time_nano);
        true
    }

    /// Whether `event` was read already (without remembering it).
    pub fn has_seen(&self, event: &Event) -> bool {
        self.seen.contains(&event.fingerprint())
    }

    /// The `since` query value to resume from, if anything was read.
    pub fn since(&self) -> Option<String> {
        (self.last_time_nano > 0).then(|| format_since(self.last_time_nano))
    }
}

/// `secs.nanos`, the form the engine's `since` accepts.
pub fn format_since(time_nano: i64) -> String {
    format!(
        "{}.{:09}",
        time_nano.div_euclid(1_000_000_000),
        time_nano.rem_euclid(1_000_000_000)
    )
}

/// Receives what the [`Framer`] cuts out of the stream.
pub trait Lines {
    /// A complete line, without its `\n`.
    fn line(&mut self, line: &[u8]);
    /// A line dropped for exceeding [`MAX_LINE_BYTES`].
    fn overflow(&mut self);
}

/// Splits the body into newline-terminated lines. The engine writes one JSON
/// object and a newline per event; chunk boundaries fall anywhere.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Inside an over-long line: skip to its newline.
    discarding: bool,
}

impl Framer {
    /// Feeds a chunk, handing every complete line to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut impl Lines) {
        while let Some(nl) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = chunk.split_at(nl);
            chunk = &rest[1..];
            if self.discarding {
                self.discarding = false;
                self.buf.clear();
                continue;
            }
            if self.buf.is_empty() {
                out.line(head);
            } else {
                self.buf.extend_from_slice(head);
                out.line(&self.buf);
                self.buf.clear();
            }
        }
        if self.discarding {
            return;
        }
        if self.buf.len() + chunk.len() > MAX_LINE_BYTES {
            self.buf.clear();
            self.discarding = true;
            out.overflow();
        } else {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// What is left when the stream ends: a truncated event, if anything.
    pub fn take_rest(&mut self) -> Option<Vec<u8>> {
        let discarding = std::mem::take(&mut self.discarding);
        let rest = std::mem::take(&mut self.buf);
        (!discarding && !rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// Decodes a line; if it is not an event, looks for one after garbage that
/// was glued in front of it. Returns the event, if any, and whether the line
/// was malformed.
pub fn decode_line(line: &[u8]) -> (Option<Event>, bool) {
    match Event::decode(line) {
        Ok(ev) => (Some(ev), false),
        Err(_) => {
            // An event object starts with one of these keys (legacy `status`
            // first on API ≤ 1.51, `Type` first without it). A few tries bound
            // the cost of a line full of braces.
            let starts = line
                .windows(2)
                .enumerate()
                .skip(1)
                .filter(|(_, w)| w == b"{\"")
                .map(|(i, _)| i)
                .take(8);
            for start in starts {
                if let Ok(ev) = Event::decode(&line[start..]) {
                    return (Some(ev), true);
                }
            }
            (None, true)
        }
    }
}

/// Everything the reader does with a line, apart from reading it: decode,
/// deduplicate, count, enqueue. Public so benchmarks drive the real path.
pub struct Sink {
    /// Where a dropped batch asks for a resync.
    resync: Option<mpsc::Sender<&'static str>>,
    /// The checkpoint resumed from: events it covers were handled already.
    resume: Option<Checkpoint>,
    /// After connecting with `since`: the first event must be one already
    /// handled (the anchor). Anything else means the engine lost events.
    expect_anchor: bool,
    queue: Enqueue,
    /// Events of the current frame, sent as one batch.
    batch: Vec<Arc<Event>>,
    metrics: Arc<Metrics>,
    dedup: Dedup,
    counters: HashMap<Labels, IntCounter>,
    delivered: u64,
    last_warn: Option<Instant>,
    suppressed_warnings: u64,
}

impl Lines for Sink {
    fn line(&mut self, line: &[u8]) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        let (event, malformed) = decode_line(line);
        let anchored = std::mem::take(&mut self.expect_anchor);
        if malformed {
            self.metrics.malformed_event();
            self.warn_limited(|| {
                let shown = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
                warn!(line = %shown, bytes = line.len(), "Malformed event in the stream; skipped.");
            });
        }
        let Some(event) = event else { return };
        if self.resume.as_ref().is_some_and(|cp| cp.covers(&event)) {
            debug!(event = %event, "Already handled before the restart (checkpoint).");
            return;
        }
        if anchored && !self.dedup.has_seen(&event) {
            // The replay from `since` did not start with what we had read:
            // the engine's ring no longer holds it.
            self.ask_resync("ring_overflow");
        }
        if !self.dedup.admit(&event) {
            self.metrics.event_deduplicated();
            debug!(event = %event, time_nano = event.time_nano, "Dropped an event replayed by the engine.");
            return;
        }
        self.delivered += 1;
        let metrics = &self.metrics;
        self.counters
            .entry(event.labels)
            .or_insert_with(|| metrics.event_counter(event.labels))
            .inc();
        self.batch.push(Arc::new(event));
        if self.batch.len() >= MAX_BATCH {
            self.flush();
        }
    }

    fn overflow(&mut self) {
        self.metrics.malformed_event();
        self.warn_limited(|| {
            warn!(
                limit = MAX_LINE_BYTES,
                "Over-long line in the event stream; skipped."
            )
        });
    }
}

impl Sink {
    pub fn new(queue: Enqueue, metrics: Arc<Metrics>) -> Sink {
        Sink {
            resync: None,
            resume: None,
            expect_anchor: false,
            queue,
            batch: Vec::new(),
            metrics,
            dedup: Dedup::default(),
            counters: HashMap::new(),
            delivered: 0,
            last_warn: None,
            suppressed_warnings: 0,
        }
    }

    /// Hands the events read so far to the dispatcher. A full queue drops
    /// them, counted: the reader never waits.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if let Err(dropped) = self.queue.try_send(batch) {
            // A closed queue means shutdown: nothing to count.
            if !self.queue.is_closed() {
                for _ in &dropped {
                    self.metrics.event_dropped();
                }
                self.ask_resync("queue_overflow");
                let first = dropped.first().map(|e| e.to_string()).unwrap_or_default();
                let n = dropped.len();
                self.warn_limited(|| {
                    warn!(events = n, first = %first, "Dispatch queue full: events dropped (see [dispatch] queue_capacity).");
                });
            }
        }
        self.metrics.set_queue_depth(self.queue.depth());
    }

    /// Schedules a reconciliation; one pending request is enough.
    fn ask_resync(&self, reason: &'static str) {
        if let Some(tx) = &self.resync {
            let _ = tx.try_send(reason);
        }
    }

    /// Events read and not yet handed over.
    pub fn pending(&self) -> usize {
        self.batch.len()
    }

    /// Events delivered to the queue (or dropped because it was full).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// At most one warning a second, so garbage cannot flood the log.
    fn warn_limited(&mut self, emit: impl FnOnce()) {
        let now = Instant::now();
        if self
            .last_warn
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed_warnings += 1;
            return;
        }
        if self.suppressed_warnings > 0 {
            warn!(
                count = self.suppressed_warnings,
                "Similar warnings suppressed."
            );
            self.suppressed_warnings = 0;
        }
        self.last_warn = Some(now);
        emit();
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            initial,
            max,
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// The next delay: between half and all of `initial * 2^attempt`, capped.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1).min(31);
        // xorshift64: jitter only, no need for a crypto RNG.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = exp / 2;
        let jitter = Duration::from_nanos(self.rng % (half.as_nanos() as u64).max(1));
        half + jitter
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// How a streaming session ended without an error.
enum End {
    Shutdown,
    Eof,
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Aborts the HTTP connection task when the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The event source: connect, read, reconnect, until shutdown.
pub struct Source {
    endpoint: Endpoint,
    docker: DockerHandle,
    health: Arc<Health>,
    shutdown: CancellationToken,
    framer: Framer,
    sink: Sink,
    backoff: Backoff,
    sessions: u64,
    /// Silence after which the engine is pinged.
    idle_ping: Duration,
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
    pub resync: mpsc::Sender<&'static str>,
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
        } = w;
        let mut sink = Sink::new(queue, metrics);
        if let Some(cp) = &resume {
            sink.dedup.last_time_nano = cp.time_nano;
        }
        sink.resume = resume;
        sink.resync = Some(resync);
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
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let started = Instant::now();
            let delivered_before = self.sink.delivered;
            let result = self.session().await;
            self.health.set_connected(false);
            self.sink.metrics.stream_connected(false);
            let lost = match result {
                Ok(End::Shutdown) => break,
                Ok(End::Eof) => "the engine ended the event stream".to_owned(),
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= STABLE_AFTER || self.sink.delivered > delivered_before {
                self.backoff.reset();
            }
            let delay = self.backoff.next_delay();
            let retry_in = format!("{:.1}s", delay.as_secs_f64());
            if self.sessions == 0 {
                warn!(retry_in = %retry_in, "{lost}; retrying.");
            } else {
                warn!(
                    retry_in = %retry_in,
                    resume_since = self.sink.dedup.since().as_deref().unwrap_or(""),
                    "{lost}; reconnecting."
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        info!("Event stream reader stopped.");
    }

    /// One connection: negotiate, stream, return when it ends.
    async fn session(&mut self) -> Result<End, SourceError> {
        let docker = self.endpoint.client()?;
        let negotiated = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()) => r,
            _ = self.shutdown.cancelled() => return Ok(End::Shutdown),
        };
        let docker = match negotiated {
            Err(_) => return Err(self.timeout("the version request")),
            Ok(Err(e)) => return Err(self.endpoint.unreachable(&e).into()),
            Ok(Ok(d)) => d,
        };
        let version = docker.client_version();
        self.docker.set(docker.clone());

        let since = self.sink.dedup.since();
        let path = match &since {
            Some(s) => format!("/v{version}/events?since={s}"),
            None => format!("/v{version}/events"),
        };
        let opened = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, self.open(&path)) => r,
            _ = self.shutdown.cancelled() => return Ok(End::Shutdown),
        };
        let (mut body, _conn) = match opened {
            Err(_) => return Err(self.timeout("the events request")),
            Ok(r) => r?,
        };
        // Without a `since` the next connection would miss what happens
        // between this one ending and the next starting.
        if self.sink.dedup.last_time_nano == 0 {
            self.sink.dedup.last_time_nano = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
        }

        // The replay from `since` starts with the last event read (since is
        // inclusive). If it does not, or nothing comes at all, events were
        // lost: more than the engine's ring holds, or the engine restarted.
        let expects_anchor =
            since.is_some() && (self.sink.delivered > 0 || self.sink.resume.is_some());
        let anchor_deadline = expects_anchor.then(|| {
            self.sink.expect_anchor = true;
            Instant::now() + Duration::from_secs(1)
        });
        self.sessions += 1;
        self.health.set_connected(true);
        self.sink.metrics.stream_connected(true);
        if self.sessions > 1 {
            self.sink.metrics.stream_reconnected();
            info!(endpoint = %self.endpoint, api = %version, since = since.as_deref().unwrap_or("now"), "Reconnected to the Docker event stream.");
        } else {
            info!(endpoint = %self.endpoint, api = %version, "Connected to the Docker event stream.");
        }

        // No heartbeat on the stream: after `idle_ping` of silence, ask the
        // engine whether it is alive; a half-open connection looks idle.
        let mut last_frame = Instant::now();
        let mut watchdog = tokio::time::interval(
            (self.idle_ping / 4).clamp(Duration::from_millis(250), Duration::from_secs(1)),
        );
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(End::Shutdown),
                frame = body.frame() => frame,
                _ = watchdog.tick() => {
                    if anchor_deadline.is_some_and(|d| Instant::now() >= d) && self.sink.expect_anchor {
                        self.sink.expect_anchor = false;
                        self.sink.ask_resync("engine_restart");
                    }
                    if last_frame.elapsed() < self.idle_ping {
                        continue;
                    }
                    let api = version.to_string();
                    let probe = tokio::select! {
                        r = tokio::time::timeout(Duration::from_secs(5), self.missed_events(&api)) => r,
                        _ = self.shutdown.cancelled() => return Ok(End::Shutdown),
                    };
                    let why = match probe {
                        Ok(Ok(0)) => None,
                        Ok(Ok(n)) => Some(format!("the engine logged {n} event(s) this stream did not deliver")),
                        Ok(Err(e)) => Some(format!("the engine did not answer a probe ({e})")),
                        Err(_) => Some("the engine did not answer a probe within 5s".to_owned()),
                    };
                    if let Some(why) = why {
                        self.flush_rest();
                        return Err(SourceError::Stalled {
                            idle_secs: last_frame.elapsed().as_secs(),
                            why,
                        });
                    }
                    debug!(idle_secs = last_frame.elapsed().as_secs(), "Stream idle; the engine answers its ping.");
                    last_frame = Instant::now();
                    continue;
                }
            };
            last_frame = Instant::now();
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.framer.push(&data, &mut self.sink);
                    }
                    // The engine sends each event as its own chunk. Take
                    // every frame hyper already holds before handing the
                    // batch over: in a burst or a replay that is one hand-off
                    // (and one wake-up of the dispatcher) per socket read
                    // rather than per event.
                    let mut end = None;
                    while self.sink.pending() < MAX_BATCH {
                        match body.frame().now_or_never() {
                            Some(Some(Ok(frame))) => {
                                if let Ok(data) = frame.into_data() {
                                    self.framer.push(&data, &mut self.sink);
                                }
                            }
                            Some(other) => {
                                end = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    self.sink.flush();
                    match end {
                        Some(Some(Err(e))) => {
                            self.flush_rest();
                            return Err(SourceError::Http {
                                endpoint: self.endpoint.to_string(),
                                detail: e.to_string(),
                            });
                        }
                        Some(None) => {
                            self.flush_rest();
                            return Ok(End::Eof);
                        }
                        _ => {}
                    }
                }
                Some(Err(e)) => {
                    self.flush_rest();
                    return Err(SourceError::Http {
                        endpoint: self.endpoint.to_string(),
                        detail: e.to_string(),
                    });
                }
                None => {
                    self.flush_rest();
                    return Ok(End::Eof);
                }
            }
        }
    }

    /// Asks the engine on a fresh connection for what it logged since the
    /// last event read: anything this stream has not delivered means the
    /// stream is dead (half-open) though the engine is not.
    async fn missed_events(&self, version: &str) -> Result<usize, SourceError> {
        let Some(since) = self.sink.dedup.since() else {
            return Ok(0);
        };
        let until = format_since(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
        );
        let path = format!("/v{version}/events?since={since}&until={until}");
        let (body, _conn) = self.open(&path).await?;
        let bytes = body
            .collect()
            .await
            .map_err(|e| SourceError::Http {
                endpoint: self.endpoint.to_string(),
                detail: e.to_string(),
            })?
            .to_bytes();
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| Event::decode(line.trim_ascii()).ok())
            .filter(|e| !self.sink.dedup.has_seen(e))
            .count())
    }

    /// A partial line at the end of a connection is a truncated event: it
    /// is counted as malformed; the replay after reconnecting resends it.
    fn flush_rest(&mut self) {
        if let Some(rest) = self.framer.take_rest() {
            self.sink.line(&rest);
        }
        self.sink.flush();
    }

    fn timeout(&self, what: &'static str) -> SourceError {
        SourceError::Timeout {
            endpoint: self.endpoint.to_string(),
            what,
            secs: CONNECT_TIMEOUT.as_secs(),
        }
    }

    /// Opens `GET path` on a fresh connection and checks the status.
    async fn open(&self, path: &str) -> Result<(Incoming, AbortOnDrop), SourceError> {
        let (io, host): (Box<dyn Io>, &str) = match &self.endpoint {
            Endpoint::Unix(p) => (
                Box::new(
                    UnixStream::connect(p)
                        .await
                        .map_err(|e| self.endpoint.unreachable(&e))?,
                ),
                "docker",
            ),
            Endpoint::Tcp(addr) => (
                Box::new(
                    TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| self.endpoint.unreachable(&e))?,
                ),
                addr.as_str(),
            ),
        };
        let http = |e: &dyn std::fmt::Display| SourceError::Http {
            endpoint: self.endpoint.to_string(),
            detail: e.to_string(),
        };
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
        let response = sender.send_request(request).await.map_err(|e| http(&e))?;
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
                endpoint: self.endpoint.to_string(),
                status: status.as_u16(),
                message,
            }
            .into());
        }
        Ok((response.into_body(), conn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, action: &str, id: &str) -> Event {
        let line = format!(
            r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"{id}","Attributes":{{}}}},"timeNano":{t}}}"#
        );
        Event::decode(line.as_bytes()).expect("test event decodes")
    }

    #[derive(Default)]
    struct Collect {
        lines: Vec<Vec<u8>>,
        overflows: usize,
    }

    impl Lines for Collect {
        fn line(&mut self, line: &[u8]) {
            self.lines.push(line.to_vec());
        }
        fn overflow(&mut self) {
            self.overflows += 1;
        }
    }

    #[test]
    fn framer_handles_any_chunking() {
        let text = b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        for cut in 0..text.len() {
            let mut f = Framer::default();
            let mut out = Collect::default();
            let (a, b) = text.split_at(cut);
            for part in [a, b] {
                f.push(part, &mut out);
            }
            assert_eq!(out.lines.len(), 3, "cut at {cut}");
            assert_eq!(out.lines[1], b"{\"b\":2}");
            assert_eq!(out.overflows, 0);
            assert!(f.take_rest().is_none());
        }
    }

    #[test]
    fn framer_keeps_truncated_rest_and_drops_overlong_lines() {
        let mut f = Framer::default();
        let mut out = Collect::default();
        f.push(b"{\"Type\":\"cont", &mut out);
        assert!(out.lines.is_empty());
        assert_eq!(f.take_rest().as_deref(), Some(&b"{\"Type\":\"cont"[..]));

        let big = vec![b'x'; MAX_LINE_BYTES + 1];
        f.push(&big, &mut out);
        f.push(b"yyy\n{}\n", &mut out);
        assert_eq!(out.overflows, 1);
        assert_eq!(out.lines, vec![b"{}".to_vec()]);
    }

    #[test]
    fn garbage_glued_before_an_event_is_malformed_but_the_event_survives() {
        let line =
            br#"garbage{"Type":"container","Action":"start","Actor":{"ID":"c"},"timeNano":9}"#;
        let (event, malformed) = decode_line(line);
        assert!(malformed);
        assert_eq!(
            event.map(|e| e.key.to_string()),
            Some("container.start".to_owned())
        );
        let (event, malformed) = decode_line(b"{{{{{{{{{{{{{{{{{{{{{\"\"\"");
        assert!(malformed && event.is_none());
    }

    #[test]
    fn dedup_drops_inclusive_replay_and_resumes_from_last() {
        let mut d = Dedup::default();
        assert_eq!(d.since(), None);
        assert!(d.admit(&ev(1_000_000_001, "start", "a")));
        assert!(d.admit(&ev(2_000_000_002, "die", "a")));
        // Same nanosecond, other container: a different event.
        assert!(d.admit(&ev(2_000_000_002, "die", "b")));
        assert_eq!(d.since().as_deref(), Some("2.000000002"));
        // The replay after reconnecting resends the last events.
        assert!(!d.admit(&ev(2_000_000_002, "die", "a")));
        assert!(!d.admit(&ev(2_000_000_002, "die", "b")));
        assert!(d.admit(&ev(3_000_000_000, "destroy", "a")));
    }

    #[test]
    fn dedup_window_is_bounded() {
        let mut d = Dedup::default();
        for i in 0..(DEDUP_WINDOW as i64 * 2) {
            assert!(d.admit(&ev(i + 1, "start", "x")));
        }
        assert_eq!(d.seen.len(), DEDUP_WINDOW);
        assert_eq!(d.order.len(), DEDUP_WINDOW);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] < Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] < Duration::from_millis(800));
        for d in &delays[5..] {
            assert!(
                *d >= Duration::from_secs(1) && *d < Duration::from_secs(2),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(100));
    }

    #[test]
    fn a_full_queue_drops_counts_and_asks_for_a_resync() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let (tx, _rx) = crate::dispatch::queue(2);
        let metrics = Arc::new(Metrics::new());
        let mut sink = Sink::new(tx, metrics.clone());
        let (resync_tx, mut resync_rx) = mpsc::channel(4);
        sink.resync = Some(resync_tx);
        for i in 0..3 {
            let line = format!(
                r#"{{"Type":"container","Action":"start","Actor":{{"ID":"c{i}"}},"timeNano":{}}}"#,
                i + 1
            );
            sink.line(line.as_bytes());
        }
        sink.flush();
        assert!(
            metrics
                .render()
                .contains("dockwarden_events_dropped_total 3")
        );
        assert_eq!(resync_rx.try_recv().ok(), Some("queue_overflow"));
        // Every event read is still counted as read.
        assert!(
            metrics
                .render()
                .contains("dockwarden_events_total{action=\"start\",type=\"container\"} 3")
        );
    }

    #[test]
    fn since_has_nine_decimals() {
        assert_eq!(
            format_since(1_700_000_000_000_000_042),
            "1700000000.000000042"
        );
    }
}
