//! What a consumer process costs, read from `/proc`: CPU ticks (user +
//! system, all threads), resident memory, and waiting for a process to go
//! quiet. Linux only, like the engine it stands in for.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Clock ticks per second (`getconf CLK_TCK`), and whether it was measured
/// (else 100 is assumed, the value on every Linux this runs on).
pub fn clock_ticks() -> (f64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .map_or((100.0, false), |t| (t, true))
}

/// utime + stime of process `pid` (every thread), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command: state is field 3, utime 14, stime 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in kB.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Waits until `pid` uses at most one tick in `window` (it finished what it
/// was doing); false if it does not within `max` or is gone.
pub fn wait_quiet(pid: u32, window: Duration, max: Duration) -> bool {
    let deadline = Instant::now() + max;
    let step = Duration::from_millis(50);
    let mut history: Vec<u64> = Vec::new();
    let keep = (window.as_millis() / step.as_millis()).max(1) as usize + 1;
    while Instant::now() < deadline {
        let Some(t) = cpu_ticks(pid) else {
            return false;
        };
        history.push(t);
        if history.len() > keep {
            history.remove(0);
        }
        if history.len() == keep && t.saturating_sub(history[0]) <= 1 {
            return true;
        }
        thread::sleep(step);
    }
    false
}
