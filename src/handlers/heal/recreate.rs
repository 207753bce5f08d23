//! Replacing a container with a new one built from its inspect data.
//!
//! The swap is safe: the old container is renamed aside (not destroyed) until
//! the new one exists, is connected to every network and has started; any
//! failure on the way removes the new one, gives the old one its name back
//! and restores its running state.
//!
//! This file is long because every step of the swap has its rollback, and
//! its tests build the create request from inspects as the engine gives
//! them.

use std::collections::HashMap;

use bollard::ClientVersion;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, MountType,
    NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    RemoveContainerOptions, RenameContainerOptions, StartContainerOptions, StopContainerOptions,
};
use tracing::{error, warn};

use crate::docker::Engine;
use crate::docker::calls::{self, Call};

/// Why a recreate failed. The old container is back in place unless the
/// variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum RecreateError {
    #[error("inspect data lacks {0}")]
    Incomplete(&'static str),
    #[error("{step} failed: {source}")]
    Step {
        step: &'static str,
        call: Call,
        source: bollard::errors::Error,
    },
    #[error("{step} failed: {source}; rolling back also failed: {rollback}")]
    RollbackFailed {
        step: &'static str,
        call: Call,
        source: bollard::errors::Error,
        rollback: String,
        /// The rollback's calls a proxy denied.
        rollback_denied: Vec<(Call, String)>,
    },
}

impl RecreateError {
    /// A step was denied and the old container is back in place.
    pub fn denied(&self) -> bool {
        matches!(self, RecreateError::Step { source, .. } if calls::denied(source).is_some())
    }

    /// The calls a proxy denied, the step's and the rollback's, each with
    /// its answer.
    pub fn denials(&self) -> Vec<(Call, &str)> {
        let (call, source, rollback) = match self {
            RecreateError::Incomplete(_) => return Vec::new(),
            RecreateError::Step { call, source, .. } => (call, source, &[][..]),
            RecreateError::RollbackFailed {
                call,
                source,
                rollback_denied,
                ..
            } => (call, source, rollback_denied.as_slice()),
        };
        calls::denied(source)
            .map(|m| (*call, m))
            .into_iter()
            .chain(rollback.iter().map(|(c, m)| (*c, m.as_str())))
            .collect()
    }
}

/// The old container as a recreate reads it: bollard's model of its
/// inspect, and what that model lacks.
pub struct Old {
    pub info: ContainerInspectResponse,
    /// `Config.MacAddress`: the engine fills it only for a MAC address
    /// someone fixed (`docker run --mac-address`, compose's
    /// `mac_address`). Engines 25.0.0 and 25.0.1 filled it with the MAC in
    /// use (moby#47228); from API 1.52 the inspect has it no more, and a
    /// fixed MAC cannot be told from an engine-chosen one.
    pub mac_address: Option<String>,
}

/// The API version from which a create takes a MAC address per endpoint
/// (`EndpointSettings.MacAddress`), and `Config.MacAddress` is deprecated:
/// the engine moves it to the network `NetworkMode` names, and refuses the
/// create when none of the endpoints is that one.
const MAC_PER_ENDPOINT: (usize, usize) = (1, 44);

impl Old {
    /// The old container from its inspect's JSON.
    pub fn from_json(json: serde_json::Value) -> Result<Old, serde_json::Error> {
        let mac_address = json
            .pointer("/Config/MacAddress")
            .and_then(serde_json::Value::as_str)
            .filter(|mac| !mac.is_empty())
            .map(str::to_owned);
        Ok(Old {
            info: serde_json::from_value(json)?,
            mac_address,
        })
    }
}

/// The create request and the networks to connect after it.
pub struct Blueprint {
    pub name: String,
    pub body: ContainerCreateBody,
    /// The old container's fixed MAC address, sent as `Config.MacAddress`
    /// below API 1.44 (from it, the first endpoint carries it); none when
    /// the new one joins another's network stack.
    pub mac_address: Option<String>,
    /// Networks beyond the first: the API (below 1.44) takes one at create.
    pub extra_networks: Vec<(String, EndpointSettings)>,
}

