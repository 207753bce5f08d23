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

mod owed;

pub use owed::{Owed, ResyncRequests, known_reason};

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
    /// A resync asked for and not done when this was written
    /// ([`owed`]): the next start does it before trusting the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_owed: Option<String>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            time_nano: 0,
            ids: Vec::new(),
            resync_owed: None,
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
/// the later time replaces the ids). Such an event gives its entry back
/// (its time is folded into the entry before it), so the entries are only
/// the events in flight and the done one just before each, however long
/// the wait: a burst behind a slow event takes no room. Past this many
/// entries, a done event sharing its nanosecond with a neighbour keeps
/// only its identity: a run of those could grow unbounded.
const HELD_WHOLE: usize = 1024;

/// Entry capacity kept whatever the load (a few hundred kB at most).
const SHRINK_ABOVE: usize = 8192;

/// No entry.
const NIL: u32 = u32::MAX;

/// What an entry holds while its identity may still be needed.
enum Kept {
    Event(Arc<Event>),
    /// Past [`HELD_WHOLE`], a tied done event keeps only its identity.
    Id(Identity),
}

impl Kept {
    fn identity(&self) -> Identity {
        match self {
            Kept::Event(event) => event.identity(),
            Kept::Id(id) => *id,
        }
    }
}

/// An event begun and not yet behind the watermark: in flight, or done
/// and possibly where the watermark stops. Entries are linked in read
/// order; the done events let go between them are folded into the entry
/// before them.
struct Entry {
    time_nano: i64,
    /// `None` once the place is free.
    kept: Option<Kept>,
    /// The time of the first event let go right after it, if any. Each
    /// event let go was followed by a done one of a later time, so the
    /// times of those folded here rise, and the next entry is done and
    /// later still: the watermark passes them all together, and only the
    /// first one's time is ever read (whether this entry is needed).
    gap: Option<i64>,
    prev: u32,
    next: u32,
    /// The low 32 bits of the sequence number of the event that took the
    /// place: a ticket of an event given back matches no later one.
    seq: u32,
    done: bool,
}

struct Inner {
    /// The entries, in places reused through `free`; linked from `head`
    /// (the oldest) to `tail` in read order.
    entries: Vec<Entry>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    next_seq: u64,
    mark: Checkpoint,
    /// Events at `mark.time_nano` not yet digested into `mark.ids`: the
    /// digest is taken when the checkpoint is read (once a second), not
    /// once per event.
    undigested: Vec<Kept>,
    changed: bool,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            entries: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            next_seq: 0,
            mark: Checkpoint::default(),
            undigested: Vec::new(),
            changed: false,
        }
    }
}

impl Inner {
    fn digest(&mut self) -> Checkpoint {
        for kept in self.undigested.drain(..) {
            self.mark.ids.push(kept.identity());
        }
        self.mark.clone()
    }

    /// Places in use.
    fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    fn entry(&self, i: u32) -> Option<&Entry> {
        self.entries.get(i as usize).filter(|e| e.kept.is_some())
    }

    /// The place of a ticket's event, if it is still in flight.
    fn find(&self, ticket: u64) -> Option<u32> {
        let i = ticket as u32;
        let seq = (ticket >> 32) as u32;
        self.entry(i).filter(|e| e.seq == seq && !e.done).map(|_| i)
    }

    /// Takes a place for `entry`; `None` if four billion are in use.
    fn place(&mut self, entry: Entry) -> Option<u32> {
        if let Some(i) = self.free.pop() {
            self.entries[i as usize] = entry;
            return Some(i);
        }
        let i = u32::try_from(self.entries.len())
            .ok()
            .filter(|&i| i != NIL)?;
        self.entries.push(entry);
        Some(i)
    }

    /// Gives back place `i` (already unlinked), and what it kept.
    fn release(&mut self, i: u32) -> Option<Kept> {
        let kept = self.entries.get_mut(i as usize).and_then(|e| e.kept.take());
        if kept.is_some() {
            self.free.push(i);
        }
        if self.live() == 0 {
            // Nothing in flight: start afresh, and give back what a burst
            // grew (what a quiet stream needs is kept, not regrown).
            self.entries.clear();
            self.free.clear();
            if self.entries.capacity() > SHRINK_ABOVE {
                self.entries = Vec::new();
                self.free = Vec::new();
            }
        }
        kept
    }

