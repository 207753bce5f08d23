//! Password checks for basic auth: the bcrypt verdicts kept, and bcrypt's
//! one turn shared fairly between clients.
//!
//! bcrypt is slow on purpose (tens of ms at cost 10) and runs one check at
//! a time. In a plain queue (the toolkit's), a client sending wrong
//! passwords many at once puts all of them ahead of Prometheus's first
//! login, and pushes its verdict out of the cache. So passes and failures
//! are kept apart (a failure never pushes out a pass), and the turn goes
//! round the clients that wait ([`Turns`]): each client's oldest request in
//! turn, so one with many checks queued makes another wait for at most one
//! of them beyond the check running. A client is its address (an IPv6 one by its /64, which one
//! host usually has whole). A client, or everyone, past a bound of waiting
//! requests is refused (429) rather than queued.
//!
//! It keeps no password or hash: a verdict is kept by a digest of both.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use sha2::{Digest, Sha256};

use crate::lock::lock;

/// Verdicts kept of each kind (the toolkit keeps 100 in all).
pub const CACHE_SIZE: usize = 100;

/// What a password check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Pass,
    Fail,
    /// The client, or everyone, has too many checks waiting.
    Busy,
}

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

/// Requests of one client waiting for bcrypt; more are refused.
pub const MAX_WAITING_PER_CLIENT: usize = 64;

/// Requests of all clients waiting for bcrypt; more are refused.
pub const MAX_WAITING: usize = 1024;

/// Who a request counts as: its address, an IPv6 one by its /64 (an
/// IPv4-mapped one as the IPv4 address it is).
pub fn client_of(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// bcrypt's one turn, handed round the clients that wait.
#[derive(Default)]
pub struct Turns {
    state: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// A turn is out.
    busy: bool,
    /// The clients that wait, in the order their turn comes, each with
    /// its requests oldest first.
    clients: VecDeque<(IpAddr, VecDeque<oneshot::Sender<Turn>>)>,
    waiting: usize,
}

/// The turn: bcrypt is this request's until it is dropped (moved into the
/// blocking task, so a request given up meanwhile does not end it early).
pub struct Turn {
    turns: Option<Arc<Turns>>,
}

impl Turns {
    /// `client`'s turn, once the turn comes round to it; None if it, or
    /// everyone, has too many requests waiting already.
    pub async fn take(self: &Arc<Self>, client: IpAddr) -> Option<Turn> {
        let waiting = {
            let mut q = lock(&self.state);
            if !q.busy {
                q.busy = true;
                return Some(Turn {
                    turns: Some(self.clone()),
                });
            }
            if q.waiting >= MAX_WAITING {
                return None;
            }
            let at = match q.clients.iter().position(|(c, _)| *c == client) {
                Some(at) => at,
                None => {
                    q.clients.push_back((client, VecDeque::new()));
                    q.clients.len() - 1
                }
            };
            let (tx, rx) = oneshot::channel();
            let (_, requests) = q.clients.get_mut(at)?;
            // Requests given up while they waited count no more.
            let before = requests.len();
            requests.retain(|r| !r.is_closed());
            let gone = before - requests.len();
            if requests.len() >= MAX_WAITING_PER_CLIENT {
                q.waiting = q.waiting.saturating_sub(gone);
                return None;
            }
            requests.push_back(tx);
            q.waiting = q.waiting.saturating_sub(gone) + 1;
            rx
        };
        // Never closed without a turn while `self` lives.
        waiting.await.ok()
    }

    /// Hands the turn to the next client's oldest request still waiting.
    fn pass_on(self: &Arc<Self>) {
        loop {
            let next = {
                let mut q = lock(&self.state);
                let Some((client, mut requests)) = q.clients.pop_front() else {
                    q.busy = false;
                    return;
                };
                let next = requests.pop_front();
                if next.is_some() {
                    q.waiting = q.waiting.saturating_sub(1);
                }
                if !requests.is_empty() {
                    q.clients.push_back((client, requests));
                }
                next
            };
            let Some(next) = next else { continue };
            let turn = Turn {
                turns: Some(self.clone()),
            };
            match next.send(turn) {
                Ok(()) => return,
                // Given up while waiting: the next one.
                Err(mut turn) => turn.turns = None,
            }
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(turns) = self.turns.take() {
            turns.pass_on();
        }
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
    fn clients_are_grouped_by_address_and_ipv6_by_its_64() {
        let v4: IpAddr = [192, 0, 2, 7].into();
        assert_eq!(client_of(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_of(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
    }

    /// The turn goes round the clients: a client with three requests
    /// waiting makes another wait for one of them, not three; a request
    /// given up while waiting is passed over; a client past its bound is
    /// refused.
    #[tokio::test]
    async fn the_turn_goes_round_the_clients() {
        use futures::FutureExt;
        let turns = Arc::new(Turns::default());
        let guesser: IpAddr = [127, 0, 0, 2].into();
        let prometheus: IpAddr = [127, 0, 0, 1].into();
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = turns.take(guesser).await.expect("the free turn");
        let mut tasks = Vec::new();
        for (who, name) in [
            (guesser, "guess 1"),
            (guesser, "guess 2"),
            (guesser, "guess 3"),
            (prometheus, "prometheus"),
        ] {
            let (turns, order) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let turn = turns.take(who).await.expect("a turn");
                lock(&order).push(name);
                drop(turn);
            }));
            // In this order into the queue.
            tokio::task::yield_now().await;
        }
        // One more of the guesser's, given up while it waits.
        let given_up = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take(guesser).await.is_some() }
        });
        tokio::task::yield_now().await;
        given_up.abort();
        drop(first);
        for t in tasks {
            t.await.expect("a waiter");
        }
        assert_eq!(
            *lock(&order),
            ["guess 1", "prometheus", "guess 2", "guess 3"]
        );
        // All free again: a take does not wait.
        let again = turns
            .take(prometheus)
            .now_or_never()
            .flatten()
            .expect("the free turn, at once");
        // A client past its bound is refused at once.
        let mut waiters = Vec::new();
        for _ in 0..MAX_WAITING_PER_CLIENT {
            let turns = turns.clone();
            waiters.push(tokio::spawn(
                async move { turns.take(guesser).await.is_some() },
            ));
        }
        tokio::task::yield_now().await;
        while lock(&turns.state).waiting < MAX_WAITING_PER_CLIENT {
            tokio::task::yield_now().await;
        }
        assert!(
            matches!(turns.take(guesser).now_or_never(), Some(None)),
            "refused at once"
        );
        drop(again);
        for w in waiters {
            assert!(w.await.expect("a waiter"));
        }
    }
}
