//! The records of `exec_audit`: the fields of an exec's `exec_start` and
//! `exec_end` records from the engine's view of the exec and its container
//! (or the event, when nothing could be verified), the severity ladder, and
//! [`submit`], the one place a record is built and handed to the audit log.
//! No engine calls, no state.

use std::borrow::Cow;

use bollard::models::ExecInspectResponse;
use serde_json::Value;

use super::Open;
use crate::audit::{AuditHandle, Record, Severity};
use crate::clock::rfc3339_nanos;
use crate::containers::Container;
use crate::event::Event;

/// The argv of an exec, as the engine ran it.
pub(super) fn argv(exec: &ExecInspectResponse) -> Vec<String> {
    let Some(pc) = exec.process_config.as_ref() else {
        return Vec::new();
    };
    pc.entrypoint
        .iter()
        .chain(pc.arguments.iter().flatten())
        .cloned()
        .collect()
}

/// The event's action text is the argv joined by spaces.
pub(super) fn same_command(argv: &[String], detail: Option<&str>) -> bool {
    detail.is_some_and(|d| argv.join(" ").trim() == d.trim())
}

/// Whether `cmd` (a path or a name) is an interactive shell.
pub fn is_shell(cmd: &str) -> bool {
    let base = cmd.rsplit('/').next().unwrap_or(cmd);
    matches!(
        base,
        "sh" | "bash" | "ash" | "dash" | "zsh" | "ksh" | "mksh" | "fish" | "csh" | "tcsh"
    )
}

pub(super) fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or(user);
    name == "root" || name == "0"
}

/// `critical` privileged; `high` interactive shell; `medium` root; `low`.
pub(super) fn severity(
    privileged: Option<bool>,
    tty: Option<bool>,
    argv: &[String],
    user: &str,
) -> Severity {
    let shell = argv.first().is_some_and(|c| is_shell(c));
    match (privileged, tty) {
        (Some(true), _) => Severity::Critical,
        (_, Some(true)) if shell => Severity::High,
        // Unverified: assume the worst the command allows short of critical.
        (None, _) if shell => Severity::High,
        (None, _) => Severity::Medium,
        _ if is_root(user) => Severity::Medium,
        _ => Severity::Low,
    }
}

/// What an exec is, from the engine's view of it (if verified) and of its
/// container, else from the event: enough to grade it and to tell a health
/// probe, before any record is built (probes are most execs, and by
/// default no record of theirs is written).
pub(crate) struct Facts<'a> {
    exec: Option<&'a ExecInspectResponse>,
    container: Option<&'a Container>,
    argv: Vec<String>,
    user: String,
    privileged: Option<bool>,
    tty: Option<bool>,
    pub(crate) healthcheck: bool,
    pub(crate) severity: Severity,
}

impl<'a> Facts<'a> {
    pub(crate) fn new(
        exec: Option<&'a ExecInspectResponse>,
        container: Option<&'a Container>,
        event: &Event,
    ) -> Facts<'a> {
        let (argv, user, privileged, tty) = match exec {
            Some(e) => {
                let pc = e.process_config.as_ref();
                (
                    argv(e),
                    pc.and_then(|p| p.user.clone()).unwrap_or_default(),
                    pc.and_then(|p| p.privileged),
                    pc.and_then(|p| p.tty),
                )
            }
            None => (
                event
                    .detail
                    .as_deref()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                String::new(),
                None,
                None,
            ),
        };
        let container_user = container.map_or("", |c| c.user.as_str());
        let effective_user = [user.as_str(), container_user]
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or("root")
            .to_owned();
        let healthcheck = exec.is_some()
            && container.and_then(|c| c.probe.as_ref()) == Some(&argv)
            && (user.is_empty() || user == container_user)
            && privileged != Some(true)
            && tty != Some(true);
        let severity = severity(privileged, tty, &argv, &effective_user);
        Facts {
            exec,
            container,
            argv,
            user: effective_user,
            privileged,
            tty,
            healthcheck,
            severity,
        }
    }

    /// The fields of the exec's records.
    pub(crate) fn record(self, event: &Event, claimed: Option<&str>) -> Record {
        let Facts {
            exec, container, ..
        } = self;
        let verified = exec.is_some();
        let exec_id = exec.and_then(|e| e.id.clone());
        let mut r = Record::new();
        r.insert("ts".into(), rfc3339_nanos(event.time_nano).into());
        r.insert("exec_id".into(), exec_id.map_or(Value::Null, Value::from));
        r.insert("exec_id_verified".into(), verified.into());
        if !verified && let Some(c) = claimed {
            r.insert("claimed_exec_id".into(), c.into());
        }
        r.insert("container_id".into(), event.actor_id.clone().into());
        // The engine's view of the container, else what the event says.
        let known =
            |seen: Option<&str>, said: Option<&str>| seen.or(said).map_or(Value::Null, Value::from);
        r.insert(
            "container_name".into(),
            known(container.map(|c| c.name.as_str()), event.name()),
        );
        r.insert(
            "image".into(),
            known(container.map(|c| c.image.as_str()), event.image()),
        );
        r.insert("user".into(), self.user.into());
        r.insert(
            "privileged".into(),
            self.privileged.map_or(Value::Null, Value::from),
        );
        r.insert("tty".into(), self.tty.map_or(Value::Null, Value::from));
        r.insert("command".into(), self.argv.into());
        r.insert("healthcheck".into(), self.healthcheck.into());
        r.insert("enriched".into(), (verified && container.is_some()).into());
        r
    }
}

