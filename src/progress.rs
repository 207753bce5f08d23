//! How far handling has got, and the checkpoint that survives a restart.
//!
//! Events are handled concurrently across containers, so "the last event
//! handled" is a watermark: the newest event such that it and every event
//! read before it have been fully handled. [`Progress`] tracks it; the
//! checkpoint task writes it to `[state] dir`/`checkpoint.json` atomically
//! (temp file, fsync, rename) at most once a second and on shutdown. On
//! start, `run` resumes from it with `since`, skipping the events at that
//! very nanosecond that were handled already, told apart by
//! [`Event::identity`] (the one definition the source's dedup uses too).
//!
//! It owns the watermark and the file format; it must not decide what to do
//! without a checkpoint (the app resyncs).
//!
//! This file is long because the watermark's edge cases (ties in one
//! nanosecond, runs let go behind a slow event, bursts given back) are
//! tested beside the one `done` that handles them.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::event::{Event, Identity};
use crate::json::{EncodeError, encode};
use crate::lock::lock;
use crate::metrics::Metrics;

/// The checkpoint file's format. 1: `ids` were `type|action|actor` strings,
/// blind to attributes, and there was no `version` field. 2: `ids` are
/// [`Identity`] digests.
pub const CHECKPOINT_VERSION: u32 = 2;

/// The last fully handled point of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`CHECKPOINT_VERSION`]; absent (0) in files of format 1.
    #[serde(default)]
    pub version: u32,
    /// `timeNano` of the newest fully handled event.
    pub time_nano: i64,
    /// [`Event::identity`] of every handled event at exactly that nanosecond.
    pub ids: Vec<Identity>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            time_nano: 0,
            ids: Vec::new(),
        }
    }
}

impl Checkpoint {
    /// Whether `event` is at or before this point and was handled.
    pub fn covers(&self, event: &Event) -> bool {
        event.time_nano < self.time_nano
            || (event.time_nano == self.time_nano && self.ids.contains(&event.identity()))
    }
}

/// The watermark waits for the oldest event in flight, so every event done
/// meanwhile waits behind it; at a burst's rate even a second's wait is
/// 100 k+ events (the pipeline bench held 200+ MB so). A done event's
/// identity matters only if the watermark can stop at its nanosecond: not
/// once a later event right after it is done too (both pass together, and
/// the later time replaces the ids). Those slots let their event go, so
/// whole events are only those in flight and the done one just before
/// each. Past this many slots, a done event sharing its nanosecond with a
/// neighbour keeps only its identity: a run of those could grow unbounded.
const HELD_WHOLE: usize = 1024;

/// Slot capacity kept whatever the load (a few hundred kB at most).
const SHRINK_ABOVE: usize = 8192;

struct Slot {
    time_nano: i64,
    /// Where its event (or identity) is kept in [`Held`], while it may
    /// still be needed; [`NOTHING`] once let go. An index, not the event
    /// itself, so that the slots of a burst take 16 bytes (32 with the
    /// event and its identity in place).
    held: u32,
    done: bool,
}

/// A slot that holds nothing.
const NOTHING: u32 = u32::MAX;

/// What a slot holds while its identity may still be needed.
enum Kept {
    Event(Arc<Event>),
    /// Its event was let go early (rare): only the identity is kept.
    Id(Identity),
}

/// The events and identities of the slots that hold one: at most those in
/// flight and the done ones just before each, however many slots a burst
/// behind a slow event adds.
#[derive(Default)]
struct Held {
    kept: Vec<Option<Kept>>,
    /// Free places in `kept`.
    free: Vec<u32>,
}

impl Held {
    fn keep(&mut self, what: Kept) -> u32 {
        if let Some(i) = self.free.pop() {
            self.kept[i as usize] = Some(what);
            return i;
        }
        match u32::try_from(self.kept.len()) {
            Ok(i) if i != NOTHING => {
                self.kept.push(Some(what));
                i
            }
            // Four billion events in flight: nothing to keep it in. Its
            // identity is then not in the checkpoint (a restart at this
            // very nanosecond would see it again, as without a checkpoint).
            _ => NOTHING,
        }
    }

