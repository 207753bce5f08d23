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
use serde_json::Value;

use super::answers::version_json;
use super::ids::{KIND_CONTAINER, KIND_EXEC, KIND_NETWORK, exec_key, id_decode, id64};

/// Steps in one container's story.
pub const STEPS: u64 = 20;

/// The daemon's version, as a Debian 12 host reports it.
pub const ENGINE_VERSION: &str = "20.10.24";
pub const API_VERSION: &str = "1.41";

const PROJECTS: [&str; 5] = ["shop", "billing", "search", "auth", "media"];
const SERVICES: [&str; 6] = ["web", "api", "worker", "db", "cache", "queue"];
/// The health probe every container has (`CMD-SHELL`, run by `/bin/sh -c`).
pub const PROBE: &str = "curl -fsS http://localhost:8080/health || exit 1";
/// What a human runs in a container.
pub const HUMAN: [&str; 3] = ["sh", "-c", "cat /etc/hostname"];

/// Sentinels in a rendered template where per-event values go. Their
/// widths are the widths of what replaces them, so the chunk size of an
/// event is known from its template.
const NANO_HOLE: &str = "9876501234987650123"; // 19 digits, as timeNano until 2286
const SECS_HOLE: &str = "1234509876"; // 10 digits
pub const EXEC_HOLE: &str = "exec_id_hole_exec_id_hole_exec_id_hole_exec_id_hole_exec_id_hole"; // 64

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
pub struct Slot {
    pub id: String,
    pub name: String,
    pub project: &'static str,
    pub service: &'static str,
    pub number: u64,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Labelled `dockwarden.heal=true`.
    pub heal: bool,
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

    /// Its compose project's network: ID and name.
    pub fn network(&self) -> (String, String) {
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
