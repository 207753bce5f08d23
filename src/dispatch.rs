//! Event → matching rules → handler runs, off the stream reader.
//!
//! It owns the lanes, the concurrency bounds and the container view's
//! place in each lane (before observers and handlers). It must not call the
//! engine or read an event beyond its key and actor: handlers do.
//!
//! The dispatcher takes events from the reader's bounded queue, matches them
//! against the current [`Ruleset`] (swappable between two events) and hands
//! each event with its matching rules to a *lane*: one lane per actor (a
//! container's events run in order, one at a time), lanes run concurrently,
//! and at most `max_concurrency` handler runs are in flight overall.
//!
//! Memory stays bounded by one budget, `queue_capacity` events read and not
//! yet handled: an event keeps its place from the moment the reader queues it
//! until its handlers finish, whether it waits in the queue or in a lane.
//! When handlers fall behind, the budget runs out and the reader drops (and
//! counts) events instead of stalling the stream; the dispatcher itself never
//! waits for room.
//!
//! This file is long because its unit tests drive the whole dispatcher (order
//! within a container, concurrency across them, a panicking handler, the
//! budget) and the inline path shares `Lanes` with the lanes: splitting would
//! expose both.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::containers::Containers;
use crate::event::Event;
use crate::handlers::{Ctx, HandlerError, Outcome};
use crate::history::History;
use crate::internal_events::OwnEvents;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::rules::{Rule, Ruleset};

/// Events handed from the reader to the dispatcher, a frame's worth at a
/// time: one send (and at most one wake-up) per batch, not per event.
pub type Batch = Vec<Arc<Event>>;

/// The reader's end of the queue: bounded in events read and not yet
/// handled (queued, or waiting or running in a lane), never waits.
#[derive(Clone)]
pub struct Enqueue {
    tx: mpsc::Sender<Batch>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
    spent: Arc<Spent>,
}

/// The dispatcher's end.
pub struct Dequeue {
    rx: mpsc::Receiver<Batch>,
    depth: Arc<AtomicUsize>,
    spent: Arc<Spent>,
}

/// Most events in batches on their way back to the reader: past them the
/// dispatcher lets go of a batch itself. A quarter of a megabyte of events
/// at most, held only until the reader's next hand-off.
const MAX_SPENT_EVENTS: usize = 1024;

/// Batches the dispatcher has routed, on their way back to the reader's
/// thread to be let go of there.
///
/// The reader allocates every event, and most are done with on the
/// dispatcher's thread. mimalloc frees a block of another thread's page
/// with an atomic exchange on that page, which the owner then collects: the
/// two threads fight over the same cache lines, and with a rules file
/// matching nothing that was a sixth of dockwarden's CPU (`perf`: 10 % in
/// the dispatcher's `mi_free`, 7 % in the reader's `_mi_page_free_collect`).
/// Given back, an event nothing else holds is freed by the thread that
/// made it, and the batch's buffer is reused for the next one. An event a
/// lane still holds is freed wherever the lane lets go of it.
#[derive(Default)]
struct Spent(Mutex<SpentBatches>);

#[derive(Default)]
struct SpentBatches {
    batches: Vec<Batch>,
    events: usize,
}

/// A queue for at most `capacity` events read and not yet handled: an
/// event keeps its place in the budget until its handlers finish.
pub fn queue(capacity: usize) -> (Enqueue, Dequeue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let depth = Arc::new(AtomicUsize::new(0));
    let spent = Arc::new(Spent::default());
    (
        Enqueue {
            tx,
            depth: depth.clone(),
            capacity,
            spent: spent.clone(),
        },
        Dequeue { rx, depth, spent },
    )
}

