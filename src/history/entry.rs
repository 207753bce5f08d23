//! What one event becomes in the history: its time ([`time_of`]), its
//! lifecycle entry ([`lifecycle_entry`]) and its copy in the ring
//! ([`for_ring`]). It must not keep anything itself.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{DETAILS_BYTES, Entry, RING_EVENT_BYTES};
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
    "dockwarden.stop",
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
    if event.actor_id.is_empty() {
        return None;
    }
    let mut d = Map::new();
    if event.typ == "container" {
        if !LIFECYCLE_ACTIONS.contains(&&*event.action) {
            return None;
        }
        match &*event.action {
            "create" => {
                if let Some(image) = event.image() {
                    d.insert("image".into(), Value::from(image));
                }
            }
            "die" => {
                let forgeable = view
                    .get(&event.actor_id)
                    .is_none_or(|c| c.forgeable.exit_code);
                let code = event.exit_code().filter(|_| !forgeable);
                d.insert("exit_code".into(), code.map_or(Value::Null, Value::from));
            }
            "health_status" => {
                if let Some(status) = event.health_status() {
                    d.insert("status".into(), Value::from(status));
                }
            }
            "kill" => {
                if let Some(signal) = event.attr("signal") {
                    d.insert("signal".into(), Value::from(signal));
                }
            }
            "rename" => {
                if let Some(old) = event.attr("oldName") {
                    d.insert("old_name".into(), Value::from(plain_name(old)));
                }
                d.insert(
                    "new_name".into(),
                    Value::from(event.name().unwrap_or_default()),
                );
            }
            _ => {}
        }
    } else if event.typ == "dockwarden" && OWN_KEYS.contains(&&*event.key) {
        if let Some(fields) = &event.fields {
            d = (**fields).clone();
        }
    } else {
        return None;
    }
    // A failed health check's output (at most 512 bytes) is why the
    // container was healed: it is kept whole, beside the bounded rest.
    let check = d
        .get("check_output")
        .and_then(Value::as_str)
        .map_or(0, str::len);
    Some(Entry {
        time_nano: time_of(event),
        key: event.key.clone(),
        id: Arc::from(event.actor_id.as_str()),
        details: bounded(d, DETAILS_BYTES + check).into_boxed_str(),
    })
}

/// `fields` as JSON text of at most about `max` bytes: long strings (an
/// exec's command) and arrays are cut first, marked with `…`; if that is
/// not enough, the last fields go and `"truncated": true` says so.
pub(super) fn bounded(mut fields: Map<String, Value>, max: usize) -> String {
    let text = Value::Object(fields.clone()).to_string();
    if text.len() <= max {
        return text;
    }
    let piece = (max / 8).max(16);
    for (k, v) in fields.iter_mut() {
        if k != "check_output" {
            shorten(v, piece);
        }
    }
    loop {
        let text = Value::Object(fields.clone()).to_string();
        if text.len() + 20 <= max || fields.is_empty() {
            fields.insert("truncated".into(), Value::Bool(true));
            return Value::Object(fields).to_string();
        }
        let last = fields.keys().next_back().cloned().unwrap_or_default();
        fields.remove(&last);
    }
}

fn shorten(v: &mut Value, piece: usize) {
    match v {
        Value::String(s) if s.len() > piece => {
            *s = format!("{}…", cut(s, piece));
        }
        Value::Array(items) => {
            if items.len() > 8 {
                items.truncate(8);
                items.push(Value::from("…"));
            }
            for item in items {
                shorten(item, piece);
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                shorten(item, piece);
            }
        }
        _ => {}
    }
}

/// The event as the ring keeps it: shared, or, past [`RING_EVENT_BYTES`]
/// of attributes, detail and fields, a trimmed copy.
pub(super) fn for_ring(event: &Arc<Event>) -> Arc<Event> {
    let attributes: usize = event
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let detail = event.detail.as_ref().map_or(0, String::len);
    // Own events only (rare): their fields' size.
    let fields = event
        .fields
        .as_ref()
        .map_or(0, |f| Value::Object((**f).clone()).to_string().len());
    if attributes + detail + fields <= RING_EVENT_BYTES {
        return event.clone();
    }
    let budget = RING_EVENT_BYTES / 2;
    let mut kept = Attributes::default();
    let mut used = 0;
    for (k, v) in event.attributes.iter() {
        // `name` and `image` whatever their size (cut), the rest while
        // they fit.
        let essential = k == "name" || k == "image";
        let v = if essential { cut(v, budget / 8) } else { v };
        if essential || used + k.len() + v.len() <= budget {
            used += k.len() + v.len();
            kept.push(k, v);
        }
    }
    kept.push("dockwarden.truncated", "true");
    let mut trimmed = Event::clone(event);
    trimmed.attributes = kept;
    trimmed.detail = trimmed.detail.map(|d| cut(&d, budget / 4).to_owned());
    trimmed.fields = event.fields.as_ref().map(|f| {
        let text = bounded((**f).clone(), budget / 2);
        Arc::new(serde_json::from_str(&text).unwrap_or_default())
    });
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
