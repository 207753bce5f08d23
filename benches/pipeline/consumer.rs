//! The consumers, each its own process against its own replay server, and
//! how one run of one consumer is measured:
//!
//! 1. start the server and the consumer; wait until the consumer has the
//!    stream open and its CPU has gone quiet (startup is not measured:
//!    dockwarden lists and inspects every container first);
//! 2. note its CPU ticks, start the events;
//! 3. wait until it has consumed all of them (dockwarden: its `/metrics`;
//!    the bollard loop: the count it prints; `docker events`: lines on its
//!    stdout), then, for dockwarden, until its CPU is quiet again (its
//!    handlers have finished);
//! 4. read its CPU ticks and `VmHWM` while it still runs, then stop it.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::Bench;
use super::bollard::parse_count;
use super::procfs::{cpu_ticks, status_kb, wait_quiet};
use super::report::Scenario;
use super::server::{Plan, Server, Stats};
use super::sidecar::{self, default_rules, free_addr, no_match_rules, scrape};

/// Give up on a consumer that makes no progress for this long.
const STALLED: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// The bench binary itself, `PIPELINE_ROLE=bollard`.
    Bollard,
    /// The same, `PIPELINE_ROLE=bollard-reads`: with the default rules' reads.
    BollardReads,
    /// `docker events --format '{{json .}}'`.
    Docker,
    /// `dockwarden run` with `rules/default.toml`, `--dry-run`.
    Dockwarden,
    /// `dockwarden run` with a rules file that matches nothing.
    NoMatch,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bollard => "bollard",
            Kind::BollardReads => "bollard-reads",
            Kind::Docker => "docker",
            Kind::Dockwarden => "dockwarden",
            Kind::NoMatch => "nomatch",
        }
    }

    pub fn setup(self) -> &'static str {
        match self {
            Kind::Bollard => "bare bollard loop",
            Kind::BollardReads => "bollard loop with the default rules' reads",
            Kind::Docker => "docker events --format '{{json .}}'",
            Kind::Dockwarden => "dockwarden, rules/default.toml, --dry-run",
            Kind::NoMatch => "dockwarden, a rules file matching nothing",
        }
    }

    fn is_bollard(self) -> bool {
        matches!(self, Kind::Bollard | Kind::BollardReads)
    }

    fn is_dockwarden(self) -> bool {
        matches!(self, Kind::Dockwarden | Kind::NoMatch)
    }
}

/// One consumer's run.
pub struct Measure {
    pub kind: Kind,
    /// What the row says beside the consumer (round, rate).
    pub label: String,
    pub round: u32,
    pub scenario: Scenario,
    pub offered: u64,
    /// Written by the server (less than offered when the consumer did not
    /// read fast enough for an offered rate).
    pub delivered: u64,
    pub counted: u64,
    pub dropped: u64,
    /// From the first event written to the last one consumed.
    pub wall: Duration,
    /// After that, until dockwarden's CPU went quiet.
    pub settle: Option<Duration>,
    pub cpu_secs: f64,
    /// CPU of this process meanwhile: the replay server, and the polling.
    pub server_cpu_secs: f64,
    pub peak_rss_kb: u64,
    /// The most `RssAnon` seen at a poll (heap, stacks: what is the
    /// process's own); the rest of RSS is mapped files (its code, libc).
    pub peak_anon_kb: u64,
    /// `(events read, VmRSS kB)` at the points asked for (dockwarden).
    pub rss_at: Vec<(u64, u64)>,
    pub server: Stats,
    /// What went wrong or is worth knowing.
    pub notes: Vec<String>,
}

