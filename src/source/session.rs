//! One connection to the event stream, from negotiating the API version to
//! the end of the body.
//!
//! It owns what a connection must check by itself: that the replay after a
//! reconnect starts with the last event read (the anchor), and that a silent
//! stream is alive, since the engine sends no heartbeat and a half-open
//! connection looks idle. It must not decide when or how soon to reconnect
//! (the loop in [`super`] does), and it calls the engine only to open the
//! stream and, after a silence, to probe it — never per event.

use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::debug;

use super::http::{self, CONNECT_TIMEOUT, Stream};
use super::sink::MAX_BATCH;
use super::{Lines, Source, SourceError, format_since};
use crate::clock::unix_nanos;
use crate::docker::calls::{self, Call};
use crate::event::Event;
use crate::internal_events::InternalEvent;
use crate::internal_events::source::StreamConnected;

/// How a streaming session ended without an error.
pub(super) enum End {
    Shutdown,
    Eof,
}

/// How long the replay's first event may take after connecting with `since`
/// before the engine is taken to have lost it.
const ANCHOR_WAIT: Duration = Duration::from_secs(1);

/// How long the engine may take to answer the idle probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the idle probe found.
enum Probe {
    /// The engine logged nothing this stream missed: it is only quiet.
    Alive,
    /// The stream is dead, and why; and where to resume from instead of
    /// the last event read, if the clock is behind it.
    Dead(String, Option<i64>),
    Shutdown,
}

impl Source {
    /// One connection: negotiate, stream, return when it ends.
    pub(super) async fn session(&mut self) -> Result<End, SourceError> {
        let Some(api) = self.negotiate().await? else {
            return Ok(End::Shutdown);
        };
        let (since, rewound) = self.sink.resume_point();
        let path = match &since {
            Some(s) => format!("/v{api}/events?since={s}"),
            None => format!("/v{api}/events"),
        };
        let events =
            http::open(&self.endpoint, &path).map(|r| r.map_err(|e| e.or_denied(Call::Events)));
        let opened = self.within("the events request", events).await?;
        let Some(mut body) = opened else {
            return Ok(End::Shutdown);
        };
        // Opened: a rewind is spent (not before, or a failed attempt would
        // lose it).
        self.sink.rewind_done();
        // Without a `since` the next connection would miss what happens
        // between this one ending and the next starting.
        self.sink.started_at(unix_nanos());

        // The replay from `since` starts with the last event read (since is
        // inclusive). If it does not, or nothing comes at all, events were
        // lost: more than the engine's ring holds, or the engine restarted.
        let anchor_deadline = self
            .sink
            .expect_anchor(since.is_some() && !rewound)
            .then(|| Instant::now() + ANCHOR_WAIT);
        self.sessions += 1;
        self.health.set_connected(true);
        StreamConnected {
            endpoint: &self.endpoint.to_string(),
            api: &api,
            since: since.as_deref(),
            reconnect: self.sessions > 1,
        }
        .emit(&self.metrics);
        self.outage.connected();
        self.stream(&mut body, &api, anchor_deadline).await
    }

    /// Negotiates the API version with the engine and hands the client to
    /// the handlers; the version, or None on shutdown.
    async fn negotiate(&self) -> Result<Option<String>, SourceError> {
        let docker = self.endpoint.client()?;
        let endpoint = &self.endpoint;
        let negotiated = docker.negotiate_version().map(|r| {
            r.map_err(|e| match calls::denied(&e) {
                Some(message) => SourceError::Denied {
                    endpoint: endpoint.to_string(),
                    call: Call::Version,
                    message: message.to_owned(),
                },
                None => SourceError::from(endpoint.unreachable(&e)),
            })
        });
        let Some(docker) = self.within("the version request", negotiated).await? else {
            return Ok(None);
        };
        let version = docker.client_version().to_string();
        self.docker.set(docker);
        Ok(Some(version))
    }

