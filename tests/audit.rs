//! The exec and network audit log against the real engine: enrichment,
//! severities, health probes, forged exec IDs, the hash chain (verify,
//! tampering, rotation, restart), the file mode, network records, and no
//! second record for an exec replayed after a kill -9; and, on files
//! written here without the engine, what verify says of a deleted rotation.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use dockwarden::audit::{ChainTail, Record, chain_line, rotated};

use common::{
    Cleanup, Dockwarden, TempDir, docker, docker_ok, now_unix, require_docker, require_test_image,
    test_image, unique, wait_until,
};
use serde_json::Value;

fn setup() -> Cleanup {
    require_docker();
    require_test_image();
    Cleanup::new()
}

fn rules(log: &Path, max_bytes: u64, include_healthchecks: bool) -> String {
    format!(
        r#"
[audit]
path = "{}"
max_bytes = {max_bytes}
keep = 50
fsync = "always"

[[rule]]
name = "audit-exec"
on = ["container.exec_start", "container.exec_die"]
handler = "exec_audit"
[rule.with]
include_healthchecks = {include_healthchecks}

[[rule]]
name = "audit-network"
on = ["network.*"]
handler = "network_audit"
"#,
        log.display()
    )
}

fn start(log: &Path, max_bytes: u64) -> Dockwarden {
    let mut dw = Dockwarden::start(&rules(log, max_bytes, false));
    dw.wait_ready(Duration::from_secs(20));
    dw
}

/// All records of the log and its rotations, oldest first.
fn records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    // audit.jsonl.N (highest first), then audit.jsonl
    files.sort_by_key(|p| {
        let n: i64 = p
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        -n
    });
    files
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("audit.jsonl"))
        })
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// The exec records of a container.
fn for_container<'a>(all: &'a [Value], name: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|r| {
            r["container_name"] == name
                && r["kind"].as_str().is_some_and(|k| k.starts_with("exec_"))
        })
        .collect()
}

fn wait_records(dir: &Path, what: &str, mut ok: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    if wait_until(Duration::from_secs(10), || {
        last = records(dir);
        ok(&last)
    }) {
        return last;
    }
    panic!(
        "{what}: records so far:\n{}",
        serde_json::to_string_pretty(&last).unwrap_or_default()
    );
}

