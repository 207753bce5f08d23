//! The table of every run, the CPU ratios against the bare bollard loop
//! (and dockwarden's against the loop making the default rules' reads),
//! and the targets of issue 15 §3 as PASS/FAIL lines.

use std::fmt::Write as _;

use super::consumer::{Kind, Measure};
use super::idle::Idle;

/// Which scenario a run belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// As fast as the consumer reads.
    Fast,
    /// At an offered rate.
    Paced,
    /// The long run for RSS flatness.
    Flat,
}

/// MB as the issue writes them: 10^6 bytes (`/proc` gives KiB).
fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// One markdown table of every run, and the idle one.
pub fn table(rows: &[Measure], idle: Option<&Idle>) -> String {
    let mut t = String::from(
        "| setup | events | events/s (wall) | CPU per 1M events | peak RSS | dropped | notes |\n|---|---|---|---|---|---|---|\n",
    );
    for m in rows {
        let dropped = if m.dropped == 0 {
            "0".to_owned()
        } else {
            format!(
                "{} ({:.0}%)",
                m.dropped,
                100.0 * m.dropped as f64 / m.offered.max(1) as f64
            )
        };
        let mut notes = m.notes.clone();
        if let Some(settle) = m.settle {
            notes.insert(
                0,
                format!(
                    "handlers done {:.1} s after the last read",
                    settle.as_secs_f64()
                ),
            );
        }
        notes.push(format!(
            "bench process (server, counting) {:.1} CPU-s",
            m.server_cpu_secs
        ));
        for (at, kb) in &m.rss_at {
            notes.push(format!("RSS {:.1} MB at {}", mb(*kb), si(*at as f64)));
        }
        if m.peak_anon_kb > 0 {
            notes.push(format!(
                "anonymous RSS at most {:.1} MB as polled",
                mb(m.peak_anon_kb)
            ));
        }
        let _ = writeln!(
            t,
            "| {}, {} | {} | {} | {:.1} s | {:.1} MB | {} | {} |",
            m.kind.setup(),
            m.label,
            si(m.counted as f64),
            si(m.rate()),
            m.cpu_per_million(),
            mb(m.peak_rss_kb),
            dropped,
            notes.join("; ")
        );
    }
    if let Some(i) = idle {
        let _ = writeln!(
            t,
            "| dockwarden, rules/default.toml, --dry-run, idle against the real engine for {} s | — | — | {:.2} CPU-s in all | {:.1} MB now (peak {:.1} MB) | — | anonymous {:.1} MB, mapped files {:.1} MB; {} |",
            i.secs,
            i.cpu_secs,
            mb(i.rss_kb),
            mb(i.hwm_kb),
            mb(i.anon_kb),
            mb(i.file_kb),
            i.bin.display()
        );
    }
    t
}

/// CPU seconds per million events over every run of `kind` in `scenario`
/// (total CPU over total events), if there was one.
fn cpu_per_million(rows: &[Measure], kind: Kind, scenario: Scenario) -> Option<f64> {
    cpu_per_million_of(rows, kind, scenario, |m| m.counted)
}

/// The same, over the events `events` says a run had.
fn cpu_per_million_of(
    rows: &[Measure],
    kind: Kind,
    scenario: Scenario,
    events: fn(&Measure) -> u64,
) -> Option<f64> {
    let runs: Vec<&Measure> = rows
        .iter()
        .filter(|m| m.kind == kind && m.scenario == scenario && events(m) > 0)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let cpu: f64 = runs.iter().map(|m| m.cpu_secs).sum();
    let events: u64 = runs.iter().map(|m| events(m)).sum();
    Some(cpu / events as f64 * 1e6)
}

