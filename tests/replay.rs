//! `dockwarden replay`: recorded real streams through `rules/default.toml`,
//! offline, with the exact decisions asserted.
//!
//! The recordings under `tests/data/` were made from the real engine by the
//! recorder below, never by hand. To record them again (the engine must
//! answer and have the test image; see `scripts/test`):
//!
//! ```sh
//! cargo test --test replay -- --ignored record
//! ```
//!
//! - `events-crashloop.jsonl`: a container labelled `dockwarden.heal=true`
//!   whose command exits 3, started 7 times, then removed.
//! - `events-exec.jsonl`: a root exec of `sh -i -c …` in one container, a
//!   health-checked container turning unhealthy, a network created,
//!   connected, disconnected and removed, then both containers `rm -f`'d.
//!
//! `live_recording_round_trips` records a short stream now, from the raw
//! `GET /events` body (the committed ones are `docker events` output), and
//! replays it, so the recorder and both input forms are exercised on every
//! run. Tests needing Docker
//! fail (never skip) when it is missing, saying how to start it.

mod common;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Cleanup, docker, docker_ok, now_unix, test_image, unique, wait_until};
use serde_json::Value;

const CRASHLOOP: &str = "tests/data/events-crashloop.jsonl";
const EXEC: &str = "tests/data/events-exec.jsonl";
/// The names the committed recordings use.
const CRASHY: &str = "replay-web-1";
const DB: &str = "replay-db";
const SICK: &str = "replay-sick";
const NET: &str = "replay-net";

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn default_rules() -> PathBuf {
    manifest("rules/default.toml")
}

/// `dockwarden replay ARGS…` with `stdin` fed in, its environment given.
fn replay_with(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockwarden"));
    cmd.arg("replay").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start dockwarden replay");
    // Closed at once when there is nothing to feed.
    if let (Some(mut input), Some(bytes)) = (child.stdin.take(), stdin) {
        input.write_all(bytes).expect("write stdin");
    }
    child.wait_with_output().expect("dockwarden replay ends")
}

fn replay(args: &[&str]) -> Output {
    replay_with(args, None, &[])
}

