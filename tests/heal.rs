//! Self-healing against the real engine: restart with backoff, respect for
//! operators and Docker's restart policies, recreate, the breaker, raising
//! memory after an OOM kill, forged exit codes and dry runs. Timings are read
//! from the engine's own event record, not from dockwarden.

mod common;

use std::thread;
use std::time::Duration;

use common::{
    Cleanup, Dockwarden, TempDir, docker_ok, free_local_addr, inspect, now_unix, test_image,
    unique, wait_until,
};
use serde_json::Value;

fn started(rules: &str, args: &[&str]) -> Dockwarden {
    let mut dw = Dockwarden::start_with(rules, args, &[]);
    dw.wait_ready(Duration::from_secs(20));
    dw
}

/// A restart rule for containers labelled `dwt.heal=true`.
fn restart_rule(with: &str) -> String {
    format!(
        r#"
[[rule]]
name = "heal-crashes"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.heal" = "true" }}
exit_code = "nonzero"
[rule.with]
{with}
"#
    )
}

/// The parameters of the escalation tests: 3 restarts, 200 ms doubling
/// to a 1 s cap, then one recreate, then the breaker.
const ESCALATION: &str = "max_restarts = 3\nwindow_secs = 60\nthen = \"recreate\"\nbackoff_initial_ms = 200\nbackoff_max_secs = 1";

/// The decisions [`ESCALATION`] leads to in a crash loop, as [`decisions`]
/// renders them.
const ESCALATION_SEQUENCE: [&str; 5] = [
    "restart attempt 1 backoff 200ms",
    "restart attempt 2 backoff 400ms",
    "restart attempt 3 backoff 800ms",
    "recreate",
    "breaker open",
];

/// dockwarden's healing decisions about `name`, in log order, worded the
/// same for a real run ("Will restart …") and a dry run ("Would restart …").
fn decisions(log: &str, name: &str) -> Vec<String> {
    let tag = format!("container={name}");
    let restart = format!("restart {name}: ");
    let recreate = format!("recreate {name}: ");
    log.lines()
        .filter(|l| l.split_whitespace().any(|w| w == tag))
        .filter_map(|l| {
            if let Some(rest) = l.split(&restart).nth(1) {
                let word_after = |marker: &str| {
                    rest.split(marker)
                        .nth(1)
                        .and_then(|r| r.split([',', ' ']).next())
                        .map(|w| w.trim_end_matches('.').to_owned())
                };
                Some(format!(
                    "restart attempt {} backoff {}",
                    word_after("attempt ")?,
                    word_after("backoff ")?
                ))
            } else if l.contains(&recreate) {
                Some("recreate".to_owned())
            } else if l.contains("up on the container: breaker open") {
                Some("breaker open".to_owned())
            } else {
                None
            }
        })
        .collect()
}

fn unhealthy_rule(handler: &str, with: &str) -> String {
    format!(
        r#"
[[rule]]
name = "heal-unhealthy"
on = ["container.health_status"]
handler = "{handler}"
[rule.match]
labels = {{ "dwt.heal" = "true" }}
status = "unhealthy"
[rule.with]
{with}
"#
    )
}

/// A `raise_memory` rule on `container.oom` doubling the limit.
fn raise_memory_rule(with: &str) -> String {
    format!(
        r#"
[[rule]]
name = "oom"
on = ["container.oom"]
handler = "raise_memory"
[rule.match]
labels = {{ "dwt.heal" = "true" }}
[rule.with]
factor = 2.0
{with}
"#
    )
}

/// `docker run -d --name NAME --label dwt.heal=true ARGS…`: a container
/// the rules of these tests heal.
fn run_healable(name: &str, args: &[&str]) {
    let mut run = vec!["run", "-d", "--name", name, "--label", "dwt.heal=true"];
    run.extend_from_slice(args);
    docker_ok(&run);
}

/// A health check of `cmd` every 300 ms, unhealthy at its first failure.
fn probe(cmd: &str) -> [&str; 6] {
    [
        "--health-cmd",
        cmd,
        "--health-interval",
        "300ms",
        "--health-retries",
        "1",
    ]
}

fn restarts(dw: &Dockwarden, name: &str) -> f64 {
    dw.metrics()
        .get("dockwarden_container_restarts_total", &[("name", name)])
}

fn actions(dw: &Dockwarden, action: &str, result: &str) -> f64 {
    dw.metrics().get(
        "dockwarden_actions_total",
        &[("action", action), ("result", result)],
    )
}

fn history(name: &str, since: f64) -> Vec<(String, i64)> {
    common::container_history(name, since)
}

