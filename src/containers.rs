//! The one view of each container that handlers (and later the status API)
//! share: what its inspect says ([`Container`]: real name, image as created,
//! labels, user, restart policy, health probe, stop signal, which event
//! attributes its labels can forge, and its state), plus what dockwarden saw
//! happen to it since ([`Status`]: last exit code, health, OOM kills, its own
//! last actions).
//!
//! One inspect cache, by container ID, kept current by [`Containers::observe`]
//! from the event stream, in the container's lane before any handler: a
//! `start`, `update` or `rename` inspects it again in the background (off the
//! reaction path: the engine holds a container's lock for ~50 ms after its
//! exit), a `destroy` drops it. Memory is bounded by the containers the
//! engine has, and by [`MAX_ACTIONS`] actions each.
//!
//! It must not decide anything: handlers read it and judge for themselves,
//! and ask the engine when they need the state *now*.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum, RestartPolicyNameEnum,
};

use crate::docker::{DockerHandle, retry};
use crate::event::Event;
use crate::lock::lock;

/// dockwarden's own actions remembered per container.
pub const MAX_ACTIONS: usize = 16;

/// What a container's inspect says, as every handler needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Container {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// `Config.Image`: the name it was created with, not the sha.
    pub image: String,
    pub labels: HashMap<String, String>,
    /// `Config.User`; empty means the image's default (root).
    pub user: String,
    /// Docker's restart policy: `no`, `always`, `unless-stopped`, `on-failure`.
    pub restart_policy: &'static str,
    /// `on-failure:N`'s N (0: unlimited).
    pub max_retries: i64,
    /// The argv a health probe runs, if it has a HEALTHCHECK.
    pub probe: Option<Vec<String>>,
    /// Its stop signal as a number (15 unless configured; None if unknown).
    pub stop_signal: Option<u32>,
    pub forgeable: Forgeable,
    pub state: State,
}

/// Labels named like an event attribute overwrite it in that container's
/// events: those attributes cannot be trusted for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgeable {
    /// A label `exitCode` (the `die` attribute).
    pub exit_code: bool,
    /// A label `execID` (the `exec_*` attribute).
    pub exec_id: bool,
    /// A label `signal` (the `kill` attribute).
    pub signal: bool,
}

/// `State` of the inspect, at the time it was taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`,
    /// `dead` (empty if the engine did not say).
    pub status: &'static str,
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// `healthy`, `unhealthy`, `starting` or `none`.
    pub health: &'static str,
    /// The engine's own restart count.
    pub restart_count: i64,
    /// `HostConfig.Memory` (0: no limit).
    pub memory: i64,
}

impl Container {
    pub fn from_inspect(info: &ContainerInspectResponse) -> Container {
        let config = info.config.clone().unwrap_or_default();
        let host = info.host_config.clone().unwrap_or_default();
        let policy = host.restart_policy.unwrap_or_default();
        let state = info.state.clone().unwrap_or_default();
        let labels: HashMap<String, String> = config.labels.clone().unwrap_or_default();
        let probe = config
            .healthcheck
            .as_ref()
            .and_then(|h| h.test.clone())
            .and_then(|test| match test.first().map(String::as_str) {
                Some("CMD") => Some(test[1..].to_vec()),
                Some("CMD-SHELL") => {
                    let mut argv = config
                        .shell
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                    argv.push(test[1..].join(" "));
                    Some(argv)
                }
                _ => None,
            });
        let stop_signal = match config.stop_signal.as_deref() {
            None | Some("") => Some(15),
            Some(s) => signal_number(s),
        };
        Container {
            id: info.id.clone().unwrap_or_default(),
            name: plain_name(info.name.as_deref().unwrap_or_default()).to_owned(),
            image: config.image.clone().unwrap_or_default(),
            forgeable: Forgeable {
                exit_code: labels.contains_key("exitCode"),
                exec_id: labels.contains_key("execID"),
                signal: labels.contains_key("signal"),
            },
            labels,
            user: config.user.unwrap_or_default(),
            restart_policy: match policy.name {
                Some(RestartPolicyNameEnum::ALWAYS) => "always",
                Some(RestartPolicyNameEnum::UNLESS_STOPPED) => "unless-stopped",
                Some(RestartPolicyNameEnum::ON_FAILURE) => "on-failure",
                _ => "no",
            },
            max_retries: policy.maximum_retry_count.unwrap_or(0),
            probe,
            stop_signal,
            state: State {
                status: match state.status {
                    Some(ContainerStateStatusEnum::CREATED) => "created",
                    Some(ContainerStateStatusEnum::RUNNING) => "running",
                    Some(ContainerStateStatusEnum::PAUSED) => "paused",
                    Some(ContainerStateStatusEnum::RESTARTING) => "restarting",
                    Some(ContainerStateStatusEnum::REMOVING) => "removing",
                    Some(ContainerStateStatusEnum::EXITED) => "exited",
                    Some(ContainerStateStatusEnum::DEAD) => "dead",
                    _ => "",
                },
                running: state.running.unwrap_or(false),
                exit_code: state.exit_code.unwrap_or(0),
                oom_killed: state.oom_killed.unwrap_or(false),
                health: match state.health.and_then(|h| h.status) {
                    Some(HealthStatusEnum::HEALTHY) => "healthy",
                    Some(HealthStatusEnum::UNHEALTHY) => "unhealthy",
                    Some(HealthStatusEnum::STARTING) => "starting",
                    _ => "none",
                },
                restart_count: info.restart_count.unwrap_or(0),
                memory: host.memory.unwrap_or(0),
            },
        }
    }
}

