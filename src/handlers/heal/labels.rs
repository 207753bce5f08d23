//! Per-container overrides of a heal rule, read from the container's
//! `dockwarden.*` labels: the opt-out (`dockwarden.heal=false`), the action
//! (`dockwarden.action`) and the `[rule.with]` parameters. A bad value is
//! reported as a [`LabelError`] and ignored for that key alone; the rule's
//! value stands. Pure: what to do with the errors (log once, count) is the
//! handler's business.

use std::collections::HashMap;
use std::time::Duration;

use super::policy::Params;
pub use crate::config::truthy;

/// `dockwarden.heal`: `false` opts the container out of every heal rule.
pub const HEAL: &str = "dockwarden.heal";
/// `dockwarden.action`: `restart`, `recreate`, `stop` or `none`.
pub const ACTION: &str = "dockwarden.action";
/// `dockwarden.depends_on`: names of containers whose healing restarts this one.
pub const DEPENDS_ON: &str = "dockwarden.depends_on";

/// What `dockwarden.action` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelAction {
    Restart,
    Recreate,
    Stop,
    None,
}

/// The overrides a container's labels ask for (None: the rule's value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `dockwarden.heal`; `Some(false)` opts out.
    pub heal: Option<bool>,
    pub action: Option<LabelAction>,
    max_restarts: Option<u32>,
    window: Option<Duration>,
    backoff_initial: Option<Duration>,
    backoff_max: Option<Duration>,
    reset_after: Option<Duration>,
    stop_timeout_secs: Option<u32>,
    then_recreate: Option<bool>,
}

/// A label whose value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    pub label: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// The numeric labels: name, bounds (inclusive), what a good value is.
const NUMBERS: [(&str, u64, u64, &str); 6] = [
    (
        "dockwarden.max_restarts",
        1,
        1000,
        "a whole number from 1 to 1000",
    ),
    (
        "dockwarden.window_secs",
        1,
        86_400,
        "seconds, a whole number from 1 to 86400",
    ),
    (
        "dockwarden.backoff_initial_ms",
        0,
        3_600_000,
        "milliseconds, a whole number from 0 to 3600000",
    ),
    (
        "dockwarden.backoff_max_secs",
        0,
        86_400,
        "seconds, a whole number from 0 to 86400",
    ),
    (
        "dockwarden.reset_after_secs",
        1,
        86_400,
        "seconds, a whole number from 1 to 86400",
    ),
    (
        "dockwarden.stop_timeout_secs",
        0,
        3600,
        "seconds, a whole number from 0 to 3600",
    ),
];

impl Overrides {
    /// Reads the `dockwarden.*` labels this module knows; the others are
    /// left alone (other handlers and rules read them).
    pub fn read(labels: &HashMap<String, String>) -> (Overrides, Vec<LabelError>) {
        let mut o = Overrides::default();
        let mut errors = Vec::new();
        let mut bad = |label: &'static str, value: &str, expected: &'static str| {
            errors.push(LabelError {
                label,
                value: value.to_owned(),
                expected,
            });
        };
        if let Some(v) = labels.get(HEAL) {
            o.heal = truthy(v);
            if o.heal.is_none() {
                bad(HEAL, v, "true or false (also yes/no, 1/0, any case)");
            }
        }
        if let Some(v) = labels.get(ACTION) {
            o.action = match v.trim().to_ascii_lowercase().as_str() {
                "restart" => Some(LabelAction::Restart),
                "recreate" => Some(LabelAction::Recreate),
                "stop" => Some(LabelAction::Stop),
                "none" => Some(LabelAction::None),
                _ => {
                    bad(ACTION, v, "restart, recreate, stop or none");
                    None
                }
            };
        }
        if let Some(v) = labels.get("dockwarden.then") {
            o.then_recreate = match v.trim().to_ascii_lowercase().as_str() {
                "recreate" => Some(true),
                "none" => Some(false),
                _ => {
                    bad("dockwarden.then", v, "recreate or none");
                    None
                }
            };
        }
        for (label, min, max, expected) in NUMBERS {
            let Some(v) = labels.get(label) else { continue };
            let Some(n) = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
            else {
                bad(label, v, expected);
                continue;
            };
            match label {
                "dockwarden.max_restarts" => o.max_restarts = Some(n as u32),
                "dockwarden.window_secs" => o.window = Some(Duration::from_secs(n)),
                "dockwarden.backoff_initial_ms" => {
                    o.backoff_initial = Some(Duration::from_millis(n));
                }
                "dockwarden.backoff_max_secs" => o.backoff_max = Some(Duration::from_secs(n)),
                "dockwarden.reset_after_secs" => o.reset_after = Some(Duration::from_secs(n)),
                _ => o.stop_timeout_secs = Some(n as u32),
            }
        }
        (o, errors)
    }

