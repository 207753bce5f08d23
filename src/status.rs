//! `dockwarden status`: asks a running sidecar's read-only API and prints
//! what it says, as a table or as the raw JSON.
//!
//! It owns the client side and the table; it must not read the engine or
//! any state of its own: everything comes from `GET /api/v1/…`.

use std::time::Duration;

use serde_json::Value;

/// Where the sidecar listens when `--url` is not given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9477";

/// Why the sidecar gave no usable answer; one line each.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no dockwarden answers at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the sidecar at {url} answered {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the sidecar at {url} answered something that is not the status API's JSON: {reason}")]
    Garbled { url: String, reason: String },
    #[error("cannot read the token from {path}: {reason}")]
    Token { path: String, reason: String },
}

/// The token in `path`, trimmed.
pub fn read_token(path: &std::path::Path) -> Result<String, StatusError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| StatusError::Token {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// The API path of every container (with stats), or of one.
pub fn container_path(name: Option<&str>) -> String {
    match name {
        Some(n) => format!("/api/v1/containers/{}", encode_segment(n)),
        None => "/api/v1/containers?stats=true".to_owned(),
    }
}

/// The API path of a container's history.
pub fn history_path(name: &str) -> String {
    format!("/api/v1/containers/{}/history", encode_segment(name))
}

/// `GET base+path` as JSON.
pub async fn fetch(base: &str, token: Option<&str>, path: &str) -> Result<Value, StatusError> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StatusError::Unreachable {
            url: base.to_owned(),
            reason: e.to_string(),
        })?;
    let mut request = client.get(&url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.map_err(|e| StatusError::Unreachable {
        url: base.to_owned(),
        reason: root_cause(&e),
    })?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|e| StatusError::Unreachable {
            url: base.to_owned(),
            reason: root_cause(&e),
        })?;
    let json: Result<Value, _> = serde_json::from_slice(&body);
    if !(200..300).contains(&status) {
        let message = json
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        return Err(StatusError::Refused {
            url: base.to_owned(),
            status,
            message,
        });
    }
    json.map_err(|e| StatusError::Garbled {
        url: base.to_owned(),
        reason: e.to_string(),
    })
}

/// The innermost error's text: "Connection refused (os error 111)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A container name or ID as one path segment.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The table of `entries`: NAME, STATE, HEALTH, RESTARTS (dockwarden's,
/// in the heal rule's current window; the engine's own count is
/// `restart_count` in `--json`), BREAKER, LAST ACTION, CPU %, MEM. What the
/// sidecar does not report is `-`.
pub fn table(entries: &[Value]) -> String {
    let header = [
        "NAME",
        "STATE",
        "HEALTH",
        "RESTARTS",
        "BREAKER",
        "LAST ACTION",
        "CPU %",
        "MEM",
    ];
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for e in entries {
        let last = &e["heal"]["last_action"];
        let last_action = if last.is_null() {
            "-".to_owned()
        } else {
            format!("{} {}", text(&last["kind"]), text(&last["result"]))
        };
        let cpu = match e["stats"]["cpu_percent"].as_f64() {
            Some(p) => format!("{p:.1}"),
            None => "-".to_owned(),
        };
        rows.push(vec![
            text(&e["name"]),
            text(&e["state"]),
            text(&e["health"]),
            text(&e["heal"]["restarts_in_window"]),
            text(&e["heal"]["breaker"]),
            last_action,
            cpu,
            text(&e["stats"]["memory_usage"]),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A container's history, oldest first, one line per entry: its time, its
/// key, and what it says (`exit_code=3`, `attempt=2 result=ok`).
pub fn history_lines(history: &Value) -> String {
    let entries = history["entries"].as_array().map_or(&[][..], Vec::as_slice);
    let mut rows: Vec<[String; 3]> = vec![["TIME".into(), "EVENT".into(), "DETAILS".into()]];
    for e in entries {
        let details = e["details"].as_object().map_or_else(String::new, |d| {
            d.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        });
        rows.push([
            e["time"].as_str().unwrap_or("-").to_owned(),
            e["key"].as_str().unwrap_or("-").to_owned(),
            details,
        ]);
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for [time, key, details] in &rows {
        let line = format!("{time:<w0$}  {key:<w1$}  {details}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_table_aligns_columns_and_marks_what_is_unknown() {
        let t = table(&[
            json!({"name": "web-1", "state": "running", "health": "healthy", "restart_count": 0,
                   "heal": {"restarts_in_window": 2, "breaker": null,
                            "last_action": {"kind": "restart", "result": "ok"}}}),
            json!({"name": "db", "state": "exited", "health": "none", "restart_count": 5,
                   "heal": {"restarts_in_window": 0, "breaker": "open", "last_action": null},
                   "stats": {"cpu_percent": 12.345, "memory_usage": "12.3MiB"}}),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[0]
                .starts_with("NAME   STATE    HEALTH   RESTARTS  BREAKER  LAST ACTION  CPU %  MEM"),
            "{t}"
        );
        assert!(
            lines[1]
                .starts_with("web-1  running  healthy  2         -        restart ok   -      -"),
            "{t}"
        );
        assert!(
            lines[2].starts_with(
                "db     exited   none     0         open     -            12.3   12.3MiB"
            ),
            "{t}"
        );
    }

    #[test]
    fn history_lines_say_what_happened_in_order() {
        let h = json!({"entries": [
            {"time": "2026-11-23T10:00:00.000000001Z", "key": "container.die", "details": {"exit_code": 3}},
            {"time": "2026-11-23T10:00:00.2Z", "key": "dockwarden.restart",
             "details": {"attempt": 1, "result": "ok", "error": null}},
        ]});
        let text = history_lines(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "TIME                            EVENT               DETAILS",
                "2026-11-23T10:00:00.000000001Z  container.die       exit_code=3",
                "2026-11-23T10:00:00.2Z          dockwarden.restart  attempt=1 result=ok",
            ]
        );
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(encode_segment("web-1"), "web-1");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
