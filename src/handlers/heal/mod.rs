//! Self-healing: `restart`, `recreate` and `raise_memory`.
//!
//! All three share one [`Healer`]: a book of per-container state keyed by
//! container *name* (so it survives a recreate) and an [`Observer`] that
//! watches `kill`, `start`, `destroy` and `oom` for every container. A failure
//! (`die` with a matching exit code, `oom`, `health_status: unhealthy`) goes
//! through [`decide`], a pure function of that state, the rule's parameters
//! and what the engine says about the container *now*:
//!
//! 1. Events caused by dockwarden's own restart or recreate are ignored.
//! 2. The exit code and OOM state come from `GET /containers/{id}/json`,
//!    never from event attributes a label can forge. Without
//!    `match.exit_code`, only a non-zero exit is a failure.
//! 3. A `die` after a `kill`/`stop` issued through the API since the last
//!    `start` is an operator's decision: suppressed unless `include_requested`.
//! 4. A container Docker will restart itself (`always`, `unless-stopped`,
//!    `on-failure` with attempts left) is suppressed unless
//!    `respect_restart_policy = false`; `unhealthy` is acted on regardless.
//! 5. Within `window_secs`, up to `max_restarts` restarts with exponential
//!    backoff; then `then = "recreate"` once; then the breaker opens.
//!
//! The action itself runs as a task after the backoff, outside the
//! container's lane, so a crash-looping container never blocks dispatch; a
//! manual `start` cancels it.
//!
//! Reaction time: the engine holds a container's lock while it processes its
//! exit, so inspecting it right after `die` takes ~50 ms. The container view
//! ([`crate::containers`]) inspects each container when it starts (real
//! name, restart policy, whether a label collides with `exitCode`), and a
//! `die` of a known container whose `exitCode` attribute cannot be forged is
//! decided without an inspect. Everything else takes the inspect path.
//!
//! Files: `policy` (parameters and [`decide`]), `facts` (what the engine
//! says), `book` (per-container state and the observer),
//! `action` (the scheduled task and the engine calls), `recreate`, `offline`
//! (for `dockwarden replay`: the events' clock, facts from the events, a
//! journal of verdicts); this file
//! holds the three handlers and their factories. The handlers must not call
//! the engine inline for anything but the decision's facts: actions run in
//! `action`'s tasks.

mod action;
mod book;
mod dependents;
mod facts;
pub mod labels;
pub mod offline;
mod policy;
pub mod recreate;

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::{About, BoxFuture, Ctx, Factory, Handler, HandlerError, Observer, Outcome, RuleSpec};
use crate::config::ExitCode;
use crate::config::table::Table;
use crate::event::Event;
use crate::internal_events::InternalEvent;
use crate::internal_events::heal::{BadLabel, BreakerOpened, Decided, NotHealing, Suppressed};

use action::Plan;
pub use book::{Entry, Healer, Summary};
pub use facts::{Facts, Why};
use facts::{describe, failure_of};
use labels::LabelAction;
pub use offline::{Verdict, VerdictKind};
pub use policy::{Decision, Failure, Kind, Params, decide, decide_stop};

/// The keys heal handlers act on.
const FAILURE_KEYS: &[&str] = &["container.die", "container.oom", "container.health_status"];

/// A heal handler bound to one rule.
struct Heal {
    rule: RuleSpec,
    kind: Kind,
    params: Params,
    healer: Arc<Healer>,
}

impl Handler for Heal {
    fn handle<'a>(&'a self, ctx: &'a Ctx, event: &'a Arc<Event>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run(ctx, event))
    }
}

impl Heal {
    /// The facts of a failure: offline from the event and the view (with
    /// what they leave unverified), else without an inspect when the event
    /// says enough, else from a fresh inspect. Err: the run's outcome.
    async fn facts(
        &self,
        ctx: &Ctx,
        event: &Arc<Event>,
    ) -> Result<(Facts, Vec<&'static str>), Outcome> {
        if self.healer.offline.is_some() {
            let known = ctx.containers.get(&event.actor_id);
            let oom_seen = known
                .as_ref()
                .and_then(|k| self.healer.book().get(&k.name).map(|e| e.oom_seen))
                .unwrap_or(false);
            return Ok(offline::facts(event, known.as_deref(), oom_seen));
        }
        let docker = match ctx.docker.get() {
            Ok(d) => d,
            Err(_) => return Err(Outcome::Error(HandlerError::NotConnected)),
        };
        if let Some(f) = self.healer.facts_without_inspect(ctx, event) {
            return Ok((f, Vec::new()));
        }
        match ctx.containers.inspect(&docker, &event.actor_id).await {
            Ok(known) => Ok((Facts::from_container(&known), Vec::new())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                info!(container = event.name().unwrap_or(""), rule = %self.rule.name, "Container is gone; nothing to heal.");
                Err(Outcome::Skipped)
            }
            Err(e) => Err(Outcome::Error(HandlerError::engine(
                crate::docker::calls::Call::ContainerInspect,
                format!("inspecting {}", event.short_id()),
                e,
            ))),
        }
    }

