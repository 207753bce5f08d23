//! Never lose an event, never act twice, across sidecar restarts: the
//! checkpoint, gap detection and resync, against the real engine.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    Cleanup, Dockwarden, TempDir, container_history, docker, docker_ok, now_unix, require_docker,
    require_test_image, test_image, unique, wait_until,
};
use serde_json::Value;

fn rules(audit: &Path) -> String {
    format!(
        r#"
[audit]
path = "{}"
fsync = "always"

[[rule]]
name = "heal"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.heal" = "true" }}
exit_code = "nonzero"
[rule.with]
backoff_initial_ms = 100

[[rule]]
name = "audit-exec"
on = ["container.exec_start", "container.exec_die"]
handler = "exec_audit"
"#,
        audit.display()
    )
}

fn start(rules: &str, state: &Path) -> Dockwarden {
    let state = state.display().to_string();
    let mut dw = Dockwarden::start_with(rules, &["--state-dir", &state], &[]);
    dw.wait_ready(Duration::from_secs(20));
    dw
}

fn checkpoint_time(state: &Path) -> i64 {
    std::fs::read(state.join("checkpoint.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["time_nano"].as_i64())
        .unwrap_or(0)
}

/// Events the engine logs while nobody listens: network create + remove.
fn churn(pairs: usize) {
    for _ in 0..pairs {
        let net = unique("churn");
        docker_ok(&["network", "create", &net]);
        docker_ok(&["network", "rm", &net]);
    }
}

/// A container that crashes (exit 3) on its first run only: healed once, it
/// stays up.
fn crash_once(clean: &Cleanup, prefix: &str) -> String {
    let name = clean.container(unique(prefix));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "dwt.heal=true",
        &test_image(),
        "sh",
        "-c",
        "test -e /tmp/ran && exec sleep 300; touch /tmp/ran; sleep 1; exit 3",
    ]);
    name
}

/// More than the engine's 256-event ring happens while dockwarden is
/// stopped, a labelled container crashes meanwhile: on restart the gap is
/// detected, a resync is counted, and the container is healed.
#[test]
fn gap_larger_than_the_ring_is_resynced_and_healed() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("gap");
    let state = dir.path().join("state");
    let rules = rules(&dir.path().join("audit.jsonl"));
    let mut dw = start(&rules, &state);
    churn(2);
    assert!(
        wait_until(Duration::from_secs(5), || checkpoint_time(&state) > 0),
        "no checkpoint written"
    );
    dw.sigterm();
    assert_eq!(
        dw.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );

    let crashed = crash_once(&clean, "gap-crash");
    // 2 events a pair: well over the ring.
    churn(150);
    assert!(wait_until(Duration::from_secs(10), || {
        docker_ok(&["inspect", "-f", "{{.State.Status}}", &crashed]) == "exited"
    }));

    let restarted_at = now_unix();
    let dw = start(&rules, &state);
    let resynced = wait_until(Duration::from_secs(20), || {
        dw.metrics().get(
            "dockwarden_stream_resyncs_total",
            &[("reason", "ring_overflow")],
        ) >= 1.0
    });
    assert!(resynced, "the gap was not detected");
    assert!(
        wait_until(Duration::from_secs(20), || dw.metrics().get(
            "dockwarden_container_restarts_total",
            &[("name", crashed.as_str())]
        ) >= 1.0),
        "the container that crashed meanwhile was not healed"
    );
    std::thread::sleep(Duration::from_secs(2));
    // (The engine's ring no longer holds the `docker run` start: count from
    // dockwarden's restart.)
    let starts = container_history(&crashed, restarted_at)
        .iter()
        .filter(|(a, _)| a == "start")
        .count();
    assert_eq!(starts, 1, "healed exactly once");
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &crashed]),
        "true"
    );
}