/// What of an endpoint survives into a new container: aliases (without the
/// old short ID the engine adds itself; none on the default bridge, where
/// they are invalid), links, static IPAM config and driver options.
fn endpoint(network: &str, old: &EndpointSettings, old_short_id: &str) -> EndpointSettings {
    let aliases = if network == "bridge" {
        None
    } else {
        old.aliases
            .as_ref()
            .map(|a| {
                a.iter()
                    .filter(|alias| alias.as_str() != old_short_id)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|a| !a.is_empty())
    };
    EndpointSettings {
        aliases,
        links: old.links.clone(),
        ipam_config: old.ipam_config.clone(),
        driver_opts: old.driver_opts.clone(),
        ..Default::default()
    }
}

impl Blueprint {
    /// The create request's JSON: bollard's body, and the fixed MAC address
    /// its model has no field for.
    pub fn request(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut body = serde_json::to_value(&self.body)?;
        if let (Some(mac), Some(fields)) = (&self.mac_address, body.as_object_mut()) {
            fields.insert("MacAddress".to_owned(), mac.clone().into());
        }
        Ok(body)
    }
}

/// Builds the create request from inspect data, for an engine spoken to at
/// API version `api`.
pub fn blueprint(old: &Old, api: &ClientVersion) -> Result<Blueprint, RecreateError> {
    let info = &old.info;
    let id = info.id.as_deref().ok_or(RecreateError::Incomplete("Id"))?;
    let short_id = id.get(..12).unwrap_or(id);
    let name = info
        .name
        .as_deref()
        .map(|n| crate::containers::plain_name(n).to_owned())
        .ok_or(RecreateError::Incomplete("Name"))?;
    let config = info
        .config
        .clone()
        .ok_or(RecreateError::Incomplete("Config"))?;
    let image = config
        .image
        .clone()
        .ok_or(RecreateError::Incomplete("Config.Image"))?;
    let mut host = info.host_config.clone().unwrap_or_default();

    // A `--mount type=volume` without a source is an anonymous volume: name
    // it, or the new container would get a fresh, empty one.
    for m in host.mounts.iter_mut().flatten() {
        if m.typ == Some(MountType::VOLUME)
            && m.source.as_deref().is_none_or(str::is_empty)
            && let Some(target) = &m.target
        {
            m.source = info
                .mounts
                .iter()
                .flatten()
                .find(|used| used.destination.as_ref() == Some(target))
                .and_then(|used| used.name.clone());
        }
    }
    // Anonymous volumes (from the image's VOLUME or `-v /path`) are not in
    // HostConfig: bind them by name so the new container keeps the data.
    // Those of `--volumes-from` are in the mounts too, and a bind of the
    // same target overrides VolumesFrom: one read-only there stays so.
    let mut targets: Vec<String> = host
        .binds
        .iter()
        .flatten()
        .filter_map(|b| b.split(':').nth(1).map(str::to_owned))
        .collect();
    targets.extend(
        host.mounts
            .iter()
            .flatten()
            .filter_map(|m| m.target.clone()),
    );
    for m in info.mounts.iter().flatten() {
        if let (Some("volume"), Some(vol), Some(dest)) = (m.typ.as_deref(), &m.name, &m.destination)
            && !targets.contains(dest)
        {
            let mode = if m.rw == Some(false) { ":ro" } else { "" };
            host.binds
                .get_or_insert_with(Vec::new)
                .push(format!("{vol}:{dest}{mode}"));
            targets.push(dest.clone());
        }
    }

    let mode = host.network_mode.clone().unwrap_or_default();
    let networks: Vec<(String, EndpointSettings)> = {
        let mut n: Vec<_> = info
            .network_settings
            .as_ref()
            .and_then(|s| s.networks.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        n.sort_by(|a, b| a.0.cmp(&b.0));
        n
    };
    let shares_stack = mode == "host" || mode == "none" || mode.starts_with("container:");
    let (mut first, extra_networks) = if shares_stack || networks.is_empty() {
        (None, Vec::new())
    } else {
        let primary = networks.iter().position(|(n, _)| *n == mode).unwrap_or(0);
        let mut first = None;
        let mut extra = Vec::new();
        for (i, (net, old)) in networks.iter().enumerate() {
            let ep = endpoint(net, old, short_id);
            if i == primary {
                first = Some((net.clone(), ep));
            } else {
                extra.push((net.clone(), ep));
            }
        }
        (first, extra)
    };

    let mut mac_address = old.mac_address.clone().filter(|_| !shares_stack);
    if (api.major_version, api.minor_version) >= MAC_PER_ENDPOINT {
        // An endpoint that is not created keeps no MAC address.
        if let (Some(mac), Some((_, ep))) = (mac_address.take(), first.as_mut()) {
            ep.mac_address = Some(mac);
        }
    }

    // The engine sets Hostname to the short ID unless the user chose one.
    // In another container's namespace the host name is that container's,
    // and the engine refuses a host name or exposed ports (the image's
    // appear in the inspect) beside `container:` network mode.
    let joins = mode.starts_with("container:");
    let hostname = config.hostname.filter(|h| h != short_id && !joins);
    let domainname = config.domainname.filter(|_| !joins);
    let exposed_ports = config.exposed_ports.filter(|_| !joins);
    let body = ContainerCreateBody {
        hostname,
        domainname,
        user: config.user,
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env: config.env,
        cmd: config.cmd,
        healthcheck: config.healthcheck,
        args_escaped: config.args_escaped,
        image: Some(image),
        volumes: config.volumes,
        working_dir: config.working_dir,
        entrypoint: config.entrypoint,
        network_disabled: config.network_disabled,
        on_build: config.on_build,
        labels: config.labels,
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        shell: config.shell,
        host_config: Some(host),
        networking_config: first.map(|(net, ep)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(net, ep)])),
        }),
    };
    Ok(Blueprint {
        name,
        body,
        mac_address,
        extra_networks,
    })
}

