//! What delivery observes about itself, each fact one value whose `emit`
//! writes the log line and moves the metric (`InternalEvent`), so
//! `dockwarden_notifications_total` and the log cannot disagree.
//!
//! None has a `dockwarden.*` key: a notification about notifications could
//! loop. Log lines name the target and the URL's host, never the URL or a
//! token. It owns wording and counting; it must not decide anything.

use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::client::AttemptError;
use crate::internal_events::InternalEvent;
use crate::metrics::Metrics;

/// A 2xx for a message, or for a summary standing for `coalesced` of them.
pub struct Delivered<'a> {
    pub target: &'a str,
    pub host: &'a str,
    pub id: &'a str,
    pub status: u16,
    /// Queued → 2xx, per message delivered.
    pub latencies: &'a [Duration],
    /// 0 for a message sent as itself; else the messages the summary held.
    pub coalesced: usize,
}

impl InternalEvent for Delivered<'_> {
    fn emit(&self, metrics: &Metrics) {
        for l in self.latencies {
            metrics.notification_latency(self.target, *l);
        }
        if self.coalesced == 0 {
            metrics.notifications(self.target, "sent", 1);
            debug!(
                target_name = self.target,
                host = self.host,
                id = self.id,
                status = self.status,
                "Notification delivered."
            );
        } else {
            metrics.notifications(self.target, "coalesced", self.coalesced as u64);
            info!(
                target_name = self.target,
                host = self.host,
                id = self.id,
                status = self.status,
                messages = self.coalesced,
                "Rate-limited notifications delivered as one summary."
            );
        }
    }
}

/// An attempt failed in a way that may pass: it is tried again.
pub struct Retrying<'a> {
    pub target: &'a str,
    pub id: &'a str,
    pub error: &'a AttemptError,
    /// Consecutive failures of this target.
    pub failures: u32,
    pub retry_in: Duration,
}

impl InternalEvent for Retrying<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.notifications(self.target, "retried", 1);
        warn!(
            target_name = self.target,
            id = self.id,
            kind = self.error.kind(),
            error = %self.error,
            failures = self.failures,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "Notification not delivered; retrying."
        );
    }
}

/// The receiver refused a message for good (a 4xx other than 429): it is
/// not retried.
pub struct Refused<'a> {
    pub target: &'a str,
    pub id: &'a str,
    pub error: &'a AttemptError,
    /// Messages the refused request stood for (a summary holds several).
    pub messages: usize,
}

impl InternalEvent for Refused<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.notifications(self.target, "failed", self.messages as u64);
        warn!(target_name = self.target, id = self.id, error = %self.error, messages = self.messages, "Notification refused by the receiver; not retried.");
    }
}

/// A message that cannot be turned into a request (it could not be
/// encoded as JSON): failed, not retried.
pub struct Unencodable<'a> {
    pub target: &'a str,
    pub id: &'a str,
    pub error: &'a crate::json::EncodeError,
}

impl InternalEvent for Unencodable<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.notifications(self.target, "failed", 1);
        metrics.encode_error(self.error.what);
        error!(target_name = self.target, id = self.id, error = %self.error, "Cannot encode a notification; dropped.");
    }
}

/// The `target` label of messages for a target the process has no sender
/// for. Not a possible target name (those hold only letters, digits, `-`
/// and `_`), and one value whatever the name: a name from outside the
/// configuration must not become a label.
pub const UNKNOWN_TARGET: &str = "(unknown)";

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The target already holds `queue` messages.
    QueueFull,
    /// Delivery has stopped (shutdown).
    Stopped,
    /// The process has no sender for the target. Reloads whose rules name
    /// one are refused, so only a bug gets here.
    NoSender,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue full (see `queue` of the target)",
            DropReason::Stopped => "stopped",
            DropReason::NoSender => "no sender for this target (senders are built at start)",
        }
    }
}

/// A message dropped. Each is counted; the warning is written at most
/// once per ten seconds (`inbox::DropLog` decides), with the drops since
/// the last one.
pub struct Dropped<'a> {
    pub target: &'a str,
    pub reason: DropReason,
    /// Write the warning, counting this many drops since the last.
    pub warn: Option<u64>,
}

impl InternalEvent for Dropped<'_> {
    fn emit(&self, metrics: &Metrics) {
        let label = match self.reason {
            DropReason::NoSender => UNKNOWN_TARGET,
            DropReason::QueueFull | DropReason::Stopped => self.target,
        };
        metrics.notifications(label, "dropped", 1);
        if let Some(count) = self.warn {
            warn!(
                target_name = self.target,
                reason = self.reason.as_str(),
                dropped = count,
                "Notifications dropped."
            );
        }
    }
}

/// `breaker_failures` consecutive failures: no attempts for a cool-down.
pub struct BreakerOpened<'a> {
    pub target: &'a str,
    pub host: &'a str,
    pub failures: u32,
    pub cooldown: Duration,
    pub queued: usize,
}

impl InternalEvent for BreakerOpened<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.notification_breaker(self.target, true);
        warn!(
            target_name = self.target,
            host = self.host,
            failures = self.failures,
            cooldown_secs = self.cooldown.as_secs(),
            queued = self.queued,
            "Notification target failing; pausing it (messages wait in its queue)."
        );
    }
}

/// A probe after the cool-down got through.
pub struct BreakerClosed<'a> {
    pub target: &'a str,
    pub host: &'a str,
}

impl InternalEvent for BreakerClosed<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.notification_breaker(self.target, false);
        info!(
            target_name = self.target,
            host = self.host,
            "Notification target answers again."
        );
    }
}

/// The spool could not be read or written: delivery goes on from memory,
/// but a crash now would lose what is queued.
pub struct SpoolFailed<'a> {
    pub target: &'a str,
    pub error: &'a super::spool::SpoolError,
}

impl InternalEvent for SpoolFailed<'_> {
    fn emit(&self, metrics: &Metrics) {
        if let super::spool::SpoolError::Encode(e) = self.error {
            metrics.encode_error(e.what);
        }
        error!(target_name = self.target, error = %self.error, "Notification spool failed; queued messages are kept in memory only.");
    }
}

/// Messages found in the spool at start, from before a restart.
pub struct SpoolLoaded<'a> {
    pub target: &'a str,
    pub pending: usize,
    pub unreadable: usize,
}

impl InternalEvent for SpoolLoaded<'_> {
    fn emit(&self, _: &Metrics) {
        if self.unreadable > 0 {
            warn!(
                target_name = self.target,
                pending = self.pending,
                unreadable = self.unreadable,
                "Notification spool had unreadable lines (a torn write?); skipped them."
            );
        }
        if self.pending > 0 {
            info!(
                target_name = self.target,
                pending = self.pending,
                "Undelivered notifications from before the restart queued again."
            );
        }
    }
}