impl Enqueue {
    /// Queues as much of a batch as there is room for, its oldest events
    /// first, and gives back the rest (all of it if the dispatcher is
    /// gone): a batch (up to 256 events a socket read) larger than the room
    /// left loses only what does not fit, and one larger than a small
    /// `queue_capacity` is not dropped whole from an empty queue.
    pub fn try_send(&self, mut batch: Batch) -> Result<(), Batch> {
        let n = batch.len();
        let mut before = self.depth.load(Ordering::Acquire);
        let fits = loop {
            let fits = self.capacity.saturating_sub(before).min(n);
            if fits == 0 {
                return Err(batch);
            }
            match self.depth.compare_exchange_weak(
                before,
                before + fits,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break fits,
                Err(now) => before = now,
            }
        };
        let rest = batch.split_off(fits);
        match self.tx.try_send(batch) {
            Ok(()) if rest.is_empty() => Ok(()),
            Ok(()) => Err(rest),
            Err(e) => {
                self.depth.fetch_sub(fits, Ordering::AcqRel);
                let mut back = match e {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
                };
                back.extend(rest);
                Err(back)
            }
        }
    }

    /// The most events it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Events read and not yet handled.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// The count behind [`depth`](Enqueue::depth), for `/metrics`.
    pub fn depth_source(&self) -> Arc<AtomicUsize> {
        self.depth.clone()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Lets go, on this thread, of the events in the batches the
    /// dispatcher gave back, and returns an empty buffer for the next batch
    /// (one of theirs, or a new one). Never waits: a batch being given back
    /// at this moment stays for the next call.
    pub fn next_batch(&self) -> Batch {
        let spent = match self.spent.0.try_lock() {
            Ok(mut spent) => {
                spent.events = 0;
                std::mem::take(&mut spent.batches)
            }
            Err(_) => Vec::new(),
        };
        // The others, and their events, are let go of on the way.
        let mut next = spent
            .into_iter()
            .max_by_key(Vec::capacity)
            .unwrap_or_default();
        next.clear();
        next
    }
}

/// The dispatch queue as the sink of dockwarden's own events: each is
/// counted in `dockwarden_events_total{type="dockwarden"}` and queued like
/// an event read from the engine, so it is handled after the event that
/// caused it, in its container's lane. A full queue drops it and counts it.
pub struct OwnQueue {
    queue: Enqueue,
    metrics: Arc<Metrics>,
    warned: AtomicBool,
}

impl OwnQueue {
    pub fn new(queue: Enqueue, metrics: Arc<Metrics>) -> Self {
        OwnQueue {
            queue,
            metrics,
            warned: AtomicBool::new(false),
        }
    }
}

impl OwnEvents for OwnQueue {
    fn publish(&self, event: Event) {
        self.metrics.event_counter(event.labels).inc();
        let key = event.key.clone();
        if self.queue.try_send(vec![Arc::new(event)]).is_err() {
            self.metrics.event_dropped();
            // Once per overflow spell, not once per event.
            if !self.warned.swap(true, Ordering::Relaxed) {
                warn!(event = %key, "Queue full: dropped one of dockwarden's own events; its notifications are lost.");
            }
        } else {
            self.warned.store(false, Ordering::Relaxed);
        }
    }
}

impl Dequeue {
    /// The next batch: each of its events holds its place in the budget
    /// until its [`Held`] is dropped.
    pub async fn recv(&mut self) -> Option<Batch> {
        self.rx.recv().await
    }

    /// The place of one event taken with [`recv`](Dequeue::recv).
    pub(crate) fn held(&self) -> Held {
        Held(self.depth.clone())
    }

