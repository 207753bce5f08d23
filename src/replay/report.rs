//! What a replay found, and its two forms: text for people, one JSON object
//! (`--json`) for tools. The field names of the JSON are a stable interface,
//! documented in README ("Replay a recorded stream").
//!
//! It owns wording and layout; it must not decide anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

/// Everything a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The rules file the events went through.
    pub rules_file: String,
    /// Every rule, in file order, with the events it matched.
    pub rules: Vec<RuleReport>,
    /// Every decision, in the order the handlers took them.
    pub decisions: Vec<Decision>,
    pub totals: Totals,
    /// Lines that are not events, and inputs that could not be read.
    pub problems: Vec<Problem>,
}

/// One rule and what it matched.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleReport {
    pub name: String,
    pub handler: String,
    /// Events it matched (the engine's and dockwarden's own).
    pub matched: u64,
    /// How many of each key.
    pub keys: BTreeMap<String, u64>,
}

/// One decision of one handler about one event.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Decision {
    /// The handler (`restart`, `exec_audit`, …).
    pub handler: String,
    /// The rule whose handler decided.
    pub rule: String,
    /// The key of the event it answers (`container.die`, `dockwarden.exec`).
    pub event: String,
    /// That event's time, RFC 3339 with nanoseconds.
    pub time: String,
    /// Milliseconds since the first event of the replay.
    pub offset_ms: i64,
    /// The container (or network) it concerns, by name when known.
    pub subject: Option<String>,
    /// A fixed word per handler family: `act`, `escalate`, `breaker_open`,
    /// `breaker_closed`, `suppressed`, `not_healing` (healing), `write`
    /// (audit), `skip` (audit, notify), `log`, `notify`.
    pub kind: String,
    /// The line, as the handler would log it.
    pub text: String,
    /// What an engine call would have confirmed and replay could not.
    pub unverified: Vec<String>,
    /// The decision's facts (attempt, backoff_ms, failure, severity, the
    /// record it would write, the target it would notify…).
    pub details: Map<String, Value>,
}

/// The counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Input lines read, blank ones included.
    pub lines: u64,
    /// Lines that decoded as events.
    pub events: u64,
    /// Lines that are not events (reported, skipped).
    pub malformed: u64,
    /// Blank lines (skipped silently).
    pub blank: u64,
    /// Inputs that could not be read.
    pub unreadable: u64,
    /// dockwarden's own `dockwarden.*` events the decisions made.
    pub own_events: u64,
    /// Events (engine and own) that matched at least one rule.
    pub matched_events: u64,
    /// Event × rule matches.
    pub matches: u64,
    pub decisions: u64,
}

/// A line that is not an event, or an input that could not be read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The file (`-` for stdin).
    pub input: String,
    /// 1-based; None when the input itself could not be read.
    pub line: Option<u64>,
    pub error: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(n) => write!(f, "{}:{n}: {}", self.input, self.error),
            None => write!(f, "{}: {}", self.input, self.error),
        }
    }
}

/// `+12.345s`.
fn offset(ms: i64) -> String {
    format!("+{}.{:03}s", ms / 1000, ms % 1000)
}

impl Report {
    /// The text form: the rules and what they matched, each handler's
    /// decisions in order, the totals.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Rules ({}):", self.rules_file);
        for r in &self.rules {
            let keys: Vec<String> = r.keys.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = write!(out, "  {} ({}): {} matched", r.name, r.handler, r.matched);
            if !keys.is_empty() {
                let _ = write!(out, ": {}", keys.join(", "));
            }
            out.push('\n');
        }
        // Handlers in the order they first decided; each one's decisions
        // in order.
        let mut handlers: Vec<&str> = Vec::new();
        for d in &self.decisions {
            if !handlers.contains(&d.handler.as_str()) {
                handlers.push(&d.handler);
            }
        }
        let _ = writeln!(out, "Decisions:");
        if handlers.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for h in handlers {
            let mine: Vec<&Decision> = self.decisions.iter().filter(|d| d.handler == h).collect();
            let _ = writeln!(out, "  {h} ({}):", mine.len());
            for d in mine {
                let _ = write!(out, "    {} {} [{}]", offset(d.offset_ms), d.text, d.rule);
                if !d.unverified.is_empty() {
                    let _ = write!(out, " (unverified: {})", d.unverified.join(", "));
                }
                out.push('\n');
            }
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "Totals: {} lines, {} events, {} malformed, {} blank, {} unreadable inputs, {} own events, {} matched events ({} matches), {} decisions",
            t.lines,
            t.events,
            t.malformed,
            t.blank,
            t.unreadable,
            t.own_events,
            t.matched_events,
            t.matches,
            t.decisions
        );
        out
    }

    /// The JSON form on one line, or the text form, without a final newline.
    pub fn render(&self, json: bool) -> String {
        if json {
            self.json().to_string()
        } else {
            self.text().trim_end().to_owned()
        }
    }

    /// 0, or 1 when an input could not be read (the report is partial).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.totals.unreadable > 0)
    }

    /// The JSON form: one object.
    pub fn json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_groups_decisions_by_handler_and_counts() {
        let d = |handler: &str, text: &str, ms: i64| Decision {
            handler: handler.into(),
            rule: "r".into(),
            offset_ms: ms,
            text: text.into(),
            ..Decision::default()
        };
        let report = Report {
            rules_file: "rules.toml".into(),
            rules: vec![RuleReport {
                name: "r".into(),
                handler: "restart".into(),
                matched: 2,
                keys: [("container.die".to_owned(), 2)].into(),
            }],
            decisions: vec![
                d(
                    "restart",
                    "would restart a: exit 3, attempt 1, backoff 1s",
                    0,
                ),
                d("log", "would log info: container.die a", 5),
                Decision {
                    unverified: vec!["restart policy (assumed none)".into()],
                    ..d(
                        "restart",
                        "would restart a: exit 3, attempt 2, backoff 2s",
                        1500,
                    )
                },
            ],
            totals: Totals {
                lines: 3,
                events: 2,
                malformed: 1,
                decisions: 3,
                ..Totals::default()
            },
            problems: Vec::new(),
        };
        let text = report.text();
        let want = "\
Rules (rules.toml):
  r (restart): 2 matched: container.die 2
Decisions:
  restart (2):
    +0.000s would restart a: exit 3, attempt 1, backoff 1s [r]
    +1.500s would restart a: exit 3, attempt 2, backoff 2s [r] (unverified: restart policy (assumed none))
  log (1):
    +0.005s would log info: container.die a [r]
Totals: 3 lines, 2 events, 1 malformed, 0 blank, 0 unreadable inputs, 0 own events, 0 matched events (0 matches), 3 decisions
";
        assert_eq!(text, want);
        let json = report.json();
        assert_eq!(json["totals"]["malformed"], 1);
        assert_eq!(
            json["decisions"][2]["unverified"][0],
            "restart policy (assumed none)"
        );
        let p = Problem {
            input: "x.jsonl".into(),
            line: Some(4),
            error: "bad".into(),
        };
        assert_eq!(p.to_string(), "x.jsonl:4: bad");
    }
}
