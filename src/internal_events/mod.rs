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
//! This module owns wording and counting; it must not decide anything, and
//! it calls no engine.

pub mod audit;
pub mod heal;

use serde_json::Value;

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
