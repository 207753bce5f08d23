//! Each handler's decision about one event, offline, as a [`Decision`].
//!
//! Healing runs the real handlers, whose offline [`Healer`] decides from the
//! events on their clock and journals its [`Verdict`]s; `network_audit`
//! runs the real handler, its records captured instead of written. Three
//! handlers cannot run as they are without an engine or a delivery, so their
//! decision is taken here from the same pieces they use: `exec_audit` (its
//! record from `exec_fields` with no exec inspect, graded as the handler
//! grades an unverified exec), `log` (the line it would write) and `notify`
//! (the message it would send, to whom). No engine call, nothing sent,
//! nothing written.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::report::Decision;
use crate::audit::Captured;
use crate::event::Event;
use crate::handlers::exec_audit::record::exec_fields;
use crate::handlers::heal::{Healer, Verdict, VerdictKind};
use crate::handlers::{About, Ctx, Outcome};
use crate::internal_events::audit::ExecStarted;
use crate::rules::Rule;

/// What replay knows of an exec between its start and its end.
struct OpenExec {
    command: String,
    severity: &'static str,
}

/// The offline deciders of every handler, and the state they keep.
pub(super) struct Deciders {
    /// `[rule.with]` of every rule, by name (for `log`'s level and
    /// `notify`'s targets, which their handlers keep to themselves).
    with: HashMap<String, toml::Table>,
    healer: Option<Arc<Healer>>,
    /// By the exec ID the event claims.
    execs: HashMap<String, OpenExec>,
    audit: Captured,
}

/// The heal handlers' names.
pub(super) fn heals(handler: &str) -> bool {
    matches!(handler, "restart" | "recreate" | "stop" | "raise_memory")
}

/// `[rule.with]` of each `[[rule]]` of a rules file (already validated), by
/// rule name.
pub(super) fn rule_params(source: &str) -> HashMap<String, toml::Table> {
    let mut out = HashMap::new();
    let Ok(file) = toml::from_str::<toml::Table>(source) else {
        return out;
    };
    let Some(rules) = file.get("rule").and_then(toml::Value::as_array) else {
        return out;
    };
    for rule in rules {
        let Some(name) = rule.get("name").and_then(toml::Value::as_str) else {
            continue;
        };
        let with = rule
            .get("with")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        out.insert(name.to_owned(), with);
    }
    out
}

fn decision(subject: &str, kind: &str, text: String) -> Decision {
    Decision {
        subject: Some(subject.to_owned()).filter(|s| !s.is_empty()),
        kind: kind.to_owned(),
        text,
        ..Decision::default()
    }
}

/// A heal verdict as a decision, in the words `Decided` and the other heal
/// facts log.
pub(super) fn from_verdict(v: Verdict) -> Decision {
    let c = &v.container;
    let action = v.action.unwrap_or("heal").replace('_', " ");
    let what = if v.reason.is_empty() {
        v.failure.clone()
    } else {
        format!("{} ({})", v.failure, v.reason)
    };
    let text = match v.kind {
        VerdictKind::Act if v.action == Some("stop") => {
            format!("would stop {c} and leave it stopped: {what}")
        }
        VerdictKind::Act => format!(
            "would {action} {c}: {what}, attempt {}, backoff {:?}",
            v.attempt, v.backoff
        ),
        VerdictKind::Escalate => format!("would {action} {c}: {what}, restarts spent"),
        VerdictKind::BreakerOpen => format!("would give up on {c}: {}, breaker open", v.failure),
        VerdictKind::BreakerClosed => format!("breaker closed for {c}: {}", v.reason),
        VerdictKind::Suppressed => {
            format!("suppressed {action} of {c}: {}: {}", v.failure, v.reason)
        }
        VerdictKind::NotHealing => format!("not healing {c}: {}: {}", v.failure, v.reason),
    };
    let mut d = decision(c, v.kind.label(), text);
    let details = &mut d.details;
    if let Some(a) = v.action {
        details.insert("action".into(), json!(a));
    }
    if !v.failure.is_empty() {
        details.insert("failure".into(), json!(v.failure));
    }
    if matches!(v.kind, VerdictKind::Act | VerdictKind::Escalate) {
        details.insert("attempt".into(), json!(v.attempt));
        details.insert("backoff_ms".into(), json!(v.backoff.as_millis() as u64));
    }
    if !v.reason.is_empty() {
        details.insert("reason".into(), json!(v.reason));
    }
    d.unverified = v.unverified.iter().map(|u| (*u).to_owned()).collect();
    d
}

impl Deciders {
    pub(super) fn new(
        with: HashMap<String, toml::Table>,
        healer: Option<Arc<Healer>>,
        audit: Captured,
    ) -> Self {
        Deciders {
            with,
            healer,
            execs: HashMap::new(),
            audit,
        }
    }

