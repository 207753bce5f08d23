//! Notifications end to end, against the real engine and a real HTTP
//! receiver on loopback: dockwarden's own events (`dockwarden.*`) routed by
//! the rules to the `notify` handler, in order, filtered by severity, muted
//! by label, and the event stream's outage told and its return.

mod common;

use std::time::Duration;

use common::proxy::FaultProxy;
use common::receiver::{Received, Receiver};
use common::{Cleanup, Dockwarden, docker_ok, test_image, unique, wait_until};

fn target(receiver: &Receiver) -> String {
    format!(
        r#"
[notify.targets.ops]
kind = "webhook"
url = "{}"
timeout_secs = 2
max_per_minute = 1000
"#,
        receiver.url("/hook")
    )
}

/// The webhook bodies received, as JSON, in arrival order.
fn bodies(received: &[Received]) -> Vec<serde_json::Value> {
    received.iter().map(Received::json).collect()
}

fn about(bodies: &[serde_json::Value], name: &str) -> Vec<serde_json::Value> {
    bodies
        .iter()
        .filter(|b| b["container"]["name"] == name)
        .cloned()
        .collect()
}

/// Acceptance 1: a crash loop under a `notify` rule on `dockwarden.restart`
/// and `dockwarden.breaker_open` sends one message per restart, with its
/// attempt, then one "gave up", in that order. A container labelled
/// `dockwarden.notify=false` crashing alongside is healed but never told.
#[test]
fn a_crash_loop_notifies_each_restart_then_gives_up_in_order() {
    let clean = Cleanup::for_engine_test();
    let receiver = Receiver::start();
    let rules = format!(
        r#"{target}
[[rule]]
name = "heal"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.notify-test" = "true" }}
[rule.with]
max_restarts = 3
window_secs = 60
then = "none"
backoff_initial_ms = 100
backoff_max_secs = 1

[[rule]]
name = "tell-ops"
on = ["dockwarden.restart", "dockwarden.breaker_open", "dockwarden.breaker_closed"]
handler = "notify"
[rule.with]
target = "ops"
"#,
        target = target(&receiver)
    );
    let mut dw = Dockwarden::start(&rules);
    dw.wait_ready(Duration::from_secs(20));
    let loud = clean.container(unique("notify-loop"));
    let muted = clean.container(unique("notify-muted"));
    for (name, extra) in [(&loud, None), (&muted, Some("dockwarden.notify=False"))] {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--label",
            "dwt.notify-test=true",
        ];
        if let Some(label) = extra {
            args.extend(["--label", label]);
        }
        let image = test_image();
        args.extend([image.as_str(), "sh", "-c", "sleep 0.3; exit 3"]);
        docker_ok(&args);
    }
    // 3 restarts and a breaker for `loud`: 4 messages.
    let got = receiver.wait_for(4, Duration::from_secs(40));
    // The muted container's breaker opens too: wait for it, then for any
    // message that should not come.
    assert!(
        dw.wait_for_log(&format!("container={muted}"), Duration::from_secs(5))
            && wait_until(Duration::from_secs(30), || {
                let m = dw.metrics();
                m.get(
                    "dockwarden_events_total",
                    &[("type", "dockwarden"), ("action", "breaker_open")],
                ) >= 2.0
            }),
        "the muted container's breaker never opened:\n{}",
        dw.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let all = bodies(&receiver.requests());
    let loud_msgs = about(&all, &loud);
    let keys: Vec<(String, Option<u64>)> = loud_msgs
        .iter()
        .map(|b| {
            (
                b["key"].as_str().unwrap_or_default().to_owned(),
                b["fields"]["attempt"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("dockwarden.restart".to_owned(), Some(1)),
            ("dockwarden.restart".to_owned(), Some(2)),
            ("dockwarden.restart".to_owned(), Some(3)),
            ("dockwarden.breaker_open".to_owned(), None),
        ],
        "messages about {loud}, in order: {got:#?}"
    );
    assert_eq!(
        loud_msgs[1]["text"],
        format!("{loud} restarted (exit 3, attempt 2 of 3, after a 200ms backoff)")
    );
    assert_eq!(loud_msgs[3]["title"], format!("gave up on {loud}"));
    assert!(
        about(&all, &muted).is_empty(),
        "muted container told: {all:#?}"
    );
    assert_eq!(all.len(), 4, "only {loud}'s messages: {all:#?}");
    // Each message has its own id, sent as the Idempotency-Key too.
    let requests = receiver.requests();
    let ids: std::collections::BTreeSet<&str> =
        all.iter().filter_map(|b| b["id"].as_str()).collect();
    assert_eq!(ids.len(), 4);
    for (r, b) in requests.iter().zip(&all) {
        assert_eq!(r.header("idempotency-key"), b["id"].as_str());
    }
    // Removing both closes both breakers; only `loud`'s is told, though
    // the muted container is gone from the container view by then.
    docker_ok(&["rm", "-f", &loud, &muted]);
    let got = receiver.wait_for(5, Duration::from_secs(15));
    assert!(
        wait_until(Duration::from_secs(10), || {
            dw.metrics().get(
                "dockwarden_events_total",
                &[("type", "dockwarden"), ("action", "breaker_closed")],
            ) >= 2.0
        }),
        "both breakers close on destroy:\n{}",
        dw.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let all = bodies(&receiver.requests());
    assert_eq!(all.len(), 5, "{got:#?}");
    assert_eq!(all[4]["key"], "dockwarden.breaker_closed");
    assert_eq!(all[4]["container"]["name"], loud.as_str());
    assert_eq!(all[4]["fields"]["reason"], "destroyed");
    let m = dw.metrics();
    assert_eq!(
        m.get(
            "dockwarden_events_total",
            &[("type", "dockwarden"), ("action", "restart")]
        ),
        6.0,
        "3 restarts each of two containers, counted as dockwarden's own events"
    );
    assert_eq!(
        m.get(
            "dockwarden_notifications_total",
            &[("target", "ops"), ("result", "sent")]
        ),
        5.0
    );
}

/// Acceptance 7: under `match.severity = ["high", "critical"]`, a root
/// shell with a TTY is told (`high`); `true` as uid 1000 is not (`low`).
#[test]
fn only_high_severity_execs_are_told() {
    let clean = Cleanup::for_engine_test();
    let receiver = Receiver::start();
    let audit_dir = common::TempDir::new("dw-notify-audit");
    let rules = format!(
        r#"{target}
[audit]
path = "{audit}"

[[rule]]
name = "audit"
on = ["container.exec_start", "container.exec_die"]
handler = "exec_audit"

[[rule]]
name = "tell-ops"
on = ["dockwarden.exec"]
handler = "notify"
[rule.match]
severity = ["high", "critical"]
[rule.with]
target = "ops"
"#,
        target = target(&receiver),
        audit = audit_dir.path().join("audit.jsonl").display()
    );
    let mut dw = Dockwarden::start(&rules);
    dw.wait_ready(Duration::from_secs(20));
    let name = clean.container(unique("notify-exec"));
    docker_ok(&["run", "-d", "--name", &name, &test_image(), "sleep", "120"]);
    docker_ok(&["exec", "-u", "1000", &name, "true"]);
    docker_ok(&["exec", "-t", "-u", "0", &name, "sh", "-c", "exit 0"]);
    let got = receiver.wait_for(1, Duration::from_secs(15));
    // Both execs were audited (so the low one was seen and filtered).
    assert!(
        wait_until(Duration::from_secs(10), || {
            dw.metrics().get(
                "dockwarden_events_total",
                &[("type", "dockwarden"), ("action", "exec")],
            ) >= 2.0
        }),
        "both execs should be dockwarden.exec events:\n{}",
        dw.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let all = bodies(&receiver.requests());
    assert_eq!(all.len(), 1, "one notification, for the shell: {got:#?}");
    let b = &all[0];
    assert_eq!(b["key"], "dockwarden.exec");
    assert_eq!(b["severity"], "high");
    assert_eq!(b["fields"]["severity"], "high");
    assert_eq!(b["container"]["name"], name.as_str());
    assert_eq!(
        b["text"],
        format!("shell in {name} as 0 (tty): sh -c exit 0")
    );
}

/// `dockwarden.stream_lost` once the stream has been down for `[source]
/// lost_after_secs`, and `dockwarden.stream_restored` when it is back: the
/// engine behind a proxy that refuses connections for a while.
#[test]
fn a_long_outage_of_the_stream_is_told_and_so_is_its_end() {
    let _clean = Cleanup::for_engine_test();
    let receiver = Receiver::start();
    let proxy = FaultProxy::start();
    let rules = format!(
        r#"{target}
[source]
lost_after_secs = 2

[[rule]]
name = "tell-ops"
on = ["dockwarden.stream_*"]
handler = "notify"
[rule.with]
target = "ops"
"#,
        target = target(&receiver)
    );
    let mut dw = Dockwarden::start_with(&rules, &[], &[("DOCKER_HOST", &proxy.docker_host())]);
    dw.wait_ready(Duration::from_secs(20));
    // A blip shorter than the limit says nothing.
    proxy.cut_all();
    assert!(
        dw.wait_for_log(
            "Reconnected to the Docker event stream",
            Duration::from_secs(10)
        ),
        "no reconnect after a cut:\n{}",
        dw.log()
    );
    proxy.set_refuse(true);
    proxy.cut_all();
    let lost = receiver.wait_for(1, Duration::from_secs(15));
    assert_eq!(lost.len(), 1, "stream_lost not told:\n{}", dw.log());
    assert_eq!(lost[0].json()["key"], "dockwarden.stream_lost");
    assert_eq!(lost[0].json()["severity"], "critical");
    proxy.set_refuse(false);
    let both = receiver.wait_for(2, Duration::from_secs(40));
    assert_eq!(both.len(), 2, "stream_restored not told:\n{}", dw.log());
    let restored = both[1].json();
    assert_eq!(restored["key"], "dockwarden.stream_restored");
    assert!(
        restored["fields"]["down_secs"]
            .as_u64()
            .is_some_and(|s| s >= 2)
    );
}

/// Acceptance 5: 200 crashes across 20 containers within a minute, under
/// `max_per_minute = 10`: at most 10 requests in any minute, and the
/// summaries account for every restart (each body stands for one message,
/// or for the `fields.ids` it lists).
#[test]
fn a_crash_storm_is_rate_limited_and_every_restart_accounted() {
    let clean = Cleanup::for_engine_test();
    let receiver = Receiver::start();
    let rules = format!(
        r#"
[notify.targets.ops]
kind = "webhook"
url = "{url}"
max_per_minute = 10

[[rule]]
name = "heal"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.storm" = "true" }}
[rule.with]
max_restarts = 10
window_secs = 120
then = "none"
backoff_initial_ms = 0

[[rule]]
name = "tell-ops"
on = ["dockwarden.restart"]
handler = "notify"
[rule.with]
target = "ops"
"#,
        url = receiver.url("/hook")
    );
    let mut dw = Dockwarden::start(&rules);
    dw.wait_ready(Duration::from_secs(20));
    let image = test_image();
    for i in 0..20 {
        let name = clean.container(unique(&format!("storm{i}")));
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            "dwt.storm=true",
            &image,
            "sh",
            "-c",
            "sleep 0.2; exit 3",
        ]);
    }
    let restarts = || {
        dw.metrics().get(
            "dockwarden_events_total",
            &[("type", "dockwarden"), ("action", "restart")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(120), || restarts() >= 200.0),
        "200 restarts, got {}",
        restarts()
    );
    let accounted = |bodies: &[serde_json::Value]| -> usize {
        bodies
            .iter()
            .map(|b| b["fields"]["ids"].as_array().map_or(1, Vec::len))
            .sum()
    };
    // The held messages go out as summaries once the window allows.
    assert!(
        wait_until(Duration::from_secs(90), || accounted(&bodies(
            &receiver.requests()
        )) >= 200),
        "not every restart accounted: {} of 200",
        accounted(&bodies(&receiver.requests()))
    );
    let requests = receiver.requests();
    let all = bodies(&requests);
    assert_eq!(accounted(&all), 200, "each restart once: {all:#?}");
    let ids: std::collections::BTreeSet<String> = all
        .iter()
        .flat_map(|b| match b["fields"]["ids"].as_array() {
            Some(ids) => ids
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            None => vec![b["id"].as_str().unwrap_or_default().to_owned()],
        })
        .collect();
    assert_eq!(ids.len(), 200, "200 distinct messages");
    // At most 10 requests in any 60 s.
    for (i, first) in requests.iter().enumerate() {
        let in_window = requests[i..]
            .iter()
            .filter(|r| r.at.duration_since(first.at) < Duration::from_secs(60))
            .count();
        assert!(in_window <= 10, "{in_window} requests within a minute");
    }
    assert!(
        all.iter()
            .any(|b| b["text"].as_str().is_some_and(|t| t.contains(" more"))),
        "a summary says how many more: {all:#?}"
    );
}

/// Acceptance 6: kill -9 while 50 messages wait for a dead receiver. After
/// a restart on the same state dir, with the receiver up, all 50 arrive,
/// each id once.
#[test]
fn messages_queued_for_a_dead_receiver_survive_kill_9() {
    let clean = Cleanup::for_engine_test();
    let receiver = Receiver::start_down();
    let state = common::TempDir::new("dw-notify-state");
    let audit = state.path().join("audit.jsonl");
    let rules = format!(
        r#"
[notify.targets.ops]
kind = "webhook"
url = "{url}"
max_per_minute = 1000
backoff_initial_ms = 100
backoff_max_secs = 1
breaker_cooldown_secs = 1

[audit]
path = "{audit}"

[[rule]]
name = "audit"
on = ["container.exec_start", "container.exec_die"]
handler = "exec_audit"

[[rule]]
name = "tell-ops"
on = ["dockwarden.exec"]
handler = "notify"
[rule.with]
target = "ops"
"#,
        url = receiver.url("/hook"),
        audit = audit.display()
    );
    let state_dir = state.path().join("state");
    let state_arg = state_dir.display().to_string();
    let args = ["--state-dir", state_arg.as_str()];
    let mut dw = Dockwarden::start_with(&rules, &args, &[]);
    dw.wait_ready(Duration::from_secs(20));
    let name = clean.container(unique("notify-kill"));
    docker_ok(&["run", "-d", "--name", &name, &test_image(), "sleep", "300"]);
    for _ in 0..50 {
        docker_ok(&["exec", &name, "true"]);
    }
    let exec_events = || {
        dw.metrics().get(
            "dockwarden_events_total",
            &[("type", "dockwarden"), ("action", "exec")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || exec_events() >= 50.0),
        "50 dockwarden.exec events, got {}",
        exec_events()
    );
    // Let the checkpoint (written every second) pass the execs, so the
    // restart does not replay them, then die hard.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.count(), 0, "the receiver was down");
    dw.kill9();
    receiver.up();
    let mut again = Dockwarden::start_with(&rules, &args, &[]);
    again.wait_ready(Duration::from_secs(20));
    let got = receiver.wait_for(50, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let all = bodies(&receiver.requests());
    let ids: std::collections::BTreeSet<&str> =
        all.iter().filter_map(|b| b["id"].as_str()).collect();
    assert_eq!(ids.len(), 50, "50 distinct messages: {got:#?}");
    assert_eq!(all.len(), 50, "each id once");
    assert!(all.iter().all(|b| b["key"] == "dockwarden.exec"));
}
