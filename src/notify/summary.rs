//! The one message that stands for many held back by a target's rate
//! limit: the first in full, then "and 37 more: 30× web-1 restarted,
//! 7× …", counting every message it replaces.
//!
//! It owns the wording and the accounting of a summary; it must not decide
//! when messages are held (the sender does).

use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::Message;

/// The key of a summary message, in its `webhook` body.
pub const SUMMARY_KEY: &str = "dockwarden.summary";

/// Distinct titles listed by name; the rest are counted as "other".
const MAX_GROUPS: usize = 10;

/// One message standing for `members` (at least two), held because the
/// target allows `limit` requests per `window`. Its id is derived from the
/// members' ids, so a retry of the same summary carries the same id.
pub fn summarize(members: &[Message], limit: u32, window: Duration) -> Option<Message> {
    let (first, rest) = members.split_first()?;
    let mut groups: Vec<(&str, usize)> = Vec::new();
    for m in rest {
        match groups.iter_mut().find(|(t, _)| *t == m.title) {
            Some((_, n)) => *n += 1,
            None => groups.push((&m.title, 1)),
        }
    }
    let listed = groups.len().min(MAX_GROUPS);
    let mut parts: Vec<String> = groups[..listed]
        .iter()
        .map(|(t, n)| format!("{n}× {t}"))
        .collect();
    let other: usize = groups[listed..].iter().map(|(_, n)| n).sum();
    if other > 0 {
        parts.push(format!("{other}× other"));
    }
    let per = if window == Duration::from_secs(60) {
        "minute".to_owned()
    } else {
        format!("{}s", window.as_secs_f64())
    };

    let mut digest = Sha256::new();
    for m in members {
        digest.update(m.id.as_bytes());
        digest.update([0]);
    }
    let hash: String = digest
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();

    let same_container = members
        .iter()
        .all(|m| m.container.as_ref().map(|c| &c.id) == first.container.as_ref().map(|c| &c.id));
    let by_title: Map<String, Value> = groups
        .iter()
        .map(|(t, n)| ((*t).to_owned(), json!(n)))
        .collect();
    let mut fields = Map::new();
    fields.insert("count".into(), json!(members.len()));
    fields.insert(
        "ids".into(),
        members.iter().map(|m| json!(m.id)).collect::<Value>(),
    );
    fields.insert("first_key".into(), json!(first.key));
    fields.insert("more_by_title".into(), Value::Object(by_title));
    Some(Message {
        id: format!("summary-{hash}"),
        time_nano: first.time_nano,
        key: SUMMARY_KEY.to_owned(),
        severity: members
            .iter()
            .map(|m| m.severity)
            .max()
            .unwrap_or(first.severity),
        title: format!("{} and {} more", first.title, rest.len()),
        text: format!(
            "{}\nand {} more (held by the limit of {limit} per {per}): {}",
            first.text,
            rest.len(),
            parts.join(", ")
        ),
        container: if same_container {
            first.container.clone()
        } else {
            None
        },
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Severity;

    fn m(i: usize, title: &str, severity: Severity) -> Message {
        Message {
            id: format!("id-{i}"),
            time_nano: i as i64,
            key: "dockwarden.restart".into(),
            severity,
            title: title.into(),
            text: format!("{title}!"),
            container: None,
            fields: Map::new(),
        }
    }

    #[test]
    fn every_member_is_counted() {
        let mut members = vec![m(0, "web-1 restarted", Severity::Medium)];
        for i in 1..31 {
            members.push(m(i, "web-1 restarted", Severity::Medium));
        }
        for i in 31..38 {
            members.push(m(i, "gave up on web-2", Severity::High));
        }
        let s = summarize(&members, 10, Duration::from_secs(60)).expect("two or more");
        assert_eq!(s.title, "web-1 restarted and 37 more");
        assert!(
            s.text.ends_with(
                "and 37 more (held by the limit of 10 per minute): 30× web-1 restarted, 7× gave up on web-2"
            ),
            "{}",
            s.text
        );
        assert_eq!(s.severity, Severity::High);
        assert_eq!(s.fields["count"], 38);
        assert_eq!(s.fields["ids"].as_array().map(Vec::len), Some(38));
        let again = summarize(&members, 10, Duration::from_secs(60)).expect("same");
        assert_eq!(s.id, again.id, "stable id");
    }

    #[test]
    fn many_titles_fold_into_other_and_still_add_up() {
        let members: Vec<Message> = (0..40)
            .map(|i| m(i, &format!("c-{} restarted", i % 20), Severity::Low))
            .collect();
        let s = summarize(&members, 5, Duration::from_secs(2)).expect("summary");
        let text = s.text.split(": ").nth(1).expect("list");
        let total: usize = text
            .split(", ")
            .map(|p| {
                p.split('×')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0)
            })
            .sum();
        assert_eq!(total, 39, "{text}");
        assert!(text.contains("× other"), "{text}");
        assert!(s.text.contains("per 2s"), "{}", s.text);
        assert!(summarize(&members[..0], 5, Duration::from_secs(60)).is_none());
    }
}
