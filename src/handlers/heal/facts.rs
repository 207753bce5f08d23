//! What the engine says about a container that a decision needs ([`Facts`],
//! from a fresh inspect or from the container view when the event itself
//! says the rest), and the failure an event reports.

use bollard::models::ContainerInspectResponse;

use super::policy::Failure;
use crate::containers::Container;
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
}

impl Facts {
    pub fn from_inspect(info: &ContainerInspectResponse) -> Facts {
        Facts::from_container(&Container::from_inspect(info))
    }

    /// The facts in a container view, as fresh as the inspect behind it.
    pub fn from_container(c: &Container) -> Facts {
        Facts {
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
        "container.die" if facts.oom_killed => Some(Failure::Oom),
        "container.die" => Some(Failure::Exit(facts.exit_code)),
        "container.oom" => Some(Failure::Oom),
        "container.health_status" if event.health_status() == Some("unhealthy") => {
            Some(Failure::Unhealthy)
        }
        _ => None,
    }
}

pub(super) fn describe(failure: Failure) -> String {
    match failure {
        Failure::Exit(code) => format!("exit {code}"),
        Failure::Oom => "OOM kill".to_owned(),
        Failure::Unhealthy => "unhealthy".to_owned(),
    }
}