/// A container name as Docker reports it in inspect (`/web-1`) or events
/// (`web-1`), without the leading `/`.
pub fn plain_name(name: &str) -> &str {
    name.trim_start_matches('/')
}

/// `SIGTERM`, `TERM` or `15` → 15, for the signals containers stop with.
pub fn signal_number(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let n = match s.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "STOP" => 19,
        "PWR" => 30,
        _ => return None,
    };
    Some(n)
}

/// What dockwarden saw happen to a container since it started watching.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// The exit code of its last `die`, when no label could forge it.
    pub last_exit_code: Option<i64>,
    /// Its last `health_status`.
    pub health: Option<String>,
    /// `oom` events seen.
    pub oom_kills: u64,
    /// dockwarden's own last actions on it, oldest first.
    pub actions: VecDeque<Action>,
}

/// One action dockwarden took on a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// `restart`, `recreate`, `raise_memory`.
    pub kind: &'static str,
    /// `ok`, `error`, `suppressed`.
    pub result: &'static str,
    /// Unix nanoseconds.
    pub time_nano: i64,
}

#[derive(Default)]
struct Entry {
    /// None until the first inspect arrives.
    container: Option<Arc<Container>>,
    status: Status,
}

/// Every container dockwarden knows, by ID.
#[derive(Default)]
pub struct Containers {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Containers {
    /// The cached view of container `id`, if it was inspected.
    pub fn get(&self, id: &str) -> Option<Arc<Container>> {
        lock(&self.entries)
            .get(id)
            .and_then(|e| e.container.clone())
    }

    /// What dockwarden saw happen to container `id`.
    pub fn status(&self, id: &str) -> Option<Status> {
        lock(&self.entries).get(id).map(|e| e.status.clone())
    }

    /// The cached view, else a fresh inspect (retried across a dropped
    /// connection, not across an answer such as 404), which is cached.
    pub async fn lookup(
        &self,
        docker: &Docker,
        id: &str,
    ) -> Result<Arc<Container>, bollard::errors::Error> {
        match self.get(id) {
            Some(c) => Ok(c),
            None => self.inspect(docker, id).await,
        }
    }

    /// Inspects container `id` now and caches what it says.
    pub async fn inspect(
        &self,
        docker: &Docker,
        id: &str,
    ) -> Result<Arc<Container>, bollard::errors::Error> {
        let info = retry(|| docker.inspect_container(id, None)).await?;
        Ok(self.remember(id, Container::from_inspect(&info)))
    }

    /// Caches `container` as the view of `id`.
    pub fn remember(&self, id: &str, container: Container) -> Arc<Container> {
        let container = Arc::new(container);
        lock(&self.entries)
            .entry(id.to_owned())
            .or_default()
            .container = Some(container.clone());
        container
    }

