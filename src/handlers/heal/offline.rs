//! Healing decided offline, for `dockwarden replay`: the same handlers and
//! the same [`decide`](super::decide), with no engine.
//!
//! An offline [`Healer`](super::Healer) differs from a live one in three
//! places only: its clock is the events' `timeNano` (so backoffs, windows
//! and resets follow the recorded stream, not the wall clock), its facts
//! come from the container view (filled from the events' attributes) and the
//! event itself instead of an inspect, each fact the inspect would have
//! confirmed named as [unverified](Verdict::unverified), and every decision
//! is written to a [`Verdict`] journal as well as logged. It must not call
//! the engine: nothing here has a client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::facts::Facts;
use crate::containers::Container;
use crate::event::Event;
use crate::lock::lock;

/// What an offline decision could not confirm, in the words the replay
/// report prints.
pub const EXIT_CODE_FROM_EVENT: &str = "exit code from the event's exitCode attribute";
pub const EXIT_CODE_FORGEABLE: &str = "exit code from an exitCode attribute a label overwrites";
pub const RESTART_POLICY: &str = "restart policy (assumed none)";
pub const RUNNING: &str = "running state from the events";
pub const CHECK_OUTPUT: &str = "health check output";
pub const MEMORY_LIMIT: &str = "memory limit";
pub const NOT_SEEN_CREATED: &str = "container not seen created or started";
pub const STARTED_BY: &str = "who started it (the engine's RestartCount)";

/// What a heal handler (or its observer) decided about one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The rule that decided (for a breaker closed, the rule that decided
    /// last about the container; None if none did).
    pub rule: Option<Arc<str>>,
    pub container: String,
    pub kind: VerdictKind,
    /// `restart`, `recreate`, `stop`, `raise_memory`: what was (or would
    /// have been) done.
    pub action: Option<&'static str>,
    /// `exit 3`, `OOM kill`, `unhealthy`; empty for a breaker closed.
    pub failure: String,
    /// 1-based; 0 for a recreate after the restarts.
    pub attempt: u32,
    pub backoff: Duration,
    /// Why it was not healed, or why the breaker closed.
    pub reason: String,
    /// What an engine call would have confirmed.
    pub unverified: Vec<&'static str>,
}

/// The kinds of [`Verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictKind {
    /// Act after a backoff (`attempt` ≥ 1), or stop.
    Act,
    /// Recreate now: the restarts are spent.
    Escalate,
    /// Give up: the breaker opens.
    BreakerOpen,
    /// The breaker closed (started by hand, destroyed).
    BreakerClosed,
    /// A failure deliberately left alone (counted as suppressed live).
    Suppressed,
    /// Not a failure to act on.
    NotHealing,
}

impl VerdictKind {
    /// A fixed word for the replay's JSON.
    pub fn label(self) -> &'static str {
        match self {
            VerdictKind::Act => "act",
            VerdictKind::Escalate => "escalate",
            VerdictKind::BreakerOpen => "breaker_open",
            VerdictKind::BreakerClosed => "breaker_closed",
            VerdictKind::Suppressed => "suppressed",
            VerdictKind::NotHealing => "not_healing",
        }
    }
}

/// The offline part of a [`Healer`](super::Healer).
#[derive(Debug)]
pub(super) struct Offline {
    /// The instant the first event's time stands for.
    base: Instant,
    /// The first event's `timeNano`.
    origin: Mutex<Option<i64>>,
    journal: Mutex<Vec<Verdict>>,
}

impl Offline {
    pub(super) fn new() -> Self {
        Offline {
            base: Instant::now(),
            origin: Mutex::new(None),
            journal: Mutex::new(Vec::new()),
        }
    }

    /// The event's time as an `Instant` on the book's monotonic scale: the
    /// first event seen is `base`, later ones as many nanoseconds after it
    /// (an earlier one is taken as the first).
    pub(super) fn now(&self, event: &Event) -> Instant {
        let origin = *lock(&self.origin).get_or_insert(event.time_nano);
        let since = event.time_nano.saturating_sub(origin).max(0) as u64;
        self.base
            .checked_add(Duration::from_nanos(since))
            .unwrap_or(self.base)
    }

