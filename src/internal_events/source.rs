//! What the event stream reader observes about its own stream: connected,
//! lost, a line it could not use, a replay it dropped, a full queue, events
//! the engine no longer holds.
//!
//! None of these has a `dockwarden.*` key yet: they concern no container,
//! and the source routes none of them through the rules.
//!
//! Warnings about the stream's content (`log` fields) are rate-limited by
//! the reader, which decides whether a fact is written; it is counted
//! either way, so garbage cannot flood the log but every line is on the
//! metrics.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::InternalEvent;
use crate::event::Event;
use crate::metrics::Metrics;

/// Connected to the engine's `/events` stream: the first time, or again
/// after losing it.
pub struct StreamConnected<'a> {
    /// The engine's address, as configured.
    pub endpoint: &'a str,
    /// The negotiated API version.
    pub api: &'a str,
    /// The `since` resumed from; None for "now".
    pub since: Option<&'a str>,
    /// Not the first connection of this process.
    pub reconnect: bool,
}

impl InternalEvent for StreamConnected<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.stream_connected(true);
        if self.reconnect {
            metrics.stream_reconnected();
            info!(endpoint = %self.endpoint, api = %self.api, since = self.since.unwrap_or("now"), "Reconnected to the Docker event stream.");
        } else {
            info!(endpoint = %self.endpoint, api = %self.api, "Connected to the Docker event stream.");
        }
    }
}

/// The stream ended (an error, or the engine closed it) or could not be
/// opened; the reader tries again after `retry_in`.
pub struct StreamLost<'a> {
    /// What happened, as a sentence (`SourceError`'s text, or that the
    /// engine ended the stream).
    pub error: &'a str,
    /// A fixed word: `SourceError::kind()`, or `eof`.
    pub kind: &'static str,
    pub retry_in: Duration,
    /// Where the next connection resumes from, if anything was read.
    pub resume_since: Option<&'a str>,
    /// The stream was never connected yet: this is a retry, not a
    /// reconnect.
    pub never_connected: bool,
}

impl InternalEvent for StreamLost<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.stream_connected(false);
        let retry_in = format!("{:.1}s", self.retry_in.as_secs_f64());
        let (error, kind) = (self.error, self.kind);
        if kind == "denied" {
            // `denied::CallDenied` logged it once, with what to allow.
            debug!(retry_in = %retry_in, kind, "{error}; retrying.");
        } else if self.never_connected {
            warn!(retry_in = %retry_in, kind, "{error}; retrying.");
        } else {
            warn!(
                retry_in = %retry_in,
                resume_since = self.resume_since.unwrap_or(""),
                kind,
                "{error}; reconnecting."
            );
        }
    }
}

/// The reader stopped for shutdown.
pub struct ReaderStopped;

impl InternalEvent for ReaderStopped {
    fn emit(&self, metrics: &Metrics) {
        metrics.stream_connected(false);
        info!("Event stream reader stopped.");
    }
}

/// A line that is not an event, or an event with garbage glued in front
/// of it (the event itself is still handled).
pub struct MalformedLine<'a> {
    /// The whole line; the log shows its first 120 bytes.
    pub line: &'a [u8],
    /// Write the warning (false while the rate limit holds warnings back).
    pub log: bool,
}

impl InternalEvent for MalformedLine<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.malformed_event();
        if self.log {
            let line = self.line;
            let shown = String::from_utf8_lossy(&line[..line.len().min(120)]);
            warn!(line = %shown, bytes = line.len(), "Malformed event in the stream; skipped.");
        }
    }
}

/// A line longer than the reader buffers, skipped to its newline.
pub struct LineTooLong {
    /// The longest line buffered, in bytes.
    pub limit: usize,
    /// Write the warning (false while the rate limit holds warnings back).
    pub log: bool,
}

impl InternalEvent for LineTooLong {
    fn emit(&self, metrics: &Metrics) {
        metrics.malformed_event();
        if self.log {
            warn!(
                limit = self.limit,
                "Over-long line in the event stream; skipped."
            );
        }
    }
}

/// Warnings held back by the rate limit since the last one written.
pub struct WarningsSuppressed {
    pub count: u64,
}

impl InternalEvent for WarningsSuppressed {
    fn emit(&self, _: &Metrics) {
        warn!(count = self.count, "Similar warnings suppressed.");
    }
}

/// An event the engine replayed after a reconnect (`since` is inclusive),
/// already handled: dropped.
pub struct Deduplicated<'a> {
    pub event: &'a Event,
}

impl InternalEvent for Deduplicated<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.event_deduplicated();
        debug!(event = %self.event, time_nano = self.event.time_nano, "Dropped an event replayed by the engine.");
    }
}

/// The dispatch queue was full: a batch of events read was dropped (the
/// reader never waits), and a resync is asked for.
pub struct EventsDropped<'a> {
    pub events: usize,
    /// The first event dropped, for the log.
    pub first: Option<&'a Event>,
    /// Write the warning (false while the rate limit holds warnings back).
    pub log: bool,
}

impl InternalEvent for EventsDropped<'_> {
    fn emit(&self, metrics: &Metrics) {
        for _ in 0..self.events {
            metrics.event_dropped();
        }
        if self.log {
            let first = self.first.map(|e| e.to_string()).unwrap_or_default();
            warn!(events = self.events, first = %first, "Dispatch queue full: events dropped (see [dispatch] queue_capacity).");
        }
    }
}

/// After reconnecting with `since`, the engine's replay did not start with
/// the last event read (`ring_overflow`: its 256-event ring no longer holds
/// it) or nothing came at all (`engine_restart`): events were lost, and a
/// resync is asked for. The resync counts itself when it runs.
pub struct EventsLost {
    /// `ring_overflow` or `engine_restart`: the resync's reason label.
    pub reason: &'static str,
}

impl InternalEvent for EventsLost {
    fn emit(&self, _: &Metrics) {
        warn!(
            reason = self.reason,
            "The engine no longer holds every event since the last one read; resyncing."
        );
    }
}
