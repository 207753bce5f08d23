//! The audit writer thread: gives each record its place in the chain,
//! writes it, rotates the file, and continues the chain after a restart.
//!
//! Files rotate at `max_bytes` (`audit.jsonl` → `audit.jsonl.1` → ... →
//! `.keep`, and nothing past `.keep` is left); the chain runs on across
//! files, and after a restart it continues from the last record on disk.
//! When the file cannot be written (disk full, permissions) records wait in
//! a bounded buffer and the write is retried every second; what does not
//! fit is dropped, counted, and told in the chain by an `audit_gap` record
//! where it would have been ([`super::gap`]). A record that cannot be encoded is logged,
//! counted and not written; the next one is. Each such fault is logged and
//! counted in one call.
//!
//! It owns the file and the chain's tail; it must not decide what a record
//! holds, and nothing outside it waits for it.
//!
//! This file is long because each fault the writer meets (a line torn by a
//! crash, a gap a crash left in the rotations, a lower `keep`) is handled
//! and tested beside the one write path.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{debug, error, info, warn};

use super::chain::{ChainTail, chain_line};
use super::gap::Gap;
use super::identity::{Recent, identity};
use super::{AuditConfig, Fsync, Record};
use crate::internal_events::InternalEvent;
use crate::internal_events::audit::{
    AuditRecordDropped, AuditRecordUnencodable, AuditSyncFailed, AuditWriteFailed,
};
use crate::json::EncodeError;
use crate::metrics::Metrics;

/// How long the writer lets records gather after the first of a burst.
const LINGER: Duration = Duration::from_millis(2);

pub(super) enum Msg {
    /// A record, and how many the queue dropped just before it (they go
    /// into an `audit_gap` record ahead of it).
    Record(Record, u64),
    /// Write everything, sync, and stop.
    Close,
}

pub(super) struct Writer {
    config: AuditConfig,
    metrics: Arc<Metrics>,
    tail: ChainTail,
    file: Option<File>,
    size: u64,
    pending: VecDeque<Record>,
    dirty: bool,
    last_sync: Instant,
    /// When to try writing again after an error.
    retry_at: Option<Instant>,
    failing: bool,
    host: String,
    /// Identities of the records written lately, against replays.
    recent: Recent,
    /// Records dropped since the last `audit_gap` record.
    gap: Gap,
    /// Whether the path is checked against the open file before a write.
    check_path: bool,
    /// Records the queue to this thread dropped (counted by the handles).
    queue_dropped: Arc<AtomicU64>,
}

/// The `host` field: `[audit] host`, else this machine's host name.
fn host_name(config: &AuditConfig) -> String {
    config.host.clone().unwrap_or_else(crate::config::this_host)
}