/// Each consumer's "CPU/event ÷ bollard CPU/event", per round and overall;
/// then dockwarden's CPU per event handled over the bare loop's and over
/// the reads loop's.
pub fn ratios(rows: &[Measure]) -> String {
    let mut out = String::new();
    let rounds = rows.iter().map(|m| m.round).max().unwrap_or(0);
    for kind in [
        Kind::Dockwarden,
        Kind::NoMatch,
        Kind::Docker,
        Kind::BollardReads,
    ] {
        let mut per_round = Vec::new();
        for r in 1..=rounds {
            let find = |k: Kind| {
                rows.iter()
                    .find(|m| m.kind == k && m.round == r && m.scenario == Scenario::Fast)
            };
            if let (Some(a), Some(b)) = (find(kind), find(Kind::Bollard)) {
                per_round.push(format!(
                    "round {r} {:.2}×",
                    a.cpu_per_million() / b.cpu_per_million().max(1e-9)
                ));
            }
        }
        let all = cpu_per_million(rows, kind, Scenario::Fast).zip(cpu_per_million(
            rows,
            Kind::Bollard,
            Scenario::Fast,
        ));
        if let Some((a, b)) = all {
            let _ = writeln!(
                out,
                "{} CPU/event ÷ bollard CPU/event: {}; all rounds {:.2}× ({a:.1} s vs {b:.1} s per 1M events)",
                kind.setup(),
                per_round.join(", "),
                a / b.max(1e-9),
            );
        }
    }
    // Per event handled (read and not dropped): as fast as it can, most
    // events are dropped, which costs only the reader's work; at an
    // offered rate that it keeps up with, every event is handled.
    let handled = |scenario: Scenario| {
        cpu_per_million_of(rows, Kind::Dockwarden, scenario, |m| {
            m.counted.saturating_sub(m.dropped)
        })
    };
    // And beside the loop that makes the reads the default rules need: what
    // is left of the gap once the reads no consumer can skip are counted.
    for base in [Kind::Bollard, Kind::BollardReads] {
        let Some(b) = cpu_per_million(rows, base, Scenario::Fast) else {
            continue;
        };
        for (scenario, what) in [
            (Scenario::Fast, "as fast as it can"),
            (Scenario::Paced, "at the offered rate"),
        ] {
            if let Some(a) = handled(scenario) {
                let _ = writeln!(
                    out,
                    "{}, {what}: CPU per event handled (read, not dropped) ÷ {} CPU/event: {:.2}× ({a:.1} s vs {b:.1} s per 1M events)",
                    Kind::Dockwarden.setup(),
                    base.setup(),
                    a / b.max(1e-9),
                );
            }
        }
    }
    out
}

/// One target's verdict.
pub struct Verdict {
    /// None: not measured in this run.
    pub pass: Option<bool>,
    pub line: String,
}

impl Verdict {
    fn measured(pass: bool, line: String) -> Verdict {
        Verdict {
            pass: Some(pass),
            line,
        }
    }

    fn skipped(line: String) -> Verdict {
        Verdict { pass: None, line }
    }

    pub fn print(&self) -> String {
        let word = match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "SKIP",
        };
        format!("{word}  {}", self.line)
    }
}

