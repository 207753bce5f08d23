//! dockwarden behind a real HAProxy (Debian's `haproxy`) in front of the
//! engine socket, running `deploy/socket-proxy/haproxy.cfg` as shipped:
//!
//! - with every `ALLOW_*` switch on, healing (restart, recreate) and the
//!   audit (exec, network) work, and every request HAProxy saw is one of the
//!   calls `deploy/README.md` documents, none refused;
//! - read-only (no switch) with `--dry-run`: the exec and network audit,
//!   metrics and the status API are complete, the heal decisions are
//!   logged, and nothing but `GET` reaches the proxy;
//! - read-only without `--dry-run`: each denied restart is counted as an
//!   action error, the denial is logged once with what to allow, nothing is
//!   retried and dockwarden keeps running;
//! - denied reads (the container listing and inspect; the event stream
//!   itself) are logged once each and retried slowly, never in a loop.
//!
//! HAProxy logs each request (`METHOD URI STATUS`): that log is the ground
//! truth of what dockwarden called. The tests fail (never skip) when
//! `haproxy` is not installed; `scripts/test` installs it.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::api::{API_TOKEN, request};
use common::{
    Cleanup, Dockwarden, TempDir, docker_ok, docker_socket_path, http10_get, require_test_image,
    test_image, unique, wait_until,
};
use dockwarden::docker::calls::Call;
use serde_json::Value;

/// The shipped configuration.
fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/socket-proxy/haproxy.cfg")
}

/// The `haproxy` binary: on `PATH` or in Debian's `/usr/sbin`.
fn haproxy_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "haproxy is not installed: the socket proxy tests run a real HAProxy. Install \
                 Debian's package (sudo apt-get install --no-install-recommends haproxy), or run \
                 scripts/test, which installs it."
            )
        })
}

/// A running HAProxy on a unix socket in its own temp dir, in front of the
/// engine socket; killed on drop.
struct Haproxy {
    child: Child,
    dir: TempDir,
}

impl Haproxy {
    /// `haproxy -db -f CONFIG` with the `ALLOW_*` switches in `env`; waits
    /// until `GET /version` answers through it.
    fn start(config: &Path, env: &[(&str, &str)]) -> Haproxy {
        let engine = docker_socket_path().unwrap_or_else(|| {
            panic!("the socket proxy tests need the engine on a unix socket (DOCKER_HOST=unix://…)")
        });
        let dir = TempDir::new("socket-proxy");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("create the log");
        let mut cmd = Command::new(haproxy_binary());
        cmd.arg("-db")
            .arg("-f")
            .arg(config)
            .env("PROXY_BIND", dir.path().join("docker.sock"))
            .env("DOCKER_SOCKET", &engine)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start haproxy");
        let mut proxy = Haproxy { child, dir };
        let up = wait_until(Duration::from_secs(10), || {
            UnixStream::connect(proxy.socket())
                .ok()
                .and_then(|mut s| http10_get(&mut s, "docker", "/version").ok())
                .is_some_and(|(status, _)| status == 200)
        });
        if !up {
            let exited = proxy.child.try_wait().ok().flatten();
            panic!(
                "haproxy did not answer GET /version on {} within 10 s (exited: {exited:?}); its output:\n{}",
                proxy.socket().display(),
                proxy.log()
            );
        }
        proxy
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// `DOCKER_HOST` for dockwarden.
    fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Every request it logged: (method, URI, status). The readiness probe
    /// of [`Haproxy::start`] comes first.
    fn requests(&self) -> Vec<(String, String, u16)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (m, u, s) = (w.next()?, w.next()?, w.next()?.parse().ok()?);
                (w.next().is_none() && m.chars().all(|c| c.is_ascii_uppercase()))
                    .then(|| (m.to_owned(), u.to_owned(), s))
            })
            .collect()
    }

    /// The requests for `call`, with their statuses.
    fn statuses(&self, call: Call) -> Vec<u16> {
        self.requests()
            .into_iter()
            .filter(|(m, u, _)| Call::of(m, u) == Some(call))
            .map(|(_, _, s)| s)
            .collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- haproxy log ----\n{}---- end ----", self.log());
        }
    }
}