/// Acceptance 1: a crashing labelled container is restarted, and the gaps
/// between restarts grow as the backoff says.
#[test]
fn crash_loop_is_restarted_with_growing_backoff() {
    let clean = Cleanup::for_engine_test();
    let dw = started(
        &restart_rule("backoff_initial_ms = 500\nmax_restarts = 10"),
        &[],
    );
    let since = now_unix();
    let name = clean.container(unique("crashloop"));
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
        "sleep 1; exit 3",
    ]);
    assert!(
        wait_until(Duration::from_secs(40), || restarts(&dw, &name) >= 4.0),
        "not restarted 4 times"
    );
    docker_ok(&["rm", "-f", &name]);
    let gaps = common::die_to_start_secs(&history(&name, since));
    assert!(gaps.len() >= 4, "gaps {gaps:?}");
    for (i, expected) in [0.5, 1.0, 2.0, 4.0].iter().enumerate() {
        assert!(
            gaps[i] >= *expected && gaps[i] < expected + 1.5,
            "gap {i} is {:.3}s, backoff says {expected}s (all: {gaps:?})",
            gaps[i]
        );
    }
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1] && gaps[3] > gaps[2],
        "{gaps:?}"
    );
}

/// Acceptance 2: `docker stop`, `kill` and `restart` are operators'
/// decisions, never causes for a restart.
#[test]
fn operator_stop_kill_restart_are_respected() {
    let clean = Cleanup::for_engine_test();
    let dw = started(&restart_rule("backoff_initial_ms = 200"), &[]);
    let since = now_unix();
    let name = clean.container(unique("operator"));
    let image = test_image();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "dwt.heal=true",
        &image,
        "sleep",
        "300",
    ]);
    let running = |n: &str| inspect(n)["State"]["Running"] == true;

    docker_ok(&["stop", "-t", "1", &name]);
    thread::sleep(Duration::from_secs(2));
    assert!(!running(&name), "restarted after docker stop");

    docker_ok(&["start", &name]);
    docker_ok(&["kill", &name]);
    thread::sleep(Duration::from_secs(2));
    assert!(!running(&name), "restarted after docker kill");

    docker_ok(&["start", &name]);
    docker_ok(&["restart", "-t", "1", &name]);
    thread::sleep(Duration::from_secs(2));
    assert!(running(&name));

    let starts = history(&name, since)
        .iter()
        .filter(|(a, _)| a == "start")
        .count();
    assert_eq!(
        starts, 4,
        "run, start, start, restart: no start of dockwarden's"
    );
    assert_eq!(actions(&dw, "restart", "ok"), 0.0);
    assert_eq!(actions(&dw, "restart", "suppressed"), 3.0);
    assert!(dw.log().contains("stopped or killed through the API"));
}

/// Acceptance 3: `max_restarts = 3` → exactly 3 restarts, 1 recreate (new
/// ID, same name), then the breaker opens and nothing more happens.
#[test]
fn restarts_then_one_recreate_then_breaker() {
    let clean = Cleanup::for_engine_test();
    let dw = started(&restart_rule(ESCALATION), &[]);
    let name = clean.container(unique("breaker"));
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
        "sleep 1; exit 3",
    ]);
    let old_id = inspect(&name)["Id"].as_str().unwrap_or_default().to_owned();
    assert!(
        wait_until(Duration::from_secs(40), || dw
            .metrics()
            .get("dockwarden_breaker_open", &[])
            == 1.0),
        "breaker never opened"
    );
    thread::sleep(Duration::from_secs(4));
    assert_eq!(actions(&dw, "restart", "ok"), 3.0);
    assert_eq!(actions(&dw, "recreate", "ok"), 1.0);
    assert_eq!(restarts(&dw, &name), 3.0);
    assert_eq!(dw.metrics().get("dockwarden_breaker_open", &[]), 1.0);
    let now = inspect(&name);
    assert_ne!(
        now["Id"].as_str(),
        Some(old_id.as_str()),
        "recreated: new ID"
    );
    assert_eq!(
        now["State"]["Running"], false,
        "left down once the breaker opened"
    );
    assert!(dw.log().contains("breaker open"));
    assert_eq!(decisions(&dw.log(), &name), ESCALATION_SEQUENCE);
    // The old container is gone, not lingering aside.
    let all = docker_ok(&["ps", "-a", "--format", "{{.ID}}", "--no-trunc"]);
    assert!(!all.contains(&old_id));
}

/// Waits for `dw`'s first recreate, then the inspect of the new container
/// named `name` (whose old inspect is `old`).
fn recreated(dw: &Dockwarden, name: &str, old: &Value) -> Value {
    assert!(
        wait_until(Duration::from_secs(30), || actions(dw, "recreate", "ok")
            >= 1.0),
        "never recreated"
    );
    let new = inspect(name);
    assert_ne!(new["Id"], old["Id"], "the same container");
    new
}

