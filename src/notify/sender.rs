//! One target's sender task: takes what the pipeline queued, spools it,
//! and delivers it in order, one request at a time.
//!
//! Before each attempt it waits for the latest of: the backoff (full
//! jitter, or the receiver's `Retry-After` on 429/503), the breaker's
//! probe time, and a free slot in the rate window. Having waited for the
//! rate window, it sends everything then queued as one summary. A
//! request, once formed, is retried as it is until it settles; new
//! messages queue behind it, so order holds. Every wait, and the request
//! itself, also takes in new messages (so they reach the spool at once)
//! and gives way to shutdown.
//!
//! It owns the delivery loop; it must not format bodies (`body`), decide
//! what a status means (`client`) or word its log lines (`observe`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::body::{self, Request};
use super::client::{self, AttemptError};
use super::config::TargetConfig;
use super::inbox::Inbox;
use super::observe::{
    BreakerClosed, BreakerOpened, Delivered, Refused, Retrying, SpoolFailed, Unencodable,
};
use super::policy::{Backoff, Breaker, Jitter, RateWindow, Trip};
use super::spool::{Entry, Spool};
use super::summary::summarize;
use crate::internal_events::InternalEvent;
use crate::metrics::Metrics;

/// What a sender is given.
pub struct Wiring {
    pub target: TargetConfig,
    pub inbox: Arc<Inbox>,
    pub client: reqwest::Client,
    /// dockwarden's host, for the bodies.
    pub host: String,
    pub metrics: Arc<Metrics>,
    pub spool: Option<Spool>,
    /// Messages from the spool, to send first.
    pub restored: Vec<Entry>,
    /// Stop at once (what is queued stays spooled).
    pub stop: CancellationToken,
    /// Send what can go now, then stop: no more waiting.
    pub drain: CancellationToken,
}

/// The request being tried: it stands for the first `n` pending messages.
struct Batch {
    n: usize,
    id: String,
    /// A summary of `n` messages held by the rate limit.
    summary: bool,
    request: Arc<Request>,
}

pub struct Sender {
    w: Wiring,
    /// `host[:port]` of the target, for log lines.
    url_host: String,
    pending: VecDeque<Entry>,
    current: Option<Batch>,
    breaker: Breaker,
    window: RateWindow,
    backoff: Backoff,
    jitter: Jitter,
    /// No attempt before this (backoff or `Retry-After`).
    not_before: Option<Instant>,
    /// The last wait was for the rate window: coalesce what is pending.
    held: bool,
}

impl Sender {
    pub fn new(mut w: Wiring) -> Sender {
        let t = &w.target;
        let pending = std::mem::take(&mut w.restored).into();
        Sender {
            url_host: t.url.host(),
            breaker: Breaker::new(t.breaker_failures, t.breaker_cooldown),
            window: RateWindow::new(t.max_per_minute, t.rate_window),
            backoff: Backoff {
                initial: t.backoff_initial,
                max: t.backoff_max,
            },
            jitter: Jitter::new(),
            pending,
            current: None,
            not_before: None,
            held: false,
            w,
        }
    }

