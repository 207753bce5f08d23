//! The dockwarden image (`scripts/image`: a static binary FROM scratch) run
//! as users run it, against the real engine: the socket mounted, a rules file
//! and volumes; it heals, audits, serves `/metrics` through the published
//! port, reports healthy through its own HEALTHCHECK and stops with exit 0.
//! Also: it holds only what deploy/Dockerfile's runtime stage puts there,
//! and `check` in the image. Host names and TLS: deploy_image_net.rs.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::deploy::{
    crashing_container, expect_success, logs_of, published, read_in_volume, repo_file,
    require_image, socket_mount, tool, wait_healed, wait_healthy, wait_http_200,
};
use common::{
    Cleanup, Metrics, TempDir, docker, docker_ok, now_unix, test_image, unique, wait_until,
};
use serde_json::Value;

/// The target for the image size.
const MAX_IMAGE_BYTES: u64 = 15 * 1024 * 1024;

/// The lines of deploy/Dockerfile from "# Runtime stage" on: what
/// scripts/image builds after its own staging stage.
fn runtime_stage() -> String {
    let text = fs::read_to_string(repo_file("deploy/Dockerfile")).expect("read deploy/Dockerfile");
    let start = text
        .find("\n# Runtime stage\n")
        .expect("deploy/Dockerfile has a '# Runtime stage' line (scripts/image builds from it)");
    text[start + 1..].to_owned()
}

/// The JSON array after `INSTRUCTION ` in the stage (exec form).
fn json_arg(stage: &str, instruction: &str) -> Value {
    let line = stage
        .lines()
        .find(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("the runtime stage has no {instruction}"));
    let arg = line[instruction.len()..].trim();
    serde_json::from_str(arg)
        .unwrap_or_else(|e| panic!("{instruction} is not in exec (JSON) form: {arg}: {e}"))
}

#[test]
fn the_image_is_the_runtime_stage_of_deploy_dockerfile_and_nothing_else() {
    let image = require_image();
    let stage = runtime_stage();
    assert!(
        stage.lines().any(|l| l == "FROM scratch"),
        "not FROM scratch:\n{stage}"
    );
    let inspect: Value = serde_json::from_str(&docker_ok(&["image", "inspect", &image]))
        .expect("docker image inspect prints JSON");
    let config = &inspect[0]["Config"];

    assert_eq!(config["Entrypoint"], json_arg(&stage, "ENTRYPOINT"));
    assert_eq!(config["Cmd"], json_arg(&stage, "CMD"));
    assert_eq!(config["StopSignal"], "SIGTERM");
    assert!(stage.contains("\nSTOPSIGNAL SIGTERM\n"));
    let health = &config["Healthcheck"]["Test"];
    assert_eq!(health[0], "CMD");
    let test = health.as_array().expect("Healthcheck.Test is an array");
    assert_eq!(
        test[1..],
        json_arg(&stage, "    CMD")
            .as_array()
            .expect("HEALTHCHECK CMD is an array")[..]
    );
    assert_eq!(
        health[2], "health",
        "the HEALTHCHECK is `dockwarden health`"
    );
    assert!(config["ExposedPorts"]["9477/tcp"].is_object());
    for dir in ["/var/lib/dockwarden", "/var/log/dockwarden"] {
        assert!(config["Volumes"][dir].is_object(), "no VOLUME {dir}");
    }

    // OCI annotations, with the version of this crate.
    let labels = &config["Labels"];
    for key in [
        "title",
        "description",
        "version",
        "revision",
        "created",
        "licenses",
    ] {
        let value = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or("");
        assert!(
            !value.is_empty(),
            "label org.opencontainers.image.{key} is empty: {labels}"
        );
    }
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        env!("CARGO_PKG_LICENSE")
    );
    assert!(
        stage.contains(&format!("ARG VERSION={}\n", env!("CARGO_PKG_VERSION"))),
        "deploy/Dockerfile's default VERSION is not Cargo.toml's {}",
        env!("CARGO_PKG_VERSION")
    );

    let size = inspect[0]["Size"].as_u64().expect("Size");
    println!("{image}: {size} bytes");
    assert!(
        size <= MAX_IMAGE_BYTES,
        "{image} is {size} bytes, over {MAX_IMAGE_BYTES}"
    );

    // Only the binary, the rules and the two directories (0770, uid 10001,
    // group 0): list the files of a container made from it, less those the
    // engine itself puts in every container.
    let cleanup = Cleanup::new();
    let name = cleanup.container(unique("files"));
    docker_ok(&["create", "--name", &name, &image]);
    let dir = TempDir::new("export");
    let tar = dir.path().join("fs.tar");
    docker_ok(&["export", "-o", &tar.to_string_lossy(), &name]);
    let listing = expect_success(
        "tar -tv",
        &tool(
            "tar",
            &["--numeric-owner", "-tvf", &tar.to_string_lossy()],
            &[],
            Duration::from_secs(30),
        ),
    );
    let engine_made = [
        ".dockerenv",
        "dev/",
        "etc/hostname",
        "etc/hosts",
        "etc/mtab",
        "etc/resolv.conf",
        "proc/",
        "sys/",
    ];
    let mut files: Vec<(String, String, String)> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = (*f.get(5)?).to_owned();
            Some((path, f[0].to_owned(), f[1].to_owned()))
        })
        .filter(|(p, _, _)| {
            !engine_made
                .iter()
                .any(|e| p == e || (e.ends_with('/') && p.starts_with(e)))
        })
        .filter(|(p, _, _)| {
            !["etc/", "usr/", "usr/local/", "var/", "var/lib/", "var/log/"].contains(&p.as_str())
        })
        .collect();
    files.sort();
    let want = [
        ("etc/dockwarden/", "drwxr-xr-x", "0/0"),
        ("etc/dockwarden/rules.toml", "-rw-r--r--", "0/0"),
        ("usr/local/bin/", "drwxr-xr-x", "0/0"),
        ("usr/local/bin/dockwarden", "-rwxr-xr-x", "0/0"),
        ("var/lib/dockwarden/", "drwxrwx---", "10001/0"),
        ("var/log/dockwarden/", "drwxrwx---", "10001/0"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(p, m, o)| (p.to_string(), m.to_string(), o.to_string()))
        .collect();
    assert_eq!(
        files, want,
        "the image's files (path, mode, owner):\n{listing}"
    );
    let rules = fs::read_to_string(repo_file("rules/default.toml")).expect("rules/default.toml");
    let shipped = expect_success(
        "tar -xO etc/dockwarden/rules.toml",
        &tool(
            "tar",
            &["-xOf", &tar.to_string_lossy(), "etc/dockwarden/rules.toml"],
            &[],
            Duration::from_secs(30),
        ),
    );
    assert_eq!(
        shipped,
        rules.trim(),
        "/etc/dockwarden/rules.toml is not rules/default.toml"
    );
}

