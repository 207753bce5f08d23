//! Configuration building blocks shared by the rules loader and the
//! handlers that validate their own `[rule.with]` tables: a span-aware
//! [`table::Table`], the [`diag`]nostics it collects, and value types such
//! as [`ExitCode`]. Nothing here knows rules, handlers or events.

pub mod diag;
pub mod table;

/// `match.exit_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCode {
    Any,
    Nonzero,
    OneOf(Vec<i64>),
}

impl ExitCode {
    pub fn matches(&self, code: i64) -> bool {
        match self {
            ExitCode::Any => true,
            ExitCode::Nonzero => code != 0,
            ExitCode::OneOf(codes) => codes.contains(&code),
        }
    }
}

/// A boolean as people write it in a label: `true`/`yes`/`1` and
/// `false`/`no`/`0`, in any case, surrounding blanks ignored.
pub fn truthy(value: &str) -> Option<bool> {
    let v = value.trim();
    for (word, b) in [
        ("true", true),
        ("yes", true),
        ("1", true),
        ("false", false),
        ("no", false),
        ("0", false),
    ] {
        if v.eq_ignore_ascii_case(word) {
            return Some(b);
        }
    }
    None
}

/// This machine's host name: what audit records and notifications name as
/// their `host` when the rules file (`[audit] host`) names none.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
