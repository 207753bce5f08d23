//! What the audit handlers see (an exec started, a person's or a health
//! probe's) and what befalls the audit writer (a failed write or fsync, a
//! record dropped or not encodable).

use serde_json::{Map, Value, json};
use tracing::{debug, error, warn};

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

/// The audit log could not be written: records wait in the buffer and the
/// write is retried every second. Logged once per failing spell, counted
/// every time.
pub struct AuditWriteFailed<'a> {
    pub path: &'a std::path::Path,
    pub error: &'a std::io::Error,
    pub buffered: usize,
    /// Already failing: count, don't log again.
    pub repeat: bool,
}

impl InternalEvent for AuditWriteFailed<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.audit_write_error();
        if !self.repeat {
            error!(
                path = %self.path.display(),
                error = %self.error,
                buffered = self.buffered,
                "Cannot write the audit log; records are buffered and retried every second."
            );
        }
    }
}

/// An fsync of the audit log failed.
pub struct AuditSyncFailed<'a> {
    pub path: &'a std::path::Path,
    pub error: &'a std::io::Error,
}

impl InternalEvent for AuditSyncFailed<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.audit_write_error();
        error!(path = %self.path.display(), error = %self.error, "Cannot fsync the audit log.");
    }
}

/// A record dropped: the writer's buffer (`buffer`) or the queue to the
/// writer (`queue`) was full.
pub struct AuditRecordDropped {
    /// `buffer` or `queue`.
    pub full: &'static str,
    /// The log is known to be failing already (its error was logged).
    pub quiet: bool,
}

impl InternalEvent for AuditRecordDropped {
    fn emit(&self, metrics: &Metrics) {
        metrics.audit_dropped();
        if self.full == "buffer" {
            metrics.audit_buffered(-1);
        }
        if !self.quiet {
            warn!("Audit {} full: record dropped.", self.full);
        }
    }
}

/// A record that cannot be encoded is not written; the chain goes on with
/// the next.
pub struct AuditRecordUnencodable<'a> {
    pub error: &'a crate::json::EncodeError,
}

impl InternalEvent for AuditRecordUnencodable<'_> {
    fn emit(&self, metrics: &Metrics) {
        metrics.audit_buffered(-1);
        metrics.encode_error(self.error.what);
        error!(what = self.error.what, error = %self.error, "Audit record not written: it cannot be encoded.");
    }
}