    /// What the healer's observer decided (a breaker closed), taken after
    /// the observers saw an event.
    pub(super) fn observed(&self) -> Vec<Verdict> {
        self.healer
            .as_ref()
            .map(|h| h.take_verdicts())
            .unwrap_or_default()
    }

    /// What `rule`'s handler decides about `event`.
    pub(super) async fn decide(
        &mut self,
        ctx: &Ctx,
        rule: &Rule,
        event: &Arc<Event>,
    ) -> Vec<Decision> {
        match rule.handler_name {
            h if heals(h) => {
                rule.handler.handle(ctx, event).await;
                self.observed().into_iter().map(from_verdict).collect()
            }
            "network_audit" => self.network(ctx, rule, event).await,
            "exec_audit" => self.exec(ctx, event).into_iter().collect(),
            "log" => vec![self.log(rule, event)],
            "notify" => self.notify(rule, event),
            other => vec![decision(
                "",
                "skip",
                format!("not replayed: handler {other} has no offline mode"),
            )],
        }
    }

    fn param(&self, rule: &Rule, key: &str) -> Option<&toml::Value> {
        self.with.get(&*rule.name).and_then(|w| w.get(key))
    }

    fn log(&self, rule: &Rule, event: &Event) -> Decision {
        let level = self
            .param(rule, "level")
            .and_then(toml::Value::as_str)
            .unwrap_or("info");
        let name = event.name().unwrap_or("");
        let parts = [
            event.key.to_string(),
            name.to_owned(),
            event.detail.clone().unwrap_or_default(),
            crate::handlers::log::relevant(event),
        ];
        let line: Vec<&str> = parts
            .iter()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .collect();
        let mut d = decision(
            name,
            "log",
            format!("would log {level}: {}", line.join(" ")),
        );
        d.details.insert("level".into(), json!(level));
        d
    }

