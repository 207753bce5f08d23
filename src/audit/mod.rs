//! The audit sink: a tamper-evident, append-only JSON-lines log.
//!
//! Handlers [`AuditHandle::submit`] records (a JSON object) with their
//! [`Severity`], without waiting; one writer thread gives each record its
//! place in the hash chain and writes it. Each line is the record's
//! canonical JSON with `seq`, `prev_hash` and `hash` added ([`chain`]).
//! Files rotate and the chain continues across files and restarts
//! ([`writer`]); [`verify`] checks it all. A replay after a crash is not
//! written twice ([`identity`]).
//!
//! When the file cannot be written (disk full, permissions) records wait in a
//! bounded buffer and the write is retried every second; healing and metrics
//! never wait for it. What does not fit in the buffer is dropped, counted,
//! and told in the chain by an `audit_gap` record ([`gap`]).
//!
//! This file is long because the sink's tests run it whole (a chain across
//! rotations and restarts, torn lines, a file deleted while open), beside
//! the handle they go through.
//!
//! This file owns the configuration and the handle handlers hold; it must
//! not know what handlers put in a record beyond its severity.

mod chain;
mod gap;
mod identity;
mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tracing::{error, warn};

use crate::internal_events::InternalEvent;
use crate::internal_events::audit::AuditRecordDropped;
use crate::metrics::Metrics;
use writer::{Msg, Writer};

pub use chain::{ChainTail, GENESIS, chain_line, record_hash};
pub use identity::identity;
pub use verify::{VerifyError, chains, verify, verify_inputs, verify_settled};
pub use writer::rotated;

/// One audit record, before it is chained: a JSON object.
pub type Record = Map<String, Value>;

/// How much a record matters: its `severity` field and the label of
/// `dockwarden_audit_records_total{severity}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// `low`, `medium`, `high`, `critical`.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// When written data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every batch of records.
    Always,
    /// At most once a second (and on shutdown).
    Interval,
    /// Left to the OS.
    Never,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// The log file, or `-` for stdout.
    pub path: PathBuf,
    /// Rotate once the file would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
    pub fsync: Fsync,
    /// Records held in memory while the file cannot be written.
    pub buffer_records: usize,
    /// The `host` field; default: the engine's host name.
    pub host: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: PathBuf::from("/var/log/dockwarden/audit.jsonl"),
            max_bytes: 100 * 1024 * 1024,
            keep: 10,
            fsync: Fsync::Interval,
            buffer_records: 100_000,
            host: None,
        }
    }
}

/// Where handlers send records. Cheap to clone.
#[derive(Clone)]
pub struct AuditHandle {
    tx: Option<SyncSender<Msg>>,
    metrics: Arc<Metrics>,
    /// Records the queue to the writer had no room for, since the writer
    /// last took the count (it writes an `audit_gap` record for them).
    queue_dropped: Arc<AtomicU64>,
}

impl AuditHandle {
    /// A handle that drops everything (no audit handler in use).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        AuditHandle {
            tx: None,
            metrics,
            queue_dropped: Arc::default(),
        }
    }

    /// Queues a record, its `severity` field set and counted in
    /// `dockwarden_audit_records_total{severity}`; never waits. A full
    /// queue drops it, counted.
    pub fn submit(&self, mut record: Record, severity: Severity) {
        self.metrics.audit_record(severity.label());
        let Some(tx) = &self.tx else { return };
        record.insert("severity".into(), severity.label().into());
        // Those the queue dropped since the last record that went in: the
        // writer tells them ahead of this one, where they were.
        let dropped_before = self.queue_dropped.swap(0, Ordering::Relaxed);
        match tx.try_send(Msg::Record(record, dropped_before)) {
            Ok(()) => self.metrics.audit_buffered(1),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queue_dropped
                    .fetch_add(dropped_before, Ordering::Relaxed);
                self.queue_full();
            }
        }
    }

    fn queue_full(&self) {
        self.queue_dropped.fetch_add(1, Ordering::Relaxed);
        AuditRecordDropped {
            full: "queue",
            quiet: false,
        }
        .emit(&self.metrics);
    }
}

/// The records a [capturing](AuditHandle::capturing) handle was given.
pub struct Captured {
    rx: std::sync::mpsc::Receiver<Msg>,
}

impl Captured {
    /// The records submitted since the last call, in order.
    pub fn drain(&self) -> Vec<Record> {
        self.rx
            .try_iter()
            .filter_map(|m| match m {
                Msg::Record(r, _) => Some(r),
                Msg::Close => None,
            })
            .collect()
    }
}

