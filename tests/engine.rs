//! dockwarden against the real Docker Engine: the real binary, real
//! containers, real events. These tests share the engine's one global event
//! stream and assert exact counts, so `scripts/test` runs them one at a time.
//! They fail, never skip, when Docker is missing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::proxy::FaultProxy;
use common::{
    Cleanup, Dockwarden, Metrics, TempDir, docker, docker_ok, engine_events, event_key, now_unix,
    require_docker, require_test_image, test_image, unique, wait_until,
};

/// Rules that log every event, so every event goes through a handler.
const LOG_ALL: &str = r#"
[[rule]]
name = "all"
on = ["*"]
handler = "log"
[rule.with]
level = "debug"
"#;

/// For each `type.action` key of `expected`, what `now` counted beyond
/// `before`.
fn counted_since(
    before: &Metrics,
    now: &Metrics,
    expected: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    expected
        .keys()
        .map(|k| {
            let (t, a) = k.split_once('.').unwrap_or((k, ""));
            (k.clone(), events(now, t, a) - events(before, t, a))
        })
        .collect()
}

/// How often the engine logged each `type.action` key between `since` and
/// `until`.
fn engine_counts(since: f64, until: f64) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for e in &engine_events(since, until) {
        *counts.entry(event_key(e)).or_default() += 1.0;
    }
    counts
}

/// dockwarden with `rules`, ready, reading the engine through a fault proxy.
fn behind_proxy(rules: &str) -> (FaultProxy, Dockwarden) {
    let proxy = FaultProxy::start();
    let host = proxy.docker_host();
    let mut dw = Dockwarden::start_with(rules, &[], &[("DOCKER_HOST", &host)]);
    dw.wait_ready(Duration::from_secs(20));
    (proxy, dw)
}

/// One container's create, start, die and destroy each counted once
/// between `before` and `after`.
fn counted_once(before: &Metrics, after: &Metrics) {
    for action in ["create", "start", "die", "destroy"] {
        assert_eq!(
            events(after, "container", action) - events(before, "container", action),
            1.0,
            "container.{action} counted once"
        );
    }
}

fn setup() -> Cleanup {
    require_docker();
    require_test_image();
    Cleanup::new()
}

fn events(m: &Metrics, typ: &str, action: &str) -> f64 {
    m.get(
        "dockwarden_events_total",
        &[("type", typ), ("action", action)],
    )
}

fn started(rules: &str) -> Dockwarden {
    let mut dw = Dockwarden::start(rules);
    dw.wait_ready(Duration::from_secs(20));
    dw
}

/// Acceptance 2: one short-lived container → `start` and `die` each rise by
/// exactly 1 within 2 s, and stay there.
#[test]
fn run_true_counts_start_and_die_exactly_once() {
    let clean = setup();
    let dw = started(LOG_ALL);
    let before = dw.metrics();
    let name = clean.container(unique("true"));
    docker_ok(&["run", "--rm", "--name", &name, &test_image(), "true"]);
    let t0 = Instant::now();
    let risen = wait_until(Duration::from_secs(2), || {
        let m = dw.metrics();
        events(&m, "container", "start") >= events(&before, "container", "start") + 1.0
            && events(&m, "container", "die") >= events(&before, "container", "die") + 1.0
    });
    assert!(
        risen,
        "start and die not counted within 2 s (waited {:?})",
        t0.elapsed()
    );
    thread::sleep(Duration::from_millis(500));
    let after = dw.metrics();
    for action in ["create", "start", "die", "destroy"] {
        assert_eq!(
            events(&after, "container", action) - events(&before, "container", action),
            1.0,
            "container.{action} counted once"
        );
    }
    assert!(after.get("dockwarden_rule_matches_total", &[("rule", "all")]) >= 4.0);
    assert!(
        after.get(
            "dockwarden_handler_runs_total",
            &[("handler", "log"), ("outcome", "ok")]
        ) >= 4.0
    );
    assert_eq!(after.get("dockwarden_events_malformed_total", &[]), 0.0);
}

