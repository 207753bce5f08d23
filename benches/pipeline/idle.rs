//! dockwarden idle against the real engine: started with
//! `rules/default.toml` and `--dry-run` on `DOCKER_HOST` (else the default
//! socket), left alone once ready, then its resident memory and the CPU it
//! used while idle.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::Bench;
use super::consumer::{Kind, stop_child};
use super::procfs::{cpu_ticks, status_kb, wait_quiet};
use super::sidecar::{self, default_rules, free_addr, http_get};

pub struct Idle {
    /// The binary that ran.
    pub bin: PathBuf,
    pub secs: u64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
    /// `RssAnon` and `RssFile` at the end: the process's own memory, and
    /// the pages of its binary and libraries it has mapped.
    pub anon_kb: u64,
    pub file_kb: u64,
    pub cpu_secs: f64,
}

/// Runs dockwarden (`bin`) idle for `secs`. With `lock`, holds an exclusive
/// `flock` on that file the whole time (tests that count the engine's
/// events take the same lock).
pub fn run(b: &Bench, bin: &Path, secs: u64, lock: Option<PathBuf>) -> Result<Idle, String> {
    let _lock = match lock {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            println!("idle: waiting for the engine lock {}", path.display());
            f.lock()
                .map_err(|e| format!("lock {}: {e}", path.display()))?;
            Some(f)
        }
        None => None,
    };
    let dir = b.fresh_dir("idle");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, default_rules(&dir.join("audit.jsonl"))?)
        .map_err(|e| format!("{}: {e}", rules.display()))?;
    let log = dir.join("dockwarden.log");
    let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let addr = free_addr()?;
    let mut child = sidecar::command(bin, &rules, addr, &dir, out)?
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id();
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(addr, "/readyz").is_err() {
            if Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
                return Err(format!(
                    "dockwarden did not become ready against the real engine; see {}",
                    log.display()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        wait_quiet(pid, Duration::from_millis(500), Duration::from_secs(60));
        let base = cpu_ticks(pid).ok_or("cannot read /proc/PID/stat")?;
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            thread::sleep(left.min(Duration::from_secs(60)));
            if !matches!(child.try_wait(), Ok(None)) {
                return Err(format!(
                    "dockwarden exited while idle; see {}",
                    log.display()
                ));
            }
            println!(
                "idle: {:>4} s, VmRSS {} kB",
                started.elapsed().as_secs(),
                status_kb(pid, "VmRSS").unwrap_or(0)
            );
        }
        Ok(Idle {
            bin: bin.to_owned(),
            secs,
            rss_kb: status_kb(pid, "VmRSS").unwrap_or(0),
            hwm_kb: status_kb(pid, "VmHWM").unwrap_or(0),
            anon_kb: status_kb(pid, "RssAnon").unwrap_or(0),
            file_kb: status_kb(pid, "RssFile").unwrap_or(0),
            cpu_secs: cpu_ticks(pid).unwrap_or(base).saturating_sub(base) as f64 / b.clk_tck,
        })
    })();
    stop_child(Kind::Dockwarden, &mut child);
    result
}