/// Acceptance 4: a recreated container keeps env, labels, cmd, port binding,
/// bind mount, named volume, memory limit, restart policy, healthcheck, and
/// both user-defined networks with their aliases.
#[test]
fn recreate_preserves_the_container() {
    let clean = Cleanup::for_engine_test();
    let net1 = clean.network(unique("net-a"));
    let net2 = clean.network(unique("net-b"));
    let vol = clean.volume(unique("vol"));
    docker_ok(&["network", "create", &net1]);
    docker_ok(&["network", "create", &net2]);
    docker_ok(&["volume", "create", &vol]);
    let bind = TempDir::new("bind");
    let bind_dir = bind.path().display().to_string();
    let port = free_local_addr().port().to_string();
    let dw = started(
        &unhealthy_rule("recreate", "max_restarts = 1\nstop_timeout_secs = 1"),
        &[],
    );
    let name = clean.container(unique("recreate"));
    let publish = format!("127.0.0.1:{port}:8080");
    let bind_spec = format!("{bind_dir}:/data/bind");
    let vol_spec = format!("{vol}:/data/vol");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "dwt.heal=true",
        "--label",
        "team=core",
        "-e",
        "FOO=bar",
        "--network",
        &net1,
        "--network-alias",
        "alias-one",
        "-p",
        &publish,
        "-v",
        &bind_spec,
        "-v",
        &vol_spec,
        "-m",
        "64m",
        "--restart",
        "unless-stopped",
        "--health-cmd",
        "test -e /tmp/never",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        &test_image(),
        "sleep",
        "300",
    ]);
    docker_ok(&["network", "connect", "--alias", "alias-two", &net2, &name]);
    let old = inspect(&name);
    let new = recreated(&dw, &name, &old);
    let env: Vec<&str> = new["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"FOO=bar"), "{env:?}");
    assert_eq!(new["Config"]["Labels"]["team"], "core");
    assert_eq!(new["Config"]["Cmd"], serde_json::json!(["sleep", "300"]));
    assert_eq!(new["Config"]["Image"], test_image().as_str());
    assert_eq!(
        new["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"],
        port.as_str()
    );
    let binds: Vec<&str> = new["HostConfig"]["Binds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        binds.contains(&bind_spec.as_str()) && binds.contains(&vol_spec.as_str()),
        "{binds:?}"
    );
    assert_eq!(new["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(new["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(new["Config"]["Healthcheck"], old["Config"]["Healthcheck"]);
    assert_eq!(
        new["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "test -e /tmp/never"])
    );
    for (net, alias) in [(&net1, "alias-one"), (&net2, "alias-two")] {
        let aliases = &new["NetworkSettings"]["Networks"][net.as_str()]["Aliases"];
        assert!(
            aliases
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == alias)),
            "{net}: {aliases}"
        );
    }
    let old_id = old["Id"].as_str().unwrap_or_default();
    assert!(!docker_ok(&["ps", "-a", "--no-trunc", "--format", "{{.ID}}"]).contains(old_id));
}

/// A recreate keeps what the create API takes only in places bollard's
/// model lacks or a bind would override: a fixed MAC address (set through
/// the API, where the engine's version takes it: the docker CLI 25 and
/// later set it per network, which engines below API 1.44 refuse) and
/// `--volumes-from …:ro`, which stays read-only over the same volume.
#[test]
fn recreate_keeps_a_fixed_mac_and_a_read_only_volume_from() {
    let clean = Cleanup::for_engine_test();
    let name = clean.container(unique("recreate-mac"));
    let source = clean.container(unique("recreate-src"));
    let dw = started(
        &unhealthy_rule("recreate", "max_restarts = 1\nstop_timeout_secs = 1"),
        &[],
    );
    docker_ok(&[
        "run",
        "--name",
        &source,
        "-v",
        "/data",
        &test_image(),
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    let volume = inspect(&source)["Mounts"][0]["Name"]
        .as_str()
        .map(str::to_owned)
        .expect("the source's anonymous volume");
    clean.volume(volume);
    let mac = "02:64:77:61:72:64";
    let socket = common::docker_socket_path().expect(
        "this test creates its container through the engine's unix socket; unset DOCKER_HOST",
    );
    let engine =
        |send: &dyn Fn(&mut std::os::unix::net::UnixStream) -> std::io::Result<(u16, String)>| {
            let mut stream =
                std::os::unix::net::UnixStream::connect(&socket).expect("the engine's socket");
            send(&mut stream).expect("an answer from the engine")
        };
    let (_, version) = engine(&|s| common::http10_get(s, "docker", "/version"));
    let version: Value = serde_json::from_str(&version).expect("GET /version's JSON");
    let api = version["ApiVersion"]
        .as_str()
        .expect("ApiVersion")
        .to_owned();
    let minor: u32 = api
        .strip_prefix("1.")
        .and_then(|m| m.parse().ok())
        .expect("an API version 1.N");
    let mut create = serde_json::json!({
        "Image": test_image(),
        "Cmd": ["sleep", "300"],
        "Labels": {"dwt.heal": "true"},
        "Healthcheck": {
            "Test": ["CMD-SHELL", "test -e /tmp/never"],
            "Interval": 500_000_000,
            "Retries": 1,
        },
        "HostConfig": {"VolumesFrom": [format!("{source}:ro")]},
    });
    if minor < 44 {
        create["MacAddress"] = mac.into();
    } else {
        create["NetworkingConfig"] =
            serde_json::json!({"EndpointsConfig": {"bridge": {"MacAddress": mac}}});
    }
    let (status, body) = engine(&|s| {
        common::http10_post_json(
            s,
            "docker",
            &format!("/v{api}/containers/create?name={name}"),
            &create.to_string(),
        )
    });
    assert_eq!(status, 201, "{body}");
    docker_ok(&["start", &name]);
    let mac_in_use = |c: &Value| c["NetworkSettings"]["Networks"]["bridge"]["MacAddress"].clone();
    let old = inspect(&name);
    assert_eq!(mac_in_use(&old), mac, "the engine took the MAC");
    let new = recreated(&dw, &name, &old);
    assert_eq!(mac_in_use(&new), mac, "the new container's MAC");
    let data = new["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["Destination"] == "/data")
        .cloned()
        .unwrap_or_default();
    assert_eq!(data["RW"], false, "{data}");
    assert_eq!(docker_ok(&["exec", &name, "cat", "/data/f"]).trim(), "kept");
    let write = common::docker(&["exec", &name, "touch", "/data/g"]);
    assert!(
        !write.status.success(),
        "/data is writable after the recreate: {}",
        String::from_utf8_lossy(&write.stderr)
    );
}

/// Acceptance 5: a crash under `--restart on-failure:5` is left to Docker
/// (suppressed), but the same policy does not stop dockwarden from
/// restarting an unhealthy container.
#[test]
fn restart_policy_is_left_to_docker_except_when_unhealthy() {
    let clean = Cleanup::for_engine_test();
    let rules = restart_rule("backoff_initial_ms = 100")
        + &unhealthy_rule("restart", "backoff_initial_ms = 100\nstop_timeout_secs = 1");
    let dw = started(&rules, &[]);
    let image = test_image();
    let crash = clean.container(unique("policy-crash"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &crash,
        "--label",
        "dwt.heal=true",
        "--restart",
        "on-failure:5",
        &image,
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || inspect(&crash)["RestartCount"]
            .as_i64()
            >= Some(2)),
        "Docker did not restart it"
    );
    assert!(actions(&dw, "restart", "suppressed") >= 1.0);
    assert_eq!(restarts(&dw, &crash), 0.0);
    docker_ok(&["rm", "-f", &crash]);

    let sick = clean.container(unique("policy-sick"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &sick,
        "--label",
        "dwt.heal=true",
        "--restart",
        "on-failure:5",
        "--health-cmd",
        "false",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        &image,
        "sleep",
        "300",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || restarts(&dw, &sick) >= 1.0),
        "unhealthy container not restarted"
    );
}

/// Docker's restart policy starting a crashed container again is not an
/// operator's start: the breaker stays open (it used to close, and healing
/// started over on a container that had used up its restarts). The engine
/// tells the two apart by `RestartCount`, which a start through the API
/// sets to 0, as `docker stop` and `docker start` then show.
#[test]
fn a_start_by_docker_s_restart_policy_keeps_the_breaker_open() {
    let clean = Cleanup::for_engine_test();
    let dw = started(
        &unhealthy_rule(
            "restart",
            "max_restarts = 1\nthen = \"none\"\nbackoff_initial_ms = 100\nstop_timeout_secs = 1",
        ),
        &[],
    );
    let name = clean.container(unique("policy-breaker"));
    let image = test_image();
    // Unhealthy at once; exits 3 once /tmp/crash exists (a start clears it).
    let mut args = vec!["--restart", "always"];
    args.extend(probe("false"));
    args.extend([
        image.as_str(),
        "sh",
        "-c",
        "rm -f /tmp/crash; while [ ! -e /tmp/crash ]; do sleep 0.1; done; exit 3",
    ]);
    run_healable(&name, &args);
    assert!(
        wait_until(Duration::from_secs(20), || dw
            .metrics()
            .get("dockwarden_breaker_open", &[])
            == 1.0),
        "breaker never opened:\n{}",
        dw.log()
    );
    assert_eq!(restarts(&dw, &name), 1.0);

    docker_ok(&["exec", &name, "touch", "/tmp/crash"]);
    assert!(
        wait_until(Duration::from_secs(10), || inspect(&name)["RestartCount"]
            .as_i64()
            >= Some(1)),
        "Docker's policy did not start it again"
    );
    assert!(
        dw.wait_for_log("Breaker stays open", Duration::from_secs(5)),
        "{}",
        dw.log()
    );
    // Unhealthy again within 300 ms: a closed breaker would restart it.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(dw.metrics().get("dockwarden_breaker_open", &[]), 1.0);
    assert_eq!(restarts(&dw, &name), 1.0, "{}", dw.log());
    assert!(!dw.log().contains("Breaker closed."), "{}", dw.log());

    // An operator's stop and start closes it.
    docker_ok(&["stop", "-t", "1", &name]);
    docker_ok(&["start", &name]);
    assert!(
        dw.wait_for_log("Breaker closed.", Duration::from_secs(10)),
        "{}",
        dw.log()
    );
}

/// Acceptance 6: the restart call for an unhealthy container is issued
/// within 1 s of its `health_status: unhealthy` event (the engine's `kill`
/// event marks the call).
#[test]
fn unhealthy_is_restarted_within_a_second() {
    let clean = Cleanup::for_engine_test();
    let dw = started(
        &unhealthy_rule("restart", "backoff_initial_ms = 100\nstop_timeout_secs = 2"),
        &[],
    );
    let since = now_unix();
    let name = clean.container(unique("unhealthy"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "dwt.heal=true",
        "--health-cmd",
        "false",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        &test_image(),
        "sleep",
        "300",
    ]);
    assert!(wait_until(Duration::from_secs(20), || restarts(&dw, &name) >= 1.0));
    let events = history(&name, since);
    let unhealthy = events
        .iter()
        .find(|(a, _)| a == "health_status: unhealthy")
        .map(|(_, t)| *t)
        .expect("an unhealthy event");
    let kill = events
        .iter()
        .find(|(a, t)| a == "kill" && *t > unhealthy)
        .map(|(_, t)| *t)
        .expect("a kill after it");
    let secs = (kill - unhealthy) as f64 / 1e9;
    assert!(
        secs < 1.0,
        "restart issued {secs:.3}s after the unhealthy event"
    );
}

/// A crash while an unhealthy container's restart waits out its backoff:
/// the crash's `die` finds that restart scheduled and leaves the container
/// to it, so the restart goes ahead on the exited container instead of
/// being called off as "no longer running" (which left it down for good).
#[test]
fn a_crash_during_an_unhealthy_backoff_is_still_healed() {
    let clean = Cleanup::for_engine_test();
    let with = "backoff_initial_ms = 3000\nstop_timeout_secs = 1";
    let rules = format!("{}{}", unhealthy_rule("restart", with), restart_rule(with));
    let dw = started(&rules, &[]);
    let since = now_unix();
    let name = clean.container(unique("unhealthy-crash"));
    // Unhealthy within a second; crashes (exit 3) 2 s after each start,
    // inside the 3 s backoff of the restart the unhealthy event scheduled.
    let image = test_image();
    run_healable(
        &name,
        &[
            &probe("false")[..],
            &[&image, "sh", "-c", "sleep 2; exit 3"],
        ]
        .concat(),
    );
    let healed = wait_until(Duration::from_secs(20), || restarts(&dw, &name) >= 1.0);
    let events = history(&name, since);
    assert!(
        healed,
        "never restarted; engine events: {events:?}\n{}",
        dw.log()
    );
    // In that order: unhealthy, the crash, then dockwarden's start.
    let at = |action: &str, after: i64| {
        events
            .iter()
            .find(|(a, t)| a == action && *t > after)
            .map(|(_, t)| *t)
    };
    let unhealthy = at("health_status: unhealthy", 0).expect("an unhealthy event");
    let crash = at("die", unhealthy).expect("a crash after it");
    assert!(
        at("start", crash).is_some(),
        "no start after the crash: {events:?}"
    );
    assert!(
        !dw.log().contains("it is no longer running"),
        "{}",
        dw.log()
    );
}

/// A health check that flaps and recovers by itself within the backoff:
/// every restart scheduled is called off ("healthy again"), and a restart
/// not made is no restart. Counted as made, two flaps spent `max_restarts`
/// and the third recreated a container that was fine.
#[test]
fn called_off_actions_are_not_counted_as_restarts() {
    let clean = Cleanup::for_engine_test();
    let dw = started(
        &unhealthy_rule(
            "restart",
            "backoff_initial_ms = 2500\nbackoff_max_secs = 3\nmax_restarts = 2\nthen = \"recreate\"",
        ),
        &[],
    );
    let since = now_unix();
    let name = clean.container(unique("flapping"));
    // Unhealthy for about a second out of every five.
    let image = test_image();
    run_healable(
        &name,
        &[
            &probe("test -e /tmp/ok")[..],
            &[
                &image,
                "sh",
                "-c",
                "while :; do rm -f /tmp/ok; sleep 1; touch /tmp/ok; sleep 4; done",
            ],
        ]
        .concat(),
    );
    let flaps = || {
        history(&name, since)
            .iter()
            .filter(|(a, _)| a == "health_status: unhealthy")
            .count()
    };
    let called_off = || dw.log().matches("reason=\"it is healthy again\"").count();
    assert!(
        wait_until(Duration::from_secs(30), || flaps() >= 4
            && called_off() >= 4),
        "{} flaps, {} called off:\n{}",
        flaps(),
        called_off(),
        dw.log()
    );
    assert_eq!(actions(&dw, "restart", "ok"), 0.0, "{}", dw.log());
    assert_eq!(actions(&dw, "recreate", "ok"), 0.0, "{}", dw.log());
    let created = history(&name, since)
        .iter()
        .filter(|(a, _)| a == "create")
        .count();
    assert_eq!(created, 1, "the container was recreated");
}

/// Signals an operator sends that are not SIGKILL or SIGTERM: `docker kill
/// -s INT` of a process that exits on it, and `docker stop` of a container
/// whose stop signal is one the engine knows by a name such as SIGWINCH
/// (httpd's image). Both are the operator's doing, and neither is healed.
#[test]
fn other_signals_an_operator_sends_are_respected() {
    let clean = Cleanup::for_engine_test();
    let dw = started(&restart_rule("backoff_initial_ms = 100"), &[]);
    let since = now_unix();
    let image = test_image();
    let interrupted = clean.container(unique("sigint"));
    run_healable(
        &interrupted,
        &[
            &image,
            "sh",
            "-c",
            "trap 'exit 130' INT; while :; do sleep 1; done",
        ],
    );
    let winched = clean.container(unique("sigwinch"));
    run_healable(
        &winched,
        &[
            "--stop-signal",
            "SIGWINCH",
            &image,
            "sh",
            "-c",
            "trap 'exit 3' WINCH; while :; do sleep 1; done",
        ],
    );
    thread::sleep(Duration::from_secs(1));
    docker_ok(&["kill", "-s", "INT", &interrupted]);
    docker_ok(&["stop", "-t", "5", &winched]);
    for (name, code) in [(&interrupted, 130), (&winched, 3)] {
        let died = wait_until(Duration::from_secs(10), || {
            history(name, since).iter().any(|(a, _)| a == "die")
        });
        assert!(died, "{name} never exited");
        assert_eq!(inspect(name)["State"]["ExitCode"].as_i64(), Some(code));
    }
    thread::sleep(Duration::from_secs(3));
    for name in [&interrupted, &winched] {
        let starts = history(name, since)
            .iter()
            .filter(|(a, _)| a == "start")
            .count();
        assert_eq!(starts, 1, "{name} was restarted:\n{}", dw.log());
    }
    assert_eq!(actions(&dw, "restart", "ok"), 0.0);
    assert!(
        dw.log().contains("of a signal sent through the API"),
        "{}",
        dw.log()
    );
}

/// The operator ends an unhealthy container with a signal while its
/// restart waits out the backoff: the restart is called off, as after
/// `docker stop`, though the exit code is non-zero.
#[test]
fn a_signal_sent_during_an_unhealthy_backoff_calls_the_restart_off() {
    let clean = Cleanup::for_engine_test();
    let with = "backoff_initial_ms = 3000\nstop_timeout_secs = 1";
    let rules = format!("{}{}", unhealthy_rule("restart", with), restart_rule(with));
    let dw = started(&rules, &[]);
    let since = now_unix();
    let name = clean.container(unique("unhealthy-int"));
    let image = test_image();
    run_healable(
        &name,
        &[
            &probe("false")[..],
            &[
                &image,
                "sh",
                "-c",
                "trap 'exit 130' INT; while :; do sleep 1; done",
            ],
        ]
        .concat(),
    );
    let unhealthy = wait_until(Duration::from_secs(10), || {
        dw.log()
            .contains(&format!("Will restart {name}: unhealthy"))
    });
    assert!(unhealthy, "no restart scheduled:\n{}", dw.log());
    docker_ok(&["kill", "-s", "INT", &name]);
    let called_off = wait_until(Duration::from_secs(10), || {
        dw.log()
            .contains("it exited after a signal sent through the API")
    });
    assert!(called_off, "{}", dw.log());
    let starts = history(&name, since)
        .iter()
        .filter(|(a, _)| a == "start")
        .count();
    assert_eq!(starts, 1, "restarted:\n{}", dw.log());
    assert_eq!(actions(&dw, "restart", "ok"), 0.0);
}

/// Acceptance 7: a label named `exitCode` cannot hide a crash or fake one.
#[test]
fn forged_exit_code_labels_do_not_fool_healing() {
    let clean = Cleanup::for_engine_test();
    let dw = started(&restart_rule("backoff_initial_ms = 100"), &[]);
    let image = test_image();
    let hidden = clean.container(unique("forged-ok"));
    let faked = clean.container(unique("forged-crash"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &hidden,
        "--label",
        "dwt.heal=true",
        "--label",
        "exitCode=0",
        &image,
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &faked,
        "--label",
        "dwt.heal=true",
        "--label",
        "exitCode=3",
        &image,
        "sh",
        "-c",
        "sleep 1; exit 0",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || restarts(&dw, &hidden) >= 1.0),
        "a real crash behind exitCode=0 was not healed"
    );
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        restarts(&dw, &faked),
        0.0,
        "a clean exit labelled exitCode=3 was 'healed'"
    );
    assert_eq!(inspect(&faked)["State"]["Running"], false);
}

/// Acceptance 8: an OOM-killed container gets its limit raised up to
/// `max_bytes`, never above, and is restarted.
#[test]
fn oom_raises_memory_up_to_max_bytes() {
    let clean = Cleanup::for_engine_test();
    let dw = started(
        &raise_memory_rule("max_bytes = 50331648\nbackoff_initial_ms = 100\nmax_restarts = 10"),
        &[],
    );
    let name = clean.container(unique("oom"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "dwt.heal=true",
        "-m",
        "16m",
        "--memory-swap",
        "16m",
        &test_image(),
        "tail",
        "/dev/zero",
    ]);
    const MIB: i64 = 1024 * 1024;
    let mut seen = vec![16 * MIB];
    let reached = wait_until(Duration::from_secs(40), || {
        let m = inspect(&name)["HostConfig"]["Memory"].as_i64().unwrap_or(0);
        if seen.last() != Some(&m) {
            seen.push(m);
        }
        m == 48 * MIB && restarts(&dw, &name) >= 3.0
    });
    assert!(
        reached,
        "limits seen {seen:?}, restarts {}",
        restarts(&dw, &name)
    );
    assert_eq!(seen, [16 * MIB, 32 * MIB, 48 * MIB]);
    let m = dw.metrics();
    assert!(
        m.get(
            "dockwarden_actions_total",
            &[("action", "raise_memory"), ("result", "ok")]
        ) >= 2.0
    );
    assert!(m.get("dockwarden_oom_events_total", &[]) >= 2.0);
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        inspect(&name)["HostConfig"]["Memory"].as_i64(),
        Some(48 * MIB),
        "never above max_bytes"
    );
    assert!(dw.log().contains("Raised memory limit."));
}

/// An OOM kill of a child leaves the main process running, and the limit
/// as low as it was: after its backoff the raise is still wanted, not
/// called off as "running again".
#[test]
fn a_child_oom_kill_raises_memory_of_the_running_container() {
    let clean = Cleanup::for_engine_test();
    let dw = started(
        &raise_memory_rule("max_bytes = 67108864\nbackoff_initial_ms = 500"),
        &[],
    );
    let name = clean.container(unique("child-oom"));
    let image = test_image();
    run_healable(
        &name,
        &[
            "-m",
            "32m",
            "--memory-swap",
            "32m",
            &image,
            "sh",
            "-c",
            "while :; do tail /dev/zero; sleep 2; done",
        ],
    );
    const MIB: i64 = 1024 * 1024;
    let raised = wait_until(Duration::from_secs(20), || {
        inspect(&name)["HostConfig"]["Memory"].as_i64() == Some(64 * MIB)
    });
    assert!(
        raised,
        "limit {:?}:\n{}",
        inspect(&name)["HostConfig"]["Memory"],
        dw.log()
    );
    assert!(!dw.log().contains("it is running again"), "{}", dw.log());
}

/// Engine 20.10 keeps `OOMKilled` set for the rest of a run after a child's
/// OOM kill: a main process that then exits 0 finished its job, and a rule
/// healing non-zero exits leaves it alone.
#[test]
fn an_exit_0_after_a_child_oom_kill_is_not_healed() {
    let clean = Cleanup::for_engine_test();
    let dw = started(&restart_rule("backoff_initial_ms = 100"), &[]);
    let since = now_unix();
    let name = clean.container(unique("oom-then-0"));
    let image = test_image();
    run_healable(
        &name,
        &[
            "-m",
            "16m",
            "--memory-swap",
            "16m",
            &image,
            "sh",
            "-c",
            "tail /dev/zero; exit 0",
        ],
    );
    let died = wait_until(Duration::from_secs(20), || {
        history(&name, since).iter().any(|(a, _)| a == "die")
    });
    assert!(died, "it never exited");
    let state = &inspect(&name)["State"];
    assert_eq!(state["ExitCode"].as_i64(), Some(0), "{state}");
    assert_eq!(
        state["OOMKilled"].as_bool(),
        Some(true),
        "this engine does not keep OOMKilled after a child's OOM kill: {state}"
    );
    thread::sleep(Duration::from_secs(3));
    assert_eq!(restarts(&dw, &name), 0.0, "{}", dw.log());
    let starts = history(&name, since)
        .iter()
        .filter(|(a, _)| a == "start")
        .count();
    assert_eq!(starts, 1, "restarted:\n{}", dw.log());
}

/// Acceptance 9: with `--dry-run` nothing is mutated, and the log says what
/// would have been done.
#[test]
fn dry_run_mutates_nothing() {
    let clean = Cleanup::for_engine_test();
    let rules = restart_rule("backoff_initial_ms = 100")
        + &unhealthy_rule("restart", "backoff_initial_ms = 100")
        + r#"
[[rule]]
name = "oom"
on = ["container.oom"]
handler = "raise_memory"
[rule.match]
labels = { "dwt.heal" = "true" }
[rule.with]
max_bytes = 50331648
"#;
    let dw = started(&rules, &["--dry-run"]);
    let since = now_unix();
    let image = test_image();
    let crash = clean.container(unique("dry-crash"));
    let sick = clean.container(unique("dry-sick"));
    let oom = clean.container(unique("dry-oom"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &crash,
        "--label",
        "dwt.heal=true",
        &image,
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &sick,
        "--label",
        "dwt.heal=true",
        "--health-cmd",
        "false",
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        &image,
        "sleep",
        "300",
    ]);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &oom,
        "--label",
        "dwt.heal=true",
        "-m",
        "16m",
        "--memory-swap",
        "16m",
        &image,
        "tail",
        "/dev/zero",
    ]);
    let logged = wait_until(Duration::from_secs(20), || {
        let log = dw.log();
        log.contains(&format!(
            "Would restart {crash}: exit 3, attempt 1, backoff"
        )) && log.contains(&format!("Would restart {sick}: unhealthy"))
            && log.contains(&format!("Would raise memory {oom}: OOM kill"))
    });
    assert!(logged, "dry-run decisions not logged");
    thread::sleep(Duration::from_secs(2));
    for name in [&crash, &sick, &oom] {
        let events = history(name, since);
        let starts = events.iter().filter(|(a, _)| a == "start").count();
        let kills = events.iter().filter(|(a, _)| a == "kill").count();
        assert_eq!((starts, kills), (1, 0), "{name} was touched: {events:?}");
    }
    assert_eq!(
        inspect(&oom)["HostConfig"]["Memory"].as_i64(),
        Some(16 * 1024 * 1024)
    );
    let m = dw.metrics();
    assert_eq!(
        m.get(
            "dockwarden_handler_runs_total",
            &[("handler", "restart"), ("outcome", "ok")]
        ),
        0.0
    );
    assert!(
        m.get(
            "dockwarden_handler_runs_total",
            &[("handler", "restart"), ("outcome", "skipped")]
        ) >= 2.0
    );
    for action in ["restart", "recreate", "raise_memory"] {
        assert_eq!(
            m.get(
                "dockwarden_actions_total",
                &[("action", action), ("result", "ok")]
            ),
            0.0
        );
    }
}

