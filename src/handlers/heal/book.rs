//! The book of per-container healing state ([`Entry`], by container name so
//! it survives a recreate) and the [`Healer`] that holds it, with its
//! [`Observer`]: who stopped a container, which events were dockwarden's
//! own, when it started, whether it was OOM-killed, renamed or destroyed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::facts::Facts;
use super::offline::{Offline, Verdict, VerdictKind};
use crate::containers::signal_number;
use crate::event::Event;
use crate::handlers::{About, Ctx, Emitter, Observer};
use crate::internal_events::heal::BreakerClosed;
use crate::lock::lock;

/// How long events of our own action are recognised as ours, beyond the
/// stop timeout, if the `start` that ends them never comes.
const OWN_EVENTS_SLACK: Duration = Duration::from_secs(30);

/// Per-container healing state.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// When dockwarden restarted it, within the window.
    pub(super) restarts: VecDeque<Instant>,
    /// Backoff exponent.
    pub(super) attempt: u32,
    /// The one recreate has been spent.
    pub(super) escalated: bool,
    pub(super) breaker_open: bool,
    /// A kill/stop came through the API since the last start.
    pub(super) requested_stop: bool,
    /// When a signal that is not a stop signal (`docker kill -s INT`) came
    /// through the API since the last start.
    pub(super) signalled: Option<Instant>,
    /// Events until then (or the next `start`) are ours.
    pub(super) own_until: Option<Instant>,
    /// A scheduled action (its generation, and the token that calls it off).
    pub(super) pending: Option<(u64, CancellationToken)>,
    /// What deciding on the scheduled action counted in advance: taken
    /// back if it is called off (a restart not made is no restart).
    pub(super) pending_counted: Option<Counted>,
    pub(super) last_start: Option<Instant>,
    /// An `oom` event came since the last start.
    pub(super) oom_seen: bool,
    /// The container that has this name now: events of an older container
    /// of the same name (handled in another lane) don't touch the entry.
    pub(super) container_id: Option<String>,
    /// The rule that decided last, and its window, for the status API.
    pub(super) rule: Option<Arc<str>>,
    pub(super) window: Duration,
    /// What the scheduled action is and when it is due (Unix nanoseconds);
    /// read only while `pending` is set.
    pub(super) pending_plan: Option<(&'static str, i64)>,
    /// The last action taken on whichever container had the name: its
    /// kind, result and time (Unix nanoseconds).
    pub(super) last_action: Option<(&'static str, &'static str, i64)>,
    /// Its bad labels were reported (once per container name: a recreate
    /// copies them).
    pub(super) labels_reported: bool,
}

/// The healing state of a container as the status API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The rule that decided last about it.
    pub rule: Option<Arc<str>>,
    /// dockwarden's restarts within that rule's window.
    pub restarts_in_window: usize,
    pub breaker_open: bool,
    /// The scheduled action and when it is due (Unix nanoseconds).
    pub pending: Option<(&'static str, i64)>,
    /// The last action: kind, result, time (Unix nanoseconds).
    pub last_action: Option<(&'static str, &'static str, i64)>,
}

impl Entry {
    pub(super) fn own(&self, now: Instant) -> bool {
        self.own_until.is_some_and(|t| now < t)
    }

    /// Whether an event of container `id` is about this entry.
    pub(super) fn is_about(&self, id: &str) -> bool {
        self.container_id.as_deref().is_none_or(|c| c == id)
    }

    /// Calls off a scheduled action.
    pub(super) fn call_off(&mut self, name: &str, why: &str) {
        if self.drop_pending() {
            info!(container = %name, reason = why, "Scheduled action called off.");
        }
    }

    /// Cancels the scheduled action, if any, and takes back what it
    /// counted; whether there was one.
    fn drop_pending(&mut self) -> bool {
        let Some((_, token)) = self.pending.take() else {
            return false;
        };
        token.cancel();
        self.uncount();
        true
    }