/// The fields of an exec's records (see [`Facts`]), with whether it is a
/// health probe and its severity.
pub(crate) fn exec_fields(
    exec: Option<&ExecInspectResponse>,
    container: Option<&Container>,
    event: &Event,
    claimed: Option<&str>,
) -> (Record, bool, Severity) {
    let facts = Facts::new(exec, container, event);
    let (healthcheck, severity) = (facts.healthcheck, facts.severity);
    (facts.record(event, claimed), healthcheck, severity)
}

/// Which of an exec's two records.
pub(super) enum Moment {
    /// `exec_start`, at the exec's start.
    Start,
    /// `exec_end`, at `at_nano`, with the exit code when known.
    End {
        at_nano: i64,
        exit_code: Option<i64>,
    },
}

/// Builds the `exec_start` or `exec_end` record of an exec from its fields
/// and submits it with its severity, unless its records are not written (as
/// for health probes). The one place `exec_audit` submits a record. An exec
/// at its start is kept (its fields are copied into the record); at its end
/// it is given up, and its fields become the record.
pub(super) fn submit(audit: &AuditHandle, open: Cow<'_, Open>, moment: Moment) {
    if !open.written {
        return;
    }
    let (severity, start_nano) = (open.severity, open.start_nano);
    let mut r = match open {
        Cow::Borrowed(open) => open.fields.clone(),
        Cow::Owned(open) => open.fields,
    };
    match moment {
        Moment::Start => {
            r.insert("kind".into(), "exec_start".into());
        }
        Moment::End { at_nano, exit_code } => {
            r.insert("kind".into(), "exec_end".into());
            r.insert("ts".into(), rfc3339_nanos(at_nano).into());
            r.insert(
                "exit_code".into(),
                exit_code.map_or(Value::Null, Value::from),
            );
            r.insert(
                "duration_ms".into(),
                if start_nano > 0 {
                    Value::from((at_nano - start_nano).max(0) / 1_000_000)
                } else {
                    Value::Null
                },
            );
        }
    }
    audit.submit(r, severity);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn severity_ladder() {
        use Severity::*;
        assert_eq!(
            severity(Some(true), Some(false), &s(&["true"]), "1000"),
            Critical
        );
        assert_eq!(
            severity(Some(false), Some(true), &s(&["/bin/bash"]), "1000"),
            High
        );
        assert_eq!(severity(Some(false), Some(true), &s(&["top"]), "1000"), Low);
        assert_eq!(
            severity(Some(false), Some(false), &s(&["sh", "-c", "x"]), "root"),
            Medium
        );
        assert_eq!(
            severity(Some(false), Some(false), &s(&["true"]), "0:0"),
            Medium
        );
        assert_eq!(
            severity(Some(false), Some(false), &s(&["true"]), "1000"),
            Low
        );
        assert_eq!(severity(None, None, &s(&["sh"]), "1000"), High);
        assert_eq!(severity(None, None, &s(&["true"]), "1000"), Medium);
    }

    #[test]
    fn command_matching_is_on_the_joined_argv() {
        assert!(same_command(
            &s(&["sh", "-c", "echo hi"]),
            Some("sh -c echo hi")
        ));
        assert!(!same_command(
            &s(&["sh", "-c", "echo hi"]),
            Some("sh -c echo")
        ));
        assert!(!same_command(&s(&["true"]), None));
    }
}
