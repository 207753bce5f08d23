//! The engine over TLS, configured as the docker CLI is (`DOCKER_HOST`,
//! `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`) or by the rules file's
//! `[engine]`, through a real TLS terminator (Debian's stunnel4) in front of
//! the engine socket that verifies client certificates. Certificates are
//! made in the test. A refused connection is named for its cause in one
//! line and retried; a good one streams events and heals.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tls::{Ca, Leaf, Role, Stunnel, write_cert_path};
use common::{
    Cleanup, Dockwarden, TempDir, docker_ok, require_docker, require_test_image, test_image,
    unique, wait_until,
};

/// Names the engine's certificate is valid for in the good case.
const ENGINE_NAMES: &[&str] = &["127.0.0.1", "localhost"];

const HEAL: &str = r#"
[[rule]]
name = "heal"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = { "dwt.heal" = "true" }
[rule.with]
backoff_initial_ms = 100
"#;

/// The environment of a sidecar that reaches `tunnel` with the files in
/// `certs`, as an operator sets it for the docker CLI.
fn tls_env(tunnel: &Stunnel, certs: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("DOCKER_HOST", tunnel.docker_host()),
        ("DOCKER_TLS_VERIFY", "1".to_owned()),
        ("DOCKER_CERT_PATH", certs.display().to_string()),
    ]
}

fn start(rules: &str, env: &[(&'static str, String)]) -> Dockwarden {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Dockwarden::start_with(rules, &[], &env)
}

/// The lines of `dw`'s log about failing to reach the engine.
fn refusals(dw: &Dockwarden) -> Vec<String> {
    dw.log()
        .lines()
        .filter(|l| l.contains("Cannot reach Docker at") || l.contains("cannot use the TLS"))
        .map(str::to_owned)
        .collect()
}

/// Starts a sidecar against a tunnel that will refuse it, and checks that
/// it says why in one line containing `cause`, retries, and is not ready.
fn refused(tunnel: &Stunnel, certs: &Path, cause: &str) -> Dockwarden {
    let dw = start("", &tls_env(tunnel, certs));
    let said = |n: usize| {
        wait_until(Duration::from_secs(15), || {
            refusals(&dw).iter().filter(|l| l.contains(cause)).count() >= n
        })
    };
    assert!(
        said(2),
        "no two lines (a failure and its retry) naming \"{cause}\"; log:\n{}\nstunnel log:\n{}",
        dw.log(),
        tunnel.log()
    );
    let line = refusals(&dw)
        .into_iter()
        .find(|l| l.contains(cause))
        .unwrap_or_default();
    assert!(
        line.contains(&format!(
            "Cannot reach Docker at {} (TLS)",
            tunnel.docker_host()
        )),
        "the line names the endpoint: {line}"
    );
    assert!(line.contains("retrying"), "{line}");
    assert_eq!(dw.get("/readyz").0, 503);
    assert_eq!(dw.metrics().get("dockwarden_stream_connected", &[]), 0.0);
    dw
}

/// A good client certificate: the stream connects through the tunnel,
/// events are counted, and a labelled crashing container is restarted (a
/// bollard call over the same TLS).
#[test]
fn good_certificates_stream_events_and_heal() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let dir = TempDir::new("tls-good");
    let ca = Ca::new("dwt engine CA");
    let tunnel = Stunnel::start(
        &dir.path().join("stunnel"),
        &ca.issue(Role::Server, ENGINE_NAMES),
        &ca,
    );
    let certs = dir.path().join("certs");
    write_cert_path(&certs, &ca, &ca.issue(Role::Client, &["dockwarden"]));
    let mut dw = start(HEAL, &tls_env(&tunnel, &certs));
    dw.wait_ready(Duration::from_secs(30));
    assert!(
        dw.log()
            .contains(&format!("endpoint=tcp://{} (TLS)", tunnel.addr())),
        "the start line names the TLS endpoint"
    );

    let name = clean.container(unique("tls-heal"));
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
        "test -e /tmp/ran && exec sleep 300; touch /tmp/ran; sleep 1; exit 3",
    ]);
    let healed = wait_until(Duration::from_secs(30), || {
        dw.metrics()
            .get("dockwarden_container_restarts_total", &[("name", &name)])
            >= 1.0
    });
    assert!(healed, "the crashed container was not restarted");
    let m = dw.metrics();
    assert!(
        m.get(
            "dockwarden_events_total",
            &[("type", "container"), ("action", "die")]
        ) >= 1.0
    );
    assert!(
        m.get(
            "dockwarden_actions_total",
            &[("action", "restart"), ("result", "ok")]
        ) >= 1.0
    );
    assert!(wait_until(Duration::from_secs(10), || {
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &name]) == "true"
    }));
    assert!(
        tunnel.log().contains("Certificate accepted"),
        "stunnel verified the client certificate; its log:\n{}",
        tunnel.log()
    );
    assert!(refusals(&dw).is_empty(), "{:?}", refusals(&dw));
}