    async fn run(&self, ctx: &Ctx, event: &Arc<Event>) -> Outcome {
        let rule = &self.rule;
        let (facts, unverified) = match self.facts(ctx, event).await {
            Ok(f) => f,
            Err(outcome) => return outcome,
        };
        let Some(failure) = failure_of(event, &facts) else {
            return Outcome::Skipped;
        };
        let what = describe(failure);
        let verdict = |kind: VerdictKind, action: Option<&'static str>, reason: &str| {
            self.healer.note(|| Verdict {
                rule: Some(rule.name.clone()),
                container: facts.name.clone(),
                kind,
                action,
                failure: what.clone(),
                attempt: 0,
                backoff: Duration::ZERO,
                reason: reason.to_owned(),
                unverified: unverified.clone(),
            })
        };
        let not_healing = |reason: &str| {
            verdict(VerdictKind::NotHealing, None, reason);
            NotHealing {
                container: &facts.name,
                rule: &rule.name,
                failure: &what,
                reason,
            }
            .emit(&ctx.metrics);
            Outcome::Skipped
        };
        // The container's labels: the opt-out holds under any rule; the
        // rest only where the rule allows overrides.
        if !facts.label_errors.is_empty() && self.healer.first_look_at_labels(&facts) {
            for e in &facts.label_errors {
                ctx.emit(
                    &BadLabel {
                        container: &facts.name,
                        label: e.label,
                        value: &e.value,
                        expected: e.expected,
                    },
                    None,
                );
            }
        }
        let o = &facts.overrides;
        if o.heal == Some(false) {
            return not_healing("it is labelled dockwarden.heal=false");
        }
        let (params, kind) = if self.params.allow_label_overrides {
            let kind = match o.action {
                None => self.kind,
                Some(LabelAction::Restart) => Kind::Restart,
                Some(LabelAction::Recreate) => Kind::Recreate,
                Some(LabelAction::Stop) => Kind::Stop,
                Some(LabelAction::None) => {
                    return not_healing("it is labelled dockwarden.action=none");
                }
            };
            (o.apply(&self.params), kind)
        } else {
            (self.params.clone(), self.kind)
        };
        let action = kind.label();
        if matches!(kind, Kind::RaiseMemory { .. }) && facts.memory == 0 {
            let reason = "the container has no memory limit to raise";
            verdict(VerdictKind::Suppressed, Some(action), reason);
            ctx.emit(
                &Suppressed {
                    container: &facts.name,
                    rule: &rule.name,
                    action,
                    failure: &what,
                    reason,
                    dry_run: ctx.dry_run,
                },
                Some(About {
                    id: &facts.id,
                    name: &facts.name,
                    cause: event,
                }),
            );
            return Outcome::Skipped;
        }
        // An OOM kill of a child leaves the main process running: restart
        // and recreate wait for the `die` (with OOMKilled) if it ever comes.
        if event.key == "container.oom"
            && facts.running
            && !matches!(kind, Kind::RaiseMemory { .. })
        {
            return not_healing("its main process still runs");
        }
        // A clean exit is a finished job, not a crash: without
        // `match.exit_code` only a non-zero exit is a failure.
        if let Failure::Exit(code) = failure
            && !rule
                .exit_code
                .as_ref()
                .unwrap_or(&ExitCode::Nonzero)
                .matches(code)
        {
            return not_healing("the exit code is not a failure under this rule");
        }
        let now = self.healer.now(event);
        // A dry run advances the same state as a real run, as if each
        // would-be action had succeeded (nothing is scheduled, so nothing is
        // pending), so it shows the backoff growth, the recreate and the
        // breaker that the real run would reach.
        let (decision, pending) = {
            let mut book = self.healer.book();
            let entry = book.entry(facts.name.clone()).or_default();
            entry.container_id = Some(facts.id.clone());
            let escalated_before = entry.escalated;
            let d = if kind == Kind::Stop {
                decide_stop(entry, &params, failure, &facts, now)
            } else {
                decide(entry, &params, failure, &facts, now)
            };
            entry.rule = Some(rule.name.clone());
            entry.window = params.window;
            entry.pending_plan = match d {
                Decision::Act { delay, .. } => Some((
                    kind.label(),
                    crate::clock::unix_nanos().saturating_add(delay.as_nanos() as i64),
                )),
                Decision::Escalate => Some((Kind::Recreate.label(), crate::clock::unix_nanos())),
                _ => entry.pending_plan,
            };
            let acts = matches!(d, Decision::Act { .. } | Decision::Escalate);
            let pending = (acts && !ctx.dry_run).then(|| {
                let generation = self
                    .healer
                    .generation
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let token = ctx.shutdown.child_token();
                entry.pending = Some((generation, token.clone()));
                // `decide` counted a restart at `now` for every restart-like
                // action (it may have let older ones out of the window too,
                // which stays so).
                entry.pending_counted = match d {
                    Decision::Act { .. } if kind != Kind::Stop => Some(book::Counted::Restart(now)),
                    Decision::Escalate if !escalated_before => Some(book::Counted::Escalation),
                    _ => None,
                };
                (generation, token)
            });
            (d, pending)
        };
        let plan = match decision {
            Decision::Ignore(why) => return not_healing(why),
            Decision::Suppress(why) => {
                verdict(VerdictKind::Suppressed, Some(action), &why);
                ctx.emit(
                    &Suppressed {
                        container: &facts.name,
                        rule: &rule.name,
                        action,
                        failure: &what,
                        reason: &why,
                        dry_run: ctx.dry_run,
                    },
                    Some(About {
                        id: &facts.id,
                        name: &facts.name,
                        cause: event,
                    }),
                );
                return Outcome::Skipped;
            }
            Decision::OpenBreaker => {
                verdict(VerdictKind::BreakerOpen, None, "");
                ctx.emit(
                    &BreakerOpened {
                        container: &facts.name,
                        rule: &rule.name,
                        failure: &what,
                        max_restarts: params.max_restarts,
                        window_secs: params.window.as_secs(),
                        dry_run: ctx.dry_run,
                    },
                    Some(About {
                        id: &facts.id,
                        name: &facts.name,
                        cause: event,
                    }),
                );
                return Outcome::Skipped;
            }
            Decision::Escalate => Plan {
                kind: Kind::Recreate,
                failure,
                delay: Duration::ZERO,
                attempt: 0,
                stop_timeout: params.stop_timeout_secs,
                max_restarts: params.max_restarts,
                why: Why::of(failure, &facts),
            },
            Decision::Act { delay, attempt } => Plan {
                kind,
                failure,
                delay,
                attempt,
                stop_timeout: params.stop_timeout_secs,
                max_restarts: params.max_restarts,
                why: Why::of(failure, &facts),
            },
        };
        let why = plan.why.text();
        self.healer.note(|| Verdict {
            rule: Some(rule.name.clone()),
            container: facts.name.clone(),
            kind: if plan.attempt == 0 {
                VerdictKind::Escalate
            } else {
                VerdictKind::Act
            },
            action: Some(plan.kind.label()),
            failure: what.clone(),
            attempt: plan.attempt,
            backoff: plan.delay,
            reason: why.clone(),
            unverified: unverified.clone(),
        });
        Decided {
            container: &facts.name,
            rule: &rule.name,
            action: plan.kind.label(),
            failure: &what,
            why: &why,
            attempt: plan.attempt,
            backoff: plan.delay,
            dry_run: ctx.dry_run,
        }
        .emit(&ctx.metrics);
        // A dry run stops at the decision.
        let Some(pending) = pending else {
            return Outcome::Skipped;
        };
        self.schedule(ctx, event, facts, plan, pending);
        Outcome::Ok
    }
}

