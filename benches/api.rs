//! The status API with a realistic fleet, and what it costs in memory.
//!
//!     cargo bench --bench api
//!     API_BENCH_REQUESTS=10000 API_BENCH_ROUNDS=15 API_BENCH_METRICS=1000 cargo bench --bench api
//!
//! 1. Latency: the real router (`dockwarden::http::router`) served by axum
//!    on 127.0.0.1 from a runtime built as `dockwarden run` builds its own,
//!    with 500 containers projected from inspect-shaped JSON (compose names
//!    and labels, some exited, some unhealthy, some with a last failure), a
//!    history fed their events and dockwarden's own, the builtin registry's
//!    heal book (empty, so every container's heal rule is found by matching
//!    the rules: the dearer path) and `rules/default.toml`. A keep-alive
//!    client on another runtime asks one request at a time, after a warm-up;
//!    every answer is checked (200, and the count of what it lists) after
//!    its clock stops, so errors cannot pass for speed.
//! 2. `/metrics` alone; while a second client asks for the list back to
//!    back from a second server on a runtime of its own (what sharing the
//!    machine costs); and while it asks the same server (what sharing the
//!    server costs). Rounds rotate the order; medians of the rounds'
//!    percentiles, and the share of slow answers, side by side.
//! 3. Memory, in fresh child processes (this binary again): live heap bytes
//!    (counted by a wrapping allocator) and RSS (`VmRSS`) before and after
//!    filling the view and `History`s to the worst case for 1,000
//!    containers at the `[api]` defaults, per unit and all at once, beside
//!    what `size_of` and the values' own heap sizes add up to.
//!
//! No engine needed. The allocator is the binary's (mimalloc), wrapped to
//! count bytes in the memory children only. Exits 1 on a wrong answer, if
//! the list's p99 is above 5 ms, or if `/metrics`' p99 (all rounds pooled)
//! while the same server is asked for the list back to back is above 2 ms,
//! or above twice what the same load asked of another runtime gives (on
//! two CPUs a client asking 1,500 lists a second slows everything a little;
//! what the API must not do is hold up the server that scrapes are asked
//! of).
//!
//! This file is long because it builds a whole fleet, serves it, loads it
//! and weighs it; the three parts share the fleet.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, VecDeque};
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bollard::models::ContainerInspectResponse;
use dockwarden::containers::{Action, Container, Containers, Status};
use dockwarden::docker::DockerHandle;
use dockwarden::event::{Attributes, Event};
use dockwarden::handlers::Registry;
use dockwarden::history::{Entry, History, Limits, MAX_GONE, RING_EVENT_BYTES};
use dockwarden::internal_events::audit::ExecStarted;
use dockwarden::internal_events::heal::{Acted, ActionResult};
use dockwarden::internal_events::{InternalEvent, own_event};
use dockwarden::metrics::Metrics;
use dockwarden::source::Health;
use serde_json::{Map, Value, json};

const TARGET_P99_MS: f64 = 5.0;
/// "`/metrics` is unaffected": what sharing the server with the list adds
/// beyond what sharing the two CPUs adds (the same load from another
/// runtime), at most this factor on its p99 ...
const TARGET_METRICS_RATIO: f64 = 2.0;
/// ... and its p99 under that load stays this low (a scrape's timeout is
/// 10 s).
const TARGET_METRICS_P99_MS: f64 = 2.0;
const TOKEN: &str = "bench-api-token-0123456789abcdef";
const FLEET: usize = 500;
const WORST: usize = 1000;
/// `[api]` defaults.
const PER_CONTAINER: usize = 200;
const EVENT_RING: usize = 10_000;
const CHILD: &str = "DOCKWARDEN_API_BENCH_MEMORY";

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(delta: isize) {
    if COUNTING.load(Relaxed) {
        LIVE.fetch_add(delta, Relaxed);
    }
}

// SAFETY: every call is passed on unchanged to mimalloc; only a counter is
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(p, l) };
        count(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { mimalloc::MiMalloc.realloc(p, l, new) };
        if !q.is_null() {
            count(new as isize - l.size() as isize);
        }
        q
    }
}

// ---------------------------------------------------------------- the fleet

const STACKS: [&str; 8] = [
    "shop", "billing", "search", "auth", "media", "ledger", "crm", "edge",
];
const SERVICES: [&str; 8] = [
    "web", "api", "worker", "db", "cache", "queue", "cron", "proxy",
];
const TEAMS: [&str; 3] = ["payments", "platform", "growth"];
const POLICIES: [&str; 4] = ["unless-stopped", "always", "no", "on-failure"];
const PROBE: &str = "curl -fsS http://localhost:8080/health || exit 1";
const COMMAND: &[&str] = &[
    "/bin/sh",
    "-c",
    "pg_dump -U app -d shop --table=orders --data-only | gzip > /backup/orders.sql.gz",
];

fn hex64(seed: u64) -> String {
    let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..4)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            format!("{:016x}", z ^ (z >> 31))
        })
        .collect()
}

