//! When the stream has been down long enough to tell people: the first
//! failure starts the clock; past `[source] lost_after_secs` a
//! `dockwarden.stream_lost` goes out once, and the next connection sends
//! `dockwarden.stream_restored`. Short blips (a reconnect within the limit)
//! say nothing.
//!
//! It owns that clock; it must not reconnect or read anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::internal_events::lifecycle::{StreamOutage, StreamRestored};
use crate::internal_events::{OwnEvents, emit_unattached};
use crate::metrics::Metrics;

pub(super) struct Outage {
    lost_after: Duration,
    own: Arc<dyn OwnEvents>,
    metrics: Arc<Metrics>,
    /// Since when the stream is down (None while connected).
    down_since: Option<Instant>,
    announced: bool,
    last_error: String,
}

impl Outage {
    pub(super) fn new(
        lost_after: Duration,
        own: Arc<dyn OwnEvents>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Outage {
            lost_after,
            own,
            metrics,
            down_since: None,
            announced: false,
            last_error: String::new(),
        }
    }

    /// A session ended (or never began) with `error`.
    pub(super) fn failed(&mut self, error: &str) {
        self.down_since.get_or_insert_with(Instant::now);
        self.last_error = error.to_owned();
    }

    /// How long until the outage is to be announced, if it is not yet.
    pub(super) fn due_in(&self) -> Option<Duration> {
        let since = self.down_since?;
        (!self.announced).then(|| self.lost_after.saturating_sub(since.elapsed()))
    }

    /// Announces the outage if it has lasted long enough.
    pub(super) fn check(&mut self) {
        if let Some(since) = self.down_since
            && !self.announced
            && since.elapsed() >= self.lost_after
        {
            self.announced = true;
            emit_unattached(
                &StreamOutage {
                    down_for: since.elapsed(),
                    error: &self.last_error,
                },
                &self.metrics,
                self.own.as_ref(),
            );
        }
    }

    /// Connected again.
    pub(super) fn connected(&mut self) {
        if let Some(since) = self.down_since.take()
            && std::mem::take(&mut self.announced)
        {
            emit_unattached(
                &StreamRestored {
                    down_for: since.elapsed(),
                },
                &self.metrics,
                self.own.as_ref(),
            );
        }
    }
}