    /// The watermark passes done entry `i` together with a later done
    /// event: its identity will never be read. It joins the gap of the
    /// entry before it (there is one: the oldest entry is never done).
    fn let_go(&mut self, i: u32) {
        let Some(e) = self.entry(i) else {
            return;
        };
        let (prev, next, time_nano) = (e.prev, e.next, e.time_nano);
        let Some(p) = self.entries.get_mut(prev as usize) else {
            return;
        };
        p.gap.get_or_insert(time_nano);
        p.next = next;
        match self.entries.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
        // Its event is let go here.
        drop(self.release(i));
    }

    /// Entry `i` keeps its identity, not its event.
    fn keep_identity(&mut self, i: u32) {
        if let Some(e) = self.entries.get_mut(i as usize)
            && let Some(kept @ Kept::Event(_)) = &e.kept
        {
            e.kept = Some(Kept::Id(kept.identity()));
        }
    }

    /// Moves the watermark past the oldest entries while they are done.
    fn advance(&mut self) {
        while let Some(h) = self.entry(self.head).filter(|e| e.done) {
            let (head, next, t) = (self.head, h.next, h.time_nano);
            self.head = next;
            match self.entries.get_mut(next as usize) {
                Some(n) => n.prev = NIL,
                None => self.tail = NIL,
            }
            let kept = self.release(head);
            self.pass(t, kept);
            self.changed = true;
        }
    }