/// The targets of issue 15 §3 that this run measured, and those it did not.
/// `rate` and `secs`: the offered rate of the paced runs.
pub fn targets(rows: &[Measure], idle: Option<&Idle>, rate: f64, secs: f64) -> Vec<Verdict> {
    let mut v = Vec::new();
    let bollard = cpu_per_million(rows, Kind::Bollard, Scenario::Fast);
    for (kind, max, what) in [
        (
            Kind::Dockwarden,
            1.0,
            "default rules ≤ the bare bollard loop",
        ),
        (
            Kind::NoMatch,
            0.5,
            "a rules file matching nothing ≤ half the bare bollard loop",
        ),
    ] {
        match (cpu_per_million(rows, kind, Scenario::Fast), bollard) {
            (Some(a), Some(b)) => {
                let ratio = a / b.max(1e-9);
                v.push(Verdict::measured(
                    ratio <= max,
                    format!(
                        "CPU per event, {what}: {a:.1} s vs {b:.1} s per 1M events = {ratio:.2}× (target ≤ {max}×)"
                    ),
                ));
            }
            _ => v.push(Verdict::skipped(format!(
                "CPU per event, {what}: needs both consumers run (PIPELINE_CONSUMERS, PIPELINE_ROUNDS)"
            ))),
        }
    }
    let paced: Vec<&Measure> = rows
        .iter()
        .filter(|m| m.kind == Kind::Dockwarden && m.scenario == Scenario::Paced)
        .collect();
    if paced.is_empty() {
        v.push(Verdict::skipped(
            "no event dropped at an offered 100 k events/s: not run (PIPELINE_RATE=0, PIPELINE_ROUNDS=0, or dockwarden not in PIPELINE_CONSUMERS)".into(),
        ));
    } else {
        let dropped: u64 = paced.iter().map(|m| m.dropped).sum();
        let undelivered: u64 = paced
            .iter()
            .map(|m| m.offered - m.delivered.min(m.offered))
            .sum();
        let missing: u64 = paced
            .iter()
            .map(|m| m.delivered.saturating_sub(m.counted))
            .sum();
        let stalls: u64 = paced.iter().map(|m| m.server.stalls).sum();
        let offered: u64 = paced.iter().map(|m| m.offered).sum();
        v.push(Verdict::measured(
            dropped + undelivered + missing + stalls == 0,
            format!(
                "no event dropped with the default rules at an offered {}/s for {secs} s: of {offered} offered, {undelivered} never delivered (read too slowly), {dropped} dropped by dockwarden, {missing} delivered but not counted; {stalls} pause(s) > 100 ms (target all 0)",
                si(rate)
            ),
        ));
    }
    // A run of no events (PIPELINE_EVENTS=0, to run only the paced or
    // long runs) says nothing of full rate.
    let full: Vec<&Measure> = rows
        .iter()
        .filter(|m| m.kind == Kind::Dockwarden && m.scenario == Scenario::Fast)
        .filter(|m| m.counted > 0)
        .collect();
    match full.iter().max_by_key(|m| m.peak_rss_kb) {
        Some(m) => v.push(Verdict::measured(
            mb(m.peak_rss_kb) <= 32.0,
            format!(
                "peak RSS at full rate (default rules) ≤ 32 MB: {:.1} MB (anonymous at most {:.1} MB as polled; the rest is mapped code)",
                mb(m.peak_rss_kb),
                mb(m.peak_anon_kb)
            ),
        )),
        None => v.push(Verdict::skipped(
            "peak RSS at full rate: dockwarden not run".into(),
        )),
    }
    match rows
        .iter()
        .find(|m| m.scenario == Scenario::Flat && m.rss_at.len() >= 2)
    {
        Some(m) => {
            let (a, b) = (m.rss_at[0], m.rss_at[m.rss_at.len() - 1]);
            let diff = mb(b.1) - mb(a.1);
            v.push(Verdict::measured(
                diff.abs() <= 2.0,
                format!(
                    "RSS flat within 2 MB from {} to {} events: {:.1} MB → {:.1} MB ({diff:+.1} MB)",
                    si(a.0 as f64),
                    si(b.0 as f64),
                    mb(a.1),
                    mb(b.1)
                ),
            ));
        }
        None => v.push(Verdict::skipped(
            "RSS flat from 1 M to 10 M events: PIPELINE_FLAT=1".into(),
        )),
    }
    match idle {
        Some(i) => {
            v.push(Verdict::measured(
                mb(i.rss_kb) <= 10.0,
                format!(
                    "RSS idle against the real engine after {} s ≤ 10 MB: {:.1} MB (peak {:.1} MB; anonymous {:.1} MB, mapped files {:.1} MB; {})",
                    i.secs,
                    mb(i.rss_kb),
                    mb(i.hwm_kb),
                    mb(i.anon_kb),
                    mb(i.file_kb),
                    i.bin.display()
                ),
            ));
            // ~0: a timer at 1 Hz costs microseconds; busy polling costs
            // percents. 0.1% of a core separates them.
            let share = i.cpu_secs / i.secs.max(1) as f64;
            v.push(Verdict::measured(
                share <= 0.001,
                format!(
                    "idle CPU ~0: {:.2} CPU-s in {} s = {:.3}% of a core (target ≤ 0.1%)",
                    i.cpu_secs,
                    i.secs,
                    share * 100.0
                ),
            ));
        }
        None => v.push(Verdict::skipped(
            "RSS and CPU idle against the real engine: PIPELINE_IDLE_SECS=600".into(),
        )),
    }
    v.push(Verdict::skipped(
        "heal reaction p99 ≤ 5 ms: cargo bench --bench heal_reaction".into(),
    ));
    v
}