/// The shipped configuration with `edits` (old, new) applied, written to
/// `dir`: for a proxy stricter than any the switches make.
fn config_variant(dir: &TempDir, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(shipped_config()).expect("read haproxy.cfg");
    for (old, new) in edits {
        assert!(text.contains(old), "haproxy.cfg no longer has {old:?}");
        text = text.replace(old, new);
    }
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, text).expect("write the variant");
    path
}

/// Rules: restart and recreate for containers labelled `dwt.proxy=TAG-restart`
/// or `TAG-recreate`, and the exec and network audit into `audit`.
fn rules(tag: &str, audit: &Path) -> String {
    format!(
        r#"
[audit]
path = "{audit}"
fsync = "always"

[[rule]]
name = "restart-crashes"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.proxy" = "{tag}-restart" }}
exit_code = "nonzero"
[rule.with]
backoff_initial_ms = 100

[[rule]]
name = "recreate-crashes"
on = ["container.die"]
handler = "recreate"
[rule.match]
labels = {{ "dwt.proxy" = "{tag}-recreate" }}
exit_code = "nonzero"
[rule.with]
backoff_initial_ms = 100

[[rule]]
name = "audit-exec"
on = ["container.exec_start", "container.exec_die"]
handler = "exec_audit"

[[rule]]
name = "audit-network"
on = ["network.*"]
handler = "network_audit"
"#,
        audit = audit.display()
    )
}

/// dockwarden through `proxy`, with the status API's token in `dir`.
fn sidecar(proxy: &Haproxy, dir: &TempDir, rules: &str, args: &[&str]) -> Dockwarden {
    let token = dir.path().join("api.token");
    std::fs::write(&token, API_TOKEN).expect("write the token");
    let toml = format!(
        "[server]\napi_token_file = \"{}\"\n{rules}",
        token.display()
    );
    let host = proxy.docker_host();
    let mut dw = Dockwarden::start_with(&toml, args, &[("DOCKER_HOST", host.as_str())]);
    dw.wait_ready(Duration::from_secs(20));
    dw
}

fn audit_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for an `exec_start` and an `exec_end` record of `container`;
/// returns them.
fn wait_exec_records(audit: &Path, container: &str) -> Vec<Value> {
    let mut mine = Vec::new();
    let found = wait_until(Duration::from_secs(15), || {
        mine = audit_records(audit)
            .into_iter()
            .filter(|r| {
                r["container_name"] == container
                    && r["kind"].as_str().is_some_and(|k| k.starts_with("exec_"))
            })
            .collect();
        mine.iter().any(|r| r["kind"] == "exec_start")
            && mine.iter().any(|r| r["kind"] == "exec_end")
    });
    assert!(
        found,
        "no exec_start and exec_end for {container}; audit log:\n{:#?}",
        audit_records(audit)
    );
    mine
}

fn metric(dw: &Dockwarden, name: &str, labels: &[(&str, &str)]) -> f64 {
    dw.metrics().get(name, labels)
}

/// `docker run -d` of a labelled container that crashes (exit 3) after
/// `secs`.
fn crasher(clean: &Cleanup, label: &str, secs: &str) -> String {
    let name = clean.container(unique("crash"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        label,
        &test_image(),
        "sh",
        "-c",
        &format!("sleep {secs}; exit 3"),
    ]);
    name
}

fn sleeper(clean: &Cleanup) -> String {
    let name = clean.container(unique("sleeper"));
    docker_ok(&["run", "-d", "--name", &name, &test_image(), "sleep", "300"]);
    name
}

/// Log lines of `dw` containing `needle`.
fn lines_with(dw: &Dockwarden, needle: &str) -> usize {
    dw.log().lines().filter(|l| l.contains(needle)).count()
}

