//! Notification delivery against real HTTP receivers on loopback
//! (`common::receiver`), driving `dockwarden::notify::Notifier` directly:
//! no Docker needed. The receivers go down, answer 500, 429 with
//! `Retry-After`, answer too slowly or refuse for good; each test checks
//! what arrived, in what order, when, and what was counted.
//!
//! Timeouts, backoffs, cool-downs and the rate window are shortened
//! through `TargetConfig` so the file runs in seconds.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDir;
use common::receiver::{Received, Receiver, Reply, Step};
use dockwarden::metrics::Metrics;
use dockwarden::notify::{
    ContainerRef, Kind, Message, Notifier, NotifyConfig, Secret, Severity, TargetConfig,
};
use serde_json::{Value, json};

const HOST: &str = "node-3";

/// A target with everything short: 20 ms first backoff, a 300 ms
/// breaker cool-down after 3 failures, a 2 s timeout, no rate limit to
/// speak of.
fn target(name: &str, kind: Kind, url: &str) -> TargetConfig {
    let mut t = TargetConfig::new(name, kind, url).expect("test URL is valid");
    t.timeout = Duration::from_secs(2);
    t.backoff_initial = Duration::from_millis(20);
    t.backoff_max = Duration::from_millis(200);
    t.breaker_failures = 3;
    t.breaker_cooldown = Duration::from_millis(300);
    t.max_per_minute = 10_000;
    t
}

fn config(targets: Vec<TargetConfig>) -> NotifyConfig {
    NotifyConfig {
        targets,
        declared: Vec::new(),
    }
}

fn msg(i: usize) -> Message {
    Message {
        id: format!("m-{i}"),
        time_nano: 1_700_000_000_000_000_000 + i as i64,
        key: "dockwarden.restart".into(),
        severity: Severity::Medium,
        title: format!("web-{} restarted", i % 2 + 1),
        text: format!("web-{} restarted (exit 3, attempt {i} of 5)", i % 2 + 1),
        container: Some(ContainerRef {
            id: format!("c{}", i % 2),
            name: format!("web-{}", i % 2 + 1),
            image: "nginx:1.25".into(),
        }),
        fields: json!({"attempt": i})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }
}

fn start(cfg: &NotifyConfig, dir: &TempDir) -> (Notifier, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let n = Notifier::start(cfg, dir.path(), HOST.into(), metrics.clone());
    (n, metrics)
}

/// `dockwarden_notifications_total{target,result}`.
fn counted(m: &Metrics, target: &str, result: &str) -> f64 {
    common::Metrics::parse(&m.render()).get(
        "dockwarden_notifications_total",
        &[("target", target), ("result", result)],
    )
}

fn gauge(m: &Metrics, name: &str, target: &str) -> f64 {
    common::Metrics::parse(&m.render()).get(name, &[("target", target)])
}

