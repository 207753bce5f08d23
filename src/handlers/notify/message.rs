//! What a person reads: the title and text of a notification for one
//! event, its severity, and the container it is about.
//!
//! It owns the wording per event key; it must not send anything or decide
//! who receives it.

use serde_json::{Map, Value, json};

use crate::event::Event;
use crate::handlers::exec_audit::is_shell;
use crate::notify::{ContainerRef, Message, Severity};

/// The message for `event`, matched by the rule `rule`. Its `id` is stable
/// for that event and rule, so a redelivery can be recognised.
pub fn message(event: &Event, rule: &str) -> Message {
    let name = event
        .name()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| event.short_id());
    let fields = fields_of(event);
    let (severity, title, text) = wording(event, name, &fields);
    let container = (!event.actor_id.is_empty() && event.typ != "network").then(|| ContainerRef {
        id: event.actor_id.clone(),
        name: name.to_owned(),
        image: event.image().unwrap_or_default().to_owned(),
    });
    Message {
        id: format!("{}-{}", event.identity(), rule),
        time_nano: event.time_nano,
        key: event.key.to_string(),
        severity,
        title,
        text,
        container,
        fields,
    }
}

/// The fields of one of dockwarden's events; for the engine's, the few
/// attributes worth telling (never every label).
fn fields_of(event: &Event) -> Map<String, Value> {
    if let Some(f) = &event.fields {
        return (**f).clone();
    }
    let mut out = Map::new();
    for k in ["exitCode", "signal", "execID", "container", "type"] {
        if let Some(v) = event.attr(k) {
            out.insert(k.to_owned(), json!(v));
        }
    }
    if let Some(d) = &event.detail {
        out.insert("detail".to_owned(), json!(d));
    }
    out
}

fn str_field<'a>(f: &'a Map<String, Value>, k: &str) -> &'a str {
    f.get(k).and_then(Value::as_str).unwrap_or("")
}

fn num_field(f: &Map<String, Value>, k: &str) -> u64 {
    f.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// `4s`, `1.5s`, `250ms`.
fn human_ms(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{:.1}s", ms as f64 / 1000.0),
    }
}