#[test]
fn check_in_the_image_exits_0_for_good_rules_and_2_with_file_line_col() {
    let image = require_image();
    let dir = TempDir::new("check");
    let good = dir.path().join("good.toml");
    fs::copy(repo_file("rules/default.toml"), &good).expect("copy the default rules");
    let bad = dir.path().join("bad.toml");
    fs::write(
        &bad,
        "[[rule]]\nname = \"x\"\non = [\"container.die\"]\nhandler = \"no_such_handler\"\ncolour = 1\n",
    )
    .expect("write bad rules");

    let run = |file: &Path| {
        let mount = format!("{}:/r.toml:ro", file.display());
        docker(&["run", "--rm", "-v", &mount, &image, "check", "/r.toml"])
    };
    let out = run(&good);
    let stdout = expect_success("docker run IMAGE check /r.toml (good rules)", &out);
    assert!(stdout.starts_with("/r.toml: ok, "), "{stdout}");

    let out = run(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "bad rules: {stderr}");
    assert!(
        stderr.contains("/r.toml:4:11: unknown handler \"no_such_handler\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("/r.toml:5:1: unknown key `colour`"),
        "{stderr}"
    );
}

#[test]
fn the_image_heals_audits_serves_metrics_and_stops_with_exit_0() {
    let image = require_image();
    let cleanup = Cleanup::new();
    let dir = TempDir::new("image-run");
    let rules = dir.path().join("rules.toml");
    fs::copy(repo_file("rules/default.toml"), &rules).expect("copy the default rules");
    let state = cleanup.volume(unique("state"));
    let audit = cleanup.volume(unique("audit"));
    let sidecar = cleanup.container(unique("sidecar"));
    let since = now_unix();

    // As deploy/README.md runs it, hardened as the compose file is, with a
    // faster health probe than the image's 10 s.
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &sidecar,
        "-v",
        &socket_mount(),
        "-v",
        &format!("{}:/etc/dockwarden/rules.toml:ro", rules.display()),
        "-v",
        &format!("{state}:/var/lib/dockwarden"),
        "-v",
        &format!("{audit}:/var/log/dockwarden"),
        "-p",
        "127.0.0.1::9477",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--health-interval",
        "1s",
        &image,
    ]);
    let logs = || logs_of(&sidecar);
    let addr = published(&sidecar, 9477);
    wait_http_200(addr, "/readyz", Duration::from_secs(30), logs);
    wait_healthy(&sidecar, Duration::from_secs(30));

    // A labelled crashing container is healed.
    let crash = crashing_container(&cleanup);
    wait_healed(&crash, since, Duration::from_secs(30), logs);

    // A docker exec lands in the audit log on the volume.
    let target = cleanup.container(unique("exec"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &target,
        &test_image(),
        "sleep",
        "300",
    ]);
    let marker = unique("audited");
    docker_ok(&["exec", &target, "echo", &marker]);
    let mut last = None;
    let found = wait_until(Duration::from_secs(20), || {
        last = read_in_volume(&audit, "audit.jsonl");
        last.as_deref().is_some_and(|a| a.contains(&marker))
    });
    assert!(
        found,
        "`docker exec {target} echo {marker}` is not in the audit log: {last:?}; {}",
        logs()
    );

    // /metrics through the published port counts all of it.
    let body = wait_http_200(addr, "/metrics", Duration::from_secs(5), logs);
    let metrics = Metrics::parse(&body);
    assert_eq!(metrics.get("dockwarden_stream_connected", &[]), 1.0);
    assert!(
        metrics.get(
            "dockwarden_events_total",
            &[("type", "container"), ("action", "die")]
        ) >= 1.0
    );
    assert!(
        metrics.get(
            "dockwarden_actions_total",
            &[("action", "restart"), ("result", "ok")]
        ) >= 1.0,
        "no restart counted:\n{body}"
    );
    assert!(
        metrics.get("dockwarden_audit_records_total", &[]) >= 1.0,
        "{body}"
    );

    // docker stop: SIGTERM to dockwarden as PID 1, exit 0 well within the
    // rules' 10 s grace (a SIGKILL after docker's 30 s would be 137).
    let started = Instant::now();
    docker_ok(&["stop", "-t", "30", &sidecar]);
    let took = started.elapsed();
    let exit = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &sidecar]);
    assert_eq!(exit, "0", "exit code after docker stop; {}", logs());
    assert!(
        took < Duration::from_secs(10),
        "docker stop took {took:?}; {}",
        logs()
    );
    assert!(
        logs().contains("Checkpoint written at shutdown."),
        "{}",
        logs()
    );
    let checkpoint =
        read_in_volume(&state, "checkpoint.json").expect("no checkpoint.json on the state volume");
    let checkpoint: Value = serde_json::from_str(&checkpoint).expect("the checkpoint is JSON");
    assert!(
        checkpoint["time_nano"].as_i64().unwrap_or(0) > 0,
        "{checkpoint}"
    );

    // The chain verifies, by the image itself with the volume.
    let out = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{audit}:/var/log/dockwarden:ro"),
        &image,
        "audit",
        "verify",
        "/var/log/dockwarden",
    ]);
    let said = expect_success("dockwarden audit verify in the image", &out);
    assert!(said.contains("chain intact"), "{said}");
}