/// (a) Every handler's calls allowed: a crashing container is restarted,
/// another recreated on its two networks, an exec and the network changes
/// are audited, the status API reads stats; every request HAProxy saw is a
/// documented call, and none was refused.
#[test]
fn the_documented_allow_list_lets_healing_and_audit_work() {
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("proxy-allow");
    let proxy = Haproxy::start(
        &shipped_config(),
        &[
            ("ALLOW_RESTART", "1"),
            ("ALLOW_RAISE_MEMORY", "1"),
            ("ALLOW_RECREATE", "1"),
        ],
    );
    let tag = unique("allow");
    let audit = dir.path().join("audit.jsonl");
    let dw = sidecar(&proxy, &dir, &rules(&tag, &audit), &[]);

    // restart
    let crashing = crasher(&clean, &format!("dwt.proxy={tag}-restart"), "1");
    assert!(
        wait_until(Duration::from_secs(20), || {
            metric(
                &dw,
                "dockwarden_actions_total",
                &[("action", "restart"), ("result", "ok")],
            ) >= 1.0
        }),
        "{crashing} was not restarted through the proxy; log:\n{}",
        dw.log()
    );

    // recreate, on two networks, keeping its volume
    let (net_a, net_b) = (
        clean.network(unique("net-a")),
        clean.network(unique("net-b")),
    );
    docker_ok(&["network", "create", &net_a]);
    docker_ok(&["network", "create", &net_b]);
    let volume = clean.volume(unique("vol"));
    let name = clean.container(unique("recreated"));
    let old_id = docker_ok(&[
        "create",
        "--name",
        &name,
        "--label",
        &format!("dwt.proxy={tag}-recreate"),
        "--network",
        &net_a,
        "-v",
        &format!("{volume}:/data"),
        &test_image(),
        "sh",
        "-c",
        "test -e /data/once && exec sleep 300; touch /data/once; sleep 0.5; exit 3",
    ]);
    clean.container(format!("{name}-dwold-{}", &old_id[..12]));
    docker_ok(&["network", "connect", &net_b, &name]);
    docker_ok(&["start", &name]);
    let mut info = Value::Null;
    let recreated = wait_until(Duration::from_secs(30), || {
        // Between the rename aside and the create, no container has the name.
        let out = common::docker(&["inspect", "--type", "container", &name]);
        info = serde_json::from_slice::<Value>(&out.stdout)
            .map(|v| v[0].clone())
            .unwrap_or(Value::Null);
        info["Id"] != old_id.as_str() && info["State"]["Running"] == true
    });
    assert!(
        recreated,
        "{name} was not recreated: {info}\nlog:\n{}",
        dw.log()
    );
    let networks = &info["NetworkSettings"]["Networks"];
    assert!(
        networks.get(&net_a).is_some() && networks.get(&net_b).is_some(),
        "the new container lost a network: {networks}"
    );

    // exec and network audit
    let sleeping = sleeper(&clean);
    docker_ok(&["exec", &sleeping, "sh", "-c", "echo audited"]);
    let execs = wait_exec_records(&audit, &sleeping);
    assert!(
        execs.iter().all(|r| r["exec_id_verified"] == true),
        "the exec was not verified through the proxy: {execs:#?}"
    );
    assert!(
        audit_records(&audit)
            .iter()
            .any(|r| r["kind"] == "network_connect" && r["network_name"] == net_b.as_str()),
        "no network_connect record for {net_b}"
    );

    // the status API's stats
    let (status, _, body) = request(
        &dw,
        "GET",
        &format!("/api/v1/containers/{sleeping}"),
        Some(API_TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    let entry: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        entry["stats"]["memory_usage_bytes"].as_u64().is_some(),
        "{entry}"
    );

    // What went through the proxy: documented calls only, none refused.
    let mut seen: BTreeMap<Call, usize> = BTreeMap::new();
    for (method, uri, status) in proxy.requests() {
        let call = Call::of(&method, &uri)
            .unwrap_or_else(|| panic!("{method} {uri} is not a documented call"));
        assert_ne!(status, 403, "{method} {uri} was refused");
        *seen.entry(call).or_default() += 1;
    }
    eprintln!("Calls through the proxy (method, path, count):");
    for (call, n) in &seen {
        eprintln!("  {} {} {n}", call.method(), call.path());
    }
    for call in [
        Call::Version,
        Call::Events,
        Call::ContainerList,
        Call::ContainerInspect,
        Call::ContainerStats,
        Call::ExecInspect,
        Call::ContainerRestart,
        Call::ContainerRename,
        Call::ContainerCreate,
        Call::NetworkConnect,
        Call::ContainerStart,
        Call::ContainerRemove,
    ] {
        assert!(
            seen.contains_key(&call),
            "no {} {} was made: {seen:?}",
            call.method(),
            call.path()
        );
    }
    assert_eq!(lines_with(&dw, "denied"), 0, "{}", dw.log());
}

/// (b) Read-only proxy and `--dry-run`: the audit, metrics and the status
/// API are complete, the heal decision is logged, and nothing but GET
/// reaches the proxy.
#[test]
fn a_dry_run_works_through_a_read_only_proxy() {
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("proxy-dry");
    let proxy = Haproxy::start(&shipped_config(), &[]);
    let tag = unique("dry");
    let audit = dir.path().join("audit.jsonl");
    let dw = sidecar(&proxy, &dir, &rules(&tag, &audit), &["--dry-run"]);

    let crashing = crasher(&clean, &format!("dwt.proxy={tag}-restart"), "0.2");
    assert!(
        dw.wait_for_log(
            &format!("Would restart {crashing}: "),
            Duration::from_secs(15)
        ),
        "no dry-run decision for {crashing}; log:\n{}",
        dw.log()
    );
    let net = clean.network(unique("net"));
    docker_ok(&["network", "create", &net]);
    let sleeping = sleeper(&clean);
    docker_ok(&["network", "connect", &net, &sleeping]);
    docker_ok(&["exec", &sleeping, "sh", "-c", "echo audited"]);
    let execs = wait_exec_records(&audit, &sleeping);
    assert!(
        execs.iter().all(|r| r["exec_id_verified"] == true),
        "{execs:#?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let all = audit_records(&audit);
            ["network_create", "network_connect"].iter().all(|kind| {
                all.iter()
                    .any(|r| r["kind"] == *kind && r["network_name"] == net.as_str())
            })
        }),
        "network records missing: {:#?}",
        audit_records(&audit)
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = dw.metrics();
            m.get("dockwarden_exec_total", &[("kind", "user")]) >= 1.0
                && m.get("dockwarden_audit_records_total", &[]) >= 4.0
                && m.get(
                    "dockwarden_events_total",
                    &[("type", "container"), ("action", "die")],
                ) >= 1.0
        }),
        "{}",
        dw.metrics().raw()
    );
    assert_eq!(
        metric(&dw, "dockwarden_actions_total", &[]),
        0.0,
        "a dry run acts on nothing"
    );

    let (status, _, body) = request(&dw, "GET", "/api/v1/containers?stats=true", Some(API_TOKEN));
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("JSON");
    let entry = list
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == sleeping.as_str()))
        .unwrap_or_else(|| panic!("{sleeping} not in {list}"));
    assert!(entry["stats"]["cpu_percent"].as_f64().is_some(), "{entry}");

    let requests = proxy.requests();
    assert!(
        requests.iter().all(|(m, _, s)| m == "GET" && *s != 403),
        "a dry run sent more than allowed reads: {requests:?}"
    );
    assert!(
        requests.iter().any(|(_, u, _)| u.contains("/exec/")),
        "{requests:?}"
    );
    assert_eq!(lines_with(&dw, "denied"), 0, "{}", dw.log());
}