/// Container `i`: `shop_web-1`, ... with compose labels; every tenth
/// exited, every twentieth unhealthy, a third opted in to healing.
fn inspect(i: usize) -> ContainerInspectResponse {
    let (stack, service, n) = (STACKS[i % 8], SERVICES[(i / 8) % 8], i / 64 + 1);
    let exited = i % 10 == 7;
    let code = if exited {
        [1, 137, 143, 2, 0][i / 10 % 5]
    } else {
        0
    };
    let probe = matches!(service, "web" | "api");
    let health = match (probe, i % 20 == 3) {
        (false, _) => Value::Null,
        (true, true) => json!({"Status": "unhealthy", "FailingStreak": 3}),
        (true, false) => json!({"Status": "healthy", "FailingStreak": 0}),
    };
    let mut labels = json!({
        "com.docker.compose.project": stack,
        "com.docker.compose.service": service,
        "com.docker.compose.container-number": n.to_string(),
        "com.docker.compose.version": "2.24.6",
        "com.docker.compose.oneoff": "False",
        "com.docker.compose.config-hash": hex64(i as u64 + 7),
        "com.docker.compose.image": format!("sha256:{}", hex64(i as u64 / 8)),
        "com.docker.compose.project.config_files": format!("/srv/{stack}/docker-compose.yml"),
        "com.docker.compose.project.working_dir": format!("/srv/{stack}"),
        "org.opencontainers.image.version": format!("1.{}.{}", i % 20, i % 7),
        "team": TEAMS[i % 3],
    });
    if i.is_multiple_of(3) {
        labels["dockwarden.heal"] = "true".into();
    }
    serde_json::from_value(json!({
        "Id": hex64(i as u64),
        "Name": format!("/{stack}_{service}-{n}"),
        "RestartCount": i % 4,
        "Config": {
            "Image": format!("registry.example.com/{stack}/{service}:1.{}.{}", i % 20, i % 7),
            "User": if service == "db" { "postgres" } else { "1000" },
            "Labels": labels,
            "Healthcheck": if probe { json!({"Test": ["CMD-SHELL", PROBE]}) } else { Value::Null },
        },
        "HostConfig": {
            "Memory": if service == "db" { 2_147_483_648_i64 } else { 536_870_912 },
            "RestartPolicy": {"Name": POLICIES[i % 4],
                              "MaximumRetryCount": if i % 4 == 3 { 3 } else { 0 }},
        },
        "State": {
            "Status": if exited { "exited" } else { "running" },
            "Running": !exited,
            "ExitCode": code,
            "OOMKilled": code == 137 && i % 20 == 17,
            "Health": health,
            "StartedAt": "2026-11-23T09:12:44.123456789Z",
            "FinishedAt": if exited { "2026-11-23T10:02:01.987654321Z" } else { "0001-01-01T00:00:00Z" },
        },
    }))
    .expect("an inspect the engine could send")
}

/// The attributes of `c`'s engine events: its labels, image and name, in
/// the engine's (sorted) order, and `extra`.
fn attributes(c: &Container, extra: &[(&str, &str)]) -> Attributes {
    let mut all: BTreeMap<&str, &str> = c
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.insert("image", &c.image);
    all.insert("name", &c.name);
    all.extend(extra.iter().copied());
    let mut a = Attributes::default();
    for (k, v) in all {
        a.push(k, v);
    }
    a
}

fn engine(c: &Container, raw_action: &str, extra: &[(&str, &str)], t: i64) -> Event {
    Event::new(
        "container",
        raw_action,
        c.id.clone(),
        attributes(c, extra),
        t,
    )
}

/// dockwarden's own event of `fact` about `c`, as the emitter makes it.
fn own(fact: &dyn InternalEvent, c: &Container, t: i64) -> Event {
    let mut a = Attributes::default();
    a.push("name", &c.name);
    a.push("image", &c.image);
    let mut labels: Vec<_> = c.labels.iter().collect();
    labels.sort();
    for (k, v) in labels {
        a.push(k, v);
    }
    own_event(fact, &c.id, a, t).expect("a keyed fact")
}

fn restart(c: &Container, attempt: u32, t: i64, metrics: &Metrics) -> Event {
    restart_why(c, attempt, t, metrics, Vec::new())
}

/// A restart of an unhealthy container whose check printed 512 bytes: the
/// largest restart entry.
fn restart_unhealthy(c: &Container, t: i64, metrics: &Metrics) -> Event {
    let why = vec![
        ("check_exit_code", Value::from(1)),
        ("check_output", Value::from("x".repeat(512))),
    ];
    restart_why(c, 1, t, metrics, why)
}