/// The replay's JSON report of `files` through the default rules.
fn report(files: &[&Path]) -> Value {
    let rules = default_rules();
    let mut args: Vec<&str> = vec!["--json", "--rules", rules.to_str().expect("utf-8")];
    args.extend(files.iter().map(|f| f.to_str().expect("utf-8")));
    let out = replay(&args);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The texts of the decisions of `handler` (all handlers if empty).
fn texts(report: &Value, handler: &str) -> Vec<String> {
    report["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| handler.is_empty() || d["handler"] == handler)
        .map(|d| d["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn crashloop_expectation(name: &str, cycles: usize) -> Vec<String> {
    let mut want: Vec<String> = [1, 2, 4, 8, 16]
        .iter()
        .take(cycles)
        .enumerate()
        .map(|(i, b)| {
            format!(
                "would restart {name}: exit 3, attempt {}, backoff {b}s",
                i + 1
            )
        })
        .collect();
    if cycles > 5 {
        want.push(format!("would recreate {name}: exit 3, restarts spent"));
    }
    if cycles > 6 {
        want.push(format!("would give up on {name}: exit 3, breaker open"));
    }
    want
}

#[test]
fn crashloop_restarts_with_backoff_then_recreates_then_gives_up() {
    let r = report(&[&manifest(CRASHLOOP)]);
    let mut want = crashloop_expectation(CRASHY, 7);
    want.push(format!("breaker closed for {CRASHY}: destroyed"));
    assert_eq!(texts(&r, "restart"), want, "{r:#}");
    // Each restart's facts, and what the engine would have confirmed.
    let restarts: Vec<&Value> = r["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| d["handler"] == "restart" && d["kind"] == "act")
        .collect();
    let backoffs: Vec<u64> = restarts
        .iter()
        .map(|d| d["details"]["backoff_ms"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(backoffs, [1000, 2000, 4000, 8000, 16000]);
    for d in &restarts {
        assert_eq!(d["rule"], "heal-crashes");
        assert_eq!(d["event"], "container.die");
        assert_eq!(d["subject"], CRASHY);
        let unverified = d["unverified"].to_string();
        assert!(unverified.contains("exit code"), "{unverified}");
        assert!(unverified.contains("restart policy"), "{unverified}");
    }
    // Offsets follow the recorded times, not the replay's.
    let offsets: Vec<i64> = restarts
        .iter()
        .map(|d| d["offset_ms"].as_i64().unwrap_or(-1))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    // The breaker's own events go through the rules too.
    let logged = texts(&r, "log");
    assert!(
        logged.iter().any(|t| t.starts_with(&format!(
            "would log debug: dockwarden.breaker_open {CRASHY}"
        ))),
        "{logged:#?}"
    );
    assert_eq!(
        logged
            .iter()
            .filter(|t| t.starts_with("would log info: container.die"))
            .count(),
        7,
        "log-crashes: one line per crash"
    );
    let t = &r["totals"];
    assert_eq!(t["malformed"], 0);
    assert_eq!(t["own_events"], 2, "breaker_open and breaker_closed");
    let lines = std::fs::read_to_string(manifest(CRASHLOOP)).expect("recording");
    assert_eq!(t["events"].as_u64(), Some(lines.lines().count() as u64));
    assert_eq!(
        t["decisions"].as_u64(),
        Some(r["decisions"].as_array().map_or(0, |d| d.len() as u64))
    );
    let heal = r["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|x| x["name"] == "heal-crashes")
        .expect("heal-crashes reported");
    assert_eq!(heal["matched"], 7);
    assert_eq!(heal["keys"]["container.die"], 7);
}

#[test]
fn exec_health_and_network_decisions() {
    let r = report(&[&manifest(EXEC)]);
    let exec = texts(&r, "exec_audit");
    assert!(
        exec.contains(&format!(
            "would write exec_start high: root sh -i -c echo replay in {DB}"
        )),
        "{exec:#?}"
    );
    assert!(
        exec.contains(&format!(
            "would write exec_end high: sh -i -c echo replay in {DB}, exit 0"
        )),
        "{exec:#?}"
    );
    // Without an inspect a probe cannot be told from a person, and an
    // unverified shell is graded high, as exec_audit grades it.
    let probe = format!("would write exec_start high: root /bin/sh -c false in {SICK}");
    assert!(exec.contains(&probe), "{exec:#?}");
    let own = texts(&r, "log");
    assert!(
        own.iter().any(
            |t| t.starts_with(&format!("would log debug: dockwarden.exec {DB} "))
                && t.contains("severity=high")
                && t.contains("exec_id_verified=false")
        ),
        "the audit's own event is routed: {own:#?}"
    );
    let heal = texts(&r, "restart");
    assert_eq!(
        heal.first().map(String::as_str),
        Some(format!("would restart {SICK}: unhealthy, attempt 1, backoff 1s").as_str()),
        "{heal:#?}"
    );
    // rm -f kills it: an operator's decision, never healed.
    assert!(
        heal.contains(&format!(
            "suppressed restart of {SICK}: exit 137 (SIGKILL): it was stopped or killed through the API since its last start"
        )),
        "{heal:#?}"
    );
    // (The containers' own connects to the default bridge are there too.)
    let net: Vec<String> = texts(&r, "network_audit")
        .into_iter()
        .filter(|t| t.contains(NET) || t.contains("second disconnect"))
        .collect();
    assert_eq!(
        net,
        [
            format!("would write network_create: {NET} (bridge)"),
            format!("would write network_connect: {DB} to {NET}"),
            format!("would write network_disconnect: {DB} from {NET}"),
            "would not write network_disconnect: a second disconnect (Engine 20.10 logs each twice): recorded once".to_owned(),
            format!("would write network_destroy: {NET} (bridge)"),
        ]
    );
}

/// Heal, exec audit and a notify rule on their own events.
const NOTIFY_RULES: &str = r#"
[notify.targets.ops]
kind = "webhook"
url = "http://127.0.0.1:9/never-called"

[[rule]]
name = "heal-crashes"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = { "dockwarden.heal" = "true" }

[[rule]]
name = "audit-exec"
on = ["container.exec_start", "container.exec_die"]
handler = "exec_audit"

[[rule]]
name = "tell-ops"
on = ["dockwarden.breaker_open", "dockwarden.exec"]
handler = "notify"
[rule.match]
severity = ["high", "critical"]
[rule.with]
target = "ops"
"#;

#[test]
fn notifications_are_decisions_never_sent() {
    let dir = common::process::fresh_temp_dir("replay-notify");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, NOTIFY_RULES).expect("write rules");
    let (a, b) = (manifest(CRASHLOOP), manifest(EXEC));
    let out = replay(&[
        "--json",
        "--rules",
        rules.to_str().expect("utf-8"),
        a.to_str().expect("utf-8"),
        b.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    let told = texts(&r, "notify");
    assert_eq!(
        told.first().map(String::as_str),
        Some(format!("would notify ops: [dry run] gave up on {CRASHY}").as_str()),
        "{told:#?}"
    );
    assert!(
        told.contains(&format!("would notify ops: shell in {DB} as root")),
        "{told:#?}"
    );
    let first = &r["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["handler"] == "notify")
        .expect("a notify decision")["details"];
    assert_eq!(first["target"], "ops");
    assert_eq!(first["severity"], "high");
    assert_eq!(r["rules"][2]["keys"]["dockwarden.breaker_open"], 1);
}

#[test]
fn text_agrees_with_json() {
    let rules = default_rules();
    let file = manifest(CRASHLOOP);
    let args = [
        "--rules",
        rules.to_str().expect("utf-8"),
        file.to_str().expect("utf-8"),
    ];
    let out = replay(&args);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let r = report(&[&file]);
    // Every decision's line, in order, under its handler's heading, and
    // nothing else.
    let decisions = r["decisions"].as_array().expect("decisions");
    let mut handlers: Vec<&str> = Vec::new();
    for d in decisions {
        let h = d["handler"].as_str().unwrap_or("");
        if !handlers.contains(&h) {
            handlers.push(h);
        }
    }
    let mut want: Vec<String> = vec!["Decisions:".to_owned()];
    for h in handlers {
        let mine: Vec<&Value> = decisions.iter().filter(|d| d["handler"] == h).collect();
        want.push(format!("  {h} ({}):", mine.len()));
        for d in mine {
            let ms = d["offset_ms"].as_i64().unwrap_or(-1);
            let mut line = format!(
                "    +{}.{:03}s {} [{}]",
                ms / 1000,
                ms % 1000,
                d["text"].as_str().unwrap_or(""),
                d["rule"].as_str().unwrap_or("")
            );
            let unverified: Vec<&str> = d["unverified"]
                .as_array()
                .map(|u| u.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !unverified.is_empty() {
                line.push_str(&format!(" (unverified: {})", unverified.join(", ")));
            }
            want.push(line);
        }
    }
    let got: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "Decisions:")
        .take_while(|l| !l.starts_with("Totals:"))
        .collect();
    assert_eq!(got, want);
    assert!(
        text.contains("  heal-crashes (restart): 7 matched: container.die 7"),
        "{text}"
    );
    let t = &r["totals"];
    let totals = format!(
        "Totals: {} lines, {} events, 0 malformed, 0 blank, 0 unreadable inputs, {} own events, {} matched events ({} matches), {} decisions",
        t["lines"], t["events"], t["own_events"], t["matched_events"], t["matches"], t["decisions"]
    );
    assert!(
        text.trim_end().ends_with(&totals),
        "{totals}\nnot at the end of:\n{text}"
    );
}

#[test]
fn bad_lines_are_named_and_the_rest_counts() {
    let dir = common::process::fresh_temp_dir("replay-bad");
    let good = std::fs::read_to_string(manifest(CRASHLOOP)).expect("recording");
    let mut lines: Vec<&str> = good.lines().collect();
    let n = lines.len();
    lines.insert(2, "this is not json");
    lines.insert(5, r#"{"Type":"container","Actor":{"ID":"x"},"timeNano":1}"#);
    lines.insert(7, "");
    let file = dir.join("mixed.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let rules = default_rules();
    let out = replay(&[
        "--json",
        "--rules",
        rules.to_str().expect("utf-8"),
        file.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "bad lines are not fatal");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    assert!(
        stderr.contains(&format!("{f}:3: not a JSON event object")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{f}:6: event has no Action")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    let t = &r["totals"];
    assert_eq!(
        (
            t["events"].as_u64(),
            t["malformed"].as_u64(),
            t["blank"].as_u64()
        ),
        (Some(n as u64), Some(2), Some(1))
    );
    assert_eq!(r["problems"][0]["line"], 3);
    let mut want = crashloop_expectation(CRASHY, 7);
    want.push(format!("breaker closed for {CRASHY}: destroyed"));
    assert_eq!(texts(&r, "restart"), want);
}

#[test]
fn stdin_and_several_files_in_order() {
    let rules = default_rules();
    let bytes = std::fs::read(manifest(CRASHLOOP)).expect("recording");
    let out = replay_with(
        &["--json", "--rules", rules.to_str().expect("utf-8"), "-"],
        Some(&bytes),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(texts(&r, "restart").len(), 8);
    // Both recordings, one after the other: the decisions of each, in order.
    let both = report(&[&manifest(CRASHLOOP), &manifest(EXEC)]);
    let all = texts(&both, "");
    let crash = all
        .iter()
        .position(|t| t.contains("breaker open"))
        .expect("crash loop decided");
    let exec = all
        .iter()
        .position(|t| t.contains("exec_start high"))
        .expect("exec decided");
    assert!(crash < exec);
}

#[test]
fn a_bad_rules_file_exits_2_as_check_reports_it() {
    let dir = common::process::fresh_temp_dir("replay-rules");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"x\"\non = [\"container.die\"]\nhandler = \"restart\"\n[rule.with]\nmax_restarts = \"five\"\ncolour = 1\n",
    )
    .expect("write rules");
    let file = manifest(CRASHLOOP);
    let out = replay(&[
        "--rules",
        bad.to_str().expect("utf-8"),
        file.to_str().expect("utf-8"),
    ]);
    let check = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .arg("check")
        .arg(&bad)
        .output()
        .expect("run check");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:6:", bad.display())),
        "{stderr}"
    );
    assert_eq!(stderr, String::from_utf8_lossy(&check.stderr));
    assert!(out.stdout.is_empty());
    let none = replay(&[
        "--rules",
        "/nonexistent/rules.toml",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&none.stderr)
            .starts_with("/nonexistent/rules.toml:1:1: cannot read rules file:"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}

#[test]
fn an_unreadable_input_is_named_and_exits_1() {
    let rules = default_rules();
    let good = manifest(CRASHLOOP);
    let out = replay(&[
        "--json",
        "--rules",
        rules.to_str().expect("utf-8"),
        "/nonexistent/recording.jsonl",
        good.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("/nonexistent/recording.jsonl: cannot read:"),
        "{stderr}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("the rest is still reported");
    assert_eq!(r["totals"]["unreadable"], 1);
    assert_eq!(texts(&r, "restart").len(), 8);
}

/// Counts the connections made to a unix socket, from a thread.
fn listen_counting(path: &Path) -> Arc<AtomicUsize> {
    let listener = UnixListener::bind(path).expect("bind the test socket");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if conn.is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    count
}

#[test]
fn no_engine_connection_is_made() {
    let dir = common::process::fresh_temp_dir("replay-sock");
    let sock = dir.join("docker.sock");
    let count = listen_counting(&sock);
    // The socket counts what connects to it.
    drop(std::os::unix::net::UnixStream::connect(&sock).expect("connect"));
    assert!(wait_until(Duration::from_secs(5), || count
        .load(Ordering::SeqCst)
        == 1));
    let host = format!("unix://{}", sock.display());
    let rules = default_rules();
    let (a, b) = (manifest(CRASHLOOP), manifest(EXEC));
    let out = replay_with(
        &[
            "--rules",
            rules.to_str().expect("utf-8"),
            a.to_str().expect("utf-8"),
            b.to_str().expect("utf-8"),
        ],
        None,
        &[("DOCKER_HOST", &host)],
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would restart"));
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "replay connected to DOCKER_HOST"
    );
}

#[test]
fn live_recording_round_trips() {
    let cleanup = Cleanup::for_engine_test();
    let dir = common::process::fresh_temp_dir("replay-live");
    let file = dir.join("live.jsonl");
    let name = unique("replay-live");
    // Through the API this time: the raw body is the other input form.
    record_crashloop(&cleanup, &name, (3, false), Via::Api, &file);
    let r = report(&[&file]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        texts(&r, "restart"),
        crashloop_expectation(&name, 3),
        "{r:#}"
    );
    assert_eq!(r["totals"]["malformed"], 0);
}

/// Re-records `tests/data/events-*.jsonl` from the real engine.
#[test]
#[ignore = "re-records tests/data/events-*.jsonl: cargo test --test replay -- --ignored record"]
fn record() {
    let cleanup = Cleanup::for_engine_test();
    record_crashloop(&cleanup, CRASHY, (7, true), Via::Cli, &manifest(CRASHLOOP));
    record_exec(&cleanup, &manifest(EXEC));
}

// ---------------------------------------------------------------------------
// The recorder
// ---------------------------------------------------------------------------

/// How a recording is read from the engine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `docker events --format '{{json .}}'`.
    Cli,
    /// The raw body of `GET /events?since=…&until=…` on the engine's socket.
    Api,
}

/// The engine's events between `since` and `until` (Unix seconds), one
/// JSON object a line, as `via` gives them.
fn engine_lines(since: f64, until: f64, via: Via) -> String {
    if via == Via::Api {
        let (since, until) = (format!("{since:.9}"), format!("{until:.9}"));
        let path = common::engine::docker_socket_path()
            .expect("the API recording needs the engine on a unix socket (DOCKER_HOST=unix://…)");
        let mut stream = std::os::unix::net::UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
        let query = format!("/events?since={since}&until={until}");
        let (status, body) =
            common::http::http10_get(&mut stream, "docker", &query).expect("GET /events");
        assert_eq!(status, 200, "GET {query}: {body}");
        return body;
    }
    common::engine::engine_events_text(since, until)
}

/// The engine's events between `since` and `until` (Unix seconds) whose
/// actor is one of `ids`, or a network event about one of them, each line
/// as the engine gave it, written to `out`.
fn write_events(since: f64, until: f64, ids: &[String], via: Via, out: &Path) -> usize {
    let printed = engine_lines(since, until, via);
    let mut kept = String::new();
    let mut n = 0;
    for line in printed.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("the engine gave a line that is not JSON ({e}): {line}"));
        let actor = v["Actor"]["ID"].as_str().unwrap_or("");
        let about = v["Actor"]["Attributes"]["container"].as_str().unwrap_or("");
        if ids.iter().any(|id| id == actor || id == about) {
            kept.push_str(line);
            kept.push('\n');
            n += 1;
        }
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).expect("create the recording's directory");
    }
    std::fs::write(out, kept).expect("write the recording");
    n
}

/// Waits until the engine's events up to now can be read back (they are
/// logged just after the CLI returns).
fn settle() -> f64 {
    std::thread::sleep(Duration::from_millis(500));
    now_unix()
}

/// A container labelled `dockwarden.heal=true` whose command exits 3,
/// started `cycles` times (each start by hand, as an operator or another
/// healer would), then removed if `remove`.
fn record_crashloop(
    cleanup: &Cleanup,
    name: &str,
    (cycles, remove): (usize, bool),
    via: Via,
    out: &Path,
) {
    let _ = docker(&["rm", "-f", name]);
    let since = now_unix();
    cleanup.container(name);
    let image = test_image();
    let id = docker_ok(&[
        "create",
        "--name",
        name,
        "--label",
        "dockwarden.heal=true",
        &image,
        "sh",
        "-c",
        "exit 3",
    ]);
    for _ in 0..cycles {
        docker_ok(&["start", name]);
        assert_eq!(docker_ok(&["wait", name]), "3");
    }
    if remove {
        docker_ok(&["rm", name]);
    }
    let n = write_events(since, settle(), &[id], via, out);
    let dies = std::fs::read_to_string(out)
        .expect("recording")
        .matches(r#""Action":"die""#)
        .count();
    assert_eq!(dies, cycles, "{n} events recorded in {}", out.display());
}

/// A root exec of `sh -i` in one container, a health-checked container
/// that turns unhealthy, a network connect and disconnect, then `rm -f`.
fn record_exec(cleanup: &Cleanup, out: &Path) {
    for n in [DB, SICK] {
        let _ = docker(&["rm", "-f", n]);
    }
    let _ = docker(&["network", "rm", NET]);
    let since = now_unix();
    let image = test_image();
    cleanup.container(DB);
    cleanup.container(SICK);
    cleanup.network(NET);
    let db = docker_ok(&["run", "-d", "--name", DB, &image, "sleep", "300"]);
    let out_text = docker_ok(&["exec", "-u", "root", DB, "sh", "-i", "-c", "echo replay"]);
    assert!(out_text.starts_with("replay"), "{out_text}");
    // A probe that always fails, every second: unhealthy at the first.
    let run = format!(
        "run -d --name {SICK} --label dockwarden.heal=true --health-cmd false \
         --health-interval 1s --health-retries 1 {image} sleep 300"
    );
    let sick = docker_ok(&run.split_whitespace().collect::<Vec<_>>());
    let unhealthy = wait_until(Duration::from_secs(30), || {
        common::inspect(SICK)["State"]["Health"]["Status"] == "unhealthy"
    });
    assert!(unhealthy, "{SICK} never became unhealthy");
    let net = docker_ok(&["network", "create", NET]);
    docker_ok(&["network", "connect", NET, DB]);
    docker_ok(&["network", "disconnect", NET, DB]);
    docker_ok(&["network", "rm", NET]);
    // Stop the probes before the end, then remove both.
    docker_ok(&["rm", "-f", SICK]);
    docker_ok(&["rm", "-f", DB]);
    write_events(since, settle(), &[db, sick, net], Via::Cli, out);
}