    /// Takes back what the scheduled action counted when it was decided:
    /// its place among the restarts of the window and its step of the
    /// backoff, or the one recreate.
    fn uncount(&mut self) {
        match self.pending_counted.take() {
            Some(Counted::Restart(at)) => {
                if let Some(i) = self.restarts.iter().rposition(|t| *t == at) {
                    self.restarts.remove(i);
                    self.attempt = self.attempt.saturating_sub(1);
                }
            }
            Some(Counted::Escalation) => self.escalated = false,
            None => {}
        }
    }
}

/// Says the breaker of container `name` closed, and why: a log line, a
/// count, and a `dockwarden.breaker_closed` event about `event`'s actor (a
/// dry run's breaker was never counted open).
pub(super) fn announce_closed(
    emitter: &Emitter,
    name: &str,
    event: &Event,
    reason: &'static str,
    dry_run: bool,
) {
    emitter.emit(
        &BreakerClosed {
            container: name,
            reason,
            dry_run,
        },
        Some(About {
            id: &event.actor_id,
            name,
            cause: event,
        }),
    );
}

/// Closes the breaker of `e`: healing starts over. Only the breaker and
/// what led to it are reset; what the lane noted since the start (an
/// operator's stop, a signal, an OOM kill, a pending stop) stays, as the
/// check of who started it may land after such events.
pub(super) fn reopen(e: &mut Entry) {
    e.breaker_open = false;
    e.restarts.clear();
    e.attempt = 0;
    e.escalated = false;
}

/// What deciding on an action counts before it is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counted {
    /// A restart, at this time, in the window (and a step of the backoff).
    Restart(Instant),
    /// The one recreate after the restarts.
    Escalation,
}

/// The shared state of the heal handlers, and their observer.
#[derive(Default)]
pub struct Healer {
    /// By container name: survives a recreate. Shared with the check of
    /// who started a container whose breaker is open.
    pub(super) book: Arc<Mutex<foldhash::HashMap<String, Entry>>>,
    pub(super) generation: std::sync::atomic::AtomicU64,
    /// Set for `dockwarden replay`: the events' clock, no engine, a journal.
    pub(super) offline: Option<Offline>,
}

impl Healer {
    /// A healer for `dockwarden replay`: it decides from the events alone,
    /// on their clock, and keeps a journal of its [`Verdict`]s.
    pub fn offline() -> Healer {
        Healer {
            offline: Some(Offline::new()),
            ..Healer::default()
        }
    }

    /// The verdicts decided offline since the last call (none live).
    pub fn take_verdicts(&self) -> Vec<Verdict> {
        self.offline.as_ref().map(Offline::take).unwrap_or_default()
    }

    /// Now: the event's time offline, else the monotonic clock.
    pub(super) fn now(&self, event: &Event) -> Instant {
        match &self.offline {
            Some(o) => o.now(event),
            None => Instant::now(),
        }
    }

    /// Journals `verdict` when offline.
    pub(super) fn note(&self, verdict: impl FnOnce() -> Verdict) {
        if let Some(o) = &self.offline {
            o.note(verdict());
        }
    }

    /// The healing state of the container named `name`, if dockwarden has
    /// any for it.
    pub fn summary(&self, name: &str) -> Option<Summary> {
        let now = Instant::now();
        let book = self.book();
        let e = book.get(name)?;
        Some(Summary {
            rule: e.rule.clone(),
            restarts_in_window: e
                .restarts
                .iter()
                .filter(|t| now.saturating_duration_since(**t) < e.window)
                .count(),
            breaker_open: e.breaker_open,
            pending: e.pending.as_ref().and(e.pending_plan),
            last_action: e.last_action,
        })
    }

    /// Notes an action taken on the container named `name`.
    pub(super) fn note_action(&self, name: &str, kind: &'static str, result: &'static str) {
        self.book().entry(name.to_owned()).or_default().last_action =
            Some((kind, result, crate::clock::unix_nanos()));
    }

    /// True the first time a decision about this container looks at its
    /// labels: their errors are reported once per container.
    pub(super) fn first_look_at_labels(&self, facts: &Facts) -> bool {
        let mut book = self.book();
        let e = book.entry(facts.name.clone()).or_default();
        !std::mem::replace(&mut e.labels_reported, true)
    }