impl AuditHandle {
    /// A handle whose records are kept for the caller, not written
    /// (`dockwarden replay`); at most `capacity` wait to be drained.
    pub fn capturing(metrics: Arc<Metrics>, capacity: usize) -> (AuditHandle, Captured) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        (
            AuditHandle {
                tx: Some(tx),
                metrics,
                queue_dropped: Arc::default(),
            },
            Captured { rx },
        )
    }
}

/// The writer thread.
pub struct AuditSink {
    handle: AuditHandle,
    thread: Option<JoinHandle<()>>,
}

impl AuditSink {
    /// Starts the writer. Reads the chain's tail from disk first.
    pub fn start(config: AuditConfig, metrics: Arc<Metrics>) -> AuditSink {
        let (tx, rx) = sync_channel(8192);
        let queue_dropped = Arc::<AtomicU64>::default();
        let writer = Writer::new(config, metrics.clone(), queue_dropped.clone());
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx));
        match thread {
            Ok(thread) => AuditSink {
                handle: AuditHandle {
                    tx: Some(tx),
                    metrics,
                    queue_dropped,
                },
                thread: Some(thread),
            },
            Err(e) => {
                error!(error = %e, "Cannot start the audit writer thread; audit records will be dropped.");
                AuditSink {
                    handle: AuditHandle::disabled(metrics),
                    thread: None,
                }
            }
        }
    }

    pub fn handle(&self) -> AuditHandle {
        self.handle.clone()
    }

    /// Writes what is queued, syncs and stops; waits up to `grace`.
    pub fn close(mut self, grace: Duration) {
        if let Some(tx) = self.handle.tx.take() {
            let _ = tx.send(Msg::Close);
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + grace;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            warn!("Audit writer still busy after the grace period; records still queued are lost.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn rec(n: u64) -> Record {
        let mut r = Record::new();
        r.insert("kind".into(), Value::from("test"));
        r.insert("n".into(), Value::from(n));
        r
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dw-audit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A fresh directory and the log `audit.jsonl` in it.
    fn temp_log(name: &str) -> (PathBuf, PathBuf) {
        let dir = temp(name);
        let path = dir.join("audit.jsonl");
        (dir, path)
    }

    fn write(config: AuditConfig, n: u64, from: u64) {
        let metrics = Arc::new(Metrics::new());
        let sink = AuditSink::start(config, metrics);
        let h = sink.handle();
        for i in 0..n {
            h.submit(rec(from + i), Severity::Low);
        }
        sink.close(Duration::from_secs(10));
    }

    /// A log at `path` synced after every batch.
    fn synced(path: &std::path::Path, max_bytes: u64, keep: u32) -> AuditConfig {
        AuditConfig {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            fsync: Fsync::Always,
            ..AuditConfig::default()
        }
    }

    #[test]
    fn chain_survives_rotation_and_restart_and_detects_tampering() {
        let dir = temp("chain");
        let path = dir.join("sub/audit.jsonl");
        let config = synced(&path, 2000, 50);
        write(config.clone(), 30, 0);
        write(config.clone(), 30, 30); // a restart: the chain continues
        assert!(rotated(&path, 1).exists(), "rotated at max_bytes");
        let mode = fs::metadata(&path)
            .expect("log exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let files = verify_inputs(&[dir.join("sub")]).expect("inputs");
        assert_eq!(verify(&files), Ok((60, 1)));

        // Swap two lines of the live file.
        let text = fs::read_to_string(&path).expect("read");
        let mut lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 3);
        lines.swap(1, 2);
        fs::write(&path, lines.join("\n") + "\n").expect("write");
        match verify(&files).as_ref().map_err(Vec::as_slice) {
            Err([VerifyError::Broken { file, line, .. }]) => {
                assert_eq!((file, *line), (&path.display().to_string(), 2));
            }
            other => panic!("swap not detected: {other:?}"),
        }
        let _ = fs::remove_dir_all(&dir);
    }

    /// The files of the log in `dir`, by name.
    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Lowering `keep` and restarting: the next rotation removes every file
    /// past the new `keep`, so nothing older sits behind a gap in the chain
    /// (verify said "records removed" for good).
    #[test]
    fn a_lower_keep_removes_every_file_past_it() {
        let (dir, path) = temp_log("keep-lowered");
        let mut config = synced(&path, 1024, 5);
        write(config.clone(), 60, 0);
        assert!(rotated(&path, 5).exists(), "rotated past keep = 5");
        assert!(!rotated(&path, 6).exists(), "nothing past keep = 5");
        config.keep = 2;
        write(config.clone(), 20, 60);
        assert_eq!(
            names(&dir),
            ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"],
            "rotations .1 … .keep"
        );
        let files = verify_inputs(std::slice::from_ref(&dir)).expect("inputs");
        assert!(matches!(verify(&files), Ok((_, first)) if first > 1));
        let _ = fs::remove_dir_all(&dir);
    }

    /// A crash between two renames of a rotation leaves a gap (`.1` moved
    /// to `.2`, the live file not yet to `.1`); the next rotation closes it
    /// rather than carrying it on, so verify never takes it for a deleted
    /// file.
    #[test]
    fn rotation_closes_a_gap_a_crash_left() {
        let (dir, path) = temp_log("rotation-gap");
        let config = synced(&path, 1024, 10);
        // About four records a file.
        write(config.clone(), 9, 0);
        assert!(rotated(&path, 2).exists() && !rotated(&path, 3).exists());
        fs::rename(rotated(&path, 2), rotated(&path, 3)).expect("rename");
        fs::rename(rotated(&path, 1), rotated(&path, 2)).expect("rename");
        write(config.clone(), 8, 9);
        assert!(rotated(&path, 1).exists(), "rotated after the restart");
        let files = verify_inputs(std::slice::from_ref(&dir)).expect("no gap");
        assert_eq!(verify(&files), Ok((17, 1)));
        let _ = fs::remove_dir_all(&dir);
    }

    /// The live file deleted while the writer has it open: the records
    /// after it go to a new file at the path, not to the unlinked one, and
    /// the chain goes on from the last record.
    #[test]
    fn a_log_deleted_while_open_is_started_again_at_its_path() {
        let (dir, path) = temp_log("deleted-live");
        let sink = AuditSink::start(synced(&path, 1 << 20, 3), Arc::new(Metrics::new()));
        let h = sink.handle();
        for i in 0..3 {
            h.submit(rec(i), Severity::Low);
        }
        let written = |n: usize| {
            (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(20));
                fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == n)
            })
        };
        assert!(written(3), "the first records were not written");
        fs::remove_file(&path).expect("delete the live file");
        for i in 3..6 {
            h.submit(rec(i), Severity::Critical);
        }
        sink.close(Duration::from_secs(10));
        let text = fs::read_to_string(&path).expect("a new file at the path");
        let seqs: Vec<Value> = text.lines().map(|l| field(l.as_bytes(), "seq")).collect();
        assert_eq!(seqs, [4, 5, 6].map(Value::from), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// The log's lines, as bytes (a torn line need not be UTF-8).
    fn lines(path: &std::path::Path) -> Vec<Vec<u8>> {
        let bytes = fs::read(path).expect("read");
        bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
    }

    fn field(line: &[u8], key: &str) -> Value {
        let v: Value = serde_json::from_slice(line).expect("a record");
        v[key].clone()
    }

    /// A crash cut the last line short (kill -9, or a power loss with
    /// `fsync = "interval"`, which may leave zeros). After a restart the
    /// fragment is kept on its own line and the chain continues from the
    /// last complete record: the next record was glued onto the fragment,
    /// chained from the genesis hash, and lost to verify for good.
    #[test]
    fn a_torn_last_line_is_kept_and_the_chain_continues_from_the_record_before_it() {
        // Cut mid-record; then zeros where the rest never landed; zeros only.
        let fragments: [&[u8]; 3] = [b"{\"hash\":\"ab12", b"{\"hash\":\"\0\0\0\0", b"\0\0\0"];
        for fragment in fragments {
            let (dir, path) = temp_log("torn");
            let config = synced(&path, 1 << 20, 10);
            write(config.clone(), 3, 0);
            let mut bytes = fs::read(&path).expect("read");
            bytes.extend_from_slice(fragment);
            fs::write(&path, &bytes).expect("tear");
            write(config.clone(), 2, 3);

            let lines = lines(&path);
            assert_eq!(
                lines.len(),
                7,
                "3 records, the fragment, 2 records, and the end"
            );
            assert_eq!(lines[3], fragment, "the fragment is kept, on its own line");
            assert_eq!(field(&lines[4], "seq"), 4);
            assert_eq!(field(&lines[4], "prev_hash"), field(&lines[2], "hash"));
            assert_eq!(field(&lines[5], "seq"), 5);
            let torn = VerifyError::Torn {
                file: path.display().to_string(),
                line: 4,
            };
            assert_eq!(verify(std::slice::from_ref(&path)), Err(vec![torn]));
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// A crash between a record and its newline: the record is complete,
    /// and the next one goes on a line of its own.
    #[test]
    fn a_complete_last_record_without_its_newline_is_not_glued_to() {
        let (dir, path) = temp_log("unterminated");
        let config = synced(&path, 1 << 20, 10);
        write(config.clone(), 3, 0);
        let bytes = fs::read(&path).expect("read");
        fs::write(&path, &bytes[..bytes.len() - 1]).expect("cut the newline");
        write(config.clone(), 2, 3);
        assert_eq!(verify(std::slice::from_ref(&path)), Ok((5, 1)));
        let _ = fs::remove_dir_all(&dir);
    }

    /// A key given twice hashes as the record serde parses (the last value
    /// wins) while other readers show the first: the line must be the
    /// writer's own bytes.
    #[test]
    fn a_line_not_as_the_writer_wrote_it_fails_verify() {
        let (dir, path) = temp_log("duplicate-key");
        write(synced(&path, 1 << 20, 3), 3, 0);
        assert!(verify(std::slice::from_ref(&path)).is_ok());
        let text = fs::read_to_string(&path).expect("log");
        let forged: Vec<String> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 1 {
                    l.replacen('{', r#"{"kind":"forged","#, 1)
                } else {
                    l.to_owned()
                }
            })
            .collect();
        fs::write(&path, forged.join("\n") + "\n").expect("write");
        let problems = verify(std::slice::from_ref(&path)).expect_err("a forged line");
        let text = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains(":2: record seq 2 is not as the writer wrote it"),
            "{text}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// Records dropped while the log could not be written are told in the
    /// chain, where they would have been: an `audit_gap` record, so the
    /// chain does not close over the hole unseen.
    #[test]
    fn dropped_records_leave_an_audit_gap_record_in_their_place() {
        let dir = temp("gap");
        let path = dir.join("audit.jsonl");
        // A directory where the file should be: every open fails.
        fs::create_dir_all(&path).expect("mkdir");
        let sink = AuditSink::start(
            AuditConfig {
                path: path.clone(),
                buffer_records: 5,
                fsync: Fsync::Always,
                ..AuditConfig::default()
            },
            Arc::new(Metrics::new()),
        );
        let h = sink.handle();
        for i in 0..8 {
            h.submit(
                rec(i),
                if i < 7 {
                    Severity::Low
                } else {
                    Severity::Critical
                },
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        // Writable again: the five buffered go out at the next retry, and
        // the gap right after them, though no record follows yet.
        fs::remove_dir(&path).expect("rmdir");
        let written = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 6)
        });
        assert!(written, "the buffered records and the gap were not written");
        h.submit(rec(8), Severity::Low);
        sink.close(Duration::from_secs(10));
        let text = fs::read_to_string(&path).expect("log");
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a record"))
            .collect();
        let kinds: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["test", "test", "test", "test", "test", "audit_gap", "test"],
            "{text}"
        );
        let gap = &records[5];
        assert_eq!(gap["dropped"], 3, "{gap}");
        assert_eq!(gap["severities"]["low"], 2, "{gap}");
        assert_eq!(gap["severities"]["critical"], 1, "{gap}");
        assert_eq!(gap["severity"], "critical", "{gap}");
        assert_eq!(gap["reasons"]["buffer full"], 3, "{gap}");
        assert_eq!(records[6]["n"], 8);
        // Chained like any record.
        assert!(verify(&[path]).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn unwritable_log_buffers_and_counts() {
        let dir = temp("unwritable");
        // A directory where the file should be: every open fails.
        let path = dir.join("audit.jsonl");
        fs::create_dir_all(&path).expect("mkdir");
        let metrics = Arc::new(Metrics::new());
        let sink = AuditSink::start(
            AuditConfig {
                path,
                buffer_records: 5,
                ..AuditConfig::default()
            },
            metrics.clone(),
        );
        let h = sink.handle();
        for i in 0..8 {
            h.submit(rec(i), Severity::Medium);
        }
        std::thread::sleep(Duration::from_millis(300));
        let text = metrics.render();
        assert!(
            text.contains("dockwarden_audit_write_errors_total 1"),
            "{text}"
        );
        assert!(
            text.contains("dockwarden_audit_buffered_records 5"),
            "{text}"
        );
        assert!(
            text.contains("dockwarden_audit_dropped_records_total 3"),
            "{text}"
        );
        assert!(
            text.contains("dockwarden_audit_records_total{severity=\"medium\"} 8"),
            "counted by the severity submitted with them: {text}"
        );
        sink.close(Duration::from_secs(5));
        let _ = fs::remove_dir_all(&dir);
    }
}