/// Acceptance 3: exec events are counted under their normalised actions and
/// the command text never appears in a label.
#[test]
fn exec_is_counted_and_its_command_is_never_a_label() {
    let clean = setup();
    let name = clean.container(unique("exec"));
    docker_ok(&["run", "-d", "--name", &name, &test_image(), "sleep", "300"]);
    let dw = started(LOG_ALL);
    let before = dw.metrics();
    let out = docker_ok(&["exec", &name, "sh", "-c", "echo hi-from-exec"]);
    assert_eq!(out, "hi-from-exec");
    assert!(wait_until(Duration::from_secs(5), || {
        events(&dw.metrics(), "container", "exec_die")
            >= events(&before, "container", "exec_die") + 1.0
    }));
    let after = dw.metrics();
    for action in ["exec_create", "exec_start", "exec_die"] {
        assert_eq!(
            events(&after, "container", action) - events(&before, "container", action),
            1.0,
            "container.{action}"
        );
    }
    for s in after.samples() {
        for (k, v) in &s.labels {
            assert!(
                !v.contains("hi-from-exec") && !v.contains("sh -c") && !v.contains(": "),
                "label {k}={v:?} on {} carries event text",
                s.name
            );
        }
    }
    // The command is data: the log handler shows it.
    assert!(
        dw.wait_for_log("sh -c echo hi-from-exec", Duration::from_secs(2)),
        "log lacks the exec command"
    );
}

/// Acceptance 4: a container going unhealthy is counted as `health_status`
/// and a `status = "unhealthy"` rule matches it (a `healthy` rule does not).
#[test]
fn unhealthy_container_matches_status_rule() {
    let clean = setup();
    let name = clean.container(unique("sick"));
    let rules = format!(
        r#"
[[rule]]
name = "sick"
on = ["container.health_status"]
handler = "log"
[rule.match]
name = ["{name}"]
status = "unhealthy"

[[rule]]
name = "well"
on = ["container.health_status"]
handler = "log"
[rule.match]
name = ["{name}"]
status = "healthy"
"#
    );
    let dw = started(&rules);
    let before = dw.metrics();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--health-cmd",
        "false",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        "--health-timeout",
        "2s",
        &test_image(),
        "sleep",
        "300",
    ]);
    let matched = wait_until(Duration::from_secs(20), || {
        dw.metrics()
            .get("dockwarden_rule_matches_total", &[("rule", "sick")])
            >= 1.0
    });
    assert!(matched, "the unhealthy rule never matched");
    let after = dw.metrics();
    assert!(
        events(&after, "container", "health_status")
            > events(&before, "container", "health_status")
    );
    assert_eq!(
        after.get("dockwarden_rule_matches_total", &[("rule", "sick")]),
        1.0
    );
    assert_eq!(
        after.get("dockwarden_rule_matches_total", &[("rule", "well")]),
        0.0
    );
}

/// Acceptance 5: `match.labels` fires only for labelled containers and
/// `exit_code = "nonzero"` for `exit 3`, not `exit 0`.
#[test]
fn label_and_exit_code_conditions() {
    let clean = setup();
    let prefix = unique("cond");
    let rules = format!(
        r#"
[[rule]]
name = "labelled"
on = ["container.die"]
handler = "log"
[rule.match]
name = ["{prefix}-*"]
labels = {{ "dwt.mark" = "yes" }}

[[rule]]
name = "crashed"
on = ["container.die"]
handler = "log"
[rule.match]
name = ["{prefix}-*"]
exit_code = "nonzero"
"#
    );
    let dw = started(&rules);
    let image = test_image();
    let run = |suffix: &str, label: &str, code: &str| {
        let name = clean.container(format!("{prefix}-{suffix}"));
        let mut args = vec!["run", "--name", &name];
        if !label.is_empty() {
            args.extend(["--label", label]);
        }
        let cmd = format!("exit {code}");
        args.extend([image.as_str(), "sh", "-c", &cmd]);
        let out = docker(&args);
        assert_eq!(
            out.status.code().map(|c| c.to_string()).as_deref(),
            Some(code)
        );
    };
    run("marked-ok", "dwt.mark=yes", "0");
    run("unmarked-crash", "", "3");
    run("wrong-mark-ok", "dwt.mark=no", "0");
    assert!(wait_until(Duration::from_secs(5), || {
        events(&dw.metrics(), "container", "die") >= 3.0
    }));
    thread::sleep(Duration::from_millis(300));
    let m = dw.metrics();
    assert_eq!(
        m.get("dockwarden_rule_matches_total", &[("rule", "labelled")]),
        1.0
    );
    assert_eq!(
        m.get("dockwarden_rule_matches_total", &[("rule", "crashed")]),
        1.0
    );
}

