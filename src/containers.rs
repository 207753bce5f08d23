//! The one view of each container that handlers and the status API
//! (`/api/v1/containers`) share: what its inspect says ([`Container`]: real name, image as created,
//! labels, user, restart policy, health probe, stop signal, which event
//! attributes its labels can forge, and its state), plus what dockwarden saw
//! happen to it since ([`Status`]: last exit code, health, OOM kills, last
//! failure, its own last actions). The projection of an inspect lives in
//! `inspect.rs`.
//!
//! One inspect cache, by container ID, kept current by [`Containers::observe`]
//! from the event stream, in the container's lane before any handler: a
//! `create`, `update`, `rename`, `pause` or `unpause` inspects it again in
//! the background (off the reaction path: the engine holds a container's
//! lock for ~50 ms after its exit), and so does a `start` when the status
//! API is on or the container is new to the view; a `die`, `oom`,
//! `health_status` (and otherwise `start`) updates its state from the event
//! alone; a `destroy` drops it. The whole engine is listed once at start
//! (`resync`). All of that only while some rule reads the view or the API
//! serves it ([`Containers::keep_all`]); otherwise the view holds just what
//! handlers looked up: no engine call that no rule needs. Memory is bounded by the containers the
//! engine has, and by [`MAX_ACTIONS`] actions each.
//!
//! It must not decide anything: handlers read it and judge for themselves,
//! and ask the engine when they need the state *now*.
//!
//! This file is long because the view's state changes per event and its
//! tests of them live beside the one `observe` that makes them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::docker::Engine;

use crate::docker::{DockerHandle, retry};
use crate::event::Event;
use crate::lock::lock;

mod inspect;

pub use inspect::ViewInspect;
pub mod stats;

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
    /// The last health check the engine ran (`State.Health.Log`), if any.
    pub last_check: Option<Check>,
}

/// One health check's result, as the engine logged it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    pub exit_code: i64,
    /// The first [`CHECK_OUTPUT_BYTES`] of its output, cut at a character
    /// boundary, without trailing blanks.
    pub output: String,
}

/// How much of a health check's output is kept.
pub const CHECK_OUTPUT_BYTES: usize = 512;

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
    /// `State.StartedAt` as the engine wrote it (RFC 3339; empty if never).
    pub started_at: String,
    /// `State.FinishedAt` as the engine wrote it, or the time of the last
    /// `die` seen since (RFC 3339; empty if never).
    pub finished_at: String,
}

/// A container name as Docker reports it in inspect (`/web-1`) or events
/// (`web-1`), without the leading `/`.
pub fn plain_name(name: &str) -> &str {
    name.trim_start_matches('/')
}

