//! What the replay server says: events of the shapes Engine 20.10 (API 1.41)
//! emits, and the listing, inspect and exec inspect answers that go with
//! them, for a pool of compose-style containers.
//!
//! Event `i` is step `(i / pool) % STEPS` of the story of container
//! `i % pool`: create, network connect, volume mount, start, a health probe
//! (exec_create, exec_start, exec_die), healthy, a human exec, a failing
//! probe, unhealthy, a crash (die with exit code 3), network disconnect,
//! volume unmount, destroy, an image pull. Every container runs its story
//! interleaved with the others, so consecutive events are about different
//! containers. Container IDs are fixed per pool slot (a destroyed
//! container comes back with the same ID); exec IDs are new every story.
//!
//! Each (container, step) is pre-rendered once as a template with holes for
//! `time`, `timeNano` and the exec ID, so streaming an event is a few
//! copies: the server must outrun the fastest consumer on the same cores.
//! IDs look random (a bijective mix of the slot, story and step) and decode
//! back, so any ID in an event can be inspected without a table that grows.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;

use bytes::Bytes;
use serde_json::{Value, json};

/// Steps in one container's story.
pub const STEPS: u64 = 20;

/// The daemon's version, as a Debian 12 host reports it.
pub const ENGINE_VERSION: &str = "20.10.24";
pub const API_VERSION: &str = "1.41";

const PROJECTS: [&str; 5] = ["shop", "billing", "search", "auth", "media"];
const SERVICES: [&str; 6] = ["web", "api", "worker", "db", "cache", "queue"];
/// The health probe every container has (`CMD-SHELL`, run by `/bin/sh -c`).
const PROBE: &str = "curl -fsS http://localhost:8080/health || exit 1";
/// What a human runs in a container.
const HUMAN: [&str; 3] = ["sh", "-c", "cat /etc/hostname"];

/// Sentinels in a rendered template where per-event values go. Their
/// widths are the widths of what replaces them, so the chunk size of an
/// event is known from its template.
const NANO_HOLE: &str = "9876501234987650123"; // 19 digits, as timeNano until 2286
const SECS_HOLE: &str = "1234509876"; // 10 digits
const EXEC_HOLE: &str = "exec_id_hole_exec_id_hole_exec_id_hole_exec_id_hole_exec_id_hole"; // 64

/// What the IDs encode: the kind of object in the top bits.
const KIND_CONTAINER: u64 = 0;
const KIND_EXEC: u64 = 1;
const KIND_NETWORK: u64 = 2;

#[derive(Clone, Copy)]
enum Hole {
    Nano,
    Secs,
    Exec,
}

/// One event of one container, with its holes.
struct Template {
    /// `(literal bytes, the hole after them)`; the last has no hole.
    parts: Vec<(Vec<u8>, Option<Hole>)>,
    /// The event's JSON plus its newline, once filled.
    len: usize,
}

/// One pool slot: a container and everything about it.
struct Slot {
    id: String,
    name: String,
    project: &'static str,
    service: &'static str,
    number: u64,
    image: String,
    labels: BTreeMap<String, String>,
    heal: bool,
}

/// The pool, its templates and its answers.
pub struct Shapes {
    templates: Vec<Template>,
    /// Pool slots by container ID and by name.
    slots: HashMap<String, usize>,
    /// Every answer is rendered once: the server must stay cheap beside the
    /// consumer it serves on the same cores.
    /// `GET /containers/json?all=1`.
    pub listing: Bytes,
    /// `GET /version`.
    pub version: Bytes,
    /// `GET /containers/{id}/json` by slot.
    inspects: Vec<Bytes>,
    /// `GET /exec/{id}/json` by slot and exec of the story, around the ID.
    execs: Vec<[(Bytes, Bytes); 3]>,
}

/// What an ID decoded to.
pub enum Object {
    Container(usize),
    Exec { slot: usize, story: u64, nth: u64 },
}

