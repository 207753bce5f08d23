//! What the heal handlers decide and do: a failure left alone or
//! suppressed, an action decided, done or failed, the breaker opened or
//! closed.
//!
//! In a dry run nothing is counted in `dockwarden_actions_total` or
//! `dockwarden_breaker_open`: no action was taken and no breaker is open.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::{debug, error, info, warn};

use super::InternalEvent;
use crate::metrics::Metrics;

/// A failure that is not one to act on (dockwarden's own doing, running
/// again, the exit code is not the rule's, already scheduled). Not counted.
pub struct NotHealing<'a> {
    pub container: &'a str,
    pub rule: &'a str,
    pub failure: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for NotHealing<'_> {
    fn emit(&self, _: &Metrics) {
        info!(container = %self.container, rule = %self.rule, failure = %self.failure, reason = self.reason, "Not healing.");
    }
}

/// A failure deliberately left alone: an operator stopped it, Docker's
/// restart policy restarts it, its breaker is open, it has no limit to
/// raise.
pub struct Suppressed<'a> {
    pub container: &'a str,
    pub rule: &'a str,
    /// The action it would have been: `restart`, `recreate`, `raise_memory`.
    pub action: &'static str,
    pub failure: &'a str,
    pub reason: &'a str,
    pub dry_run: bool,
}

impl InternalEvent for Suppressed<'_> {
    fn key(&self) -> Option<&'static str> {
        Some("dockwarden.suppressed")
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("rule", json!(self.rule)),
            ("action", json!(self.action)),
            ("failure", json!(self.failure)),
            ("reason", json!(self.reason)),
            ("dry_run", json!(self.dry_run)),
        ]
    }

    fn emit(&self, metrics: &Metrics) {
        info!(container = %self.container, rule = %self.rule, failure = %self.failure, reason = self.reason, action = self.action, "Healing suppressed.");
        if !self.dry_run {
            metrics.action(self.action, "suppressed");
        }
    }
}

/// An action decided: after `backoff` (attempt `attempt`, 1-based), or a
/// recreate now because the restarts are spent (`attempt` 0).
pub struct Decided<'a> {
    pub container: &'a str,
    pub rule: &'a str,
    pub action: &'static str,
    pub failure: &'a str,
    /// More on the failure (the health check's output), or empty.
    pub why: &'a str,
    pub attempt: u32,
    pub backoff: Duration,
    pub dry_run: bool,
}

impl InternalEvent for Decided<'_> {
    fn emit(&self, _: &Metrics) {
        let verb = if self.dry_run { "Would" } else { "Will" };
        let name = self.container;
        let what = if self.why.is_empty() {
            self.failure.to_owned()
        } else {
            format!("{} ({})", self.failure, self.why)
        };
        if self.action == "stop" {
            warn!(container = %name, rule = %self.rule, failure = %what, "{verb} stop {name} and leave it stopped: {what}.");
        } else if self.attempt == 0 {
            warn!(container = %name, rule = %self.rule, failure = %what, "{verb} {} {name}: {what}, restarts spent.", self.action.replace('_', " "));
        } else {
            info!(
                container = %name,
                rule = %self.rule,
                failure = %what,
                attempt = self.attempt,
                backoff_ms = self.backoff.as_millis() as u64,
                "{verb} {} {name}: {what}, attempt {}, backoff {:?}.",
                self.action.replace('_', " "),
                self.attempt,
                self.backoff
            );
        }
    }
}

/// The restarts are spent (and the one recreate, if any): dockwarden gives
/// up on the container until it stays up or is started by hand.
pub struct BreakerOpened<'a> {
    pub container: &'a str,
    pub rule: &'a str,
    pub failure: &'a str,
    pub max_restarts: u32,
    pub window_secs: u64,
    pub dry_run: bool,
}

impl InternalEvent for BreakerOpened<'_> {
    fn key(&self) -> Option<&'static str> {
        Some("dockwarden.breaker_open")
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("rule", json!(self.rule)),
            ("failure", json!(self.failure)),
            ("max_restarts", json!(self.max_restarts)),
            ("window_secs", json!(self.window_secs)),
            ("dry_run", json!(self.dry_run)),
        ]
    }

    fn emit(&self, metrics: &Metrics) {
        error!(
            container = %self.container,
            rule = %self.rule,
            failure = %self.failure,
            max_restarts = self.max_restarts,
            window_secs = self.window_secs,
            "{} up on the container: breaker open, no more actions until it stays up or is started by hand.",
            if self.dry_run { "Would give" } else { "Giving" }
        );
        if !self.dry_run {
            metrics.breaker_opened();
        }
    }
}

/// The breaker of a container closed: started by hand, or destroyed.
pub struct BreakerClosed<'a> {
    pub container: &'a str,
    /// `started by hand` or `destroyed`.
    pub reason: &'static str,
    pub dry_run: bool,
}