fn restart_why(
    c: &Container,
    attempt: u32,
    t: i64,
    metrics: &Metrics,
    why: Vec<(&'static str, Value)>,
) -> Event {
    let fact = Acted {
        why,
        cause: None,
        container: &c.name,
        rule: "heal-crashes",
        action: "restart",
        failure: "exit 1",
        attempt,
        max_restarts: 5,
        backoff: Duration::from_millis(1000 << attempt.min(8)),
        result: ActionResult::Ok(format!("Restarted {}.", c.name)),
        reaction: Duration::from_micros(850),
        latency: Duration::from_millis(1200),
    };
    fact.emit(metrics);
    own(&fact, c, t)
}

fn exec(c: &Container, command: &[&str], k: u64, t: i64) -> Event {
    let mut record = Map::new();
    record.insert("user".into(), "root".into());
    record.insert("command".into(), Value::from(command.to_vec()));
    record.insert("tty".into(), true.into());
    record.insert("privileged".into(), false.into());
    record.insert("exec_id".into(), hex64(k).into());
    record.insert("exec_id_verified".into(), true.into());
    let fact = ExecStarted {
        container: &c.name,
        record: &record,
        healthcheck: false,
        severity: "high",
        written: true,
    };
    own(&fact, c, t)
}

/// The view, history and metrics of `n` containers, as a day of events
/// left them.
struct Fleet {
    containers: Arc<Containers>,
    history: Arc<History>,
    metrics: Arc<Metrics>,
    names: Vec<String>,
    events: usize,
}

fn fleet(n: usize, rules: &dockwarden::rules::Ruleset) -> Fleet {
    let containers = Arc::new(Containers::default());
    let metrics = Arc::new(Metrics::new());
    let history = Arc::new(History::new(Limits {
        per_container: PER_CONTAINER,
        keep: Duration::from_secs(3600),
        ring: EVENT_RING,
    }));
    let (docker, tasks) = (
        DockerHandle::default(),
        tokio_util::task::TaskTracker::new(),
    );
    let mut t = dockwarden::clock::unix_nanos() - 3_600_000_000_000;
    let mut names = Vec::new();
    let mut events = 0;
    for i in 0..n {
        let info = inspect(i);
        let c = Container::from_inspect(&info);
        containers.remember(&c.id, c.clone());
        let mut batch = vec![
            engine(&c, "create", &[], t),
            engine(&c, "start", &[], t + 300_000_000),
        ];
        t += 1_000_000_000;
        if c.probe.is_some() {
            let action = format!("exec_start: /bin/sh -c {PROBE}");
            batch.push(engine(&c, &action, &[("execID", &hex64(i as u64 + 99))], t));
        }
        if i % 10 == 5 {
            batch.push(engine(&c, "die", &[("exitCode", "1")], t + 1));
            batch.push(restart(&c, 1, t + 2, &metrics));
            batch.push(engine(&c, "start", &[], t + 3));
            containers.record_action(&c.id, "restart", "ok");
        }
        if c.state.status == "exited" {
            let code = c.state.exit_code.to_string();
            if c.state.exit_code == 143 {
                batch.push(engine(&c, "kill", &[("signal", "15")], t + 4));
            }
            batch.push(engine(&c, "die", &[("exitCode", &code)], t + 5));
        }
        if c.state.health == "unhealthy" {
            batch.push(engine(&c, "health_status: unhealthy", &[], t + 6));
        }
        if i % 25 == 11 {
            batch.push(exec(&c, COMMAND, i as u64, t + 7));
        }
        let batch: Vec<Arc<Event>> = batch.into_iter().map(Arc::new).collect();
        for e in &batch {
            metrics.event_counter(e.labels).inc();
            for r in rules.matching(e) {
                metrics.rule_matched(&r.name);
                metrics.handler_ran(r.handler_name, "ok", Duration::from_micros(180));
            }
            containers.observe(e, &docker, &tasks);
        }
        history.record(&batch, &containers);
        // Started again since (a start inspects it anew).
        containers.remember(&c.id, Container::from_inspect(&info));
        events += batch.len();
        names.push(c.name);
    }
    Fleet {
        containers,
        history,
        metrics,
        names,
        events,
    }
}

// ------------------------------------------------------------------ latency

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn get(client: &reqwest::Client, url: &str) -> Result<bytes::Bytes, String> {
    let response = client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: body: {e}"))?;
    if status != reqwest::StatusCode::OK {
        let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("GET {url}: {status}: {start}"));
    }
    Ok(body)
}

/// What an answer must say, given the request's number.
type Check<'a> = &'a dyn Fn(usize, &[u8]) -> Result<(), String>;

struct Timed {
    ms: Vec<f64>,
    bytes: usize,
}

impl Timed {
    fn p(&self, p: f64) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, p)
    }
}

/// `n` requests one at a time; each answer checked after its clock stops.
async fn measure(
    client: &reqwest::Client,
    n: usize,
    url: &dyn Fn(usize) -> String,
    check: Check<'_>,
) -> Result<Timed, String> {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for i in 0..n {
        let url = url(i);
        let started = Instant::now();
        let body = get(client, &url).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        check(i, &body).map_err(|e| format!("GET {url}: {e}"))?;
        bytes = body.len();
    }
    Ok(Timed { ms, bytes })
}

fn json(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))
}

fn array_of(n: usize) -> impl Fn(usize, &[u8]) -> Result<(), String> {
    move |_, body| {
        let v = json(body)?;
        let len = v.as_array().map(Vec::len);
        match len {
            Some(len) if len == n => Ok(()),
            _ => Err(format!("expected an array of {n}, found {len:?} entries")),
        }
    }
}

fn row(label: &str, t: &Timed) {
    println!(
        "{label:<52} {:>6} {:>9} {:>8.3} {:>8.3} {:>8.3}",
        t.ms.len(),
        t.bytes,
        t.p(50.0),
        t.p(99.0),
        t.p(100.0),
    );
}

/// A client asking for the list back to back on its own thread, until
/// stopped; every 16th answer's count is checked.
struct Hammer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl Hammer {
    fn start(url: String, expected: usize) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("hammer runtime: {e}"))?;
            rt.block_on(async move {
                let client = reqwest::Client::new();
                let check = array_of(expected);
                while !s.load(Relaxed) {
                    let body = get(&client, &url).await?;
                    if d.fetch_add(1, Relaxed) % 16 == 0 {
                        check(0, &body)?;
                    }
                }
                Ok(())
            })
        });
        Hammer { stop, done, thread }
    }

    /// Stops it; the requests it made.
    fn stop(self) -> Result<usize, String> {
        self.stop.store(true, Relaxed);
        match self.thread.join() {
            Ok(r) => r.map(|()| self.done.load(Relaxed)),
            Err(_) => Err("the hammer thread panicked".into()),
        }
    }
}

struct Verdicts {
    list_p99: f64,
    /// `/metrics` p99 (all rounds pooled: which worker a round's connections
    /// land on makes whole rounds slow or not, which a median of the rounds
    /// hides) with the list asked of the same server, over alone.
    metrics_ratio: f64,
    /// The same with the list asked of another runtime (CPU contention only).
    metrics_elsewhere: f64,
    /// `/metrics` p99 (pooled) with the list asked of the same server, ms.
    metrics_loaded_p99: f64,
}