/// `handler = "restart"`.
pub struct RestartFactory(pub Arc<Healer>);
/// `handler = "recreate"`.
pub struct RecreateFactory(pub Arc<Healer>);
/// `handler = "raise_memory"`.
pub struct RaiseMemoryFactory(pub Arc<Healer>);
/// `handler = "stop"`.
pub struct StopFactory(pub Arc<Healer>);

macro_rules! heal_factory {
    ($factory:ty, $name:literal, $events:expr, |$t:ident| $kind:expr, $then:literal) => {
        impl Factory for $factory {
            fn name(&self) -> &'static str {
                $name
            }
            fn build(&self, rule: &RuleSpec, $t: &mut Table<'_, '_>) -> Arc<dyn Handler> {
                let kind = $kind;
                let params = Params::read($t, $then);
                Arc::new(Heal {
                    rule: rule.clone(),
                    kind,
                    params,
                    healer: self.0.clone(),
                })
            }
            fn events(&self) -> Option<&'static [&'static str]> {
                Some($events)
            }
            fn verifies_exit_code(&self) -> bool {
                true
            }
            fn observer(&self) -> Option<Arc<dyn Observer>> {
                Some(self.0.clone())
            }
        }
    };
}

heal_factory!(
    RestartFactory,
    "restart",
    FAILURE_KEYS,
    |t| Kind::Restart,
    "recreate"
);
heal_factory!(
    RecreateFactory,
    "recreate",
    FAILURE_KEYS,
    |t| Kind::Recreate,
    "none"
);
heal_factory!(StopFactory, "stop", FAILURE_KEYS, |t| Kind::Stop, "none");
heal_factory!(
    RaiseMemoryFactory,
    "raise_memory",
    &["container.oom"],
    |t| {
        let factor = t.f64_in("factor", 1.5, 1.000_001, 100.0);
        let max_bytes = match t.raw("max_bytes") {
            None => {
                t.error_here(format!("{} is missing required key `max_bytes`", t.what()));
                0
            }
            Some(_) => t.u64_in("max_bytes", 0, 4_194_304..(1u64 << 50)) as i64,
        };
        Kind::RaiseMemory { factor, max_bytes }
    },
    "recreate"
);
