//! One container as `/api/v1/containers` shows it ([`Entry`], `Container`
//! in `docs/api.yaml`): the view's facts and its healing state, from the
//! heal book, or before any decision, the heal rule that would act
//! ([`HealRules`] remembers it per container and ruleset). It must not ask
//! the engine; stats are added by the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use super::AppState;
use crate::containers::{Container, Status};
use crate::event::{Attributes, Event};
use crate::handlers::heal::Summary;
use crate::lock::lock;
use crate::rules::Ruleset;

/// One container as the API shows it (`Container` in `docs/api.yaml`).
#[derive(Serialize)]
pub(super) struct Entry<'a> {
    id: &'a str,
    name: &'a str,
    image: &'a str,
    state: &'static str,
    health: &'static str,
    exit_code: i64,
    started_at: Option<&'a str>,
    finished_at: Option<&'a str>,
    restart_count: i64,
    oom_kills: u64,
    last_failure: Option<FailureView>,
    heal: Heal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stats: Option<Value>,
}

#[derive(Serialize)]
struct FailureView {
    kind: &'static str,
    exit_code: Option<i64>,
    time: String,
}

/// A container's healing state.
#[derive(Serialize)]
struct Heal {
    rule: Option<String>,
    restarts_in_window: usize,
    breaker: &'static str,
    pending: Option<Pending>,
    last_action: Option<LastAction>,
}

#[derive(Serialize)]
struct Pending {
    action: &'static str,
    due: String,
}

#[derive(Serialize)]
struct LastAction {
    kind: &'static str,
    result: &'static str,
    time: String,
}

pub(super) fn entry<'a>(state: &AppState, c: &'a Container, s: &Status) -> Entry<'a> {
    let time = |t: &'a str| (!t.is_empty()).then_some(t);
    Entry {
        id: &c.id,
        name: &c.name,
        image: &c.image,
        state: c.state.status,
        health: c.state.health,
        exit_code: c.state.exit_code,
        started_at: time(&c.state.started_at),
        finished_at: time(&c.state.finished_at),
        restart_count: c.state.restart_count,
        oom_kills: s.oom_kills,
        last_failure: s.last_failure.as_ref().map(|f| FailureView {
            kind: f.kind,
            exit_code: f.exit_code,
            time: crate::clock::rfc3339_nanos(f.time_nano),
        }),
        heal: heal(state, c, s),
        stats: None,
    }
}

/// The handlers that heal.
const HEALERS: &[&str] = &["restart", "recreate", "stop", "raise_memory"];

/// A container's healing state: from the heal handlers' book once they
/// have decided about it; before that, the rule that would heal it.
fn heal(state: &AppState, c: &Container, s: &Status) -> Heal {
    let summary = state.healer.as_ref().and_then(|h| h.summary(&c.name));
    let rule = match summary.as_ref().and_then(|s| s.rule.clone()) {
        Some(r) => Some(r),
        None => state.heal_rules.of(&state.rules.borrow(), c),
    };
    let (restarts, breaker, pending) = match &summary {
        Some(s) => (s.restarts_in_window, s.breaker_open, s.pending),
        None => (0, false, None),
    };
    Heal {
        rule: rule.as_deref().map(str::to_owned),
        restarts_in_window: restarts,
        breaker: if breaker { "open" } else { "closed" },
        pending: pending.map(|(action, due)| Pending {
            action,
            due: crate::clock::rfc3339_nanos(due),
        }),
        last_action: last_action(summary.as_ref(), s).map(|(kind, result, time)| LastAction {
            kind,
            result,
            time: crate::clock::rfc3339_nanos(time),
        }),
    }
}

/// The last action on the container's name (the heal book's, which
/// survives a recreate), else on this container.
fn last_action(summary: Option<&Summary>, s: &Status) -> Option<(&'static str, &'static str, i64)> {
    summary
        .and_then(|h| h.last_action)
        .or_else(|| s.actions.back().map(|a| (a.kind, a.result, a.time_nano)))
}

/// Each container's [`heal_rule`], remembered by ID and name for the
/// rules in force (matching every rule for every container on every list
/// is most of a list's cost).
#[derive(Default)]
pub(super) struct HealRules {
    /// The ruleset they were found in (its address), and by ID: the name
    /// and the rule.
    found: Mutex<(usize, HashMap<String, Remembered>)>,
}

/// A container's name and heal rule, as found.
type Remembered = (String, Option<Arc<str>>);

impl HealRules {
    fn of(&self, rules: &Arc<Ruleset>, c: &Container) -> Option<Arc<str>> {
        let generation = Arc::as_ptr(rules) as usize;
        {
            let found = lock(&self.found);
            if found.0 == generation
                && let Some((name, rule)) = found.1.get(&c.id)
                && *name == c.name
            {
                return rule.clone();
            }
        }
        let rule = heal_rule(rules, c);
        let mut found = lock(&self.found);
        if found.0 != generation {
            *found = (generation, HashMap::new());
        }
        // Containers come and go: start over rather than grow without end.
        if found.1.len() >= MAX_REMEMBERED {
            found.1.clear();
        }
        found.1.insert(c.id.clone(), (c.name.clone(), rule.clone()));
        rule
    }
}

/// Containers whose heal rule is remembered at most.
const MAX_REMEMBERED: usize = 20_000;

/// The first heal rule a crash (exit 1) or an `unhealthy` of `c` would
/// match.
fn heal_rule(rules: &Ruleset, c: &Container) -> Option<Arc<str>> {
    if !rules
        .rules
        .iter()
        .any(|r| HEALERS.contains(&r.handler_name))
    {
        return None;
    }
    let mut attributes = Attributes::default();
    attributes.push("name", &c.name);
    attributes.push("image", &c.image);
    for (k, v) in &c.labels {
        if k != "name" && k != "image" {
            attributes.push(k, v);
        }
    }
    let mut died = attributes.clone();
    died.push("exitCode", "1");
    [
        Event::new("container", "die", c.id.clone(), died, 0),
        Event::new(
            "container",
            "health_status: unhealthy",
            c.id.clone(),
            attributes,
            0,
        ),
    ]
    .iter()
    .find_map(|e| {
        rules
            .matching(e)
            .find(|r| HEALERS.contains(&r.handler_name))
            .map(|r| r.name.clone())
    })
}