    pub async fn run(mut self) {
        loop {
            self.absorb();
            if self.pending.is_empty() {
                self.spool_op(|s, _| s.clear());
                if self.w.drain.is_cancelled() || self.w.stop.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = self.w.inbox.wake.notified() => continue,
                    _ = self.w.stop.cancelled() => break,
                    _ = self.w.drain.cancelled() => continue,
                }
            }
            let gate = match (self.not_before, self.breaker.probe_at()) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let Some(at) = gate.filter(|t| *t > Instant::now()) {
                if !self.wait_until(at).await {
                    break;
                }
                continue;
            }
            if let Some(at) = self.window.next_free(Instant::now()) {
                self.held = true;
                if !self.wait_until(at).await {
                    break;
                }
                continue;
            }
            if self.current.is_none() && !self.form_batch() {
                continue;
            }
            let Some(batch) = &self.current else { continue };
            let (request, n, id, summary) = (
                batch.request.clone(),
                batch.n,
                batch.id.clone(),
                batch.summary,
            );
            let Some(result) = self.attempt(request).await else {
                break;
            };
            // Counted from its answer, not its start: the receiver then sees
            // at most the limit in any window, however long a request took
            // to arrive.
            self.window.record(Instant::now());
            match result {
                Ok(status) => self.delivered(n, &id, status, summary),
                Err(e) if e.retryable() => self.failed(&id, &e),
                Err(e) => self.refused(n, &id, &e),
            }
        }
        // New sends are dropped and counted from here; what came in before
        // is spooled for the next start.
        self.w.inbox.close();
        self.absorb();
    }

    /// Moves newly queued messages to the spool and the pending queue.
    fn absorb(&mut self) {
        let fresh = self.w.inbox.take();
        if fresh.is_empty() {
            return;
        }
        self.spool_op(|s, _| s.append(&fresh));
        self.pending.extend(fresh);
    }

    /// Runs a spool operation; on failure the spool is off until restart
    /// (delivery goes on from memory), so a full disk logs once.
    fn spool_op(
        &mut self,
        op: impl FnOnce(&mut Spool, &VecDeque<Entry>) -> Result<(), super::spool::SpoolError>,
    ) {
        let Some(spool) = self.w.spool.as_mut() else {
            return;
        };
        if let Err(e) = op(spool, &self.pending) {
            SpoolFailed {
                target: &self.w.target.name,
                error: &e,
            }
            .emit(&self.w.metrics);
            self.w.spool = None;
        }
    }

    /// Waits until `at`, taking in new messages meanwhile. False when
    /// stopping (or draining: a wait means nothing can go now).
    async fn wait_until(&mut self, at: Instant) -> bool {
        let sleep = tokio::time::sleep_until(at.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = self.w.stop.cancelled() => return false,
                _ = self.w.drain.cancelled() => return false,
                _ = &mut sleep => return true,
                _ = self.w.inbox.wake.notified() => self.absorb(),
            }
        }
    }

    /// Forms the next request: a summary of everything pending after a
    /// wait for the rate window, else the first message. False if the
    /// message could not be encoded (it is then settled as failed).
    fn form_batch(&mut self) -> bool {
        let coalesce = std::mem::take(&mut self.held) && self.pending.len() > 1;
        let n = if coalesce { self.pending.len() } else { 1 };
        let t = &self.w.target;
        let msg = if coalesce {
            let members: Vec<_> = self.pending.iter().map(|e| e.msg.clone()).collect();
            summarize(&members, t.max_per_minute, t.rate_window)
        } else {
            self.pending.front().map(|e| e.msg.clone())
        };
        let Some(msg) = msg else { return false };
        match body::render(t, &msg, &self.w.host) {
            Ok(request) => {
                self.current = Some(Batch {
                    n,
                    id: msg.id,
                    summary: coalesce,
                    request: Arc::new(request),
                });
                true
            }
            Err(e) => {
                Unencodable {
                    target: &t.name,
                    id: &msg.id,
                    error: &e,
                }
                .emit(&self.w.metrics);
                self.settle(n);
                false
            }
        }
    }

    /// One attempt, taking in new messages while it runs; None when
    /// stopping (the request is abandoned; its messages stay spooled).
    async fn attempt(&mut self, request: Arc<Request>) -> Option<Result<u16, AttemptError>> {
        let client = self.w.client.clone();
        let timeout = self.w.target.timeout;
        let call = async move { client::attempt(&client, &request, timeout).await };
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                _ = self.w.stop.cancelled() => return None,
                r = &mut call => return Some(r),
                _ = self.w.inbox.wake.notified() => self.absorb(),
            }
        }
    }

    /// Drops the first `n` pending messages for good: marked done in the
    /// spool first, so a restart never sends them again.
    fn settle(&mut self, n: usize) -> Vec<Entry> {
        let n = n.min(self.pending.len());
        let gone: Vec<Entry> = self.pending.drain(..n).collect();
        self.spool_op(|s, pending| {
            s.settle(gone.iter().map(|e| e.msg.id.as_str()))?;
            if s.wants_compaction(pending.len()) {
                s.compact(pending)?;
            }
            Ok(())
        });
        self.w.inbox.settled(gone.len());
        self.current = None;
        gone
    }

    fn delivered(&mut self, n: usize, id: &str, status: u16, summary: bool) {
        let gone = self.settle(n);
        self.not_before = None;
        if self.breaker.success() {
            BreakerClosed {
                target: &self.w.target.name,
                host: &self.url_host,
            }
            .emit(&self.w.metrics);
        }
        let now = crate::clock::unix_nanos();
        let latencies: Vec<Duration> = gone
            .iter()
            .map(|e| Duration::from_nanos(now.saturating_sub(e.queued_at).max(0) as u64))
            .collect();
        Delivered {
            target: &self.w.target.name,
            host: &self.url_host,
            id,
            status,
            latencies: &latencies,
            coalesced: if summary { gone.len() } else { 0 },
        }
        .emit(&self.w.metrics);
    }

    fn failed(&mut self, id: &str, e: &AttemptError) {
        let now = Instant::now();
        let trip = self.breaker.failure(now);
        let failures = self.breaker.failures();
        let delay = e
            .retry_after()
            .unwrap_or_else(|| self.backoff.delay(failures, &mut self.jitter));
        self.not_before = Some(now + delay);
        if trip == Trip::Opened {
            BreakerOpened {
                target: &self.w.target.name,
                host: &self.url_host,
                failures,
                cooldown: self.w.target.breaker_cooldown,
                queued: self.w.inbox.len(),
            }
            .emit(&self.w.metrics);
        }
        let probe = self
            .breaker
            .probe_at()
            .map_or(Duration::ZERO, |p| p.saturating_duration_since(now));
        Retrying {
            target: &self.w.target.name,
            id,
            error: e,
            failures,
            retry_in: delay.max(probe),
        }
        .emit(&self.w.metrics);
    }

    fn refused(&mut self, n: usize, id: &str, e: &AttemptError) {
        let gone = self.settle(n);
        self.not_before = None;
        // The receiver answered: it is up, whatever it thought of this one.
        if self.breaker.success() {
            BreakerClosed {
                target: &self.w.target.name,
                host: &self.url_host,
            }
            .emit(&self.w.metrics);
        }
        Refused {
            target: &self.w.target.name,
            id,
            error: e,
            messages: gone.len(),
        }
        .emit(&self.w.metrics);
    }
}
