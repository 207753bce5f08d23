//! What the lines cut out of the stream become: decoded, checked against
//! the resume checkpoint and the dedup window, counted, and handed to the
//! dispatcher in batches.
//!
//! It owns the batch, the per-type counters, the anchor check after a
//! reconnect, and the rate limit on warnings about the stream's content. It
//! must never wait: a full queue drops the batch (counted) and asks for a
//! resync, because a stalled reader makes the daemon drop the whole
//! subscription. It does no I/O besides the non-blocking hand-off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tracing::debug;

use super::dedup::Dedup;
use super::framer::{Lines, MAX_LINE_BYTES, decode_line_read_at};
use crate::dispatch::Enqueue;
use crate::event::{Event, Labels};
use crate::internal_events::InternalEvent;
use crate::internal_events::source::{
    Deduplicated, EventsDropped, EventsLost, LineTooLong, MalformedLine, WarningsSuppressed,
};
use crate::metrics::Metrics;
use crate::progress::{Checkpoint, ResyncRequests};

/// Most events sent to the dispatcher in one batch.
pub(super) const MAX_BATCH: usize = 256;

/// Least time between two hand-offs while events keep coming. Every
/// hand-off to a parked dispatcher is a cross-thread wake-up (an eventfd
/// write and two context switches), which cost a quarter of the CPU of a
/// busy stream when every socket read made one. An event after a quiet spell
/// is handed over at once; in a burst, events wait at most this long.
pub(super) const LINGER: Duration = Duration::from_millis(1);

/// Everything the reader does with a line, apart from reading it: decode,
/// deduplicate, count, enqueue. Public so benchmarks drive the real path.
pub struct Sink {
    /// Where a dropped batch or a gap asks for a resync.
    resync: Option<ResyncRequests>,
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
    counters: foldhash::HashMap<Labels, IntCounter>,
    delivered: u64,
    warnings: WarnLimit,
    /// When the last batch was handed over.
    handed: Option<Instant>,
    /// When the bytes being cut into lines were read: every event's
    /// `received` (one clock read per socket read, not per event).
    read_at: Instant,
}

