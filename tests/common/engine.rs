//! The Docker Engine side of the tests: where the engine is, the test image,
//! the `docker` CLI, the engine's own event log (the ground truth tests
//! compare against) and [`Cleanup`] of the containers, networks and volumes a
//! test makes.
//!
//! The engine address is dockwarden's own reading of `DOCKER_HOST`
//! ([`Endpoint::from_env`], else [`DEFAULT_SOCKET`]), so the tests look where
//! the binary under test looks.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dockwarden::docker::{DEFAULT_SOCKET, Endpoint};

use super::http::http10_get;
use super::process::run_with_timeout;

/// Image every test container is made from (built locally by `scripts/test`).
pub const DEFAULT_TEST_IMAGE: &str = "dockwarden-test/busybox:latest";
/// How long a single `docker` CLI call may take before the test fails.
pub const DOCKER_CLI_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// Engine and image
// ---------------------------------------------------------------------------

/// The engine tests use, as dockwarden reads it: `$DOCKER_HOST`, or
/// `unix:///var/run/docker.sock`. Fails the test if `DOCKER_HOST` is set to an
/// address dockwarden cannot use.
pub fn endpoint() -> Endpoint {
    Endpoint::from_env().unwrap_or_else(|e| {
        panic!("{e}; fix DOCKER_HOST, or unset it to use the engine at {DEFAULT_SOCKET}")
    })
}

/// The engine's unix socket path, if [`endpoint`] is a `unix://` address.
pub fn docker_socket_path() -> Option<PathBuf> {
    match endpoint() {
        Endpoint::Unix(path) => Some(path),
        Endpoint::Tcp(_) | Endpoint::Tls(_) => None,
    }
}

/// Fails the test (never skips) unless the Docker Engine answers `GET /_ping`.
pub fn require_docker() {
    if let Err(reason) = ping_engine() {
        panic!(
            "Docker Engine is not reachable at {} ({reason}). Start it (`sudo systemctl start docker` \
             or `sudo dockerd &`), or run `scripts/test`, which installs and starts it.",
            endpoint()
        );
    }
}

fn ping_engine() -> Result<(), String> {
    let Some(path) = docker_socket_path() else {
        // Not a unix socket (e.g. tcp://): let the CLI find out.
        let mut cmd = Command::new("docker");
        cmd.args(["version", "--format", "{{.Server.Version}}"]);
        let out = run_with_timeout(cmd, Duration::from_secs(20))?;
        return if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`docker version` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        };
    };
    let mut stream = UnixStream::connect(&path)
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    let timeout = Some(Duration::from_secs(10));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| format!("cannot set socket timeouts: {e}"))?;
    let (status, body) = http10_get(&mut stream, "docker", "/_ping")
        .map_err(|e| format!("GET /_ping on {} failed: {e}", path.display()))?;
    if status == 200 && body.trim() == "OK" {
        Ok(())
    } else {
        Err(format!("GET /_ping answered {status} {body:?}"))
    }
}

/// The image test containers use: `$DOCKWARDEN_TEST_IMAGE` or
/// `dockwarden-test/busybox:latest`.
pub fn test_image() -> String {
    match std::env::var("DOCKWARDEN_TEST_IMAGE") {
        Ok(i) if !i.trim().is_empty() => i.trim().to_string(),
        _ => DEFAULT_TEST_IMAGE.to_string(),
    }
}