fn wording(event: &Event, name: &str, f: &Map<String, Value>) -> (Severity, String, String) {
    let dry = if f.get("dry_run").and_then(Value::as_bool) == Some(true) {
        "[dry run] "
    } else {
        ""
    };
    match &*event.key {
        "dockwarden.restart"
        | "dockwarden.recreate"
        | "dockwarden.raise_memory"
        | "dockwarden.stop" => {
            let (verb, done) = match &*event.action {
                "recreate" => ("recreating", "recreated"),
                "stop" => ("stopping", "stopped and left stopped"),
                "raise_memory" => ("raising the memory limit of", "memory limit raised"),
                _ => ("restarting", "restarted"),
            };
            let failure = str_field(f, "failure");
            if str_field(f, "result") == "error" {
                let error = str_field(f, "error");
                return (
                    Severity::High,
                    format!("{verb} {name} failed"),
                    format!("{verb} {name} after {failure} failed: {error}"),
                );
            }
            let attempt = num_field(f, "attempt");
            let cause = str_field(f, "cause");
            let mut detail = if !cause.is_empty() {
                format!("{cause}, which was healed after {failure}")
            } else if event.action == "stop" {
                failure.to_owned()
            } else if attempt == 0 {
                format!("{failure}, restarts spent")
            } else {
                format!(
                    "{failure}, attempt {attempt} of {}, after a {} backoff",
                    num_field(f, "max_restarts"),
                    human_ms(num_field(f, "backoff_ms"))
                )
            };
            let check = str_field(f, "check_output");
            if !check.is_empty() {
                detail = format!(
                    "{detail}; health check exit {}: {check}",
                    f.get("check_exit_code")
                        .and_then(Value::as_i64)
                        .unwrap_or(-1)
                );
            }
            (
                if event.action == "restart" {
                    Severity::Medium
                } else {
                    Severity::High
                },
                format!("{name} {done}"),
                format!("{name} {done} ({detail})"),
            )
        }
        "dockwarden.breaker_open" => (
            Severity::High,
            format!("{dry}gave up on {name}"),
            format!(
                "{dry}gave up on {name} after {} restarts in {}s (last: {}); no more actions until it stays up or is started by hand",
                num_field(f, "max_restarts"),
                num_field(f, "window_secs"),
                str_field(f, "failure")
            ),
        ),
        "dockwarden.breaker_closed" => (
            Severity::Info,
            format!("{dry}{name} is healed again"),
            format!("{dry}breaker of {name} closed: {}", str_field(f, "reason")),
        ),
        "dockwarden.suppressed" => (
            Severity::Low,
            format!("{dry}not healing {name}"),
            format!(
                "{dry}not healing {name} ({}): {}",
                str_field(f, "failure"),
                str_field(f, "reason")
            ),
        ),
        "dockwarden.exec" => {
            let severity = match str_field(f, "severity") {
                "critical" => Severity::Critical,
                "high" => Severity::High,
                "medium" => Severity::Medium,
                _ => Severity::Low,
            };
            let user = match str_field(f, "user") {
                "" => "the image's default user".to_owned(),
                u => u.to_owned(),
            };
            let tty = if f.get("tty").and_then(Value::as_bool) == Some(true) {
                " (tty)"
            } else {
                ""
            };
            let command = match f.get("command") {
                Some(Value::Array(argv)) => argv
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let first = command.split_whitespace().next().unwrap_or_default();
            let what = if is_shell(first) { "shell" } else { "exec" };
            (
                severity,
                format!("{what} in {name} as {user}"),
                format!("{what} in {name} as {user}{tty}: {command}"),
            )
        }
        "dockwarden.stream_lost" => (
            Severity::Critical,
            "event stream lost".to_owned(),
            format!(
                "no events from the Docker Engine for {}s ({}); healing and audit are blind until it is back",
                num_field(f, "down_secs"),
                str_field(f, "error")
            ),
        ),
        "dockwarden.stream_restored" => (
            Severity::Info,
            "event stream restored".to_owned(),
            format!(
                "events from the Docker Engine flow again after {}s",
                num_field(f, "down_secs")
            ),
        ),
        "dockwarden.resync" => (
            Severity::Info,
            "resynced".to_owned(),
            format!(
                "resynced from the engine's state ({}): {} containers",
                str_field(f, "reason"),
                num_field(f, "containers")
            ),
        ),
        "dockwarden.started" => (
            Severity::Info,
            "dockwarden started".to_owned(),
            format!(
                "{dry}dockwarden {} started with {} rules",
                str_field(f, "version"),
                num_field(f, "rules")
            ),
        ),
        "container.oom" => (
            Severity::High,
            format!("{name} ran out of memory"),
            format!("{name} was killed for running out of memory"),
        ),
        "container.die" => {
            let code = event.attr("exitCode").unwrap_or("?");
            (
                Severity::Medium,
                format!("{name} exited"),
                format!("{name} exited with code {code}"),
            )
        }
        "container.health_status" => {
            let status = event.health_status().unwrap_or("unknown");
            let severity = if status == "unhealthy" {
                Severity::Medium
            } else {
                Severity::Info
            };
            (
                severity,
                format!("{name} is {status}"),
                format!("health check of {name}: {status}"),
            )
        }
        key => (
            Severity::Info,
            format!("{key} {name}"),
            match &event.detail {
                Some(d) => format!("{key} on {name}: {d}"),
                None => format!("{key} on {name}"),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::Attributes;

    fn own(action: &str, fields: Value) -> Event {
        let mut attrs = Attributes::default();
        attrs.push("name", "web-1");
        attrs.push("image", "nginx:1.25");
        let mut e = Event::new("dockwarden", action, "c0ffee0123456789".into(), attrs, 42);
        e.fields = fields.as_object().cloned().map(Arc::new);
        e
    }

    #[test]
    fn a_restart_says_the_failure_the_attempt_and_the_backoff() {
        let m = message(
            &own(
                "restart",
                json!({"result": "ok", "failure": "exit 3", "attempt": 2, "max_restarts": 5, "backoff_ms": 4000}),
            ),
            "heal",
        );
        assert_eq!(m.title, "web-1 restarted");
        assert_eq!(
            m.text,
            "web-1 restarted (exit 3, attempt 2 of 5, after a 4s backoff)"
        );
        assert_eq!(m.severity, Severity::Medium);
        assert_eq!(m.key, "dockwarden.restart");
        let c = m.container.expect("about a container");
        assert_eq!((c.name.as_str(), c.image.as_str()), ("web-1", "nginx:1.25"));
        assert!(m.id.ends_with("-heal") && m.id.len() == 32 + 5, "{}", m.id);
    }

    #[test]
    fn giving_up_and_a_root_shell_read_at_a_glance() {
        let m = message(
            &own(
                "breaker_open",
                json!({"failure": "exit 1", "max_restarts": 5, "window_secs": 300}),
            ),
            "r",
        );
        assert_eq!(m.title, "gave up on web-1");
        assert!(
            m.text
                .starts_with("gave up on web-1 after 5 restarts in 300s (last: exit 1)"),
            "{}",
            m.text
        );
        assert_eq!(m.severity, Severity::High);
        let m = message(
            &own(
                "exec",
                json!({"severity": "high", "user": "root", "tty": true, "command": ["sh"]}),
            ),
            "r",
        );
        assert_eq!(m.text, "shell in web-1 as root (tty): sh");
        assert_eq!(m.severity, Severity::High);
    }

    #[test]
    fn the_same_event_and_rule_give_the_same_id() {
        let f = json!({"result": "ok"});
        let a = message(&own("restart", f.clone()), "r");
        assert_eq!(a.id, message(&own("restart", f.clone()), "r").id);
        assert_ne!(a.id, message(&own("restart", f), "other").id);
    }
}