async fn latency(
    base: &str,
    elsewhere: &str,
    fleet: &Fleet,
    requests: usize,
    rounds: usize,
) -> Result<Verdicts, String> {
    let client = reqwest::Client::new();
    let names = &fleet.names;
    let n = names.len();
    let list_url = format!("{base}/api/v1/containers");
    let events = fleet.events.min(1000);
    let list = array_of(n);
    let one = |i: usize, body: &[u8]| {
        let v = json(body)?;
        (v["name"] == names[i % n].as_str() && v["heal"].is_object())
            .then_some(())
            .ok_or_else(|| format!("not container {}: {v}", names[i % n]))
    };
    let history = |i: usize, body: &[u8]| {
        let v = json(body)?;
        let entries = v["entries"].as_array().map_or(0, Vec::len);
        (v["name"] == names[i % n].as_str() && entries > 0)
            .then_some(())
            .ok_or_else(|| format!("no history of {}: {v}", names[i % n]))
    };
    let page = array_of(events);
    let metrics = |_: usize, body: &[u8]| {
        std::str::from_utf8(body)
            .is_ok_and(|t| t.contains("dockwarden_events_total{"))
            .then_some(())
            .ok_or_else(|| "no dockwarden_events_total in /metrics".to_owned())
    };
    type Case<'a> = (String, usize, Box<dyn Fn(usize) -> String + 'a>, Check<'a>);
    let cases: Vec<Case<'_>> = vec![
        (
            format!("GET /api/v1/containers ({n} entries)"),
            requests,
            Box::new(|_| list_url.clone()),
            &list,
        ),
        (
            "GET /api/v1/containers/{name}".into(),
            requests,
            Box::new(|i| format!("{base}/api/v1/containers/{}", names[i % n])),
            &one,
        ),
        (
            "GET /api/v1/containers/{name}/history".into(),
            requests,
            Box::new(|i| format!("{base}/api/v1/containers/{}/history", names[i % n])),
            &history,
        ),
        (
            format!("GET /api/v1/events?limit=1000 ({events} events)"),
            requests / 4,
            Box::new(|_| format!("{base}/api/v1/events?limit=1000")),
            &page,
        ),
        (
            "GET /metrics".into(),
            requests,
            Box::new(|_| format!("{base}/metrics")),
            &metrics,
        ),
    ];
    println!(
        "{:<52} {:>6} {:>9} {:>8} {:>8} {:>8}",
        "request (one at a time, keep-alive)", "n", "bytes", "p50 ms", "p99 ms", "max ms"
    );
    let mut list_p99 = f64::NAN;
    for (i, (label, count, url, check)) in cases.iter().enumerate() {
        measure(&client, 200, url.as_ref(), *check).await?;
        let t = measure(&client, *count, url.as_ref(), *check).await?;
        row(label, &t);
        if i == 0 {
            list_p99 = t.p(99.0);
        }
    }

    // /metrics alone; while another client asks for the list back to back
    // from a second server on its own runtime (the machine is shared, the
    // server is not); and while it asks this server. Rounds rotate the
    // order.
    let per_round = env_usize("API_BENCH_METRICS", 500).max(100);
    let metrics_url = |_: usize| format!("{base}/metrics");
    let lists = [
        None,
        Some(format!("{elsewhere}/api/v1/containers")),
        Some(list_url.clone()),
    ];
    let (mut p50, mut p99) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
    let mut all: [Vec<f64>; 3] = [vec![], vec![], vec![]];
    // Rounds in which more than 5% of the answers took over 1 ms.
    let mut bad_rounds = [0usize; 3];
    let (mut listed, mut busy) = (0, Duration::ZERO);
    for round in 0..rounds {
        for j in 0..lists.len() {
            let which = (round + j) % lists.len();
            let hammer = lists[which].clone().map(|url| Hammer::start(url, n));
            if let Some(h) = &hammer {
                while h.done.load(Relaxed) < 3 && !h.thread.is_finished() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let started = Instant::now();
            let t = measure(&client, per_round, &metrics_url, &metrics).await;
            if let Some(h) = hammer {
                busy += started.elapsed();
                listed += h.stop()?;
            }
            let t = t?;
            p50[which].push(t.p(50.0));
            p99[which].push(t.p(99.0));
            let slow = t.ms.iter().filter(|ms| **ms > 1.0).count();
            bad_rounds[which] += usize::from(slow * 20 > per_round);
            all[which].extend(t.ms);
        }
    }
    let p50 = p50.map(median);
    let p99 = p99.map(median);
    let pooled = all.clone().map(|ms| Timed { ms, bytes: 0 }.p(99.0));
    let share =
        all.map(|ms| 100.0 * ms.iter().filter(|x| **x > 1.0).count() as f64 / ms.len() as f64);
    println!();
    println!(
        "GET /metrics while another client asks for the list back to back ({rounds} rounds x {per_round}, order rotated)"
    );
    println!(
        "{:<34} {:>9} {:>22} {:>7} {:>20} {:>7}",
        "", "alone", "list on other runtime", "ratio", "list on this server", "ratio"
    );
    for (label, p) in [
        ("p50 ms, median of the rounds", p50),
        ("p99 ms, median of the rounds", p99),
        ("p99 ms, all rounds pooled", pooled),
    ] {
        println!(
            "{label:<34} {:>9.3} {:>22.3} {:>7.2} {:>20.3} {:>7.2}",
            p[0],
            p[1],
            p[1] / p[0],
            p[2],
            p[2] / p[0]
        );
    }
    println!(
        "{:<34} {:>8.2}% {:>21.2}% {:>7} {:>19.2}%",
        "answers over 1 ms", share[0], share[1], "", share[2]
    );
    println!(
        "{:<34} {:>9} {:>22} {:>7} {:>20}",
        "rounds with over 5% of them",
        format!("{}/{rounds}", bad_rounds[0]),
        format!("{}/{rounds}", bad_rounds[1]),
        "",
        format!("{}/{rounds}", bad_rounds[2])
    );
    println!(
        "  (the other client: {listed} lists of {n} in {:.1} s, {:.0}/s; every answer 200, every 16th counted)",
        busy.as_secs_f64(),
        listed as f64 / busy.as_secs_f64().max(1e-9)
    );
    Ok(Verdicts {
        list_p99,
        metrics_ratio: pooled[2] / pooled[0],
        metrics_elsewhere: pooled[1] / pooled[0],
        metrics_loaded_p99: pooled[2],
    })
}