impl Measure {
    /// CPU seconds per million events consumed.
    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_secs / self.counted.max(1) as f64 * 1e6
    }

    pub fn rate(&self) -> f64 {
        self.counted as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// A started consumer and how to tell its progress.
struct Running {
    child: Child,
    progress: Progress,
    log: PathBuf,
}

enum Progress {
    /// dockwarden's `/metrics`.
    Metrics(SocketAddr),
    /// The count the bollard loop prints.
    Printed(mpsc::Receiver<String>),
    /// Lines counted on the consumer's stdout.
    Lines(Arc<AtomicU64>),
}

/// Runs `kind` against a fresh server streaming `plan`; with dockwarden,
/// its VmRSS is read as it passes each count in `rss_at`.
pub fn run(
    b: &Bench,
    kind: Kind,
    mut plan: Plan,
    label: String,
    rss_at: &[u64],
) -> Result<Measure, String> {
    let dir = b.fresh_dir(kind.name());
    // The bollard loop ends with its stream; the others hold it, as dockerd does.
    plan.close_after = kind.is_bollard();
    let server = Server::start(&b.rt, dir.join("docker.sock"), b.shapes.clone(), plan);
    let host = format!("unix://{}", server.socket.display());
    let mut running = spawn(b, kind, &dir, &host, plan.events)?;
    let pid = running.child.id();
    let result = measure(b, kind, plan, &server, &mut running, label, rss_at);
    stop_child(kind, &mut running.child);
    result
        .map_err(|e| {
            format!(
                "{e}\n--- {} (last lines):\n{}",
                running.log.display(),
                tail(&running.log)
            )
        })
        .map(|mut m| {
            if m.peak_rss_kb == 0 {
                m.notes.push(format!("no VmHWM read for pid {pid}"));
            }
            m
        })
}

fn spawn(b: &Bench, kind: Kind, dir: &Path, host: &str, events: u64) -> Result<Running, String> {
    let log = dir.join(format!("{}.log", kind.name()));
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let (mut cmd, metrics) = match kind {
        Kind::Dockwarden | Kind::NoMatch => {
            let rules = dir.join("rules.toml");
            let audit = dir.join("audit.jsonl");
            let text = if kind == Kind::Dockwarden {
                default_rules(&audit)?
            } else {
                no_match_rules(&audit)
            };
            std::fs::write(&rules, text).map_err(|e| format!("{}: {e}", rules.display()))?;
            let addr = free_addr()?;
            (
                sidecar::command(&b.bin, &rules, addr, dir, log_file)?,
                Some(addr),
            )
        }
        Kind::Bollard | Kind::BollardReads => {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let mut cmd = Command::new(exe);
            cmd.env("PIPELINE_ROLE", kind.name())
                .env("PIPELINE_EXPECT", events.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log_file);
            (cmd, None)
        }
        Kind::Docker => {
            let config = dir.join("docker-config");
            std::fs::create_dir_all(&config).map_err(|e| e.to_string())?;
            let mut cmd = Command::new(b.docker.as_deref().ok_or("no docker CLI")?);
            cmd.args(["events", "--format", "{{json .}}"])
                // Its own empty config: no context or plugin of this machine.
                .env("DOCKER_CONFIG", &config)
                .env_remove("DOCKER_CONTEXT")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log_file);
            (cmd, None)
        }
    };
    cmd.env("DOCKER_HOST", host)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {kind:?}: {e}"))?;
    let progress = match (metrics, kind) {
        (Some(addr), _) => Progress::Metrics(addr),
        (None, k) if k.is_bollard() => {
            let out = child.stdout.take().ok_or("no stdout")?;
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            Progress::Printed(rx)
        }
        (None, _) => {
            let mut out = child.stdout.take().ok_or("no stdout")?;
            let lines = Arc::new(AtomicU64::new(0));
            let count = lines.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    let nl = memchr::memchr_iter(b'\n', &buf[..n]).count();
                    count.fetch_add(nl as u64, Ordering::Relaxed);
                }
            });
            Progress::Lines(lines)
        }
    };
    Ok(Running {
        child,
        progress,
        log,
    })
}

