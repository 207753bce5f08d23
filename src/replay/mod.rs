//! `dockwarden replay`: a recorded event stream through a rules file,
//! offline, as `promtool test rules` does for alerts.
//!
//! The rules are loaded and compiled as `run` loads them, the events decoded
//! by the stream reader's own decoder (`input`), and each event goes, in
//! order, through what the dispatcher does with it: the container view
//! (`view`: filled from the events' attributes instead of inspects), the
//! handler families' observers, then every matching rule's handler in file
//! order (`decide`), then dockwarden's own `dockwarden.*` events the
//! decisions made, through the same rules. Every handler is in dry run and
//! decides from the events alone, on the events' clock (`timeNano`).
//!
//! **No engine call, structurally:** the context's [`DockerHandle`] is one
//! no source ever connects, and nothing here builds a client, so a handler
//! that would ask the engine finds none; what the engine would have
//! confirmed is marked unverified. Nothing is sent, nothing written.
//!
//! It owns the order of one event's handling offline and the counts; the
//! wording is `report`'s, the decisions the handlers'.

mod decide;
mod input;
mod report;
mod view;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use report::{Decision, Problem, Report, RuleReport, Totals};

use crate::audit::AuditHandle;
use crate::docker::DockerHandle;
use crate::event::Event;
use crate::handlers::{Ctx, Registry};
use crate::internal_events::OwnEvents;
use crate::lock::lock;
use crate::metrics::Metrics;
use crate::notify::NotifyHandle;
use crate::rules::{Config, Diagnostics, Ruleset};
use decide::{Deciders, from_verdict};

/// What `dockwarden replay` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Inputs in order; `-` is stdin.
    pub inputs: Vec<PathBuf>,
    pub rules_path: PathBuf,
}

/// Why a replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The rules file is bad (exit 2, as `check`).
    #[error("{0}")]
    Rules(Diagnostics),
    #[error("dockwarden replay: cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl ReplayError {
    /// 2 for a bad rules file (as `check`), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::Rules(_) => 2,
            ReplayError::Runtime(_) => 1,
        }
    }
}

/// How many captured audit records may wait between two events.
const CAPTURE_CAPACITY: usize = 1024;

/// dockwarden's own events, held to be dispatched after the event that
/// made them.
#[derive(Default)]
struct Held(Mutex<VecDeque<Event>>);

impl OwnEvents for Held {
    fn publish(&self, event: Event) {
        lock(&self.0).push_back(event);
    }
}

/// Replays `opts.inputs` through `opts.rules_path`. Problems with the
/// inputs are in the report; only a bad rules file is an error.
pub fn run(opts: &Options) -> Result<Report, ReplayError> {
    let registry = Registry::offline();
    // Read once: the handlers' parameters come from the text that loaded.
    let file = opts.rules_path.display().to_string();
    let source = std::fs::read_to_string(&opts.rules_path).map_err(|e| {
        ReplayError::Rules(Diagnostics::whole_file(
            &file,
            format!("cannot read rules file: {e}"),
        ))
    })?;
    let config = Config::load_str(&file, &source, &registry).map_err(ReplayError::Rules)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReplayError::Runtime)?;
    let mut replayer = Replayer::new(&config, &registry, &source);
    replayer.report.rules_file = file;
    // The inputs' counts here, the decisions' in the replayer's report.
    let mut totals = Totals::default();
    let mut problems = Vec::new();
    input::read_all(&opts.inputs, &mut totals, &mut problems, |event| {
        runtime.block_on(replayer.feed(event));
    });
    let mut report = replayer.finish();
    totals.own_events = report.totals.own_events;
    totals.matched_events = report.totals.matched_events;
    totals.matches = report.totals.matches;
    totals.decisions = report.totals.decisions;
    report.totals = totals;
    report.problems = problems;
    Ok(report)
}

/// One replay's state: the rules, the offline context, what was found.
struct Replayer {
    rules: Arc<Ruleset>,
    ctx: Ctx,
    held: Arc<Held>,
    deciders: Deciders,
    /// The first event's time: decisions say how long after it they came.
    origin: Option<i64>,
    report: Report,
}

impl Replayer {
    fn new(config: &Config, registry: &Registry, source: &str) -> Self {
        let metrics = Arc::new(Metrics::new());
        let held = Arc::new(Held::default());
        let (audit, captured) = AuditHandle::capturing(metrics.clone(), CAPTURE_CAPACITY);
        let ctx = Ctx {
            dry_run: true,
            // Never connected: no source runs, so no handler finds an engine.
            docker: DockerHandle::default(),
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            audit,
            containers: Arc::default(),
            own: held.clone(),
            notify: NotifyHandle::disabled(),
        };
        let rules = config.rules.clone();
        let report = Report {
            rules: rules
                .rules
                .iter()
                .map(|r| RuleReport {
                    name: r.name.to_string(),
                    handler: r.handler_name.to_owned(),
                    ..RuleReport::default()
                })
                .collect(),
            ..Report::default()
        };
        Replayer {
            deciders: Deciders::new(decide::rule_params(source), registry.healer(), captured),
            rules,
            ctx,
            held,
            origin: None,
            report,
        }
    }

    /// One engine event, then the own events it caused, each handled as
    /// the dispatcher handles it.
    async fn feed(&mut self, event: Event) {
        let mut next = Some(Arc::new(event));
        while let Some(event) = next {
            self.handle(&event).await;
            next = lock(&self.held.0).pop_front().map(Arc::new);
        }
    }