impl Shapes {
    pub fn new(pool: usize) -> Shapes {
        let slots: Vec<Slot> = (0..pool as u64).map(Slot::new).collect();
        let mut templates = Vec::with_capacity(pool * STEPS as usize);
        for slot in &slots {
            for step in 0..STEPS {
                templates.push(Template::parse(&slot.event(step)));
            }
        }
        // The IDs must decode back, or inspects would answer 404.
        for key in [(KIND_CONTAINER << 60) | (7 << 8), exec_key(299, 123_456, 2)] {
            let id = String::from_utf8_lossy(&id64(key)).into_owned();
            assert_eq!(id_decode(&id), Some(key), "IDs decode");
        }
        let listing = serde_json::to_vec(&slots.iter().map(Slot::summary).collect::<Vec<_>>())
            .expect("the listing encodes");
        let encode = |v: &Value| Bytes::from(serde_json::to_vec(v).expect("JSON encodes"));
        let split = |v: &Value| {
            let text = serde_json::to_string(v).expect("JSON encodes");
            let (a, b) = text.split_once(EXEC_HOLE).expect("an exec ID hole");
            (Bytes::from(a.to_owned()), Bytes::from(b.to_owned()))
        };
        Shapes {
            templates,
            slots: slots
                .iter()
                .enumerate()
                .flat_map(|(i, s)| [(s.id.clone(), i), (s.name.clone(), i)])
                .collect(),
            listing: listing.into(),
            version: version_json().into(),
            inspects: slots.iter().map(|s| encode(&s.inspect())).collect(),
            execs: slots
                .iter()
                .map(|s| [0, 1, 2].map(|nth| split(&s.exec_inspect(nth))))
                .collect(),
        }
    }

    /// Appends event `i` as one HTTP chunk, exactly as dockerd frames it:
    /// `{len:x}\r\n{json}\n\r\n`.
    pub fn chunk(&self, i: u64, time_nano: i64, out: &mut Vec<u8>) {
        let pool = self.inspects.len() as u64;
        let slot = i % pool;
        let cycle = i / pool;
        let (step, story) = (cycle % STEPS, cycle / STEPS);
        let t = &self.templates[(slot * STEPS + step) as usize];
        let _ = write!(out, "{:x}\r\n", t.len);
        for (lit, hole) in &t.parts {
            out.extend_from_slice(lit);
            match hole {
                Some(Hole::Nano) => {
                    let _ = write!(out, "{time_nano}");
                }
                Some(Hole::Secs) => {
                    let _ = write!(out, "{}", time_nano / 1_000_000_000);
                }
                Some(Hole::Exec) => {
                    let nth = exec_of(step).unwrap_or(0);
                    out.extend_from_slice(&id64(exec_key(slot, story, nth)));
                }
                None => {}
            }
        }
        out.extend_from_slice(b"\n\r\n");
    }

    /// The container or exec an ID names, if it is one of ours.
    pub fn decode(&self, id: &str) -> Option<Object> {
        if let Some(slot) = self.slots.get(id) {
            return Some(Object::Container(*slot));
        }
        let key = id_decode(id)?;
        let slot = ((key >> 8) & 0xffff) as usize;
        if key >> 60 != KIND_EXEC || slot >= self.inspects.len() || key & 0xff > 2 {
            return None;
        }
        Some(Object::Exec {
            slot,
            story: (key >> 24) & 0xf_ffff_ffff,
            nth: key & 0xff,
        })
    }

    /// `GET /containers/{id}/json` of pool slot `slot`.
    pub fn inspect(&self, slot: usize) -> Bytes {
        self.inspects[slot].clone()
    }

    /// `GET /exec/{id}/json`.
    pub fn exec_inspect(&self, slot: usize, story: u64, nth: u64) -> Bytes {
        let (head, tail) = &self.execs[slot][nth as usize];
        let mut out = Vec::with_capacity(head.len() + 64 + tail.len());
        out.extend_from_slice(head);
        out.extend_from_slice(&id64(exec_key(slot as u64, story, nth)));
        out.extend_from_slice(tail);
        out.into()
    }
}

/// Which exec of a story a step belongs to: 0 the first probe, 1 the human
/// exec, 2 the failing probe.
fn exec_of(step: u64) -> Option<u64> {
    match step {
        4..=6 => Some(0),
        8..=10 => Some(1),
        11..=13 => Some(2),
        _ => None,
    }
}

fn exec_key(slot: u64, story: u64, nth: u64) -> u64 {
    (KIND_EXEC << 60) | ((story & 0xf_ffff_ffff) << 24) | ((slot & 0xffff) << 8) | (nth & 0xff)
}