    /// `dockwarden.stop_timeout_secs`, if good.
    pub fn stop_timeout(&self) -> Option<u32> {
        self.stop_timeout_secs
    }

    /// `params` with these overrides applied.
    pub fn apply(&self, params: &Params) -> Params {
        Params {
            max_restarts: self.max_restarts.unwrap_or(params.max_restarts),
            window: self.window.unwrap_or(params.window),
            backoff_initial: self.backoff_initial.unwrap_or(params.backoff_initial),
            backoff_max: self.backoff_max.unwrap_or(params.backoff_max),
            reset_after: self.reset_after.unwrap_or(params.reset_after),
            stop_timeout_secs: self.stop_timeout_secs.unwrap_or(params.stop_timeout_secs),
            then_recreate: self.then_recreate.unwrap_or(params.then_recreate),
            ..params.clone()
        }
    }
}

/// The names in a `dockwarden.depends_on` value (`a, b`), without blanks,
/// a leading `/` or duplicates, in the order given.
pub fn depends_on(value: &str) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for n in value.split(',').map(|n| n.trim().trim_start_matches('/')) {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn booleans_in_any_case() {
        for v in ["false", "False", "FALSE", " no ", "No", "0"] {
            assert_eq!(truthy(v), Some(false), "{v}");
        }
        for v in ["true", "True", "yes", "YES", "1"] {
            assert_eq!(truthy(v), Some(true), "{v}");
        }
        for v in ["", "off", "nope", "2", "tru"] {
            assert_eq!(truthy(v), None, "{v}");
        }
    }

    #[test]
    fn good_values_override_and_bad_ones_are_reported_alone() {
        let (o, errors) = Overrides::read(&labels(&[
            ("dockwarden.heal", "True"),
            ("dockwarden.action", "Stop"),
            ("dockwarden.max_restarts", "1"),
            ("dockwarden.window_secs", "abc"),
            ("dockwarden.stop_timeout_secs", "75"),
            ("dockwarden.backoff_initial_ms", "0"),
            ("dockwarden.then", "none"),
            ("dockwarden.reset_after_secs", "0"),
            ("team", "x"),
        ]));
        assert_eq!(o.heal, Some(true));
        assert_eq!(o.action, Some(LabelAction::Stop));
        let rule = super::super::policy::tests::params();
        let p = o.apply(&rule);
        assert_eq!(p.max_restarts, 1);
        assert_eq!(p.window, rule.window, "a bad value leaves the rule's");
        assert_eq!(p.stop_timeout_secs, 75);
        assert_eq!(p.backoff_initial, Duration::ZERO);
        assert!(!p.then_recreate);
        assert_eq!(p.reset_after, rule.reset_after);
        let mut bad: Vec<_> = errors.iter().map(|e| (e.label, e.value.as_str())).collect();
        bad.sort();
        assert_eq!(
            bad,
            [
                ("dockwarden.reset_after_secs", "0"),
                ("dockwarden.window_secs", "abc")
            ]
        );
        let (o, errors) = Overrides::read(&labels(&[("dockwarden.heal", "maybe")]));
        assert_eq!(o.heal, None);
        assert_eq!(
            errors[0].expected,
            "true or false (also yes/no, 1/0, any case)"
        );
    }

    #[test]
    fn depends_on_lists_names_once() {
        assert_eq!(depends_on(" a, /b ,a,,c "), ["a", "b", "c"]);
        assert!(depends_on(" , ").is_empty());
    }
}
