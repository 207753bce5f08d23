//! Which audit records are the same record, so that a replay after a crash
//! is not written twice.
//!
//! After a crash the events handled since the last checkpoint are handled
//! again. Each record has an identity; the writer remembers the identities
//! of the last records written ([`Recent`], read back from the log at start
//! with the same [`identity`] as when writing) and skips a repeat:
//!
//! - a verified exec record is (kind, container ID, exec ID): one start and
//!   one end per exec, whatever else a replay computes differently;
//! - any other record is its canonical JSON before it is chained (the same
//!   event handled twice gives the same record);
//! - an unverified exec record (`exec_id: null`) that names a
//!   `claimed_exec_id` is also a repeat when a *verified* record of that
//!   exec in that container was written: the replay of an exec audited
//!   before its container was removed. The claim comes from event
//!   attributes, which a container's labels can forge, so it is matched
//!   only against verified identities, and only in the same container.
//!
//! It owns the identities and their memory; it must not write or decide
//! what a record holds.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use super::Record;
use super::chain::canonical_unchained;
use super::writer::rotated;
use crate::json::EncodeError;

/// How many record identities the writer remembers.
const RECENT_IDENTITIES: usize = 50_000;

/// The identity of the verified record of `exec` in `container`.
fn exec_identity(kind: &str, container: Option<&str>, exec: &str) -> u64 {
    let mut h = DefaultHasher::new();
    ("exec", kind, container, exec).hash(&mut h);
    h.finish()
}

fn str_field<'a>(record: &'a Record, key: &str) -> Option<&'a str> {
    record.get(key).and_then(Value::as_str)
}

/// A record's identity: for a verified exec, (kind, container ID, exec ID);
/// else the record's canonical JSON without its place in the chain.
pub fn identity(record: &Record) -> Result<u64, EncodeError> {
    if let (Some(kind), Some(exec)) = (str_field(record, "kind"), str_field(record, "exec_id")) {
        return Ok(exec_identity(kind, str_field(record, "container_id"), exec));
    }
    let mut h = DefaultHasher::new();
    ("json", canonical_unchained(record)?).hash(&mut h);
    Ok(h.finish())
}

/// For an unverified exec record that names the exec it claims to be: the
/// identity the verified record of that exec, in this record's container,
/// has. None for every other record.
fn claimed_identity(record: &Record) -> Option<u64> {
    if str_field(record, "exec_id").is_some() {
        return None;
    }
    let kind = str_field(record, "kind")?;
    let claimed = str_field(record, "claimed_exec_id")?;
    Some(exec_identity(
        kind,
        str_field(record, "container_id"),
        claimed,
    ))
}

/// The identities of the last records written, oldest first, bounded.
#[derive(Default)]
pub(super) struct Recent {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl Recent {
    /// The identities of the last records on disk (`.1`, then the live
    /// file), computed as [`identity`] computes them before writing.
    pub(super) fn read_back(path: &Path) -> io::Result<Recent> {
        let mut recent = Recent::default();
        for candidate in [rotated(path, 1), path.to_path_buf()] {
            let f = match File::open(&candidate) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(f).split(b'\n') {
                let line = line?;
                if let Ok(record) = serde_json::from_slice::<Record>(&line)
                    && let Ok(id) = identity(&record)
                {
                    recent.remember(id);
                }
            }
        }
        Ok(recent)
    }

    /// Whether `record` (whose identity is `id`) was written already, as
    /// itself or, for an unverified claim, as the verified exec it claims.
    pub(super) fn is_repeat(&self, record: &Record, id: u64) -> bool {
        self.set.contains(&id) || claimed_identity(record).is_some_and(|c| self.set.contains(&c))
    }