    pub(super) fn book(&self) -> MutexGuard<'_, foldhash::HashMap<String, Entry>> {
        lock(&self.book)
    }

    /// The facts of a failure event without asking the engine, when what the
    /// event says cannot have been forged and the container view knows the
    /// rest (its name and restart policy do not change with its state).
    pub(super) fn facts_without_inspect(&self, ctx: &Ctx, event: &Event) -> Option<Facts> {
        let known = ctx.containers.get(&event.actor_id)?;
        // on-failure needs the engine's restart count.
        if known.restart_policy == "on-failure" {
            return None;
        }
        let oom_seen = self.book().get(&known.name).is_some_and(|e| e.oom_seen);
        let (overrides, label_errors) = super::labels::Overrides::read(&known.labels);
        let base = Facts {
            id: event.actor_id.clone(),
            name: known.name.clone(),
            policy: known.restart_policy.to_owned(),
            max_retries: known.max_retries,
            overrides,
            label_errors,
            ..Facts::default()
        };
        match &*event.key {
            "container.die" if !known.forgeable.exit_code => Some(Facts {
                exit_code: event.exit_code()?,
                oom_killed: oom_seen,
                ..base
            }),
            // Whether the main process survived needs the engine, and so
            // does the output of the health check that failed.
            _ => None,
        }
    }

    /// Journals a breaker closed on `name`, last decided by `rule`.
    fn note_closed(
        &self,
        rule: Option<Arc<str>>,
        name: &str,
        reason: &str,
        unverified: Option<&'static str>,
    ) {
        self.note(|| Verdict {
            rule,
            container: name.to_owned(),
            kind: VerdictKind::BreakerClosed,
            action: None,
            failure: String::new(),
            attempt: 0,
            backoff: Duration::ZERO,
            reason: reason.to_owned(),
            unverified: unverified.into_iter().collect(),
        });
    }

    /// Marks the events of the action about to be taken on `names` as ours.
    pub(super) fn mark_own(&self, names: &[&str], stop_timeout_secs: u32) {
        let until =
            Instant::now() + Duration::from_secs(u64::from(stop_timeout_secs)) + OWN_EVENTS_SLACK;
        let mut book = self.book();
        for name in names {
            book.entry((*name).to_owned()).or_default().own_until = Some(until);
        }
    }

    pub(super) fn clear_own(&self, name: &str) {
        if let Some(e) = self.book().get_mut(name) {
            e.own_until = None;
        }
    }

    /// Clears the scheduled action of `name` if it is still generation
    /// `generation` (a newer one may have replaced it): it is carried out
    /// (or failed to be), so what it counted stays counted.
    pub(super) fn finish_pending(&self, name: &str, generation: u64) {
        if let Some(e) = self.book().get_mut(name)
            && e.pending.as_ref().is_some_and(|(g, _)| *g == generation)
        {
            e.pending = None;
            e.pending_counted = None;
        }
    }

    /// Calls off the scheduled action of `name` if it is still generation
    /// `generation`, found no longer needed when its backoff ended (the
    /// caller says so in the log).
    pub(super) fn call_off_pending(&self, name: &str, generation: u64) {
        if let Some(e) = self.book().get_mut(name)
            && e.pending.as_ref().is_some_and(|(g, _)| *g == generation)
        {
            e.drop_pending();
        }
    }
}

impl Observer for Healer {
    fn wants(&self, event: &Event) -> bool {
        event.typ == "container"
            && matches!(
                &*event.action,
                "kill" | "start" | "destroy" | "oom" | "rename"
            )
    }

