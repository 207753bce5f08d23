//! What the source has read already, and where to resume: `since` is
//! inclusive and the engine replays what is left of its 256-event ring, so
//! every reconnect resends events that were handled.
//!
//! It owns the window of recent event identities (`Event::fingerprint`, the
//! one identity shared with the checkpoint) and the newest `timeNano` read.
//! It must not count, log or enqueue anything: the [`Sink`](super::Sink)
//! does that with its answers.

use std::collections::{HashSet, VecDeque};

use crate::event::Event;

/// Events remembered for deduplicating a replay: more than the engine's
/// 256-event ring, so everything it can replay is recognised.
const DEDUP_WINDOW: usize = 4096;

/// How far before the newest event read a reconnect asks the engine to
/// replay from. The engine stamps an event before it queues it, so two
/// events logged at once (two `docker exec`s) can reach the stream in the
/// other order: a stream cut between them, resumed from the newer one's
/// time, would never see the older one. What the margin replays again was
/// read already and is dropped as a replay.
const RESUME_MARGIN_NANOS: i64 = 1_000_000_000;

/// Remembers recent events so the inclusive `since` replay is not handled
/// twice, and where to resume from.
#[derive(Debug, Default)]
pub struct Dedup {
    order: VecDeque<u64>,
    /// Fingerprints are seeded hashes already: foldhash, not SipHash, to
    /// place them.
    seen: HashSet<u64, foldhash::fast::RandomState>,
    /// The newest `timeNano` read; the next connection resumes from it.
    last_time_nano: i64,
    /// Never resume from before this: the first stream's start, or the
    /// checkpoint's time (what was before it is not this process's to read).
    floor_nano: i64,
    /// Where the next connection resumes from instead, once: set when a
    /// probe after a clock step back found events stamped before `since`.
    rewound: Option<i64>,
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

    /// The `since` query value to resume from, if anything was read:
    /// [`RESUME_MARGIN_NANOS`] before the newest event, not before the start.
    pub fn since(&self) -> Option<String> {
        self.since_nanos().map(format_since)
    }

    fn since_nanos(&self) -> Option<i64> {
        (self.last_time_nano > 0)
            .then(|| (self.last_time_nano - RESUME_MARGIN_NANOS).max(self.floor_nano))
    }

    /// Where a probe at `now` (the host's clock), after a `silence` of the
    /// stream, asks what the engine logged from: where a reconnect would
    /// resume. Unless the clock was stepped back past that (NTP, a resumed
    /// VM): the engine refuses a `since` after `until` (400), and every
    /// probe would call a healthy stream dead until the clock caught up.
    /// What the engine logged during the silence is stamped by the clock as
    /// it is now, so the probe asks from the silence's start (with the
    /// resume margin), not before the floor unless the floor is ahead of the
    /// clock too. The second value says the next connection may resume
    /// from there if the probe finds events missed: the clock is behind the
    /// events read, not behind the floor.
    pub fn probe_since(&self, now: i64, silence: std::time::Duration) -> Option<(i64, bool)> {
        let since = self.since_nanos()?;
        if since <= now {
            return Some((since, false));
        }
        let silence = i64::try_from(silence.as_nanos()).unwrap_or(i64::MAX);
        let start = now
            .saturating_sub(silence)
            .saturating_sub(RESUME_MARGIN_NANOS);
        if self.floor_nano > now {
            // Behind the start (or the checkpoint) too: what the window
            // shows may be from before it, never read and not this
            // process's to handle. Asked, but never resumed from: the
            // reconnect's missing anchor then asks for a resync.
            return Some((start, false));
        }
        Some((start.max(self.floor_nano), true))
    }

    /// The next connection resumes from `time_nano`, once: a probe found
    /// events stamped before where it would resume (the clock was stepped
    /// back). What it replays that was read already is dropped as ever.
    pub fn rewind_to(&mut self, time_nano: i64) {
        self.rewound = Some(time_nano);
    }

    /// Where the next connection resumes from (`since`), and whether that
    /// is a rewind, which no event read marks the start of.
    pub fn resume_point(&self) -> (Option<String>, bool) {
        match self.rewound {
            Some(t) => (Some(format_since(t)), true),
            None => (self.since(), false),
        }
    }

    /// A stream opened from the rewind: later connections resume as ever.
    pub fn rewind_done(&mut self) {
        self.rewound = None;
    }