    fn notify(&self, rule: &Rule, event: &Event) -> Vec<Decision> {
        let name = event.name().unwrap_or("");
        if crate::handlers::notify::muted(event) {
            return vec![decision(
                name,
                "skip",
                format!(
                    "would not notify: {} is muted ({}=false)",
                    name,
                    crate::handlers::notify::MUTE_LABEL
                ),
            )];
        }
        let targets: Vec<String> = match self.param(rule, "target") {
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let msg = crate::handlers::notify::message(event, &rule.name);
        targets
            .into_iter()
            .map(|target| {
                let mut d = decision(
                    name,
                    "notify",
                    format!("would notify {target}: {}", msg.title),
                );
                d.details.insert("target".into(), json!(target));
                d.details.insert("title".into(), json!(msg.title));
                d.details.insert("message".into(), json!(msg.text));
                d.details
                    .insert("severity".into(), json!(msg.severity.as_str()));
                d
            })
            .collect()
    }

    /// `exec_audit` without the exec's inspect: the record it writes for an
    /// exec it cannot verify, graded as it grades one.
    fn exec(&mut self, ctx: &Ctx, event: &Arc<Event>) -> Option<Decision> {
        let container = ctx.containers.get(&event.actor_id);
        let name = container
            .as_ref()
            .map(|c| c.name.clone())
            .or_else(|| event.name().map(str::to_owned))
            .unwrap_or_else(|| event.short_id().to_owned());
        let claimed = event.attr("execID");
        let forgeable = container.as_ref().is_some_and(|c| c.forgeable.exec_id);
        let mut unverified = vec!["exec user, privileged, tty and whether it is a health probe"];
        if forgeable {
            unverified.push("exec ID (a label overwrites execID)");
        }
        let mut d = match &*event.action {
            "exec_start" => {
                let (record, healthcheck, severity) =
                    exec_fields(None, container.as_deref(), event, claimed);
                let command = command_of(&record);
                let user = record.get("user").and_then(Value::as_str).unwrap_or("root");
                ctx.emit(
                    &ExecStarted {
                        container: &name,
                        record: &record,
                        healthcheck,
                        severity: severity.label(),
                        written: true,
                    },
                    Some(About {
                        id: &event.actor_id,
                        name: &name,
                        cause: event,
                    }),
                );
                let text = format!(
                    "would write exec_start {}: {user} {command} in {name}",
                    severity.label()
                );
                if let Some(id) = claimed {
                    let open = OpenExec {
                        command,
                        severity: severity.label(),
                    };
                    self.execs.insert(id.to_owned(), open);
                }
                let mut d = decision(&name, "write", text);
                d.details = record;
                d.details.insert("kind".into(), json!("exec_start"));
                d.details.insert("severity".into(), json!(severity.label()));
                d
            }
            "exec_die" => {
                let open = claimed.and_then(|id| self.execs.remove(id));
                let code = event
                    .exit_code()
                    .filter(|_| !container.as_ref().is_some_and(|c| c.forgeable.exit_code));
                let (command, severity) = match &open {
                    Some(o) => (o.command.as_str(), o.severity),
                    None => ("(its start is not in the input)", "medium"),
                };
                let exit = code.map_or("exit unknown".to_owned(), |c| format!("exit {c}"));
                let text = format!("would write exec_end {severity}: {command} in {name}, {exit}");
                let mut d = decision(&name, "write", text);
                d.details.insert("kind".into(), json!("exec_end"));
                d.details.insert("severity".into(), json!(severity));
                d.details
                    .insert("exit_code".into(), code.map_or(Value::Null, Value::from));
                d.details.insert(
                    "claimed_exec_id".into(),
                    claimed.map_or(Value::Null, Value::from),
                );
                d
            }
            _ => return None,
        };
        d.unverified = unverified.into_iter().map(str::to_owned).collect();
        Some(d)
    }

    /// The real `network_audit`, its records captured; the container's
    /// name, which it asks the engine for, from the view.
    async fn network(&mut self, ctx: &Ctx, rule: &Rule, event: &Arc<Event>) -> Vec<Decision> {
        let outcome = rule.handler.handle(ctx, event).await;
        let records = self.audit.drain();
        if records.is_empty() {
            let why = match outcome {
                Outcome::Skipped if event.action == "disconnect" => {
                    "a second disconnect (Engine 20.10 logs each twice): recorded once"
                }
                _ => "nothing to record",
            };
            let name = event.attr("name").unwrap_or("");
            return vec![decision(
                name,
                "skip",
                format!("would not write network_{}: {why}", event.action),
            )];
        }
        records
            .into_iter()
            .map(|mut r| network_decision(ctx, &mut r))
            .collect()
    }
}

fn network_decision(ctx: &Ctx, r: &mut Map<String, Value>) -> Decision {
    let s = |r: &Map<String, Value>, k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let kind = s(r, "kind");
    let network = s(r, "network_name");
    let mut unverified = Vec::new();
    let text = match r
        .get("container_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
    {
        Some(id) => {
            let name = ctx
                .containers
                .get(&id)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| id.get(..12).unwrap_or(&id).to_owned());
            r.insert("container_name".into(), json!(name));
            unverified.push("container name (from the events)".to_owned());
            let to = if kind == "network_connect" {
                "to"
            } else {
                "from"
            };
            format!("would write {kind}: {name} {to} {network}")
        }
        None => format!("would write {kind}: {network} ({})", s(r, "driver")),
    };
    let mut d = decision(&network, "write", text);
    d.details = r.clone();
    d.unverified = unverified;
    d
}

/// An exec record's command, joined for a line.
fn command_of(record: &Map<String, Value>) -> String {
    record
        .get("command")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn verdicts_read_as_the_handlers_log_them() {
        let v = Verdict {
            rule: None,
            container: "web-1".into(),
            kind: VerdictKind::Act,
            action: Some("restart"),
            failure: "exit 3".into(),
            attempt: 2,
            backoff: Duration::from_secs(2),
            reason: String::new(),
            unverified: vec!["restart policy (assumed none)"],
        };
        let d = from_verdict(v.clone());
        assert_eq!(d.text, "would restart web-1: exit 3, attempt 2, backoff 2s");
        assert_eq!(d.details["backoff_ms"], 2000);
        assert_eq!(d.unverified, ["restart policy (assumed none)"]);
        let spent = Verdict {
            kind: VerdictKind::Escalate,
            action: Some("recreate"),
            attempt: 0,
            ..v.clone()
        };
        assert_eq!(
            from_verdict(spent).text,
            "would recreate web-1: exit 3, restarts spent"
        );
        let open = Verdict {
            kind: VerdictKind::BreakerOpen,
            action: None,
            ..v.clone()
        };
        assert_eq!(
            from_verdict(open).text,
            "would give up on web-1: exit 3, breaker open"
        );
        let memory = Verdict {
            action: Some("raise_memory"),
            failure: "OOM kill".into(),
            ..v
        };
        assert!(
            from_verdict(memory)
                .text
                .starts_with("would raise memory web-1: OOM kill")
        );
    }

    #[test]
    fn rule_parameters_are_read_by_rule_name() {
        let with = rule_params(
            r#"
[[rule]]
name = "a"
on = "*"
handler = "log"
[rule.with]
level = "warn"
[[rule]]
name = "b"
on = "*"
handler = "notify"
[rule.with]
target = ["ops", "dev"]
"#,
        );
        assert_eq!(with["a"]["level"].as_str(), Some("warn"));
        assert_eq!(with["b"]["target"].as_array().map(Vec::len), Some(2));
        assert!(rule_params("not toml [").is_empty());
    }
}