impl Writer {
    /// Reads the chain's tail and the recent identities from disk.
    pub(super) fn new(
        config: AuditConfig,
        metrics: Arc<Metrics>,
        queue_dropped: Arc<AtomicU64>,
    ) -> Writer {
        let stdout = is_stdout(&config.path);
        let tail = if stdout {
            ChainTail::default()
        } else {
            match recover_tail(&config.path) {
                Ok(t) => t,
                Err(e) => {
                    error!(path = %config.path.display(), error = %e, "Cannot read the audit log's last record; the chain restarts.");
                    ChainTail::default()
                }
            }
        };
        if tail.seq > 0 {
            info!(path = %config.path.display(), seq = tail.seq, "Audit chain continues from the last record on disk.");
        }
        let recent = if stdout {
            Recent::default()
        } else {
            Recent::read_back(&config.path).unwrap_or_else(|e| {
                error!(path = %config.path.display(), error = %e, "Cannot read back the audit log's records; a replay after a crash may be written again.");
                Recent::default()
            })
        };
        Writer {
            recent,
            host: host_name(&config),
            config,
            metrics,
            tail,
            file: None,
            size: 0,
            pending: VecDeque::new(),
            dirty: false,
            last_sync: Instant::now(),
            retry_at: None,
            failing: false,
            gap: Gap::default(),
            check_path: true,
            queue_dropped,
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut closing = false;
        loop {
            let wait = match self.retry_at {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(1),
            };
            match rx.recv_timeout(wait) {
                Ok(msg) => {
                    closing |= self.take(msg);
                    // Let a burst gather before taking it: while this thread
                    // waits in `recv`, every record sent wakes it (a futex
                    // call and a context switch on the handlers' thread:
                    // 5 % of it at an offered 100 k events/s). Asleep, it
                    // is not woken; the queue holds 8192 records.
                    if !closing {
                        std::thread::sleep(LINGER);
                    }
                    // Batch whatever else is already queued.
                    while let Ok(msg) = rx.try_recv() {
                        closing |= self.take(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closing = true,
            }
            if closing {
                // What the queue dropped after the last record that went in
                // is told too (the handles count it).
                self.gap.add(
                    self.queue_dropped.swap(0, Ordering::Relaxed),
                    None,
                    "queue full",
                );
                self.push_gap();
            }
            if self.retry_at.is_none_or(|t| Instant::now() >= t) || closing {
                self.write_pending();
                // Drained after an outage with no record since: the gap
                // is told now, not when (or if) the next record comes.
                if !self.failing && !self.gap.is_empty() {
                    self.push_gap();
                    self.write_pending();
                }
            }
            if self.dirty
                && (self.config.fsync == Fsync::Always
                    || closing
                    || (self.config.fsync == Fsync::Interval
                        && self.last_sync.elapsed() >= Duration::from_secs(1)))
            {
                self.sync();
            }
            if closing {
                if !self.pending.is_empty() {
                    error!(
                        records = self.pending.len(),
                        "Audit log not writable at shutdown: records lost."
                    );
                }
                return;
            }
        }
    }

    /// Takes a message into the buffer; true for Close.
    fn take(&mut self, msg: Msg) -> bool {
        let mut r = match msg {
            Msg::Close => return true,
            Msg::Record(r, dropped_before) => {
                self.gap.add(dropped_before, None, "queue full");
                r
            }
        };
        r.entry("host")
            .or_insert_with(|| Value::from(self.host.clone()));
        let id = match identity(&r) {
            Ok(id) => id,
            Err(e) => {
                self.unencodable(e);
                return false;
            }
        };
        if self.recent.is_repeat(&r, id) {
            // Handled before a crash, replayed since: written already.
            self.metrics.audit_buffered(-1);
            debug!("Audit record already written; skipped.");
            return false;
        }
        self.recent.remember(id);
        if self.pending.len() >= self.config.buffer_records {
            let severity = r.get("severity").and_then(Value::as_str);
            self.gap.add(1, severity, "buffer full");
            self.buffer_full();
        } else {
            // Where the dropped ones would have been, in the chain.
            self.push_gap();
            self.pending.push_back(r);
        }
        false
    }

    /// Queues the `audit_gap` record of what was dropped, if anything was
    /// (one over `buffer_records` at most).
    fn push_gap(&mut self) {
        if let Some((mut r, dropped)) = self.gap.take_record() {
            warn!(
                dropped,
                "Audit records were dropped; an audit_gap record is written in their place."
            );
            r.insert("host".into(), Value::from(self.host.clone()));
            self.metrics.audit_buffered(1);
            self.pending.push_back(r);
        }
    }

    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.try_write() {
            Ok(()) => {
                if self.failing {
                    info!(path = %self.config.path.display(), "Audit log writable again.");
                }
                self.failing = false;
                self.retry_at = None;
            }
            Err(e) => self.write_failed(e),
        }
    }

    /// Writes as much of the buffer as it can. The chain advances only for
    /// lines that reached the file; a failed write is cut back off.
    fn try_write(&mut self) -> io::Result<()> {
        if is_stdout(&self.config.path) {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            while let Some(record) = self.pending.pop_front() {
                match chain_line(&record, &self.tail) {
                    Ok((line, hash)) => {
                        out.write_all(&line)?;
                        self.advance(hash);
                    }
                    Err(e) => self.unencodable(e),
                }
            }
            return out.flush();
        }
        self.ensure_open()?;
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        // The hashes of the first pending records, whose lines are in `buf`;
        // record `i` is the next one after them.
        let mut hashes: Vec<String> = Vec::new();
        let mut staged = self.tail.clone();
        let mut i = 0;
        while i < self.pending.len() {
            let (line, hash) = match chain_line(&self.pending[i], &staged) {
                Ok(chained) => chained,
                Err(e) => {
                    self.pending.remove(i);
                    self.unencodable(e);
                    continue;
                }
            };
            let used = self.size + buf.len() as u64;
            if used > 0 && used + line.len() as u64 > self.config.max_bytes {
                self.flush(&mut buf, &mut hashes)?;
                self.rotate()?;
                i = 0;
                continue;
            }
            buf.extend_from_slice(&line);
            staged = ChainTail {
                seq: staged.seq + 1,
                hash: hash.clone(),
            };
            hashes.push(hash);
            i += 1;
            if buf.len() >= 1 << 20 {
                self.flush(&mut buf, &mut hashes)?;
                i = 0;
            }
        }
        self.flush(&mut buf, &mut hashes)
    }

    /// Writes `buf`, whose lines are the first `hashes.len()` pending
    /// records, and advances the chain past them.
    fn flush(&mut self, buf: &mut Vec<u8>, hashes: &mut Vec<String>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("audit log not open"))?;
        if let Err(e) = file.write_all(buf) {
            // Don't leave a torn line for the retry to append after.
            let _ = file.set_len(self.size);
            return Err(e);
        }
        self.size += buf.len() as u64;
        self.dirty = true;
        buf.clear();
        for hash in hashes.drain(..) {
            self.pending.pop_front();
            self.advance(hash);
        }
        Ok(())
    }

    fn advance(&mut self, hash: String) {
        self.tail = ChainTail {
            seq: self.tail.seq + 1,
            hash,
        };
        self.metrics.audit_buffered(-1);
    }

    fn ensure_open(&mut self) -> io::Result<()> {
        if let Some(file) = &self.file {
            if !self.check_path || still_at(file, &self.config.path) {
                return Ok(());
            }
            // Deleted or renamed while open (by hand, or by a log rotator
            // that does not know it): appended to, the records would go to
            // a file nothing can read once it is closed. A new one is
            // started at the path; the chain goes on from the last record,
            // so `audit verify` shows where records went missing.
            error!(
                path = %self.config.path.display(),
                seq = self.tail.seq,
                "The audit log was deleted or moved while open; starting a new file at its path (the chain continues from seq {}).",
                self.tail.seq
            );
            self.file = None;
        }
        let path = &self.config.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)?;
        }
        // Read too: to see whether the file ends with a newline.
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        // An existing file keeps whatever mode it had; an audit log is 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        self.size = file.metadata()?.len();
        // A line a crash cut short has no newline: a record appended to it
        // would share its line and be lost to verify with it. Its bytes
        // stay, as evidence of the crash; the newline ends them.
        if self.size > 0 && last_byte(&file, self.size)? != b'\n' {
            file.write_all(b"\n")?;
            self.size += 1;
        }
        // Some file systems (FUSE, 9p shares) give the open file and its
        // path different identities: the check would reopen at every batch.
        if self.check_path && !still_at(&file, path) {
            warn!(path = %path.display(), "This file system does not tell whether the audit log is still at its path; a deletion while open will not be noticed.");
            self.check_path = false;
        }
        self.file = Some(file);
        Ok(())
    }

