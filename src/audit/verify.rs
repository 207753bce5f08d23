//! `dockwarden audit verify`: checks the chain of an audit log and its
//! rotations, oldest file first, and names the first file and line that was
//! altered, removed, inserted or reordered.
//!
//! It owns reading a log back as evidence; it must not write, and it shares
//! the line format with the writer only through `chain`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Record;
use super::chain::{ChainTail, GENESIS, record_hash};
use super::writer::rotated;

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
    #[error("no audit records found")]
    Empty,
}

/// Files to verify, oldest first: the files given in order, or for a
/// directory its `*.jsonl` logs with their rotations (`.N` … `.1`, then the
/// live file).
pub fn verify_inputs(args: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut files = Vec::new();
    for arg in args {
        if arg.is_dir() {
            files.extend(logs_in(arg)?);
        } else {
            files.push(arg.clone());
        }
    }
    Ok(files)
}

/// The logs of `dir`, oldest first, each with every rotation present.
///
/// Every `.N` is looked for, not just `.1` upwards until one is missing: a
/// deleted `.1` would otherwise hide `.2`, `.3`… and the chain would verify
/// without them. Rotation keeps the numbers contiguous (`writer::rotate`),
/// so a number missing below the highest present, or a live file missing
/// beside its rotations, is a file deleted or renamed: an error naming it.
fn logs_in(dir: &Path) -> Result<Vec<PathBuf>, VerifyError> {
    let unreadable = |e: std::io::Error| VerifyError::Read {
        file: dir.display().to_string(),
        reason: e.to_string(),
    };
    // Each log's files present, by number: 0 is the live file.
    let mut logs: BTreeMap<PathBuf, Vec<u32>> = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        if let Some((log, n)) = log_file(&entry.map_err(unreadable)?.path()) {
            logs.entry(log).or_default().push(n);
        }
    }
    let mut files = Vec::new();
    for (log, mut numbers) in logs {
        numbers.sort_unstable();
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
        files.extend(numbers.iter().rev().map(|&n| numbered(&log, n)));
    }
    Ok(files)
}

/// `(LOG, N)` for a rotation `LOG.N` of a log `*.jsonl`, `(LOG, 0)` for the
/// log itself; None for any other file.
fn log_file(path: &Path) -> Option<(PathBuf, u32)> {
    let ext = path.extension()?;
    if ext == "jsonl" {
        return Some((path.to_path_buf(), 0));
    }
    let n: u32 = ext.to_str()?.parse().ok()?;
    let log = path.with_extension("");
    // `.01` or `.+1` is not a name rotation gives.
    (n > 0 && log.extension()? == "jsonl" && rotated(&log, n) == path).then_some((log, n))
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
/// records and the first `seq` (above 1 when older files were rotated away).
pub fn verify(files: &[PathBuf]) -> Result<(u64, u64), VerifyError> {
    let mut prev: Option<ChainTail> = None;
    let mut first_seq = 0;
    let mut count = 0u64;
    for file in files {
        let name = file.display().to_string();
        let f = File::open(file).map_err(|e| VerifyError::Read {
            file: name.clone(),
            reason: e.to_string(),
        })?;
        for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
            let line = line.map_err(|e| VerifyError::Read {
                file: name.clone(),
                reason: e.to_string(),
            })?;
            if line.trim_ascii().is_empty() {
                continue;
            }
            let broken = |problem: String| VerifyError::Broken {
                file: name.clone(),
                line: i + 1,
                problem,
            };
            let mut record: Record = serde_json::from_slice(&line)
                .map_err(|e| broken(format!("not a JSON record ({e}): altered or truncated")))?;
            let hash = match record.remove("hash") {
                Some(Value::String(h)) => h,
                _ => return Err(broken("record has no hash".into())),
            };
            let seq = record
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or_else(|| broken("record has no seq".into()))?;
            let prev_hash = record
                .get("prev_hash")
                .and_then(Value::as_str)
                .ok_or_else(|| broken("record has no prev_hash".into()))?
                .to_owned();
            let computed = record_hash(&prev_hash, &record).map_err(|e| broken(e.to_string()))?;
            if computed != hash {
                return Err(broken(format!(
                    "record seq {seq} was altered (hash mismatch)"
                )));
            }
            match &prev {
                None => {
                    first_seq = seq;
                    if seq == 1 && prev_hash != GENESIS {
                        return Err(broken("first record does not start the chain".into()));
                    }
                }
                Some(p) => {
                    if seq != p.seq + 1 {
                        return Err(broken(format!(
                            "seq {seq} follows seq {}: records removed, inserted or reordered",
                            p.seq
                        )));
                    }
                    if prev_hash != p.hash {
                        return Err(broken(format!(
                            "prev_hash does not match the record before (seq {}): records removed, inserted or reordered",
                            p.seq
                        )));
                    }
                }
            }
            prev = Some(ChainTail { seq, hash });
            count += 1;
        }
    }
    if count == 0 {
        return Err(VerifyError::Empty);
    }
    Ok((count, first_seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logs_files_are_the_names_rotation_gives() {
        let log = PathBuf::from("d/a.jsonl");
        assert_eq!(log_file(&log), Some((log.clone(), 0)));
        assert_eq!(log_file(Path::new("d/a.jsonl.12")), Some((log, 12)));
        for other in [
            "d/a.jsonl.0",
            "d/a.jsonl.01",
            "d/a.jsonl.+1",
            "d/a.jsonl.x",
            "d/a.jsonl.1.gz",
            "d/a.log.1",
            "d/a.log",
        ] {
            assert_eq!(log_file(Path::new(other)), None, "{other}");
        }
    }
}