impl Lines for Sink {
    fn line(&mut self, line: &[u8]) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        let (event, malformed) = decode_line_read_at(line, self.read_at);
        let anchored = std::mem::take(&mut self.expect_anchor);
        if malformed {
            let log = self.warnings.allow(&self.metrics);
            MalformedLine { line, log }.emit(&self.metrics);
        }
        let Some(event) = event else { return };
        if self.resume.as_ref().is_some_and(|cp| cp.covers(&event)) {
            // Read, though not handled again: the idle probe asks the engine
            // from the checkpoint's time, and must not take the checkpoint's
            // own events for ones this stream missed (on a quiet host it
            // replaced a healthy stream every `idle_ping_secs`).
            self.dedup.admit(&event);
            debug!(event = %event, "Already handled before the restart (checkpoint).");
            return;
        }
        if anchored && !self.dedup.has_seen(&event) {
            // The replay from `since` did not start with what we had read:
            // the engine's ring no longer holds it.
            self.events_lost("ring_overflow");
        }
        if !self.dedup.admit(&event) {
            Deduplicated { event: &event }.emit(&self.metrics);
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
        let log = self.warnings.allow(&self.metrics);
        LineTooLong {
            limit: MAX_LINE_BYTES,
            log,
        }
        .emit(&self.metrics);
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
            counters: foldhash::HashMap::default(),
            delivered: 0,
            warnings: WarnLimit::default(),
            handed: None,
            read_at: Instant::now(),
        }
    }

    /// Gaps and drops ask `resync` for a reconciliation.
    pub fn with_resync(mut self, resync: ResyncRequests) -> Sink {
        self.resync = Some(resync);
        self
    }

    /// Resumes after `checkpoint`: the events it covers were handled before
    /// a restart, and the first connection starts from its time.
    pub fn resuming(mut self, checkpoint: Option<Checkpoint>) -> Sink {
        if let Some(cp) = &checkpoint {
            self.dedup.start_at(cp.time_nano);
        }
        self.resume = checkpoint;
        self
    }

    /// Hands the events read so far to the dispatcher. A full queue drops
    /// them, counted: the reader never waits.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = self.queue.next_batch();
        let batch = std::mem::replace(&mut self.batch, next);
        self.handed = Some(Instant::now());
        if let Err(dropped) = self.queue.try_send(batch) {
            // A closed queue means shutdown: nothing to count.
            if !self.queue.is_closed() {
                self.ask_resync("queue_overflow");
                let log = self.warnings.allow(&self.metrics);
                EventsDropped {
                    events: dropped.len(),
                    first: dropped.first().map(|e| &**e),
                    log,
                }
                .emit(&self.metrics);
            }
        }
    }

    /// The bytes fed from now on were read at `at`.
    pub fn read_at(&mut self, at: Instant) {
        self.read_at = at;
    }

    /// Hands the events read so far over unless the last hand-off was less
    /// than [`LINGER`] before `now`; then returns when to hand them over.
    pub fn flush_paced(&mut self, now: Instant) -> Option<Instant> {
        if self.batch.is_empty() {
            return None;
        }
        match self.handed.map(|t| t + LINGER) {
            Some(due) if now < due && self.batch.len() < MAX_BATCH => Some(due),
            _ => {
                self.flush();
                None
            }
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

    /// The `since` query value to resume from, if anything was read (or a
    /// checkpoint or a connection gave a start).
    pub fn since(&self) -> Option<String> {
        self.dedup.since()
    }

    /// Where a probe at `now`, after `silence`, asks the engine from, and
    /// whether the clock is behind the events read ([`Dedup::probe_since`]).
    pub fn probe_since(&self, now: i64, silence: std::time::Duration) -> Option<(i64, bool)> {
        self.dedup.probe_since(now, silence)
    }

    /// The next connection resumes from `time_nano`, once.
    pub fn rewind_to(&mut self, time_nano: i64) {
        self.dedup.rewind_to(time_nano);
    }

    /// Where the next connection resumes from, and whether it is a rewind.
    pub fn resume_point(&self) -> (Option<String>, bool) {
        self.dedup.resume_point()
    }

    /// A stream opened from the rewind.
    pub fn rewind_done(&mut self) {
        self.dedup.rewind_done();
    }

    /// Whether `event` was read already.
    pub fn has_seen(&self, event: &Event) -> bool {
        self.dedup.has_seen(event)
    }

    /// A stream began at `time_nano`: if nothing was read yet, the next
    /// connection resumes from there.
    pub fn started_at(&mut self, time_nano: i64) {
        self.dedup.start_at(time_nano);
    }

    /// Just connected (`with_since`: with a `since`): if there is an event
    /// already handled for the replay to start with (something was read,
    /// or a checkpoint resumed), expects it first. Returns whether it does.
    pub fn expect_anchor(&mut self, with_since: bool) -> bool {
        self.expect_anchor = with_since && (self.delivered > 0 || self.resume.is_some());
        self.expect_anchor
    }

    /// The time for the replay's first event ran out: if it has still not
    /// come, the engine restarted (its ring is empty) and events were lost.
    pub fn anchor_overdue(&mut self) {
        if std::mem::take(&mut self.expect_anchor) {
            self.events_lost("engine_restart");
        }
    }

    fn events_lost(&self, reason: &'static str) {
        EventsLost { reason }.emit(&self.metrics);
        self.ask_resync(reason);
    }

    /// Schedules a reconciliation; one pending request is enough.
    fn ask_resync(&self, reason: &'static str) {
        if let Some(requests) = &self.resync {
            requests.ask(reason);
        }
    }
}

/// At most one warning a second, so garbage cannot flood the log.
#[derive(Default)]
struct WarnLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimit {
    /// Whether a warning may be written now; if so, first says how many
    /// were held back since the last one.
    fn allow(&mut self, metrics: &Metrics) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return false;
        }
        if self.suppressed > 0 {
            WarningsSuppressed {
                count: std::mem::take(&mut self.suppressed),
            }
            .emit(metrics);
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// The queue's channel needs a runtime to exist in; nothing is awaited.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    fn line(i: usize) -> String {
        format!(
            r#"{{"Type":"container","Action":"start","Actor":{{"ID":"c{i}"}},"timeNano":{}}}"#,
            i + 1
        )
    }

    #[test]
    fn a_full_queue_drops_counts_and_asks_for_a_resync() {
        let rt = runtime();
        let _guard = rt.enter();
        let (tx, _rx) = crate::dispatch::queue(2);
        let metrics = Arc::new(Metrics::new());
        let (resync_tx, mut resync_rx) = mpsc::channel(4);
        let requests = ResyncRequests::new(resync_tx);
        let owed = requests.owed();
        let mut sink = Sink::new(tx, metrics.clone()).with_resync(requests);
        for i in 0..3 {
            sink.line(line(i).as_bytes());
        }
        sink.flush();
        // Two fit; the third is dropped.
        assert!(
            metrics
                .render()
                .contains("dockwarden_events_dropped_total 1")
        );
        assert_eq!(resync_rx.try_recv().ok(), Some("queue_overflow"));
        // Owed until done: a checkpoint written now says so.
        assert_eq!(owed.reason(), Some("queue_overflow"));
        // Every event read is still counted as read.
        assert!(
            metrics
                .render()
                .contains("dockwarden_events_total{action=\"start\",type=\"container\"} 3")
        );
    }

    #[test]
    fn a_replay_that_does_not_start_with_the_anchor_asks_for_a_resync() {
        let rt = runtime();
        let _guard = rt.enter();
        let (tx, _rx) = crate::dispatch::queue(64);
        let metrics = Arc::new(Metrics::new());
        let (resync_tx, mut resync_rx) = mpsc::channel(4);
        let mut sink = Sink::new(tx, metrics.clone()).with_resync(ResyncRequests::new(resync_tx));
        // Nothing read and no checkpoint: nothing to anchor on.
        assert!(!sink.expect_anchor(true));
        sink.line(line(0).as_bytes());
        // Reconnected: the replay starts with the last event read.
        assert!(sink.expect_anchor(true));
        sink.line(line(0).as_bytes());
        sink.anchor_overdue();
        assert!(resync_rx.try_recv().is_err());
        assert!(
            metrics
                .render()
                .contains("dockwarden_events_deduplicated_total 1")
        );
        // Reconnected again: the replay starts later, so events were lost.
        assert!(sink.expect_anchor(true));
        sink.line(line(5).as_bytes());
        assert_eq!(resync_rx.try_recv().ok(), Some("ring_overflow"));
        // Nothing came at all.
        assert!(sink.expect_anchor(true));
        sink.anchor_overdue();
        assert_eq!(resync_rx.try_recv().ok(), Some("engine_restart"));
        assert_eq!(sink.delivered(), 2);
    }

    /// What a checkpoint covers is not handled again, but it was read: the
    /// idle probe, which asks the engine from the checkpoint's time, must
    /// not count it as missed by the stream.
    #[test]
    fn events_the_checkpoint_covers_are_seen_not_delivered() {
        let rt = runtime();
        let _guard = rt.enter();
        let (tx, _rx) = crate::dispatch::queue(64);
        let covered = Event::decode(line(4).as_bytes()).expect("event");
        let newer = Event::decode(line(5).as_bytes()).expect("event");
        let checkpoint = Checkpoint {
            time_nano: covered.time_nano,
            ids: vec![covered.identity()],
            ..Checkpoint::default()
        };
        let mut sink = Sink::new(tx, Arc::new(Metrics::new())).resuming(Some(checkpoint));
        // The replay from the checkpoint's time starts with its own event.
        assert!(sink.expect_anchor(true));
        sink.line(line(4).as_bytes());
        assert_eq!(sink.delivered(), 0);
        assert!(sink.has_seen(&covered), "a covered event counts as read");
        assert!(!sink.has_seen(&newer));
        sink.line(line(5).as_bytes());
        assert_eq!(sink.delivered(), 1);
    }

    #[test]
    fn a_burst_is_handed_over_at_most_once_a_linger() {
        let rt = runtime();
        let _guard = rt.enter();
        let (tx, _rx) = crate::dispatch::queue(4096);
        let mut sink = Sink::new(tx, Arc::new(Metrics::new()));
        let t0 = Instant::now();
        // After a quiet spell (here: nothing handed over yet), at once.
        sink.line(line(0).as_bytes());
        assert_eq!(sink.flush_paced(t0), None);
        assert_eq!((sink.pending(), sink.queue.depth()), (0, 1));
        // Right after a hand-off: held until a linger after it.
        sink.line(line(1).as_bytes());
        sink.line(line(2).as_bytes());
        let due = sink.flush_paced(t0).expect("held back");
        assert!(due > t0 && due <= Instant::now() + LINGER, "{due:?}");
        assert_eq!((sink.pending(), sink.queue.depth()), (2, 1));
        // Due: handed over as one batch.
        assert_eq!(sink.flush_paced(due), None);
        assert_eq!((sink.pending(), sink.queue.depth()), (0, 3));
        // A full batch never waits (`due` is within a linger of the
        // hand-off just made, which came after it was computed).
        for i in 3..3 + MAX_BATCH - 1 {
            sink.line(line(i).as_bytes());
        }
        assert!(sink.flush_paced(due).is_some());
        sink.line(line(3 + MAX_BATCH).as_bytes());
        assert_eq!((sink.pending(), sink.queue.depth()), (0, 3 + MAX_BATCH));
        // Nothing read: nothing to hold.
        assert_eq!(sink.flush_paced(Instant::now()), None);
    }

    #[test]
    fn malformed_lines_are_all_counted_though_warnings_are_limited() {
        let rt = runtime();
        let _guard = rt.enter();
        let (tx, _rx) = crate::dispatch::queue(64);
        let metrics = Arc::new(Metrics::new());
        let mut sink = Sink::new(tx, metrics.clone());
        for _ in 0..5 {
            sink.line(b"not json");
        }
        sink.overflow();
        assert!(
            metrics
                .render()
                .contains("dockwarden_events_malformed_total 6")
        );
        assert_eq!(sink.warnings.suppressed, 5);
    }
}