    fn sync(&mut self) {
        if let Some(f) = &self.file
            && let Err(e) = f.sync_data()
        {
            self.sync_failed(e);
        }
        self.dirty = false;
        self.last_sync = Instant::now();
    }

    /// `audit.jsonl` → `.1`, `.1` → `.2`, ...: afterwards the rotations
    /// are at most `.1` … `.keep`, numbered without gaps.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_data()?;
        }
        let path = &self.config.path;
        let keep = self.config.keep;
        let present = rotations(path)?;
        // Only the files below the first free number move up: a gap a
        // crash left between two renames closes here instead of staying
        // until it ages out (verify takes a gap for a deleted file).
        let free = (1..=keep).find(|n| present.binary_search(n).is_err());
        // Past `keep`: the oldest file when none is free, and every file a
        // larger `keep` left before a restart, which would otherwise sit
        // behind a gap in the chain (verify: records removed) for good.
        let removed: Vec<String> = present
            .iter()
            .filter(|&&n| n > keep || (free.is_none() && n == keep))
            .map(|&n| rotated(path, n))
            .filter(|old| remove_rotation(old))
            .map(|old| old.display().to_string())
            .collect();
        for n in (1..free.unwrap_or(keep)).rev() {
            fs::rename(rotated(path, n), rotated(path, n + 1))?;
        }
        if keep > 0 {
            fs::rename(path, rotated(path, 1))?;
        } else {
            fs::remove_file(path)?;
        }
        self.size = 0;
        self.dirty = false;
        if removed.is_empty() {
            info!(path = %path.display(), seq = self.tail.seq, "Audit log rotated.");
        } else {
            info!(path = %path.display(), seq = self.tail.seq, keep, removed = %removed.join(", "), "Audit log rotated; the oldest files removed.");
        }
        self.ensure_open()
    }

    // Faults, each logged and counted in one call.

    /// A write failed: counted each time, logged once per outage; the
    /// records stay buffered and the write is retried in a second.
    fn write_failed(&mut self, e: io::Error) {
        AuditWriteFailed {
            path: &self.config.path,
            error: &e,
            buffered: self.pending.len(),
            repeat: self.failing,
        }
        .emit(&self.metrics);
        self.failing = true;
        self.file = None;
        self.retry_at = Some(Instant::now() + Duration::from_secs(1));
    }

    fn sync_failed(&self, e: io::Error) {
        AuditSyncFailed {
            path: &self.config.path,
            error: &e,
        }
        .emit(&self.metrics);
    }

    /// The buffer is full: the record is dropped (logged unless the log is
    /// already known to be failing).
    fn buffer_full(&self) {
        AuditRecordDropped {
            full: "buffer",
            quiet: self.failing,
        }
        .emit(&self.metrics);
    }

    /// A record that cannot be encoded is not written; the chain goes on
    /// with the next.
    fn unencodable(&self, e: EncodeError) {
        AuditRecordUnencodable { error: &e }.emit(&self.metrics);
    }
}

fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Whether `path` is still the file `file` has open (a stat and an fstat
/// a batch: nothing to a write).
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        // Gone from its path; or the open file cannot be asked, and writing
        // to it would fail anyway.
        _ => false,
    }
}

/// `audit.jsonl.N`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The numbers `N` of the rotations `path.N` present, ascending.
pub fn rotations(path: &Path) -> io::Result<Vec<u32>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let n = Path::new(&name)
            .extension()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0);
        // Exactly the name rotation gives (not `.01`, nor another log's).
        if let Some(n) = n
            && rotated(path, n).file_name() == Some(name.as_os_str())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Removes an old rotation; true if it was removed. A file that cannot be
/// removed is logged and left: rotation goes on (the records wait for
/// nothing), and verify fails at that file's link to the next.
fn remove_rotation(old: &Path) -> bool {
    match fs::remove_file(old) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            error!(path = %old.display(), error = %e, "Cannot remove an audit file past `keep`.");
            false
        }
    }
}

/// The last record of the log: in the file, or in `.1` if the file holds
/// none (it is new, or a crash cut its only line short).
fn recover_tail(path: &Path) -> io::Result<ChainTail> {
    for candidate in [path.to_path_buf(), rotated(path, 1)] {
        match last_record(&candidate) {
            Ok(Some(tail)) => return Ok(tail),
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(ChainTail::default())
}

/// The last record of `path`, read backwards from its end. Lines after it
/// that are not records are logged and left as they are: an unterminated
/// last line is a write a crash cut short (kill -9, or a power loss before
/// `fsync = "interval"` synced); `ensure_open` ends it with a newline
/// before the next record, and the chain continues from the record before
/// it, which is what verify checks the next record against.
fn last_record(path: &Path) -> io::Result<Option<ChainTail>> {
    let mut lines = LinesBackwards::open(path)?;
    let mut last = true;
    let mut skipped = Skipped::default();
    while let Some((offset, line)) = lines.next_line()? {
        let is_last = std::mem::replace(&mut last, false);
        if line.trim_ascii().is_empty() {
            continue;
        }
        if let Some(tail) = record_tail(&line) {
            skipped.log(path, Some(tail.seq));
            return Ok(Some(tail));
        }
        if is_last && !lines.terminated {
            skipped.torn = Some(offset);
        } else {
            skipped.other.push(offset);
        }
    }
    skipped.log(path, None);
    Ok(None)
}

/// The chain's place in a line that is a record: its `seq` and `hash`.
fn record_tail(line: &[u8]) -> Option<ChainTail> {
    let v: Value = serde_json::from_slice(line).ok()?;
    Some(ChainTail {
        seq: v["seq"].as_u64()?,
        hash: v["hash"].as_str()?.to_owned(),
    })
}

/// The lines after the last record of a file, by byte offset.
#[derive(Default)]
struct Skipped {
    /// The last line, unterminated: a write a crash cut short.
    torn: Option<u64>,
    /// Other lines that are not records, last first.
    other: Vec<u64>,
}

impl Skipped {
    /// Logs each, and where the chain continues: from `seq`, or (None)
    /// from `.1` or the start.
    fn log(&self, path: &Path, seq: Option<u64>) {
        let from = seq.map_or_else(
            || "the rotated file or the start".to_owned(),
            |s| format!("seq {s}"),
        );
        if let Some(offset) = self.torn {
            warn!(path = %path.display(), offset, continues_from = %from, "The audit log's last line is a record cut short (a crash during a write); its bytes are kept and ended with a newline, and the chain continues from the last complete record.");
        }
        for offset in &self.other {
            warn!(path = %path.display(), offset, continues_from = %from, "A line after the audit log's last record is not a record (altered?); it is left as it is, and the chain continues from the last record.");
        }
    }
}

/// A file's lines from its end, each with its byte offset, read in 64 KiB
/// chunks: the chain's tail is at the end of a file of up to `max_bytes`.
struct LinesBackwards {
    file: File,
    /// Whether the file ends with a newline (its last line is complete).
    terminated: bool,
    /// The lines not yet returned are the bytes before `pos`, then `buf`.
    pos: u64,
    buf: Vec<u8>,
    done: bool,
}

impl LinesBackwards {
    fn open(path: &Path) -> io::Result<LinesBackwards> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let terminated = len == 0 || last_byte(&file, len)? == b'\n';
        Ok(LinesBackwards {
            file,
            terminated,
            pos: len - u64::from(len > 0 && terminated),
            buf: Vec::new(),
            done: len == 0,
        })
    }

    /// The line before those returned so far, and its offset.
    fn next_line(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(nl) = self.buf.iter().rposition(|b| *b == b'\n') {
                let line = self.buf.split_off(nl + 1);
                self.buf.pop();
                return Ok(Some((self.pos + nl as u64 + 1, line)));
            }
            if self.pos == 0 {
                self.done = true;
                return Ok(Some((0, std::mem::take(&mut self.buf))));
            }
            let start = self.pos.saturating_sub(64 * 1024);
            let mut chunk = vec![0; (self.pos - start) as usize];
            self.file.read_exact_at(&mut chunk, start)?;
            chunk.append(&mut self.buf);
            self.buf = chunk;
            self.pos = start;
        }
    }
}

/// The last byte of `file`, `len` bytes long (not 0).
fn last_byte(file: &File, len: u64) -> io::Result<u8> {
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_are_the_names_rotation_gives() {
        let dir = std::env::temp_dir().join(format!("dw-rotations-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        let log = dir.join("a.jsonl");
        for name in [
            "a.jsonl",
            "a.jsonl.12",
            "a.jsonl.2",
            "a.jsonl.0",
            "a.jsonl.01",
            "a.jsonl.+3",
            "a.jsonl.x",
            "a.jsonl.4.gz",
            "b.jsonl.5",
            "a.log.6",
        ] {
            fs::write(dir.join(name), "").expect("write");
        }
        assert_eq!(rotations(&log).expect("listed"), vec![2, 12]);
        let _ = fs::remove_dir_all(&dir);
    }
}