/// `[engine]` in the rules file, with no environment: host, tls_verify and
/// each file by name.
#[test]
fn rules_file_engine_section_connects() {
    require_docker();
    let dir = TempDir::new("tls-file");
    let ca = Ca::new("dwt engine CA");
    let tunnel = Stunnel::start(
        &dir.path().join("stunnel"),
        &ca.issue(Role::Server, ENGINE_NAMES),
        &ca,
    );
    let certs = dir.path().join("certs");
    write_cert_path(&certs, &ca, &ca.issue(Role::Client, &["dockwarden"]));
    let rules = format!(
        "[engine]\nhost = \"{}\"\ntls_verify = true\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        tunnel.docker_host(),
        certs.join("ca.pem").display(),
        certs.join("cert.pem").display(),
        certs.join("key.pem").display(),
    );
    let unset = [
        ("DOCKER_HOST", String::new()),
        ("DOCKER_TLS_VERIFY", String::new()),
        ("DOCKER_CERT_PATH", String::new()),
    ];
    let mut dw = start(&rules, &unset);
    dw.wait_ready(Duration::from_secs(30));
    assert_eq!(dw.metrics().get("dockwarden_stream_connected", &[]), 1.0);
}

/// A client certificate from another CA: the engine's side refuses it.
#[test]
fn client_certificate_from_another_ca_is_refused() {
    require_docker();
    let dir = TempDir::new("tls-client-ca");
    let ca = Ca::new("dwt engine CA");
    let other = Ca::new("dwt other CA");
    let tunnel = Stunnel::start(
        &dir.path().join("stunnel"),
        &ca.issue(Role::Server, ENGINE_NAMES),
        &ca,
    );
    let certs = dir.path().join("certs");
    write_cert_path(&certs, &ca, &other.issue(Role::Client, &["dockwarden"]));
    refused(&tunnel, &certs, "client certificate refused: unknown CA");
}

/// An expired client certificate.
#[test]
fn expired_client_certificate_is_refused() {
    require_docker();
    let dir = TempDir::new("tls-client-expired");
    let ca = Ca::new("dwt engine CA");
    let tunnel = Stunnel::start(
        &dir.path().join("stunnel"),
        &ca.issue(Role::Server, ENGINE_NAMES),
        &ca,
    );
    let certs = dir.path().join("certs");
    write_cert_path(
        &certs,
        &ca,
        &ca.issue_expired(Role::Client, &["dockwarden"]),
    );
    refused(
        &tunnel,
        &certs,
        "client certificate refused: expired certificate",
    );
}

/// The engine's certificate is for another name.
#[test]
fn server_certificate_for_another_name_is_refused() {
    require_docker();
    let dir = TempDir::new("tls-name");
    let ca = Ca::new("dwt engine CA");
    let tunnel = Stunnel::start(
        &dir.path().join("stunnel"),
        &ca.issue(Role::Server, &["docker.invalid"]),
        &ca,
    );
    let certs = dir.path().join("certs");
    write_cert_path(&certs, &ca, &ca.issue(Role::Client, &["dockwarden"]));
    let dw = refused(&tunnel, &certs, "host name mismatch");
    assert!(dw.log().contains("not valid for 127.0.0.1"), "{}", dw.log());
}