    fn take(&mut self, i: u32) -> Option<Kept> {
        let kept = self.kept.get_mut(i as usize)?.take();
        if kept.is_some() {
            self.free.push(i);
            if self.free.len() == self.kept.len() {
                // Nothing held: start afresh, and give back what a burst
                // grew (what a quiet stream needs is kept, not regrown).
                self.kept.clear();
                self.free.clear();
                if self.kept.capacity() > SHRINK_ABOVE {
                    self.kept = Vec::new();
                    self.free = Vec::new();
                }
            }
        }
        kept
    }

    /// Keeps only the identity of what `i` holds.
    fn keep_identity(&mut self, i: u32) {
        if let Some(slot) = self.kept.get_mut(i as usize)
            && let Some(Kept::Event(e)) = slot
        {
            *slot = Some(Kept::Id(e.identity()));
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Events begun and not yet behind the watermark, in read order.
    slots: VecDeque<Slot>,
    /// What those slots hold.
    held: Held,
    /// Sequence number of `slots[0]`.
    front: u64,
    next: u64,
    mark: Checkpoint,
    /// Events at `mark.time_nano` not yet digested into `mark.ids`: the
    /// digest is taken when the checkpoint is read (once a second), not
    /// once per event.
    undigested: Vec<Arc<Event>>,
    changed: bool,
}

impl Inner {
    fn digest(&mut self) -> Checkpoint {
        for e in self.undigested.drain(..) {
            self.mark.ids.push(e.identity());
        }
        self.mark.clone()
    }

    /// The watermark passes slot `i` together with a later done one: its
    /// identity will never be read.
    fn let_go(&mut self, i: usize) {
        if let Some(slot) = self.slots.get_mut(i) {
            let held = std::mem::replace(&mut slot.held, NOTHING);
            self.held.take(held);
        }
    }

    /// Slot `i` keeps its identity, not its event.
    fn keep_identity(&mut self, i: usize) {
        if let Some(slot) = self.slots.get(i) {
            self.held.keep_identity(slot.held);
        }
    }
}

/// The watermark of fully handled events.
#[derive(Default)]
pub struct Progress {
    inner: Mutex<Inner>,
}

impl Progress {
    pub fn new(start: Option<Checkpoint>) -> Self {
        Progress {
            inner: Mutex::new(Inner {
                mark: start.unwrap_or_default(),
                ..Inner::default()
            }),
        }
    }

    /// Registers an event read from the stream, in read order.
    pub fn begin(&self, event: &Arc<Event>) -> u64 {
        let mut inner = lock(&self.inner);
        let seq = inner.next;
        inner.next += 1;
        let held = inner.held.keep(Kept::Event(event.clone()));
        inner.slots.push_back(Slot {
            time_nano: event.time_nano,
            held,
            done: false,
        });
        seq
    }

    /// Marks an event fully handled and moves the watermark.
    pub fn done(&self, seq: u64) {
        let mut inner = lock(&self.inner);
        let Some(i) = seq.checked_sub(inner.front) else {
            return;
        };
        let i = i as usize;
        let held = inner.slots.len() > HELD_WHOLE;
        let slots = &inner.slots;
        let Some(t) = slots.get(i).map(|s| s.time_nano) else {
            return;
        };
        let next = slots.get(i + 1);
        let needed = i == 0 || !next.is_some_and(|s| s.done && s.time_nano > t);
        // Events of one nanosecond can pile up only by keeping identities.
        let tied = |s: Option<&Slot>| s.is_some_and(|s| s.time_nano == t);
        let tie = tied(next) || i.checked_sub(1).is_some_and(|p| tied(slots.get(p)));
        if let Some(p) = i.checked_sub(1)
            && let Some(prev) = slots.get(p)
            && prev.done
        {
            if prev.time_nano < t {
                inner.let_go(p);
            } else if held && prev.time_nano == t {
                inner.keep_identity(p);
            }
        }
        if let Some(slot) = inner.slots.get_mut(i) {
            slot.done = true;
            if !needed {
                inner.let_go(i);
            } else if held && tie && i > 0 {
                inner.keep_identity(i);
            }
        }
        while inner.slots.front().is_some_and(|s| s.done) {
            let Some(slot) = inner.slots.pop_front() else {
                break;
            };
            inner.front += 1;
            let kept = inner.held.take(slot.held);
            let t = slot.time_nano;
            if t > inner.mark.time_nano {
                inner.mark.time_nano = t;
                inner.mark.ids.clear();
                inner.undigested.clear();
            }
            if t == inner.mark.time_nano {
                match kept {
                    Some(Kept::Event(event)) => inner.undigested.push(event),
                    Some(Kept::Id(id)) => inner.mark.ids.push(id),
                    None => {}
                }
            }
            inner.changed = true;
        }
        // A burst behind a slow event grew the slots far past what is in
        // flight once it is done: give that memory back (a VecDeque never
        // shrinks by itself).
        let slots = &mut inner.slots;
        if slots.capacity() > SHRINK_ABOVE && slots.len() < slots.capacity() / 8 {
            slots.shrink_to(slots.len().max(SHRINK_ABOVE / 2) * 2);
        }
    }

    /// The watermark, if it moved since the last call.
    pub fn take_changed(&self) -> Option<Checkpoint> {
        let mut inner = lock(&self.inner);
        if !inner.changed {
            return None;
        }
        inner.changed = false;
        Some(inner.digest())
    }

    pub fn mark(&self) -> Checkpoint {
        lock(&self.inner).digest()
    }
}

/// `dir/checkpoint.json`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint.json")
}

/// Reads the checkpoint; a missing file is no checkpoint, a bad one or one
/// of another format is logged and ignored (the resync that follows
/// repairs what it would have resumed).
pub fn load(dir: &Path) -> Option<Checkpoint> {
    let path = checkpoint_path(dir);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "Checkpoint unreadable; starting without it.");
            return None;
        }
    };
    // The version first, so an older format is told apart from a broken file.
    #[derive(Deserialize)]
    struct Version {
        #[serde(default)]
        version: u32,
    }
    match serde_json::from_slice::<Version>(&bytes) {
        Ok(v) if v.version != CHECKPOINT_VERSION => {
            warn!(
                path = %path.display(),
                found = v.version,
                expected = CHECKPOINT_VERSION,
                "Checkpoint written by another version of dockwarden (format {}); starting without it.",
                v.version
            );
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            warn!(path = %path.display(), error = %e, "Checkpoint unreadable; starting without it.");
            return None;
        }
    }
    match serde_json::from_slice::<Checkpoint>(&bytes) {
        Ok(cp) if cp.time_nano > 0 => Some(cp),
        Ok(_) => None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "Checkpoint unreadable; starting without it.");
            None
        }
    }
}