impl Slot {
    fn new(c: u64) -> Slot {
        let project = PROJECTS[(c % 5) as usize];
        let service = SERVICES[((c / 5) % 6) as usize];
        let number = c / 30 + 1;
        let name = format!("{project}-{service}-{number}");
        let image = format!("registry.example/{project}/{service}:1.{}.{}", c % 7, c % 3);
        let heal = c.is_multiple_of(10);
        let hex = |k: u64| String::from_utf8_lossy(&id64(k)).into_owned();
        let mut labels = BTreeMap::new();
        for (k, v) in [
            ("com.docker.compose.config-hash", hex((0xc0f1 << 40) | c)),
            ("com.docker.compose.container-number", number.to_string()),
            ("com.docker.compose.depends_on", String::new()),
            (
                "com.docker.compose.image",
                format!("sha256:{}", hex((0x1a << 40) | (c % 7))),
            ),
            ("com.docker.compose.oneoff", "False".into()),
            ("com.docker.compose.project", project.into()),
            (
                "com.docker.compose.project.config_files",
                format!("/srv/{project}/compose.yaml"),
            ),
            (
                "com.docker.compose.project.working_dir",
                format!("/srv/{project}"),
            ),
            ("com.docker.compose.service", service.into()),
            ("com.docker.compose.version", "2.24.6".into()),
            (
                "org.opencontainers.image.source",
                format!("https://git.example/{project}/{service}"),
            ),
            (
                "org.opencontainers.image.version",
                format!("1.{}.{}", c % 7, c % 3),
            ),
        ] {
            labels.insert(k.to_owned(), v);
        }
        if heal {
            labels.insert("dockwarden.heal".into(), "true".into());
        }
        Slot {
            id: hex((KIND_CONTAINER << 60) | (c << 8)),
            name,
            project,
            service,
            number,
            image,
            labels,
            heal,
        }
    }

    fn network(&self) -> (String, String) {
        let i = PROJECTS
            .iter()
            .position(|p| *p == self.project)
            .unwrap_or(0) as u64;
        let id = String::from_utf8_lossy(&id64((KIND_NETWORK << 60) | (i << 8))).into_owned();
        (id, format!("{}_default", self.project))
    }

    /// The event of `step` as the engine writes it (holes for the times and
    /// the exec ID).
    fn event(&self, step: u64) -> String {
        let (net_id, net_name) = self.network();
        let volume = format!("{}-data", self.name);
        let probe = format!("/bin/sh -c {PROBE}");
        let human = HUMAN.join(" ");
        let container = |action: &str, extra: &[(&str, &str)]| {
            let mut attrs = self.labels.clone();
            attrs.insert("image".into(), self.image.clone());
            attrs.insert("name".into(), self.name.clone());
            for (k, v) in extra {
                attrs.insert((*k).into(), (*v).into());
            }
            // The legacy fields (status, id, from) up to API 1.51.
            format!(
                r#"{{"status":{a},"id":"{id}","from":{img},"Type":"container","Action":{a},"Actor":{{"ID":"{id}","Attributes":{attrs}}},{tail}"#,
                a = quote(action),
                id = self.id,
                img = quote(&self.image),
                attrs = object(&attrs),
                tail = TAIL,
            )
        };
        let other = |typ: &str, action: &str, actor: &str, attrs: &[(&str, &str)]| {
            let attrs: BTreeMap<String, String> = attrs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect();
            format!(
                r#"{{"Type":"{typ}","Action":"{action}","Actor":{{"ID":{actor},"Attributes":{attrs}}},{TAIL}"#,
                actor = quote(actor),
                attrs = object(&attrs),
            )
        };
        let id = self.id.as_str();
        let connect = [("container", id), ("name", &net_name), ("type", "bridge")];
        let mount = [
            ("container", id),
            ("destination", "/data"),
            ("driver", "local"),
            ("propagation", ""),
            ("read/write", "true"),
        ];
        let exec = [("execID", EXEC_HOLE)];
        match step {
            0 => container("create", &[]),
            1 => other("network", "connect", &net_id, &connect),
            2 => other("volume", "mount", &volume, &mount),
            3 => container("start", &[]),
            4 | 11 => container(&format!("exec_create: {probe}"), &exec),
            5 | 12 => container(&format!("exec_start: {probe}"), &exec),
            6 => container("exec_die", &[("execID", EXEC_HOLE), ("exitCode", "0")]),
            7 => container("health_status: healthy", &[]),
            8 => container(&format!("exec_create: {human}"), &exec),
            9 => container(&format!("exec_start: {human}"), &exec),
            10 => container("exec_die", &[("execID", EXEC_HOLE), ("exitCode", "0")]),
            13 => container("exec_die", &[("execID", EXEC_HOLE), ("exitCode", "1")]),
            14 => container("health_status: unhealthy", &[]),
            15 => container("die", &[("exitCode", "3")]),
            16 => other("network", "disconnect", &net_id, &connect),
            17 => other(
                "volume",
                "unmount",
                &volume,
                &[("container", id), ("driver", "local")],
            ),
            18 => container("destroy", &[]),
            _ => {
                // Image events keep the legacy status and id, not from.
                let repo = self.image.split(':').next().unwrap_or_default();
                format!(
                    r#"{{"status":"pull","id":{img},"Type":"image","Action":"pull","Actor":{{"ID":{img},"Attributes":{{"name":{repo}}}}},{TAIL}"#,
                    img = quote(&self.image),
                    repo = quote(repo),
                )
            }
        }
    }

