//! `dockwarden audit verify`: checks the chain of an audit log and its
//! rotations, oldest file first, and names the first file and line that was
//! altered, removed, inserted or reordered. A record a crash cut short is
//! named too, as torn, and the check goes on past it. An unfinished last
//! line of the live file may be a write in progress: [`verify_settled`]
//! looks again before it calls it torn.
//!
//! It owns reading a log back as evidence; it must not write, and it shares
//! the line format with the writer only through `chain`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Record;
use super::chain::{ChainTail, GENESIS, chain_line};
use super::writer::{rotated, rotations};

/// Why a chain does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}:{line}: {problem}")]
    Broken {
        file: String,
        line: usize,
        problem: String,
    },
    #[error(
        "{}: missing, yet {oldest} exists (rotation numbers a log's files without gaps): deleted or renamed, its records are not in the chain",
        .missing.join(", ")
    )]
    Missing {
        missing: Vec<String>,
        oldest: String,
    },
    #[error(
        "{file}:{line}: torn record: the line stops mid-record, as a write cut short by a crash leaves it; that record was lost (not altered), and the chain is checked on from the record before it"
    )]
    Torn { file: String, line: usize },
    #[error(
        "{file}:{line}: torn record: the live file's last line stops mid-record and was not finished while checked again: a write cut short by a crash (the writer ends the line at its next start); that record was lost (not altered)"
    )]
    Unfinished { file: String, line: usize },
    #[error("no audit records found")]
    Empty,
}

/// Files to verify, oldest first: the files given in order, or for a
/// directory its `*.jsonl` logs with their rotations (`.N` … `.1`, then the
/// live file).
pub fn verify_inputs(args: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    Ok(chains(args)?.into_iter().flatten().collect())
}

/// The chains to verify, each its files oldest first: the files given, in
/// order, are one chain; each log of a directory is one of its own (two
/// sidecars' logs, or a copy, side by side are not one chain).
pub fn chains(args: &[PathBuf]) -> Result<Vec<Vec<PathBuf>>, VerifyError> {
    let mut given = Vec::new();
    let mut chains = Vec::new();
    for arg in args {
        if arg.is_dir() {
            chains.extend(logs_in(arg)?);
        } else {
            given.push(arg.clone());
        }
    }
    if !given.is_empty() {
        chains.insert(0, given);
    }
    Ok(chains)
}

/// The logs of `dir`, oldest first, each with every rotation present.
///
/// Every `.N` is looked for, not just `.1` upwards until one is missing: a
/// deleted `.1` would otherwise hide `.2`, `.3`… and the chain would verify
/// without them. Rotation keeps the numbers contiguous (`writer::rotate`),
/// so a number missing below the highest present, or a live file missing
/// beside its rotations, is a file deleted or renamed: an error naming it.
fn logs_in(dir: &Path) -> Result<Vec<Vec<PathBuf>>, VerifyError> {
    let unreadable = |e: std::io::Error| VerifyError::Read {
        file: dir.display().to_string(),
        reason: e.to_string(),
    };
    // The `*.jsonl` logs, and those only their rotations still name.
    let mut logs = BTreeSet::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let log = if path.extension().is_some_and(|x| x == "jsonl") {
            path
        } else {
            path.with_extension("")
        };
        if log.extension().is_some_and(|x| x == "jsonl") {
            logs.insert(log);
        }
    }
    let mut files = Vec::new();
    for log in logs {
        // Each file's number: 0 is the live file.
        let mut numbers = rotations(&log).map_err(unreadable)?;
        if log.exists() {
            numbers.insert(0, 0);
        }
        let highest = numbers.last().copied().unwrap_or(0);
        let missing: Vec<String> = (0..highest)
            .filter(|n| numbers.binary_search(n).is_err())
            .map(|n| numbered(&log, n).display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(VerifyError::Missing {
                missing,
                oldest: numbered(&log, highest).display().to_string(),
            });
        }
        files.push(numbers.iter().rev().map(|&n| numbered(&log, n)).collect());
    }
    Ok(files)
}

/// File number `n` of `log`: the live file for 0, else rotation `.n`.
fn numbered(log: &Path, n: u32) -> PathBuf {
    if n == 0 {
        log.to_path_buf()
    } else {
        rotated(log, n)
    }
}