#[test]
fn runs_unprivileged_with_the_sockets_group_added() {
    use std::os::unix::fs::MetadataExt;
    let image = require_image();
    let socket = common::docker_socket_path().expect("a unix socket engine");
    let gid = fs::metadata(&socket)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", socket.display()))
        .gid()
        .to_string();
    let cleanup = Cleanup::new();
    let state = cleanup.volume(unique("state"));
    let start = |name: &str, group: Option<&str>| {
        let mut args = vec!["run", "-d", "--name", name, "--user", "10001:10001"];
        if let Some(g) = group {
            args.extend(["--group-add", g]);
        }
        let mount = socket_mount();
        let vol = format!("{state}:/var/lib/dockwarden");
        let all: Vec<&str> = args
            .into_iter()
            .chain(["--cap-drop", "ALL", "--read-only", "-v", &mount, "-v", &vol])
            .chain(["--health-interval", "1s", &image])
            .collect();
        docker_ok(&all);
    };
    let with = cleanup.container(unique("grouped"));
    start(&with, Some(&gid));
    wait_healthy(&with, Duration::from_secs(30));
    docker_ok(&["stop", &with]);
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &with]),
        "0"
    );
    let checkpoint = read_in_volume(&state, "checkpoint.json");
    assert!(
        checkpoint.is_some(),
        "uid 10001 wrote no checkpoint: {}",
        logs_of(&with)
    );

    // Without the group: refused, said in one line, and never ready.
    let without = cleanup.container(unique("ungrouped"));
    start(&without, None);
    let said = wait_until(Duration::from_secs(20), || {
        logs_of(&without).contains("unix:///var/run/docker.sock: permission denied")
    });
    assert!(said, "{}", logs_of(&without));
    let out = docker(&["exec", &without, "dockwarden", "health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("unhealthy: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
