//! The engine's hot reads (`src/docker/reads.rs`, `src/docker/engine.rs`)
//! against the real Docker Engine: what they decode is what bollard decodes,
//! a refusal is bollard's error, and kept connections the engine's side
//! closed are replaced without the caller seeing it. They fail, never skip,
//! when Docker is missing.

mod common;

use bollard::errors::Error;
use dockwarden::containers::{Container, ViewInspect};
use dockwarden::docker::{Endpoint, Engine};

use common::proxy::FaultProxy;
use common::{
    Cleanup, docker_ok, endpoint, require_docker, require_test_image, test_image, unique,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn engine(at: &Endpoint) -> Engine {
    at.client()
        .unwrap_or_else(|e| panic!("a client for {at}: {e}"))
        .negotiate_version()
        .await
        .unwrap_or_else(|e| panic!("the API version of {at}: {e}"))
}

/// A running container with everything the view reads set to something
/// other than its default, and an exec that runs until the test ends.
fn busy_container(cleanup: &Cleanup) -> (String, String) {
    let name = cleanup.container(unique("reads"));
    let id = docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "team=payments",
        "--label",
        "exitCode=0",
        "--user",
        "1000:1000",
        "--restart",
        "on-failure:3",
        "--memory",
        "64m",
        "--stop-signal",
        "SIGQUIT",
        "--health-cmd",
        "true",
        "--health-interval",
        "1h",
        &test_image(),
        "sleep",
        "300",
    ]);
    docker_ok(&["exec", "-d", "--user", "0", &name, "sleep", "300"]);
    (id.trim().to_owned(), name)
}

#[test]
fn reads_decode_what_bollard_decodes() {
    require_docker();
    require_test_image();
    let cleanup = Cleanup::new();
    let (id, name) = busy_container(&cleanup);
    runtime().block_on(async {
        let engine = engine(&endpoint()).await;
        let full = engine
            .inspect_container(&id, None)
            .await
            .expect("bollard's inspect");
        let view: ViewInspect = engine
            .inspect_container_as(&id)
            .await
            .expect("the view's inspect");
        let slim = Container::from_view(view);
        assert_eq!(slim, Container::from_inspect(&full));
        // Not defaults: the comparison above compares something.
        assert_eq!(slim.name, name);
        assert_eq!(slim.user, "1000:1000");
        assert_eq!((slim.restart_policy, slim.max_retries), ("on-failure", 3));
        assert_eq!(slim.state.memory, 64 << 20);
        assert_eq!(slim.stop_signal, Some(3));
        assert!(slim.forgeable.exit_code && !slim.forgeable.exec_id);
        assert_eq!(
            slim.labels.get("team").map(String::as_str),
            Some("payments")
        );
        assert_eq!(
            slim.probe,
            Some(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "true".to_owned()
            ])
        );

        let execs = full.exec_ids.clone().unwrap_or_default();
        assert_eq!(execs.len(), 1, "the one exec running: {execs:?}");
        let ours = engine
            .inspect_exec(&execs[0])
            .await
            .expect("our exec inspect");
        let theirs = bollard::Docker::inspect_exec(&engine, &execs[0])
            .await
            .expect("bollard's exec inspect");
        assert_eq!(ours, theirs);
        let process = ours.process_config.unwrap_or_default();
        assert_eq!(process.user.as_deref(), Some("0"));
        assert_eq!(process.entrypoint.as_deref(), Some("sleep"));
    });
}

#[test]
fn a_refusal_is_the_engines_answer() {
    require_docker();
    runtime().block_on(async {
        let engine = engine(&endpoint()).await;
        let missing = "0000000000000000000000000000000000000000000000000000000000000000";
        for result in [
            engine.inspect_exec(missing).await.map(|_| ()),
            engine
                .inspect_container_as::<ViewInspect>(missing)
                .await
                .map(|_| ()),
        ] {
            match result {
                Err(Error::DockerResponseServerError {
                    status_code: 404,
                    message,
                }) => assert!(message.contains(missing), "{message}"),
                other => panic!("expected the engine's 404, got {other:?}"),
            }
        }
        // An ID that is no path segment is never sent.
        match engine.inspect_exec("..").await {
            Err(Error::IOError { err }) => assert!(err.to_string().contains("not an ID")),
            other => panic!("expected a refusal before sending, got {other:?}"),
        }
    });
}

#[test]
fn kept_connections_are_reused_and_replaced_when_cut() {
    require_docker();
    require_test_image();
    let cleanup = Cleanup::new();
    let (id, _) = busy_container(&cleanup);
    let proxy = FaultProxy::start();
    runtime().block_on(async {
        let at = Endpoint::parse(&proxy.docker_host()).expect("the proxy's address");
        let engine = engine(&at).await;
        let before = proxy.connections();
        for _ in 0..50 {
            let view: ViewInspect = engine.inspect_container_as(&id).await.expect("inspect");
            assert_eq!(Container::from_inspect(&view.into()).id, id);
        }
        // One connection kept for the reads, whatever bollard's pool keeps.
        assert_eq!(proxy.connections(), before + 1, "50 reads, one connection");
        // The engine's side goes away while the connection idles: the next
        // read finds it closed, and sends again on a new one.
        proxy.cut_all();
        for _ in 0..3 {
            let view: ViewInspect = engine
                .inspect_container_as(&id)
                .await
                .expect("inspect after the cut");
            assert_eq!(Container::from_inspect(&view.into()).id, id);
        }
        assert_eq!(proxy.connections(), 1, "one new connection after the cut");
        // While the engine refuses every connection, a read fails, named.
        proxy.cut_all();
        proxy.set_refuse(true);
        let refused = engine.inspect_container_as::<ViewInspect>(&id).await;
        assert!(matches!(refused, Err(Error::IOError { .. })), "{refused:?}");
        proxy.set_refuse(false);
        engine
            .inspect_container_as::<ViewInspect>(&id)
            .await
            .expect("inspect once the engine is back");
    });
}
