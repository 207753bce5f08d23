//! The stats reader behind `/api/v1/containers?stats=true`, against the real
//! engine: for a busy and an idle container it agrees with `docker stats`
//! (CPU within 10 points, memory within 5%, the same limit string), a
//! container that is not running reads as zeros as the CLI shows it, an
//! unknown ID is an error of its own entry, and the cache answers a second
//! read without asking the engine again.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{Cleanup, docker_ok, endpoint, require_test_image, test_image, unique};
use dockwarden::containers::stats::{DEFAULT_LIMIT, Reading, Stats, StatsReader, bytes_size};
use dockwarden::docker::DockerHandle;
use serde_json::Value;

/// A reader on the engine the tests use, with the API version negotiated.
async fn reader(cache: Duration) -> StatsReader {
    let docker = endpoint()
        .client()
        .unwrap_or_else(|e| panic!("{e}"))
        .negotiate_version()
        .await
        .unwrap_or_else(|e| panic!("cannot negotiate the API version with the engine: {e}"));
    let handle = DockerHandle::default();
    handle.set(docker);
    StatsReader::new(handle, cache, DEFAULT_LIMIT)
}

/// `docker run -d ARGS...` → the container's full ID.
fn run(cleanup: &Cleanup, name: &str, args: &[&str]) -> String {
    cleanup.container(name);
    docker_ok(&[&["run", "-d", "--name", name], args].concat())
}

/// `docker stats --no-stream` of `names`, by name.
fn cli_stats(names: &[String]) -> HashMap<String, Value> {
    let mut args = vec!["stats", "--no-stream", "--format", "{{json .}}"];
    args.extend(names.iter().map(String::as_str));
    docker_ok(&args)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("docker stats printed a line that is not JSON ({e}): {line}")
            });
            (v["Name"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect()
}

/// `12.3MiB` (go-units' `BytesSize`, as the CLI prints it) → bytes.
fn parse_size(s: &str) -> f64 {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or_else(|| panic!("no unit in size {s:?}"));
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|e| panic!("bad number in size {s:?}: {e}"));
    let power = match unit {
        "B" => 0,
        "KiB" => 1,
        "MiB" => 2,
        "GiB" => 3,
        "TiB" => 4,
        _ => panic!("unknown unit in size {s:?}"),
    };
    number * 1024f64.powi(power)
}

/// The CLI's view of one container: (CPU %, memory usage, limit string).
fn cli_view(cli: &HashMap<String, Value>, name: &str) -> (f64, f64, String) {
    let v = cli
        .get(name)
        .unwrap_or_else(|| panic!("docker stats did not show {name}: {cli:?}"));
    let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let cpu = field("CPUPerc");
    let cpu: f64 = cpu
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|e| panic!("docker stats CPUPerc {cpu:?} of {name}: {e}"));
    let mem = field("MemUsage");
    let (usage, limit) = mem
        .split_once(" / ")
        .unwrap_or_else(|| panic!("docker stats MemUsage {mem:?} of {name}"));
    (cpu, parse_size(usage), limit.to_owned())
}