/// Issue 8, defect 4: a dry run advances the healing state as if each
/// would-be action had succeeded, so a crash loop logs the sequence the real
/// run reaches (`restarts_then_one_recreate_then_breaker`): growing
/// backoffs, the recreate, the breaker. The test plays the would-be
/// restarts itself by starting the container again after each decision.
#[test]
fn dry_run_shows_the_escalation_a_real_run_reaches() {
    let clean = Cleanup::for_engine_test();
    let dw = started(&restart_rule(ESCALATION), &["--dry-run"]);
    let since = now_unix();
    let name = clean.container(unique("dry-escalation"));
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
        "sleep 1; exit 3",
    ]);
    for n in 1..=ESCALATION_SEQUENCE.len() {
        assert!(
            wait_until(Duration::from_secs(20), || decisions(&dw.log(), &name)
                .len()
                >= n),
            "decision {n} never logged; so far: {:?}",
            decisions(&dw.log(), &name)
        );
        if n < ESCALATION_SEQUENCE.len() {
            docker_ok(&["start", &name]);
        }
    }
    thread::sleep(Duration::from_secs(2));
    assert_eq!(decisions(&dw.log(), &name), ESCALATION_SEQUENCE);
    assert!(
        dw.log().contains(&format!(
            "Would restart {name}: exit 3, attempt 3, backoff 800ms."
        )),
        "dry-run wording"
    );
    // Only the test's own starts: dockwarden touched nothing.
    let events = history(&name, since);
    let count = |action: &str| events.iter().filter(|(a, _)| a == action).count();
    assert_eq!(
        (count("start"), count("kill"), count("restart")),
        (ESCALATION_SEQUENCE.len(), 0, 0),
        "{events:?}"
    );
    assert_eq!(dw.metrics().get("dockwarden_breaker_open", &[]), 0.0);
    assert_eq!(actions(&dw, "restart", "ok"), 0.0);
    assert_eq!(actions(&dw, "recreate", "ok"), 0.0);
}

