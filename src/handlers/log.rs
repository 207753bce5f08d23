//! `log`: one structured line per event.
//!
//! `[rule.with]`: `level` = `"trace" | "debug" | "info" | "warn" | "error"`
//! (default `"info"`). The line carries the key, container name, image, short
//! ID and the attributes relevant to that kind of event (exit code, signal,
//! exec ID and command, health status, network container); never the whole
//! attribute map, which holds every container label. For dockwarden's own
//! events (`dockwarden.*`), their fields.

use std::sync::Arc;

use tracing::Level;

use super::{BoxFuture, Ctx, Factory, Handler, Outcome, RuleSpec};
use crate::config::table::Table;
use crate::event::Event;

pub struct LogFactory;

impl Factory for LogFactory {
    fn name(&self) -> &'static str {
        "log"
    }

    fn own_events(&self) -> bool {
        true
    }

    fn reads_view(&self) -> bool {
        false
    }

    fn build(&self, rule: &RuleSpec, with: &mut Table<'_, '_>) -> Arc<dyn Handler> {
        let level = match with.choice(
            "level",
            &["trace", "debug", "info", "warn", "error"],
            "info",
        ) {
            "trace" => Level::TRACE,
            "debug" => Level::DEBUG,
            "warn" => Level::WARN,
            "error" => Level::ERROR,
            _ => Level::INFO,
        };
        Arc::new(Log {
            level,
            rule: rule.name.clone(),
        })
    }
}

struct Log {
    level: Level,
    /// The rule's name, for the log line.
    rule: Arc<str>,
}

/// The attributes worth a log line, by action.
pub(crate) fn relevant(event: &Event) -> String {
    // dockwarden's own events: their fields, which are few and bounded.
    if let Some(fields) = &event.fields {
        let mut out = String::new();
        for (k, v) in fields.iter() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            match v {
                serde_json::Value::String(s) => out.push_str(s),
                other => out.push_str(&other.to_string()),
            }
        }
        return out;
    }
    let keys: &[&str] = match (&*event.typ, &*event.action) {
        ("container", "die") => &["exitCode"],
        ("container", "kill") => &["signal"],
        ("container", "exec_die") => &["execID", "exitCode"],
        ("container", a) if a.starts_with("exec_") => &["execID"],
        ("network", _) => &["container", "type"],
        ("volume", _) => &["driver", "container", "destination"],
        ("image", _) => &[],
        _ => &[],
    };
    let mut out = String::new();
    for k in keys {
        if let Some(v) = event.attr(k) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

impl Handler for Log {
    fn never_waits(&self) -> bool {
        true
    }

    fn handle<'a>(&'a self, _ctx: &'a Ctx, event: &'a Arc<Event>) -> BoxFuture<'a, Outcome> {
        // Below the most verbose level any filter in force lets through
        // (`log-all` at debug under the default `info`): nothing to look
        // up. Per-target filters raise that level, and the macro below
        // then decides.
        if self.level > tracing::level_filters::LevelFilter::current() {
            return Box::pin(std::future::ready(Outcome::Ok));
        }
        Box::pin(async move {
            let name = event.name().unwrap_or("");
            let image = event.image().unwrap_or("");
            let detail = event.detail.as_deref().unwrap_or("");
            let id = event.short_id();
            let key = &*event.key;
            let rule = self.rule.as_ref();
            macro_rules! emit {
                ($lvl:ident) => {
                    tracing::$lvl!(
                        event = key,
                        rule,
                        id,
                        name,
                        image,
                        detail,
                        // Built only if the level is enabled.
                        attrs = relevant(event).as_str(),
                        "Docker event."
                    )
                };
            }
            match self.level {
                Level::TRACE => emit!(trace),
                Level::DEBUG => emit!(debug),
                Level::INFO => emit!(info),
                Level::WARN => emit!(warn),
                _ => emit!(error),
            }
            Outcome::Ok
        })
    }
}
