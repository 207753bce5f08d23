//! The deployment artifacts under test: the image `scripts/image` builds
//! (`$DOCKWARDEN_IMAGE`, default `dockwarden:latest`), the tools that run the
//! compose file and the Swarm stack, and what every deployment test checks
//! the same way: the sidecar answers through its published port, becomes
//! healthy, and heals a labelled crashing container.
//!
//! A missing image or tool fails the test with a message saying how to get
//! it (`scripts/test` builds and installs all of them); nothing is skipped.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::engine::{
    Cleanup, container_history, docker, docker_ok, require_test_image, test_image,
};
use super::http::http10_get;
use super::process::{run_with_timeout, unique};

/// The dockwarden image when `$DOCKWARDEN_IMAGE` is not set.
pub const DEFAULT_IMAGE: &str = "dockwarden:latest";

/// The label the shipped default rules heal.
pub const HEAL_LABEL: &str = "dockwarden.heal=true";

/// The dockwarden image under test: `$DOCKWARDEN_IMAGE` or `dockwarden:latest`.
pub fn image() -> String {
    match std::env::var("DOCKWARDEN_IMAGE") {
        Ok(i) if !i.trim().is_empty() => i.trim().to_owned(),
        _ => DEFAULT_IMAGE.to_owned(),
    }
}

/// Fails the test unless the engine answers and has the dockwarden image and
/// the test image; returns the dockwarden image's name.
pub fn require_image() -> String {
    require_test_image();
    let image = image();
    let out = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
    if !out.status.success() {
        panic!(
            "the dockwarden image {image} is missing ({}); build it with scripts/image \
             (scripts/test does before the integration tests; nothing is pulled)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    image
}

/// The engine socket to mount: the tests' own, which must be a unix socket.
pub fn socket_mount() -> String {
    let Some(path) = super::engine::docker_socket_path() else {
        panic!("the image tests mount the engine's unix socket; DOCKER_HOST is not unix://");
    };
    format!("{}:/var/run/docker.sock", path.display())
}

/// A file of this repository, e.g. `deploy/docker-compose.yml`.
pub fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `program args...` with extra environment and a timeout; fails the
/// test (saying how to install it) if it cannot be started at all.
pub fn tool(program: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, timeout).unwrap_or_else(|e| {
        panic!("{e}; is {program} installed? scripts/test installs what the tests need")
    })
}

/// Runs `docker ARGS...` for a clean-up: never panics (it may run while a
/// failed test unwinds); None if it could not run or timed out.
pub fn docker_quiet(args: &[&str], timeout: Duration) -> Option<Output> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run_with_timeout(cmd, timeout).ok()
}

/// Fails the test with both streams unless `out` is a success.
pub fn expect_success(what: &str, out: &Output) -> String {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The host address a container's port is published on (`docker port`).
pub fn published(container: &str, port: u16) -> SocketAddr {
    let out = docker_ok(&["port", container, &format!("{port}/tcp")]);
    let first = out.lines().next().unwrap_or("");
    let addr = first.replace("0.0.0.0:", "127.0.0.1:");
    addr.parse()
        .unwrap_or_else(|e| panic!("docker port {container} {port} printed {out:?}: {e}"))
}

/// `GET path` on `addr` → (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    http10_get(&mut stream, &addr.to_string(), path)
}

/// Polls `GET path` until it answers 200; the body, or a panic saying what
/// it last answered (and `context()`, e.g. the sidecar's log).
pub fn wait_http_200(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    context: impl Fn() -> String,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http_get(addr, path) {
            Ok((200, body)) => return body,
            Ok((status, body)) => format!("{status} {body:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            panic!(
                "GET http://{addr}{path} did not answer 200 within {timeout:?} (last: {last}); {}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the container's HEALTHCHECK reports `healthy`; panics with
/// the last probe outputs otherwise.
pub fn wait_healthy(container: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let status = docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", container]);
        if status == "healthy" {
            return;
        }
        if Instant::now() >= deadline {
            let log = docker(&["inspect", "--format", "{{json .State.Health}}", container]);
            panic!(
                "{container} is {status:?}, not healthy, after {timeout:?}; health: {}",
                String::from_utf8_lossy(&log.stdout).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Starts a container labelled `dockwarden.heal=true` (no restart policy)
/// that exits 3 after a second, so only a healer starts it again.
pub fn crashing_container(cleanup: &Cleanup) -> String {
    let name = cleanup.container(unique("crash"));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        HEAL_LABEL,
        &test_image(),
        "sh",
        "-c",
        "sleep 1; exit 3",
    ]);
    name
}

/// Waits until the engine's own record shows `name` started again after a
/// crash (`die` then `start`) since `since`; panics with the record and
/// `context()` otherwise.
pub fn wait_healed(name: &str, since: f64, timeout: Duration, context: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    loop {
        let history = container_history(name, since);
        let died = history.iter().position(|(a, _)| a == "die");
        if let Some(d) = died
            && history[d..].iter().any(|(a, _)| a == "start")
        {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{name} crashed but was not started again within {timeout:?}; the engine's record: \
                 {history:?}; {}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A file in a volume, read with the test image (the dockwarden image has
/// no `cat`); None if it does not exist.
pub fn read_in_volume(volume: &str, path: &str) -> Option<String> {
    let mount = format!("{volume}:/v:ro");
    let file = format!("/v/{}", path.trim_start_matches('/'));
    let out = docker(&["run", "--rm", "-v", &mount, &test_image(), "cat", &file]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last lines of a container's log, for failure messages.
pub fn logs_of(container: &str) -> String {
    let out = docker(&["logs", "--tail", "60", container]);
    format!(
        "log of {container}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
