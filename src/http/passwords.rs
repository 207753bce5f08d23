//! Password checks for basic auth: the bcrypt verdicts kept, and at most
//! one check waiting or running per client address.
//!
//! bcrypt is slow on purpose (tens of ms at cost 10) and runs one at a time
//! ([`super::guard`]). A client sending wrong passwords could otherwise keep
//! it busy, hold up every other client's first check behind its own queue,
//! and push their verdicts out of the cache, so that Prometheus's scrapes
//! wait behind it. So passes and failures are kept apart (a failure never
//! pushes out a pass), and a client address with a check waiting or running
//! gets none more meanwhile: the gate answers 429 at once.
//!
//! It keeps no password or hash: a verdict is kept by a digest of both.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::lock::lock;

/// Verdicts kept of each kind (the toolkit keeps 100 in all).
pub const CACHE_SIZE: usize = 100;

/// A verdict's key: the SHA-256 of user, hash and password.
pub type Key = [u8; 32];

/// The key of `user`'s `password` against `hash`; each part is prefixed
/// with its length, so no two splits of the same bytes share a key.
pub fn cache_key(user: &str, hash: &str, password: &[u8]) -> Key {
    let mut h = Sha256::new();
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The newest [`CACHE_SIZE`] keys of one kind.
#[derive(Default)]
struct Newest {
    keys: HashSet<Key>,
    order: VecDeque<Key>,
}

impl Newest {
    fn insert(&mut self, key: Key) {
        if !self.keys.insert(key) {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > CACHE_SIZE
            && let Some(oldest) = self.order.pop_front()
        {
            self.keys.remove(&oldest);
        }
    }
}

/// bcrypt verdicts by key, passes and failures apart.
#[derive(Default)]
pub struct Verdicts {
    passed: Newest,
    failed: Newest,
}

impl Verdicts {
    /// The verdict kept for `key`, if any.
    pub fn get(&self, key: &Key) -> Option<bool> {
        if self.passed.keys.contains(key) {
            Some(true)
        } else if self.failed.keys.contains(key) {
            Some(false)
        } else {
            None
        }
    }

    pub fn insert(&mut self, key: Key, passed: bool) {
        if passed {
            self.passed.insert(key);
        } else {
            self.failed.insert(key);
        }
    }

    pub fn clear(&mut self) {
        *self = Verdicts::default();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.passed.order.len() + self.failed.order.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Client addresses with a check waiting or running.
#[derive(Default)]
pub struct Checking(Mutex<HashSet<IpAddr>>);

/// A client's turn to have a check, given back when dropped.
pub struct Slot<'a> {
    checking: &'a Checking,
    client: IpAddr,
}

impl Checking {
    /// `client`'s slot, unless it has a check waiting or running already.
    pub fn claim(&self, client: IpAddr) -> Option<Slot<'_>> {
        // Not `then_some`: a slot made and dropped when the client has one
        // would give that one back.
        let claimed = lock(&self.0).insert(client);
        if claimed {
            Some(Slot {
                checking: self,
                client,
            })
        } else {
            None
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        lock(&self.checking.0).remove(&self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        let mut k = [0; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn cache_keys_separate_their_parts() {
        assert_ne!(cache_key("a", "b", b"c"), cache_key("a", "bc", b""));
        assert_ne!(cache_key("u", "h1", b"p"), cache_key("u", "h2", b"p"));
        assert_eq!(cache_key("u", "h", b"p"), cache_key("u", "h", b"p"));
    }

    #[test]
    fn failures_never_push_out_a_pass() {
        let mut v = Verdicts::default();
        v.insert(key(0), true);
        for n in 1..=10 * CACHE_SIZE as u32 {
            v.insert(key(n), false);
        }
        assert_eq!(v.get(&key(0)), Some(true));
        // Failures keep the newest of their own.
        assert_eq!(v.get(&key(10 * CACHE_SIZE as u32)), Some(false));
        assert_eq!(v.get(&key(1)), None);
        assert_eq!(v.len(), 1 + CACHE_SIZE);
        // Passes too: the oldest goes first.
        for n in 1..=CACHE_SIZE as u32 {
            v.insert(key(100_000 + n), true);
        }
        assert_eq!(v.get(&key(0)), None);
        assert_eq!(v.get(&key(100_001)), Some(true));
        v.clear();
        assert!(v.is_empty());
    }

    #[test]
    fn one_check_per_client_at_a_time() {
        let checking = Checking::default();
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 1].into();
        let slot = checking.claim(a).expect("a's first check");
        assert!(checking.claim(a).is_none(), "a's second, meanwhile");
        assert!(checking.claim(b).is_some(), "another client's");
        drop(slot);
        assert!(checking.claim(a).is_some(), "a's next, after the first");
    }
}