    /// Resumes from `time_nano` if nothing was read yet: a checkpoint's
    /// time, or the moment a stream began, so the next connection does not
    /// miss what happens between this one ending and the next starting.
    pub fn start_at(&mut self, time_nano: i64) {
        if self.last_time_nano == 0 {
            self.last_time_nano = time_nano;
            self.floor_nano = time_nano;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_after_the_clock_stepped_back_asks_from_the_silence_s_start() {
        const S: i64 = 1_000_000_000;
        let silence = std::time::Duration::from_secs(30);
        let mut d = Dedup::default();
        assert_eq!(d.probe_since(1_000 * S, silence), None);
        d.start_at(900 * S);
        assert!(d.admit(&ev(990 * S, "start", "a")));
        // As a reconnect would resume: the margin before the newest event.
        assert_eq!(d.probe_since(1_000 * S, silence), Some((989 * S, false)));
        // The clock now reads 10 s before the newest event: never a `since`
        // after the `until` (now) the probe sends; the silence, and the
        // margin, before now.
        assert_eq!(d.probe_since(980 * S, silence), Some((949 * S, true)));
        // Not before the floor (the start), unless the floor is ahead too.
        assert_eq!(d.probe_since(910 * S, silence), Some((900 * S, true)));
        assert_eq!(d.probe_since(890 * S, silence), Some((859 * S, false)));
        assert_eq!(d.since(), Some(format_since(989 * S)));
        // A probe that found what the stream missed rewinds the next
        // connection, once.
        d.rewind_to(949 * S);
        assert_eq!(d.resume_point(), (Some(format_since(949 * S)), true));
        // Until a stream opened from it.
        assert_eq!(d.resume_point(), (Some(format_since(949 * S)), true));
        d.rewind_done();
        assert_eq!(d.resume_point(), (Some(format_since(989 * S)), false));
    }

    fn ev(t: i64, action: &str, id: &str) -> Event {
        let line = format!(
            r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"{id}","Attributes":{{}}}},"timeNano":{t}}}"#
        );
        Event::decode(line.as_bytes()).expect("test event decodes")
    }

    #[test]
    fn dedup_drops_inclusive_replay_and_resumes_from_last() {
        let mut d = Dedup::default();
        assert_eq!(d.since(), None);
        assert!(d.admit(&ev(1_000_000_001, "start", "a")));
        assert!(d.admit(&ev(2_000_000_002, "die", "a")));
        // Same nanosecond, other container: a different event.
        assert!(d.admit(&ev(2_000_000_002, "die", "b")));
        assert_eq!(d.since().as_deref(), Some("1.000000002"), "a second before");
        // The replay after reconnecting resends the last events.
        assert!(!d.admit(&ev(2_000_000_002, "die", "a")));
        assert!(!d.admit(&ev(2_000_000_002, "die", "b")));
        assert!(d.admit(&ev(3_000_000_000, "destroy", "a")));
    }

    #[test]
    fn a_reconnect_replays_a_second_back_for_events_stamped_out_of_order() {
        let mut d = Dedup::default();
        d.start_at(10_000_000_000);
        assert_eq!(
            d.since().as_deref(),
            Some("10.000000000"),
            "not before the start"
        );
        assert!(d.admit(&ev(10_500_000_000, "exec_create", "a")));
        assert_eq!(
            d.since().as_deref(),
            Some("10.000000000"),
            "the start is the floor"
        );
        // Stamped at 12.3, then overtaken by one stamped at 12.4; the
        // stream is cut between them.
        assert!(d.admit(&ev(12_400_000_000, "exec_start", "b")));
        assert_eq!(d.since().as_deref(), Some("11.400000000"));
        // The replay from there: what was read is dropped, the older one
        // that was never read is new.
        assert!(!d.admit(&ev(10_500_000_000, "exec_create", "a")));
        assert!(d.admit(&ev(12_300_000_000, "exec_start", "a")));
        assert!(!d.admit(&ev(12_400_000_000, "exec_start", "b")));
        assert_eq!(
            d.since().as_deref(),
            Some("11.400000000"),
            "the newest still rules"
        );
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
    fn start_at_sets_the_resume_point_only_before_anything_was_read() {
        let mut d = Dedup::default();
        d.start_at(5_000_000_000);
        assert_eq!(d.since().as_deref(), Some("5.000000000"));
        d.start_at(9_000_000_000);
        assert_eq!(d.since().as_deref(), Some("5.000000000"));
    }

    #[test]
    fn since_has_nine_decimals() {
        assert_eq!(
            format_since(1_700_000_000_000_000_042),
            "1700000000.000000042"
        );
    }
}