/// Checks the chain across `files` (oldest first). Returns the number of
/// records and the first `seq` (above 1 when older files were rotated away),
/// or what is wrong, in file order: each torn record (checking goes on past
/// it), then what stopped the check, if anything.
pub fn verify(files: &[PathBuf]) -> Result<(u64, u64), Vec<VerifyError>> {
    let mut prev: Option<ChainTail> = None;
    let mut first_seq = 0;
    let mut count = 0u64;
    let mut problems = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let name = file.display().to_string();
        let unreadable = |e: std::io::Error| VerifyError::Read {
            file: name.clone(),
            reason: e.to_string(),
        };
        let f = match File::open(file) {
            Ok(f) => f,
            Err(e) => return failed(problems, unreadable(e)),
        };
        let last_file = n + 1 == files.len();
        let mut reader = BufReader::new(f);
        let mut line = Vec::new();
        let mut i = 0;
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return failed(problems, unreadable(e)),
            }
            // Whether the line was ended: the writer ends each record, and
            // a torn one when it starts again.
            let ended = line.last() == Some(&b'\n');
            if ended {
                line.pop();
            }
            i += 1;
            if line.trim_ascii().is_empty() {
                continue;
            }
            let broken = |problem: String| VerifyError::Broken {
                file: name.clone(),
                line: i,
                problem,
            };
            let record: Record = match serde_json::from_slice(&line) {
                Ok(record) => record,
                // Not ended, at the end of the live file: perhaps still
                // being written.
                Err(_) if torn(&line) && !ended && last_file => {
                    problems.push(VerifyError::Unfinished {
                        file: name.clone(),
                        line: i,
                    });
                    continue;
                }
                // The writer continues the chain from the record before a
                // torn line, so the next record is checked against that.
                Err(_) if torn(&line) => {
                    problems.push(VerifyError::Torn {
                        file: name.clone(),
                        line: i,
                    });
                    continue;
                }
                Err(e) => {
                    let problem = format!("not a JSON record ({e}): altered");
                    return failed(problems, broken(problem));
                }
            };
            match check(record, prev.as_ref(), &line) {
                Ok(tail) => {
                    if prev.is_none() {
                        first_seq = tail.seq;
                    }
                    prev = Some(tail);
                    count += 1;
                }
                Err(problem) => return failed(problems, broken(problem)),
            }
        }
    }
    if count == 0 && problems.is_empty() {
        problems.push(VerifyError::Empty);
    }
    if problems.is_empty() {
        Ok((count, first_seq))
    } else {
        Err(problems)
    }
}

/// What [`verify`] finds: the records and the first `seq`, or what is wrong.
pub type Verdict = Result<(u64, u64), Vec<VerifyError>>;

/// [`verify`], looked at again while the only thing wrong is the live
/// file's unfinished last line, for up to `patience` after the first look
/// (which may take long on a large log): the writer appends a batch in one
/// write, which a reader can see half done. Each look takes the files from
/// `files` anew (a rotation may follow the write). A line that stays
/// unfinished was cut short by a crash, and is reported as torn. Returns
/// the files of the last look too.
pub fn verify_settled(
    files: impl Fn() -> Result<Vec<PathBuf>, VerifyError>,
    patience: Duration,
) -> (Vec<PathBuf>, Verdict) {
    let unfinished = |verdict: &Verdict| {
        verdict.as_ref().is_err_and(|problems| {
            problems
                .iter()
                .any(|p| matches!(p, VerifyError::Unfinished { .. }))
        })
    };
    let look = || match files() {
        Ok(files) => {
            let verdict = verify(&files);
            (files, verdict)
        }
        Err(e) => (Vec::new(), Err(vec![e])),
    };
    let (mut used, mut verdict) = look();
    if !unfinished(&verdict) {
        return (used, verdict);
    }
    // A write was under way, and a rotation may follow it: files renamed
    // one by one can look missing or unlinked for a moment too. Whatever
    // is still wrong at the deadline is what is reported.
    let deadline = Instant::now() + patience;
    while verdict.is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        (used, verdict) = look();
    }
    (used, verdict)
}

/// The problems found before `last`, and `last`, which stopped the check.
fn failed<T>(mut problems: Vec<VerifyError>, last: VerifyError) -> Result<T, Vec<VerifyError>> {
    problems.push(last);
    Err(problems)
}

/// Checks one record (parsed from `line`) against the one before it
/// (None: it is the first); returns its place in the chain, or what is
/// wrong with it.
fn check(mut record: Record, prev: Option<&ChainTail>, line: &[u8]) -> Result<ChainTail, String> {
    let hash = match record.remove("hash") {
        Some(Value::String(h)) => h,
        _ => return Err("record has no hash".into()),
    };
    let seq = record
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or("record has no seq")?;
    let prev_hash = record
        .get("prev_hash")
        .and_then(Value::as_str)
        .ok_or("record has no prev_hash")?;
    // What the writer makes of this record in its place: the hash, and the
    // very bytes of its line. The hash covers the record as parsed; the
    // bytes catch what parsing hides: readers disagree on a key given twice
    // (the parse here keeps the last, some keep the first, some reject the
    // line), so a line with a second `user` or `command` would verify while
    // showing others something else.
    let place = ChainTail {
        seq: seq.saturating_sub(1),
        hash: prev_hash.to_owned(),
    };
    let (written, computed) = chain_line(&record, &place).map_err(|e| e.to_string())?;
    if computed != hash {
        return Err(format!("record seq {seq} was altered (hash mismatch)"));
    }
    if written.strip_suffix(b"\n") != Some(line) {
        return Err(format!(
            "record seq {seq} is not as the writer wrote it (a key given twice, keys out of order or spaces added): altered"
        ));
    }
    match prev {
        None if seq == 1 && prev_hash != GENESIS => {
            return Err("first record does not start the chain".into());
        }
        None => {}
        Some(p) if seq != p.seq + 1 => {
            return Err(format!(
                "seq {seq} follows seq {}: records removed, inserted or reordered",
                p.seq
            ));
        }
        Some(p) if prev_hash != p.hash => {
            return Err(format!(
                "prev_hash does not match the record before (seq {}): records removed, inserted or reordered",
                p.seq
            ));
        }
        Some(_) => {}
    }
    Ok(ChainTail { seq, hash })
}

/// Whether a line that is not a record is one a crash cut short: the start
/// of a JSON value that stops before its end, perhaps followed by the
/// zeros some file systems leave where data never landed. Anything else
/// that does not parse was altered.
fn torn(line: &[u8]) -> bool {
    let end = line.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    end == 0
        || serde_json::from_slice::<Value>(&line[..end])
            .is_err_and(|e| e.classify() == serde_json::error::Category::Eof)
}