    /// A batch routed: back to the reader ([`Enqueue::next_batch`]) to be
    /// let go of there, unless enough are on their way already.
    fn give_back(&self, batch: Batch) {
        let mut spent = lock(&self.spent.0);
        if spent.events + batch.len() <= MAX_SPENT_EVENTS {
            spent.events += batch.len();
            spent.batches.push(batch);
            return;
        }
        // Let go of here, once the reader may take the lock again.
        drop(spent);
        drop(batch);
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }
}

/// One event's place in the queue's budget, given back when it is dropped
/// (its handlers finished, or it was let go at shutdown).
pub(crate) struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One event with the rules it matched, waiting in its lane.
struct Work {
    /// Its place in the progress watermark (none for synthetic events).
    seq: Option<u64>,
    event: Arc<Event>,
    rules: Vec<Arc<Rule>>,
    /// The ruleset's observers, if any wants this event.
    observers: Option<Arc<Ruleset>>,
    _held: Held,
}

/// The dispatcher task.
pub struct Dispatcher {
    queue: Dequeue,
    rules: watch::Receiver<Arc<Ruleset>>,
    lanes: Arc<Lanes>,
    progress: Arc<Progress>,
    /// Where the status API's lifecycles and event ring are kept, if any.
    history: Option<Arc<History>>,
}

struct Lanes {
    /// foldhash: looked up for every event that waits.
    queues: Mutex<foldhash::HashMap<String, VecDeque<Work>>>,
    ctx: Arc<Ctx>,
    concurrency: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    progress: Arc<Progress>,
}

impl Dispatcher {
    /// `tracker` tracks every lane task, so shutdown can wait for running
    /// handlers; `ctx.shutdown` stops dispatching.
    pub fn new(
        queue: Dequeue,
        rules: watch::Receiver<Arc<Ruleset>>,
        ctx: Arc<Ctx>,
        max_concurrency: usize,
        tracker: TaskTracker,
        progress: Arc<Progress>,
    ) -> Self {
        let shutdown = ctx.shutdown.clone();
        Dispatcher {
            queue,
            rules,
            history: None,
            progress: progress.clone(),
            lanes: Arc::new(Lanes {
                queues: Mutex::new(foldhash::HashMap::default()),
                ctx,
                concurrency: Arc::new(Semaphore::new(max_concurrency)),
                tracker,
                shutdown,
                progress,
            }),
        }
    }

    /// Records every event in `history` too.
    pub fn recording(mut self, history: Arc<History>) -> Self {
        self.history = Some(history);
        self
    }

    pub async fn run(mut self) {
        let shutdown = self.lanes.shutdown.clone();
        let metrics = self.lanes.ctx.metrics.clone();
        // The matched rules of each event, in a buffer that is reused
        // unless the event goes to a lane (most are done here).
        let mut matched: Vec<Arc<Rule>> = Vec::new();
        loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                batch = self.queue.recv() => match batch {
                    Some(b) => b,
                    None => break,
                },
            };
            // The rules in force for this batch: a reload lands between
            // two batches, so between two events.
            let rules = self.rules.borrow().clone();
            self.lanes.ctx.containers.keep_all(rules.needs_view);
            // In stream order, before any handler: the API's lifecycles
            // and event ring.
            if let Some(history) = &self.history {
                history.record(&batch, &self.lanes.ctx.containers);
            }
            for event in &batch {
                let held = self.queue.held();
                let seq = (!event.synthetic).then(|| self.progress.begin(event));
                matched.clear();
                matched.extend(rules.matching(event).cloned());
                let observers = rules.observed(event).then(|| rules.clone());
                if matched.is_empty() && observers.is_none() && !Containers::wants(event) {
                    self.lanes.finish(event, seq);
                    drop(held);
                    continue;
                }
                for rule in &matched {
                    rule.series(&metrics).matched();
                }
                // Work that never waits, of a container with nothing
                // pending, is done right here: no task, no wake-up, and its
                // order kept (only the dispatcher starts lanes, so an idle
                // lane stays idle meanwhile).
                if matched.iter().all(|r| r.handler.never_waits()) && self.lanes.idle(event) {
                    self.lanes
                        .run_now(event, &matched, observers.as_deref(), seq);
                    drop(held);
                    continue;
                }
                // No wait here: the budget taken when the event was queued
                // bounds what the lanes hold.
                self.lanes.submit(Work {
                    seq,
                    event: event.clone(),
                    rules: std::mem::take(&mut matched),
                    observers,
                    _held: held,
                });
            }
            self.queue.give_back(batch);
            // Holds no rule between batches: a reload's old rules go now.
            matched.clear();
        }
        let left = self.queue.depth();
        if left > 0 {
            info!(
                events = left,
                "Dispatcher stopped with events read and not handled (queued, or in a lane)."
            );
        }
    }
}

