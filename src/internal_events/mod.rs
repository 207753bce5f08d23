//! dockwarden's own events: each fact it decides or observes about itself is
//! one typed value whose [`InternalEvent::emit`] writes the log line and
//! moves the metric in one call, so the two cannot drift apart (the manner of
//! Vector's `internal_events`).
//!
//! Those with a [`key`](InternalEvent::key) are the `dockwarden.*` events
//! that rules will route to notifications: their key and
//! [`fields`](InternalEvent::fields) are a stable interface, documented in
//! the README. Facts only worth a log line and a metric have no key.
//!
//! [`own_event`] turns a keyed fact into an [`Event`] of type `dockwarden`,
//! which an [`OwnEvents`] sink (the dispatch queue) routes through the
//! rules like any engine event: after the engine event that caused it, in
//! its container's lane. Such events are synthetic: never checkpointed.
//!
//! This module owns wording and counting; it must not decide anything, and
//! it calls no engine.

pub mod audit;
pub mod denied;
pub mod heal;
pub mod lifecycle;
pub mod source;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::event::{Attributes, Event};
use crate::metrics::Metrics;

/// One fact of dockwarden's own.
pub trait InternalEvent {
    /// `dockwarden.<action>` for events rules may route; None for facts that
    /// are only logged and counted.
    fn key(&self) -> Option<&'static str> {
        None
    }

    /// The fields of its `dockwarden.*` event, by name.
    fn fields(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    /// Writes its log line and updates its metrics.
    fn emit(&self, metrics: &Metrics);
}

/// Where dockwarden's own `dockwarden.*` events go to be dispatched.
pub trait OwnEvents: Send + Sync {
    /// Hands one event over; never waits (a full queue drops and counts).
    fn publish(&self, event: Event);
}

/// Drops every own event: for tests and tools that route none.
pub struct Discard;

impl OwnEvents for Discard {
    fn publish(&self, _: Event) {}
}

/// Logs and counts `fact` and, if it is keyed, publishes its event about no
/// container (dockwarden's own life: started, resync, stream lost).
pub fn emit_unattached(fact: &dyn InternalEvent, metrics: &Metrics, own: &dyn OwnEvents) {
    fact.emit(metrics);
    let now = crate::clock::unix_nanos();
    if let Some(event) = own_event(fact, "", Attributes::default(), now) {
        own.publish(event);
    }
}

/// The `dockwarden.*` event of a keyed fact, concerning the actor
/// `actor_id` (a container's ID, or empty) with `attributes` (its name,
/// image and labels, so rules match it as they match the container's own
/// events). None for facts without a key.
pub fn own_event(
    fact: &dyn InternalEvent,
    actor_id: &str,
    attributes: Attributes,
    time_nano: i64,
) -> Option<Event> {
    let key = fact.key()?;
    let action = key.strip_prefix("dockwarden.").unwrap_or(key);
    let mut event = Event::new(
        "dockwarden",
        action,
        actor_id.to_owned(),
        attributes,
        time_nano,
    );
    event.synthetic = true;
    let fields: Map<String, Value> = fact
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    event.fields = Some(Arc::new(fields));
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fact(Option<&'static str>);

    impl InternalEvent for Fact {
        fn key(&self) -> Option<&'static str> {
            self.0
        }
        fn fields(&self) -> Vec<(&'static str, Value)> {
            vec![("attempt", Value::from(2))]
        }
        fn emit(&self, _: &Metrics) {}
    }

    #[test]
    fn a_keyed_fact_becomes_a_synthetic_dockwarden_event_with_its_fields() {
        let mut attrs = Attributes::default();
        attrs.push("name", "web-1");
        let e = own_event(&Fact(Some("dockwarden.restart")), "c1", attrs, 7).expect("keyed");
        assert_eq!(
            (&*e.key, &*e.typ, &*e.action),
            ("dockwarden.restart", "dockwarden", "restart")
        );
        assert_eq!(e.labels.typ, "dockwarden", "a known label, not `other`");
        assert_eq!(e.labels.action, "restart");
        assert!(e.synthetic);
        assert_eq!(e.name(), Some("web-1"));
        assert_eq!(
            e.fields.as_ref().and_then(|f| f.get("attempt")),
            Some(&Value::from(2))
        );
        assert!(own_event(&Fact(None), "c1", Attributes::default(), 7).is_none());
    }
}