    /// The watermark passes an event at `t`, with what it kept.
    fn pass(&mut self, t: i64, kept: Option<Kept>) {
        if t > self.mark.time_nano {
            self.mark.time_nano = t;
            self.mark.ids.clear();
            self.undigested.clear();
        }
        if t == self.mark.time_nano
            && let Some(kept) = kept
        {
            self.undigested.push(kept);
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

    /// Registers an event read from the stream, in read order; the ticket
    /// is for [`done`](Progress::done).
    pub fn begin(&self, event: &Arc<Event>) -> u64 {
        let mut inner = lock(&self.inner);
        let seq = inner.next_seq as u32;
        inner.next_seq += 1;
        let tail = inner.tail;
        let entry = Entry {
            time_nano: event.time_nano,
            kept: Some(Kept::Event(event.clone())),
            gap: None,
            prev: tail,
            next: NIL,
            seq,
            done: false,
        };
        // Four billion events in flight cannot be held in memory: the
        // place never runs out before the memory does.
        let Some(i) = inner.place(entry) else {
            return u64::MAX;
        };
        match inner.entries.get_mut(tail as usize) {
            Some(t) => t.next = i,
            None => inner.head = i,
        }
        inner.tail = i;
        (u64::from(seq) << 32) | u64::from(i)
    }

    /// Marks an event fully handled and moves the watermark.
    pub fn done(&self, ticket: u64) {
        let mut inner = lock(&self.inner);
        let Some(i) = inner.find(ticket) else {
            return;
        };
        let held = inner.live() > HELD_WHOLE;
        let Some(e) = inner.entry(i) else {
            return;
        };
        let (t, prev, gap, next) = (e.time_nano, e.prev, e.gap, e.next);
        let oldest = i == inner.head;
        // The event read right after it: the first of its gap, else the
        // next entry's.
        let after = match gap {
            Some(first) => Some((true, first)),
            None => inner.entry(next).map(|n| (n.done, n.time_nano)),
        };
        let needed = oldest || !after.is_some_and(|(done, n)| done && n > t);
        // The event read right before it, if it is an entry's (not a gap's).
        let before = inner
            .entry(prev)
            .filter(|p| p.gap.is_none())
            .map(|p| (p.done, p.time_nano));
        // Events of one nanosecond can pile up only by keeping identities.
        let tie = after.is_some_and(|(_, n)| n == t) || before.is_some_and(|(_, p)| p == t);
        if let Some((true, p)) = before {
            if p < t {
                inner.let_go(prev);
            } else if held && p == t {
                inner.keep_identity(prev);
            }
        }
        if let Some(e) = inner.entries.get_mut(i as usize) {
            e.done = true;
        }
        if !needed {
            inner.let_go(i);
        } else if held && tie && !oldest {
            inner.keep_identity(i);
        }
        inner.advance();
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

/// How far ahead of the clock a checkpoint may be and still be resumed
/// from (a clock slewed by NTP in the meantime).
const FUTURE_SLACK_NANOS: i64 = 5_000_000_000;

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
        // Later than now: the clock was stepped back, or the state dir came
        // from a host whose clock is ahead. Resuming would take every event
        // until then for one handled already, and ask the engine for a
        // `since` after its `until`.
        Ok(cp) if cp.time_nano > crate::clock::unix_nanos().saturating_add(FUTURE_SLACK_NANOS) => {
            warn!(
                path = %path.display(),
                time_nano = cp.time_nano,
                "Checkpoint later than this host's clock (stepped back, or state from another host); starting without it."
            );
            None
        }
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
/// A resync owed is written as soon as it is asked for, and its end too.
/// `on_disk`: the resync the checkpoint resumed from owes, if any.
pub async fn checkpoint_task(
    dir: PathBuf,
    progress: Arc<Progress>,
    (owed, on_disk): (Arc<Owed>, Option<&'static str>),
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failing = false;
    let mut written_owed = on_disk;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let owed_now = owed.reason();
        let changed = progress.take_changed().or_else(|| {
            (owed_now != written_owed)
                .then(|| progress.mark())
                .filter(|cp| cp.time_nano > 0)
        });
        if let Some(mut cp) = changed {
            cp.resync_owed = owed_now.map(str::to_owned);
            match store_counted(&dir, &cp, &metrics) {
                Ok(()) => {
                    written_owed = owed_now;
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
pub fn final_write(dir: &Path, progress: &Progress, owed: &Owed, metrics: &Metrics) {
    let mut cp = progress.mark();
    if cp.time_nano == 0 {
        return;
    }
    cp.resync_owed = owed.reason().map(str::to_owned);
    match store_counted(dir, &cp, metrics) {
        Ok(()) => info!(
            time_nano = cp.time_nano,
            resync_owed = cp.resync_owed.as_deref().unwrap_or(""),
            "Checkpoint written at shutdown."
        ),
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
        // A run of one nanosecond cannot be let go: past HELD_WHOLE
        // entries, its events keep only their identities.
        let tied: Vec<_> = (0..HELD_WHOLE * 2)
            .map(|i| ev(n, &format!("t{i}")))
            .collect();
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
        let whole = tied.iter().filter(|e| Arc::strong_count(e) > 1).count();
        assert!(whole <= HELD_WHOLE + 1, "{whole} tied events held whole");
        p.done(slow);
        let m = p.mark();
        assert_eq!(m.time_nano, n);
        let ids: Vec<_> = tied.iter().map(|e| e.identity()).collect();
        assert_eq!(m.ids, ids, "every event of the last nanosecond, in order");
        assert!(tied.iter().all(|e| m.covers(e)));
        assert!(!m.covers(&ev(n, "w")));
    }

    /// Places holding an event or identity.
    fn holding(p: &Progress) -> usize {
        let inner = lock(&p.inner);
        inner.entries.iter().filter(|e| e.kept.is_some()).count()
    }

    #[test]
    fn a_burst_behind_a_slow_event_takes_no_room() {
        let p = Progress::new(None);
        let slow = p.begin(&ev(1, "slow"));
        let n = SHRINK_ABOVE as i64 * 8;
        for t in 2..n {
            let seq = p.begin(&ev(t, "e"));
            p.done(seq);
            // Behind the slow event, only it and the newest done one (the
            // watermark may stop there) are kept, whatever the burst.
            assert_eq!(holding(&p), 2, "after the event at {t}");
        }
        assert!(lock(&p.inner).entries.capacity() <= 4);
        p.done(slow);
        assert_eq!(p.mark().time_nano, n - 1);
        assert_eq!(holding(&p), 0);
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
        assert_eq!(holding(&p), n as usize);
        for seq in seqs {
            p.done(seq);
        }
        assert_eq!(p.mark().time_nano, n);
        assert_eq!(lock(&p.inner).entries.capacity(), 0);
        // A quiet stream keeps the little it needs.
        let seq = p.begin(&ev(n + 1, "after"));
        p.done(seq);
        assert_eq!(p.mark().time_nano, n + 1);
        assert!(lock(&p.inner).entries.capacity() > 0);
    }

    #[test]
    fn a_ticket_counts_once() {
        let p = Progress::new(None);
        let a = p.begin(&ev(1, "a"));
        let b = p.begin(&ev(2, "b"));
        p.done(a);
        // a's place is given back and taken by c: a's ticket is not c's.
        let c = p.begin(&ev(3, "c"));
        p.done(a);
        p.done(b);
        assert_eq!(p.mark().time_nano, 2, "c still runs");
        p.done(c);
        assert_eq!(p.mark().time_nano, 3);
    }

    /// The watermark as its definition says, one event at a time: the
    /// newest time of the longest run of done events from the start, and
    /// every event of that run at that nanosecond.
    fn watermark_by_definition(events: &[(Arc<Event>, bool)]) -> (i64, Vec<Identity>) {
        let run = events.iter().take_while(|(_, done)| *done);
        let t = run.clone().map(|(e, _)| e.time_nano).max().unwrap_or(0);
        let mut ids: Vec<_> = run
            .filter(|(e, _)| e.time_nano == t)
            .map(|(e, _)| e.identity())
            .collect();
        ids.sort_by_key(|i| format!("{i:?}"));
        (t, ids)
    }

    #[test]
    fn the_watermark_is_what_its_definition_says_for_any_order_of_completion() {
        // xorshift: a fixed, reproducible shuffle without a dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for round in 0..60 {
            let p = Progress::new(None);
            // Past HELD_WHOLE in some rounds, so identities are kept too.
            let n = if round % 4 == 0 { 3000 } else { 200 };
            let mut events: Vec<(Arc<Event>, bool)> = Vec::new();
            let mut open: Vec<(usize, u64)> = Vec::new();
            let mut t = 1;
            for step in 0..n * 2 {
                if events.len() < n && (open.is_empty() || next(3) > 0) {
                    // Times mostly rise, sometimes tie or go back.
                    t += [0, 1, 1, 2, -1][next(5)];
                    let e = ev(t.max(1), &format!("r{round}e{step}"));
                    open.push((events.len(), p.begin(&e)));
                    events.push((e, false));
                } else if !open.is_empty() {
                    let (at, ticket) = open.swap_remove(next(open.len()));
                    p.done(ticket);
                    events[at].1 = true;
                }
                let (want_t, want_ids) = watermark_by_definition(&events);
                let mut m = p.mark();
                m.ids.sort_by_key(|i| format!("{i:?}"));
                assert_eq!(
                    (m.time_nano, m.ids),
                    (want_t, want_ids),
                    "round {round}, step {step}"
                );
            }
        }
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
        assert!(!text.contains("resync_owed"), "{text}");
        assert_eq!(load(&dir), Some(cp.clone()));
        // A resync owed survives the restart.
        let owing = Checkpoint {
            resync_owed: Some("queue_overflow".into()),
            ..cp
        };
        store(&dir, &owing).expect("store");
        assert_eq!(load(&dir), Some(owing));
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
        // From the future: the clock went back, or the state moved hosts.
        let ahead = crate::clock::unix_nanos() + 3_600_000_000_000;
        fs::write(
            checkpoint_path(&dir),
            format!(r#"{{"version":2,"time_nano":{ahead},"ids":[]}}"#),
        )
        .expect("write");
        assert_eq!(load(&dir), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