impl Lanes {
    /// Whether `event`'s container has no work pending or running.
    fn idle(&self, event: &Event) -> bool {
        !lock(&self.queues).contains_key(event.ordering_key())
    }

    /// What `run` does, for work whose handlers all never wait, done
    /// without a task: a handler that waits after all fails its run.
    fn run_now(
        &self,
        event: &Arc<Event>,
        rules: &[Arc<Rule>],
        observers: Option<&Ruleset>,
        seq: Option<u64>,
    ) {
        self.before_handlers(event, observers);
        for rule in rules {
            let started = Instant::now();
            let outcome = match AssertUnwindSafe(rule.handler.handle(&self.ctx, event))
                .catch_unwind()
                .now_or_never()
            {
                Some(Ok(outcome)) => outcome,
                Some(Err(_)) => Outcome::Error(HandlerError::Panicked),
                None => Outcome::Error(HandlerError::Waited),
            };
            self.handled(rule, event, outcome, started);
        }
        self.finish(event, seq);
    }

    /// The container view first, then the observers: handlers read both.
    fn before_handlers(&self, event: &Arc<Event>, observers: Option<&Ruleset>) {
        let ctx = &self.ctx;
        ctx.containers.observe(event, &ctx.docker, &ctx.tasks);
        let Some(ruleset) = observers else { return };
        for observer in ruleset.observers.iter().filter(|o| o.wants(event)) {
            if std::panic::catch_unwind(AssertUnwindSafe(|| observer.observe(ctx, event))).is_err()
            {
                warn!(event = %event, "Observer panicked.");
            }
        }
    }

    /// Counts one rule's run, and reports its failure.
    fn handled(&self, rule: &Rule, event: &Event, outcome: Outcome, started: Instant) {
        let ctx = &self.ctx;
        rule.series(&ctx.metrics)
            .ran(outcome.label(), started.elapsed());
        if let Outcome::Error(error) = &outcome {
            ctx.handler_failed(&rule.name, rule.handler_name, event, error);
        }
    }

    /// The event is done: its lag is measured and the watermark advances.
    fn finish(&self, event: &Event, seq: Option<u64>) {
        if let Some(lag) = lag(event) {
            self.ctx.metrics.event_handled(lag);
        }
        if let Some(seq) = seq {
            self.progress.done(seq);
        }
    }

    fn submit(self: &Arc<Self>, work: Work) {
        let key = {
            let mut queues = lock(&self.queues);
            if let Some(queue) = queues.get_mut(work.event.ordering_key()) {
                queue.push_back(work);
                return;
            }
            let key = work.event.ordering_key().to_owned();
            queues.insert(key.clone(), VecDeque::new());
            key
        };
        let lanes = self.clone();
        self.tracker
            .spawn(async move { lanes.run_lane(key, work).await });
    }

    /// Runs a lane's work in order until it is empty, then retires the lane.
    async fn run_lane(self: Arc<Self>, key: String, first: Work) {
        let mut next = Some(first);
        while let Some(work) = next {
            if self.shutdown.is_cancelled() {
                break;
            }
            self.run(work).await;
            let mut queues = lock(&self.queues);
            next = queues.get_mut(&key).and_then(VecDeque::pop_front);
            if next.is_none() {
                queues.remove(&key);
            }
        }
        // Shutting down: what is still queued in this lane is not started.
        let mut queues = lock(&self.queues);
        if let Some(left) = queues.remove(&key)
            && !left.is_empty()
        {
            info!(key = %key, events = left.len(), "Shutdown: queued events of this container not handled.");
        }
    }