// ------------------------------------------------------------------- memory

fn proc_status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[derive(Clone, Copy)]
struct Mark {
    heap: isize,
    rss: usize,
}

impl Mark {
    fn now() -> Mark {
        Mark {
            heap: LIVE.load(Relaxed),
            rss: proc_status_bytes("VmRSS:"),
        }
    }

    /// Heap and RSS bytes per unit since `self`.
    fn per(self, units: usize) -> (f64, f64) {
        let now = Mark::now();
        let units = units as f64;
        (
            (now.heap - self.heap) as f64 / units,
            (now.rss as f64 - self.rss as f64) / units,
        )
    }
}

/// Buckets of a hashbrown table grown to `n` items by insertion.
fn buckets(n: usize) -> usize {
    match n {
        0 => 0,
        1..4 => 4,
        4..8 => 8,
        _ => (n * 8).div_ceil(7).next_power_of_two(),
    }
}

/// Heap bytes of a table of `n` items of `size` bytes each (control bytes
/// included).
fn table(n: usize, size: usize) -> usize {
    let b = buckets(n);
    if b == 0 { 0 } else { b * size + b + 16 }
}

/// Heap bytes below a JSON value (a map of up to 11 fields is one B-tree
/// leaf).
fn json_heap(v: &Value) -> usize {
    match v {
        Value::String(s) => s.capacity(),
        Value::Array(a) => {
            a.capacity() * size_of::<Value>() + a.iter().map(json_heap).sum::<usize>()
        }
        Value::Object(m) => map_heap(m),
        _ => 0,
    }
}

/// A B-tree leaf of a `serde_json::Map`: parent link, 11 keys, 11
/// values, its index and length.
fn btree_leaf() -> usize {
    (8 + 11 * (size_of::<String>() + size_of::<Value>()) + 4).next_multiple_of(8)
}

fn map_heap(m: &Map<String, Value>) -> usize {
    m.len().div_ceil(11) * btree_leaf()
        + m.iter()
            .map(|(k, v)| k.capacity() + json_heap(v))
            .sum::<usize>()
}

/// The capacity of a deque after `n` pushes onto an empty one (the same
/// for every element of at most 1 KB).
fn grown(n: usize) -> usize {
    let mut d: VecDeque<u64> = VecDeque::new();
    (0..n as u64).for_each(|x| d.push_back(x));
    d.capacity()
}

/// An [`Entry`]'s own bytes: its slot and what only it holds (the ID is
/// shared with its lifecycle's holder; the details are one allocation of
/// JSON text).
fn entry_layout(e: &Entry) -> usize {
    size_of::<Entry>() + e.details.len()
}

/// A ring event's bytes, its slot in the ring excluded.
fn event_layout(e: &Event) -> usize {
    let mut buf = String::new();
    let mut spans: Vec<(u32, u32, u32)> = Vec::new();
    for (k, v) in e.attributes.iter() {
        buf.push_str(k);
        buf.push_str(v);
        spans.push((0, 0, 0));
    }
    16 + size_of::<Event>()
        + e.actor_id.capacity()
        + e.detail.as_ref().map_or(0, String::capacity)
        + buf.capacity()
        + spans.capacity() * size_of::<(u32, u32, u32)>()
        + e.fields
            .as_ref()
            .map_or(0, |f| 16 + size_of::<Map<String, Value>>() + map_heap(f))
}

/// A view entry's bytes, with its share of the view's table.
fn view_layout(c: &Container, s: &Status, n: usize) -> usize {
    let labels = table(c.labels.len(), size_of::<(String, String)>())
        + c.labels
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity())
            .sum::<usize>();
    let probe = c.probe.as_ref().map_or(0, |p| {
        p.capacity() * size_of::<String>() + p.iter().map(String::capacity).sum::<usize>()
    });
    let slot = size_of::<String>() + size_of::<Option<Arc<Container>>>() + size_of::<Status>();
    16 + size_of::<Container>()
        + c.id.capacity()
        + c.name.capacity()
        + c.image.capacity()
        + c.user.capacity()
        + labels
        + probe
        + c.state.started_at.capacity()
        + c.state.finished_at.capacity()
        + table(n, slot) / n
        + c.id.len()
        + grown(s.actions.len()) * size_of::<Action>()
        + s.health.as_ref().map_or(0, String::capacity)
}

/// The 1,000 containers of the worst case in the view, each with a full
/// [`Status`]: the most actions it keeps, a failure, a health.
fn fill_view(view: &Arc<Containers>) {
    let (docker, tasks) = (
        DockerHandle::default(),
        tokio_util::task::TaskTracker::new(),
    );
    for i in 0..WORST {
        let info = inspect(i);
        let c = Container::from_inspect(&info);
        view.remember(&c.id, c.clone());
        for _ in 0..dockwarden::containers::MAX_ACTIONS {
            view.record_action(&c.id, "restart", "ok");
        }
        for e in [
            engine(&c, "die", &[("exitCode", "1")], 1),
            engine(&c, "health_status: unhealthy", &[], 2),
        ] {
            view.observe(&e, &docker, &tasks);
        }
        view.remember(&c.id, Container::from_inspect(&info));
    }
}