/// Why the checkpoint was not written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes the checkpoint atomically: temp file, fsync, rename.
pub fn store(dir: &Path, cp: &Checkpoint) -> Result<(), StoreError> {
    let bytes = encode("checkpoint", cp)?;
    fs::create_dir_all(dir)?;
    let path = checkpoint_path(dir);
    let tmp = dir.join(".checkpoint.json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    Ok(())
}

/// [`store`], counting an encoding failure.
fn store_counted(dir: &Path, cp: &Checkpoint, metrics: &Metrics) -> Result<(), StoreError> {
    let result = store(dir, cp);
    if let Err(StoreError::Encode(e)) = &result {
        metrics.encode_error(e.what);
    }
    result
}

/// Writes the watermark at most once a second until shutdown, then once
/// more, after the handlers have finished (`final_write`).
pub async fn checkpoint_task(
    dir: PathBuf,
    progress: Arc<Progress>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Some(cp) = progress.take_changed() {
            match store_counted(&dir, &cp, &metrics) {
                Ok(()) => {
                    if failing {
                        info!(dir = %dir.display(), "Checkpoint writable again.");
                    }
                    failing = false;
                    debug!(time_nano = cp.time_nano, "Checkpoint written.");
                }
                Err(e) => {
                    if !failing {
                        error!(dir = %dir.display(), error = %e, "Cannot write the checkpoint; a restart will resync instead of resuming.");
                    }
                    failing = true;
                }
            }
        }
    }
}