    async fn run(&self, work: Work) {
        let _permit = tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => return,
            p = self.concurrency.acquire() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        self.before_handlers(&work.event, work.observers.as_deref());
        for rule in &work.rules {
            let started = Instant::now();
            // A panicking handler must not take its lane (and with it every
            // later event of that container) down.
            let outcome = AssertUnwindSafe(rule.handler.handle(&self.ctx, &work.event))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Outcome::Error(HandlerError::Panicked));
            self.handled(rule, &work.event, outcome, started);
        }
        self.finish(&work.event, work.seq);
    }
}

/// Now minus the engine's event time; zero if the clocks disagree.
/// Engine event time → end of its handling. None for dockwarden's own
/// events, stamped with the time of the engine event they answer (a
/// restart's comes after its backoff): they are not the engine's lag.
fn lag(event: &Event) -> Option<Duration> {
    (event.typ != "dockwarden").then(|| crate::clock::since_nanos(event.time_nano))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::DockerHandle;
    use crate::handlers::{BoxFuture, Handler};
    use crate::metrics::Metrics;

    /// (container, seq, "start" | "end") in the order they happened.
    type ProbeLog = Arc<Mutex<Vec<(String, String, &'static str)>>>;

    /// Records (container, seq) at start and end of each run, sleeping in
    /// between, to show ordering within a container and overlap across them.
    struct Probe {
        log: ProbeLog,
    }

    impl Handler for Probe {
        fn handle<'a>(&'a self, _: &'a Ctx, ev: &'a Arc<Event>) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                let seq = ev.detail.clone().unwrap_or_default();
                self.log
                    .lock()
                    .expect("lock")
                    .push((ev.actor_id.clone(), seq.clone(), "start"));
                if seq == "panic" {
                    panic!("probe asked to panic");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.log
                    .lock()
                    .expect("lock")
                    .push((ev.actor_id.clone(), seq, "end"));
                Outcome::Ok
            })
        }
    }

    fn event(id: &str, seq: &str, t: i64) -> Arc<Event> {
        let line = format!(
            r#"{{"Type":"container","Action":"exec_start: {seq}","Actor":{{"ID":"{id}"}},"timeNano":{t}}}"#
        );
        Arc::new(Event::decode(line.as_bytes()).expect("decodes"))
    }

    /// One rule on every container event, run by `handler`.
    fn one_rule(name: &'static str, handler: Arc<dyn Handler>) -> watch::Receiver<Arc<Ruleset>> {
        let rule = Rule::new(name, &["container.*"], name, handler).expect("valid globs");
        let rules = Arc::new(Ruleset {
            rules: vec![Arc::new(rule)],
            observers: Vec::new(),
            needs_view: true,
            on_keys: Default::default(),
        });
        // The sender may go: the receiver keeps the last value.
        watch::channel(rules).1
    }

    fn ctx(metrics: &Arc<Metrics>) -> Arc<Ctx> {
        let shutdown = CancellationToken::new();
        Arc::new(Ctx {
            dry_run: false,
            docker: DockerHandle::default(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
            audit: crate::audit::AuditHandle::disabled(metrics.clone()),
            containers: Arc::default(),
            own: Arc::new(crate::internal_events::Discard),
            notify: crate::notify::NotifyHandle::disabled(),
        })
    }

    /// A dispatcher running one rule (`handler`, at most 8 runs at once)
    /// over a queue of `capacity`.
    fn start(
        name: &'static str,
        handler: Arc<dyn Handler>,
        capacity: usize,
    ) -> (
        Enqueue,
        Arc<Metrics>,
        TaskTracker,
        tokio::task::JoinHandle<()>,
    ) {
        let metrics = Arc::new(Metrics::new());
        let tracker = TaskTracker::new();
        let (tx, rx) = queue(capacity);
        metrics.watch_queue_depth(tx.depth_source());
        let dispatcher = Dispatcher::new(
            rx,
            one_rule(name, handler),
            ctx(&metrics),
            8,
            tracker.clone(),
            Arc::default(),
        );
        (tx, metrics, tracker, tokio::spawn(dispatcher.run()))
    }

    /// Waits on its gate, which the test opens.
    struct Gate(Arc<Semaphore>);

    impl Handler for Gate {
        fn handle<'a>(&'a self, _: &'a Ctx, _: &'a Arc<Event>) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                let _open = self.0.acquire().await;
                Outcome::Ok
            })
        }
    }

    /// A batch larger than the room left: its oldest events go in, the
    /// rest is given back to be counted as dropped.
    #[test]
    fn a_batch_larger_than_the_room_left_loses_only_what_does_not_fit() {
        let (tx, mut rx) = queue(4);
        let batch =
            |from: i64, n: i64| -> Batch { (from..from + n).map(|t| event("c", "0", t)).collect() };
        // Larger than the whole queue, which is empty.
        let back = tx.try_send(batch(1, 6)).expect_err("two do not fit");
        assert_eq!(back.iter().map(|e| e.time_nano).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(tx.depth(), 4);
        let queued = rx.rx.try_recv().expect("the four that fit");
        assert_eq!(
            queued.iter().map(|e| e.time_nano).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // Full: nothing goes in.
        assert_eq!(tx.try_send(batch(7, 2)).expect_err("full").len(), 2);
        assert_eq!(tx.depth(), 4);
    }

    /// Routed batches go back to the reader, which lets go of their events
    /// and reuses a buffer; an event a lane holds outlives its batch, and
    /// no more than `MAX_SPENT_EVENTS` wait to go back.
    #[tokio::test]
    async fn routed_batches_go_back_to_the_reader_to_be_let_go_of() {
        let gate = Arc::new(Semaphore::new(0));
        let (tx, _metrics, tracker, task) = start("gate", Arc::new(Gate(gate.clone())), 4096);
        // Events of another type match no rule: done in the dispatcher.
        let other = |t: i64| {
            let line = format!(
                r#"{{"Type":"volume","Action":"mount","Actor":{{"ID":"v"}},"timeNano":{t}}}"#
            );
            Arc::new(Event::decode(line.as_bytes()).expect("decodes"))
        };
        let done = other(1);
        let waiting = event("c", "0", 2);
        let mut batch = Vec::with_capacity(300);
        batch.extend([done.clone(), waiting.clone()]);
        assert!(tx.try_send(batch).is_ok());
        let spent = |tx: &Enqueue| lock(&tx.spent.0).events;
        for _ in 0..200 {
            if spent(&tx) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(spent(&tx), 2, "the routed batch is on its way back");
        // (The progress watermark may hold the last event done too.)
        let (done_held, waiting_held) = (Arc::strong_count(&done), Arc::strong_count(&waiting));
        let next = tx.next_batch();
        assert!(next.is_empty());
        assert_eq!(next.capacity(), 300, "the batch's buffer is reused");
        assert_eq!(
            Arc::strong_count(&done),
            done_held - 1,
            "let go of by the reader"
        );
        assert_eq!(Arc::strong_count(&waiting), waiting_held - 1);
        assert!(Arc::strong_count(&waiting) >= 2, "its lane still holds it");
        assert_eq!(spent(&tx), 0);
        assert_eq!(tx.next_batch().capacity(), 0, "nothing more came back");

        // Past the bound, the dispatcher lets go of a batch itself.
        let big = |from: i64| -> Batch { (from..from + 500).map(other).collect() };
        for from in [10, 1000] {
            assert!(tx.try_send(big(from)).is_ok());
        }
        let third = big(5000);
        let watched = Arc::downgrade(&third[1]);
        assert!(tx.try_send(third).is_ok());
        for _ in 0..200 {
            if watched.strong_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            watched.strong_count(),
            0,
            "a third batch past the bound is not kept"
        );
        assert_eq!(spent(&tx), 1000);
        assert_eq!(tx.next_batch().capacity(), 500);
        assert_eq!(spent(&tx), 0);
        gate.add_permits(10);
        let back = tx.spent.clone();
        drop(tx);
        task.await.expect("dispatcher ends when the queue closes");
        tracker.close();
        tracker.wait().await;
        drop(std::mem::take(&mut lock(&back.0).batches));
        assert_eq!(Arc::strong_count(&waiting), 1, "handled, its lane let go");
    }

    #[tokio::test]
    async fn events_in_lanes_keep_their_place_in_the_queue_budget() {
        let gate = Arc::new(Semaphore::new(0));
        let (tx, metrics, tracker, task) = start("gate", Arc::new(Gate(gate.clone())), 4);
        let four: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .zip(1..)
            .map(|(id, t)| event(id, "0", t))
            .collect();
        assert!(tx.try_send(four).is_ok());
        // The dispatcher takes the batch into the lanes, where the
        // handlers wait: the four are read and not handled.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(tx.depth(), 4);
        assert!(metrics.render().contains("dockwarden_queue_depth 4"));
        assert!(
            tx.try_send(vec![event("e", "0", 5)]).is_err(),
            "the lanes' events hold the whole budget"
        );
        gate.add_permits(100);
        for _ in 0..200 {
            if tx.depth() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tx.depth(), 0, "handled events give their places back");
        assert!(metrics.render().contains("dockwarden_queue_depth 0"));
        assert!(tx.try_send(vec![event("e", "0", 5)]).is_ok());
        drop(tx);
        task.await.expect("dispatcher ends when the queue closes");
        tracker.close();
        tracker.wait().await;
        assert!(
            metrics
                .render()
                .contains("dockwarden_handler_runs_total{handler=\"gate\",outcome=\"ok\"} 5")
        );
    }

    #[tokio::test]
    async fn per_container_order_and_cross_container_concurrency() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let probe = Arc::new(Probe { log: log.clone() });
        let (tx, metrics, tracker, task) = start("probe", probe, 64);
        for i in 0..5 {
            let pair = vec![
                event("a", &i.to_string(), i + 1),
                event("b", &i.to_string(), i + 1),
            ];
            assert!(tx.try_send(pair).is_ok());
        }
        assert!(tx.try_send(vec![event("c", "panic", 99)]).is_ok());
        assert!(tx.try_send(vec![event("c", "after-panic", 100)]).is_ok());
        drop(tx);
        task.await.expect("dispatcher ends when the queue closes");
        tracker.close();
        tracker.wait().await;

        let log = log.lock().expect("lock").clone();
        for id in ["a", "b"] {
            let mine: Vec<_> = log.iter().filter(|(c, _, _)| c == id).collect();
            let expected: Vec<(String, &str)> = (0..5)
                .flat_map(|i| [(i.to_string(), "start"), (i.to_string(), "end")])
                .collect();
            let got: Vec<(String, &str)> = mine.iter().map(|(_, s, p)| (s.clone(), *p)).collect();
            assert_eq!(
                got, expected,
                "container {id} handled in order, one at a time"
            );
        }
        // a and b overlapped: b started before a finished its first event.
        let a_end = log.iter().position(|e| e.0 == "a" && e.2 == "end");
        let b_start = log.iter().position(|e| e.0 == "b" && e.2 == "start");
        assert!(b_start < a_end, "containers run concurrently: {log:?}");
        // The panic became an error outcome and c's next event still ran.
        assert!(
            log.iter()
                .any(|e| e.0 == "c" && e.1 == "after-panic" && e.2 == "end")
        );
        let text = metrics.render();
        assert!(
            text.contains("dockwarden_handler_runs_total{handler=\"probe\",outcome=\"error\"} 1")
        );
        assert!(
            text.contains("dockwarden_handler_runs_total{handler=\"probe\",outcome=\"ok\"} 11")
        );
        assert!(text.contains("dockwarden_rule_matches_total{rule=\"probe\"} 12"));
    }
}