/// Lifecycles of 200 entries (a start, then `dockwarden.exec`s) for the
/// containers `range`; those `gone` end with a `destroy`.
fn fill_lifecycles(h: &History, view: &Containers, range: std::ops::Range<usize>, gone: bool) {
    let mut t = dockwarden::clock::unix_nanos() - 3_600_000_000_000;
    for i in range {
        let c = Container::from_inspect(&inspect(i));
        let mut batch = vec![Arc::new(engine(&c, "start", &[], t))];
        for k in 1..PER_CONTAINER {
            t += 1000;
            let e = if gone && k == PER_CONTAINER - 1 {
                engine(&c, "destroy", &[], t)
            } else {
                exec(&c, COMMAND, (i * PER_CONTAINER + k) as u64, t)
            };
            batch.push(Arc::new(e));
            if batch.len() == 50 {
                h.record(&batch, view);
                batch.clear();
            }
        }
        h.record(&batch, view);
    }
}

/// `exec_start` events of exactly [`RING_EVENT_BYTES`] of attributes (the
/// most the ring keeps untrimmed), each its own.
fn ring_event(c: &Container, k: usize, detail: &str) -> Event {
    let exec_id = hex64(k as u64 + 5);
    let probe = engine(c, "exec_start", &[("execID", &exec_id)], 0);
    let used: usize = probe
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let key = "com.example.description";
    let pad = "x".repeat(RING_EVENT_BYTES.saturating_sub(used + key.len()));
    let action = format!("exec_start: {detail}");
    let t = dockwarden::clock::unix_nanos();
    engine(c, &action, &[("execID", &exec_id), (key, &pad)], t)
}

fn fill_ring(h: &History, view: &Containers, fleet: &[Container], n: usize, detail: &str) {
    for k in 0..n {
        h.record(
            &[Arc::new(ring_event(&fleet[k % fleet.len()], k, detail))],
            view,
        );
    }
}

fn limits(per_container: usize, ring: usize) -> Limits {
    Limits {
        per_container,
        keep: Duration::from_secs(3600),
        ring,
    }
}

/// Prints one measured row for the parent: label, units, heap, RSS and
/// layout bytes per unit.
fn report(label: &str, units: usize, (heap, rss): (f64, f64), layout: usize) {
    println!("row\t{label}\t{units}\t{heap:.1}\t{rss:.1}\t{layout}");
}