    /// Drops every container whose ID is not in `live` (after listing them
    /// all, as a resync does).
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        lock(&self.entries).retain(|id, _| live.contains(id));
    }

    /// Records an action dockwarden took on container `id`.
    pub fn record_action(&self, id: &str, kind: &'static str, result: &'static str) {
        let mut entries = lock(&self.entries);
        let actions = &mut entries.entry(id.to_owned()).or_default().status.actions;
        actions.push_back(Action {
            kind,
            result,
            time_nano: crate::clock::unix_nanos(),
        });
        while actions.len() > MAX_ACTIONS {
            actions.pop_front();
        }
    }

    /// Whether [`observe`](Containers::observe) needs to see `event`.
    pub fn wants(event: &Event) -> bool {
        event.typ == "container"
            && matches!(
                &*event.action,
                "start" | "update" | "rename" | "die" | "oom" | "health_status" | "destroy"
            )
    }

    /// Keeps the view current with one event, in its container's lane. An
    /// inspect it needs runs in the background, on `tasks`.
    pub fn observe(
        self: &Arc<Self>,
        event: &Event,
        docker: &DockerHandle,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        if event.typ != "container" {
            return;
        }
        let id = event.actor_id.as_str();
        match &*event.action {
            // Its configuration may have changed (a docker update, a
            // rename, a recreate by someone else): inspect again.
            "start" | "update" | "rename" => {
                let Ok(docker) = docker.get() else { return };
                let this = self.clone();
                let id = id.to_owned();
                tasks.spawn(async move {
                    if let Err(e) = this.inspect(&docker, &id).await {
                        tracing::debug!(id = %id, error = %e, "Cannot inspect container.");
                    }
                });
            }
            "destroy" => {
                lock(&self.entries).remove(id);
            }
            _ => {}
        }
        let forgeable = self.get(id).map(|c| c.forgeable);
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(id) else {
            return;
        };
        match &*event.action {
            "die" if forgeable.is_some_and(|f| !f.exit_code) => {
                entry.status.last_exit_code = event.exit_code();
            }
            "oom" => entry.status.oom_kills += 1,
            "health_status" => entry.status.health = event.health_status().map(str::to_owned),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("KILL"), Some(9));
        assert_eq!(signal_number("10"), Some(10));
        assert_eq!(signal_number("SIGWINCH"), None);
    }

    #[test]
    fn actions_are_bounded() {
        let c = Containers::default();
        for _ in 0..(MAX_ACTIONS + 5) {
            c.record_action("x", "restart", "ok");
        }
        let status = c.status("x").expect("recorded");
        assert_eq!(status.actions.len(), MAX_ACTIONS);
    }

    #[test]
    fn inspect_projection() {
        let info: ContainerInspectResponse = serde_json::from_str(
            r#"{"Id":"abc","Name":"/web-1","RestartCount":2,
                "Config":{"Image":"nginx:1.25","User":"app","Labels":{"exitCode":"0","team":"x"},
                          "StopSignal":"SIGQUIT",
                          "Healthcheck":{"Test":["CMD-SHELL","curl -f localhost"]}},
                "HostConfig":{"Memory":1048576,"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}},
                "State":{"Status":"exited","Running":false,"ExitCode":3,"OOMKilled":true,"Health":{"Status":"unhealthy"}}}"#,
        )
        .expect("inspect JSON");
        let c = Container::from_inspect(&info);
        assert_eq!(c.name, "web-1");
        assert_eq!(c.image, "nginx:1.25");
        assert_eq!(c.user, "app");
        assert_eq!((c.restart_policy, c.max_retries), ("on-failure", 3));
        assert_eq!(c.stop_signal, Some(3));
        assert_eq!(
            c.probe,
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "curl -f localhost".into()
            ])
        );
        assert!(c.forgeable.exit_code && !c.forgeable.exec_id && !c.forgeable.signal);
        assert_eq!(
            c.state,
            State {
                status: "exited",
                running: false,
                exit_code: 3,
                oom_killed: true,
                health: "unhealthy",
                restart_count: 2,
                memory: 1_048_576,
            }
        );
    }
}