fn verify(args: &[&Path]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .args(["audit", "verify"])
        .args(args)
        .output()
        .expect("run dockwarden audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Acceptance 1, 2, 7: a tty shell is `high` with its exit code; privileged
/// is `critical`; `-u 1000` is user "1000", `low`; the file is 0600.
#[test]
fn exec_records_are_enriched_and_graded() {
    let clean = setup();
    let dir = TempDir::new("audit-grade");
    let log = dir.path().join("audit.jsonl");
    let _dw = start(&log, 100 << 20);
    let name = clean.container(unique("audited"));
    let image = test_image();
    docker_ok(&["run", "-d", "--name", &name, &image, "sleep", "300"]);
    assert_eq!(
        docker(&["exec", "-t", &name, "sh", "-c", "exit 5"])
            .status
            .code(),
        Some(5)
    );
    // Privileged execs may be refused by a sandboxed runtime: what matters is
    // the record, whatever the exec's own fate.
    let _ = docker(&["exec", "--privileged", &name, "true"]);
    docker_ok(&["exec", "-u", "1000", &name, "true"]);

    let all = wait_records(dir.path(), "six exec records", |r| {
        for_container(r, &name).len() >= 6
    });
    let mine = for_container(&all, &name);
    let starts: Vec<&&Value> = mine.iter().filter(|r| r["kind"] == "exec_start").collect();
    let ends: Vec<&&Value> = mine.iter().filter(|r| r["kind"] == "exec_end").collect();
    assert_eq!((starts.len(), ends.len()), (3, 3), "{mine:#?}");

    let shell = starts[0];
    assert_eq!(shell["tty"], true);
    assert_eq!(shell["severity"], "high");
    assert_eq!(shell["command"], serde_json::json!(["sh", "-c", "exit 5"]));
    assert_eq!(shell["image"], image.as_str());
    assert_eq!(shell["user"], "root");
    assert_eq!(shell["enriched"], true);
    assert_eq!(shell["exec_id_verified"], true);
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(shell["container_id"], id.as_str());
    let shell_end = ends
        .iter()
        .find(|e| e["exec_id"] == shell["exec_id"])
        .expect("the shell's end record");
    assert_eq!(shell_end["exit_code"], 5);
    assert!(shell_end["duration_ms"].as_i64().is_some());

    assert_eq!(starts[1]["privileged"], true);
    assert_eq!(starts[1]["severity"], "critical");
    assert_eq!(starts[2]["user"], "1000");
    assert_eq!(starts[2]["severity"], "low");
    for r in &mine {
        let ts = r["ts"].as_str().unwrap_or("");
        assert!(
            ts.len() == 30 && ts.ends_with('Z'),
            "RFC 3339 with nanoseconds: {ts}"
        );
        assert!(r["host"].as_str().is_some_and(|h| !h.is_empty()));
    }
    let mode = std::fs::metadata(&log)
        .expect("log exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

/// An exec that cannot start (unknown user) has no exec_die: it still gets
/// its start record and an end record.
#[test]
fn failed_exec_still_gets_both_records() {
    let clean = setup();
    let dir = TempDir::new("audit-failed");
    let _dw = start(&dir.path().join("audit.jsonl"), 100 << 20);
    let name = clean.container(unique("failexec"));
    docker_ok(&["run", "-d", "--name", &name, &test_image(), "sleep", "300"]);
    let out = docker(&["exec", "-u", "nosuchuser", &name, "true"]);
    assert!(!out.status.success());
    let all = wait_records(dir.path(), "start and end of a failed exec", |r| {
        for_container(r, &name).len() >= 2
    });
    let mine = for_container(&all, &name);
    assert_eq!(mine[0]["kind"], "exec_start");
    assert_eq!(mine[0]["user"], "nosuchuser");
    assert_eq!(mine[1]["kind"], "exec_end");
    assert_eq!(mine[1]["exit_code"], 126);
}

/// Acceptance 3: health probes are counted, not written.
#[test]
fn health_probes_are_counted_not_written() {
    let clean = setup();
    let dir = TempDir::new("audit-probes");
    let dw = start(&dir.path().join("audit.jsonl"), 100 << 20);
    let name = clean.container(unique("probed"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--health-cmd",
        "test -d /tmp",
        "--health-interval",
        "1s",
        &test_image(),
        "sleep",
        "300",
    ]);
    thread::sleep(Duration::from_secs(10));
    // One human exec of a different command is written.
    docker_ok(&["exec", &name, "true"]);
    let all = wait_records(dir.path(), "the human exec", |r| {
        !for_container(r, &name).is_empty()
    });
    let mine = for_container(&all, &name);
    assert!(
        mine.iter()
            .all(|r| r["command"] == serde_json::json!(["true"])),
        "{mine:#?}"
    );
    let m = dw.metrics();
    assert!(m.get("dockwarden_exec_total", &[("kind", "healthcheck")]) >= 2.0);
    assert!(m.get("dockwarden_exec_total", &[("kind", "user")]) >= 1.0);
}

/// Acceptance 4: a container labelled `execID=deadbeef` never gets that ID
/// into a record as if verified.
#[test]
fn forged_exec_id_is_never_trusted() {
    let clean = setup();
    let dir = TempDir::new("audit-forged");
    let _dw = start(&dir.path().join("audit.jsonl"), 100 << 20);
    let name = clean.container(unique("forged"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "execID=deadbeef",
        "--label",
        "exitCode=0",
        &test_image(),
        "sleep",
        "300",
    ]);
    // Long enough to be found among the container's running execs.
    assert_eq!(
        docker(&["exec", &name, "sh", "-c", "sleep 2; exit 7"])
            .status
            .code(),
        Some(7)
    );
    // Over before it can be looked up: flagged instead.
    docker_ok(&["exec", &name, "true"]);
    let all = wait_records(dir.path(), "four records", |r| {
        for_container(r, &name).len() >= 4
    });
    let mine = for_container(&all, &name);
    for r in &mine {
        assert_ne!(r["exec_id"], "deadbeef", "forged ID recorded: {r}");
        if r["exec_id_verified"] == true {
            assert!(
                r["exec_id"].as_str().is_some_and(|id| id.len() == 64),
                "{r}"
            );
        } else {
            assert_eq!(r["exec_id"], Value::Null, "{r}");
            assert_eq!(r["claimed_exec_id"], "deadbeef", "{r}");
            assert_eq!(r["enriched"], false, "{r}");
        }
    }
    let long = mine
        .iter()
        .find(|r| {
            r["kind"] == "exec_start"
                && r["command"] == serde_json::json!(["sh", "-c", "sleep 2; exit 7"])
        })
        .expect("the long exec's start");
    assert_eq!(
        long["exec_id_verified"], true,
        "the running exec is found: {long}"
    );
    let long_end = mine
        .iter()
        .find(|r| r["kind"] == "exec_end" && r["exec_id"] == long["exec_id"])
        .expect("its end");
    assert_eq!(
        long_end["exit_code"], 7,
        "the real exit code, not the exitCode label"
    );
}

/// Acceptance 5 and 8: network records in order; verify passes, and
/// flipping a byte, deleting a line or swapping two lines fails at that line.
#[test]
fn network_records_and_tamper_evidence() {
    let clean = setup();
    let dir = TempDir::new("audit-verify");
    let log = dir.path().join("audit.jsonl");
    let mut dw = start(&log, 100 << 20);
    let name = clean.container(unique("netted"));
    let net = clean.network(unique("audnet"));
    docker_ok(&["run", "-d", "--name", &name, &test_image(), "sleep", "300"]);
    docker_ok(&["network", "create", &net]);
    docker_ok(&["network", "connect", &net, &name]);
    docker_ok(&["network", "disconnect", &net, &name]);
    docker_ok(&["network", "rm", &net]);
    let all = wait_records(dir.path(), "network records", |r| {
        r.iter()
            .any(|x| x["kind"] == "network_destroy" && x["network_name"] == net.as_str())
    });
    let kinds: Vec<&str> = all
        .iter()
        .filter(|r| r["network_name"] == net.as_str())
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "network_create",
            "network_connect",
            "network_disconnect",
            "network_destroy"
        ]
    );
    let connect = all
        .iter()
        .find(|r| r["kind"] == "network_connect" && r["network_name"] == net.as_str())
        .expect("connect record");
    assert_eq!(connect["container_name"], name.as_str());
    assert_eq!(connect["driver"], "bridge");
    dw.sigterm();
    assert_eq!(
        dw.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );

    let (code, out) = verify(&[&log]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("chain intact"), "{out}");
    let pristine = std::fs::read_to_string(&log).expect("read log");
    let lines: Vec<&str> = pristine.lines().collect();
    assert!(lines.len() >= 4);
    let expect_fail_at = |text: String, line: usize, what: &str| {
        std::fs::write(&log, text).expect("write log");
        let (code, out) = verify(&[&log]);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(
            out.starts_with(&format!("{}:{line}:", log.display())),
            "{what}: {out}"
        );
    };
    // Flip one byte inside the third record's command or kind.
    let mut flipped = lines.clone();
    let third = flipped[2].replacen("\"ts\":\"2", "\"ts\":\"3", 1);
    assert_ne!(third, flipped[2], "the byte was flipped");
    flipped[2] = &third;
    expect_fail_at(flipped.join("\n") + "\n", 3, "flipped byte");
    let mut deleted = lines.clone();
    deleted.remove(1);
    expect_fail_at(deleted.join("\n") + "\n", 2, "deleted line");
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    expect_fail_at(swapped.join("\n") + "\n", 2, "swapped lines");
    std::fs::write(&log, pristine).expect("restore");
    assert_eq!(verify(&[&log]).0, 0);
}

/// Acceptance 6: rotation at a small `max_bytes` keeps the chain across
/// files, a restart continues it, and verify passes over the directory.
#[test]
fn rotation_and_restart_keep_the_chain() {
    let clean = setup();
    let dir = TempDir::new("audit-rotate");
    let log = dir.path().join("audit.jsonl");
    let name = clean.container(unique("rotated"));
    docker_ok(&["run", "-d", "--name", &name, &test_image(), "sleep", "300"]);
    for round in 0..2 {
        let mut dw = start(&log, 2048);
        for _ in 0..6 {
            docker_ok(&["exec", &name, "true"]);
        }
        let want = 12 * (round + 1);
        wait_records(dir.path(), "exec records", |r| {
            for_container(r, &name).len() >= want
        });
        dw.sigterm();
        assert_eq!(
            dw.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
            Some(0)
        );
    }
    assert!(
        dir.path().join("audit.jsonl.2").exists(),
        "rotated more than once"
    );
    let all = records(dir.path());
    let seqs: Vec<u64> = all.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "one chain across files and restarts"
    );
    let (code, out) = verify(&[dir.path()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("{} records in ", all.len())),
        "{out}"
    );
}

/// An unwritable log never stops healing or counting: records are buffered
/// and written once the file can be written.
#[test]
fn unwritable_log_buffers_then_recovers() {
    let clean = setup();
    let dir = TempDir::new("audit-blocked");
    let log = dir.path().join("audit.jsonl");
    // A directory in the log's place: every write fails.
    std::fs::create_dir_all(&log).expect("block the path");
    let dw = start(&log, 100 << 20);
    let name = clean.container(unique("blocked"));
    docker_ok(&["run", "-d", "--name", &name, &test_image(), "sleep", "300"]);
    docker_ok(&["exec", &name, "true"]);
    assert!(wait_until(Duration::from_secs(10), || {
        let m = dw.metrics();
        m.get("dockwarden_audit_write_errors_total", &[]) >= 1.0
            && m.get("dockwarden_audit_buffered_records", &[]) >= 2.0
    }));
    assert_eq!(dw.get("/readyz").0, 200, "still serving");
    std::fs::remove_dir(&log).expect("unblock the path");
    let all = wait_records(dir.path(), "buffered records written", |r| {
        for_container(r, &name).len() >= 2
    });
    assert_eq!(for_container(&all, &name).len(), 2);
    assert!(wait_until(Duration::from_secs(5), || dw
        .metrics()
        .get("dockwarden_audit_buffered_records", &[])
        == 0.0));
}

fn start_with_state(log: &Path, state: &Path) -> Dockwarden {
    let state = state.display().to_string();
    let mut dw =
        Dockwarden::start_with(&rules(log, 100 << 20, false), &["--state-dir", &state], &[]);
    dw.wait_ready(Duration::from_secs(20));
    dw
}

/// `time_nano` of the checkpoint in `state`; 0 if there is none yet.
fn checkpoint_time(state: &Path) -> i64 {
    std::fs::read(state.join("checkpoint.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["time_nano"].as_i64())
        .unwrap_or(0)
}

/// Exec records of the container with this ID, counted by (kind, exec ID),
/// the exec ID being the verified `exec_id` or else the `claimed_exec_id`.
fn per_exec(all: &[Value], container_id: &str) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for r in all.iter().filter(|r| {
        r["container_id"] == container_id
            && r["kind"].as_str().is_some_and(|k| k.starts_with("exec_"))
    }) {
        let exec = r["exec_id"]
            .as_str()
            .or_else(|| r["claimed_exec_id"].as_str())
            .unwrap_or("none");
        let key = (r["kind"].as_str().unwrap_or("").to_owned(), exec.to_owned());
        *seen.entry(key).or_default() += 1;
    }
    seen
}

/// Issue 8 item 2: the sidecar is killed with a checkpoint from before
/// three execs it had audited, their container is removed, and the restart
/// replays the execs. Enrichment now fails (the container is gone), so the
/// replay would be unverified records claiming the same exec IDs: they are
/// not written. One exec_start and one exec_end per exec, and the chain
/// verifies.
#[test]
fn a_replay_after_kill_9_does_not_audit_an_exec_twice() {
    let clean = setup();
    let dir = TempDir::new("audit-kill9");
    let log = dir.path().join("audit.jsonl");
    let state = dir.path().join("state");
    let mut dw = start_with_state(&log, &state);
    let name = clean.container(unique("replayed"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "dwt.audit=kill9",
        &test_image(),
        "sleep",
        "300",
    ]);
    let id = docker_ok(&["inspect", "-f", "{{.Id}}", &name]);
    assert!(
        wait_until(Duration::from_secs(10), || checkpoint_time(&state) > 0),
        "no checkpoint written; log:\n{}",
        dw.log()
    );
    // A checkpoint from before the execs: the one a kill -9 a moment later
    // could leave behind, had it not been written again since.
    let older = std::fs::read(state.join("checkpoint.json")).expect("read the checkpoint");

    for code in 0..3 {
        let out = docker(&["exec", &name, "sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.status.code(), Some(code));
    }
    let all = wait_records(dir.path(), "six verified exec records", |r| {
        for_container(r, &name)
            .iter()
            .filter(|x| x["exec_id_verified"] == true)
            .count()
            >= 6
    });
    let before = per_exec(&all, &id);
    assert_eq!(
        before.len(),
        6,
        "three execs, each a start and an end: {before:?}"
    );

    dw.kill9();
    std::fs::write(state.join("checkpoint.json"), &older).expect("restore the older checkpoint");
    docker_ok(&["rm", "-f", &name]);
    let removed_at = now_unix();

    let mut dw = start_with_state(&log, &state);
    // Caught up: the watermark passed events newer than the removal, so
    // every replayed event of the removed container has been handled.
    let marker = clean.container(unique("marker"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &marker,
        &test_image(),
        "sleep",
        "300",
    ]);
    docker_ok(&["exec", &marker, "true"]);
    wait_records(dir.path(), "the marker exec", |r| {
        for_container(r, &marker).len() >= 2
    });
    assert!(
        wait_until(Duration::from_secs(15), || {
            checkpoint_time(&state) as f64 >= removed_at * 1e9
                && dw.metrics().get("dockwarden_audit_buffered_records", &[]) == 0.0
        }),
        "the restarted sidecar did not catch up; log:\n{}",
        dw.log()
    );
    assert!(
        dw.log().contains("audited as unverified"),
        "the replay did not reach the removed container's execs; log:\n{}",
        dw.log()
    );

    let after = per_exec(&records(dir.path()), &id);
    let twice: Vec<_> = after.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty() && after.len() == 6,
        "one exec_start and one exec_end per exec: {after:?}"
    );
    dw.sigterm();
    assert_eq!(
        dw.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
    let (code, out) = verify(&[&log]);
    assert_eq!(code, 0, "{out}");
}

/// The next `n` lines of the chain at `tail`, as the writer chains them.
fn chain_lines(tail: &mut ChainTail, n: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut record = Record::new();
            record.insert("kind".into(), "test".into());
            record.insert("n".into(), (tail.seq + 1).into());
            let (line, hash) = chain_line(&record, tail).expect("a map encodes");
            *tail = ChainTail {
                seq: tail.seq + 1,
                hash,
            };
            line
        })
        .collect()
}

/// Writes one chain across `files` (oldest first), `per_file` records in
/// each.
fn write_chain(files: &[PathBuf], per_file: u64) {
    let mut tail = ChainTail::default();
    for file in files {
        let lines = chain_lines(&mut tail, per_file);
        std::fs::write(file, lines.concat()).expect("write a log file");
    }
}

/// A deleted rotation is named, not skipped: every `.N` is read, and a gap
/// in the numbering fails verification (deleting `.1` used to hide `.2` and
/// older, and verify said "chain intact").
#[test]
fn verify_names_a_deleted_rotation() {
    let dir = TempDir::new("audit-gap");
    let log = dir.path().join("audit.jsonl");
    let files: Vec<PathBuf> = (1..=3)
        .rev()
        .map(|n| rotated(&log, n))
        .chain([log.clone()])
        .collect();
    write_chain(&files, 3);
    let (code, out) = verify(&[dir.path()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("12 records in 4 file(s), chain intact"),
        "{out}"
    );

    std::fs::remove_file(rotated(&log, 1)).expect("delete .1");
    let (code, out) = verify(&[dir.path()]);
    assert_eq!(code, 1, "{out}");
    let missing = format!("{}: missing", rotated(&log, 1).display());
    assert!(out.contains(&missing), "names the deleted file: {out}");
    assert!(!out.contains("chain intact"), "{out}");

    // The live file is number 0 of the same sequence.
    write_chain(&files, 3);
    std::fs::remove_file(&log).expect("delete the live file");
    let (code, out) = verify(&[dir.path()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}: missing", log.display())),
        "{out}"
    );
}

/// Two logs in one directory (two sidecars', or a copy beside the log) are
/// two chains, each verified on its own and named: not one chain that
/// "lost records" where the second starts.
#[test]
fn verify_of_a_directory_checks_each_log_as_its_own_chain() {
    let dir = TempDir::new("audit-two-logs");
    let first = dir.path().join("audit.jsonl");
    let second = dir.path().join("other.jsonl");
    write_chain(&[rotated(&first, 1), first.clone()], 3);
    write_chain(std::slice::from_ref(&second), 2);
    let (code, out) = verify(&[dir.path()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{}: 6 records in 2 file(s), chain intact",
            first.display()
        )) && out.contains(&format!(
            "{}: 2 records in 1 file(s), chain intact",
            second.display()
        )),
        "{out}"
    );
}

/// A line a crash cut short, which the writer keeps on a line of its own
/// and continues the chain before, is reported as a torn record at
/// FILE:LINE (a failure, but not called altered), and the chain is checked
/// on past it: the records after it link to the one before it.
#[test]
fn verify_reports_a_torn_record_and_checks_on_past_it() {
    let dir = TempDir::new("audit-torn");
    let log = dir.path().join("audit.jsonl");
    let mut tail = ChainTail::default();
    let mut lines = chain_lines(&mut tail, 3);
    lines.push(b"{\"hash\":\"ab12\n".to_vec());
    lines.extend(chain_lines(&mut tail, 3));
    std::fs::write(&log, lines.concat()).expect("write");
    let (code, out) = verify(&[&log]);
    assert_eq!(code, 1, "{out}");
    let torn = format!("{}:4: torn record", log.display());
    assert!(out.contains(&torn), "{out}");
    assert!(
        !out.contains("not a JSON record") && !out.contains("intact"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "nothing else is wrong: {out}");

    // Past the torn line, an altered record is found too.
    let altered = String::from_utf8(lines[6].clone()).expect("UTF-8");
    lines[6] = altered.replace("\"n\":6", "\"n\":7").into_bytes();
    std::fs::write(&log, lines.concat()).expect("write");
    let (code, out) = verify(&[&log]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&torn), "{out}");
    let seq6 = format!("{}:7: record seq 6 was altered", log.display());
    assert!(out.contains(&seq6), "{out}");
}

/// `audit verify` run while the sidecar appends a batch can read the live
/// file's last line half written. That is looked at again, not called
/// torn: the line is checked once it is finished. A last line that stays
/// unfinished was cut short by a crash, and is reported as torn.
#[test]
fn verify_waits_for_a_last_line_being_written() {
    let dir = TempDir::new("audit-live-tail");
    let log = dir.path().join("audit.jsonl");
    let mut tail = ChainTail::default();
    let lines = chain_lines(&mut tail, 4);
    let (head, rest) = lines[3].split_at(lines[3].len() / 2);
    std::fs::write(&log, [&lines[..3].concat(), head].concat()).expect("write");
    let writer = {
        let (log, rest) = (log.clone(), rest.to_vec());
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(400));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("open the log to append");
            std::io::Write::write_all(&mut f, &rest).expect("finish the line");
        })
    };
    let (code, out) = verify(&[&log]);
    writer.join().expect("the writer thread");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("4 records in 1 file(s), chain intact"),
        "{out}"
    );

    // Never finished: a crash cut it short.
    std::fs::write(&log, [&lines[..3].concat(), head].concat()).expect("write");
    let (code, out) = verify(&[&log]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}:4: torn record", log.display())),
        "{out}"
    );
    assert!(
        !out.contains("intact") && !out.contains("was altered"),
        "{out}"
    );
}