    fn observe(&self, ctx: &Ctx, event: &Arc<Event>) {
        let now = self.now(event);
        let id = event.actor_id.as_str();
        // The view of a destroyed container is gone: its name is then
        // the event's (which labels cannot overwrite on Engine 20.10).
        let known = ctx.containers.get(id);
        let Some(name) = known
            .as_ref()
            .map(|p| p.name.clone())
            .or_else(|| event.name().map(str::to_owned))
        else {
            return;
        };
        let mut book = self.book();
        match &*event.action {
            "oom" => {
                ctx.metrics.oom_event();
                let e = book.entry(name).or_default();
                if e.is_about(id) {
                    e.oom_seen = true;
                }
            }
            "kill" => {
                // Only a signal that stops the container is a stop; a
                // HUP to reload is not, though an exit right after it is
                // taken for the operator's doing (`SIGNALLED_EXIT`). A
                // forgeable or unknown signal counts as a stop: never
                // restart what an operator stopped.
                let signal = event.attr("signal").and_then(signal_number);
                let stops = match (&known, signal) {
                    (Some(p), Some(sig)) if !p.forgeable.signal => {
                        sig == 9 || sig == 15 || Some(sig) == p.stop_signal
                    }
                    _ => true,
                };
                let e = book.entry(name.clone()).or_default();
                if stops && e.is_about(id) && !e.own(now) {
                    e.requested_stop = true;
                    e.call_off(&name, "stopped or killed through the API");
                } else if e.is_about(id) && !e.own(now) {
                    e.signalled = Some(now);
                }
            }
            "start" => {
                let e = book.entry(name.clone()).or_default();
                e.container_id = Some(id.to_owned());
                e.requested_stop = false;
                e.signalled = None;
                e.oom_seen = false;
                e.last_start = Some(now);
                if e.own(now) {
                    e.own_until = None;
                    return;
                }
                // Started by someone else: a pending action is moot, and
                // an operator's start closes the breaker.
                e.call_off(&name, "started by someone else");
                if !e.breaker_open {
                    return;
                }
                // Docker's own restart policy starts a crashed container
                // again too, and a `start` does not say who started it. With
                // the policy "no", only a start through the API can have;
                // else the engine tells: it counts its policy's restarts
                // (`RestartCount`) and sets the count to 0 at a start through
                // the API. Asked off the lane (an observer never waits), a
                // count of 0 closes the breaker. Offline, or with no engine
                // to ask, the start is taken for an operator's.
                // The view's policy only if the view is kept current (an
                // `update` inspects it again): else it may be stale.
                let policy_may_have = !ctx.containers.keeps_all()
                    || known.as_ref().is_none_or(|c| c.restart_policy != "no");
                match (&self.offline, ctx.docker.get()) {
                    (None, Ok(docker)) if policy_may_have => {
                        ctx.tasks.spawn(super::action::close_if_started_by_hand(
                            self.book.clone(),
                            docker,
                            ctx,
                            event.clone(),
                            name,
                        ));
                    }
                    _ => {
                        let rule = e.rule.clone();
                        reopen(e);
                        let unverified = self.offline.as_ref().map(|_| super::offline::STARTED_BY);
                        self.note_closed(rule, &name, "started by hand", unverified);
                        // A dry run's breaker was never counted open.
                        announce_closed(
                            &ctx.emitter(),
                            &name,
                            event,
                            "started by hand",
                            ctx.dry_run,
                        );
                    }
                }
            }
            "rename" => {
                // The entry follows the container to its new name.
                let old = event
                    .attr("oldName")
                    .map(|n| crate::containers::plain_name(n).to_owned());
                if let Some(old) = old.filter(|o| *o != name)
                    && book
                        .get(&old)
                        .is_some_and(|e| e.is_about(id) && !e.own(now))
                    && let Some(e) = book.remove(&old)
                {
                    book.insert(name, e);
                    ctx.metrics.forget_container(&old);
                }
            }
            "destroy" => {
                let ours = book
                    .get(&name)
                    .is_some_and(|e| e.is_about(id) && !e.own(now));
                if ours && let Some(mut e) = book.remove(&name) {
                    e.call_off(&name, "destroyed");
                    if e.breaker_open {
                        self.note_closed(e.rule.clone(), &name, "destroyed", None);
                        announce_closed(&ctx.emitter(), &name, event, "destroyed", ctx.dry_run);
                    }
                    ctx.metrics.forget_container(&name);
                }
            }
            _ => {}
        }
    }
}