/// Each kind of thing alone, in a fresh process; nothing is freed until
/// the end, so no measurement reuses another's pages.
fn memory_parts() {
    let empty = Containers::default();
    let fleet: Vec<Container> = (0..WORST)
        .map(|i| Container::from_inspect(&inspect(i)))
        .collect();
    let mut kept: Vec<History> = Vec::new();

    // Each kind of entry, 1,000 of one name, with a ring of one (so no
    // event outlives its record).
    let c = &fleet[0];
    let long: Vec<String> = vec!["/bin/sh".into(), "-c".into(), "x".repeat(4096)];
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let metrics = Metrics::new();
    type Make<'a> = Box<dyn Fn(usize) -> Event + 'a>;
    let kinds: [(&str, Make<'_>); 6] = [
        (
            "container.start",
            Box::new(|k| engine(c, "start", &[], k as i64)),
        ),
        (
            "container.die",
            Box::new(|k| engine(c, "die", &[("exitCode", "1")], k as i64)),
        ),
        (
            "dockwarden.restart",
            Box::new(|k| restart(c, 1, k as i64, &metrics)),
        ),
        (
            "dockwarden.restart (unhealthy, 512 B check output)",
            Box::new(|k| restart_unhealthy(c, k as i64, &metrics)),
        ),
        (
            "dockwarden.exec (a 108 B command)",
            Box::new(|k| exec(c, COMMAND, k as u64, k as i64)),
        ),
        (
            "dockwarden.exec (a 4 KB command)",
            Box::new(|k| exec(c, &long, k as u64, k as i64)),
        ),
    ];
    let mut rows = Vec::new();
    for (label, make) in &kinds {
        let h = History::new(limits(1000, 1));
        let before = Mark::now();
        for k in 0..1000 {
            h.record(&[Arc::new(make(k))], &empty);
        }
        let per = before.per(1000);
        let entries = h.lifecycle(&c.name, 1).expect("kept");
        let layout = entries.first().map_or(0, entry_layout);
        rows.push((format!("history entry: {label}"), 1000, per, layout));
        kept.push(h);
    }
    let before = Mark::now();
    let h = History::new(limits(PER_CONTAINER, EVENT_RING));
    let long = format!("/bin/sh -c {}", "x".repeat(4096));
    fill_ring(&h, &empty, &fleet, 1000, &long);
    let per = before.per(1000);
    let last = h.recent(1, |_, _| true);
    let layout = last.first().map_or(0, |(_, e)| event_layout(e)) + size_of::<(i64, Arc<Event>)>();
    rows.push((
        "ring event (2,048 B attributes, 4 KB command)".to_owned(),
        1000,
        per,
        layout,
    ));
    kept.push(h);

    let view = Arc::new(Containers::default());
    let before = Mark::now();
    fill_view(&view);
    let per = before.per(WORST);
    let all = view.snapshot();
    let layout: usize = all
        .iter()
        .map(|(c, s)| view_layout(c, s, WORST))
        .sum::<usize>()
        / WORST;
    report("view entry (11-12 labels, full Status)", WORST, per, layout);

    // The lifecycles, with a ring of one.
    let h = History::new(limits(PER_CONTAINER, 1));
    let slot = size_of::<Entry>() * grown(PER_CONTAINER + 1) / PER_CONTAINER;
    let lifecycle =
        size_of::<Option<Arc<str>>>() + size_of::<Option<Instant>>() + size_of::<VecDeque<Entry>>();
    // A name's share: its key, its slot in the table of names (grown from
    // `had` to `has`), and a gone one's place in the queue of gone names.
    let name_share = |name: &str, had: usize, has: usize, gone: bool| {
        let bucket = size_of::<String>() + lifecycle;
        let table = (table(has, bucket) - table(had, bucket)) / (has - had);
        let queue = if gone {
            size_of::<(Instant, String)>() * grown(MAX_GONE + 1) / MAX_GONE + name.len()
        } else {
            0
        };
        (name.len() + table + queue) / PER_CONTAINER
    };
    for (gone, range) in [(false, 0..WORST), (true, WORST..WORST + MAX_GONE)] {
        let before = Mark::now();
        fill_lifecycles(&h, &empty, range.clone(), gone);
        let per = before.per(range.len() * PER_CONTAINER);
        let name = Container::from_inspect(&inspect(range.start)).name;
        let entries = h.lifecycle(&name, usize::MAX).expect("a kept lifecycle");
        let exec = entries
            .iter()
            .find(|e| e.key == "dockwarden.exec")
            .expect("an exec");
        let layout = entry_layout(exec) - size_of::<Entry>()
            + slot
            + name_share(&name, range.start, range.end, gone);
        let what = if gone { "gone" } else { "live" };
        report(
            &format!("history entry, {what} name (dockwarden.exec)"),
            range.len() * PER_CONTAINER,
            per,
            layout,
        );
    }

    let ring_slot = size_of::<(i64, Arc<Event>)>() * grown(EVENT_RING + 1) / EVENT_RING;
    let before = Mark::now();
    let ring = History::new(limits(PER_CONTAINER, EVENT_RING));
    fill_ring(
        &ring,
        &empty,
        &fleet,
        EVENT_RING,
        &format!("/bin/sh -c {PROBE}"),
    );
    let per = before.per(EVENT_RING);
    let last = ring.recent(1, |_, _| true);
    let layout = last.first().map_or(0, |(_, e)| event_layout(e)) + ring_slot;
    report(
        "ring event (exec_start, 2,048 B attributes)",
        EVENT_RING,
        per,
        layout,
    );
    for (label, units, per, layout) in rows {
        report(&label, units, per, layout);
    }
    drop((kept, view, h, ring));
}

/// Everything at once, in a fresh process: the view of 1,000 containers
/// and a History at its defaults filled to the worst case.
fn memory_total() {
    let empty = Containers::default();
    let fleet: Vec<Container> = (0..WORST)
        .map(|i| Container::from_inspect(&inspect(i)))
        .collect();
    let baseline = proc_status_bytes("VmRSS:");
    let before = Mark::now();
    let view = Arc::new(Containers::default());
    fill_view(&view);
    let h = History::new(limits(PER_CONTAINER, EVENT_RING));
    fill_lifecycles(&h, &empty, 0..WORST, false);
    fill_lifecycles(&h, &empty, WORST..WORST + MAX_GONE, true);
    fill_ring(
        &h,
        &empty,
        &fleet,
        EVENT_RING,
        &format!("/bin/sh -c {PROBE}"),
    );
    let (heap, rss) = before.per(1);
    let peak = proc_status_bytes("VmHWM:").saturating_sub(baseline);
    assert_eq!(h.gone().len(), MAX_GONE, "the gone lifecycles kept");
    println!("total\t{heap:.0}\t{rss:.0}\t{peak}");
    drop((view, h));
}

/// Runs this bench again as the memory child `part`; its stdout.
fn child(part: &str) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this bench's path: {e}"))?;
    let out = std::process::Command::new(exe)
        .env(CHILD, part)
        .output()
        .map_err(|e| format!("cannot run the {part} child: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the {part} child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mib(bytes: f64) -> String {
    format!("{bytes:.0} B ({:.1} MiB)", bytes / 1_048_576.0)
}

fn memory() -> Result<(), String> {
    let parts = child("parts")?;
    let total = child("total")?;
    println!();
    println!(
        "memory: allocator mimalloc (as the binary); heap = bytes allocated and not freed (counted), RSS = VmRSS growth, layout = size_of + heap of the same values"
    );
    println!(
        "{:<52} {:>7} {:>10} {:>10} {:>10}",
        "bytes per unit", "units", "heap", "RSS", "layout"
    );
    let leaf = btree_leaf();
    println!(
        "  (size_of: history Entry {}, Event {}, Container {}, Status {}, a serde_json Map leaf of 11 fields {leaf}; Arc header 16)",
        size_of::<Entry>(),
        size_of::<Event>(),
        size_of::<Container>(),
        size_of::<Status>(),
    );
    let mut sums = [0.0f64; 3];
    let weights = [
        WORST,
        WORST * PER_CONTAINER,
        MAX_GONE * PER_CONTAINER,
        EVENT_RING,
    ];
    let mut rows = 0;
    for line in parts.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [_, label, units, heap, rss, layout] = f[..] else {
            continue;
        };
        let num = |s: &str| {
            s.parse::<f64>()
                .map_err(|e| format!("child row {line:?}: {e}"))
        };
        let (heap, rss, layout) = (num(heap)?, num(rss)?, num(layout)?);
        if let Some(w) = weights.get(rows) {
            for (sum, v) in sums.iter_mut().zip([heap, rss, layout]) {
                *sum += v * *w as f64;
            }
        }
        if rows == weights.len() {
            println!("  by kind:");
        }
        rows += 1;
        // Below a few MiB, pages touched for the first time and the
        // allocator's granularity say more than the values do.
        let rss = if heap * units.parse::<f64>().unwrap_or(0.0) >= 2.0 * 1_048_576.0 {
            format!("{rss:.1}")
        } else {
            "-".to_owned()
        };
        println!("{label:<52} {units:>7} {heap:>10.1} {rss:>10} {layout:>10.0}");
    }
    let t: Vec<f64> = total
        .lines()
        .find_map(|l| l.strip_prefix("total\t"))
        .map(|l| l.split('\t').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let [heap, rss, peak] = t[..] else {
        return Err(format!("the total child said {total:?}"));
    };
    println!(
        "worst case for {WORST} containers: the view, {WORST} live and {MAX_GONE} gone names x {PER_CONTAINER} entries, {EVENT_RING} ring events"
    );
    println!(
        "  all at once, one process:  heap {}, RSS {}, peak RSS {}",
        mib(heap),
        mib(rss),
        mib(peak)
    );
    println!(
        "  rows above x units:        heap {}, RSS {}, layout {}",
        mib(sums[0]),
        mib(sums[1]),
        mib(sums[2])
    );
    Ok(())
}

/// `router` served on a loopback port by a runtime of its own, built as
/// `dockwarden run` builds its one (a worker per CPU).
fn serve(router: axum::Router) -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a server runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    runtime.spawn(async move { axum::serve(listener, router).await });
    (runtime, addr)
}

fn main() {
    if let Ok(part) = std::env::var(CHILD) {
        COUNTING.store(true, Relaxed);
        match part.as_str() {
            "parts" => memory_parts(),
            "total" => memory_total(),
            other => {
                eprintln!("no memory part {other:?}");
                std::process::exit(2);
            }
        }
        return;
    }
    let requests = env_usize("API_BENCH_REQUESTS", 2000).max(2000);
    let rounds = env_usize("API_BENCH_ROUNDS", 9).max(3);
    let registry = Registry::builtin();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/default.toml");
    let config = dockwarden::rules::Config::load_file(&path, &registry)
        .unwrap_or_else(|d| panic!("rules/default.toml does not load:\n{d}"));
    let fleet = fleet(FLEET, &config.rules);
    let (_keep, rules) = tokio::sync::watch::channel(config.rules.clone());
    let router = dockwarden::http::router(dockwarden::http::Routes {
        metrics: fleet.metrics.clone(),
        health: Arc::new(Health::default()),
        reload: None,
        api_token: Some(Arc::from(TOKEN)),
        containers: fleet.containers.clone(),
        history: fleet.history.clone(),
        healer: registry.healer(),
        rules,
        // `?stats=true` is not asked for: no engine read is made.
        stats: Arc::new(dockwarden::containers::stats::StatsReader::new(
            DockerHandle::default(),
            Duration::from_secs(2),
            dockwarden::containers::stats::DEFAULT_LIMIT,
        )),
    });
    let (server, addr) = serve(router.clone());
    let (other, other_addr) = serve(router);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's runtime");
    println!(
        "api: {FLEET} containers (compose labels, 10% exited, 5% unhealthy), {} events recorded, rules/default.toml, an empty heal book; no ?stats",
        fleet.events
    );
    println!(
        "  served by axum on {addr} (a runtime as `dockwarden run` builds it: a worker per CPU, {} CPUs), asked by reqwest over loopback from another runtime",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let verdicts = client.block_on(latency(
        &format!("http://{addr}"),
        &format!("http://{other_addr}"),
        &fleet,
        requests,
        rounds,
    ));
    server.shutdown_background();
    other.shutdown_background();
    let verdicts = match verdicts {
        Ok(v) => v,
        Err(e) => {
            println!("api: a wrong answer: {e}: FAILED");
            std::process::exit(1);
        }
    };
    if let Err(e) = memory() {
        println!("api: memory: {e}: FAILED");
        std::process::exit(1);
    }
    println!();
    let mut ok = true;
    let p99 = verdicts.list_p99;
    if p99 <= TARGET_P99_MS {
        println!(
            "api: GET /api/v1/containers ({FLEET}) p99 {p99:.3} ms <= {TARGET_P99_MS} ms target: ok"
        );
    } else {
        println!(
            "api: GET /api/v1/containers ({FLEET}) p99 {p99:.3} ms > {TARGET_P99_MS} ms target: FAILED"
        );
        ok = false;
    }
    let (ratio, elsewhere) = (verdicts.metrics_ratio, verdicts.metrics_elsewhere);
    let server = ratio / elsewhere;
    let loaded = verdicts.metrics_loaded_p99;
    let verdict = if server <= TARGET_METRICS_RATIO && loaded <= TARGET_METRICS_P99_MS {
        "ok"
    } else {
        ok = false;
        "FAILED"
    };
    println!(
        "api: /metrics p99 (pooled) under back-to-back lists: {loaded:.3} ms (target <= {TARGET_METRICS_P99_MS} ms); \
         over alone {ratio:.2}, with the lists asked of another runtime {elsewhere:.2}, \
         so sharing the server adds {server:.2}x (target <= {TARGET_METRICS_RATIO}): {verdict}"
    );
    if !ok {
        std::process::exit(1);
    }
}
