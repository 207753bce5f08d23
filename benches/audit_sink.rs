//! The audit sink alone: records per second through the real writer thread
//! (canonical JSON, SHA-256 chain, file writes) with `fsync = "interval"`,
//! and with "always" and "never" beside it in the same run.
//!
//!     cargo bench --bench audit_sink                 # 500,000 records each
//!     AUDIT_BENCH_RECORDS=2000000 cargo bench --bench audit_sink
//!
//! Exits 1 if the interval rate is below 50,000 records/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dockwarden::audit::{AuditConfig, AuditSink, Fsync, Record, Severity, verify, verify_inputs};
use dockwarden::metrics::Metrics;
use serde_json::Value;

const TARGET_PER_SEC: f64 = 50_000.0;

/// A record shaped like a real exec_start record.
fn record(i: u64) -> Record {
    let mut r = Record::new();
    r.insert("kind".into(), "exec_start".into());
    r.insert("ts".into(), "2026-11-22T13:57:03.858119123Z".into());
    r.insert("exec_id".into(), format!("{i:064x}").into());
    r.insert("exec_id_verified".into(), true.into());
    r.insert(
        "container_id".into(),
        "90b8339a73a7754893468a294b429137742023b863ee8c9df68db90f4f6b61d2".into(),
    );
    r.insert("container_name".into(), "web-1".into());
    r.insert("image".into(), "registry.example/web:1.25.3".into());
    r.insert("user".into(), "1000".into());
    r.insert("privileged".into(), false.into());
    r.insert("tty".into(), true.into());
    r.insert(
        "command".into(),
        Value::from(vec!["sh", "-c", "cat /etc/passwd | head -n 3"]),
    );
    r.insert("healthcheck".into(), false.into());
    r.insert("severity".into(), "high".into());
    r.insert("enriched".into(), true.into());
    r.insert("host".into(), "docker-host-7".into());
    r
}

fn run(fsync: Fsync, n: u64) -> (f64, u64) {
    let dir = std::env::temp_dir().join(format!("dw-audit-bench-{}-{fsync:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let metrics = Arc::new(Metrics::new());
    let sink = AuditSink::start(
        AuditConfig {
            path: dir.join("audit.jsonl"),
            max_bytes: 64 << 20,
            keep: 100,
            fsync,
            buffer_records: n as usize,
            host: None,
        },
        metrics.clone(),
    );
    let handle = sink.handle();
    let started = Instant::now();
    for i in 0..n {
        handle.submit(record(i), Severity::High);
        // The submit queue is bounded; let the writer catch up rather than
        // measure drops.
        while metrics.audit_buffered_records() > 4_000 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    sink.close(Duration::from_secs(600));
    let secs = started.elapsed().as_secs_f64();
    let files = verify_inputs(std::slice::from_ref(&dir)).expect("log files");
    let (records, _) = verify(&files).expect("the chain verifies");
    let _ = std::fs::remove_dir_all(&dir);
    (n as f64 / secs, records)
}

fn main() {
    let n: u64 = std::env::var("AUDIT_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    println!(
        "audit_sink: {n} exec_start-sized records per mode, rotation at 64 MiB, chain verified after each"
    );
    let mut interval = 0.0;
    for fsync in [Fsync::Interval, Fsync::Never, Fsync::Always] {
        let (rate, written) = run(fsync, n);
        println!(
            "  fsync = {:<9} {rate:>10.0} records/s  ({written} verified)",
            format!("{fsync:?}").to_lowercase()
        );
        if fsync == Fsync::Interval {
            interval = rate;
        }
    }
    if interval >= TARGET_PER_SEC {
        println!("audit_sink: interval {interval:.0}/s >= {TARGET_PER_SEC:.0}/s target: ok");
    } else {
        println!("audit_sink: interval {interval:.0}/s < {TARGET_PER_SEC:.0}/s target: FAILED");
        std::process::exit(1);
    }
}
