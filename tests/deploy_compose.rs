//! deploy/docker-compose.yml run by Compose as users run it: `docker compose`
//! (v2) if the CLI has it, else Debian's `docker-compose` (1.29). `config`
//! validates the file; `up` runs the sidecar from the locally built image,
//! it becomes ready and healthy and heals a labelled crashing container;
//! `down -v` removes everything the project made.

mod common;

use std::process::Output;
use std::time::Duration;

use common::deploy::{
    crashing_container, expect_success, repo_file, require_image, wait_healed, wait_healthy,
    wait_http_200,
};
use common::{
    Cleanup, docker, docker_ok, docker_socket_path, free_local_addr, now_unix, run_with_timeout,
    unique,
};

/// One compose project on deploy/docker-compose.yml; `down -v` on drop.
struct Project {
    /// `docker compose` or `docker-compose`, then `-p NAME -f FILE`.
    base: Vec<String>,
    env: Vec<(&'static str, String)>,
    name: String,
}

impl Project {
    fn new(image: &str, port: u16) -> Self {
        let compose: Vec<String> = if docker(&["compose", "version"]).status.success() {
            vec!["docker".into(), "compose".into()]
        } else {
            let v1 = std::process::Command::new("docker-compose")
                .arg("version")
                .output();
            assert!(
                v1.is_ok_and(|o| o.status.success()),
                "neither `docker compose` nor `docker-compose` runs; install Debian's docker-compose \
                 (scripts/test does)"
            );
            vec!["docker-compose".into()]
        };
        let name = unique("compose");
        let file = repo_file("deploy/docker-compose.yml");
        let mut base = compose;
        base.extend([
            "-p".into(),
            name.clone(),
            "-f".into(),
            file.to_string_lossy().into_owned(),
        ]);
        Project {
            base,
            env: vec![
                ("DOCKWARDEN_IMAGE", image.to_owned()),
                ("DOCKWARDEN_PORT", port.to_string()),
            ],
            name,
        }
    }

    /// Runs compose with these arguments; an error if it cannot be run or
    /// does not finish in time.
    fn try_run(&self, args: &[&str]) -> Result<Output, String> {
        let mut cmd = std::process::Command::new(&self.base[0]);
        cmd.args(&self.base[1..]).args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        run_with_timeout(cmd, Duration::from_secs(180))
    }

    fn run(&self, args: &[&str]) -> Output {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("{e} (scripts/test installs Compose)"))
    }

    fn label(&self) -> String {
        format!("label=com.docker.compose.project={}", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // Never panic here: this may run while a failed test unwinds.
        let _ = self.try_run(&["down", "-v", "--remove-orphans", "-t", "10"]);
    }
}

#[test]
fn compose_validates_the_file_and_up_runs_a_sidecar_that_heals() {
    let image = require_image();
    assert_eq!(
        docker_socket_path().as_deref(),
        Some(std::path::Path::new("/var/run/docker.sock")),
        "the compose file mounts /var/run/docker.sock: run this test against that engine"
    );
    let cleanup = Cleanup::new();
    let port = free_local_addr().port();
    let project = Project::new(&image, port);

    let config = expect_success("compose config", &project.run(&["config"]));
    assert!(config.contains(&format!("image: {image}")), "{config}");
    assert!(
        config.contains(&port.to_string()),
        "DOCKWARDEN_PORT is not used: {config}"
    );
    let services = expect_success(
        "compose config --services",
        &project.run(&["config", "--services"]),
    );
    assert!(services.lines().any(|s| s == "dockwarden"), "{services}");

    // Only the sidecar: the optional Prometheus (profile "monitoring") needs
    // an image from a registry.
    expect_success(
        "compose up",
        &project.run(&["up", "-d", "--no-build", "dockwarden"]),
    );
    let container = docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &project.label(),
        "--filter",
        "label=com.docker.compose.service=dockwarden",
    ]);
    assert_eq!(container.lines().count(), 1, "{container:?}");
    let logs = || common::deploy::logs_of(&container);
    let addr = format!("127.0.0.1:{port}").parse().expect("address");
    wait_http_200(addr, "/readyz", Duration::from_secs(30), logs);
    wait_healthy(&container, Duration::from_secs(45));

    let since = now_unix();
    let crash = crashing_container(&cleanup);
    wait_healed(&crash, since, Duration::from_secs(30), logs);
    drop(cleanup);

    expect_success(
        "compose down",
        &project.run(&["down", "-v", "--remove-orphans", "-t", "10"]),
    );
    let label = project.label();
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &label]), "");
    assert_eq!(docker_ok(&["volume", "ls", "-q", "--filter", &label]), "");
    assert_eq!(docker_ok(&["network", "ls", "-q", "--filter", &label]), "");
}
