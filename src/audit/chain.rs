//! The hash chain of the audit log: how one record becomes one line.
//!
//! A line is the record's canonical JSON (keys sorted, no spaces) with its
//! `seq`, the previous record's `hash` as `prev_hash` ([`GENESIS`] for the
//! first record of a brand-new log) and its own `hash`: SHA-256 (hex) of
//! `prev_hash` followed by the canonical JSON of the record without `hash`.
//! Also the records' RFC 3339 timestamps.
//!
//! It owns the line format and the hash, which the writer and `verify` must
//! agree on; it must not touch files or decide what is written.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Record;
use crate::json::{EncodeError, encode};

/// `prev_hash` of the first record of a brand-new log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an encode failure of a record is called, in logs and in
/// `dockwarden_encode_errors_total{what}`.
pub const WHAT: &str = "audit record";

/// The chain's position: the last record written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTail {
    pub seq: u64,
    pub hash: String,
}

impl Default for ChainTail {
    fn default() -> Self {
        ChainTail {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// Serialises `record` with its place in the chain; returns the line
/// (with `\n`) and the record's hash. A record that cannot be encoded has
/// no line: the error says so, and the chain does not move.
///
/// The record is borrowed, not copied: the writer keeps it until its line
/// is on disk, and a copy of every record (a map of a score of strings)
/// was most of the writer's allocations. It is serialised once: the hash
/// covers the line without its `hash` entry, so that entry is spliced in
/// where its key sorts once the rest is hashed (serialising twice, once to
/// hash and once to write, was a fifth of the audit writer's time).
pub fn chain_line(record: &Record, tail: &ChainTail) -> Result<(Vec<u8>, String), EncodeError> {
    let seq = Value::from(tail.seq + 1);
    let prev = Value::from(tail.hash.as_str());
    let mut line = Vec::with_capacity(1024);
    let at = write_canonical(&mut line, record, &[("prev_hash", &prev), ("seq", &seq)])?;
    let hash = hash_of(&tail.hash, &line);
    // `"hash":"<64 hex>"`, and the comma between it and its neighbour:
    // `prev_hash` and `seq` always follow it, something may precede it.
    let entry = if at == 1 {
        format!("\"hash\":\"{hash}\",")
    } else {
        format!(",\"hash\":\"{hash}\"")
    };
    line.splice(at..at, entry.into_bytes());
    line.push(b'\n');
    Ok((line, hash))
}

/// The canonical JSON of `record` without its place in the chain (`seq`,
/// `prev_hash`, `hash`), without copying it.
pub(super) fn canonical_unchained(record: &Record) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(1024);
    write_canonical(&mut out, record, &[])?;
    Ok(out)
}

/// The keys of a record that its place in the chain sets.
const CHAIN_KEYS: [&str; 3] = ["hash", "prev_hash", "seq"];

/// Writes into `out` the compact JSON of `record` with `chain`'s entries
/// (sorted by key, all of them from [`CHAIN_KEYS`]) in place of its own
/// `hash`, `prev_hash` and `seq`: the bytes serde_json writes for the map
/// the record would be with them inserted (keys in order, as its ordered
/// map keeps them). Returns the offset in `out` where an entry keyed
/// `hash` goes: after the last entry whose key sorts before it.
fn write_canonical(
    out: &mut Vec<u8>,
    record: &Record,
    chain: &[(&'static str, &Value)],
) -> Result<usize, EncodeError> {
    let failed = |source| EncodeError { what: WHAT, source };
    let first = out.len() + 1;
    let entry = |out: &mut Vec<u8>, k: &str, v: &Value| {
        if out.len() > first {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k)?;
        out.push(b':');
        serde_json::to_writer(&mut *out, v)
    };
    out.push(b'{');
    let mut hash_at = None;
    let mut chain = chain.iter().peekable();
    for (k, v) in record {
        if CHAIN_KEYS.contains(&k.as_str()) {
            continue;
        }
        while let Some((ck, cv)) = chain.next_if(|(ck, _)| *ck < k.as_str()) {
            if *ck > "hash" {
                hash_at.get_or_insert(out.len());
            }
            entry(out, ck, cv).map_err(failed)?;
        }
        if k.as_str() > "hash" {
            hash_at.get_or_insert(out.len());
        }
        entry(out, k, v).map_err(failed)?;
    }
    for (ck, cv) in chain {
        if *ck > "hash" {
            hash_at.get_or_insert(out.len());
        }
        entry(out, ck, cv).map_err(failed)?;
    }
    let at = hash_at.unwrap_or(out.len());
    out.push(b'}');
    Ok(at)
}

/// SHA-256 (hex) of `prev_hash` followed by the canonical JSON of `record`
/// (which must not hold `hash`). serde_json's map is ordered by key, so its
/// compact form is canonical.
pub fn record_hash(prev_hash: &str, record: &Record) -> Result<String, EncodeError> {
    Ok(hash_of(prev_hash, &encode(WHAT, record)?))
}

/// SHA-256 (hex) of `prev_hash` followed by a record's canonical JSON.
fn hash_of(prev_hash: &str, json: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(json);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_canonical_json_whose_hash_covers_the_rest() {
        let mut r = Record::new();
        r.insert("kind".into(), "test".into());
        let (line, hash) = chain_line(&r, &ChainTail::default()).expect("a map encodes");
        let text = String::from_utf8(line).expect("utf-8");
        assert_eq!(
            text,
            format!(
                "{{\"hash\":\"{hash}\",\"kind\":\"test\",\"prev_hash\":\"{GENESIS}\",\"seq\":1}}\n"
            )
        );
        let mut back: Record = serde_json::from_str(&text).expect("JSON");
        back.remove("hash");
        assert_eq!(record_hash(GENESIS, &back).expect("encodes"), hash);
    }

    /// What a line was before records were borrowed: the record copied, the
    /// chain's fields inserted, then serialised.
    fn line_by_copy(mut record: Record, tail: &ChainTail) -> (Vec<u8>, String) {
        record.insert("seq".into(), Value::from(tail.seq + 1));
        record.insert("prev_hash".into(), Value::from(tail.hash.clone()));
        record.remove("hash");
        let hash = record_hash(&tail.hash, &record).expect("encodes");
        record.insert("hash".into(), Value::from(hash.clone()));
        let mut line = encode(WHAT, &record).expect("encodes");
        line.push(b'\n');
        (line, hash)
    }

    #[test]
    fn a_borrowed_record_gives_the_line_a_copied_one_gave() {
        let tail = ChainTail {
            seq: 41,
            hash: "ab".repeat(32),
        };
        // Keys before, between and after the chain's, keys that start like
        // them, stale chain fields, nested values and escapes.
        let keys = [
            "",
            "a",
            "has",
            "hash",
            "hash_",
            "hasi",
            "kind",
            "prev",
            "prev_hash",
            "prev_hasi",
            "r",
            "se",
            "seq",
            "seq0",
            "z",
            "\u{e9}t\u{e9}",
            "Z",
            "_",
        ];
        for skip in 0..keys.len() {
            let mut r = Record::new();
            for (i, k) in keys.iter().enumerate().filter(|(i, _)| *i != skip) {
                let v = match i % 3 {
                    0 => Value::from(format!("v\"{i}\n")),
                    1 => serde_json::json!({"n": i, "l": [1, "x"]}),
                    _ => Value::from(i),
                };
                r.insert((*k).to_owned(), v);
            }
            let mut plain = r.clone();
            for k in CHAIN_KEYS {
                plain.remove(k);
            }
            assert_eq!(
                canonical_unchained(&r).expect("encodes"),
                encode(WHAT, &plain).expect("encodes")
            );
            let borrowed = chain_line(&r, &tail).expect("a map encodes");
            assert_eq!(
                borrowed,
                line_by_copy(r, &tail),
                "without key {:?}",
                keys[skip]
            );
        }
        let empty = Record::new();
        assert_eq!(
            chain_line(&empty, &tail).expect("encodes"),
            line_by_copy(empty, &tail)
        );
    }
}
