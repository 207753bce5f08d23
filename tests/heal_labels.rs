//! Healing tuned per container by label, against the real engine:
//! `dockwarden.max_restarts` and the opt-out `dockwarden.heal=False`, a bad
//! label logged once and counted, `dockwarden.stop_timeout_secs` beyond the
//! API client's usual limit (docker-autoheal's #119), `dockwarden.action=stop`,
//! and the failed health check's output in the log line, the
//! `dockwarden.restart` event (seen by a webhook receiver) and the history.

mod common;

use std::time::Duration;

use common::api::{get_json, with_tokens};
use common::receiver::Receiver;
use common::{
    Cleanup, Dockwarden, TempDir, docker_ok, engine_events, inspect, now_unix, test_image, unique,
    wait_until,
};

/// Each line of dockwarden's log about `name` that contains `needle`.
fn lines_about(log: &str, name: &str, needle: &str) -> Vec<String> {
    let tag = format!("container={name}");
    log.lines()
        .filter(|l| l.split_whitespace().any(|w| w == tag) && l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The heal decisions about `name`, in order: `restart`, `recreate`,
/// `breaker`.
fn decisions(log: &str, name: &str) -> Vec<&'static str> {
    let tag = format!("container={name}");
    log.lines()
        .filter(|l| l.split_whitespace().any(|w| w == tag))
        .filter_map(|l| {
            if l.contains(&format!("Will restart {name}: ")) {
                Some("restart")
            } else if l.contains(&format!("Will recreate {name}: ")) {
                Some("recreate")
            } else if l.contains("up on the container: breaker open") {
                Some("breaker")
            } else {
                None
            }
        })
        .collect()
}

fn actions(dw: &Dockwarden, action: &str, result: &str) -> f64 {
    dw.metrics().get(
        "dockwarden_actions_total",
        &[("action", action), ("result", result)],
    )
}

/// Acceptance 1: one rule (2 restarts, then a recreate); a container
/// labelled `dockwarden.max_restarts=1` escalates after one restart, one
/// without the label after two, one labelled `max_restarts=abc` after two
/// (the label is logged once and counted once), and one labelled
/// `dockwarden.heal=False` is never healed.
#[test]
fn labels_override_the_rule_per_container() {
    let clean = Cleanup::for_engine_test();
    let tag = unique("lbl");
    let rules = format!(
        r#"
[[rule]]
name = "heal-lbl"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.lbl" = "{tag}" }}
[rule.with]
max_restarts = 2
window_secs = 120
then = "recreate"
backoff_initial_ms = 100
backoff_max_secs = 1
"#
    );
    let mut dw = Dockwarden::start(&rules);
    dw.wait_ready(Duration::from_secs(20));
    let image = test_image();
    let label = format!("dwt.lbl={tag}");
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--label", &label];
        for l in extra {
            args.extend(["--label", l]);
        }
        args.extend([image.as_str(), "sh", "-c", "sleep 1; exit 3"]);
        docker_ok(&args);
    };
    let one = clean.container(unique("lbl-one"));
    let rule = clean.container(unique("lbl-rule"));
    let bad = clean.container(unique("lbl-bad"));
    let out = clean.container(unique("lbl-out"));
    run(&one, &["dockwarden.max_restarts=1"]);
    run(&rule, &[]);
    run(&bad, &["dockwarden.max_restarts=abc"]);
    run(&out, &["dockwarden.heal=False"]);
    let done = |name: &str| decisions(&dw.log(), name).contains(&"breaker");
    assert!(
        wait_until(Duration::from_secs(90), || done(&one)
            && done(&rule)
            && done(&bad)),
        "the crash loops did not end in the breaker:\n{}",
        dw.log()
    );
    let log = dw.log();
    assert_eq!(
        decisions(&log, &one),
        ["restart", "recreate", "breaker"],
        "dockwarden.max_restarts=1"
    );
    assert_eq!(
        decisions(&log, &rule),
        ["restart", "restart", "recreate", "breaker"],
        "the rule's max_restarts"
    );
    assert_eq!(
        decisions(&log, &bad),
        ["restart", "restart", "recreate", "breaker"],
        "a bad label leaves the rule's value"
    );
    // Logged once (through four crashes and a recreate), with what was
    // expected, and counted once.
    let complaints = lines_about(&log, &bad, "Ignoring label dockwarden.max_restarts=\"abc\"");
    assert_eq!(complaints.len(), 1, "{complaints:#?}");
    assert!(
        complaints[0].contains("expected a whole number from 1 to 1000"),
        "{}",
        complaints[0]
    );
    assert_eq!(
        dw.metrics().get(
            "dockwarden_label_errors_total",
            &[("label", "dockwarden.max_restarts")]
        ),
        1.0
    );
    // The opted-out container crashed once and was left alone.
    assert!(decisions(&log, &out).is_empty(), "{log}");
    assert_eq!(
        lines_about(&log, &out, "labelled dockwarden.heal=false").len(),
        1,
        "{log}"
    );
    assert_eq!(inspect(&out)["State"]["Status"], "exited");
    assert_eq!(inspect(&out)["RestartCount"], 0);
}