fn measure(
    b: &Bench,
    kind: Kind,
    plan: Plan,
    server: &Server,
    r: &mut Running,
    label: String,
    rss_at: &[u64],
) -> Result<Measure, String> {
    let pid = r.child.id();
    let alive = |r: &mut Running| matches!(r.child.try_wait(), Ok(None));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.connected() {
        if !alive(r) {
            return Err(format!("{kind:?} exited before opening the event stream"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{kind:?} did not open the event stream within 60 s"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    // Startup (for dockwarden: listing and inspecting the pool) is not measured.
    wait_quiet(pid, Duration::from_millis(300), Duration::from_secs(30));
    let base = cpu_ticks(pid).ok_or("cannot read /proc/PID/stat")?;
    let own_base = cpu_ticks(std::process::id()).unwrap_or(0);
    server.go();

    let mut m = Measure {
        kind,
        label,
        round: 0,
        scenario: Scenario::Fast,
        offered: plan.events,
        delivered: 0,
        counted: 0,
        dropped: 0,
        wall: Duration::ZERO,
        settle: None,
        cpu_secs: 0.0,
        server_cpu_secs: 0.0,
        peak_rss_kb: 0,
        peak_anon_kb: 0,
        rss_at: Vec::new(),
        server: Stats::default(),
        notes: Vec::new(),
    };
    let poll = if kind.is_dockwarden() { 100 } else { 10 };
    let mut last_progress = (0u64, Instant::now());
    let mut samples = rss_at.iter().filter(|s| **s <= plan.events).peekable();
    loop {
        // Everything the server will write, once it has stopped.
        let (written, finished) = server.written();
        let all = if finished { written } else { plan.events };
        let (counted, done) = match &r.progress {
            Progress::Metrics(addr) => {
                // A scrape that fails once (a loaded machine) is tried again;
                // one that keeps failing ends as a stall.
                let (read, dropped) = scrape(*addr).unwrap_or((m.counted, m.dropped));
                m.dropped = dropped;
                (read, read >= all)
            }
            Progress::Printed(rx) => match rx.try_recv() {
                Ok(line) => (parse_count(&line)?, true),
                Err(_) => (0, false),
            },
            Progress::Lines(n) => {
                let n = n.load(Ordering::Relaxed);
                (n, n >= all)
            }
        };
        m.counted = m.counted.max(counted);
        while let Some(at) = samples.next_if(|at| m.counted >= **at) {
            m.rss_at.push((*at, status_kb(pid, "VmRSS").unwrap_or(0)));
        }
        m.peak_rss_kb = m.peak_rss_kb.max(status_kb(pid, "VmHWM").unwrap_or(0));
        m.peak_anon_kb = m.peak_anon_kb.max(status_kb(pid, "RssAnon").unwrap_or(0));
        if done {
            break;
        }
        if !alive(r) {
            m.notes.push(format!("exited after {} events", m.counted));
            break;
        }
        // The bollard loop prints only at the end: what the server could
        // write shows that it reads.
        let progress = m.counted.max(written);
        if progress > last_progress.0 {
            last_progress = (progress, Instant::now());
        } else if last_progress.1.elapsed() > STALLED {
            m.notes.push(format!(
                "stalled at {} of {} events for {} s",
                m.counted,
                plan.events,
                STALLED.as_secs()
            ));
            break;
        }
        thread::sleep(Duration::from_millis(poll));
    }
    let done_at = Instant::now();
    if kind.is_dockwarden() {
        // Its handlers may still be working through the queue.
        if !wait_quiet(pid, Duration::from_millis(500), Duration::from_secs(300)) {
            m.notes.push("not quiet within 300 s".into());
        }
        m.settle = Some(done_at.elapsed().saturating_sub(Duration::from_millis(500)));
        if let Progress::Metrics(addr) = &r.progress {
            let (read, dropped) = scrape(*addr)?;
            m.counted = read;
            m.dropped = dropped;
        }
    } else {
        m.dropped = plan.events.saturating_sub(m.counted);
    }
    let ticks = cpu_ticks(pid).unwrap_or(base).saturating_sub(base);
    m.cpu_secs = ticks as f64 / b.clk_tck;
    let own = cpu_ticks(std::process::id()).unwrap_or(own_base);
    m.server_cpu_secs = own.saturating_sub(own_base) as f64 / b.clk_tck;
    m.peak_rss_kb = m.peak_rss_kb.max(status_kb(pid, "VmHWM").unwrap_or(0));
    m.server = server.stats();
    m.delivered = m.server.written;
    if let Some(started) = m.server.started {
        m.wall = done_at.saturating_duration_since(started);
    }
    if m.server.reconnects > 0 {
        m.notes
            .push(format!("{} reconnect(s)", m.server.reconnects));
    }
    if m.delivered < m.offered {
        m.notes.push(format!(
            "{} of {} offered never delivered: not read fast enough",
            m.offered - m.delivered,
            m.offered
        ));
    }
    if m.server.stalls > 0 {
        m.notes.push(format!(
            "stream not read for > 100 ms {} time(s) (longest {} ms){}",
            m.server.stalls,
            m.server.max_stall.as_millis(),
            if plan.rate.is_some() {
                ": dockerd drops events then"
            } else {
                ""
            }
        ));
    }
    Ok(m)
}

/// Stops a consumer: SIGTERM for dockwarden (a clean shutdown), stdin
/// closed for the bollard loop, SIGKILL for `docker events`; SIGKILL for
/// anything still there after 20 s.
pub fn stop_child(kind: Kind, child: &mut Child) {
    let pid = child.id();
    match kind {
        Kind::Dockwarden | Kind::NoMatch => {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        // Closing its stdin lets the bollard loop exit.
        Kind::Bollard | Kind::BollardReads => drop(child.stdin.take()),
        Kind::Docker => {
            let _ = child.kill();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