/// kill -9 twice during a workload, restarting each time from the same
/// state: crashes that happened while it was down are healed once, every
/// exec is audited exactly once, and the chain verifies.
#[test]
fn kill_9_twice_loses_nothing_and_repeats_nothing() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("kill9");
    let state = dir.path().join("state");
    let audit = dir.path().join("audit.jsonl");
    let rules = rules(&audit);
    let target = clean.container(unique("exec-target"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &target,
        &test_image(),
        "sleep",
        "300",
    ]);
    let since = now_unix();
    let truth = Truth::start(since);
    let mut execs = 0;
    let mut crashed = Vec::new();
    let mut resumed_from = Value::Null;
    let mut exec = |n: usize| {
        for i in 0..n {
            let out = docker(&["exec", &target, "sh", "-c", &format!("exit {}", i % 3)]);
            assert!(out.status.code().is_some());
        }
        execs += n;
    };

    let mut dw = start(&rules, &state);
    for round in 0..2 {
        exec(5);
        // Let a checkpoint land, then die without any chance to flush.
        std::thread::sleep(Duration::from_millis(1500));
        exec(3);
        dw.kill9();
        // While it is down: more execs and a crash to heal.
        exec(4);
        crashed.push(crash_once(&clean, &format!("down{round}")));
        std::thread::sleep(Duration::from_secs(2));
        // Where the next instance resumes from: the last one's checkpoint.
        resumed_from = std::fs::read(state.join("checkpoint.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        dw = start(&rules, &state);
    }
    exec(2);
    let healed = wait_until(Duration::from_secs(20), || {
        crashed.iter().all(|c| {
            container_history(c, since)
                .iter()
                .filter(|(a, _)| a == "start")
                .count()
                >= 2
        })
    });
    assert!(healed, "a crash during the downtime was not healed");
    // Audit: every exec exactly once, start and end.
    let complete = wait_until(Duration::from_secs(15), || {
        exec_records(&audit, &target).len() >= execs * 2
    });
    let records = exec_records(&audit, &target);
    assert!(complete, "{} exec records for {execs} execs", records.len());
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for r in &records {
        let key = (
            r["kind"].as_str().unwrap_or("").to_owned(),
            r["exec_id"].as_str().unwrap_or("").to_owned(),
        );
        *seen.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "audit records repeated: {twice:?}");
    let unverified: Vec<_> = records
        .iter()
        .filter(|r| r["exec_id_verified"] != true)
        .collect();
    assert!(
        unverified.is_empty(),
        "no connection was cut, yet: {unverified:?}"
    );
    assert_eq!(records.len(), execs * 2, "one start and one end per exec");
    for c in &crashed {
        let starts = container_history(c, since)
            .iter()
            .filter(|(a, _)| a == "start")
            .count();
        assert_eq!(starts, 2, "{c}: healed exactly once");
    }
    // The last sidecar counted exactly what happened after its checkpoint:
    // what the killed one left unhandled, nothing it had handled.
    assert!(
        resumed_from["time_nano"].as_i64().is_some_and(|t| t > 0),
        "no checkpoint to resume from"
    );
    let (equal, got, expected) = counts_settle(
        &dw,
        None,
        || truth.counts_after(&resumed_from),
        Duration::from_secs(15),
    );
    assert!(
        equal,
        "after kill -9:\n dockwarden {got:?}\n engine     {expected:?}"
    );
    drop(dw);
    let out = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .expect("run audit verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A resync was asked for (here: the queue overflowed) and the sidecar was
/// stopped before it ran: the checkpoint is already past the events it was
/// to repair, so it says a resync is owed, and the next start does it. A
/// container that crashed meanwhile is healed; the debt is then cleared.
#[test]
fn a_resync_owed_at_shutdown_is_done_at_the_next_start() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("owed");
    let state = dir.path().join("state");
    let audit = dir.path().join("audit.jsonl");
    // A first sidecar with no heal rule reads the crash and more, and
    // leaves a real checkpoint past it.
    let log_only = "[[rule]]\nname = \"log-all\"\non = [\"*\"]\nhandler = \"log\"\n";
    let mut first = start(log_only, &state);
    let since = now_unix();
    let crashed = crash_once(&clean, "owed");
    let exited = wait_until(Duration::from_secs(15), || {
        container_history(&crashed, since)
            .iter()
            .any(|(a, _)| a == "die")
    });
    assert!(exited, "{crashed} never crashed");
    let die = container_history(&crashed, since)
        .iter()
        .find(|(a, _)| a == "die")
        .map_or(0, |(_, t)| *t);
    churn(1);
    assert!(
        wait_until(Duration::from_secs(10), || checkpoint_time(&state) > die),
        "the checkpoint never passed the crash"
    );
    first.sigterm();
    assert!(
        first.wait_exit(Duration::from_secs(15)).is_some(),
        "no exit"
    );
    // What a sidecar stopped while its resync waited leaves: the same
    // checkpoint, owing the resync.
    let path = state.join("checkpoint.json");
    let mut cp: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("checkpoint")).expect("JSON");
    cp["resync_owed"] = "queue_overflow".into();
    std::fs::write(&path, cp.to_string()).expect("write checkpoint");

    let dw = start(&rules(&audit), &state);
    let healed = wait_until(Duration::from_secs(20), || {
        container_history(&crashed, since)
            .iter()
            .filter(|(a, _)| a == "start")
            .count()
            >= 2
    });
    assert!(healed, "the crash was not healed:\n{}", dw.log());
    let m = dw.metrics();
    assert_eq!(
        m.get(
            "dockwarden_stream_resyncs_total",
            &[("reason", "queue_overflow")]
        ),
        1.0,
        "{}",
        dw.log()
    );
    assert!(dw.log().contains("owes a resync"), "{}", dw.log());
    // Done: the checkpoint no longer owes it.
    let cleared = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&path)
            .is_ok_and(|t| t.contains("time_nano") && !t.contains("resync_owed"))
    });
    assert!(cleared, "the checkpoint still owes the resync");
}

