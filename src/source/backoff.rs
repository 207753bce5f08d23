//! How long the source waits before reconnecting: exponential backoff with
//! full jitter, so many sidecars that lost the same daemon do not all knock
//! at once when it comes back.
//!
//! It owns only the arithmetic of the delay. It must not sleep, and it does
//! not know when a connection counts as stable: the session loop in
//! [`super`] decides when to [`Backoff::reset`].

use std::time::Duration;

/// Exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed =
            crate::clock::unix_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            initial,
            max,
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// The next delay: between half and all of `initial * 2^attempt`, capped.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1).min(31);
        // xorshift64: jitter only, no need for a crypto RNG.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = exp / 2;
        let jitter = Duration::from_nanos(self.rng % (half.as_nanos() as u64).max(1));
        half + jitter
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] < Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] < Duration::from_millis(800));
        for d in &delays[5..] {
            assert!(
                *d >= Duration::from_secs(1) && *d < Duration::from_secs(2),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(100));
    }
}
