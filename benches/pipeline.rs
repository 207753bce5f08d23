//! The whole binary, side by side with the cheapest consumers of the event
//! stream there are (issue 15 §2), and with the floor the default rules'
//! engine reads set: each consumer is its own process, against
//! its own in-process replay server on a unix socket that speaks like dockerd
//! 20.10 (its headers, one HTTP chunk per event) and streams events of real
//! API 1.41 shapes (container create/start/die/destroy, exec_create/
//! exec_start/exec_die, health_status, network connect/disconnect, volume
//! mount/unmount, image pull; compose labels; a pool of containers; unique
//! times, so nothing is deduplicated). It answers `/_ping`, `/version`,
//! `/containers/json`, `/containers/{id}/json` and `/exec/{id}/json` too,
//! so dockwarden starts, resyncs and handles as it would against an engine.
//!
//! The consumers, in turn (one at a time: fairer on a small machine), and
//! the whole round again (`PIPELINE_ROUNDS`) so noise shows:
//! - `bollard`: a bare bollard `events()` loop counting by `type.action` in a
//!   HashMap (this binary again, `PIPELINE_ROLE=bollard`, on a current-thread
//!   tokio runtime and the system allocator);
//! - `bollard-reads`: the same loop making the engine reads the default
//!   rules cannot do without (an exec inspect per `exec_start`, a container
//!   inspect per `create`), each awaited in turn, and nothing else: a floor
//!   under any consumer that verifies execs as dockwarden's audit does;
//! - `docker`: `docker events --format '{{json .}}'`, its lines counted
//!   through a pipe (skipped, with a note, without the CLI);
//! - `dockwarden`: the binary with `rules/default.toml` (its audit log moved
//!   into the run's temp dir), `--dry-run`, `RUST_LOG=info`, logs to a file;
//! - `nomatch`: the binary with one rule on a key no event has;
//! - then dockwarden with the default rules at an offered rate for a time:
//!   what it has not read 100 ms after the last event was due is never
//!   delivered (dockerd drops a send that waits longer), and counts against
//!   the target.
//!
//! For each: events/s (wall: from the first event written to the last one
//! consumed), CPU seconds per million events (utime + stime of the process
//! from `/proc/<pid>/stat`, from when the events start until dockwarden's
//! handlers are done; startup excluded), peak RSS (`VmHWM`, read while it
//! still runs; with the most `RssAnon` a poll saw: the process's own
//! memory, as against the pages of its code), and events dropped (dockwarden's
//! `dockwarden_events_dropped_total`; for the others, offered minus
//! counted). dockwarden has consumed everything when the sum of
//! `dockwarden_events_total` over every type but its own `dockwarden`
//! reaches the number delivered (an event is counted when read, also when
//! it is then dropped); "handlers done" is when its CPU goes quiet
//! afterwards. The notes say when the stream went unread for over 100 ms
//! and how much CPU this process (the server) used meanwhile. Then the
//! targets of issue 15 §3 as PASS/FAIL lines (SKIP for those not measured);
//! exits 1 if one it measured fails.
//!
//!     cargo bench --bench pipeline                      # a minute or two
//!     PIPELINE_EVENTS=1000000 PIPELINE_ROUNDS=3 cargo bench --bench pipeline
//!     PIPELINE_FLAT=1 cargo bench --bench pipeline      # + 10 M events (long)
//!     PIPELINE_IDLE_SECS=600 PIPELINE_ENGINE_LOCK=FILE \
//!         cargo bench --bench pipeline                  # + idle vs the real engine
//!
//! - `PIPELINE_EVENTS` (100000): events per as-fast-as-it-can run.
//! - `PIPELINE_RATE` (100000) and `PIPELINE_SECS` (10): the offered rate
//!   (events/s, paced in 1 ms batches) and duration of dockwarden's paced
//!   run, in every round; `PIPELINE_RATE=0` skips it.
//! - `PIPELINE_ROUNDS` (2): how many times every run is repeated.
//! - `PIPELINE_CONSUMERS` (`bollard,bollard-reads,docker,dockwarden,nomatch`):
//!   which run.
//! - `PIPELINE_CONTAINERS` (300): the pool of containers the events are about.
//! - `PIPELINE_FLAT=1`: also stream `PIPELINE_FLAT_EVENTS` (10000000) events
//!   to dockwarden (default rules, as fast as it can, or offered at
//!   `PIPELINE_FLAT_RATE` events/s) and read its VmRSS as it passes 1 M and
//!   at the end. As fast as it can, most events are dropped, and the execs
//!   whose ends were dropped fill exec_audit's table of open execs (10 000).
//! - `PIPELINE_IDLE_SECS` (off; the issue says 600): also run dockwarden
//!   (default rules, `--dry-run`) idle against the real engine (`DOCKER_HOST`,
//!   else `/var/run/docker.sock`) that long, then read its RSS and the CPU it
//!   used meanwhile. With `PIPELINE_ENGINE_LOCK=FILE` it holds an exclusive
//!   flock on FILE meanwhile (the lock engine tests take, if any).
//! - `PIPELINE_BIN` (this build's): the dockwarden binary every dockwarden
//!   run starts, e.g. the static one `scripts/image` puts in the image,
//!   `target/x86_64-unknown-linux-musl/dist/dockwarden` (what ships: it maps
//!   less code than `--release`, so its RSS is lower).
//! - `PIPELINE_IDLE_BIN` (`PIPELINE_BIN`): the binary of the idle run alone.
//! - `PIPELINE_SERVER_THREADS` (1): the replay server's tokio workers.
//! - `PIPELINE_KEEP=1`: keep the temp dir (each consumer's log, dockwarden's
//!   rules and audit log); it is kept anyway when a run fails.
//!
//! MB are 10^6 bytes. CPU ticks are converted with `getconf CLK_TCK` (100 is
//! assumed, and said, if it cannot be run). The server shares the machine's
//! cores with the consumer it serves.

