//! How a container's inspect becomes its [`Container`] view: the one
//! projection of the engine's JSON that handlers and the API read. It must
//! not ask the engine anything; [`Containers`](super::Containers) does.

use std::collections::HashMap;

use bollard::models::{
    ContainerConfig, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    HealthConfig, HealthStatusEnum, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use serde::Deserialize;

use super::{CHECK_OUTPUT_BYTES, Check, Container, Forgeable, State, plain_name, signal_number};

/// The engine's "never" for `StartedAt`/`FinishedAt`.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A container's inspect as far as the view reads it ([`Container::from_inspect`],
/// and the exec audit's `ExecIDs`): the engine's answer decoded without
/// its networks, mounts, environment and most of `HostConfig`, which
/// serde skips without building them. It becomes a
/// [`ContainerInspectResponse`] with only these fields set.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ViewInspect {
    id: Option<String>,
    name: Option<String>,
    restart_count: Option<i64>,
    config: Option<ViewConfig>,
    host_config: Option<ViewHostConfig>,
    state: Option<ContainerState>,
    /// The container's execs the engine still knows.
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ViewConfig {
    image: Option<String>,
    user: Option<String>,
    labels: Option<HashMap<String, String>>,
    healthcheck: Option<HealthConfig>,
    shell: Option<Vec<String>>,
    stop_signal: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ViewHostConfig {
    memory: Option<i64>,
    restart_policy: Option<RestartPolicy>,
}

impl From<ViewInspect> for ContainerInspectResponse {
    fn from(v: ViewInspect) -> Self {
        ContainerInspectResponse {
            id: v.id,
            name: v.name,
            restart_count: v.restart_count,
            config: v.config.map(|c| ContainerConfig {
                image: c.image,
                user: c.user,
                labels: c.labels,
                healthcheck: c.healthcheck,
                shell: c.shell,
                stop_signal: c.stop_signal,
                ..ContainerConfig::default()
            }),
            host_config: v.host_config.map(|h| HostConfig {
                memory: h.memory,
                restart_policy: h.restart_policy,
                ..HostConfig::default()
            }),
            state: v.state,
            exec_ids: v.exec_ids,
            ..ContainerInspectResponse::default()
        }
    }
}

impl Container {
    pub fn from_inspect(info: &ContainerInspectResponse) -> Container {
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        Container::with_labels(info, labels)
    }

    /// The view of an inspect read as [`ViewInspect`]: its labels are moved
    /// into the view, not copied (a create's inspect, every create).
    pub fn from_view(mut view: ViewInspect) -> Container {
        let labels = view
            .config
            .as_mut()
            .and_then(|c| c.labels.take())
            .unwrap_or_default();
        Container::with_labels(&view.into(), labels)
    }

    /// `info`'s view, with `labels` for its labels.
    fn with_labels(info: &ContainerInspectResponse, labels: HashMap<String, String>) -> Container {
        // Borrowed: an inspect is large (HostConfig alone has dozens of
        // fields), and the view keeps a few of them.
        let (no_config, no_host, no_state) = Default::default();
        let config: &ContainerConfig = info.config.as_ref().unwrap_or(&no_config);
        let host: &HostConfig = info.host_config.as_ref().unwrap_or(&no_host);
        let state: &ContainerState = info.state.as_ref().unwrap_or(&no_state);
        let policy = host.restart_policy.as_ref();
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
        let last_check = state
            .health
            .as_ref()
            .and_then(|h| h.log.as_ref())
            .and_then(|log| log.last())
            .map(|c| Check {
                exit_code: c.exit_code.unwrap_or(-1),
                output: first_bytes(c.output.as_deref().unwrap_or_default(), CHECK_OUTPUT_BYTES)
                    .trim_end()
                    .to_owned(),
            });
        Container {
            last_check,
            id: info.id.clone().unwrap_or_default(),
            name: plain_name(info.name.as_deref().unwrap_or_default()).to_owned(),
            image: config.image.clone().unwrap_or_default(),
            forgeable: Forgeable {
                exit_code: labels.contains_key("exitCode"),
                exec_id: labels.contains_key("execID"),
                signal: labels.contains_key("signal"),
            },
            labels,
            user: config.user.clone().unwrap_or_default(),
            restart_policy: match policy.and_then(|p| p.name) {
                Some(RestartPolicyNameEnum::ALWAYS) => "always",
                Some(RestartPolicyNameEnum::UNLESS_STOPPED) => "unless-stopped",
                Some(RestartPolicyNameEnum::ON_FAILURE) => "on-failure",
                _ => "no",
            },
            max_retries: policy.and_then(|p| p.maximum_retry_count).unwrap_or(0),
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
                health: match state.health.as_ref().and_then(|h| h.status) {
                    Some(HealthStatusEnum::HEALTHY) => "healthy",
                    Some(HealthStatusEnum::UNHEALTHY) => "unhealthy",
                    Some(HealthStatusEnum::STARTING) => "starting",
                    _ => "none",
                },
                restart_count: info.restart_count.unwrap_or(0),
                memory: host.memory.unwrap_or(0),
                started_at: state
                    .started_at
                    .clone()
                    .filter(|t| t != ZERO_TIME)
                    .unwrap_or_default(),
                finished_at: state
                    .finished_at
                    .clone()
                    .filter(|t| t != ZERO_TIME)
                    .unwrap_or_default(),
            },
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn first_bytes(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_projection() {
        let info: ContainerInspectResponse = serde_json::from_str(
            r#"{"Id":"abc","Name":"/web-1","RestartCount":2,
                "Config":{"Image":"nginx:1.25","User":"app","Labels":{"exitCode":"0","team":"x"},
                          "StopSignal":"SIGQUIT",
                          "Healthcheck":{"Test":["CMD-SHELL","curl -f localhost"]}},
                "HostConfig":{"Memory":1048576,"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}},
                "State":{"Status":"exited","Running":false,"ExitCode":3,"OOMKilled":true,"Health":{"Status":"unhealthy","Log":[{"ExitCode":0,"Output":"ok"},{"ExitCode":1,"Output":"db connection refused\n"}]},
                         "StartedAt":"2026-11-23T10:00:00.5Z","FinishedAt":"0001-01-01T00:00:00Z"}}"#,
        )
        .expect("inspect JSON");
        let c = Container::from_inspect(&info);
        assert_eq!(c.name, "web-1");
        assert_eq!(
            c.last_check,
            Some(Check {
                exit_code: 1,
                output: "db connection refused".into()
            })
        );
        assert_eq!(first_bytes("aé", 2), "a");
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
                started_at: "2026-11-23T10:00:00.5Z".into(),
                finished_at: String::new(),
            }
        );
    }
}