/// The name the old container carries while the new one is set up.
pub fn aside_name(name: &str, old_id: &str) -> String {
    format!("{name}-dwold-{}", old_id.get(..12).unwrap_or(old_id))
}

/// Replaces the container; returns the new container's ID.
pub async fn recreate(
    docker: &Engine,
    old: &Old,
    stop_timeout_secs: i32,
) -> Result<String, RecreateError> {
    let info = &old.info;
    let plan = blueprint(old, &docker.client_version())?;
    let old_id = info.id.clone().ok_or(RecreateError::Incomplete("Id"))?;
    let was_running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    let aside = aside_name(&plan.name, &old_id);
    let step = |step: &'static str, call| move |source| RecreateError::Step { step, call, source };

    if was_running {
        docker
            .stop_container(
                &old_id,
                Some(StopContainerOptions {
                    t: Some(stop_timeout_secs),
                    signal: None,
                }),
            )
            .await
            .map_err(step("stopping the old container", Call::ContainerStop))?;
    }
    if let Err(e) = docker
        .rename_container(
            &old_id,
            RenameContainerOptions {
                name: aside.clone(),
            },
        )
        .await
    {
        return Err(rollback(
            docker,
            &old_id,
            None,
            &plan.name,
            was_running,
            ("renaming the old container aside", Call::ContainerRename),
            e,
        )
        .await);
    }

    let created = match plan.request() {
        Ok(body) => docker.create_container_json(&plan.name, &body).await,
        Err(e) => Err(e.into()),
    };
    let new_id = match created {
        Ok(id) => id,
        Err(e) => {
            return Err(rollback(
                docker,
                &old_id,
                None,
                &plan.name,
                was_running,
                ("creating the new container", Call::ContainerCreate),
                e,
            )
            .await);
        }
    };
    for (net, ep) in &plan.extra_networks {
        let connected = docker
            .connect_network(
                net,
                NetworkConnectRequest {
                    container: new_id.clone(),
                    endpoint_config: Some(ep.clone()),
                },
            )
            .await;
        if let Err(e) = connected {
            return Err(rollback(
                docker,
                &old_id,
                Some(&new_id),
                &plan.name,
                was_running,
                ("connecting a network", Call::NetworkConnect),
                e,
            )
            .await);
        }
    }
    if let Err(e) = docker
        .start_container(&new_id, None::<StartContainerOptions>)
        .await
    {
        return Err(rollback(
            docker,
            &old_id,
            Some(&new_id),
            &plan.name,
            was_running,
            ("starting the new container", Call::ContainerStart),
            e,
        )
        .await);
    }
    // The new container runs: the old one may go. Its named and anonymous
    // volumes stay (they are now the new container's).
    if let Err(e) = docker
        .remove_container(
            &old_id,
            Some(RemoveContainerOptions {
                force: true,
                v: false,
                link: false,
            }),
        )
        .await
    {
        warn!(container = %plan.name, old = %aside, error = %e, "Recreated, but the old container could not be removed.");
    }
    Ok(new_id)
}