fn ok(reading: &Reading, what: &str) -> Stats {
    match reading {
        Reading::Ok(stats) => *stats,
        Reading::Err(e) => panic!("no stats for the {what} container: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_agree_with_docker_stats_per_container() {
    require_test_image();
    let image = test_image();
    let cleanup = Cleanup::new();
    let busy_name = unique("stats-busy");
    let idle_name = unique("stats-idle");
    let stopped_name = cleanup.container(unique("stats-stopped"));
    let busy = run(
        &cleanup,
        &busy_name,
        // Capped at half a CPU: a steady rate whatever else the machine
        // runs, so both readings' windows see the same.
        &["--cpus", "0.5", &image, "sh", "-c", "while :; do :; done"],
    );
    let idle = run(&cleanup, &idle_name, &[&image, "sleep", "300"]);
    let stopped = docker_ok(&["create", "--name", &stopped_name, &image, "sleep", "1"]);
    let unknown = format!("dwt-no-such-container-{}", std::process::id());
    // Let the loop run a full collector interval before it is measured.
    thread::sleep(Duration::from_secs(2));

    // The CLI reads alongside, so both see the same collector rounds.
    let names = vec![busy_name.clone(), idle_name.clone(), stopped_name.clone()];
    let cli = thread::spawn(move || cli_stats(&names));

    let reader = reader(Duration::from_secs(2)).await;
    let ids = vec![busy.clone(), idle.clone(), stopped.clone(), unknown.clone()];
    let started = Instant::now();
    let first = reader.read(&ids).await;
    let took = started.elapsed();
    assert_eq!(first.len(), 4, "one reading per id: {first:?}");
    assert!(took <= Duration::from_secs(3), "4 reads took {took:?}");
    assert_eq!(reader.engine_reads(), 4);

    // Within the cache window: the same readings, no new engine read for
    // them; the unknown ID (an error) is asked again.
    let again = reader
        .read(&[busy.clone(), idle.clone(), unknown.clone()])
        .await;
    assert_eq!(again[0], first[0], "busy: a cached reading");
    assert_eq!(again[1], first[1], "idle: a cached reading");
    assert_eq!(
        reader.engine_reads(),
        5,
        "only the unknown ID was read again"
    );

    let (busy_stats, idle_stats) = (ok(&first[0], "busy"), ok(&first[1], "idle"));
    let cli = cli.join().expect("docker stats thread");
    for (name, stats) in [(&busy_name, busy_stats), (&idle_name, idle_stats)] {
        let (cpu, usage, limit) = cli_view(&cli, name);
        assert!(
            (stats.cpu_percent - cpu).abs() <= 10.0,
            "{name}: CPU {} here, {cpu} in docker stats",
            stats.cpu_percent
        );
        let ours = stats.memory_usage_bytes as f64;
        assert!(
            (ours - usage).abs() <= 0.05 * usage.max(ours),
            "{name}: memory {ours} here, {usage} in docker stats"
        );
        assert_eq!(bytes_size(stats.memory_limit_bytes as f64), limit, "{name}");
    }
    // Not vacuous: the loop takes its half CPU, the sleeper next to none.
    assert!(busy_stats.cpu_percent > 30.0, "busy: {busy_stats:?}");
    assert!(idle_stats.cpu_percent < 5.0, "idle: {idle_stats:?}");
    assert!(busy_stats.memory_usage_bytes > 0 && busy_stats.memory_limit_bytes > 0);

    // Not running: zeros, as the CLI shows it.
    assert_eq!(first[2], Reading::Ok(Stats::default()), "stopped");
    let (cpu, usage, limit) = cli_view(&cli, &stopped_name);
    assert_eq!((cpu, usage, limit.as_str()), (0.0, 0.0, "0B"));

    // The unknown ID is an error of its own entry.
    let Reading::Err(e) = &first[3] else {
        panic!("an unknown id read as {:?}", first[3]);
    };
    assert!(e.contains("404") && e.contains("No such container"), "{e}");
    assert_eq!(first[3].to_json()["error"], Value::from(e.as_str()));

    // The API's entry for the busy one.
    let json = first[0].to_json();
    for key in [
        "cpu_percent",
        "memory_usage_bytes",
        "memory_limit_bytes",
        "memory_percent",
    ] {
        assert!(json[key].is_number(), "{key} in {json}");
    }
    assert_eq!(
        json["memory_usage"],
        Value::from(bytes_size(busy_stats.memory_usage_bytes as f64))
    );

    // Past the window the engine is asked again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = reader.read(std::slice::from_ref(&busy)).await;
    ok(&later[0], "busy");
    assert_eq!(reader.engine_reads(), 6, "a stale reading is read again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_cache_asks_the_engine_every_time() {
    require_test_image();
    let cleanup = Cleanup::new();
    let name = unique("stats-nocache");
    let id = run(&cleanup, &name, &[&test_image(), "sleep", "300"]);
    let reader = reader(Duration::ZERO).await;
    let ids = vec![id.clone(), id];
    // The same container twice in one request: one read after the other.
    let readings = reader.read(&ids).await;
    ok(&readings[0], "first");
    ok(&readings[1], "second");
    reader.read(&ids[..1]).await;
    assert_eq!(reader.engine_reads(), 3);
}

/// Acceptance 4 through the API: `?stats=true` adds `stats` to the running
/// containers only (checked against `docs/api.yaml`), a busy one reads
/// busy and an idle one idle, one container's entry carries its stats, and
/// `dockwarden status` prints CPU % and MEM for them.
#[test]
fn stats_through_the_api_and_the_status_table() {
    use common::api::{get_json, with_tokens};
    require_test_image();
    let clean = Cleanup::new();
    let dir = common::TempDir::new("dwt-stats");
    let tag = unique("stapi");
    let label = format!("dwt.stats={tag}");
    let image = test_image();
    let busy = format!("{tag}-busy");
    let idle = format!("{tag}-idle");
    let done = format!("{tag}-done");
    run(
        &clean,
        &busy,
        &["--label", &label, &image, "sh", "-c", "while :; do :; done"],
    );
    run(&clean, &idle, &["--label", &label, &image, "sleep", "300"]);
    run(&clean, &done, &["--label", &label, &image, "true"]);
    let dw = with_tokens(&dir, "");
    let path = format!("/api/v1/containers?label=dwt.stats%3D{tag}&stats=true");
    let mut list = Value::Null;
    assert!(
        common::wait_until(Duration::from_secs(20), || {
            list = get_json(&dw, &path);
            list.as_array().is_some_and(|l| l.len() == 3)
                && list[0]["state"] == "running"
                && list[1]["state"] == "exited"
        }),
        "{list}"
    );
    let by_name = |n: &str| -> Value {
        list.as_array()
            .and_then(|l| l.iter().find(|e| e["name"] == n).cloned())
            .unwrap_or_else(|| panic!("no {n} in {list}"))
    };
    let b = by_name(&busy);
    let i = by_name(&idle);
    assert!(
        b["stats"]["cpu_percent"].as_f64().unwrap_or(0.0) > 50.0,
        "{b}"
    );
    assert!(
        i["stats"]["cpu_percent"].as_f64().unwrap_or(100.0) < 5.0,
        "{i}"
    );
    assert!(
        i["stats"]["memory_usage_bytes"].as_u64().unwrap_or(0) > 0,
        "{i}"
    );
    assert!(
        by_name(&done).get("stats").is_none(),
        "a stopped container has none"
    );
    // Without the parameter: no engine call, no stats.
    let plain = get_json(&dw, &format!("/api/v1/containers?label=dwt.stats%3D{tag}"));
    assert!(
        plain
            .as_array()
            .is_some_and(|l| l.iter().all(|e| e.get("stats").is_none()))
    );
    let one = get_json(&dw, &format!("/api/v1/containers/{busy}"));
    assert!(
        one["stats"]["cpu_percent"].as_f64().unwrap_or(0.0) > 50.0,
        "{one}"
    );
    let token = dir.path().join("api.token");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .args(["status", "--url", &dw.base_url(), "--token-file"])
        .arg(&token)
        .output()
        .expect("run dockwarden status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let row = |n: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(n))
            .unwrap_or_else(|| panic!("no row for {n}:\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let busy_row = row(&busy);
    let cpu: f64 = busy_row[busy_row.len() - 2].parse().unwrap_or(0.0);
    assert!(cpu > 50.0, "{table}");
    assert!(
        busy_row
            .last()
            .is_some_and(|m| m.ends_with("iB") || m.ends_with('B')),
        "{table}"
    );
    let done_row = row(&done);
    assert_eq!(&done_row[done_row.len() - 2..], ["-", "-"], "{table}");
}
