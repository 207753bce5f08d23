//! `notify`: tells people. Each event a rule matches (dockwarden's own
//! `dockwarden.*` events, or the engine's) becomes one [`Message`] handed to
//! the rule's targets, whose delivery (`crate::notify`) never makes the
//! pipeline wait.
//!
//! `[rule.with]`: `target` = one target name or a list, each defined under
//! `[notify.targets.NAME]` and, on a reload, one the sidecar started with
//! (senders are built at start). A container labelled
//! `dockwarden.notify=false` (also `no`, `0`, any case) is muted.
//!
//! It owns the choice of who is told about what; it must not format bodies
//! for a service or send anything itself.

mod message;

use std::sync::Arc;

pub use message::message;

use super::{BoxFuture, Ctx, Factory, Handler, Outcome, RuleSpec};
use crate::config::table::Table;
use crate::event::Event;
use crate::notify::Message;

/// The label that mutes a container.
pub const MUTE_LABEL: &str = "dockwarden.notify";

pub struct NotifyFactory;

impl Factory for NotifyFactory {
    fn name(&self) -> &'static str {
        "notify"
    }

    fn own_events(&self) -> bool {
        true
    }

    fn reads_view(&self) -> bool {
        false
    }

    fn build(&self, rule: &RuleSpec, with: &mut Table<'_, '_>) -> Arc<dyn Handler> {
        let mut targets = Vec::new();
        match with.strings("target") {
            None => with.error_here(format!(
                "{} needs `target`: the name of a [notify.targets.NAME] table, or a list of them",
                with.what()
            )),
            Some(names) => {
                for (name, span) in names {
                    if !rule.notify_targets.iter().any(|t| t == name) {
                        with.error(
                            span,
                            format!(
                                "unknown notify target \"{name}\" ({} under [notify.targets])",
                                listed("defined", "none is defined", &rule.notify_targets)
                            ),
                        );
                    } else if let Some(started) = &rule.started_targets
                        && !started.iter().any(|t| t == name)
                    {
                        with.error(
                            span,
                            format!(
                                "notify target \"{name}\" was added after start ({}); [notify] takes effect at start, so restart dockwarden to send to it",
                                listed("running", "none is running", started)
                            ),
                        );
                    } else {
                        targets.push(name.to_owned());
                    }
                }
            }
        }
        Arc::new(Notify {
            rule: rule.name.clone(),
            targets,
        })
    }
}

/// `what: a, b`, or `none` when `names` is empty.
fn listed(what: &str, none: &str, names: &[String]) -> String {
    if names.is_empty() {
        none.to_owned()
    } else {
        format!("{what}: {}", names.join(", "))
    }
}

struct Notify {
    rule: Arc<str>,
    targets: Vec<String>,
}

/// `dockwarden.notify=false` (or `no`, `0`, `off`, in any case).
pub(crate) fn muted(event: &Event) -> bool {
    event.attr(MUTE_LABEL).is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "false" | "no" | "0" | "off"
        )
    })
}

impl Handler for Notify {
    fn handle<'a>(&'a self, ctx: &'a Ctx, event: &'a Arc<Event>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if muted(event) {
                return Outcome::Skipped;
            }
            let msg: Message = message(event, &self.rule);
            for target in &self.targets {
                ctx.notify.send(target, msg.clone());
            }
            Outcome::Ok
        })
    }
}
