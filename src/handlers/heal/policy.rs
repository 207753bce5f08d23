//! The healing policy: a heal rule's parameters, and [`decide`], the pure
//! function that turns a failure, the container's healing state and the
//! engine's facts into a decision (ignore, suppress, act after a backoff,
//! escalate, open the breaker). No I/O, no clock: time is given.

use std::time::{Duration, Instant};

use super::book::Entry;
use super::facts::Facts;
use crate::config::table::Table;

/// `[rule.with]` of a heal rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub reset_after: Duration,
    pub stop_timeout_secs: u32,
    pub then_recreate: bool,
    pub include_requested: bool,
    pub respect_restart_policy: bool,
    /// Containers' `dockwarden.*` labels may override these (the opt-out
    /// `dockwarden.heal=false` holds regardless).
    pub allow_label_overrides: bool,
}

impl Params {
    pub(super) fn read(t: &mut Table<'_, '_>, then_default: &'static str) -> Params {
        Params {
            max_restarts: t.u64_in("max_restarts", 5, 1..1001) as u32,
            window: Duration::from_secs(t.u64_in("window_secs", 600, 1..86_401)),
            backoff_initial: Duration::from_millis(t.u64_in(
                "backoff_initial_ms",
                1000,
                0..3_600_001,
            )),
            backoff_max: Duration::from_secs(t.u64_in("backoff_max_secs", 300, 0..86_401)),
            reset_after: Duration::from_secs(t.u64_in("reset_after_secs", 600, 1..86_401)),
            stop_timeout_secs: t.u64_in("stop_timeout_secs", 10, 0..3601) as u32,
            then_recreate: t.choice("then", &["recreate", "none"], then_default) == "recreate",
            include_requested: t.bool("include_requested", false),
            respect_restart_policy: t.bool("respect_restart_policy", true),
            allow_label_overrides: t.bool("allow_label_overrides", true),
        }
    }

    /// `backoff_initial * 2^attempt`, capped at `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What kind of failure an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Exit(i64),
    Oom,
    Unhealthy,
}

/// What a handler does when it acts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Restart,
    Recreate,
    /// Stop it (with its stop timeout) and leave it stopped.
    Stop,
    RaiseMemory {
        factor: f64,
        max_bytes: i64,
    },
}

