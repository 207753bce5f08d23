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
pub fn chain_line(mut record: Record, tail: &ChainTail) -> Result<(Vec<u8>, String), EncodeError> {
    record.insert("seq".into(), Value::from(tail.seq + 1));
    record.insert("prev_hash".into(), Value::from(tail.hash.clone()));
    record.remove("hash");
    let hash = record_hash(&tail.hash, &record)?;
    record.insert("hash".into(), Value::from(hash.clone()));
    let mut line = encode(WHAT, &record)?;
    line.push(b'\n');
    Ok((line, hash))
}

/// SHA-256 (hex) of `prev_hash` followed by the canonical JSON of `record`
/// (which must not hold `hash`). serde_json's map is ordered by key, so its
/// compact form is canonical.
pub fn record_hash(prev_hash: &str, record: &Record) -> Result<String, EncodeError> {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(encode(WHAT, record)?);
    Ok(hex(&h.finalize()))
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
        let (line, hash) = chain_line(r, &ChainTail::default()).expect("a map encodes");
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
}