    pub(super) fn note(&self, verdict: Verdict) {
        lock(&self.journal).push(verdict);
    }

    pub(super) fn take(&self) -> Vec<Verdict> {
        std::mem::take(&mut *lock(&self.journal))
    }
}

/// The facts of a failure event from the event and the view alone, and
/// what an inspect would have confirmed. `oom_seen`: an `oom` came since
/// the container's last start.
pub(super) fn facts(
    event: &Event,
    known: Option<&Container>,
    oom_seen: bool,
) -> (Facts, Vec<&'static str>) {
    let mut unverified = Vec::new();
    let fallback;
    let c = match known {
        Some(c) => c,
        None => {
            unverified.push(NOT_SEEN_CREATED);
            fallback = Container {
                id: event.actor_id.clone(),
                name: event.name().unwrap_or(&event.actor_id).to_owned(),
                ..Container::default()
            };
            &fallback
        }
    };
    let mut facts = Facts::from_container(c);
    facts.id = event.actor_id.clone();
    // The view from events knows no restart policy: an inspect does.
    if c.restart_policy.is_empty() {
        facts.policy = "no".to_owned();
        unverified.push(RESTART_POLICY);
    }
    match &*event.key {
        "container.die" => {
            facts.running = false;
            facts.oom_killed = oom_seen;
            facts.exit_code = event.exit_code().unwrap_or(0);
            unverified.push(if c.forgeable.exit_code {
                EXIT_CODE_FORGEABLE
            } else {
                EXIT_CODE_FROM_EVENT
            });
        }
        "container.oom" => {
            unverified.push(RUNNING);
            if facts.memory == 0 {
                // Unknown, not "no limit": raise_memory decides as if
                // there were one.
                facts.memory = -1;
                unverified.push(MEMORY_LIMIT);
            }
        }
        "container.health_status" => {
            facts.unhealthy = event.health_status() == Some("unhealthy");
            unverified.push(RUNNING);
            unverified.push(CHECK_OUTPUT);
        }
        _ => {}
    }
    (facts, unverified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_container_event as event;

    #[test]
    fn the_clock_is_the_events_time() {
        let o = Offline::new();
        let t0 = o.now(&event("die", &[], 5_000_000_000));
        let t1 = o.now(&event("die", &[], 7_500_000_000));
        assert_eq!(t1 - t0, Duration::from_millis(2500));
        // Before the first event: the first event's instant.
        assert_eq!(o.now(&event("die", &[], 1)), t0);
    }

    #[test]
    fn a_die_is_decided_from_its_attribute_and_says_so() {
        let known = Container {
            id: "c1".into(),
            name: "web-1".into(),
            ..Container::default()
        };
        let die = event("die", &[("exitCode", "3"), ("name", "web-1")], 1);
        let (f, unverified) = facts(&die, Some(&known), false);
        assert_eq!(
            (f.exit_code, f.running, f.policy.as_str()),
            (3, false, "no")
        );
        assert_eq!(unverified, [RESTART_POLICY, EXIT_CODE_FROM_EVENT]);
        // A label named exitCode overwrites the attribute: said so.
        let forged = Container {
            forgeable: crate::containers::Forgeable {
                exit_code: true,
                ..Default::default()
            },
            ..known.clone()
        };
        let (_, unverified) = facts(&die, Some(&forged), false);
        assert_eq!(unverified, [RESTART_POLICY, EXIT_CODE_FORGEABLE]);
        let (f, unverified) = facts(&die, None, true);
        assert!(f.oom_killed);
        assert_eq!(f.name, "web-1");
        assert_eq!(unverified[0], NOT_SEEN_CREATED);
        let sick = event("health_status: unhealthy", &[], 1);
        let running = Container {
            state: crate::containers::State {
                running: true,
                ..Default::default()
            },
            ..known
        };
        let (f, unverified) = facts(&sick, Some(&running), false);
        assert!(f.unhealthy && f.running);
        assert!(unverified.contains(&CHECK_OUTPUT));
    }
}
