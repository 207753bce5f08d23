//! What the replay server answers besides events, as Engine 20.10 does:
//! `GET /version`, and for a pool slot its entry of `GET /containers/json`,
//! its `GET /containers/{id}/json` and its execs' `GET /exec/{id}/json`
//! (the parts any client reads). Rendered once by [`Shapes`](super::shapes::Shapes).

use serde_json::{Value, json};

use super::shapes::{API_VERSION, ENGINE_VERSION, EXEC_HOLE, HUMAN, PROBE, Slot};

impl Slot {
    /// `GET /exec/{id}/json` of the `nth` exec of a story (ID as a hole).
    pub fn exec_inspect(&self, nth: u64) -> Value {
        let (entrypoint, args, tty) = if nth == 1 {
            (HUMAN[0], HUMAN[1..].to_vec(), true)
        } else {
            ("/bin/sh", vec!["-c", PROBE], false)
        };
        json!({
            "ID": EXEC_HOLE,
            "Running": false,
            "ExitCode": if nth == 2 { 1 } else { 0 },
            "ProcessConfig": {
                "tty": tty,
                "entrypoint": entrypoint,
                "arguments": args,
                "privileged": false,
            },
            "OpenStdin": tty,
            "OpenStderr": true,
            "OpenStdout": true,
            "CanRemove": false,
            "ContainerID": self.id,
            "DetachKeys": "",
            // The engine keeps a started exec's pid after it exits; 0 means
            // it never started (which dockwarden then polls for its end).
            "Pid": 4300 + nth,
        })
    }

    /// One entry of `GET /containers/json`.
    pub fn summary(&self) -> Value {
        let (net_id, net_name) = self.network();
        json!({
            "Id": self.id,
            "Names": [format!("/{}", self.name)],
            "Image": self.image,
            "ImageID": format!("sha256:{}", self.labels["com.docker.compose.image"].trim_start_matches("sha256:")),
            "Command": "/docker-entrypoint.sh serve",
            "Created": 1_700_000_000 + self.number,
            "Ports": [],
            "Labels": self.labels,
            "State": "running",
            "Status": "Up 2 hours (healthy)",
            "HostConfig": {"NetworkMode": net_name},
            "NetworkSettings": {"Networks": {net_name.clone(): {
                "IPAMConfig": null, "Links": null, "Aliases": null,
                "NetworkID": net_id, "EndpointID": "", "Gateway": "172.18.0.1",
                "IPAddress": "172.18.0.2", "IPPrefixLen": 16, "IPv6Gateway": "",
                "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "MacAddress": "02:42:ac:12:00:02", "DriverOpts": null
            }}},
            "Mounts": [{"Type": "volume", "Name": format!("{}-data", self.name),
                "Source": format!("/var/lib/docker/volumes/{}-data/_data", self.name),
                "Destination": "/data", "Driver": "local", "Mode": "z", "RW": true,
                "Propagation": ""}],
        })
    }

    /// `GET /containers/{id}/json`, as 20.10 answers it (the parts any
    /// client reads).
    pub fn inspect(&self) -> Value {
        let (net_id, net_name) = self.network();
        // Healing containers leave restarts to dockwarden.
        let policy = if self.heal { "no" } else { "unless-stopped" };
        json!({
            "Id": self.id,
            "Created": "2026-11-23T10:00:00.123456789Z",
            "Path": "/docker-entrypoint.sh",
            "Args": ["serve"],
            "State": {
                "Status": "running", "Running": true, "Paused": false,
                "Restarting": false, "OOMKilled": false, "Dead": false,
                "Pid": 4242, "ExitCode": 0, "Error": "",
                "StartedAt": "2026-11-23T10:00:01.5Z",
                "FinishedAt": "0001-01-01T00:00:00Z",
                "Health": {"Status": "healthy", "FailingStreak": 0, "Log": []}
            },
            "Image": self.labels["com.docker.compose.image"],
            "ResolvConfPath": format!("/var/lib/docker/containers/{}/resolv.conf", self.id),
            "HostnamePath": format!("/var/lib/docker/containers/{}/hostname", self.id),
            "HostsPath": format!("/var/lib/docker/containers/{}/hosts", self.id),
            "LogPath": format!("/var/lib/docker/containers/{0}/{0}-json.log", self.id),
            "Name": format!("/{}", self.name),
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "docker-default",
            "ExecIDs": null,
            "HostConfig": {
                "Binds": [format!("{}-data:/data:rw", self.name)],
                "NetworkMode": net_name,
                "RestartPolicy": {"Name": policy, "MaximumRetryCount": 0},
                "AutoRemove": false,
                "Memory": 268_435_456,
                "MemorySwap": 536_870_912,
                "Privileged": false,
                "ReadonlyRootfs": false,
                "LogConfig": {"Type": "json-file", "Config": {}}
            },
            "Mounts": [{"Type": "volume", "Name": format!("{}-data", self.name),
                "Source": format!("/var/lib/docker/volumes/{}-data/_data", self.name),
                "Destination": "/data", "Driver": "local", "Mode": "rw", "RW": true,
                "Propagation": ""}],
            "Config": {
                "Hostname": &self.id[..12],
                "Domainname": "",
                "User": "",
                "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
                "ExposedPorts": {"8080/tcp": {}},
                "Tty": false, "OpenStdin": false, "StdinOnce": false,
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        format!("SERVICE={}", self.service)],
                "Cmd": ["serve"],
                "Healthcheck": {"Test": ["CMD-SHELL", PROBE], "Interval": 30_000_000_000u64},
                "Image": self.image,
                "Volumes": {"/data": {}},
                "WorkingDir": "/app",
                "Entrypoint": ["/docker-entrypoint.sh"],
                "OnBuild": null,
                "Labels": self.labels
            },
            "NetworkSettings": {
                "Bridge": "", "SandboxID": &self.id[..], "HairpinMode": false,
                "Ports": {"8080/tcp": null},
                "Networks": {net_name.clone(): {
                    "IPAMConfig": null, "Links": null,
                    "Aliases": [self.service, &self.id[..12]],
                    "NetworkID": net_id, "EndpointID": &self.id[..],
                    "Gateway": "172.18.0.1", "IPAddress": "172.18.0.2",
                    "IPPrefixLen": 16, "MacAddress": "02:42:ac:12:00:02",
                    "DriverOpts": null
                }}
            }
        })
    }
}

/// `GET /version` of Engine 20.10 on Linux.
pub fn version_json() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "Platform": {"Name": ""},
        "Components": [
            {"Name": "Engine", "Version": ENGINE_VERSION, "Details": {
                "ApiVersion": API_VERSION, "Arch": "amd64",
                "BuildTime": "2023-04-04T00:00:00.000000000+00:00", "Experimental": "false",
                "GitCommit": "5d6db84", "GoVersion": "go1.19.8",
                "KernelVersion": "6.1.0-18-amd64", "MinAPIVersion": "1.12", "Os": "linux"}},
            {"Name": "containerd", "Version": "1.6.20", "Details": {"GitCommit": "1.6.20"}},
            {"Name": "runc", "Version": "1.1.5", "Details": {"GitCommit": "1.1.5"}},
            {"Name": "docker-init", "Version": "0.19.0", "Details": {"GitCommit": ""}}
        ],
        "Version": ENGINE_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.12",
        "GitCommit": "5d6db84",
        "GoVersion": "go1.19.8",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "6.1.0-18-amd64",
        "BuildTime": "2023-04-04T00:00:00.000000000+00:00"
    }))
    .expect("version encodes")
}