    /// `request` within [`CONNECT_TIMEOUT`]; None on shutdown.
    async fn within<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<Option<T>, SourceError> {
        tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, request) => match r {
                Err(_) => Err(http::timed_out(&self.endpoint, what)),
                Ok(r) => r.map(Some),
            },
            _ = self.shutdown.cancelled() => Ok(None),
        }
    }

    /// Reads the stream until it ends, it goes silent and the engine says
    /// it is dead, or shutdown.
    async fn stream(
        &mut self,
        body: &mut Stream,
        api: &str,
        anchor_deadline: Option<Instant>,
    ) -> Result<End, SourceError> {
        // No heartbeat on the stream: after `idle_ping` of silence, ask the
        // engine whether it is alive; a half-open connection looks idle.
        let mut last_frame = Instant::now();
        let mut watchdog = tokio::time::interval(
            (self.idle_ping / 4).clamp(Duration::from_millis(250), Duration::from_secs(1)),
        );
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Events held back in a burst (`Sink::flush_paced`) and when they
        // are due; the timer is reset only when a batch starts to wait.
        let linger = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(linger);
        let mut held = false;
        // The read that brought the head may have brought events too (a
        // replay from `since` follows the head at once): they are taken
        // now, not when the next event arrives, which may be never.
        self.sink.read_at(Instant::now());
        if let Some(end) = self.drain(body) {
            self.flush_rest();
            return end;
        }
        self.sink.flush();
        loop {
            let read = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.sink.flush();
                    return Ok(End::Shutdown);
                }
                read = body.fill() => read,
                _ = &mut linger, if held => {
                    held = false;
                    self.sink.flush();
                    continue;
                }
                _ = watchdog.tick() => {
                    if anchor_deadline.is_some_and(|d| Instant::now() >= d) {
                        self.sink.anchor_overdue();
                    }
                    if last_frame.elapsed() < self.idle_ping {
                        continue;
                    }
                    match self.probe(api, last_frame.elapsed()).await {
                        Probe::Shutdown => return Ok(End::Shutdown),
                        Probe::Dead(why, rewind) => {
                            if let Some(t) = rewind {
                                self.sink.rewind_to(t);
                            }
                            self.flush_rest();
                            return Err(SourceError::Stalled {
                                idle_secs: last_frame.elapsed().as_secs(),
                                why,
                            });
                        }
                        Probe::Alive => {
                            debug!(idle_secs = last_frame.elapsed().as_secs(), "Stream idle; the engine answers its ping.");
                            last_frame = Instant::now();
                            continue;
                        }
                    }
                }
            };
            last_frame = Instant::now();
            self.sink.read_at(last_frame);
            let end = self.read_burst(read, body);
            if let Some(end) = end {
                self.flush_rest();
                return end;
            }
            match self.sink.flush_paced(last_frame) {
                Some(due) if !held => {
                    linger.as_mut().reset(due.into());
                    held = true;
                }
                Some(_) => {}
                None => held = false,
            }
        }
    }

    /// Feeds what `read` brought and every read the socket can give at
    /// once; the caller hands the batch over. Returns how the stream
    /// ended, if it did.
    fn read_burst(
        &mut self,
        mut read: std::io::Result<usize>,
        body: &mut Stream,
    ) -> Option<Result<End, SourceError>> {
        // The engine sends each event as its own chunk. Take every read the
        // socket has now before handing the batch over: in a burst or a
        // replay that is at most one hand-off (and one wake-up of the
        // dispatcher) per `MAX_BATCH` events rather than per event, and at
        // most one per `LINGER` while the burst lasts.
        loop {
            let end = match read {
                Ok(0) => Some(
                    body.ended()
                        .map(|()| End::Eof)
                        .map_err(|e| http::failed(&self.endpoint, &e)),
                ),
                Ok(_) => self.drain(body),
                Err(e) => Some(Err(http::failed(&self.endpoint, &e))),
            };
            if end.is_some() {
                return end;
            }
            if self.sink.pending() >= MAX_BATCH {
                return None;
            }
            read = body.fill().now_or_never()?;
        }
    }

    /// Hands what `body` has read to the framer; how the stream ended, if
    /// it did.
    fn drain(&mut self, body: &mut Stream) -> Option<Result<End, SourceError>> {
        match body.drain(&mut |data| self.framer.push(data, &mut self.sink)) {
            Ok(true) => Some(Ok(End::Eof)),
            Ok(false) => None,
            Err(e) => Some(Err(http::failed(&self.endpoint, &e))),
        }
    }

    /// After a silence: is the stream only quiet, or dead?
    async fn probe(&self, api: &str, silence: Duration) -> Probe {
        let probe = tokio::select! {
            r = tokio::time::timeout(PROBE_TIMEOUT, self.missed_events(api, silence)) => r,
            _ = self.shutdown.cancelled() => return Probe::Shutdown,
        };
        match probe {
            Ok(Ok((0, _))) => Probe::Alive,
            Ok(Ok((n, rewind))) => Probe::Dead(
                format!("the engine logged {n} event(s) this stream did not deliver"),
                rewind,
            ),
            Ok(Err(e)) => Probe::Dead(format!("the engine did not answer a probe ({e})"), None),
            Err(_) => Probe::Dead(
                format!(
                    "the engine did not answer a probe within {}s",
                    PROBE_TIMEOUT.as_secs()
                ),
                None,
            ),
        }
    }

    /// Asks the engine on a fresh connection for what it logged since the
    /// last event read: anything this stream has not delivered means the
    /// stream is dead (half-open) though the engine is not. Also where the
    /// next connection must resume from to replay those, when the clock is
    /// behind the last event read (they are stamped before it).
    async fn missed_events(
        &self,
        api: &str,
        silence: Duration,
    ) -> Result<(usize, Option<i64>), SourceError> {
        let now = unix_nanos();
        let Some((since, behind)) = self.sink.probe_since(now, silence) else {
            return Ok((0, None));
        };
        let path = format!(
            "/v{api}/events?since={}&until={}",
            format_since(since),
            format_since(now)
        );
        let bytes = http::get_all(&self.endpoint, &path).await?;
        let missed = bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| Event::decode(line.trim_ascii()).ok())
            .filter(|e| !self.sink.has_seen(e))
            .count();
        Ok((missed, behind.then_some(since)))
    }

    /// A partial line at the end of a connection is a truncated event: it
    /// is counted as malformed; the replay after reconnecting resends it.
    fn flush_rest(&mut self) {
        if let Some(rest) = self.framer.take_rest() {
            self.sink.line(&rest);
        }
        self.sink.flush();
    }
}