/// Acceptance 7: an unreachable engine is retried with a clear log line
/// naming the socket and the reason; `/readyz` is 503 until it connects.
#[test]
fn unreachable_engine_is_retried_until_it_appears() {
    require_docker();
    let dir = TempDir::new("late-engine");
    let sock = dir.path().join("later.sock");
    let host = format!("unix://{}", sock.display());
    let mut dw = Dockwarden::start_with(LOG_ALL, &[], &[("DOCKER_HOST", &host)]);
    assert!(
        dw.wait_for_log("socket missing", Duration::from_secs(10)),
        "no 'socket missing' line"
    );
    let (status, _) = dw.get("/readyz");
    assert_eq!(status, 503);
    assert_eq!(dw.get("/healthz").0, 200);
    assert!(dw.log().contains(&host), "the log names the socket");
    assert_eq!(dw.metrics().get("dockwarden_stream_connected", &[]), 0.0);

    // A socket file nobody listens on: refused.
    drop(UnixListener::bind(&sock).expect("bind a socket to leave it stale"));
    assert!(
        dw.wait_for_log("connection refused", Duration::from_secs(15)),
        "no 'connection refused' line"
    );
    assert_eq!(dw.get("/readyz").0, 503);

    // The engine appears at that path.
    std::fs::remove_file(&sock).expect("remove stale socket");
    let real = common::docker_socket_path().expect("the engine is on a unix socket");
    std::os::unix::fs::symlink(&real, &sock).expect("link the real socket");
    dw.wait_ready(Duration::from_secs(40));
    assert_eq!(dw.metrics().get("dockwarden_stream_connected", &[]), 1.0);
    assert!(dw.try_status().is_none(), "still running");
    std::fs::remove_file(&sock).expect("remove the link");
    // Shutdown while it is retrying against a missing socket: prompt, exit 0.
    dw.sigterm();
    let status = dw
        .wait_exit(Duration::from_secs(12))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

/// What the engine replays at a reconnect follows its head at once, and
/// may come in the same read: it is counted then, not when the next event
/// arrives (here none does).
#[test]
fn a_replay_read_with_the_head_is_counted_at_once() {
    let clean = setup();
    let (proxy, dw) = behind_proxy(LOG_ALL);
    let before = dw.metrics();
    // Away while a container runs: its events come back as the replay.
    proxy.set_refuse(true);
    proxy.cut_all();
    let since = now_unix();
    let name = clean.container(unique("away"));
    docker_ok(&["run", "--rm", "--name", &name, &test_image(), "true"]);
    let until = now_unix();
    let expected = engine_counts(since, until);
    assert!(expected.contains_key("container.destroy"), "{expected:?}");
    // The head and the replay reach dockwarden in one write.
    proxy.set_gather(Duration::from_millis(300));
    proxy.set_refuse(false);
    let delta = |m: &Metrics| counted_since(&before, m, &expected);
    let caught_up = wait_until(Duration::from_secs(20), || delta(&dw.metrics()) == expected);
    assert!(
        caught_up,
        "the replay was not counted:\n dockwarden {:?}\n engine     {expected:?}",
        delta(&dw.metrics())
    );
    assert!(dw.metrics().get("dockwarden_stream_reconnects_total", &[]) >= 1.0);
}

/// Acceptance 8: cutting the connection during traffic → reconnects, and
/// every event is counted exactly as often as the engine reports it.
#[test]
fn connection_cuts_reconnect_without_double_counting() {
    let clean = setup();
    let (proxy, mut dw) = behind_proxy(LOG_ALL);
    let before = dw.metrics();
    let since = now_unix();

    let cutting = AtomicBool::new(true);
    let cuts = thread::scope(|s| {
        let cutter = s.spawn(|| {
            let mut cuts = 0;
            while cutting.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(700));
                proxy.cut_all();
                cuts += 1;
            }
            cuts
        });
        for i in 0..12 {
            let name = clean.container(unique(&format!("cut{i}")));
            docker_ok(&["run", "--rm", "--name", &name, &test_image(), "true"]);
        }
        cutting.store(false, Ordering::Relaxed);
        cutter.join().expect("cutter thread")
    });
    let until = now_unix();
    let truth = engine_events(since, until);
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for e in &truth {
        *expected.entry(event_key(e)).or_default() += 1.0;
    }
    assert!(
        expected.get("container.start").copied().unwrap_or(0.0) >= 12.0,
        "{expected:?}"
    );

    let delta = |m: &Metrics| counted_since(&before, m, &expected);
    let caught_up = wait_until(Duration::from_secs(30), || delta(&dw.metrics()) == expected);
    let after = dw.metrics();
    assert!(
        caught_up,
        "counts differ from the engine's:\n dockwarden {:?}\n engine     {expected:?}",
        delta(&after)
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        delta(&dw.metrics()),
        expected,
        "nothing counted twice later"
    );
    let reconnects = after.get("dockwarden_stream_reconnects_total", &[]);
    let dedup = after.get("dockwarden_events_deduplicated_total", &[]);
    eprintln!(
        "cuts={cuts} reconnects={reconnects} deduplicated={dedup} events_checked={} keys={}",
        truth.len(),
        expected.len()
    );
    assert!(
        cuts >= 3 && reconnects >= 3.0,
        "cuts {cuts}, reconnects {reconnects}"
    );
    // Each resume with the inclusive `since` replays at least the last event.
    assert!(after.get("dockwarden_events_deduplicated_total", &[]) >= 1.0);
    dw.wait_ready(Duration::from_secs(20));
}