impl InternalEvent for BreakerClosed<'_> {
    fn key(&self) -> Option<&'static str> {
        Some("dockwarden.breaker_closed")
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("reason", json!(self.reason)),
            ("dry_run", json!(self.dry_run)),
        ]
    }

    fn emit(&self, metrics: &Metrics) {
        info!(container = %self.container, reason = self.reason, "Breaker closed.");
        if !self.dry_run {
            metrics.breaker_closed();
        }
    }
}

/// A `dockwarden.*` label of a container whose value cannot be used: it
/// is ignored for that key (the rule's value stands), logged and counted
/// once per container.
pub struct BadLabel<'a> {
    pub container: &'a str,
    pub label: &'static str,
    pub value: &'a str,
    pub expected: &'static str,
}

impl InternalEvent for BadLabel<'_> {
    fn emit(&self, metrics: &Metrics) {
        warn!(
            container = %self.container,
            label = self.label,
            value = %self.value,
            expected = self.expected,
            "Ignoring label {}={:?} on {}: expected {}; the rule's value is used.",
            self.label,
            self.value,
            self.container,
            self.expected
        );
        metrics.label_error(self.label);
    }
}

/// How an action that was carried out ended.
pub enum ActionResult {
    /// Done; the text says what was done.
    Ok(String),
    /// It looked again and left the container alone.
    Suppressed,
    /// The engine refused or failed: what happened, and its kind (a fixed
    /// word such as `refused` or `unanswered`; `denied`, a socket proxy's
    /// 403, is logged once per call by `denied::CallDenied` instead).
    Error { error: String, kind: &'static str },
}

/// A healing action carried out: a restart, a recreate, a memory raise.
pub struct Acted<'a> {
    pub container: &'a str,
    pub rule: &'a str,
    pub action: &'static str,
    pub failure: &'a str,
    pub attempt: u32,
    /// The rule's `max_restarts`: attempt N of this.
    pub max_restarts: u32,
    pub backoff: Duration,
    pub result: ActionResult,
    /// The failure's details as event fields (exit code, signal, health
    /// check output).
    pub why: Vec<(&'static str, Value)>,
    /// Set when it was done because another container was healed:
    /// `depends on X`.
    pub cause: Option<&'a str>,
    /// Failure event read → action call issued, backoff excluded.
    pub reaction: Duration,
    /// Failure event time → action done, backoff included.
    pub latency: Duration,
}

impl Acted<'_> {
    /// `ok`, `error` or `suppressed`.
    pub fn result_label(&self) -> &'static str {
        match self.result {
            ActionResult::Ok(_) => "ok",
            ActionResult::Suppressed => "suppressed",
            ActionResult::Error { .. } => "error",
        }
    }
}

impl InternalEvent for Acted<'_> {
    fn key(&self) -> Option<&'static str> {
        Some(match self.action {
            "recreate" => "dockwarden.recreate",
            "raise_memory" => "dockwarden.raise_memory",
            "stop" => "dockwarden.stop",
            _ => "dockwarden.restart",
        })
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut fields = vec![
            ("rule", json!(self.rule)),
            ("result", json!(self.result_label())),
            ("attempt", json!(self.attempt)),
            ("max_restarts", json!(self.max_restarts)),
            ("backoff_ms", json!(self.backoff.as_millis() as u64)),
            ("failure", json!(self.failure)),
        ];
        fields.extend(self.why.iter().cloned());
        if let Some(cause) = self.cause {
            fields.push(("cause", json!(cause)));
        }
        match &self.result {
            ActionResult::Ok(done) => fields.push(("text", json!(done))),
            ActionResult::Error { error, .. } => fields.push(("error", json!(error))),
            ActionResult::Suppressed => {}
        }
        fields
    }

    fn emit(&self, metrics: &Metrics) {
        metrics.action(self.action, self.result_label());
        match &self.result {
            ActionResult::Ok(done) => {
                if matches!(self.action, "restart" | "raise_memory") {
                    metrics.container_restarted(self.container);
                }
                metrics.healed(self.latency, self.reaction);
                if let Some(cause) = self.cause {
                    info!(container = %self.container, rule = %self.rule, cause, "{done}");
                    return;
                }
                info!(
                    container = %self.container,
                    rule = %self.rule,
                    attempt = self.attempt,
                    reaction_us = self.reaction.as_micros() as u64,
                    latency_ms = self.latency.as_millis() as u64,
                    "{done}"
                );
            }
            ActionResult::Suppressed => {}
            // Counted above; the denial itself was logged (once per call)
            // with what to allow.
            ActionResult::Error { error, kind } if *kind == "denied" => {
                debug!(container = %self.container, rule = %self.rule, action = self.action, error = %error, kind, "Healing action denied by the socket proxy.");
            }
            ActionResult::Error { error, kind } => {
                error!(container = %self.container, rule = %self.rule, action = self.action, error = %error, kind, "Healing action failed.");
            }
        }
    }
}
