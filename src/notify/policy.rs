//! When a target's sender may try again: exponential backoff with full
//! jitter, the per-target circuit breaker, and the sliding-window rate
//! limit. Pure state machines over `Instant`s given by the caller, so they
//! are tested without sleeping.
//!
//! It owns the arithmetic of waiting; it must not sleep, send or count.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// A small random source for jitter (splitmix64, seeded per process from
/// the standard library's random hasher keys): jitter needs spread, not
/// cryptographic quality, and this saves a dependency.
pub struct Jitter(u64);

impl Jitter {
    pub fn new() -> Jitter {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::clock::unix_nanos() as u64);
        Jitter(h.finish())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max` (to the microsecond).
    pub fn below(&mut self, max: Duration) -> Duration {
        let micros = max.as_micros().min(u128::from(u64::MAX)) as u64;
        Duration::from_micros(self.next() % micros.saturating_add(1))
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Jitter::new()
    }
}

/// Exponential backoff: the ceiling doubles with each consecutive failure
/// from `initial` up to `max`; the wait is uniform below it ("full
/// jitter"), so many senders retrying at once spread out.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ceiling after `failures` consecutive failures (at least 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    pub fn delay(&self, failures: u32, jitter: &mut Jitter) -> Duration {
        jitter.below(self.ceiling(failures))
    }
}

/// What a failure did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// Still closed: retry after a backoff.
    Closed,
    /// It just opened: no attempts until the cool-down ends.
    Opened,
    /// The probe after a cool-down failed: open for another cool-down.
    StillOpen,
}

/// Per-target circuit breaker: `threshold` consecutive failed attempts
/// open it; after `cooldown` one probe goes; a success closes it.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            failures: 0,
            open_until: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// Consecutive failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next attempt (the probe) may go, while open.
    pub fn probe_at(&self) -> Option<Instant> {
        self.open_until
    }

    pub fn failure(&mut self, now: Instant) -> Trip {
        self.failures = self.failures.saturating_add(1);
        if self.open_until.is_some() {
            self.open_until = Some(now + self.cooldown);
            Trip::StillOpen
        } else if self.failures >= self.threshold {
            self.open_until = Some(now + self.cooldown);
            Trip::Opened
        } else {
            Trip::Closed
        }
    }

    /// The target answered; true if that closed an open breaker.
    pub fn success(&mut self) -> bool {
        self.failures = 0;
        self.open_until.take().is_some()
    }
}

/// At most `limit` requests in any `window`: a sliding log of the last
/// `limit` request times.
#[derive(Debug)]
pub struct RateWindow {
    limit: usize,
    window: Duration,
    sent: VecDeque<Instant>,
}

impl RateWindow {
    pub fn new(limit: u32, window: Duration) -> RateWindow {
        RateWindow {
            limit: (limit as usize).max(1),
            window,
            sent: VecDeque::new(),
        }
    }

    /// None if a request may go at `now`; else the first instant one may.
    pub fn next_free(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&t) = self.sent.front() {
            if now.saturating_duration_since(t) >= self.window {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        if self.sent.len() < self.limit {
            None
        } else {
            self.sent.front().map(|&t| t + self.window)
        }
    }

    /// A request went at `now`.
    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
        while self.sent.len() > self.limit {
            self.sent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_jitter_stays_below() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(50), Duration::from_secs(1));
        let mut j = Jitter::new();
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(3, &mut j)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        assert!(
            delays.iter().any(|d| *d < Duration::from_millis(100)),
            "spread"
        );
        assert!(
            delays.iter().any(|d| *d > Duration::from_millis(300)),
            "spread"
        );
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let now = Instant::now();
        let mut br = Breaker::new(3, Duration::from_secs(30));
        assert_eq!(br.failure(now), Trip::Closed);
        assert_eq!(br.failure(now), Trip::Closed);
        assert_eq!(br.failure(now), Trip::Opened);
        assert_eq!(br.probe_at(), Some(now + Duration::from_secs(30)));
        let later = now + Duration::from_secs(31);
        assert_eq!(br.failure(later), Trip::StillOpen, "the probe failed");
        assert_eq!(br.probe_at(), Some(later + Duration::from_secs(30)));
        assert!(br.success(), "a good probe closes it");
        assert!(!br.is_open());
        assert_eq!(br.failures(), 0);
        assert!(!br.success());
    }

    #[test]
    fn window_allows_limit_then_waits_for_the_oldest() {
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let mut r = RateWindow::new(2, w);
        assert_eq!(r.next_free(t0), None);
        r.record(t0);
        r.record(t0 + Duration::from_secs(10));
        assert_eq!(r.next_free(t0 + Duration::from_secs(20)), Some(t0 + w));
        assert_eq!(r.next_free(t0 + w), None, "the oldest left the window");
    }
}
