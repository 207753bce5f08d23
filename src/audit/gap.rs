//! The records the audit log could not take (its buffer full while the file
//! could not be written, or the queue to the writer full), told in the log
//! itself: one `audit_gap` record, chained like any other, where they would
//! have been. Without it the chain closes over the hole and `audit verify`
//! says "chain intact"; only a counter knew.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Record, Severity};
use crate::clock::{rfc3339_nanos, unix_nanos};

/// Records dropped since the last `audit_gap` record.
#[derive(Debug, Default)]
pub(super) struct Gap {
    dropped: u64,
    first_nano: i64,
    last_nano: i64,
    /// By severity; those dropped before the writer saw them have none.
    severities: BTreeMap<String, u64>,
    reasons: BTreeMap<&'static str, u64>,
}

impl Gap {
    /// `n` records dropped now, because `reason`.
    pub(super) fn add(&mut self, n: u64, severity: Option<&str>, reason: &'static str) {
        if n == 0 {
            return;
        }
        let now = unix_nanos();
        if self.dropped == 0 {
            self.first_nano = now;
        }
        self.last_nano = now;
        self.dropped += n;
        *self
            .severities
            .entry(severity.unwrap_or("unknown").to_owned())
            .or_default() += n;
        *self.reasons.entry(reason).or_default() += n;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.dropped == 0
    }

    /// The `audit_gap` record of what was dropped, if anything was; the
    /// count starts again.
    pub(super) fn take_record(&mut self) -> Option<(Record, u64)> {
        if self.dropped == 0 {
            return None;
        }
        let gap = std::mem::take(self);
        let mut r = Record::new();
        r.insert("kind".into(), "audit_gap".into());
        r.insert("time".into(), rfc3339_nanos(unix_nanos()).into());
        // As severe as the worst it stands for, for alerts on severity.
        let worst = [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
        ]
        .map(Severity::label)
        .into_iter()
        .find(|s| gap.severities.contains_key(*s))
        .unwrap_or(Severity::High.label());
        r.insert("severity".into(), worst.into());
        r.insert("dropped".into(), gap.dropped.into());
        r.insert(
            "first_dropped_at".into(),
            rfc3339_nanos(gap.first_nano).into(),
        );
        r.insert(
            "last_dropped_at".into(),
            rfc3339_nanos(gap.last_nano).into(),
        );
        r.insert(
            "reasons".into(),
            Value::Object(
                gap.reasons
                    .into_iter()
                    .map(|(k, n)| (k.to_owned(), n.into()))
                    .collect(),
            ),
        );
        r.insert(
            "severities".into(),
            Value::Object(
                gap.severities
                    .into_iter()
                    .map(|(k, n)| (k, n.into()))
                    .collect(),
            ),
        );
        Some((r, gap.dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_counts_by_severity_and_reason_and_starts_again() {
        let mut g = Gap::default();
        assert!(g.take_record().is_none());
        g.add(2, Some("low"), "buffer full");
        g.add(1, Some("critical"), "buffer full");
        g.add(3, None, "queue full");
        let (r, n) = g.take_record().expect("a gap");
        assert_eq!(n, 6);
        assert_eq!(r["kind"], "audit_gap");
        assert_eq!(r["severity"], "critical");
        assert_eq!(r["dropped"], 6);
        assert_eq!(r["reasons"]["buffer full"], 3);
        assert_eq!(r["reasons"]["queue full"], 3);
        assert_eq!(r["severities"]["unknown"], 3);
        assert!(g.take_record().is_none(), "counted once");
    }
}
