//! Containers that follow a healed one, against the real engine: a
//! container in another's network namespace (`--network container:X`) is
//! restarted after X is restarted and recreated into the new X after X is
//! recreated, and shares its namespace again each time; a chain of
//! `dockwarden.depends_on` labels restarts level by level, once each; a
//! cycle is logged and not followed.

mod common;

use std::time::Duration;

use common::{Cleanup, Dockwarden, docker_ok, inspect, test_image, unique, wait_until};

/// Heals a crash of containers labelled `dwt.dep=<tag>`, once.
fn rules(tag: &str) -> String {
    format!(
        r#"
[[rule]]
name = "heal-dep"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.dep" = "{tag}" }}
[rule.with]
max_restarts = 3
then = "none"
backoff_initial_ms = 0
stop_timeout_secs = 1
"#
    )
}

/// Runs until `/tmp/crash` appears, then removes it and exits 3.
const CRASH_ON_DEMAND: &str =
    "while [ ! -f /tmp/crash ]; do sleep 0.2; done; rm /tmp/crash; exit 3";

fn run(name: &str, args: &[&str], cmd: &str) {
    let image = test_image();
    let mut all = vec!["run", "-d", "--name", name];
    all.extend_from_slice(args);
    all.extend([image.as_str(), "sh", "-c", cmd]);
    docker_ok(&all);
}

fn crash(name: &str) {
    docker_ok(&["exec", name, "touch", "/tmp/crash"]);
}

/// The `inet` lines of `ip -4 addr` inside `name`: its interfaces and
/// addresses.
fn addresses(name: &str) -> Vec<String> {
    docker_ok(&["exec", name, "ip", "-4", "-o", "addr"])
        .lines()
        .map(|l| {
            // "2: eth0    inet 172.17.0.2/16 ..." → "eth0 172.17.0.2/16"
            let w: Vec<&str> = l.split_whitespace().collect();
            format!(
                "{} {}",
                w.get(1).copied().unwrap_or(""),
                w.get(3).copied().unwrap_or("")
            )
        })
        .collect()
}

/// dockwarden's own restart/recreate events with `cause`, as counted.
fn caused(dw: &Dockwarden, needle: &str) -> Vec<String> {
    dw.log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Acceptance 4: Y in X's namespace follows X's restart (restarted) and
/// X's recreate (recreated pointing at the new X), and shares X's
/// interfaces and address afterwards.
#[test]
fn a_namespace_sharer_follows_a_restart_and_a_recreate() {
    let clean = Cleanup::for_engine_test();
    let tag = unique("netns");
    let mut dw = Dockwarden::start(&rules(&tag));
    dw.wait_ready(Duration::from_secs(20));
    let label = format!("dwt.dep={tag}");
    let x = clean.container(unique("ns-x"));
    let y = clean.container(unique("ns-y"));
    run(&x, &["--label", &label], CRASH_ON_DEMAND);
    let netns = format!("container:{x}");
    run(&y, &["--network", &netns], "sleep 600");
    let before = addresses(&x);
    assert!(
        before.iter().any(|a| a.starts_with("eth0 ")),
        "X has a network: {before:?}"
    );
    assert_eq!(addresses(&y), before, "Y shares X's namespace");
    let y_started = inspect(&y)["State"]["StartedAt"].clone();

    crash(&x);
    assert!(
        wait_until(
            Duration::from_secs(60),
            || inspect(&y)["State"]["StartedAt"] != y_started
                && inspect(&y)["State"]["Running"] == true
        ),
        "Y was not restarted after X:\n{}",
        dw.log()
    );
    assert_eq!(inspect(&x)["State"]["Running"], true);
    let after = addresses(&x);
    assert!(after.iter().any(|a| a.starts_with("eth0 ")), "{after:?}");
    assert_eq!(addresses(&y), after, "Y shares the restarted X's namespace");
    let restarted = format!("Restarted {y}.");
    assert!(
        wait_until(Duration::from_secs(10), || caused(&dw, &restarted).len()
            == 1),
        "{}",
        dw.log()
    );
    assert_eq!(
        dw.metrics().get(
            "dockwarden_events_total",
            &[("type", "dockwarden"), ("action", "restart")]
        ),
        2.0,
        "X's restart and Y's"
    );

    // A recreate: X2 is labelled to be recreated.
    let x2 = clean.container(unique("ns-x2"));
    let y2 = clean.container(unique("ns-y2"));
    run(
        &x2,
        &["--label", &label, "--label", "dockwarden.action=recreate"],
        CRASH_ON_DEMAND,
    );
    run(&y2, &["--network", &format!("container:{x2}")], "sleep 600");
    let old_x2 = inspect(&x2)["Id"].as_str().unwrap_or_default().to_owned();
    let old_y2 = inspect(&y2)["Id"].as_str().unwrap_or_default().to_owned();
    crash(&x2);
    let new_id = |name: &str, old: &str| {
        let i = inspect(name);
        i["Id"].as_str().filter(|id| *id != old).map(str::to_owned)
    };
    assert!(
        wait_until(Duration::from_secs(60), || new_id(&y2, &old_y2).is_some()
            && inspect(&y2)["State"]["Running"] == true),
        "Y2 was not recreated after X2:\n{}",
        dw.log()
    );
    let Some(new_x2) = new_id(&x2, &old_x2) else {
        panic!("X2 was not recreated:\n{}", dw.log());
    };
    assert_eq!(
        inspect(&y2)["HostConfig"]["NetworkMode"],
        format!("container:{new_x2}"),
        "Y2 points at the new X2"
    );
    let x2_addresses = addresses(&x2);
    assert!(x2_addresses.iter().any(|a| a.starts_with("eth0 ")));
    assert_eq!(
        addresses(&y2),
        x2_addresses,
        "Y2 shares the new X2's namespace"
    );
    let recreated = format!("Recreated {y2}: new container");
    assert!(
        wait_until(Duration::from_secs(10), || caused(&dw, &recreated).len()
            == 1),
        "{}",
        dw.log()
    );
    // The old containers are gone, none left aside.
    let leftovers = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        "name=-dwold-",
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        !leftovers.contains(&x2) && !leftovers.contains(&y2),
        "{leftovers}"
    );
}

