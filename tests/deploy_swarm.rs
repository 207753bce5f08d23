//! deploy/swarm/dockwarden-stack.yml on a real single-node swarm made for
//! the test: `docker stack deploy` with the locally built image, one task per
//! node, healthy and ready, and it heals a labelled crashing container. The
//! stack, its volumes and the swarm are removed whatever happens.

mod common;

use std::time::{Duration, Instant};

use common::deploy::{
    crashing_container, docker_quiet, expect_success, repo_file, require_image, tool, wait_healed,
    wait_healthy, wait_http_200,
};
use common::{Cleanup, docker, docker_ok, docker_socket_path, free_local_addr, now_unix, unique};

/// Leaves the swarm (`docker swarm leave --force`) on drop, whatever
/// happened, after removing the stack and what it left behind.
struct Swarm {
    stack: Option<String>,
    /// docker_gwbridge existed before the swarm (then it is not ours).
    had_gwbridge: bool,
}

/// The node label that marks a swarm as this test's own.
const MARK: &str = "dockwarden-test.swarm=true";

impl Swarm {
    /// Makes a single-node swarm, failing the test if the engine is already
    /// in one it did not make (one left by a killed run of this test, marked
    /// with [`MARK`], is left first).
    fn init() -> Self {
        let mut state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let mut leftover = false;
        if state == "active" {
            let labels = docker(&[
                "node",
                "inspect",
                "self",
                "--format",
                "{{json .Spec.Labels}}",
            ]);
            if String::from_utf8_lossy(&labels.stdout)
                .contains("\"dockwarden-test.swarm\":\"true\"")
            {
                eprintln!("leaving the swarm a killed run of this test left behind");
                docker_ok(&["swarm", "leave", "--force"]);
                state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
                leftover = true;
            }
        }
        assert_eq!(
            state, "inactive",
            "this engine is already in a swarm (state {state:?}); the test makes and leaves its own \
             single-node swarm and will not touch one it did not make: leave it \
             (`docker swarm leave --force`) or use another engine"
        );
        let had_gwbridge = !leftover
            && docker(&["network", "inspect", "docker_gwbridge"])
                .status
                .success();
        let guard = Swarm {
            stack: None,
            had_gwbridge,
        };
        // Loopback only: a single node needs no reachable address.
        let listen = free_local_addr().to_string();
        docker_ok(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            &listen,
        ]);
        let node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
        docker_ok(&["node", "update", "--label-add", MARK, &node]);
        guard
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // Never panic here: this may run while a failed test unwinds, and the
        // swarm must be left whatever happened.
        let quiet = |args: &[&str]| docker_quiet(args, Duration::from_secs(120));
        let ids = |args: &[&str]| -> Vec<String> {
            quiet(args)
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let label = self
            .stack
            .as_ref()
            .map(|stack| format!("label=com.docker.stack.namespace={stack}"));
        if let (Some(stack), Some(label)) = (&self.stack, &label) {
            quiet(&["stack", "rm", stack]);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !ids(&["ps", "-aq", "--filter", label]).is_empty() {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        quiet(&["swarm", "leave", "--force"]);
        if let Some(label) = &label {
            for id in ids(&["ps", "-aq", "--filter", label]) {
                quiet(&["rm", "-f", "-v", &id]);
            }
            for v in ids(&["volume", "ls", "-q", "--filter", label]) {
                quiet(&["volume", "rm", "-f", &v]);
            }
        }
        if !self.had_gwbridge {
            quiet(&["network", "rm", "docker_gwbridge"]);
        }
    }
}

#[test]
fn the_stack_runs_one_ready_task_per_node_that_heals() {
    let image = require_image();
    assert_eq!(
        docker_socket_path().as_deref(),
        Some(std::path::Path::new("/var/run/docker.sock")),
        "the stack file mounts /var/run/docker.sock: run this test against that engine"
    );
    let cleanup = Cleanup::new();
    let mut swarm = Swarm::init();
    let stack = unique("stack");
    swarm.stack = Some(stack.clone());
    let port = free_local_addr().port().to_string();
    let file = repo_file("deploy/swarm/dockwarden-stack.yml");
    let env = [
        ("DOCKWARDEN_IMAGE", image.as_str()),
        ("DOCKWARDEN_PORT", port.as_str()),
    ];
    // A local image: no registry to resolve its digest from.
    let out = tool(
        "docker",
        &[
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            &file.to_string_lossy(),
            &stack,
        ],
        &env,
        Duration::from_secs(120),
    );
    expect_success("docker stack deploy", &out);

    // One task per node: global mode, on a one-node swarm, one running task.
    let service = format!("{stack}_dockwarden");
    let nodes = docker_ok(&["node", "ls", "-q"]).lines().count();
    assert_eq!(nodes, 1);
    let mut said = String::new();
    let running = common::wait_until(Duration::from_secs(60), || {
        said = docker_ok(&[
            "service",
            "ls",
            "--filter",
            &format!("name={service}"),
            "--format",
            "{{.Mode}} {{.Replicas}}",
        ]);
        said == "global 1/1"
    });
    let tasks = docker(&["service", "ps", "--no-trunc", &service]);
    let tasks = String::from_utf8_lossy(&tasks.stdout).into_owned();
    assert!(
        running,
        "{service} is {said:?}, not global 1/1; tasks:\n{tasks}"
    );
    let label = format!("label=com.docker.swarm.service.name={service}");
    let container = docker_ok(&["ps", "-q", "--filter", &label]);
    assert_eq!(
        container.lines().count(),
        1,
        "task containers: {container:?}\n{tasks}"
    );
    let logs = || common::deploy::logs_of(&container);

    // Ready on the node's published port, and healthy through the image's
    // HEALTHCHECK (`dockwarden health`, every 10 s).
    let addr = format!("127.0.0.1:{port}").parse().expect("address");
    wait_http_200(addr, "/readyz", Duration::from_secs(60), logs);
    wait_healthy(&container, Duration::from_secs(45));
    let hostname = docker_ok(&["inspect", "--format", "{{.Config.Hostname}}", &container]);
    let node = docker_ok(&["info", "--format", "{{.Name}}"]);
    assert_eq!(hostname, node, "the task's hostname is its node's name");

    let since = now_unix();
    let crash = crashing_container(&cleanup);
    wait_healed(&crash, since, Duration::from_secs(30), logs);
    drop(cleanup);
    drop(swarm);

    // The stack and the swarm are gone.
    assert_eq!(
        docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        "inactive"
    );
    let left = format!("label=com.docker.stack.namespace={stack}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &left]), "");
    assert_eq!(docker_ok(&["volume", "ls", "-q", "--filter", &left]), "");
    assert_eq!(docker_ok(&["network", "ls", "-q", "--filter", &left]), "");
}