async fn rollback(
    docker: &Engine,
    old_id: &str,
    new_id: Option<&str>,
    name: &str,
    was_running: bool,
    (step, call): (&'static str, Call),
    source: bollard::errors::Error,
) -> RecreateError {
    match restore(docker, old_id, new_id, name, was_running).await {
        Ok(()) => RecreateError::Step { step, call, source },
        Err((rollback, rollback_denied)) => RecreateError::RollbackFailed {
            step,
            call,
            source,
            rollback,
            rollback_denied,
        },
    }
}

/// Puts the old container back: removes the new one, renames the old one
/// back, restarts it if it was running. What failed, in words, and the calls
/// a proxy denied.
async fn restore(
    docker: &Engine,
    old_id: &str,
    new_id: Option<&str>,
    name: &str,
    was_running: bool,
) -> Result<(), (String, Vec<(Call, String)>)> {
    let mut problems = Vec::new();
    let mut denied = Vec::new();
    let mut note = |call: Call, e: &bollard::errors::Error| {
        if let Some(m) = calls::denied(e) {
            denied.push((call, m.to_owned()));
        }
    };
    if let Some(new_id) = new_id
        && let Err(e) = docker
            .remove_container(
                new_id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: false,
                    link: false,
                }),
            )
            .await
    {
        note(Call::ContainerRemove, &e);
        problems.push(format!("removing the new container: {e}"));
    }
    let current = docker
        .inspect_container(old_id, None)
        .await
        .ok()
        .and_then(|i| i.name)
        .map(|n| crate::containers::plain_name(&n).to_owned());
    if current.as_deref() != Some(name)
        && let Err(e) = docker
            .rename_container(
                old_id,
                RenameContainerOptions {
                    name: name.to_owned(),
                },
            )
            .await
    {
        note(Call::ContainerRename, &e);
        problems.push(format!("renaming the old container back: {e}"));
    }
    if was_running
        && let Err(e) = docker
            .start_container(old_id, None::<StartContainerOptions>)
            .await
    {
        note(Call::ContainerStart, &e);
        problems.push(format!("starting the old container again: {e}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let all = problems.join("; ");
        error!(container = %name, problems = %all, "Rolling back a failed recreate was incomplete.");
        Err((all, denied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inspect as Engine 20.10 gives it, cut to what a recreate reads:
    /// `--volumes-from src:ro` of an anonymous volume, a fixed MAC address,
    /// and an anonymous volume of its own.
    fn old(network_mode: &str) -> Old {
        let mount = |name: &str, dest: &str, rw: bool| serde_json::json!({"Type": "volume", "Name": name, "Destination": dest, "RW": rw});
        Old::from_json(serde_json::json!({
            "Id": "3f2a9c01b2c3d4e5f6a7b8c9",
            "Name": "/web",
            "Config": {"Image": "img", "MacAddress": "02:42:ac:11:00:99"},
            "HostConfig": {"NetworkMode": network_mode, "VolumesFrom": ["src:ro"]},
            "Mounts": [mount("shared", "/data", false), mount("own", "/cache", true)],
        }))
        .expect("an inspect")
    }

    const API_1_41: ClientVersion = ClientVersion {
        major_version: 1,
        minor_version: 41,
    };

    #[test]
    fn a_read_only_volume_from_another_container_stays_read_only() {
        let plan = blueprint(&old("default"), &API_1_41).expect("a blueprint");
        let host = plan.body.host_config.as_ref().expect("HostConfig");
        assert_eq!(
            host.binds.as_deref(),
            Some(&["shared:/data:ro".to_owned(), "own:/cache".to_owned()][..])
        );
        assert_eq!(
            host.volumes_from.as_deref(),
            Some(&["src:ro".to_owned()][..])
        );
    }

    #[test]
    fn a_fixed_mac_address_is_sent_unless_the_stack_is_another_s() {
        let request = |mode| {
            let plan = blueprint(&old(mode), &API_1_41).expect("a blueprint");
            plan.request().expect("JSON")
        };
        let own = request("default");
        assert_eq!(own["MacAddress"], "02:42:ac:11:00:99", "{own}");
        assert_eq!(own["Image"], "img", "{own}");
        for shared in ["container:db", "host", "none"] {
            let joined = request(shared);
            assert!(joined.get("MacAddress").is_none(), "{shared}: {joined}");
        }
        // An engine-chosen MAC is in no Config: none is fixed.
        let mut auto = serde_json::to_value(&old("default").info).expect("JSON");
        auto["Config"]["MacAddress"] = "".into();
        let auto = Old::from_json(auto).expect("an inspect");
        assert_eq!(auto.mac_address, None);
    }

    #[test]
    fn from_api_1_44_the_mac_address_goes_with_the_first_endpoint() {
        let mut json = serde_json::to_value(&old("web-net").info).expect("JSON");
        let endpoint = serde_json::json!({"Aliases": ["web"], "MacAddress": "02:42:ac:12:00:02"});
        json["NetworkSettings"] = serde_json::json!({"Networks": {"web-net": endpoint}});
        let mut old = Old::from_json(json).expect("an inspect");
        old.mac_address = Some("02:42:ac:11:00:99".into());
        for (minor, config, endpoint) in [
            (43, "02:42:ac:11:00:99", serde_json::Value::Null),
            (44, "", "02:42:ac:11:00:99".into()),
            (53, "", "02:42:ac:11:00:99".into()),
        ] {
            let api = ClientVersion {
                major_version: 1,
                minor_version: minor,
            };
            let request = blueprint(&old, &api)
                .expect("a blueprint")
                .request()
                .expect("JSON");
            let sent = &request["NetworkingConfig"]["EndpointsConfig"]["web-net"];
            assert_eq!(
                request["MacAddress"].as_str().unwrap_or(""),
                config,
                "1.{minor}: {request}"
            );
            assert_eq!(sent["MacAddress"], endpoint, "1.{minor}: {request}");
            assert_eq!(
                sent["Aliases"],
                serde_json::json!(["web"]),
                "1.{minor}: {request}"
            );
        }
    }
}