/// A container that ignores SIGTERM and reports unhealthy, labelled with
/// `extra` labels, under a rule that restarts unhealthy containers once.
fn unhealthy_container(
    clean: &Cleanup,
    tag: &str,
    prefix: &str,
    extra: &[&str],
    check: &str,
) -> String {
    let name = clean.container(unique(prefix));
    let label = format!("dwt.sick={tag}");
    let mut args = vec!["run", "-d", "--name", &name, "--label", &label];
    for l in extra {
        args.extend(["--label", l]);
    }
    let image = test_image();
    args.extend([
        "--health-cmd",
        check,
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        image.as_str(),
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 1; done",
    ]);
    docker_ok(&args);
    name
}

fn unhealthy_rule(tag: &str) -> String {
    format!(
        r#"
[[rule]]
name = "heal-sick"
on = ["container.health_status"]
handler = "restart"
[rule.match]
labels = {{ "dwt.sick" = "{tag}" }}
status = "unhealthy"
[rule.with]
max_restarts = 1
then = "none"
backoff_initial_ms = 0
"#
    )
}

/// Acceptance 2: `dockwarden.stop_timeout_secs=75` on an unhealthy
/// container that ignores SIGTERM: the engine's `kill` events show the
/// SIGKILL ~75 s after the SIGTERM (not the rule's 10), and the restart is
/// counted `ok`, though it took longer than the API client's usual 60 s.
#[test]
fn a_long_stop_timeout_is_waited_out_and_counted_ok() {
    let clean = Cleanup::for_engine_test();
    let tag = unique("slow");
    let mut dw = Dockwarden::start(&unhealthy_rule(&tag));
    dw.wait_ready(Duration::from_secs(20));
    let since = now_unix();
    let name = unhealthy_container(
        &clean,
        &tag,
        "slow-stop",
        &["dockwarden.stop_timeout_secs=75"],
        "exit 1",
    );
    assert!(
        wait_until(Duration::from_secs(150), || actions(&dw, "restart", "ok")
            + actions(&dw, "restart", "error")
            >= 1.0),
        "no restart finished:\n{}",
        dw.log()
    );
    assert_eq!(actions(&dw, "restart", "ok"), 1.0, "{}", dw.log());
    assert_eq!(actions(&dw, "restart", "error"), 0.0, "{}", dw.log());
    let kills: Vec<(String, f64)> = engine_events(since, now_unix() + 1.0)
        .into_iter()
        .filter(|e| {
            e["Type"] == "container"
                && e["Action"] == "kill"
                && e["Actor"]["Attributes"]["name"] == name.as_str()
        })
        .map(|e| {
            (
                e["Actor"]["Attributes"]["signal"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["timeNano"].as_f64().unwrap_or(0.0) / 1e9,
            )
        })
        .collect();
    let term = kills.iter().find(|(s, _)| s == "15").map(|k| k.1);
    let kill = kills.iter().find(|(s, _)| s == "9").map(|k| k.1);
    let (Some(term), Some(kill)) = (term, kill) else {
        panic!("no SIGTERM then SIGKILL in the engine's events: {kills:?}");
    };
    let waited = kill - term;
    assert!(
        (74.0..90.0).contains(&waited),
        "SIGKILL {waited:.1} s after SIGTERM, not ~75 s"
    );
    assert!(inspect(&name)["State"]["Running"] == true, "restarted");
}

/// Acceptance 3: `dockwarden.action=stop` on an unhealthy container: it is
/// stopped, stays stopped, and the stop is counted and is an event.
#[test]
fn action_stop_stops_and_leaves_it_stopped() {
    let clean = Cleanup::for_engine_test();
    let tag = unique("stop");
    let mut dw = Dockwarden::start(&unhealthy_rule(&tag));
    dw.wait_ready(Duration::from_secs(20));
    let name = unhealthy_container(
        &clean,
        &tag,
        "stop-me",
        &["dockwarden.action=Stop", "dockwarden.stop_timeout_secs=2"],
        "exit 1",
    );
    assert!(
        wait_until(Duration::from_secs(60), || actions(&dw, "stop", "ok")
            >= 1.0),
        "not stopped:\n{}",
        dw.log()
    );
    assert_eq!(inspect(&name)["State"]["Running"], false);
    std::thread::sleep(Duration::from_secs(5));
    let state = inspect(&name);
    assert_eq!(state["State"]["Running"], false, "it stays stopped");
    assert_eq!(state["RestartCount"], 0);
    assert_eq!(actions(&dw, "stop", "ok"), 1.0);
    assert_eq!(actions(&dw, "restart", "ok"), 0.0);
    assert_eq!(
        dw.metrics().get(
            "dockwarden_events_total",
            &[("type", "dockwarden"), ("action", "stop")]
        ),
        1.0
    );
    assert_eq!(
        lines_about(
            &dw.log(),
            &name,
            &format!("Stopped {name}; it is left stopped.")
        )
        .len(),
        1,
        "{}",
        dw.log()
    );
}

/// Acceptance 6: the failed check's output is in the decision's log line,
/// in the `dockwarden.restart` event a webhook receives, and in the
/// container's history.
#[test]
fn the_failed_checks_output_says_why() {
    let clean = Cleanup::for_engine_test();
    let dir = TempDir::new("dwt-why");
    let receiver = Receiver::start();
    let tag = unique("why");
    let rules = format!(
        r#"
[notify.targets.ops]
kind = "webhook"
url = "{url}"

{heal}

[[rule]]
name = "tell-ops"
on = ["dockwarden.restart"]
handler = "notify"
[rule.match]
labels = {{ "dwt.sick" = "{tag}" }}
[rule.with]
target = "ops"
"#,
        url = receiver.url("/hook"),
        heal = unhealthy_rule(&tag)
    );
    let dw = with_tokens(&dir, &rules);
    let name = unhealthy_container(
        &clean,
        &tag,
        "why",
        &["dockwarden.stop_timeout_secs=1"],
        "echo db connection refused; exit 1",
    );
    assert!(
        wait_until(Duration::from_secs(60), || !receiver.requests().is_empty()),
        "no notification:\n{}",
        dw.log()
    );
    let log = dw.log();
    let decided = lines_about(&log, &name, &format!("Will restart {name}: "));
    assert_eq!(decided.len(), 1, "{log}");
    assert!(
        decided[0].contains("unhealthy (check exit 1: db connection refused)"),
        "{}",
        decided[0]
    );
    let body = receiver.requests()[0].json();
    assert_eq!(body["key"], "dockwarden.restart", "{body:#}");
    assert_eq!(
        body["fields"]["check_output"], "db connection refused",
        "{body:#}"
    );
    assert_eq!(body["fields"]["check_exit_code"], 1, "{body:#}");
    assert!(
        body["text"]
            .as_str()
            .is_some_and(|t| t.contains("db connection refused")),
        "{body:#}"
    );
    let history = get_json(&dw, &format!("/api/v1/containers/{name}/history"));
    let restart = history["entries"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["key"] == "dockwarden.restart"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        restart["details"]["check_output"], "db connection refused",
        "{history:#}"
    );
}