/// Linux's signals by name and number, as the engine knows them (its
/// `signal.SignalMap`), but for the real-time ones (`RTMIN+n`, `RTMAX-n`).
const SIGNALS: [(&str, u32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// The engine's `SIGRTMIN` and `SIGRTMAX` on Linux.
const RTMIN: u32 = 34;
const RTMAX: u32 = 64;

/// `SIGTERM`, `TERM`, `sigterm` or `15` → 15; `SIGRTMIN+3` → 37 (systemd
/// images stop with it): every form a container's `StopSignal` may take,
/// as the engine parses it. None if the engine would refuse it too.
pub fn signal_number(s: &str) -> Option<u32> {
    if let Ok(n) = s.parse() {
        return Some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(known, _)| *known == name) {
        return Some(n);
    }
    let offset = |rest: &str| -> Option<u32> {
        match rest {
            "" => Some(0),
            _ => rest.get(1..)?.parse().ok().filter(|n| *n <= RTMAX - RTMIN),
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN")
        && (rest.is_empty() || rest.starts_with('+'))
    {
        return offset(rest).map(|n| RTMIN + n);
    }
    if let Some(rest) = name.strip_prefix("RTMAX")
        && (rest.is_empty() || rest.starts_with('-'))
    {
        return offset(rest).map(|n| RTMAX - n);
    }
    None
}

/// The name of signal `n` for an exit code of 128 + n (`137` → `SIGKILL`).
pub fn signal_name(n: i64) -> Option<&'static str> {
    Some(match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        30 => "SIGPWR",
        31 => "SIGSYS",
        _ => return None,
    })
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
    /// The last failure seen: a non-zero exit, an OOM kill, or unhealthy.
    pub last_failure: Option<Failure>,
}

/// A failure of a container, as its events told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `exit`, `oom` or `unhealthy`.
    pub kind: &'static str,
    /// The exit code of an `exit` (None when a label could forge it).
    pub exit_code: Option<i64>,
    /// Unix nanoseconds of the event.
    pub time_nano: i64,
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

/// View inspects in flight at once. The stream can show thousands of
/// creates a second (`docker compose up`, CI runners); unbounded, each
/// would hold a request and its buffers at once. The rest wait their turn;
/// a handler that needs one of them waits for it (`flights`). As many as
/// the engine's reads keep connections (`docker::unix::MAX_IDLE`), which
/// bound the connections themselves: with 8, at an offered 100 k events/s
/// (5 k creates a second) the creates' inspects fell behind, the execs
/// waiting for them held their lanes, and the queue's budget ran out
/// (bench runs side by side: 150–410 k of 1 M dropped, against 0–190 k).
/// Heal decisions inspect on their own.
const MAX_VIEW_INSPECTS: usize = crate::docker::unix::MAX_IDLE;

/// The bound on view inspects in flight.
struct Inspects(tokio::sync::Semaphore);

impl Default for Inspects {
    fn default() -> Self {
        Inspects(tokio::sync::Semaphore::new(MAX_VIEW_INSPECTS))
    }
}

/// Every container dockwarden knows, by ID.
#[derive(Default)]
pub struct Containers {
    entries: Mutex<foldhash::HashMap<String, Entry>>,
    inspects: Inspects,
    /// View inspects asked for and not yet landed, by container: a
    /// handler that needs the view meanwhile waits for it rather than
    /// asking the engine again. Each receiver wakes when its inspect's
    /// sender is dropped.
    flights: Mutex<foldhash::HashMap<String, tokio::sync::watch::Receiver<()>>>,
    /// Inspect every container the stream shows (on create, and on first
    /// sight), not only those a handler asks for: some rule in force reads
    /// the view, or the status API serves it.
    keep_all: AtomicBool,
    /// The status API is on: its answers show the engine's state as of the
    /// last start (restart count, start time), so every start inspects
    /// again. Without it, a start of a known container updates the state
    /// from the event alone: what handlers read (name, labels, restart
    /// policy, probe) does not change when a container starts.
    exact: AtomicBool,
}

impl Containers {
    /// A view that the status API serves: it keeps every container, and
    /// inspects again on each start.
    pub fn serving_api() -> Containers {
        let view = Containers::default();
        view.keep_all.store(true, Ordering::Relaxed);
        view.exact.store(true, Ordering::Relaxed);
        view
    }

    /// Whether some rule in force reads the view (the dispatcher says so
    /// for every batch: a reload can change it). The status API keeps it on.
    pub fn keep_all(&self, needed: bool) {
        let on = needed || self.exact.load(Ordering::Relaxed);
        self.keep_all.store(on, Ordering::Relaxed);
    }

    /// Whether every container is inspected, or only those asked for.
    pub fn keeps_all(&self) -> bool {
        self.keep_all.load(Ordering::Relaxed)
    }

    /// Whether `event` needs an inspect to keep the view current.
    fn needs_inspect(&self, event: &Event) -> bool {
        if !self.keeps_all() {
            return false;
        }
        event.action.as_ref() != "start"
            || self.exact.load(Ordering::Relaxed)
            || self.get(&event.actor_id).is_none()
    }

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
        docker: &Engine,
        id: &str,
    ) -> Result<Arc<Container>, bollard::errors::Error> {
        if let Some(c) = self.get(id) {
            return Ok(c);
        }
        let flight = lock(&self.flights).get(id).cloned();
        if let Some(mut landed) = flight {
            // Never sent on: this returns when the inspect is done.
            let _ = landed.changed().await;
            if let Some(c) = self.get(id) {
                return Ok(c);
            }
        }
        self.inspect(docker, id).await
    }

    /// Inspects container `id` now and caches what it says.
    pub async fn inspect(
        &self,
        docker: &Engine,
        id: &str,
    ) -> Result<Arc<Container>, bollard::errors::Error> {
        let info = retry(|| docker.inspect_container_as::<ViewInspect>(id)).await?;
        Ok(self.remember(id, Container::from_view(info)))
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

    /// Every container whose inspect is cached, with what dockwarden saw
    /// happen to it, sorted by name.
    pub fn snapshot(&self) -> Vec<(Arc<Container>, Status)> {
        let mut all: Vec<_> = lock(&self.entries)
            .values()
            .filter_map(|e| Some((e.container.clone()?, e.status.clone())))
            .collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        all
    }

    /// One container by name, full ID, or a unique ID prefix of at least
    /// 12 characters.
    pub fn find(&self, key: &str) -> Option<(Arc<Container>, Status)> {
        let entries = lock(&self.entries);
        let pick = |e: &Entry| Some((e.container.clone()?, e.status.clone()));
        if let Some(found) = entries.get(key).and_then(pick) {
            return Some(found);
        }
        let key = plain_name(key);
        if let Some(found) = entries
            .values()
            .find(|e| e.container.as_ref().is_some_and(|c| c.name == key))
            .and_then(pick)
        {
            return Some(found);
        }
        if key.len() < 12 {
            return None;
        }
        let mut prefixed = entries.iter().filter(|(id, _)| id.starts_with(key));
        match (prefixed.next(), prefixed.next()) {
            (Some((_, e)), None) => pick(e),
            _ => None,
        }
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
                "create"
                    | "start"
                    | "update"
                    | "rename"
                    | "pause"
                    | "unpause"
                    | "die"
                    | "oom"
                    | "health_status"
                    | "destroy"
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
            // New, or its configuration or state may have changed (a
            // docker update, a rename, a recreate by someone else, a
            // pause): inspect again.
            "create" | "start" | "update" | "rename" | "pause" | "unpause"
                if self.needs_inspect(event) =>
            {
                let Ok(docker) = docker.get() else { return };
                let this = self.clone();
                let id = id.to_owned();
                let (done, landed) = tokio::sync::watch::channel(());
                lock(&self.flights).insert(id.clone(), landed.clone());
                tasks.spawn(async move {
                    // Never closed: the semaphore lives as long as the view.
                    if let Ok(_turn) = this.inspects.0.acquire().await
                        && let Err(e) = this.inspect(&docker, &id).await
                    {
                        tracing::debug!(id = %id, error = %e, "Cannot inspect container.");
                    }
                    // Only the newest flight of this container leaves the map.
                    let mut flights = lock(&this.flights);
                    if flights.get(&id).is_some_and(|f| f.same_channel(&landed)) {
                        flights.remove(&id);
                    }
                    drop(done);
                });
            }
            "destroy" => {
                lock(&self.entries).remove(id);
            }
            _ => {}
        }
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get_mut(id) else {
            return;
        };
        let forgeable = entry.container.as_ref().map(|c| c.forgeable);
        let time_nano = event.time_nano;
        match &*event.action {
            // Known, and not inspected again (see `exact`): what the
            // engine's state now says, from the event.
            "start" if !self.exact.load(Ordering::Relaxed) => {
                let probe = entry.container.as_ref().is_some_and(|c| c.probe.is_some());
                with_state(entry, |s| {
                    s.status = "running";
                    s.running = true;
                    s.exit_code = 0;
                    s.oom_killed = false;
                    if probe {
                        s.health = "starting";
                    }
                    s.started_at = crate::clock::rfc3339_nanos(time_nano);
                });
            }
            "die" => {
                let exit_code = event
                    .exit_code()
                    .filter(|_| forgeable.is_some_and(|f| !f.exit_code));
                entry.status.last_exit_code = exit_code;
                // The state as the engine now has it, without an inspect
                // (which would wait on the container's lock).
                with_state(entry, |s| {
                    s.status = "exited";
                    s.running = false;
                    if let Some(code) = exit_code {
                        s.exit_code = code;
                    }
                    s.finished_at = crate::clock::rfc3339_nanos(time_nano);
                });
                if exit_code.is_some_and(|c| c != 0) {
                    entry.status.last_failure = Some(Failure {
                        kind: "exit",
                        exit_code,
                        time_nano,
                    });
                }
            }
            "oom" => {
                entry.status.oom_kills += 1;
                with_state(entry, |s| s.oom_killed = true);
                entry.status.last_failure = Some(Failure {
                    kind: "oom",
                    exit_code: None,
                    time_nano,
                });
            }
            "health_status" => {
                let health = event.health_status().map(str::to_owned);
                let known = match health.as_deref() {
                    Some("healthy") => "healthy",
                    Some("unhealthy") => "unhealthy",
                    Some("starting") => "starting",
                    _ => "none",
                };
                with_state(entry, |s| s.health = known);
                if known == "unhealthy" {
                    entry.status.last_failure = Some(Failure {
                        kind: "unhealthy",
                        exit_code: None,
                        time_nano,
                    });
                }
                entry.status.health = health;
            }
            _ => {}
        }
    }
}

/// Replaces the cached view's state with `change` applied to a copy (the
/// view is shared immutably with handlers that hold it).
fn with_state(entry: &mut Entry, change: impl FnOnce(&mut State)) {
    // A copy only while a handler still holds the previous one.
    if let Some(c) = &mut entry.container {
        change(&mut Arc::make_mut(c).state);
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
        // Every form a StopSignal may take (httpd's image stops with
        // SIGWINCH, systemd's with SIGRTMIN+3).
        assert_eq!(signal_number("SIGWINCH"), Some(28));
        assert_eq!(signal_number("quit"), Some(3));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(37));
        assert_eq!(signal_number("RTMAX"), Some(64));
        assert_eq!(signal_number("SIGRTMAX-2"), Some(62));
        assert_eq!(signal_number("SIGRTMIN+31"), None);
        assert_eq!(signal_number("SIGNOPE"), None);
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
    fn events_keep_the_state_current_and_find_by_name_or_prefix() {
        let view = Arc::new(Containers::default());
        let id = "0123456789abcdef0123";
        let mut c = Container {
            id: id.into(),
            name: "web-1".into(),
            ..Container::default()
        };
        c.state.status = "running";
        c.state.running = true;
        view.remember(id, c);
        let docker = DockerHandle::default();
        let tasks = tokio_util::task::TaskTracker::new();
        let mut attributes = crate::event::Attributes::default();
        attributes.push("exitCode", "3");
        let die = Event::new("container", "die", id.into(), attributes, 5_000_000_000);
        view.observe(&die, &docker, &tasks);
        let (c, s) = view.find("web-1").expect("by name");
        assert_eq!(
            (c.state.status, c.state.running, c.state.exit_code),
            ("exited", false, 3)
        );
        assert_eq!(c.state.finished_at, "1970-01-01T00:00:05.000000000Z");
        assert_eq!(
            s.last_failure.map(|f| (f.kind, f.exit_code)),
            Some(("exit", Some(3)))
        );
        let oom = Event::new("container", "oom", id.into(), Default::default(), 6);
        view.observe(&oom, &docker, &tasks);
        let (c, s) = view.find(&id[..12]).expect("by prefix");
        assert!(c.state.oom_killed);
        assert_eq!(
            (s.oom_kills, s.last_failure.map(|f| f.kind)),
            (1, Some("oom"))
        );
        assert!(
            view.find(&id[..11]).is_none(),
            "prefixes under 12 characters"
        );
        assert!(view.find(id).is_some() && view.find("/web-1").is_some());
        assert_eq!(view.snapshot().len(), 1);
    }
}
