//! `network_audit`: one audit record per network `create`, `destroy`,
//! `connect` and `disconnect` (`"kind": "network_connect"`, ...), with the
//! network's name, ID and driver and, for connect/disconnect, the container's
//! name (from the engine) and ID. Same sink and chain as `exec_audit`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{BoxFuture, Ctx, Factory, Handler, Outcome, RuleSpec};
use crate::audit::{Record, Severity};
use crate::clock::rfc3339_nanos;
use crate::config::table::Table;
use crate::event::Event;

/// The engine (20.10) logs `disconnect` twice for one disconnection: the
/// last action per (network, container) lets the second go unrecorded.
#[derive(Default)]
pub struct NetworkAuditFactory {
    last: Arc<Mutex<HashMap<(String, String), &'static str>>>,
}

impl Factory for NetworkAuditFactory {
    fn name(&self) -> &'static str {
        "network_audit"
    }

    fn build(&self, _rule: &RuleSpec, _with: &mut Table<'_, '_>) -> Arc<dyn Handler> {
        Arc::new(NetworkAudit {
            last: self.last.clone(),
        })
    }

    fn events(&self) -> Option<&'static [&'static str]> {
        Some(&[
            "network.create",
            "network.destroy",
            "network.connect",
            "network.disconnect",
        ])
    }
}

struct NetworkAudit {
    last: Arc<Mutex<HashMap<(String, String), &'static str>>>,
}

impl Handler for NetworkAudit {
    fn handle<'a>(&'a self, ctx: &'a Ctx, event: &'a Arc<Event>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let kind = match &*event.action {
                "create" => "network_create",
                "destroy" => "network_destroy",
                "connect" => "network_connect",
                "disconnect" => "network_disconnect",
                _ => return Outcome::Skipped,
            };
            {
                let mut last = crate::lock::lock(&self.last);
                if kind == "network_destroy" {
                    last.retain(|(net, _), _| *net != event.actor_id);
                }
                if let Some(container) = event.attr("container") {
                    let pair = (event.actor_id.clone(), container.to_owned());
                    if kind == "network_disconnect"
                        && last.get(&pair) == Some(&"network_disconnect")
                    {
                        return Outcome::Skipped;
                    }
                    if last.len() > 100_000 {
                        last.clear();
                    }
                    last.insert(pair, kind);
                }
            }
            let mut r = Record::new();
            r.insert("kind".into(), kind.into());
            r.insert("ts".into(), rfc3339_nanos(event.time_nano).into());
            r.insert("network_id".into(), event.actor_id.clone().into());
            r.insert(
                "network_name".into(),
                event.attr("name").map_or(Value::Null, Value::from),
            );
            r.insert(
                "driver".into(),
                event.attr("type").map_or(Value::Null, Value::from),
            );
            let mut enriched = true;
            if let Some(container) = event.attr("container") {
                r.insert("container_id".into(), container.into());
                // The name from the engine; a removed container has none left.
                let name = match ctx.docker.get() {
                    Ok(docker) => ctx.container(&docker, container).await,
                    Err(_) => None,
                }
                .map(|c| c.name.clone());
                enriched = name.is_some();
                r.insert(
                    "container_name".into(),
                    name.map_or(Value::Null, Value::from),
                );
            }
            r.insert("enriched".into(), enriched.into());
            ctx.audit.submit(r, Severity::Low);
            Outcome::Ok
        })
    }
}
