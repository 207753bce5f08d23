//! Hot reload against the real engine: SIGHUP and `POST /-/reload`. A broken
//! file leaves the old rules working; a good one swaps them in.

mod common;

use std::process::Command;
use std::time::Duration;

use common::receiver::Receiver;
use common::{
    Cleanup, Dockwarden, TempDir, docker_ok, require_docker, require_test_image, test_image,
    unique, wait_until,
};

fn rule(name: &str, container: &str) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\non = [\"container.start\"]\nhandler = \"log\"\n[rule.match]\nname = [\"{container}\"]\n"
    )
}

fn matches(dw: &Dockwarden, rule: &str) -> f64 {
    dw.metrics()
        .get("dockwarden_rule_matches_total", &[("rule", rule)])
}

fn reloads(dw: &Dockwarden, result: &str) -> f64 {
    dw.metrics()
        .get("dockwarden_rules_reloads_total", &[("result", result)])
}

fn sighup(dw: &Dockwarden) {
    let ok = Command::new("kill")
        .args(["-HUP", &dw.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -HUP failed");
}

/// `POST path` with an optional bearer token → (status, body).
fn post(dw: &Dockwarden, path: &str, token: Option<&str>) -> (u16, String) {
    let (status, _, body) = common::api::request(dw, "POST", path, token);
    (status, body)
}

/// Acceptance 6 of the robustness issue: a broken file on SIGHUP leaves the
/// old rules working, and says why; a good one is swapped in.
#[test]
fn sighup_reload_keeps_old_rules_on_error_and_swaps_on_success() {
    require_docker();
    require_test_image();
    let clean = Cleanup::new();
    let name = clean.container(unique("reload"));
    let mut dw = Dockwarden::start(&rule("first", &name));
    dw.wait_ready(Duration::from_secs(20));
    let image = test_image();
    let start = || {
        docker_ok(&["rm", "-f", &name]);
        docker_ok(&["run", "--name", &name, &image, "true"]);
    };

    std::fs::write(
        dw.rules_path(),
        "[[rule]]\nname = \"broken\"\non = [\"container.start\"]\nhandler = \"no_such\"\n",
    )
    .expect("write broken rules");
    sighup(&dw);
    assert!(
        wait_until(Duration::from_secs(5), || reloads(&dw, "error") == 1.0),
        "no failed reload counted"
    );
    assert!(
        dw.log().contains(":4:11: unknown handler \"no_such\""),
        "the problem with its line:col is logged"
    );
    start();
    assert!(
        wait_until(Duration::from_secs(5), || matches(&dw, "first") == 1.0),
        "the old rule stopped working"
    );
    assert!(
        dw.try_status().is_none(),
        "a bad reload must not stop the sidecar"
    );

    std::fs::write(dw.rules_path(), rule("second", &name)).expect("write new rules");
    sighup(&dw);
    assert!(
        wait_until(Duration::from_secs(5), || reloads(&dw, "ok") == 1.0),
        "no reload counted"
    );
    start();
    assert!(
        wait_until(Duration::from_secs(5), || matches(&dw, "second") == 1.0),
        "the new rule does not fire"
    );
    assert_eq!(matches(&dw, "first"), 1.0, "the old rule is gone");
}

/// `POST /-/reload` is refused without a configured token, and needs it.
#[test]
fn http_reload_requires_the_bearer_token() {
    require_docker();
    let mut open = Dockwarden::start(&rule("a", "x"));
    open.wait_ready(Duration::from_secs(20));
    assert_eq!(post(&open, "/-/reload", Some("anything")).0, 403);

    let token = "s3cret-token-0123456789";
    let token_file = std::env::temp_dir().join(format!("dw-token-{}", std::process::id()));
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    let rules = format!(
        "[server]\ntoken_file = \"{}\"\n{}",
        token_file.display(),
        rule("a", "x")
    );
    let mut dw = Dockwarden::start(&rules);
    dw.wait_ready(Duration::from_secs(20));
    assert_eq!(post(&dw, "/-/reload", None).0, 401);
    assert_eq!(
        post(&dw, "/-/reload", Some("wrong-token-0123456789")).0,
        401
    );
    let (status, body) = post(&dw, "/-/reload", Some(token));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("reloaded: 1 rules"), "{body}");

    std::fs::write(dw.rules_path(), format!("{rules}colour = 1\n")).expect("break the file");
    let (status, body) = post(&dw, "/-/reload", Some(token));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown key `colour`"), "{body}");
    assert_eq!(reloads(&dw, "error"), 1.0);
    assert_eq!(reloads(&dw, "ok"), 1.0);
    let _ = std::fs::remove_file(&token_file);
}

/// `[notify.targets.NAME]` sending to `receiver`, and a rule telling it of
/// the creation of network `net`.
fn notify_on_network(name: &str, receiver: &Receiver, net: &str) -> String {
    format!(
        "[notify.targets.{name}]\nkind = \"webhook\"\nurl = \"{url}\"\n\n[[rule]]\nname = \"tell-{name}\"\non = [\"network.create\"]\nhandler = \"notify\"\n[rule.match]\nname = [\"{net}\"]\n[rule.with]\ntarget = \"{name}\"\n\n",
        url = receiver.url(&format!("/{name}"))
    )
}

/// Senders are built at start: a reload whose rules send to a target added
/// since (here `b`) would be accepted and then drop every message to it.
/// It is refused like any bad file, naming the rule's `target`, and the
/// old rules go on delivering to `a`.
#[test]
fn a_reload_sending_to_a_target_added_since_start_is_refused() {
    require_docker();
    let clean = Cleanup::new();
    let net = clean.network(unique("reload-notify"));
    let (a, b) = (Receiver::start(), Receiver::start());
    let dir = TempDir::new("dw-reload-notify");
    let dw = common::api::with_tokens(&dir, &notify_on_network("a", &a, &net));
    let started = std::fs::read_to_string(dw.rules_path()).expect("read the rules");

    let rules = format!("{started}{}", notify_on_network("b", &b, &net));
    std::fs::write(dw.rules_path(), &rules).expect("write the new rules");
    let (status, body) = post(&dw, "/-/reload", Some(common::api::RELOAD_TOKEN));
    assert_eq!(status, 400, "{body}");
    assert_eq!(reloads(&dw, "error"), 1.0);
    assert_eq!(reloads(&dw, "ok"), 0.0);
    // Where the rule names it: `target = "b"`, at its value.
    let (line, col) = rules
        .lines()
        .enumerate()
        .find_map(|(i, l)| {
            (l == "target = \"b\"").then(|| (i + 1, l.find('"').map_or(0, |c| c + 1)))
        })
        .expect("the rule for b");
    let problem = format!(
        "{}:{line}:{col}: notify target \"b\" was added after start",
        dw.rules_path().display()
    );
    assert!(body.contains(&problem), "{problem} in {body}");
    assert!(
        dw.wait_for_log(&problem, Duration::from_secs(5)),
        "{problem} is logged:\n{}",
        dw.log()
    );
    assert!(body.contains("restart"), "says what to do: {body}");

    docker_ok(&["network", "create", &net]);
    let got = a.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "the old rule still tells a:\n{}", dw.log());
    assert_eq!(got[0].json()["key"], "network.create");
    assert_eq!(b.count(), 0);
}