/// (c) Read-only proxy without `--dry-run`: two denied restarts are two
/// action errors, one log line with the hint, two requests (no retry), and
/// dockwarden stays up and ready.
#[test]
fn a_denied_restart_is_reported_once_and_not_retried() {
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("proxy-deny");
    let proxy = Haproxy::start(&shipped_config(), &[]);
    let tag = unique("deny");
    let audit = dir.path().join("audit.jsonl");
    let mut dw = sidecar(&proxy, &dir, &rules(&tag, &audit), &[]);

    let label = format!("dwt.proxy={tag}-restart");
    let first = crasher(&clean, &label, "0.2");
    let second = crasher(&clean, &label, "0.2");
    let errors = || {
        metric(
            &dw,
            "dockwarden_actions_total",
            &[("action", "restart"), ("result", "error")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(20), || errors() >= 2.0),
        "{first} and {second}: restarts not counted as errors; log:\n{}",
        dw.log()
    );
    // Time for any retry to show.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(errors(), 2.0);
    let hint = "allow POST /containers/{id}/restart in the socket proxy";
    assert_eq!(lines_with(&dw, hint), 1, "the hint once:\n{}", dw.log());
    let line = dw
        .log()
        .lines()
        .find(|l| l.contains(hint))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("The denial, as logged:\n{line}");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("denied: POST /containers/{id}/restart (403)"),
        "{line}"
    );
    assert!(
        !line.contains("<html>"),
        "the proxy's HTML page is not logged as is: {line}"
    );
    assert_eq!(lines_with(&dw, "Healing action failed"), 0, "{}", dw.log());
    assert_eq!(
        metric(
            &dw,
            "dockwarden_engine_calls_denied_total",
            &[("method", "POST"), ("path", "/containers/{id}/restart")]
        ),
        2.0
    );
    assert_eq!(
        proxy.statuses(Call::ContainerRestart),
        [403, 403],
        "{:?}",
        proxy.requests()
    );
    assert!(
        dw.try_status().is_none(),
        "dockwarden exited:\n{}",
        dw.log()
    );
    assert_eq!(dw.get("/readyz").0, 200);
    let (status, _, body) = request(
        &dw,
        "GET",
        &format!("/api/v1/containers/{first}"),
        Some(API_TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    let entry: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(entry["heal"]["last_action"]["result"], "error", "{entry}");
}

/// (d) A proxy that lets only the event stream through: the resync's listing
/// and the inspects are denied, each logged once, retried with a growing
/// delay; the exec audit still writes (unverified) records.
#[test]
fn denied_reads_are_logged_once_and_never_retried_in_a_loop() {
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("proxy-reads");
    let config = config_variant(
        &dir,
        &[
            (
                "GET version || GET events || GET list || GET inspect",
                "GET version || GET events",
            ),
            ("http-request allow if GET stats || GET exec_inspect\n", ""),
        ],
    );
    let proxy = Haproxy::start(&config, &[]);
    let tag = unique("reads");
    let audit = dir.path().join("audit.jsonl");
    let mut dw = sidecar(&proxy, &dir, &rules(&tag, &audit), &[]);
    let sleeping = sleeper(&clean);
    docker_ok(&["exec", &sleeping, "true"]);
    docker_ok(&["exec", &sleeping, "true"]);
    assert!(
        wait_until(Duration::from_secs(15), || {
            audit_records(&audit)
                .iter()
                .filter(|r| r["kind"] == "exec_end" && r["container_id"].as_str().is_some())
                .count()
                >= 2
        }),
        "exec records missing: {:#?}\nlog:\n{}",
        audit_records(&audit),
        dw.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    for call in [Call::ContainerList, Call::ContainerInspect] {
        assert_eq!(
            lines_with(&dw, &call.hint()),
            1,
            "{}:\n{}",
            call.hint(),
            dw.log()
        );
    }
    // Startup resync and the view's fill (after 1, 2, 4 s): a handful, not a loop.
    let lists = proxy.statuses(Call::ContainerList);
    assert!(lists.iter().all(|s| *s == 403), "{lists:?}");
    assert!(
        (1..=6).contains(&lists.len()),
        "GET /containers/json {} times",
        lists.len()
    );
    assert!(
        dw.try_status().is_none(),
        "dockwarden exited:\n{}",
        dw.log()
    );
    assert_eq!(dw.get("/readyz").0, 200);
}

/// (e) A proxy that refuses the event stream: dockwarden stays unready,
/// logs the denial once and retries with its backoff.
#[test]
fn a_denied_event_stream_is_logged_once_and_retried_with_backoff() {
    common::require_docker();
    let dir = TempDir::new("proxy-events");
    let config = config_variant(&dir, &[("GET version || GET events ||", "GET version ||")]);
    let proxy = Haproxy::start(&config, &[]);
    let host = proxy.docker_host();
    let mut dw = Dockwarden::start_with("", &[], &[("DOCKER_HOST", host.as_str())]);
    let hint = Call::Events.hint();
    assert!(
        dw.wait_for_log(&hint, Duration::from_secs(10)),
        "{}",
        dw.log()
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lines_with(&dw, &hint), 1, "{}", dw.log());
    let tries = proxy.statuses(Call::Events);
    assert!(tries.iter().all(|s| *s == 403), "{tries:?}");
    // Backoff from 200 ms doubling (with jitter) over ~5.5 s: a few tries.
    assert!(
        (2..=10).contains(&tries.len()),
        "GET /events {} times in ~5 s",
        tries.len()
    );
    assert!(
        dw.try_status().is_none(),
        "dockwarden exited:\n{}",
        dw.log()
    );
    assert_eq!(dw.get("/readyz").0, 503);
    assert!(
        metric(
            &dw,
            "dockwarden_engine_calls_denied_total",
            &[("method", "GET"), ("path", "/events")]
        ) >= 2.0
    );
}

/// `deploy/socket-proxy/docker-compose.yml` is valid for Compose (v2 if the
/// CLI has it, else Debian's docker-compose 1.29): the proxy with the
/// read-only switches (or `POST=1` when asked), dockwarden with no socket,
/// reaching the proxy by name, `--dry-run`. (No image can be pulled here, so
/// it is not brought up.)
#[test]
fn the_compose_file_with_the_common_socket_proxy_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/socket-proxy/docker-compose.yml");
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let config = |env: &[(&str, &str)]| -> String {
        let mut cmd = if v2 {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        } else {
            Command::new("docker-compose")
        };
        cmd.args(["-p", &unique("proxy-compose"), "-f"])
            .arg(&file)
            .arg("config")
            .envs(env.iter().copied());
        let out = common::run_with_timeout(cmd, Duration::from_secs(60)).unwrap_or_else(|e| {
            panic!("neither `docker compose` nor `docker-compose` runs ({e}); scripts/test installs docker-compose")
        });
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "compose config failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let read_only = config(&[]);
    let doc: Value = serde_norway::from_str(&read_only).expect("compose prints YAML");
    let proxy = &doc["services"]["socket-proxy"];
    let dw = &doc["services"]["dockwarden"];
    let env = |svc: &Value, key: &str| svc["environment"][key].as_str().map(str::to_owned);
    for (key, want) in [
        ("CONTAINERS", "1"),
        ("EXEC", "1"),
        ("EVENTS", "1"),
        ("VERSION", "1"),
        ("POST", "0"),
        ("NETWORKS", "0"),
    ] {
        assert_eq!(env(proxy, key).as_deref(), Some(want), "{key}: {read_only}");
    }
    assert_eq!(
        env(dw, "DOCKER_HOST").as_deref(),
        Some("tcp://socket-proxy:2375")
    );
    assert!(
        dw["command"]
            .as_array()
            .is_some_and(|c| c.iter().any(|a| a == "--dry-run")),
        "{dw}"
    );
    assert!(
        !dw.to_string().contains("docker.sock"),
        "dockwarden has no socket: {dw}"
    );
    assert!(
        proxy.to_string().contains("/var/run/docker.sock"),
        "{proxy}"
    );
    let healing = config(&[("SOCKET_PROXY_POST", "1"), ("SOCKET_PROXY_NETWORKS", "1")]);
    let doc: Value = serde_norway::from_str(&healing).expect("compose prints YAML");
    assert_eq!(
        env(&doc["services"]["socket-proxy"], "POST").as_deref(),
        Some("1")
    );
    assert_eq!(
        env(&doc["services"]["socket-proxy"], "NETWORKS").as_deref(),
        Some("1")
    );
}