/// A checkpoint later than the clock (the clock was stepped back, or the
/// state dir came from another host) is not resumed from: every live event
/// would be taken for one handled before it.
#[test]
fn a_checkpoint_from_the_future_is_not_resumed_from() {
    require_docker();
    let clean = Cleanup::new();
    let dir = TempDir::new("future");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let an_hour_ahead = ((now_unix() + 3600.0) * 1e9) as i64;
    std::fs::write(
        state.join("checkpoint.json"),
        format!(r#"{{"version":2,"time_nano":{an_hour_ahead},"ids":[]}}"#),
    )
    .expect("write checkpoint");
    let rules = "[[rule]]\nname = \"log-all\"\non = [\"*\"]\nhandler = \"log\"\n";
    let dw = start(rules, &state);
    assert!(
        dw.log().contains("Checkpoint later than this host's clock"),
        "{}",
        dw.log()
    );
    let net = clean.network(unique("future"));
    docker_ok(&["network", "create", &net]);
    let counted = wait_until(Duration::from_secs(10), || {
        dw.metrics().get(
            "dockwarden_events_total",
            &[("type", "network"), ("action", "create")],
        ) >= 1.0
    });
    assert!(
        counted,
        "a live event was taken for a handled one:\n{}",
        dw.log()
    );
}

/// Restarted on a checkpoint, on a quiet engine: the idle probe asks the
/// engine from the checkpoint's time and gets the checkpoint's own events
/// back, which were handled before the restart. They are not events the
/// stream missed: the stream stays up (it was taken for dead and replaced
/// every `idle_ping_secs` until a newer event came).
#[test]
fn a_quiet_engine_after_a_restart_is_not_a_dead_stream() {
    require_docker();
    let dir = TempDir::new("quiet-restart");
    let state = dir.path().join("state");
    let rules = "[source]\nidle_ping_secs = 2\n\n[[rule]]\nname = \"log-all\"\non = [\"*\"]\nhandler = \"log\"\n";
    let mut dw = start(rules, &state);
    churn(1);
    assert!(
        wait_until(Duration::from_secs(10), || checkpoint_time(&state) > 0),
        "no checkpoint written"
    );
    dw.sigterm();
    assert!(dw.wait_exit(Duration::from_secs(15)).is_some(), "no exit");
    let resumed_from = checkpoint_time(&state);
    let dw = start(rules, &state);
    // Three idle probes' worth of silence.
    std::thread::sleep(Duration::from_secs(7));
    let m = dw.metrics();
    assert!(
        dw.log().contains(&format!(
            "Resuming from the checkpoint. time_nano={resumed_from}"
        )),
        "did not resume from the checkpoint:\n{}",
        dw.log()
    );
    assert_eq!(
        m.get("dockwarden_stream_reconnects_total", &[]),
        0.0,
        "a quiet stream was replaced:\n{}",
        dw.log()
    );
    assert!(!dw.log().contains("the stream is dead"), "{}", dw.log());
    assert_eq!(dw.get("/readyz").0, 200);
}

type Counts = std::collections::BTreeMap<String, f64>;

/// Waits up to `within` for dockwarden's `dockwarden_events_total` (minus
/// `before`) to equal `expected()` on every key; returns whether it did,
/// and both sides as last seen.
fn counts_settle(
    dw: &Dockwarden,
    before: Option<&common::Metrics>,
    expected: impl Fn() -> Counts,
    within: Duration,
) -> (bool, Counts, Counts) {
    let both = || {
        let want = expected();
        let m = dw.metrics();
        let got: Counts = want
            .keys()
            .map(|k| {
                let (t, a) = k.split_once('.').unwrap_or((k, ""));
                let labels = [("type", t), ("action", a)];
                let base = before.map_or(0.0, |b| b.get("dockwarden_events_total", &labels));
                (k.clone(), m.get("dockwarden_events_total", &labels) - base)
            })
            .collect();
        (got, want)
    };
    let equal = wait_until(within, || {
        let (got, want) = both();
        got == want
    });
    let (got, want) = both();
    (equal, got, want)
}

fn exec_records(audit: &Path, container: &str) -> Vec<Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| {
            r["container_name"] == container
                && r["kind"].as_str().is_some_and(|k| k.starts_with("exec_"))
        })
        .collect()
}

