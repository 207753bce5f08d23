//! What the audit handlers see: an exec started (a person's or a health
//! probe's).

use serde_json::{Map, Value, json};
use tracing::debug;

use super::InternalEvent;
use crate::metrics::Metrics;

/// An exec started in a container, as `exec_audit` graded it.
pub struct ExecStarted<'a> {
    /// The container's name (its ID when it could not be inspected).
    pub container: &'a str,
    /// The `exec_start` record as written (or as it would have been).
    pub record: &'a Map<String, Value>,
    /// It is the container's own HEALTHCHECK probe.
    pub healthcheck: bool,
    /// `low`, `medium`, `high`, `critical`.
    pub severity: &'static str,
    /// Its records go to the audit log (probes do not, by default).
    pub written: bool,
}

impl InternalEvent for ExecStarted<'_> {
    /// Only a person's exec that was audited is news.
    fn key(&self) -> Option<&'static str> {
        (self.written && !self.healthcheck).then_some("dockwarden.exec")
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        let field = |k: &str| self.record.get(k).cloned().unwrap_or(Value::Null);
        vec![
            ("severity", json!(self.severity)),
            ("user", field("user")),
            ("command", field("command")),
            ("tty", field("tty")),
            ("privileged", field("privileged")),
            ("exec_id", field("exec_id")),
            ("exec_id_verified", field("exec_id_verified")),
        ]
    }

    fn emit(&self, metrics: &Metrics) {
        let kind = if self.healthcheck {
            "healthcheck"
        } else {
            "user"
        };
        metrics.exec_started(kind);
        debug!(
            container = %self.container,
            kind,
            severity = self.severity,
            written = self.written,
            "Exec started."
        );
    }
}
