//! JSON encoding that says when it fails.
//!
//! Owns the one way dockwarden turns its own values (audit records,
//! checkpoints) into JSON bytes. A failure is an [`EncodeError`] naming what
//! was being encoded; callers log it and count it in
//! `dockwarden_encode_errors_total`, and never write an empty record or
//! checkpoint in its place. It must not know what the bytes are for.

use serde::Serialize;

/// Encoding a value failed (for serde_json: a map key that is not a
/// string, or a `Serialize` impl that reports an error).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the {what} as JSON: {source}")]
pub struct EncodeError {
    /// What was being encoded, e.g. `audit record`; also the metric label.
    pub what: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Compact JSON of `value`. For a `serde_json::Map` keys come out sorted,
/// so the form is canonical (the audit chain hashes it).
pub fn encode<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|source| EncodeError { what, source })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_map_with_non_string_keys_is_an_error_that_names_what_failed() {
        let mut m = BTreeMap::new();
        m.insert((1u8, 2u8), "v");
        let err = encode("checkpoint", &m).expect_err("tuple keys cannot be JSON keys");
        assert_eq!(err.what, "checkpoint");
        let text = err.to_string();
        assert!(
            text.starts_with("cannot encode the checkpoint as JSON: ")
                && text.contains("key must be a string"),
            "{text}"
        );
    }

    #[test]
    fn a_map_encodes_compact_with_sorted_keys() {
        let mut m = serde_json::Map::new();
        m.insert("b".into(), 1.into());
        m.insert("a".into(), "x".into());
        assert_eq!(
            encode("record", &m).expect("string keys encode"),
            br#"{"a":"x","b":1}"#
        );
    }
}