/// Fails the test unless the engine answers and has the test image.
pub fn require_test_image() {
    require_docker();
    let image = test_image();
    let out = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
    if !out.status.success() {
        panic!(
            "test image {image} is missing from the engine at {} ({}); run scripts/test to build it \
             (nothing can be pulled, it is built locally from Debian's busybox-static)",
            endpoint(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

// ---------------------------------------------------------------------------
// docker CLI
// ---------------------------------------------------------------------------

/// Runs `docker ARGS...` (failing the test if it takes longer than
/// [`DOCKER_CLI_TIMEOUT`]) and returns its output whatever its exit status.
pub fn docker(args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    match run_with_timeout(cmd, DOCKER_CLI_TIMEOUT) {
        Ok(out) => out,
        Err(e) => panic!("docker {}: {e}", args.join(" ")),
    }
}

/// Runs `docker ARGS...`, fails the test unless it succeeds, and returns its
/// stdout trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    if !out.status.success() {
        panic!(
            "docker {} failed ({}):\nstderr: {}\nstdout: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker inspect NAME`'s object, or null while there is none of that
/// name (a recreate frees the name for a moment): polls read through it.
pub fn inspect(name: &str) -> serde_json::Value {
    let out = docker(&["inspect", name]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .map(|v| v[0].clone())
        .unwrap_or_default()
}

/// Removes the Docker objects it was told about when dropped (also when the
/// test panics): containers (`docker rm -f -v`), then networks, then volumes.
/// Errors (e.g. already removed) are ignored.
#[derive(Default)]
pub struct Cleanup {
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// For a test that runs containers: fails unless the engine answers
    /// and the test image is there, then starts tracking what to remove.
    pub fn for_engine_test() -> Self {
        require_docker();
        require_test_image();
        Self::default()
    }

    /// Remembers a container (name or id) to remove; returns the name.
    pub fn container(&self, name: impl Into<String>) -> String {
        push(&self.containers, name.into())
    }

    /// Remembers a network (name or id) to remove; returns the name.
    pub fn network(&self, name: impl Into<String>) -> String {
        push(&self.networks, name.into())
    }

    /// Remembers a volume to remove; returns the name.
    pub fn volume(&self, name: impl Into<String>) -> String {
        push(&self.volumes, name.into())
    }
}

fn push(list: &Mutex<Vec<String>>, name: String) -> String {
    list.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.clone());
    name
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let take = |m: &mut Mutex<Vec<String>>| {
            std::mem::take(m.get_mut().unwrap_or_else(|e| e.into_inner()))
        };
        let batches = [
            (vec!["rm", "-f", "-v"], take(&mut self.containers)),
            (vec!["network", "rm"], take(&mut self.networks)),
            (vec!["volume", "rm", "-f"], take(&mut self.volumes)),
        ];
        for (cmd, names) in batches {
            if names.is_empty() {
                continue;
            }
            let mut c = Command::new("docker");
            c.args(&cmd).args(&names);
            // Never panic here: this may run while a failed test unwinds.
            let _ = run_with_timeout(c, Duration::from_secs(60));
        }
    }
}

// ---------------------------------------------------------------------------
// Engine events (ground truth)
// ---------------------------------------------------------------------------

/// Seconds since the Unix epoch, with sub-microsecond precision.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock is before 1970")
        .as_secs_f64()
}

/// The events the engine itself reports between `since` and `until` (Unix
/// seconds, see [`now_unix`]), straight from `docker events`, oldest first.
/// If `until` is in the future this waits until then.
pub fn engine_events(since: f64, until: f64) -> Vec<serde_json::Value> {
    engine_events_text(since, until)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("docker events printed a line that is not JSON ({e}): {l}")
            })
        })
        .collect()
}

/// What `docker events --format '{{json .}}'` prints between `since` and
/// `until` (Unix seconds): one JSON object a line, oldest first.
pub fn engine_events_text(since: f64, until: f64) -> String {
    let since = format!("{since:.9}");
    let until = format!("{until:.9}");
    docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--format",
        "{{json .}}",
    ])
}

/// `"{Type}.{Action}"` with the action cut at its first `": "`, e.g.
/// `container.start`, `container.exec_start`, `container.health_status`.
pub fn event_key(v: &serde_json::Value) -> String {
    let ty = v["Type"].as_str().unwrap_or("");
    let action = v["Action"].as_str().unwrap_or("");
    let action = action.split(": ").next().unwrap_or(action);
    format!("{ty}.{action}")
}

/// The engine's events for containers called `name` since `since`, oldest
/// first, as (action, timeNano).
pub fn container_history(name: &str, since: f64) -> Vec<(String, i64)> {
    engine_events(since, now_unix())
        .into_iter()
        .filter(|e| e["Type"] == "container" && e["Actor"]["Attributes"]["name"] == name)
        .map(|e| {
            (
                e["Action"].as_str().unwrap_or("").to_owned(),
                e["timeNano"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Seconds between each `die` and the next `start` in a history.
pub fn die_to_start_secs(events: &[(String, i64)]) -> Vec<f64> {
    let mut gaps = Vec::new();
    let mut died = None;
    for (action, t) in events {
        match action.as_str() {
            "die" => died = Some(*t),
            "start" => {
                if let Some(d) = died.take() {
                    gaps.push((t - d) as f64 / 1e9);
                }
            }
            _ => {}
        }
    }
    gaps
}