    pub(super) fn remember(&mut self, id: u64) {
        if !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT_IDENTITIES
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::audit::{AuditConfig, AuditSink, Fsync, Severity};
    use crate::metrics::Metrics;

    const C1: &str = "c1c1c1";
    const C2: &str = "c2c2c2";

    /// An exec record of `container`: verified as `exec`, or unverified
    /// claiming `claimed`.
    fn exec(kind: &str, container: &str, exec: Option<&str>, claimed: Option<&str>) -> Record {
        let mut r = Record::new();
        r.insert("kind".into(), kind.into());
        r.insert("container_id".into(), container.into());
        r.insert("exec_id".into(), exec.map_or(Value::Null, Value::from));
        r.insert("exec_id_verified".into(), exec.is_some().into());
        if let Some(c) = claimed {
            r.insert("claimed_exec_id".into(), c.into());
        }
        r.insert("command".into(), "true".into());
        r
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dw-identity-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// One sink's life: submits `records` in order, then closes.
    fn write(path: &Path, records: &[Record]) {
        let sink = AuditSink::start(
            AuditConfig {
                path: path.to_path_buf(),
                fsync: Fsync::Always,
                host: Some("test".into()),
                ..AuditConfig::default()
            },
            Arc::new(Metrics::new()),
        );
        let h = sink.handle();
        for r in records {
            h.submit(r.clone(), Severity::Low);
        }
        sink.close(Duration::from_secs(10));
    }

    /// (kind, exec_id or "claimed:<id>") of each line written.
    fn lines(path: &Path) -> Vec<(String, String)> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let r: Record = serde_json::from_str(l).expect("JSON");
                let exec = match (str_field(&r, "exec_id"), str_field(&r, "claimed_exec_id")) {
                    (Some(e), _) => e.to_owned(),
                    (None, Some(c)) => format!("claimed:{c}"),
                    (None, None) => "-".to_owned(),
                };
                (str_field(&r, "kind").unwrap_or("").to_owned(), exec)
            })
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn a_claim_is_the_identity_of_the_verified_exec_in_the_same_container_only() {
        let verified = exec("exec_start", C1, Some("e1"), None);
        let claim = exec("exec_start", C1, None, Some("e1"));
        let elsewhere = exec("exec_start", C2, None, Some("e1"));
        let end = exec("exec_end", C1, None, Some("e1"));
        let id = identity(&verified).expect("encodes");
        assert_eq!(claimed_identity(&claim), Some(id));
        assert_ne!(claimed_identity(&elsewhere), Some(id));
        assert_ne!(claimed_identity(&end), Some(id));
        assert_eq!(claimed_identity(&verified), None, "only unverified claim");
        // A verified record's other fields do not change its identity.
        let mut replayed = verified.clone();
        replayed.insert("duration_ms".into(), Value::Null);
        assert_eq!(identity(&replayed).expect("encodes"), id);
    }

    #[test]
    fn an_unverified_claim_of_an_exec_already_verified_is_skipped() {
        let dir = temp("claimed");
        let path = dir.join("audit.jsonl");
        write(
            &path,
            &[
                exec("exec_start", C1, Some("e1"), None),
                exec("exec_end", C1, Some("e1"), None),
                // The replay, after the container was removed.
                exec("exec_start", C1, None, Some("e1")),
                exec("exec_end", C1, None, Some("e1")),
            ],
        );
        assert_eq!(
            lines(&path),
            pairs(&[("exec_start", "e1"), ("exec_end", "e1")])
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unverified_claim_of_an_exec_of_another_container_is_written() {
        let dir = temp("elsewhere");
        let path = dir.join("audit.jsonl");
        write(
            &path,
            &[
                exec("exec_start", C1, Some("e1"), None),
                // C2's label `execID=e1` forges the claim: not C1's exec.
                exec("exec_start", C2, None, Some("e1")),
            ],
        );
        assert_eq!(
            lines(&path),
            pairs(&[("exec_start", "e1"), ("exec_start", "claimed:e1")])
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unverified_exec_never_verified_is_written_once_even_when_replayed() {
        let dir = temp("never");
        let path = dir.join("audit.jsonl");
        let start = exec("exec_start", C1, None, Some("e9"));
        let end = exec("exec_end", C1, None, Some("e9"));
        write(&path, &[start.clone(), end.clone(), start, end]);
        assert_eq!(
            lines(&path),
            pairs(&[("exec_start", "claimed:e9"), ("exec_end", "claimed:e9")])
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn identities_read_back_from_the_log_at_start_work_the_same() {
        let dir = temp("readback");
        let path = dir.join("audit.jsonl");
        let unverified = exec("exec_start", C1, None, Some("e9"));
        write(
            &path,
            &[exec("exec_start", C1, Some("e1"), None), unverified.clone()],
        );
        // A restart: the writer knows only what is on disk.
        write(
            &path,
            &[
                exec("exec_start", C1, None, Some("e1")),
                exec("exec_start", C1, Some("e1"), None),
                unverified,
                exec("exec_start", C2, None, Some("e1")),
            ],
        );
        assert_eq!(
            lines(&path),
            pairs(&[
                ("exec_start", "e1"),
                ("exec_start", "claimed:e9"),
                ("exec_start", "claimed:e1"),
            ])
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