/// Garbage and an event of an unknown type injected into the live stream:
/// counted as malformed and as `other`, the stream stays up, and real events
/// after them are still counted.
#[test]
fn garbage_and_unknown_types_do_not_break_the_stream() {
    let clean = setup();
    let (proxy, mut dw) = behind_proxy(LOG_ALL);
    let before = dw.metrics();
    let now_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let unknown = format!(
        "{{\"Type\":\"gizmo\",\"Action\":\"spin: fast\",\"Actor\":{{\"ID\":\"g1\",\"Attributes\":{{}}}},\"scope\":\"local\",\"time\":{},\"timeNano\":{now_nanos}}}\n",
        now_nanos / 1_000_000_000
    );
    assert!(
        proxy.inject_to_client(b"this is not json\n") >= 1,
        "no live stream to inject into"
    );
    assert!(proxy.inject_to_client(b"{\"Type\":\"container\",\"Act") >= 1);
    assert!(proxy.inject_to_client(b"ion\"\n") >= 1);
    assert!(proxy.inject_to_client(unknown.as_bytes()) >= 1);
    let name = clean.container(unique("after-garbage"));
    docker_ok(&["run", "--rm", "--name", &name, &test_image(), "true"]);
    assert!(wait_until(Duration::from_secs(5), || {
        events(&dw.metrics(), "container", "destroy")
            >= events(&before, "container", "destroy") + 1.0
    }));
    let m = dw.metrics();
    assert_eq!(m.get("dockwarden_events_malformed_total", &[]), 2.0);
    assert_eq!(
        events(&m, "other", "other") - events(&before, "other", "other"),
        1.0
    );
    assert_eq!(
        events(&m, "container", "start") - events(&before, "container", "start"),
        1.0
    );
    assert_eq!(m.get("dockwarden_stream_reconnects_total", &[]), 0.0);
    // The unknown event reached the `*` rule.
    assert!(dw.wait_for_log("gizmo.spin", Duration::from_secs(2)));
    assert!(dw.try_status().is_none());
}