/// Issue 8, defect 1: without `match.exit_code`, a container that exits 0
/// has finished its job and is not restarted; one that exits 3 under the
/// same rule is (so the test cannot pass by seeing nothing).
#[test]
fn a_clean_exit_is_not_healed_as_a_crash() {
    let clean = Cleanup::for_engine_test();
    let rules = r#"
[[rule]]
name = "heal-dies"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = { "dwt.heal" = "true" }
[rule.with]
backoff_initial_ms = 100
"#;
    let dw = started(rules, &[]);
    let since = now_unix();
    let image = test_image();
    let done = clean.container(unique("clean-exit"));
    let crash = clean.container(unique("crash-exit"));
    for (name, code) in [(&done, 0), (&crash, 3)] {
        docker_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "dwt.heal=true",
            &image,
            "sh",
            "-c",
            &format!("sleep 0.5; exit {code}"),
        ]);
    }
    assert!(
        wait_until(Duration::from_secs(20), || restarts(&dw, &crash) >= 1.0),
        "the crashing container was not restarted"
    );
    // Long past the 100 ms backoff a restart would have waited.
    thread::sleep(Duration::from_secs(2));
    let events = history(&done, since);
    let count = |action: &str| events.iter().filter(|(a, _)| a == action).count();
    assert_eq!(
        (
            count("start"),
            count("die"),
            count("kill"),
            count("restart")
        ),
        (1, 1, 0, 0),
        "the clean exit was acted on: {events:?}"
    );
    assert_eq!(restarts(&dw, &done), 0.0);
    assert!(!dw.log().contains(&format!("restart {done}:")));
    assert!(
        dw.log()
            .lines()
            .any(|l| l.contains(&format!("Not healing. container={done} "))
                && l.contains("reason=\"the exit code is not a failure under this rule\"")),
        "the clean exit's decision is not logged"
    );
}

/// Destroying a healed container for good drops its per-container series.
#[test]
fn destroy_drops_the_container_series() {
    let clean = Cleanup::for_engine_test();
    let dw = started(&restart_rule("backoff_initial_ms = 100"), &[]);
    let name = clean.container(unique("series"));
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
        "sleep 1; exit 3",
    ]);
    assert!(wait_until(Duration::from_secs(20), || restarts(&dw, &name) >= 1.0));
    docker_ok(&["rm", "-f", &name]);
    assert!(
        wait_until(Duration::from_secs(5), || !dw
            .metrics()
            .samples()
            .iter()
            .any(|s| s.name == "dockwarden_container_restarts_total"
                && s.label("name") == Some(name.as_str()))),
        "series of a destroyed container still exported"
    );
}