    async fn handle(&mut self, event: &Arc<Event>) {
        let origin = *self.origin.get_or_insert(event.time_nano);
        if event.synthetic {
            self.report.totals.own_events += 1;
        }
        let rules = self.rules.clone();
        // The view first, then the observers: the dispatcher's order.
        view::observe(
            &self.ctx.containers,
            event,
            &self.ctx.docker,
            &self.ctx.tasks,
        );
        if rules.observed(event) {
            for observer in rules.observers.iter().filter(|o| o.wants(event)) {
                observer.observe(&self.ctx, event);
            }
            for verdict in self.deciders.observed() {
                // Told under the rule that last decided about the container.
                let rule = verdict.rule.as_deref().unwrap_or("").to_owned();
                let handler = rules
                    .rules
                    .iter()
                    .find(|r| *r.name == *rule)
                    .map_or("heal", |r| r.handler_name);
                let mut d = from_verdict(verdict);
                d.handler = handler.to_owned();
                d.rule = rule;
                self.push(d, event, origin);
            }
        }
        let mut matched = false;
        for (i, rule) in rules.rules.iter().enumerate() {
            if !rule.matches(event) {
                continue;
            }
            matched = true;
            self.report.totals.matches += 1;
            if let Some(r) = self.report.rules.get_mut(i) {
                r.matched += 1;
                *r.keys.entry(event.key.to_string()).or_default() += 1;
            }
            for mut d in self.deciders.decide(&self.ctx, rule, event).await {
                d.handler = rule.handler_name.to_owned();
                d.rule = rule.name.to_string();
                self.push(d, event, origin);
            }
        }
        if matched {
            self.report.totals.matched_events += 1;
        }
    }

    fn push(&mut self, mut d: Decision, event: &Event, origin: i64) {
        d.event = event.key.to_string();
        d.time = crate::clock::rfc3339_nanos(event.time_nano);
        d.offset_ms = event.time_nano.saturating_sub(origin) / 1_000_000;
        self.report.totals.decisions += 1;
        self.report.decisions.push(d);
    }

    fn finish(self) -> Report {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
[[rule]]
name = "heal"
on = "container.die"
handler = "restart"
[rule.match]
labels = { "dockwarden.heal" = "true" }
[rule.with]
reset_after_secs = 30
[[rule]]
name = "more-memory"
on = "container.oom"
handler = "raise_memory"
[rule.with]
max_bytes = 1073741824
"#;

    fn replayer() -> Replayer {
        let registry = Registry::offline();
        let config = Config::load_str("rules.toml", RULES, &registry).expect("valid rules");
        Replayer::new(&config, &registry, RULES)
    }

    fn event(action: &str, exit: Option<&str>, secs: i64) -> Event {
        let mut pairs = vec![("dockwarden.heal", "true"), ("name", "web")];
        if let Some(code) = exit {
            pairs.push(("exitCode", code));
        }
        let attrs = pairs.into_iter().collect();
        Event::new(
            "container",
            action,
            "c1".into(),
            attrs,
            secs * 1_000_000_000,
        )
    }

    /// Up 96 s of recorded time before its third crash: `reset_after`
    /// (30 s) has passed on the events' clock, whatever the wall clock did.
    #[tokio::test]
    async fn backoff_resets_on_the_events_clock() {
        let mut r = replayer();
        for (action, exit, t) in [
            ("start", None, 0),
            ("die", Some("3"), 1),
            ("start", None, 2),
            ("die", Some("3"), 3),
            ("start", None, 4),
            ("die", Some("3"), 100),
        ] {
            r.feed(event(action, exit, t)).await;
        }
        let report = r.finish();
        let texts: Vec<&str> = report.decisions.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "would restart web: exit 3, attempt 1, backoff 1s",
                "would restart web: exit 3, attempt 2, backoff 2s",
                "would restart web: exit 3, attempt 1, backoff 1s",
            ]
        );
        let offsets: Vec<i64> = report.decisions.iter().map(|d| d.offset_ms).collect();
        assert_eq!(offsets, [1000, 3000, 100_000]);
        assert_eq!(report.rules[0].matched, 3);
    }

    /// An OOM kill of a container first seen then: decided as if it had a
    /// limit to raise, and the facts no event carries are named.
    #[tokio::test]
    async fn an_oom_of_a_container_never_seen_started_is_decided_and_flagged() {
        let mut r = replayer();
        r.feed(event("oom", None, 10)).await;
        r.feed(event("die", Some("137"), 11)).await;
        let report = r.finish();
        let got: Vec<(&str, &str)> = report
            .decisions
            .iter()
            .map(|d| (d.handler.as_str(), d.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "raise_memory",
                    "would raise memory web: OOM kill, attempt 1, backoff 1s"
                ),
                // The oom seen since its start makes the die an OOM kill.
                (
                    "restart",
                    "would restart web: OOM kill, attempt 2, backoff 2s"
                ),
            ]
        );
        let first = &report.decisions[0].unverified;
        for fact in ["restart policy", "running state", "memory limit"] {
            assert!(first.iter().any(|u| u.contains(fact)), "{fact}: {first:?}");
        }
        assert_eq!(report.decisions[1].details["failure"], "OOM kill");
    }
}
