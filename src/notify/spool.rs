//! The spool: a target's undelivered messages on disk, so they survive a
//! crash or a restart (delivery is at least once, and a message keeps its
//! id).
//!
//! Two append-only files per target under `<state dir>/notify/`:
//! `<target>.jsonl` gets one line per message as it is queued
//! (`{"queued_at":…,"msg":{…}}`), and `<target>.done` one line per message
//! settled (delivered, coalesced into a delivered summary, or refused for
//! good), holding its id as a JSON string. Loading keeps the queued lines
//! whose id is not done, in order, and rewrites the queue file with just
//! those (a new file renamed over the old, so a crash mid-way leaves one or
//! the other). A torn last line, from a crash mid-write, is skipped. When
//! nothing is pending both files are emptied; a long backlog is compacted
//! the same way as at load.
//!
//! Writes are not fsynced except the compaction's: the files survive the
//! process being killed, not the machine losing power. A message answered
//! 2xx is marked done before anything else happens, so only a crash in
//! that instant can send it again (and it carries its `Idempotency-Key`).
//!
//! It owns the file format; it must not decide what is delivered.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Message;
use crate::json::{EncodeError, encode};

/// A queued message with the time it was queued (Unix ns), which the
/// latency metric measures from, across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub queued_at: i64,
    pub msg: Message,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("notification spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// What loading found besides the pending messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Lines that were not a message (a torn write, a foreign edit).
    pub unreadable: usize,
    /// Queued lines already settled, or repeats of an id.
    pub settled: usize,
}

/// One target's spool files, open for appending.
pub struct Spool {
    queue_path: PathBuf,
    done_path: PathBuf,
    queue: File,
    done: File,
    /// Lines in the done file: compaction is due when they pile up.
    done_lines: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

fn append_open(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))
}

