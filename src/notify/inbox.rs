//! A target's bounded queue, as the pipeline sees it: [`Inbox::push`]
//! never waits (a short lock around a `Vec::push`) and, when the target
//! already holds `queue` messages, drops the new one, counts it and warns
//! (at most once per [`DROP_LOG_EVERY`], saying how many since the last
//! warning).
//!
//! The bound covers every message not yet settled: those just pushed and
//! those the sender holds (waiting out a backoff, an open breaker or the
//! rate limit). It owns that count and the queue gauge; it must not
//! persist or send.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Message;
use super::observe::{DropReason, Dropped};
use super::spool::Entry;
use crate::internal_events::InternalEvent;
use crate::lock::lock;
use crate::metrics::Metrics;

/// At most one "dropped" warning per target this often.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Inbox {
    pub name: String,
    capacity: usize,
    /// Messages pushed and not yet settled.
    queued: AtomicUsize,
    fresh: Mutex<Vec<Entry>>,
    /// Wakes the sender when a message is pushed.
    pub wake: Notify,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
    drop_log: DropLog,
}

/// Drops are each counted but warned about at most once per
/// [`DROP_LOG_EVERY`], so a flood of them cannot flood the log.
#[derive(Default)]
pub struct DropLog {
    /// When the last warning was written, and drops since.
    last: Mutex<(Option<Instant>, u64)>,
}

impl DropLog {
    /// Counts one drop. Some(drops since the last warning, this one
    /// included) when a warning is due now.
    pub fn drop_one(&self) -> Option<u64> {
        let mut g = lock(&self.last);
        g.1 += 1;
        if g.0.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
            g.0 = Some(Instant::now());
            Some(std::mem::take(&mut g.1))
        } else {
            None
        }
    }
}

impl Inbox {
    pub fn new(name: &str, capacity: usize, metrics: Arc<Metrics>) -> Inbox {
        Inbox {
            name: name.to_owned(),
            capacity: capacity.max(1),
            queued: AtomicUsize::new(0),
            fresh: Mutex::new(Vec::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            metrics,
            drop_log: DropLog::default(),
        }
    }

    /// Queues `msg`, or drops and counts it when the queue is full or
    /// delivery has stopped.
    pub fn push(&self, msg: Message) {
        if self.closed.load(Ordering::Acquire) {
            return self.dropped(DropReason::Stopped);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return self.dropped(DropReason::QueueFull);
        }
        lock(&self.fresh).push(Entry {
            queued_at: crate::clock::unix_nanos(),
            msg,
        });
        self.metrics.notification_queued(&self.name, 1);
        self.wake.notify_one();
    }

    fn dropped(&self, reason: DropReason) {
        Dropped {
            target: &self.name,
            reason,
            warn: self.drop_log.drop_one(),
        }
        .emit(&self.metrics);
    }

    /// Everything pushed since the last call, in order.
    pub fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut *lock(&self.fresh))
    }

    /// Messages the sender found in the spool at start: they count
    /// against the bound like any other.
    pub fn restored(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::AcqRel);
        self.metrics.notification_queued(&self.name, n as i64);
    }

    /// `n` messages left the queue (delivered, coalesced or refused).
    pub fn settled(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.metrics.notification_queued(&self.name, -(n as i64));
    }

    /// From now on every push is dropped and counted.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Messages pushed and not yet settled.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}
