//! A resync asked for and not yet done. The checkpoint carries it, so a
//! restart in between still resyncs: without it the next start would
//! resume from a checkpoint already past what the resync was to repair (a
//! `queue_overflow` resync waits for its burst to pass, and a drop's events
//! never hold the watermark back), and nothing would say it was lost.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::lock::lock;
use crate::metrics::RESYNC_REASONS;

/// Where gaps, drops and the start ask for a resync.
#[derive(Clone)]
pub struct ResyncRequests {
    tx: mpsc::Sender<&'static str>,
    owed: Arc<Owed>,
}

impl ResyncRequests {
    pub fn new(tx: mpsc::Sender<&'static str>) -> ResyncRequests {
        ResyncRequests {
            tx,
            owed: Arc::default(),
        }
    }

    /// Asks for a resync (one request waiting is enough); it is owed until
    /// one that begins after this succeeds.
    pub fn ask(&self, reason: &'static str) {
        self.owed.ask(reason);
        let _ = self.tx.try_send(reason);
    }

    /// What the resync task and the checkpoint read.
    pub fn owed(&self) -> Arc<Owed> {
        self.owed.clone()
    }
}

/// Resyncs asked for and done, by count.
#[derive(Debug, Default)]
pub struct Owed(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    asked: u64,
    /// Every request up to this one was answered by a resync that
    /// succeeded.
    done: u64,
    /// The reason of the newest request.
    reason: Option<&'static str>,
}

impl Owed {
    fn ask(&self, reason: &'static str) {
        let mut s = lock(&self.0);
        s.asked += 1;
        s.reason = Some(reason);
    }

    /// A resync begins: what it answers once it succeeds.
    pub fn begin(&self) -> u64 {
        lock(&self.0).asked
    }

    /// The resync that began with `begin() == upto` succeeded.
    pub fn done(&self, upto: u64) {
        let mut s = lock(&self.0);
        s.done = s.done.max(upto);
    }

    /// The reason of the resync still owed, if one is.
    pub fn reason(&self) -> Option<&'static str> {
        let s = lock(&self.0);
        if s.asked > s.done { s.reason } else { None }
    }
}

/// The reason a checkpoint's `resync_owed` names, as the metric's label
/// knows it (a file edited by hand cannot add a label value).
pub fn known_reason(reason: &str) -> &'static str {
    RESYNC_REASONS
        .into_iter()
        .find(|known| *known == reason)
        .unwrap_or("startup")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_until_a_resync_begun_after_the_request_succeeds() {
        let (tx, _rx) = mpsc::channel(4);
        let requests = ResyncRequests::new(tx);
        let owed = requests.owed();
        assert_eq!(owed.reason(), None);
        requests.ask("queue_overflow");
        assert_eq!(owed.reason(), Some("queue_overflow"));
        let first = owed.begin();
        // Asked again while it runs: the running one does not answer it.
        requests.ask("ring_overflow");
        owed.done(first);
        assert_eq!(owed.reason(), Some("ring_overflow"));
        let second = owed.begin();
        owed.done(second);
        assert_eq!(owed.reason(), None);
        // An older resync finishing late changes nothing.
        owed.done(first);
        assert_eq!(owed.reason(), None);
    }

    #[test]
    fn unknown_reasons_resync_as_at_startup() {
        assert_eq!(known_reason("ring_overflow"), "ring_overflow");
        assert_eq!(known_reason("made up"), "startup");
    }
}