/// Acceptance 9: the endpoints answer as specified and SIGTERM exits 0
/// within the grace period.
#[test]
fn endpoints_and_graceful_sigterm() {
    require_docker();
    let mut dw = started(LOG_ALL);
    assert_eq!(dw.get("/healthz").0, 200);
    assert_eq!(dw.get("/readyz").0, 200);
    let (status, body) = dw.get("/metrics");
    assert_eq!(status, 200);
    let m = Metrics::parse(&body);
    assert_eq!(m.get("dockwarden_stream_connected", &[]), 1.0);
    assert_eq!(
        m.get(
            "dockwarden_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for name in [
        "dockwarden_events_malformed_total",
        "dockwarden_stream_reconnects_total",
        "dockwarden_queue_depth",
        "dockwarden_events_dropped_total",
        "dockwarden_event_lag_seconds_count",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(m.has(name), "/metrics lacks {name}");
    }
    assert_eq!(dw.get("/nope").0, 404);
    let asked = Instant::now();
    dw.sigterm();
    let status = dw
        .wait_exit(Duration::from_secs(12))
        .expect("exited within the grace period");
    assert_eq!(status.code(), Some(0), "log:\n{}", dw.log());
    assert!(asked.elapsed() < Duration::from_secs(12));
    assert!(dw.log().contains("dockwarden stopped."));
}

/// A rules file with a problem never starts a sidecar: exit 2, with the
/// problem's line and column.
#[test]
fn run_refuses_a_bad_rules_file() {
    let mut dw = Dockwarden::start("[[rule]]\nname = \"x\"\non = [\"*\"]\nhandler = \"nope\"\n");
    let status = dw.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        dw.log().contains(":4:11: unknown handler \"nope\""),
        "{}",
        dw.log()
    );
}

/// A half-open connection (the proxy stops forwarding but keeps it open):
/// after `idle_ping_secs` of silence the probe finds events the stream did
/// not deliver, the stream reconnects and catches up, counting each once.
#[test]
fn half_open_stall_is_noticed_and_caught_up() {
    let clean = setup();
    let rules = format!("[source]\nidle_ping_secs = 2\n{LOG_ALL}");
    let (proxy, mut dw) = behind_proxy(&rules);
    let before = dw.metrics();
    assert!(proxy.stall_all() >= 1, "no live stream to stall");
    let stalled_at = Instant::now();
    let name = clean.container(unique("stalled"));
    docker_ok(&["run", "--rm", "--name", &name, &test_image(), "true"]);
    let caught_up = wait_until(Duration::from_secs(15), || {
        events(&dw.metrics(), "container", "destroy")
            >= events(&before, "container", "destroy") + 1.0
    });
    assert!(caught_up, "the stalled stream was never replaced");
    let took = stalled_at.elapsed();
    assert!(took < Duration::from_secs(2 + 8), "noticed after {took:?}");
    let m = dw.metrics();
    assert!(m.get("dockwarden_stream_reconnects_total", &[]) >= 1.0);
    counted_once(&before, &m);
    assert!(dw.log().contains("the stream is dead"), "the log says why");
    dw.wait_ready(Duration::from_secs(5));
}

