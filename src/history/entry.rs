//! What one event becomes in the history: its time ([`time_of`]), its
//! lifecycle entry ([`lifecycle_entry`]) and its copy in the ring
//! ([`for_ring`]). It must not keep anything itself.

use std::sync::Arc;

use serde_json::Value;

use super::{Details, Entry, RING_EVENT_BYTES};
use crate::containers::{Containers, plain_name};
use crate::event::{Attributes, Event};

/// The engine's container actions a lifecycle records.
const LIFECYCLE_ACTIONS: &[&str] = &[
    "create",
    "start",
    "die",
    "oom",
    "health_status",
    "kill",
    "stop",
    "restart",
    "rename",
    "pause",
    "unpause",
    "destroy",
];

/// dockwarden's own events a lifecycle records.
const OWN_KEYS: &[&str] = &[
    "dockwarden.restart",
    "dockwarden.recreate",
    "dockwarden.raise_memory",
    "dockwarden.suppressed",
    "dockwarden.breaker_open",
    "dockwarden.breaker_closed",
    "dockwarden.exec",
];

/// When `event` happened, for the lifecycles and the ring: the engine's
/// time, or for dockwarden's own events the time they were told (their
/// `time_nano` is their cause's, which keeps their identity stable).
pub(super) fn time_of(event: &Event) -> i64 {
    if event.typ == "dockwarden" {
        crate::clock::unix_nanos()
    } else {
        event.time_nano
    }
}

/// The entry `event` adds to its container's lifecycle, if any.
pub(super) fn lifecycle_entry(event: &Event, view: &Containers) -> Option<Entry> {
    let details = if event.typ == "container" {
        if !LIFECYCLE_ACTIONS.contains(&&*event.action) {
            return None;
        }
        let mut d: Vec<(&'static str, Value)> = Vec::new();
        match &*event.action {
            "create" => {
                if let Some(image) = event.image() {
                    d.push(("image", Value::from(image)));
                }
            }
            "die" => {
                let forgeable = view
                    .get(&event.actor_id)
                    .is_none_or(|c| c.forgeable.exit_code);
                let code = event.exit_code().filter(|_| !forgeable);
                d.push(("exit_code", code.map_or(Value::Null, Value::from)));
            }
            "health_status" => {
                if let Some(status) = event.health_status() {
                    d.push(("status", Value::from(status)));
                }
            }
            "kill" => {
                if let Some(signal) = event.attr("signal") {
                    d.push(("signal", Value::from(signal)));
                }
            }
            "rename" => {
                if let Some(old) = event.attr("oldName") {
                    d.push(("old_name", Value::from(plain_name(old))));
                }
                d.push(("new_name", Value::from(event.name().unwrap_or_default())));
            }
            _ => {}
        }
        Details::Engine(d)
    } else if event.typ == "dockwarden" && OWN_KEYS.contains(&&*event.key) {
        Details::Own(event.fields.clone().unwrap_or_default())
    } else {
        return None;
    };
    if event.actor_id.is_empty() {
        return None;
    }
    Some(Entry {
        time_nano: time_of(event),
        key: event.key.clone(),
        id: Arc::from(event.actor_id.as_str()),
        details,
    })
}

/// The event as the ring keeps it: shared, or trimmed to
/// [`RING_EVENT_BYTES`] of attributes.
pub(super) fn for_ring(event: &Arc<Event>) -> Arc<Event> {
    let size: usize = event
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if size <= RING_EVENT_BYTES {
        return event.clone();
    }
    let mut kept = Attributes::default();
    let mut used = 0;
    for (k, v) in event.attributes.iter() {
        // `name` and `image` whatever their size (cut), the rest while
        // they fit.
        let essential = k == "name" || k == "image";
        if essential || used + k.len() + v.len() <= RING_EVENT_BYTES {
            let v = if essential {
                cut(v, RING_EVENT_BYTES / 4)
            } else {
                v
            };
            used += k.len() + v.len();
            kept.push(k, v);
        }
    }
    kept.push("dockwarden.truncated", "true");
    let mut trimmed = Event::clone(event);
    trimmed.attributes = kept;
    trimmed.detail = trimmed
        .detail
        .map(|d| cut(&d, RING_EVENT_BYTES / 4).to_owned());
    Arc::new(trimmed)
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