// A bench target's root is benches/pipeline.rs: its modules live beside it.
#[path = "pipeline/answers.rs"]
mod answers;
#[path = "pipeline/bollard.rs"]
mod bollard;
#[path = "pipeline/consumer.rs"]
mod consumer;
#[path = "pipeline/idle.rs"]
mod idle;
#[path = "pipeline/ids.rs"]
mod ids;
#[path = "pipeline/procfs.rs"]
mod procfs;
#[path = "pipeline/report.rs"]
mod report;
#[path = "pipeline/server.rs"]
mod server;
#[path = "pipeline/shapes.rs"]
mod shapes;
#[path = "pipeline/sidecar.rs"]
mod sidecar;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use consumer::{Kind, Measure};
use report::Scenario;
use server::Plan;
use shapes::Shapes;

/// What every run shares.
pub struct Bench {
    rt: tokio::runtime::Runtime,
    shapes: Arc<Shapes>,
    clk_tck: f64,
    /// The docker CLI, if there is one.
    docker: Option<PathBuf>,
    tmp: PathBuf,
    runs: Cell<u32>,
    /// The dockwarden binary every dockwarden run starts: this build's, or
    /// `PIPELINE_BIN` (`scripts/image`'s static one, what ships).
    bin: PathBuf,
}

impl Bench {
    /// A new directory for one run, inside the bench's temp dir.
    fn fresh_dir(&self, name: &str) -> PathBuf {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let dir = self.tmp.join(format!("{n}-{name}"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }
}

struct Config {
    events: u64,
    rate: f64,
    secs: f64,
    rounds: u32,
    consumers: Vec<Kind>,
    pool: usize,
    flat: Option<u64>,
    /// The flat run's offered rate (events/s); None: as fast as it can.
    flat_rate: Option<f64>,
    idle: Option<u64>,
    idle_bin: PathBuf,
    lock: Option<PathBuf>,
    keep: bool,
}

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn flag(key: &str) -> bool {
    std::env::var(key).is_ok_and(|v| !v.is_empty() && v != "0")
}

impl Config {
    fn from_env() -> Config {
        let consumers = std::env::var("PIPELINE_CONSUMERS")
            .unwrap_or_else(|_| "bollard,bollard-reads,docker,dockwarden,nomatch".into())
            .split(',')
            .map(|c| match c.trim() {
                "bollard" => Kind::Bollard,
                "bollard-reads" => Kind::BollardReads,
                "docker" => Kind::Docker,
                "dockwarden" => Kind::Dockwarden,
                "nomatch" => Kind::NoMatch,
                other => panic!(
                    "PIPELINE_CONSUMERS: unknown consumer {other:?} (bollard, bollard-reads, docker, dockwarden, nomatch)"
                ),
            })
            .collect();
        let idle: u64 = env("PIPELINE_IDLE_SECS", 0);
        Config {
            events: env("PIPELINE_EVENTS", 100_000),
            rate: env("PIPELINE_RATE", 100_000.0),
            secs: env("PIPELINE_SECS", 10.0),
            rounds: env("PIPELINE_ROUNDS", 2),
            consumers,
            pool: env("PIPELINE_CONTAINERS", 300usize).clamp(1, 65_535),
            flat: flag("PIPELINE_FLAT").then(|| env("PIPELINE_FLAT_EVENTS", 10_000_000)),
            flat_rate: Some(env("PIPELINE_FLAT_RATE", 0.0)).filter(|r| *r > 0.0),
            idle: (idle > 0).then_some(idle),
            idle_bin: std::env::var_os("PIPELINE_IDLE_BIN")
                .or_else(|| std::env::var_os("PIPELINE_BIN"))
                .map_or_else(|| PathBuf::from(sidecar::BIN), PathBuf::from),
            lock: std::env::var_os("PIPELINE_ENGINE_LOCK").map(PathBuf::from),
            keep: flag("PIPELINE_KEEP"),
        }
    }
}

fn docker_cli() -> Option<PathBuf> {
    let ok = Command::new("docker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from("docker"))
}

fn main() -> ExitCode {
    if let Ok(role @ ("bollard" | "bollard-reads")) = std::env::var("PIPELINE_ROLE").as_deref() {
        bollard::role(role == "bollard-reads");
        return ExitCode::SUCCESS;
    }
    // `cargo test --all-targets` runs bench targets too, without `--bench`:
    // no measurement (and no verdict) there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline: a benchmark; run it with `cargo bench --bench pipeline`");
        return ExitCode::SUCCESS;
    }
    let cfg = Config::from_env();
    let (clk_tck, measured) = procfs::clock_ticks();
    let tmp = std::env::temp_dir().join(format!("pipeline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("a temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env("PIPELINE_SERVER_THREADS", 1))
        .enable_all()
        .build()
        .expect("a tokio runtime for the server");
    let bench = Bench {
        rt,
        shapes: Arc::new(Shapes::new(cfg.pool)),
        clk_tck,
        docker: docker_cli(),
        tmp,
        runs: Cell::new(0),
        bin: std::env::var_os("PIPELINE_BIN")
            .map_or_else(|| PathBuf::from(sidecar::BIN), PathBuf::from),
    };
    println!(
        "pipeline: {} events per run, {} rounds, {} containers, paced run {}, {} CPUs, CLK_TCK {clk_tck}{}\ndockwarden: {}",
        cfg.events,
        cfg.rounds,
        cfg.pool,
        if cfg.rate > 0.0 {
            format!("{} events/s for {} s", cfg.rate, cfg.secs)
        } else {
            "off".into()
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if measured {
            ""
        } else {
            " (assumed: getconf failed)"
        },
        bench.bin.display(),
    );

    let mut runs = Runs::default();
    rounds(&bench, &cfg, &mut runs);
    if let Some(n) = cfg.flat {
        let (plan, pace) = match cfg.flat_rate {
            Some(rate) => (
                Plan::paced(rate, n as f64 / rate),
                format!("offered {rate} events/s"),
            ),
            None => (Plan::fast(n), "as fast as it can".to_owned()),
        };
        println!("flat: {n} events to dockwarden (default rules, {pace})");
        let label = format!("{n} events, {pace}, RSS at 1 M and at the end");
        let m = consumer::run(&bench, Kind::Dockwarden, plan, label, &[1_000_000, n]);
        runs.record(m, 0, Scenario::Flat);
    }
    let idle = cfg.idle.and_then(|secs| {
        let bin = &cfg.idle_bin;
        println!(
            "idle: {} against the real engine for {secs} s",
            bin.display()
        );
        idle::run(&bench, bin, secs, cfg.lock.clone())
            .inspect_err(|e| {
                runs.failed = true;
                println!("  FAILED: {e}");
            })
            .ok()
    });

    println!("\n{}", report::table(&runs.rows, idle.as_ref()));
    println!("{}", report::ratios(&runs.rows));
    let verdicts = report::targets(&runs.rows, idle.as_ref(), cfg.rate, cfg.secs);
    for v in &verdicts {
        println!("{}", v.print());
    }
    finish(&bench.tmp, cfg.keep || runs.failed);
    if runs.failed || verdicts.iter().any(|v| v.pass == Some(false)) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Every run so far, and whether one could not be measured.
#[derive(Default)]
struct Runs {
    rows: Vec<Measure>,
    failed: bool,
}

impl Runs {
    /// Keeps a run and prints its line, or prints why it failed.
    fn record(&mut self, result: Result<Measure, String>, round: u32, scenario: Scenario) {
        match result {
            Ok(mut m) => {
                m.round = round;
                m.scenario = scenario;
                println!(
                    "  {}, {}: {} events, {:.0}/s, {:.1} CPU-s per 1M, peak {} kB, dropped {}{}",
                    m.kind.setup(),
                    m.label,
                    m.counted,
                    m.rate(),
                    m.cpu_per_million(),
                    m.peak_rss_kb,
                    m.dropped,
                    server_calls(&m)
                );
                self.rows.push(m);
            }
            Err(e) => {
                self.failed = true;
                println!("  FAILED: {e}");
            }
        }
    }
}

/// Each round: every consumer as fast as it can, then dockwarden at the
/// offered rate.
fn rounds(bench: &Bench, cfg: &Config, runs: &mut Runs) {
    let consumers: Vec<Kind> = cfg
        .consumers
        .iter()
        .copied()
        .filter(|k| *k != Kind::Docker || bench.docker.is_some())
        .collect();
    if consumers.len() < cfg.consumers.len() {
        println!("pipeline: no docker CLI on PATH: `docker events` skipped");
    }
    for round in 1..=cfg.rounds {
        println!("round {round}:");
        for &kind in &consumers {
            let label = format!("round {round}, as fast as it can");
            let m = consumer::run(bench, kind, Plan::fast(cfg.events), label, &[]);
            runs.record(m, round, Scenario::Fast);
        }
        if cfg.rate > 0.0 && consumers.contains(&Kind::Dockwarden) {
            let label = format!(
                "round {round}, offered {} events/s for {} s",
                cfg.rate, cfg.secs
            );
            let plan = Plan::paced(cfg.rate, cfg.secs);
            let m = consumer::run(bench, Kind::Dockwarden, plan, label, &[]);
            runs.record(m, round, Scenario::Paced);
        }
    }
}

/// The engine calls a run made (beyond the stream), for the progress line.
fn server_calls(m: &Measure) -> String {
    if m.kind == Kind::Bollard || m.kind == Kind::Docker {
        return String::new();
    }
    let calls: Vec<String> = m
        .server
        .requests
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect();
    format!(
        "; engine calls: {} on {} connection(s)",
        calls.join(", "),
        m.server.connections
    )
}

fn finish(tmp: &Path, keep: bool) {
    if keep {
        println!("logs kept in {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(tmp);
    }
}