/// Polls `f` every 20 ms without blocking the runtime.
async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(reqs: &[Received]) -> Vec<String> {
    reqs.iter()
        .map(|r| r.json()["id"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn expected_ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_up_gets_every_message_in_order_once() {
    let dir = TempDir::new("notify-down-up");
    let r = Receiver::start_down();
    let cfg = config(vec![target("ops", Kind::Webhook, &r.url("/hook"))]);
    let (notifier, metrics) = start(&cfg, &dir);
    let h = notifier.handle();
    for i in 0..20 {
        h.send("ops", msg(i));
    }
    let opened = eventually(Duration::from_secs(3), || {
        gauge(&metrics, "dockwarden_notification_breaker_open", "ops") == 1.0
    })
    .await;
    assert!(opened, "3 refused connections open the breaker");
    assert_eq!(
        gauge(&metrics, "dockwarden_notification_queue", "ops"),
        20.0
    );
    assert!(counted(&metrics, "ops", "retried") >= 3.0);

    tokio::time::sleep(Duration::from_millis(700)).await;
    r.up();
    assert!(
        eventually(Duration::from_secs(5), || r.count() >= 20).await,
        "only {} of 20 arrived",
        r.count()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reqs = r.requests();
    assert_eq!(ids(&reqs), expected_ids(0..20), "in order, each once");
    for q in &reqs {
        assert_eq!(q.method, "POST");
        assert_eq!(q.path, "/hook");
        assert_eq!(q.header("Idempotency-Key"), q.json()["id"].as_str());
    }
    assert_eq!(counted(&metrics, "ops", "sent"), 20.0);
    assert_eq!(gauge(&metrics, "dockwarden_notification_queue", "ops"), 0.0);
    assert_eq!(
        gauge(&metrics, "dockwarden_notification_breaker_open", "ops"),
        0.0
    );
    let latency = common::Metrics::parse(&metrics.render()).get(
        "dockwarden_notification_latency_seconds_count",
        &[("target", "ops")],
    );
    assert_eq!(latency, 20.0);
    notifier.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundreds_are_retried_then_delivered() {
    let dir = TempDir::new("notify-500");
    let r = Receiver::start();
    r.script([Reply::status(500), Reply::status(502), Reply::status(503)]);
    let mut t = target("ops", Kind::Webhook, &r.url("/hook"));
    t.breaker_failures = 10;
    let (notifier, metrics) = start(&config(vec![t]), &dir);
    notifier.handle().send("ops", msg(1));
    assert!(
        eventually(Duration::from_secs(5), || counted(&metrics, "ops", "sent")
            == 1.0)
        .await
    );
    let reqs = r.requests();
    assert_eq!(ids(&reqs), ["m-1"; 4], "the same message four times");
    assert_eq!(counted(&metrics, "ops", "retried"), 3.0);
    assert_eq!(counted(&metrics, "ops", "failed"), 0.0);
    notifier.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_and_503_is_honoured() {
    let dir = TempDir::new("notify-429");
    let r = Receiver::start();
    r.script([
        Reply::status(429).header("Retry-After", "2"),
        Reply::status(503).header("Retry-After", "1"),
    ]);
    let (notifier, metrics) = start(
        &config(vec![target("ops", Kind::Webhook, &r.url("/"))]),
        &dir,
    );
    notifier.handle().send("ops", msg(1));
    assert!(
        eventually(Duration::from_secs(6), || counted(&metrics, "ops", "sent")
            == 1.0)
        .await
    );
    let reqs = r.requests();
    assert_eq!(reqs.len(), 3);
    let first_wait = reqs[1].at - reqs[0].at;
    let second_wait = reqs[2].at - reqs[1].at;
    assert!(first_wait >= Duration::from_secs(2), "{first_wait:?}");
    assert!(second_wait >= Duration::from_secs(1), "{second_wait:?}");
    assert!(first_wait < Duration::from_secs(3), "{first_wait:?}");
    notifier.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    let dir = TempDir::new("notify-slow");
    let r = Receiver::start();
    r.script([Reply::status(200).delay(Duration::from_millis(1500))]);
    let mut t = target("ops", Kind::Webhook, &r.url("/"));
    t.timeout = Duration::from_millis(300);
    let (notifier, metrics) = start(&config(vec![t]), &dir);
    let sent_at = Instant::now();
    notifier.handle().send("ops", msg(7));
    assert!(
        eventually(Duration::from_secs(5), || counted(&metrics, "ops", "sent")
            == 1.0)
        .await
    );
    let reqs = r.requests();
    assert_eq!(ids(&reqs), ["m-7", "m-7"]);
    assert_eq!(counted(&metrics, "ops", "retried"), 1.0, "the timeout");
    assert!(
        reqs[1].at - reqs[0].at >= Duration::from_millis(300),
        "retried only after the timeout"
    );
    assert!(
        sent_at.elapsed() < Duration::from_millis(1400),
        "did not wait for the slow answer"
    );
    notifier.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_rate_limit_messages_are_summarised_and_every_one_accounted() {
    let dir = TempDir::new("notify-rate");
    let r = Receiver::start();
    let mut t = target("ops", Kind::Webhook, &r.url("/"));
    t.max_per_minute = 3;
    t.rate_window = Duration::from_secs(1);
    let (notifier, metrics) = start(&config(vec![t]), &dir);
    let h = notifier.handle();
    for i in 0..30 {
        h.send("ops", msg(i));
    }
    let done = eventually(Duration::from_secs(5), || {
        counted(&metrics, "ops", "sent") + counted(&metrics, "ops", "coalesced") == 30.0
    })
    .await;
    assert!(done, "{} requests: {:?}", r.count(), ids(&r.requests()));
    let reqs = r.requests();
    // No window of 1 s holds more than 3 requests (by arrival, so 100 ms
    // of slack for connecting).
    for (i, a) in reqs.iter().enumerate() {
        let within = reqs[i..]
            .iter()
            .filter(|b| b.at.duration_since(a.at) < Duration::from_millis(900))
            .count();
        assert!(within <= 3, "{within} requests within 1 s of request {i}");
    }
    // Every message is accounted for once, in order: singles by id,
    // summaries by the ids they list.
    let mut seen = Vec::new();
    let mut summaries = 0;
    for q in &reqs {
        let body = q.json();
        if body["key"] == "dockwarden.summary" {
            summaries += 1;
            let listed: Vec<String> = body["fields"]["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_str().unwrap_or("?").to_owned())
                .collect();
            assert_eq!(body["fields"]["count"], listed.len());
            // The text counts the rest: "and N more …: a× x, b× y".
            let text = body["text"].as_str().expect("text");
            let list = text.rsplit("): ").next().expect("a list");
            let more: usize = list
                .split(", ")
                .map(|p| {
                    p.split('×')
                        .next()
                        .and_then(|n| n.parse::<usize>().ok())
                        .unwrap_or(0)
                })
                .sum();
            assert_eq!(more + 1, listed.len(), "{text}");
            assert!(text.contains(&format!("and {more} more")), "{text}");
            seen.extend(listed);
        } else {
            seen.push(body["id"].as_str().unwrap_or("?").to_owned());
        }
    }
    assert!(summaries >= 1, "{:?}", ids(&reqs));
    assert_eq!(seen, expected_ids(0..30));
    assert_eq!(
        counted(&metrics, "ops", "coalesced") + counted(&metrics, "ops", "sent"),
        30.0
    );
    notifier.close(Duration::from_secs(1)).await;
}

/// Starts a notifier in its own runtime, sends, waits until `ready` (or
/// 5 s), then "crashes": the runtime is dropped without `close`, so no
/// task gets to tidy up.
fn run_and_crash(
    cfg: &NotifyConfig,
    dir: &TempDir,
    first: usize,
    n: usize,
    ready: impl Fn() -> bool,
) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let notifier = Notifier::start(cfg, dir.path(), HOST.into(), Arc::new(Metrics::new()));
        for i in first..first + n {
            notifier.handle().send("ops", msg(i));
        }
        assert!(
            eventually(Duration::from_secs(5), &ready).await,
            "not ready to crash"
        );
        // Time to spool what was sent.
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Not dropped: Drop would stop the senders politely.
        std::mem::forget(notifier);
    });
    drop(rt);
}

#[test]
fn a_crash_keeps_queued_messages_and_a_restart_delivers_each_once() {
    let dir = TempDir::new("notify-spool");
    let r = Receiver::start();
    let cfg = config(vec![target("ops", Kind::Webhook, &r.url("/"))]);

    // Five are answered 200; the sixth is never answered; then a crash.
    r.script(vec![Reply::status(200); 5]);
    r.set_default(Reply::status(200).delay(Duration::from_secs(30)));
    run_and_crash(&cfg, &dir, 0, 10, || r.count() >= 6);
    assert_eq!(ids(&r.requests()), expected_ids(0..6));
    // The receiver dies; 50 more are queued for it; another crash.
    r.down();
    r.set_default(Reply::status(200));
    run_and_crash(&cfg, &dir, 10, 50, || true);
    assert_eq!(r.count(), 6);

    r.up();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (notifier, metrics) = start(&cfg, &dir);
        assert!(
            eventually(Duration::from_secs(5), || r.count() >= 61).await,
            "{} arrived",
            r.count()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        // What got a 200 is never sent again; the one never answered is
        // (at least once); the rest keep their ids and their order.
        let mut want = expected_ids(0..6);
        want.extend(expected_ids(5..60));
        assert_eq!(ids(&r.requests()), want);
        assert_eq!(counted(&metrics, "ops", "sent"), 55.0);

        // A clean stop with a dead receiver keeps the rest, too.
        r.down();
        for i in 60..70 {
            notifier.handle().send("ops", msg(i));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let closing = Instant::now();
        notifier.close(Duration::from_secs(2)).await;
        assert!(
            closing.elapsed() < Duration::from_millis(500),
            "a failing target does not hold up close"
        );
        r.up();
        let (notifier, _) = start(&cfg, &dir);
        assert!(eventually(Duration::from_secs(5), || r.count() >= 71).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        want.extend(expected_ids(60..70));
        assert_eq!(ids(&r.requests()), want);
        notifier.close(Duration::from_secs(1)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_match_each_services_documented_shape() {
    let dir = TempDir::new("notify-bodies");
    let (slack, discord, ntfy, gotify, hook) = (
        Receiver::start(),
        Receiver::start(),
        Receiver::start(),
        Receiver::start(),
        Receiver::start(),
    );
    slack.set_default(Reply::status(200).body("ok"));
    discord.set_default(Reply::status(204));
    gotify.set_default(Reply::status(200).body(r#"{"id":1}"#));
    let mut n = target("phone", Kind::Ntfy, &ntfy.url("/alerts"));
    n.token = Some(Secret::new("tk_abc"));
    let mut g = target("push", Kind::Gotify, &gotify.url(""));
    g.token = Some(Secret::new("AppToken1"));
    let mut w = target("ops", Kind::Webhook, &hook.url("/in"));
    w.headers = vec![("X-Team".into(), Secret::new("infra"))];
    let cfg = config(vec![
        target("chat", Kind::Slack, &slack.url("/services/T0/B0/x")),
        target("game", Kind::Discord, &discord.url("/api/webhooks/1/y")),
        n,
        g,
        w,
    ]);
    let (notifier, _) = start(&cfg, &dir);
    let mut m = msg(1);
    m.key = "dockwarden.exec".into();
    m.severity = Severity::High;
    m.title = "shell in <db> & co as root".into();
    m.text = format!("shell in db as root (tty): sh {}", "x".repeat(2500));
    for t in ["chat", "game", "phone", "push", "ops"] {
        notifier.handle().send(t, m.clone());
    }
    let got = |r: &Receiver| r.wait_for(1, Duration::from_secs(5)).remove(0);

    // Slack incoming webhook: {"text"} in mrkdwn, & < > escaped.
    let s = got(&slack);
    assert_eq!(
        (s.method.as_str(), s.path.as_str()),
        ("POST", "/services/T0/B0/x")
    );
    assert_eq!(s.header("Content-Type"), Some("application/json"));
    let v = s.json();
    let text = v["text"].as_str().expect("text is a string");
    assert!(
        text.contains("*[node-3] shell in &lt;db&gt; &amp; co as root*"),
        "{text}"
    );
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "only `text`: {v}");

    // Discord execute webhook: {"content"} ≤ 2000 characters, no pings.
    let d = got(&discord);
    let v = d.json();
    let content = v["content"].as_str().expect("content");
    assert!(
        content.chars().count() <= 2000,
        "{}",
        content.chars().count()
    );
    assert!(
        content.contains("**[node-3] shell in <db> & co as root**"),
        "{content}"
    );
    assert_eq!(v["allowed_mentions"], json!({"parse": []}));

    // ntfy publish: plain body, Title/Priority/Tags headers, bearer token.
    let p = got(&ntfy);
    assert_eq!(p.path, "/alerts");
    assert_eq!(p.body_str(), m.text);
    assert_eq!(
        p.header("Title"),
        Some("[node-3] shell in <db> & co as root")
    );
    assert_eq!(p.header("Priority"), Some("4"));
    let tags: Vec<&str> = p.header("Tags").unwrap_or("").split(',').collect();
    assert!(tags.contains(&"dockwarden.exec"), "{tags:?}");
    assert_eq!(p.header("Authorization"), Some("Bearer tk_abc"));

    // Gotify: POST /message with X-Gotify-Key, {"title","message","priority"}.
    let q = got(&gotify);
    assert_eq!(q.path, "/message");
    assert_eq!(q.header("X-Gotify-Key"), Some("AppToken1"));
    let v = q.json();
    assert_eq!(v["title"], "[node-3] shell in <db> & co as root");
    assert_eq!(v["message"], m.text.as_str());
    assert!(v["priority"].is_u64(), "{v}");
    assert_eq!(v["priority"], 8);

    // Webhook: every field.
    let h = got(&hook);
    assert_eq!(h.header("X-Team"), Some("infra"));
    let v = h.json();
    for k in [
        "id",
        "time",
        "host",
        "key",
        "severity",
        "title",
        "text",
        "container",
        "fields",
    ] {
        assert!(v.get(k).is_some(), "webhook body lacks {k}: {v}");
    }
    assert_eq!(v["time"], "2023-11-14T22:13:20.000000001Z");
    assert_eq!(v["severity"], "high");
    assert_eq!(v["host"], HOST);
    assert_eq!(
        v["container"],
        json!({"id": "c1", "name": "web-2", "image": "nginx:1.25"})
    );
    assert_eq!(v["fields"]["attempt"], 1);

    for r in [&slack, &discord, &ntfy, &gotify, &hook] {
        assert_eq!(r.requests()[0].header("Idempotency-Key"), Some("m-1"));
    }
    notifier.close(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_never_blocks_send_nor_delays_another_target() {
    let dir = TempDir::new("notify-dead");
    let dead = Receiver::start();
    // Accepts, reads, never answers in time.
    dead.set_default(Reply::status(200).delay(Duration::from_secs(30)));
    let live = Receiver::start();
    let mut d = target("dead", Kind::Webhook, &dead.url("/"));
    d.timeout = Duration::from_secs(5);
    d.queue = 100;
    let cfg = config(vec![d, target("live", Kind::Webhook, &live.url("/"))]);
    let (notifier, metrics) = start(&cfg, &dir);
    let h = notifier.handle();
    h.send("dead", msg(0));
    tokio::time::sleep(Duration::from_millis(100)).await; // its request hangs now

    let began = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 1..300 {
        let t = Instant::now();
        h.send("dead", msg(i));
        if i < 50 {
            h.send("live", msg(i));
        }
        slowest = slowest.max(t.elapsed());
    }
    let all = began.elapsed();
    assert!(
        slowest < Duration::from_millis(50),
        "one send took {slowest:?}"
    );
    assert!(all < Duration::from_millis(500), "349 sends took {all:?}");
    assert_eq!(
        counted(&metrics, "dead", "dropped"),
        200.0,
        "queue of 100 is full"
    );

    assert!(
        eventually(Duration::from_secs(2), || live.count() >= 49).await,
        "the live target got {} of 49 while the dead one hangs",
        live.count()
    );
    assert_eq!(ids(&live.requests()), expected_ids(1..50));
    assert_eq!(dead.count(), 1, "still waiting on the first");
    let closing = Instant::now();
    notifier.close(Duration::from_millis(300)).await;
    assert!(
        closing.elapsed() < Duration::from_secs(1),
        "close is bounded by its grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_4xx_is_not_retried() {
    let dir = TempDir::new("notify-4xx");
    let r = Receiver::start();
    r.script([
        Reply::status(400).body("invalid_payload"),
        Reply::status(404).body("no_service"),
    ]);
    let (notifier, metrics) = start(
        &config(vec![target("ops", Kind::Slack, &r.url("/s"))]),
        &dir,
    );
    for i in 0..3 {
        notifier.handle().send("ops", msg(i));
    }
    assert!(eventually(Duration::from_secs(3), || r.count() >= 3).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys: Vec<Option<String>> = r
        .requests()
        .iter()
        .map(|q| q.header("Idempotency-Key").map(str::to_owned))
        .collect();
    assert_eq!(
        keys,
        [Some("m-0".into()), Some("m-1".into()), Some("m-2".into())],
        "each once: the refused ones are not retried"
    );
    assert_eq!(counted(&metrics, "ops", "failed"), 2.0);
    assert_eq!(counted(&metrics, "ops", "sent"), 1.0);
    assert_eq!(counted(&metrics, "ops", "retried"), 0.0);
    notifier.close(Duration::from_secs(1)).await;
}

/// A message for a target the process has no sender for is lost: it is
/// counted as dropped, under one fixed label rather than under its name
/// (which comes from outside the configuration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_a_target_without_a_sender_is_counted_as_dropped() {
    let dir = TempDir::new("notify-unknown");
    let r = Receiver::start();
    let (notifier, metrics) = start(
        &config(vec![target("ops", Kind::Webhook, &r.url("/"))]),
        &dir,
    );
    notifier.handle().send("added-since", msg(1));
    notifier.handle().send("added-since", msg(2));
    notifier.handle().send("ops", msg(3));
    assert!(
        eventually(Duration::from_secs(3), || counted(&metrics, "ops", "sent")
            == 1.0)
        .await
    );
    assert_eq!(counted(&metrics, "(unknown)", "dropped"), 2.0);
    assert_eq!(counted(&metrics, "ops", "dropped"), 0.0);
    let rendered = metrics.render();
    assert!(!rendered.contains("added-since"), "{rendered}");
    assert_eq!(ids(&r.requests()), ["m-3"]);
    notifier.close(Duration::from_secs(1)).await;
}

#[test]
fn a_hangup_is_a_network_error_and_retried() {
    let dir = TempDir::new("notify-hangup");
    let r = Receiver::start();
    r.script([Step::Hangup, Step::Refuse(Duration::from_millis(300))]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (notifier, metrics) = start(
            &config(vec![target("ops", Kind::Webhook, &r.url("/"))]),
            &dir,
        );
        notifier.handle().send("ops", msg(3));
        assert!(
            eventually(Duration::from_secs(5), || counted(&metrics, "ops", "sent")
                == 1.0)
            .await
        );
        assert!(counted(&metrics, "ops", "retried") >= 2.0);
        assert!(ids(&r.requests()).iter().all(|i| i == "m-3"));
        notifier.close(Duration::from_secs(1)).await;
    });
}

fn rules_file(dir: &TempDir, body: &str) -> std::path::PathBuf {
    let p = dir.path().join("rules.toml");
    std::fs::write(&p, body).expect("write rules");
    p
}

fn notify_test(rules: &std::path::Path, targets: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dockwarden"));
    cmd.args(["notify", "test", "--rules"])
        .arg(rules)
        .args(targets);
    common::run_with_timeout(cmd, Duration::from_secs(30)).expect("notify test ran")
}

#[test]
fn notify_test_against_a_live_receiver_exits_0() {
    let dir = TempDir::new("notify-cli-ok");
    let hook = Receiver::start();
    let ntfy = Receiver::start();
    let rules = rules_file(
        &dir,
        &format!(
            "[audit]\nhost = \"cli-host\"\n\n[notify.targets.ops]\nkind = \"webhook\"\nurl = \"{}\"\n\n[notify.targets.phone]\nkind = \"ntfy\"\nurl = \"{}\"\n",
            hook.url("/hook"),
            ntfy.url("/topic")
        ),
    );
    let out = notify_test(&rules, &["ops", "phone"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ops: HTTP 200") && stdout.contains("phone: HTTP 200"),
        "{stdout}"
    );
    let v: Value = hook.requests()[0].json();
    assert_eq!(v["key"], "dockwarden.test");
    assert_eq!(v["host"], "cli-host");
    assert_eq!(
        ntfy.requests()[0].header("Title"),
        Some("[cli-host] dockwarden test")
    );
}

#[test]
fn notify_test_against_a_dead_port_exits_1_with_the_reason() {
    let dir = TempDir::new("notify-cli-dead");
    let dead = Receiver::start_down();
    let refusing = Receiver::start();
    refusing.set_default(Reply::status(403).body("bad token"));
    let rules = rules_file(
        &dir,
        &format!(
            "[notify.targets.ops]\nkind = \"slack\"\nurl = \"{}\"\n\n[notify.targets.no]\nkind = \"discord\"\nurl = \"{}\"\n",
            dead.url("/services/SECRET123"),
            refusing.url("/x")
        ),
    );
    let out = notify_test(&rules, &["ops", "no", "nope"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let port = dead.addr().port();
    let ops = stdout
        .lines()
        .find(|l| l.starts_with("ops: "))
        .expect("a line for ops");
    assert!(
        ops.starts_with(&format!("ops: failed: cannot connect to 127.0.0.1:{port}"))
            && ops.to_lowercase().contains("refused"),
        "{ops}"
    );
    assert!(stdout.contains("no: HTTP 403 (not 2xx)"), "{stdout}");
    assert!(
        stdout.contains("nope: failed: no target \"nope\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("SECRET123"),
        "the URL's path is a secret: {stdout}"
    );

    let bad = rules_file(&dir, "[notify.targets.x]\nkind = \"pager\"\n");
    let out = notify_test(&bad, &["x"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rules.toml:2:8: `kind`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_after_n_failures_and_probes_once_per_cooldown() {
    let dir = TempDir::new("notify-breaker");
    let r = Receiver::start();
    r.set_default(Reply::status(500));
    let mut t = target("ops", Kind::Webhook, &r.url("/"));
    t.breaker_cooldown = Duration::from_millis(500);
    let (notifier, metrics) = start(&config(vec![t]), &dir);
    notifier.handle().send("ops", msg(1));
    notifier.handle().send("ops", msg(2));
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let reqs = r.requests();
    assert!((4..=7).contains(&reqs.len()), "{} attempts", reqs.len());
    for (i, pair) in reqs.windows(2).enumerate().skip(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(480),
            "probe {i} came {gap:?} after the last"
        );
    }
    assert!(
        ids(&reqs).iter().all(|i| i == "m-1"),
        "m-2 waits behind m-1"
    );
    assert_eq!(
        gauge(&metrics, "dockwarden_notification_breaker_open", "ops"),
        1.0
    );
    assert_eq!(gauge(&metrics, "dockwarden_notification_queue", "ops"), 2.0);

    r.set_default(Reply::status(200));
    assert!(
        eventually(Duration::from_secs(2), || counted(&metrics, "ops", "sent")
            == 2.0)
        .await
    );
    assert_eq!(
        gauge(&metrics, "dockwarden_notification_breaker_open", "ops"),
        0.0
    );
    notifier.close(Duration::from_secs(1)).await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `body` on a one-thread runtime, so the senders log through this
/// thread's subscriber, and returns what was logged (DEBUG and up).
fn logged(body: impl std::future::Future<Output = ()>) -> String {
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(body);
    String::from_utf8_lossy(&buf.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

#[test]
fn logs_name_the_target_and_host_never_the_url_or_token() {
    let dir = TempDir::new("notify-logs");
    let failing = Receiver::start();
    failing.script([Reply::status(500), Reply::status(400).body("bad")]);
    let dead = Receiver::start_down();
    let logs = logged(async {
        let mut n = target("phone", Kind::Ntfy, &failing.url("/SECRET-topic"));
        n.token = Some(Secret::new("SECRET-token"));
        let cfg = config(vec![
            n,
            target("gone", Kind::Slack, &dead.url("/services/SECRET-hook")),
        ]);
        let (notifier, metrics) = start(&cfg, &dir);
        notifier.handle().send("phone", msg(1));
        notifier.handle().send("gone", msg(2));
        assert!(
            eventually(Duration::from_secs(3), || {
                counted(&metrics, "phone", "failed") == 1.0
                    && counted(&metrics, "gone", "retried") >= 3.0
            })
            .await
        );
        notifier.close(Duration::from_millis(200)).await;
    });
    assert!(!logs.contains("SECRET"), "{logs}");
    assert!(
        logs.contains("target_name=\"phone\"") || logs.contains("target_name=phone"),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("127.0.0.1:{}", dead.addr().port())),
        "{logs}"
    );
    assert!(
        logs.contains("HTTP 400") && logs.contains("bad"),
        "status and body start: {logs}"
    );
    assert!(
        logs.contains("pausing it"),
        "the breaker opening is logged: {logs}"
    );
}

/// Receivers echo what they were sent in their error pages: Express
/// answers an unknown route with "Cannot POST /hooks/<key>". The excerpt
/// of the body that is logged has the URL's path and query, and the
/// token, replaced, also where one starts inside the bytes kept and ends
/// beyond them, and a part of the path echoed alone or escaped for HTML.
#[test]
fn an_answer_echoing_the_secret_path_query_or_token_is_logged_redacted() {
    let dir = TempDir::new("notify-echo");
    let r = Receiver::start();
    let (path, query, token) = ("/hooks/SECRET-path", "key=SECRET-query&x=y", "SECRET-token");
    let express = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot POST {path}?{query}</pre>\n</body>\n</html>\n"
    );
    let straddling = format!("{}{token} is not a valid token", "x".repeat(195));
    let partial = "no topic SECRET-path, try &lt;key=SECRET-query&amp;x=y&gt;";
    r.script([
        Reply::status(404).body(&express),
        Reply::status(401).body(&straddling),
        Reply::status(403).body(partial),
    ]);
    let logs = logged(async {
        let mut t = target("phone", Kind::Ntfy, &r.url(&format!("{path}?{query}")));
        t.token = Some(Secret::new(token));
        let (notifier, metrics) = start(&config(vec![t]), &dir);
        notifier.handle().send("phone", msg(1));
        notifier.handle().send("phone", msg(2));
        notifier.handle().send("phone", msg(3));
        assert!(
            eventually(Duration::from_secs(3), || counted(
                &metrics, "phone", "failed"
            ) == 3.0)
            .await
        );
        notifier.close(Duration::from_millis(200)).await;
    });
    assert!(!logs.contains("SECR"), "{logs}");
    assert!(
        logs.contains("HTTP 404") && logs.contains("Cannot POST [redacted]?[redacted]</pre>"),
        "{logs}"
    );
    assert!(
        logs.contains("HTTP 401") && logs.contains("xxxxx[reda"),
        "{logs}"
    );
    assert!(
        logs.contains("HTTP 403") && logs.contains("no topic [redacted], try &lt;[redacted]&gt;"),
        "{logs}"
    );
}
