//! How fast dockwarden reacts to a crash: from reading a `die` off the event
//! stream to issuing the restart call, over a real crash loop on the real
//! engine, beside the engine's own timings measured in the same run.
//!
//!     cargo bench --bench heal_reaction            # 60 crashes
//!     HEAL_BENCH_CRASHES=200 cargo bench --bench heal_reaction
//!
//! It heals the crash loop twice: plainly, and with each restart notified
//! to a target that never answers (delivery must not slow healing).
//!
//! Needs the engine and the test image, like `scripts/test`. Prints
//! percentiles and exits 1 if dockwarden's p99 is above 5 ms.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{
    Cleanup, Dockwarden, docker_ok, now_unix, require_docker, require_test_image, test_image,
    unique, wait_until,
};

const TARGET_P99_MS: f64 = 5.0;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(label: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let p99 = percentile(&ms, 99.0);
    println!(
        "{label:<52} n={:<4} p50={:>8.3} p90={:>8.3} p99={:>8.3} max={:>8.3} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 90.0),
        p99,
        ms.last().copied().unwrap_or(f64::NAN)
    );
    p99
}

/// die → next start gaps (ms) of the container called `name`.
fn die_to_start_ms(name: &str, since: f64) -> Vec<f64> {
    common::die_to_start_secs(&common::container_history(name, since))
        .into_iter()
        .map(|s| s * 1000.0)
        .collect()
}

/// One dockwarden healing a crash loop of `crashes` restarts, with `extra`
/// rules beside the restart rule; its reactions and the engine's die →
/// start gaps, in ms.
fn heal_pass(clean: &Cleanup, image: &str, crashes: usize, extra: &str) -> (Vec<f64>, Vec<f64>) {
    let rules = format!(
        r#"
[[rule]]
name = "bench"
on = ["container.die"]
handler = "restart"
[rule.match]
labels = {{ "dwt.heal" = "true" }}
exit_code = "nonzero"
[rule.with]
backoff_initial_ms = 0
max_restarts = 1000
window_secs = 1
{extra}"#
    );
    let mut dw = Dockwarden::start_with(&rules, &[], &[("RUST_LOG", "info")]);
    dw.wait_ready(Duration::from_secs(20));
    let since = now_unix();
    let healed = unique("bench-heal");
    clean.container(healed.clone());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &healed,
        "--label",
        "dwt.heal=true",
        image,
        "sh",
        "-c",
        "sleep 0.2; exit 3",
    ]);
    let done = wait_until(Duration::from_secs(600), || {
        dw.metrics().get(
            "dockwarden_container_restarts_total",
            &[("name", healed.as_str())],
        ) >= crashes as f64
    });
    docker_ok(&["rm", "-f", &healed]);
    assert!(done, "fewer than {crashes} restarts within 10 minutes");
    let reaction: Vec<f64> = dw
        .log()
        .lines()
        .filter(|l| l.contains("Restarted") && l.contains(&healed))
        .filter_map(|l| l.split("reaction_us=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    let gaps = die_to_start_ms(&healed, since);
    dw.sigterm();
    dw.wait_exit(Duration::from_secs(15));
    (reaction, gaps)
}

fn main() {
    require_docker();
    require_test_image();
    let crashes: usize = std::env::var("HEAL_BENCH_CRASHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
        .max(50);
    let clean = Cleanup::new();
    let image = test_image();

    // dockwarden healing a crash loop, with no backoff so only its own
    // reaction is measured.
    let (reaction, healed_gaps) = heal_pass(&clean, &image, crashes, "");
    // The same, with every restart notified to a target that accepts
    // connections and never answers: delivery must not slow healing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a dead target");
    let dead_url = format!("http://{}/hook", dead.local_addr().expect("its address"));
    let notify = format!(
        r#"
[notify.targets.dead]
kind = "webhook"
url = "{dead_url}"
timeout_secs = 30

[[rule]]
name = "tell"
on = ["dockwarden.restart"]
handler = "notify"
[rule.with]
target = "dead"
"#
    );
    let (reaction_dead, _) = heal_pass(&clean, &image, crashes, &notify);
    drop(dead);

    // The engine's own restart manager on the same crash loop.
    let since_policy = now_unix();
    let policy = unique("bench-policy");
    clean.container(policy.clone());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &policy,
        "--restart",
        "always",
        &image,
        "sh",
        "-c",
        "sleep 0.2; exit 3",
    ]);
    wait_until(Duration::from_secs(30), || {
        die_to_start_ms(&policy, since_policy).len() >= 5
    });
    docker_ok(&["rm", "-f", &policy]);
    let policy_gaps = die_to_start_ms(&policy, since_policy);

    println!(
        "heal_reaction: {crashes} crashes of `sh -c 'sleep 0.2; exit 3'`, engine and dockwarden in one run"
    );
    let p99 = summary("dockwarden: die read -> restart call issued", reaction);
    let p99_dead = summary(
        "the same, each restart notified to a dead target",
        reaction_dead,
    );
    summary("engine: die -> start, restarted by dockwarden", healed_gaps);
    summary(
        "engine: die -> start, restarted by --restart always",
        policy_gaps.clone(),
    );
    println!(
        "  (Docker's own restart manager waits 100 ms, doubling, before each restart: {:?} ms)",
        policy_gaps
            .iter()
            .map(|g| g.round() as i64)
            .collect::<Vec<_>>()
    );
    println!(
        "  (a target that never answers: p99 ratio {:.2} to the run without it)",
        p99_dead / p99
    );
    if p99 <= TARGET_P99_MS && p99_dead <= TARGET_P99_MS {
        println!("heal_reaction: p99 {p99:.3} ms <= {TARGET_P99_MS} ms target: ok");
    } else {
        println!(
            "heal_reaction: p99 {p99:.3} ms (with a dead target {p99_dead:.3} ms) > {TARGET_P99_MS} ms target: FAILED"
        );
        std::process::exit(1);
    }
}