/// The engine's certificate is signed by a CA that is not in ca.pem.
#[test]
fn server_certificate_from_unknown_ca_is_refused() {
    require_docker();
    let dir = TempDir::new("tls-server-ca");
    let ca = Ca::new("dwt engine CA");
    let other = Ca::new("dwt other CA");
    let tunnel = Stunnel::start(
        &dir.path().join("stunnel"),
        &other.issue(Role::Server, ENGINE_NAMES),
        &ca,
    );
    let certs = dir.path().join("certs");
    write_cert_path(&certs, &ca, &ca.issue(Role::Client, &["dockwarden"]));
    let dw = refused(&tunnel, &certs, "unknown CA");
    let ca_pem = certs.join("ca.pem").display().to_string();
    assert!(
        dw.log().contains(&ca_pem),
        "names the CA file; log:\n{}",
        dw.log()
    );
}

/// The engine's certificate has expired.
#[test]
fn expired_server_certificate_is_refused() {
    require_docker();
    let dir = TempDir::new("tls-server-expired");
    let ca = Ca::new("dwt engine CA");
    let tunnel = Stunnel::start(
        &dir.path().join("stunnel"),
        &ca.issue_expired(Role::Server, ENGINE_NAMES),
        &ca,
    );
    let certs = dir.path().join("certs");
    write_cert_path(&certs, &ca, &ca.issue(Role::Client, &["dockwarden"]));
    refused(&tunnel, &certs, "expired certificate");
}

/// A missing key file is named, retried, and picked up once it appears.
#[test]
fn missing_file_is_named_and_picked_up_when_it_appears() {
    require_docker();
    let dir = TempDir::new("tls-missing");
    let ca = Ca::new("dwt engine CA");
    let tunnel = Stunnel::start(
        &dir.path().join("stunnel"),
        &ca.issue(Role::Server, ENGINE_NAMES),
        &ca,
    );
    let certs = dir.path().join("certs");
    let client: Leaf = ca.issue(Role::Client, &["dockwarden"]);
    write_cert_path(&certs, &ca, &client);
    let key = certs.join("key.pem");
    std::fs::remove_file(&key).expect("remove key.pem");
    let mut dw = start("", &tls_env(&tunnel, &certs));
    let expected = format!(
        "cannot use the TLS client key {}: missing (from DOCKER_CERT_PATH)",
        key.display()
    );
    assert!(
        dw.wait_for_log(&expected, Duration::from_secs(10)),
        "no line saying {expected:?}; log:\n{}",
        dw.log()
    );
    assert_eq!(dw.get("/readyz").0, 503);
    std::fs::write(&key, &client.key_pem).expect("write key.pem");
    dw.wait_ready(Duration::from_secs(40));
}

/// `dockwarden check` names a certificate file `[engine]` points at that is
/// missing, at its line and column; `run` would keep retrying instead.
#[test]
fn check_reports_a_missing_cert_file_at_its_place() {
    let dir = TempDir::new("tls-check");
    let certs = dir.path().join("certs");
    let ca = Ca::new("dwt engine CA");
    write_cert_path(&certs, &ca, &ca.issue(Role::Client, &["dockwarden"]));
    let gone = dir.path().join("gone.pem");
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[engine]\nhost = \"tcp://docker.example:2376\"\ntls_verify = true\ncert_path = \"{}\"\nkey_file = \"{}\"\n\n[server]\ncolour = 1\n",
            certs.display(),
            gone.display()
        ),
    )
    .expect("write rules");
    let out = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .arg("check")
        .arg(&rules)
        .output()
        .expect("run dockwarden check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let file = rules.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}:5:12: `key_file` in [engine]: cannot use the TLS client key {}: missing",
            gone.display()
        )),
        "{stderr}"
    );
    // Reported with the file's other problems, in one pass.
    assert!(
        stderr.contains(&format!("{file}:8:1: unknown key `colour`")),
        "{stderr}"
    );
    // The files cert_path names are fine: nothing about them.
    assert_eq!(stderr.lines().count(), 2, "{stderr}");

    // The same file with the key in place passes.
    std::fs::write(
        &rules,
        format!(
            "[engine]\ntls_verify = true\ncert_path = \"{}\"\n",
            certs.display()
        ),
    )
    .expect("write rules");
    let out = Command::new(env!("CARGO_BIN_EXE_dockwarden"))
        .arg("check")
        .arg(&rules)
        .output()
        .expect("run dockwarden check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