impl Kind {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Kind::Restart => "restart",
            Kind::Recreate => "recreate",
            Kind::Stop => "stop",
            Kind::RaiseMemory { .. } => "raise_memory",
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not a failure to act on (our own event, running again, exit code not
    /// in the rule, no longer unhealthy, already scheduled). Not counted.
    Ignore(&'static str),
    /// A failure deliberately left alone; counted as `suppressed`.
    Suppress(String),
    /// Act after `delay`; `attempt` is 1-based.
    Act { delay: Duration, attempt: u32 },
    /// The restarts are spent: recreate once, now.
    Escalate,
    /// Give up on this container.
    OpenBreaker,
}

/// How soon after a signal sent through the API that is not a stop signal
/// an exit is taken for the signal's doing: the engine's default stop
/// timeout.
pub(super) const SIGNALLED_EXIT: Duration = Duration::from_secs(10);

/// What every action leaves alone: its own events, a container that is
/// not unhealthy (any more), and, for a crash, an operator's stop.
fn not_a_failure(
    entry: &Entry,
    p: &Params,
    failure: Failure,
    facts: &Facts,
    now: Instant,
) -> Option<Decision> {
    if entry.own(now) {
        return Some(Decision::Ignore("caused by dockwarden's own action"));
    }
    match failure {
        Failure::Unhealthy if !facts.running => Some(Decision::Ignore("it is not running")),
        Failure::Unhealthy if !facts.unhealthy => {
            Some(Decision::Ignore("it is no longer unhealthy"))
        }
        Failure::Exit(_) | Failure::Oom if entry.requested_stop && !p.include_requested => {
            Some(Decision::Suppress(
                "it was stopped or killed through the API since its last start".to_owned(),
            ))
        }
        // `docker kill -s INT` of a process that exits on it: the operator
        // ended it (the engine itself then counts it as stopped by hand,
        // and its restart policy leaves it down). A reload's HUP is not,
        // so only an exit that follows the signal closely.
        Failure::Exit(_) | Failure::Oom
            if !p.include_requested
                && entry
                    .signalled
                    .is_some_and(|t| now.saturating_duration_since(t) < SIGNALLED_EXIT) =>
        {
            Some(Decision::Suppress(format!(
                "it exited within {} s of a signal sent through the API (docker kill -s)",
                SIGNALLED_EXIT.as_secs()
            )))
        }
        _ => None,
    }
}

/// Decides what to do about `failure` and updates `entry` as if it were
/// done. Pure: time is given, the engine's view is in `facts`.
pub fn decide(
    entry: &mut Entry,
    p: &Params,
    failure: Failure,
    facts: &Facts,
    now: Instant,
) -> Decision {
    if let Some(d) = not_a_failure(entry, p, failure, facts, now) {
        return d;
    }
    let exit_like = matches!(failure, Failure::Exit(_) | Failure::Oom);
    // Before "running again": Docker's policy may already have restarted it.
    if exit_like && p.respect_restart_policy && facts.engine_restarts() {
        return Decision::Suppress(format!(
            "Docker's restart policy \"{}\" restarts it",
            facts.policy
        ));
    }
    // An OOM event may arrive while the container is still being killed.
    if matches!(failure, Failure::Exit(_)) && facts.running {
        return Decision::Ignore("it is running again");
    }
    if entry.breaker_open {
        return Decision::Suppress("its breaker is open".to_owned());
    }
    if entry.pending.is_some() {
        return Decision::Ignore("an action for it is already scheduled");
    }
    if entry
        .last_start
        .is_some_and(|t| now.saturating_duration_since(t) >= p.reset_after)
    {
        entry.restarts.clear();
        entry.attempt = 0;
        entry.escalated = false;
    }
    while entry
        .restarts
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= p.window)
    {
        entry.restarts.pop_front();
    }
    if entry.restarts.len() >= p.max_restarts as usize {
        if p.then_recreate && !entry.escalated {
            entry.escalated = true;
            return Decision::Escalate;
        }
        entry.breaker_open = true;
        return Decision::OpenBreaker;
    }
    let delay = p.backoff(entry.attempt);
    entry.attempt = entry.attempt.saturating_add(1);
    entry.restarts.push_back(now);
    Decision::Act {
        delay,
        attempt: entry.attempt,
    }
}

/// What to do about `failure` when the action is to stop the container.
/// Stopping is done once and counts no restart; Docker's restart policy is
/// no reason to leave it alone (stopping is how it is overridden), and a
/// crashed container that is down already is stopped all the same (the
/// engine answers that it was), so the action is counted and told.
pub fn decide_stop(
    entry: &mut Entry,
    p: &Params,
    failure: Failure,
    facts: &Facts,
    now: Instant,
) -> Decision {
    if let Some(d) = not_a_failure(entry, p, failure, facts, now) {
        return d;
    }
    if entry.pending.is_some() {
        return Decision::Ignore("an action for it is already scheduled");
    }
    Decision::Act {
        delay: Duration::ZERO,
        attempt: 1,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A rule's parameters for tests: 3 restarts in 60 s, 1 s doubling to 5 s.
    pub(in crate::handlers::heal) fn params() -> Params {
        Params {
            max_restarts: 3,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(1000),
            backoff_max: Duration::from_secs(5),
            reset_after: Duration::from_secs(600),
            stop_timeout_secs: 10,
            then_recreate: true,
            include_requested: false,
            respect_restart_policy: true,
            allow_label_overrides: true,
        }
    }

    fn exited(code: i64) -> Facts {
        Facts {
            id: "c".into(),
            name: "web".into(),
            exit_code: code,
            policy: "no".into(),
            ..Facts::default()
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = params();
        let d: Vec<u64> = (0..5).map(|a| p.backoff(a).as_millis() as u64).collect();
        assert_eq!(d, [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(p.backoff(40), Duration::from_secs(5));
    }

    #[test]
    fn restarts_then_recreate_then_breaker() {
        let p = params();
        let mut e = Entry::default();
        let t0 = Instant::now();
        let mut got = Vec::new();
        for i in 0..6 {
            let d = decide(
                &mut e,
                &p,
                Failure::Exit(3),
                &exited(3),
                t0 + Duration::from_secs(i),
            );
            e.pending = None;
            got.push(d);
        }
        assert_eq!(
            got,
            [
                Decision::Act {
                    delay: Duration::from_millis(1000),
                    attempt: 1
                },
                Decision::Act {
                    delay: Duration::from_millis(2000),
                    attempt: 2
                },
                Decision::Act {
                    delay: Duration::from_millis(4000),
                    attempt: 3
                },
                Decision::Escalate,
                Decision::OpenBreaker,
                Decision::Suppress("its breaker is open".into()),
            ]
        );
    }

    #[test]
    fn window_slides_and_long_uptime_resets() {
        let p = params();
        let mut e = Entry::default();
        let t0 = Instant::now();
        for i in 0..3 {
            decide(
                &mut e,
                &p,
                Failure::Exit(1),
                &exited(1),
                t0 + Duration::from_secs(i),
            );
        }
        // 61 s later the first restarts have left the window.
        let d = decide(
            &mut e,
            &p,
            Failure::Exit(1),
            &exited(1),
            t0 + Duration::from_secs(61),
        );
        assert!(matches!(d, Decision::Act { attempt: 4, .. }), "{d:?}");
        // Up for reset_after: backoff and window start over.
        e.last_start = Some(t0 + Duration::from_secs(62));
        let d = decide(
            &mut e,
            &p,
            Failure::Exit(1),
            &exited(1),
            t0 + Duration::from_secs(700),
        );
        assert_eq!(
            d,
            Decision::Act {
                delay: Duration::from_millis(1000),
                attempt: 1
            }
        );
    }

    #[test]
    fn operator_stops_and_own_actions_are_not_failures() {
        let p = params();
        let now = Instant::now();
        let mut e = Entry {
            requested_stop: true,
            ..Entry::default()
        };
        assert!(matches!(
            decide(&mut e, &p, Failure::Exit(137), &exited(137), now),
            Decision::Suppress(_)
        ));
        let p2 = Params {
            include_requested: true,
            ..params()
        };
        assert!(matches!(
            decide(&mut e, &p2, Failure::Exit(137), &exited(137), now),
            Decision::Act { .. }
        ));
        let mut e = Entry {
            own_until: Some(now + Duration::from_secs(5)),
            ..Entry::default()
        };
        assert_eq!(
            decide(&mut e, &p, Failure::Exit(143), &exited(143), now),
            Decision::Ignore("caused by dockwarden's own action")
        );
    }

    #[test]
    fn restart_policies_are_left_to_docker_but_not_for_unhealthy() {
        let p = params();
        let now = Instant::now();
        let on_failure = Facts {
            policy: "on-failure".into(),
            max_retries: 5,
            restart_count: 2,
            ..exited(3)
        };
        assert!(on_failure.engine_restarts());
        assert!(matches!(
            decide(
                &mut Entry::default(),
                &p,
                Failure::Exit(3),
                &on_failure,
                now
            ),
            Decision::Suppress(_)
        ));
        let spent = Facts {
            restart_count: 5,
            ..on_failure.clone()
        };
        assert!(!spent.engine_restarts());
        let sick = Facts {
            running: true,
            unhealthy: true,
            ..on_failure
        };
        assert!(matches!(
            decide(&mut Entry::default(), &p, Failure::Unhealthy, &sick, now),
            Decision::Act { .. }
        ));
        let recovered = Facts {
            unhealthy: false,
            ..sick
        };
        assert!(matches!(
            decide(
                &mut Entry::default(),
                &p,
                Failure::Unhealthy,
                &recovered,
                now
            ),
            Decision::Ignore(_)
        ));
        let always = Facts {
            policy: "always".into(),
            ..exited(0)
        };
        assert!(always.engine_restarts());
    }

    #[test]
    fn a_stop_goes_at_once_whatever_the_restart_policy() {
        let p = params();
        let now = Instant::now();
        let always = Facts {
            policy: "always".into(),
            running: true,
            ..exited(3)
        };
        let mut e = Entry::default();
        let act = Decision::Act {
            delay: Duration::ZERO,
            attempt: 1,
        };
        assert_eq!(decide_stop(&mut e, &p, Failure::Exit(3), &always, now), act);
        assert!(e.restarts.is_empty(), "a stop is no restart");
        e.requested_stop = true;
        assert!(matches!(
            decide_stop(&mut e, &p, Failure::Exit(3), &always, now),
            Decision::Suppress(_)
        ));
        let sick = Facts {
            running: true,
            unhealthy: true,
            ..exited(0)
        };
        assert_eq!(decide_stop(&mut e, &p, Failure::Unhealthy, &sick, now), act);
    }

    #[test]
    fn a_container_running_again_is_left_alone() {
        let running = Facts {
            running: true,
            ..exited(3)
        };
        assert_eq!(
            decide(
                &mut Entry::default(),
                &params(),
                Failure::Exit(3),
                &running,
                Instant::now()
            ),
            Decision::Ignore("it is running again")
        );
    }
}