/// Acceptance 5: a chain c → b → a restarts b then c, once each, after a
/// is healed; a cycle p ↔ q is logged and not followed.
#[test]
fn depends_on_chains_restart_in_order_and_cycles_stop() {
    let clean = Cleanup::for_engine_test();
    let tag = unique("chain");
    let mut dw = Dockwarden::start(&rules(&tag));
    dw.wait_ready(Duration::from_secs(20));
    let label = format!("dwt.dep={tag}");
    let a = clean.container(unique("ch-a"));
    let b = clean.container(unique("ch-b"));
    let c = clean.container(unique("ch-c"));
    run(&a, &["--label", &label], CRASH_ON_DEMAND);
    let on_a = format!("dockwarden.depends_on={a}");
    let on_b = format!("dockwarden.depends_on={b}");
    run(&b, &["--label", &on_a], "sleep 600");
    run(&c, &["--label", &on_b], "sleep 600");
    let started = |n: &str| inspect(n)["State"]["StartedAt"].clone();
    let (b0, c0) = (started(&b), started(&c));
    crash(&a);
    assert!(
        wait_until(Duration::from_secs(60), || started(&b) != b0
            && started(&c) != c0),
        "b and c were not restarted:\n{}",
        dw.log()
    );
    // Settle, then count: once each, b before c.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(inspect(&b)["RestartCount"], 0);
    let log = dw.log();
    let b_line = log.find(&format!("Restarted {b}."));
    let c_line = log.find(&format!("Restarted {c}."));
    assert!(
        matches!((b_line, c_line), (Some(x), Some(y)) if x < y),
        "b is restarted before c:\n{log}"
    );
    assert_eq!(log.matches(&format!("Restarted {b}.")).count(), 1, "{log}");
    assert_eq!(log.matches(&format!("Restarted {c}.")).count(), 1, "{log}");
    assert_eq!(log.matches(&format!("Restarted {a}.")).count(), 1, "{log}");
    assert!(
        log.contains(&format!("cause=depends on {a}")) || log.contains(&format!("depends on {a}")),
        "{log}"
    );

    // A cycle: p (healed) ↔ q.
    let p = clean.container(unique("cy-p"));
    let q = clean.container(unique("cy-q"));
    let on_q = format!("dockwarden.depends_on={q}");
    let on_p = format!("dockwarden.depends_on={p}");
    run(&p, &["--label", &label, "--label", &on_q], CRASH_ON_DEMAND);
    run(&q, &["--label", &on_p], "sleep 600");
    let q0 = started(&q);
    crash(&p);
    assert!(
        wait_until(Duration::from_secs(60), || started(&q) != q0),
        "q was not restarted:\n{}",
        dw.log()
    );
    let cycle = format!("Dependency cycle: {p} → {q} → {p}; not followed.");
    assert!(
        wait_until(Duration::from_secs(10), || dw.log().contains(&cycle)),
        "{}",
        dw.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let log = dw.log();
    assert_eq!(log.matches(&format!("Restarted {p}.")).count(), 1, "{log}");
    assert_eq!(log.matches(&format!("Restarted {q}.")).count(), 1, "{log}");
    assert_eq!(inspect(&p)["State"]["Running"], true);
}