    /// `GET /exec/{id}/json` of the `nth` exec of a story (ID as a hole).
    fn exec_inspect(&self, nth: u64) -> Value {
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
            "Pid": 0,
        })
    }

    /// One entry of `GET /containers/json`.
    fn summary(&self) -> Value {
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
    fn inspect(&self) -> Value {
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

/// `,"scope":"local","time":S,"timeNano":N}` with holes.
const TAIL: &str = concat!(
    r#""scope":"local","time":"#,
    "1234509876",
    r#","timeNano":"#,
    "9876501234987650123",
    "}"
);

fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string encodes")
}

/// A JSON object with its keys sorted, as Go encodes a map.
fn object(m: &BTreeMap<String, String>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&quote(k));
        s.push(':');
        s.push_str(&quote(v));
    }
    s.push('}');
    s
}

impl Template {
    fn parse(json: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = json;
        loop {
            let next = [
                (NANO_HOLE, Hole::Nano),
                (SECS_HOLE, Hole::Secs),
                (EXEC_HOLE, Hole::Exec),
            ]
            .into_iter()
            .filter_map(|(s, h)| rest.find(s).map(|at| (at, s.len(), h)))
            .min_by_key(|(at, _, _)| *at);
            let Some((at, width, hole)) = next else {
                parts.push((rest.as_bytes().to_vec(), None));
                break;
            };
            parts.push((rest.as_bytes()[..at].to_vec(), Some(hole)));
            rest = &rest[at + width..];
        }
        // Each hole is filled with exactly its width; plus the newline.
        Template {
            parts,
            len: json.len() + 1,
        }
    }
}

/// `GET /version` of Engine 20.10 on Linux.
fn version_json() -> Vec<u8> {
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

// IDs: 64 hex digits. The first 16 are an invertible mix of a key (so an ID
// decodes back to its slot, story and step), the rest more mixing.

const C1: u64 = 0xbf58_476d_1ce4_e5b9;
const C2: u64 = 0x94d0_49bb_1331_11eb;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(C1);
    z = (z ^ (z >> 27)).wrapping_mul(C2);
    z ^ (z >> 31)
}

const fn inverse(a: u64) -> u64 {
    // Newton's iteration for the inverse of an odd number modulo 2^64.
    let mut x = a;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

fn unxorshift(y: u64, s: u32) -> u64 {
    let mut x = y;
    for _ in 0..64 / s + 1 {
        x = y ^ (x >> s);
    }
    x
}

fn unmix(mut z: u64) -> u64 {
    z = unxorshift(z, 31);
    z = unxorshift(z.wrapping_mul(inverse(C2)), 27);
    unxorshift(z.wrapping_mul(inverse(C1)), 30)
}

fn id64(key: u64) -> [u8; 64] {
    let mut w = mix(key);
    let mut out = [0u8; 64];
    for chunk in out.chunks_mut(16) {
        for (j, b) in chunk.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[((w >> (60 - 4 * j)) & 0xf) as usize];
        }
        w = mix(w ^ 0x9e37_79b9_7f4a_7c15);
    }
    out
}

fn id_decode(id: &str) -> Option<u64> {
    if id.len() != 64 {
        return None;
    }
    let key = unmix(u64::from_str_radix(id.get(..16)?, 16).ok()?);
    (id64(key) == id.as_bytes()).then_some(key)
}