/// Counts every event the engine streams from `since` on, over its own
/// connection straight to the real socket: the ground truth.
struct Truth {
    counts: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>,
    /// Every event: (key, timeNano, identity as the checkpoint writes it).
    events: std::sync::Arc<std::sync::Mutex<Vec<(String, i64, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Truth {
    fn start(since: f64) -> Truth {
        use std::io::{BufReader, Write};
        use std::sync::atomic::Ordering;
        let counts = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = common::docker_socket_path().expect("the engine is on a unix socket");
        let mut sock =
            std::os::unix::net::UnixStream::connect(&path).expect("connect to the engine");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        write!(
            sock,
            "GET /v1.41/events?since={since:.9} HTTP/1.1\r\nHost: docker\r\n\r\n"
        )
        .expect("request");
        let mut reader = BufReader::new(sock);
        let head = common::read_response_head(&mut reader).expect("response head");
        assert_eq!(head.status, 200);
        let (c, s, all) = (counts.clone(), stop.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            let mut chunks = common::ChunkedReader::new(reader);
            let mut buf: Vec<u8> = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match chunks.next_chunk() {
                    Ok(Some(data)) => {
                        buf.extend_from_slice(&data);
                        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=nl).collect();
                            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                                let key = common::event_key(&v);
                                // The identity dockwarden's checkpoint holds.
                                let identity = dockwarden::event::Event::decode(&line)
                                    .map(|e| e.identity().to_string())
                                    .unwrap_or_default();
                                let t = v["timeNano"].as_i64().unwrap_or(0);
                                all.lock().expect("lock").push((key.clone(), t, identity));
                                *c.lock().expect("lock").entry(key).or_insert(0.0) += 1.0;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        });
        Truth {
            counts,
            events,
            stop,
            thread: Some(thread),
        }
    }

    fn counts(&self) -> std::collections::BTreeMap<String, f64> {
        self.counts.lock().expect("lock").clone()
    }

    /// Counts per key of the events a sidecar resuming from `checkpoint`
    /// must handle: after it, or at its nanosecond and not among its ids.
    fn counts_after(&self, checkpoint: &Value) -> std::collections::BTreeMap<String, f64> {
        let t = checkpoint["time_nano"].as_i64().unwrap_or(0);
        let ids: Vec<&str> = checkpoint["ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = std::collections::BTreeMap::new();
        for (key, time, id) in self.events.lock().expect("lock").iter() {
            if *time > t || (*time == t && !ids.contains(&id.as_str())) {
                *out.entry(key.clone()).or_insert(0.0) += 1.0;
            }
        }
        out
    }
}

impl Drop for Truth {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// 2,000+ real events (container churn and exec bursts) with 20+ random
/// cuts of the stream: per `type.action`, dockwarden's counts equal the
/// engine's own stream, and every user exec is audited exactly once.
#[test]
fn two_thousand_events_through_twenty_cuts() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("cuts");
    let audit = dir.path().join("audit.jsonl");
    let proxy = common::proxy::FaultProxy::start();
    let host = proxy.docker_host();
    let rules = format!(
        "{}\n[[rule]]\nname = \"all\"\non = [\"*\"]\nhandler = \"log\"\n[rule.with]\nlevel = \"trace\"\n",
        rules(&audit)
    );
    let mut dw =
        Dockwarden::start_with(&rules, &[], &[("DOCKER_HOST", &host), ("RUST_LOG", "info")]);
    dw.wait_ready(Duration::from_secs(20));
    let target = clean.container(unique("burst"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &target,
        &test_image(),
        "sleep",
        "600",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let before = dw.metrics();
    let since = now_unix();
    let truth = Truth::start(since);
    let image = test_image();

    let execs = AtomicUsize::new(0);
    let runs = AtomicUsize::new(0);
    let working = AtomicBool::new(true);
    let mut cuts = 0;
    std::thread::scope(|s| {
        for w in 0..3 {
            let (execs, target, working) = (&execs, &target, &working);
            s.spawn(move || {
                while working.load(Ordering::Relaxed) {
                    let out = docker(&["exec", target, "sh", "-c", &format!("exit {w}")]);
                    assert!(out.status.code().is_some());
                    execs.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for w in 0..2 {
            let (runs, working, clean, image) = (&runs, &working, &clean, &image);
            s.spawn(move || {
                let mut i = 0;
                while working.load(Ordering::Relaxed) {
                    let name = clean.container(unique(&format!("churn{w}-{i}")));
                    docker_ok(&["run", "--rm", "--name", &name, image, "true"]);
                    runs.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        // Cut at random-ish intervals until both targets are met.
        let mut seed = (since * 1e6) as u64 | 1;
        while cuts < 20 || truth.counts().values().sum::<f64>() < 2000.0 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(300 + seed % 900));
            proxy.cut_all();
            cuts += 1;
            assert!(cuts < 400, "the workload is far too slow");
        }
        working.store(false, Ordering::Relaxed);
    });
    // Let the last events arrive on both sides.
    let (equal, got, expected) = counts_settle(
        &dw,
        Some(&before),
        || truth.counts(),
        Duration::from_secs(30),
    );
    let total: f64 = expected.values().sum();
    let reconnects = dw.metrics().get("dockwarden_stream_reconnects_total", &[]);
    eprintln!(
        "events={total} cuts={cuts} reconnects={reconnects} execs={} runs={} keys={}",
        execs.load(Ordering::Relaxed),
        runs.load(Ordering::Relaxed),
        expected.len()
    );
    assert!(
        equal,
        "counts differ:\n dockwarden {got:?}\n engine     {expected:?}"
    );
    assert!(total >= 2000.0 && cuts >= 20);
    assert!(
        reconnects >= 15.0,
        "cuts did not force reconnects: {reconnects}"
    );

    let n = execs.load(Ordering::Relaxed);
    let complete = wait_until(Duration::from_secs(20), || {
        exec_records(&audit, &target).len() >= n * 2
    });
    let records = exec_records(&audit, &target);
    assert!(complete, "{} exec records for {n} execs", records.len());
    let mut ids: HashMap<(String, String), usize> = HashMap::new();
    let mut unverified = 0;
    for r in &records {
        let Some(id) = r["exec_id"].as_str() else {
            unverified += 1;
            continue;
        };
        let key = (r["kind"].as_str().unwrap_or("").to_owned(), id.to_owned());
        *ids.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = ids.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "audited twice: {twice:?}");
    eprintln!(
        "exec records: {} ({unverified} unverified: an inspect lost to a cut)",
        records.len()
    );
    assert_eq!(records.len(), n * 2, "each exec: one start, one end");
    dw.sigterm();
    assert_eq!(
        dw.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
}