/// After the host's clock steps back (NTP, a resumed VM), the newest event
/// read is stamped ahead of the clock. The idle probe then used to ask the
/// engine for `since` after `until`, which it refuses (400): a healthy quiet
/// stream was replaced every `idle_ping_secs` until the clock caught up. An
/// event stamped a minute ahead, injected into the live stream, stands in
/// for the step. The probe must still find a stream that went half-open,
/// and what it missed, stamped before that event, must still be handled.
#[test]
fn a_quiet_stream_after_the_clock_stepped_back_is_not_called_dead() {
    let clean = setup();
    let rules = format!("[source]\nidle_ping_secs = 2\n{LOG_ALL}");
    let (proxy, dw) = behind_proxy(&rules);
    let ahead = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
        + 60_000_000_000;
    let event = format!(
        "{{\"Type\":\"container\",\"Action\":\"start\",\"Actor\":{{\"ID\":\"0123456789ab\",\"Attributes\":{{\"name\":\"stamped-ahead\"}}}},\"scope\":\"local\",\"time\":{},\"timeNano\":{ahead}}}\n",
        ahead / 1_000_000_000
    );
    assert!(
        proxy.inject_to_client(event.as_bytes()) >= 1,
        "no live stream to inject into"
    );
    assert!(dw.wait_for_log("stamped-ahead", Duration::from_secs(5)));
    // Three probes' worth of silence.
    thread::sleep(Duration::from_secs(7));
    let m = dw.metrics();
    assert_eq!(
        m.get("dockwarden_stream_reconnects_total", &[]),
        0.0,
        "a quiet, healthy stream was replaced:\n{}",
        dw.log()
    );
    assert!(!dw.log().contains("did not answer a probe"), "{}", dw.log());

    // Half-open now: the probe asks from the silence's start, finds what
    // the stream did not deliver, and the new stream replays it, though it
    // is stamped before the last event read: each counted once.
    let before = dw.metrics();
    assert!(proxy.stall_all() >= 1, "no live stream to stall");
    let name = clean.container(unique("after-step"));
    docker_ok(&["run", "--rm", "--name", &name, &test_image(), "true"]);
    assert!(
        wait_until(Duration::from_secs(15), || {
            events(&dw.metrics(), "container", "destroy")
                >= events(&before, "container", "destroy") + 1.0
        }),
        "the missed events were never caught up:\n{}",
        dw.log()
    );
    let m = dw.metrics();
    assert!(m.get("dockwarden_stream_reconnects_total", &[]) >= 1.0);
    counted_once(&before, &m);
    assert!(
        dw.log().contains("this stream did not deliver"),
        "{}",
        dw.log()
    );
}

/// A log pipe that closes (a log shipper restarting) must not make the
/// sidecar deaf or deaf to SIGTERM: writes are lost, the process goes on.
#[test]
fn closed_log_pipe_neither_kills_tasks_nor_blocks_sigterm() {
    use std::process::{Command, Stdio};
    require_docker();
    let dir = TempDir::new("closed-pipe");
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, LOG_ALL).expect("write rules");
    let addr = common::free_local_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .args(["run", "--rules"])
        .arg(&rules)
        .args(["--listen", &addr.to_string()])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dockwarden");
    // Close the read ends at once: every log write now fails with EPIPE.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let get = |path: &str| -> u16 {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .ok()
            .and_then(|mut s| common::http10_get(&mut s, &addr.to_string(), path).ok())
            .map_or(0, |(status, _)| status)
    };
    assert!(
        wait_until(Duration::from_secs(20), || get("/readyz") == 200),
        "never ready"
    );
    // Events keep flowing through logging handlers and the reader survives.
    docker_ok(&["run", "--rm", &test_image(), "true"]);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(get("/readyz"), 200, "the reader died");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success())
    );
    let exited = wait_until(Duration::from_secs(12), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    assert!(exited, "SIGTERM ignored with a closed log pipe");
    let status = child.wait().expect("reap");
    assert_eq!(status.code(), Some(0), "{status:?}");
}