fn read_or_empty(path: &Path) -> Result<Vec<u8>, SpoolError> {
    match fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Complete lines only: bytes after the last newline are a torn write.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(&bytes[..0], |i| &bytes[..i]);
    complete.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

impl Spool {
    /// Opens the spool of `target` under `dir` (created if missing) and
    /// returns the messages still to deliver, in the order they were
    /// queued; the queue file is rewritten to hold just those.
    pub fn open(dir: &Path, target: &str) -> Result<(Spool, Vec<Entry>, Loaded), SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let queue_path = dir.join(format!("{target}.jsonl"));
        let done_path = dir.join(format!("{target}.done"));
        let mut loaded = Loaded::default();

        let done_bytes = read_or_empty(&done_path)?;
        let mut done: HashSet<String> = HashSet::new();
        for line in lines(&done_bytes) {
            match serde_json::from_slice::<String>(line) {
                Ok(id) => {
                    done.insert(id);
                }
                Err(_) => loaded.unreadable += 1,
            }
        }
        let queue_bytes = read_or_empty(&queue_path)?;
        let mut pending = Vec::new();
        let torn = !queue_bytes.is_empty() && !queue_bytes.ends_with(b"\n");
        loaded.unreadable += usize::from(torn);
        for line in lines(&queue_bytes) {
            match serde_json::from_slice::<Entry>(line) {
                // `insert` is false for an id seen already: once is enough.
                Ok(e) if done.insert(e.msg.id.clone()) => pending.push(e),
                Ok(_) => loaded.settled += 1,
                Err(_) => loaded.unreadable += 1,
            }
        }
        let mut spool = Spool {
            queue: append_open(&queue_path)?,
            done: append_open(&done_path)?,
            queue_path,
            done_path,
            done_lines: 0,
        };
        spool.compact(&pending)?;
        Ok((spool, pending, loaded))
    }

    /// Appends newly queued messages.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        for e in entries {
            buf.extend_from_slice(&encode("notification spool entry", e)?);
            buf.push(b'\n');
        }
        self.queue.write_all(&buf).map_err(io(&self.queue_path))
    }

    /// Marks messages settled: they are never sent again.
    pub fn settle<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        let mut n = 0;
        for id in ids {
            buf.extend_from_slice(&encode("notification spool entry", id)?);
            buf.push(b'\n');
            n += 1;
        }
        self.done.write_all(&buf).map_err(io(&self.done_path))?;
        self.done_lines += n;
        Ok(())
    }

    /// Whether the done file has grown enough, against `pending` messages,
    /// that a compaction pays.
    pub fn wants_compaction(&self, pending: usize) -> bool {
        self.done_lines >= 1024 && self.done_lines > pending
    }

    /// Nothing is pending: empties both files.
    pub fn clear(&mut self) -> Result<(), SpoolError> {
        if self.done_lines == 0 {
            return Ok(());
        }
        // The queue first: a crash between the two leaves only done ids.
        self.queue.set_len(0).map_err(io(&self.queue_path))?;
        self.done.set_len(0).map_err(io(&self.done_path))?;
        self.done_lines = 0;
        Ok(())
    }

    /// Rewrites the queue file to hold exactly `pending`, and empties the
    /// done file.
    pub fn compact<'a>(
        &mut self,
        pending: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<(), SpoolError> {
        let tmp = self.queue_path.with_extension("jsonl.tmp");
        let mut buf = Vec::new();
        for e in pending {
            buf.extend_from_slice(&encode("notification spool entry", e)?);
            buf.push(b'\n');
        }
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&buf).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &self.queue_path).map_err(io(&self.queue_path))?;
        self.queue = append_open(&self.queue_path)?;
        self.done.set_len(0).map_err(io(&self.done_path))?;
        self.done_lines = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Severity;

    fn entry(id: &str) -> Entry {
        Entry {
            queued_at: 7,
            msg: Message {
                id: id.into(),
                time_nano: 1,
                key: "k".into(),
                severity: Severity::Info,
                title: "t".into(),
                text: "x\ny".into(),
                container: None,
                fields: serde_json::Map::new(),
            },
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dw-spool-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn ids(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.msg.id.as_str()).collect()
    }

    #[test]
    fn pending_survives_reopen_in_order_and_settled_ones_do_not() {
        let d = dir("reopen");
        let (mut s, pending, _) = Spool::open(&d, "ops").expect("open");
        assert!(pending.is_empty());
        s.append(&[entry("a"), entry("b\"\n"), entry("c")])
            .expect("append");
        s.settle(["a"]).expect("settle");
        drop(s);
        let (mut s, pending, loaded) = Spool::open(&d, "ops").expect("reopen");
        assert_eq!(ids(&pending), ["b\"\n", "c"]);
        assert_eq!(loaded.settled, 1);
        assert_eq!(pending[0], entry("b\"\n"), "kept whole");
        s.settle(["b\"\n", "c"]).expect("settle");
        s.clear().expect("clear");
        drop(s);
        let (_, pending, _) = Spool::open(&d, "ops").expect("reopen");
        assert!(pending.is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_last_line_and_repeated_ids_are_skipped() {
        let d = dir("torn");
        let (mut s, _, _) = Spool::open(&d, "t").expect("open");
        s.append(&[entry("a"), entry("a"), entry("b")])
            .expect("append");
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("t.jsonl"))
            .expect("open");
        f.write_all(b"{\"queued_at\":1,\"msg\":{\"id\":\"tor")
            .expect("write");
        drop(f);
        let (mut s, pending, loaded) = Spool::open(&d, "t").expect("reopen");
        assert_eq!(ids(&pending), ["a", "b"]);
        assert_eq!(
            loaded,
            Loaded {
                unreadable: 1,
                settled: 1
            }
        );
        // The torn bytes are gone: a new line is not glued onto them.
        s.append(&[entry("c")]).expect("append");
        drop(s);
        let (_, pending, loaded) = Spool::open(&d, "t").expect("reopen");
        assert_eq!(ids(&pending), ["a", "b", "c"]);
        assert_eq!(loaded.unreadable, 0);
        let _ = fs::remove_dir_all(&d);
    }
}
