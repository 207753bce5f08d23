//! What the engine says about a container that a decision needs ([`Facts`],
//! from a fresh inspect or from the container view when the event itself
//! says the rest), and the failure an event reports.

use bollard::models::ContainerInspectResponse;
use serde_json::{Value, json};

use super::labels::{LabelError, Overrides};
use super::policy::Failure;
use crate::containers::{Check, Container, signal_name};
use crate::event::Event;

/// What the engine says about the container now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub unhealthy: bool,
    /// Docker's policy name (`no`, `always`, `unless-stopped`, `on-failure`).
    pub policy: String,
    pub max_retries: i64,
    pub restart_count: i64,
    pub memory: i64,
    /// What its `dockwarden.*` labels ask for, and the values that could
    /// not be used.
    pub overrides: Overrides,
    pub label_errors: Vec<LabelError>,
    /// The last health check (from an inspect; not kept current by events).
    pub check: Option<Check>,
}

impl Facts {
    pub fn from_inspect(info: &ContainerInspectResponse) -> Facts {
        Facts::from_container(&Container::from_inspect(info))
    }

    /// The facts in a container view, as fresh as the inspect behind it.
    pub fn from_container(c: &Container) -> Facts {
        let (overrides, label_errors) = Overrides::read(&c.labels);
        Facts {
            overrides,
            label_errors,
            check: c.last_check.clone(),
            id: c.id.clone(),
            name: c.name.clone(),
            running: c.state.running,
            exit_code: c.state.exit_code,
            oom_killed: c.state.oom_killed,
            unhealthy: c.state.health == "unhealthy",
            policy: c.restart_policy.to_owned(),
            max_retries: c.max_retries,
            restart_count: c.state.restart_count,
            memory: c.state.memory,
        }
    }

    /// Whether Docker's own restart policy will restart it after this exit.
    pub fn engine_restarts(&self) -> bool {
        match self.policy.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                self.exit_code != 0
                    && (self.max_retries == 0 || self.restart_count < self.max_retries)
            }
            _ => false,
        }
    }
}

/// The failure an event reports, from the event's own key and action text
/// (which labels cannot forge) and the engine's exit code.
pub(super) fn failure_of(event: &Event, facts: &Facts) -> Option<Failure> {
    match &*event.key {
        // Engine 20.10 keeps `OOMKilled` set for the rest of the run after
        // any OOM kill in the container, a child's too: a main process that
        // then exits 0 finished its job (an OOM kill of it exits 137).
        "container.die" if facts.oom_killed && facts.exit_code != 0 => Some(Failure::Oom),
        "container.die" => Some(Failure::Exit(facts.exit_code)),
        "container.oom" => Some(Failure::Oom),
        "container.health_status" if event.health_status() == Some("unhealthy") => {
            Some(Failure::Unhealthy)
        }
        _ => None,
    }
}

/// The failure in a few words: `exit 3`, `exit 137 (SIGKILL)`, `OOM kill`,
/// `unhealthy`.
pub(super) fn describe(failure: Failure) -> String {
    match failure {
        Failure::Exit(code) => match signal_of(code) {
            Some(sig) => format!("exit {code} ({sig})"),
            None => format!("exit {code}"),
        },
        Failure::Oom => "OOM kill".to_owned(),
        Failure::Unhealthy => "unhealthy".to_owned(),
    }
}

/// The signal that ended a process exiting with `code` (128 + n).
fn signal_of(code: i64) -> Option<&'static str> {
    code.checked_sub(128)
        .filter(|n| *n > 0)
        .and_then(signal_name)
}

/// Why a container is healed, beyond [`describe`]'s few words: for a crash
/// its exit code, whether it was OOM-killed and the signal; for `unhealthy`
/// the last check's exit code and output. For the decision's log line, the
/// action's event fields (and so notifications) and the history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Why {
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub signal: Option<&'static str>,
    pub check: Option<Check>,
}

impl Why {
    pub(super) fn of(failure: Failure, facts: &Facts) -> Why {
        match failure {
            Failure::Unhealthy => Why {
                check: facts.check.clone(),
                ..Why::default()
            },
            Failure::Exit(_) | Failure::Oom => Why {
                exit_code: Some(facts.exit_code),
                oom_killed: facts.oom_killed || failure == Failure::Oom,
                signal: signal_of(facts.exit_code),
                check: None,
            },
        }
    }

    /// The event fields.
    pub fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = Vec::new();
        if let Some(code) = self.exit_code {
            f.push(("exit_code", json!(code)));
            f.push(("oom_killed", json!(self.oom_killed)));
            if let Some(sig) = self.signal {
                f.push(("signal", json!(sig)));
            }
        }
        if let Some(c) = &self.check {
            f.push(("check_exit_code", json!(c.exit_code)));
            f.push(("check_output", json!(c.output)));
        }
        f
    }

    /// For a log line: `check exit 1: db connection refused`, empty for a
    /// crash (its few words say it all).
    pub fn text(&self) -> String {
        match &self.check {
            Some(c) if c.output.is_empty() => format!("check exit {}", c.exit_code),
            Some(c) => format!("check exit {}: {}", c.exit_code, c.output),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_says_its_code_oom_and_signal_and_a_check_its_output() {
        assert_eq!(describe(Failure::Exit(3)), "exit 3");
        assert_eq!(describe(Failure::Exit(137)), "exit 137 (SIGKILL)");
        assert_eq!(describe(Failure::Exit(143)), "exit 143 (SIGTERM)");
        assert_eq!(describe(Failure::Exit(128)), "exit 128");
        assert_eq!(describe(Failure::Exit(-1)), "exit -1");
        let killed = Facts {
            exit_code: 137,
            oom_killed: true,
            ..Facts::default()
        };
        let why = Why::of(Failure::Oom, &killed);
        assert_eq!(
            why.fields(),
            [
                ("exit_code", json!(137)),
                ("oom_killed", json!(true)),
                ("signal", json!("SIGKILL")),
            ]
        );
        assert_eq!(why.text(), "");
        let sick = Facts {
            check: Some(Check {
                exit_code: 1,
                output: "db connection refused".into(),
            }),
            ..Facts::default()
        };
        let why = Why::of(Failure::Unhealthy, &sick);
        assert_eq!(why.text(), "check exit 1: db connection refused");
        assert_eq!(
            why.fields(),
            [
                ("check_exit_code", json!(1)),
                ("check_output", json!("db connection refused")),
            ]
        );
    }
}