/// The last write, at shutdown.
pub fn final_write(dir: &Path, progress: &Progress, metrics: &Metrics) {
    let cp = progress.mark();
    if cp.time_nano == 0 {
        return;
    }
    match store_counted(dir, &cp, metrics) {
        Ok(()) => info!(time_nano = cp.time_nano, "Checkpoint written at shutdown."),
        Err(e) => {
            error!(dir = %dir.display(), error = %e, "Cannot write the checkpoint at shutdown.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, id: &str) -> Arc<Event> {
        let line = format!(
            r#"{{"Type":"container","Action":"start","Actor":{{"ID":"{id}"}},"timeNano":{t}}}"#
        );
        Arc::new(Event::decode(line.as_bytes()).expect("decodes"))
    }

    fn connect(t: i64, container: &str) -> Arc<Event> {
        let line = format!(
            r#"{{"Type":"network","Action":"connect","Actor":{{"ID":"net1","Attributes":{{"container":"{container}","name":"backend","type":"bridge"}}}},"timeNano":{t}}}"#
        );
        Arc::new(Event::decode(line.as_bytes()).expect("decodes"))
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dw-cp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_slot_takes_16_bytes() {
        // A burst behind a slow event holds a slot per event read since.
        assert!(
            std::mem::size_of::<Slot>() <= 16,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn watermark_waits_for_the_oldest_unfinished_event() {
        let p = Progress::new(None);
        let a = p.begin(&ev(10, "a"));
        let b = p.begin(&ev(20, "b"));
        let c = p.begin(&ev(20, "c"));
        p.done(c);
        assert_eq!(p.mark().time_nano, 0, "a and b still running");
        p.done(a);
        assert_eq!(p.mark().time_nano, 10);
        p.done(b);
        let m = p.mark();
        assert_eq!(m.time_nano, 20);
        assert_eq!(m.ids, vec![ev(20, "b").identity(), ev(20, "c").identity()]);
        assert!(m.covers(&ev(20, "c")) && m.covers(&ev(5, "z")));
        assert!(!m.covers(&ev(20, "d")) && !m.covers(&ev(21, "a")));
    }

    #[test]
    fn events_done_behind_a_slow_one_are_let_go_and_still_checkpointed() {
        let p = Progress::new(None);
        let slow = p.begin(&ev(1, "slow"));
        // Many events read and handled while the oldest still runs; the
        // last three share one nanosecond.
        let n = HELD_WHOLE as i64 * 3;
        let mut last = Vec::new();
        for t in 2..n {
            let e = ev(t, &format!("e{t}"));
            let seq = p.begin(&e);
            p.done(seq);
            last.push(e);
        }
        let tied: Vec<_> = ["x", "y", "z"].iter().map(|id| ev(n, id)).collect();
        for e in &tied {
            let seq = p.begin(e);
            p.done(seq);
        }
        assert_eq!(p.mark().time_nano, 0, "the oldest still runs");
        let held = last.iter().filter(|e| Arc::strong_count(e) > 1).count();
        assert_eq!(
            held, 0,
            "{held} events done behind the slow one, each followed by a later done one, are still held whole"
        );
        assert!(tied.iter().all(|e| Arc::strong_count(e) == 1));
        p.done(slow);
        let m = p.mark();
        assert_eq!(m.time_nano, n);
        let ids: Vec<_> = tied.iter().map(|e| e.identity()).collect();
        assert_eq!(m.ids, ids, "every event of the last nanosecond, in order");
        assert!(tied.iter().all(|e| m.covers(e)));
        assert!(!m.covers(&ev(n, "w")));
    }

    #[test]
    fn the_slots_of_a_burst_are_given_back_once_it_has_passed() {
        let p = Progress::new(None);
        let slow = p.begin(&ev(1, "slow"));
        let n = SHRINK_ABOVE as i64 * 8;
        for t in 2..n {
            let seq = p.begin(&ev(t, "e"));
            p.done(seq);
        }
        assert!(lock(&p.inner).slots.capacity() >= n as usize - 1);
        // Behind the slow event, only it and the newest done one (the
        // watermark may stop there) hold their event.
        let holding = |p: &Progress| {
            let inner = lock(&p.inner);
            inner.held.kept.iter().filter(|k| k.is_some()).count()
        };
        assert_eq!(holding(&p), 2);
        p.done(slow);
        assert_eq!(p.mark().time_nano, n - 1);
        assert_eq!(holding(&p), 0);
        assert!(lock(&p.inner).held.kept.is_empty());
        let kept = lock(&p.inner).slots.capacity();
        assert!(
            kept <= SHRINK_ABOVE,
            "{kept} slots of capacity kept after a burst of {n} behind a slow event"
        );
        // And it still works after.
        let seq = p.begin(&ev(n, "after"));
        p.done(seq);
        assert_eq!(p.mark().time_nano, n);
    }

    #[test]
    fn what_a_burst_in_flight_held_is_given_back_once_it_is_done() {
        let p = Progress::new(None);
        let n = SHRINK_ABOVE as i64 * 2;
        let seqs: Vec<u64> = (1..=n).map(|t| p.begin(&ev(t, "e"))).collect();
        assert_eq!(lock(&p.inner).held.kept.len(), n as usize);
        for seq in seqs {
            p.done(seq);
        }
        assert_eq!(p.mark().time_nano, n);
        assert_eq!(lock(&p.inner).held.kept.capacity(), 0);
        // A quiet stream keeps the little it needs.
        let seq = p.begin(&ev(n + 1, "after"));
        p.done(seq);
        assert_eq!(p.mark().time_nano, n + 1);
        assert!(lock(&p.inner).held.kept.capacity() > 0);
    }

    #[test]
    fn the_watermark_stops_at_a_let_go_run_with_the_identity_it_needs() {
        let p = Progress::new(None);
        let slow = p.begin(&ev(1, "slow"));
        for t in 2..2000 {
            let seq = p.begin(&ev(t, &format!("e{t}")));
            p.done(seq);
        }
        let before = ev(2000, "before");
        let seq = p.begin(&before);
        p.done(seq);
        let running = p.begin(&ev(2001, "running"));
        p.done(slow);
        let m = p.mark();
        assert_eq!(m.time_nano, 2000, "stops before the one still running");
        assert_eq!(m.ids, vec![before.identity()]);
        p.done(running);
        assert_eq!(p.mark().time_nano, 2001);
    }

    #[test]
    fn two_connects_in_one_nanosecond_are_told_apart_across_a_restart() {
        // Handled: the first connect only; then the process stops.
        let p = Progress::new(None);
        let first = p.begin(&connect(7, "c-aaa"));
        p.done(first);
        let dir = temp_dir("connects");
        store(&dir, &p.mark()).expect("store");
        // The next process resumes: the replayed first connect is skipped,
        // the second, differing only in `container`, is not.
        let resumed = load(&dir).expect("a checkpoint");
        assert!(resumed.covers(&connect(7, "c-aaa")));
        assert!(
            !resumed.covers(&connect(7, "c-bbb")),
            "the second connect would be lost"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn checkpoint_round_trips_atomically() {
        let dir = temp_dir("round-trip");
        let cp = Checkpoint {
            time_nano: 42,
            ids: vec![ev(42, "x").identity()],
            ..Checkpoint::default()
        };
        store(&dir, &cp).expect("store");
        let text = fs::read_to_string(checkpoint_path(&dir)).expect("written");
        assert!(text.contains(r#""version":2"#), "{text}");
        assert_eq!(load(&dir), Some(cp));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_of_the_old_format_is_not_resumed_from() {
        let dir = temp_dir("old-format");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(
            checkpoint_path(&dir),
            r#"{"time_nano":42,"ids":["container|start|x"]}"#,
        )
        .expect("write");
        assert_eq!(load(&dir), None);
        fs::write(checkpoint_path(&dir), "{not json").expect("write");
        assert_eq!(load(&dir), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
