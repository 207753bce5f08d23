//! dockwarden's own life: started, resynced from the engine's state, the
//! event stream lost for long and restored. Each is a `dockwarden.*` event
//! about no container.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::{error, info, warn};

use super::InternalEvent;
use crate::metrics::Metrics;

/// The sidecar is up: rules loaded, about to connect.
pub struct Started<'a> {
    pub version: &'a str,
    pub rules: usize,
    pub dry_run: bool,
    pub rules_file: &'a str,
}

impl InternalEvent for Started<'_> {
    fn key(&self) -> Option<&'static str> {
        Some("dockwarden.started")
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("version", json!(self.version)),
            ("rules", json!(self.rules)),
            ("rules_file", json!(self.rules_file)),
            ("dry_run", json!(self.dry_run)),
        ]
    }

    fn emit(&self, _: &Metrics) {
        info!(
            version = self.version,
            rules = self.rules,
            rules_file = self.rules_file,
            dry_run = self.dry_run,
            "dockwarden started."
        );
    }
}

/// A resync from the engine's current state finished.
pub struct Resynced {
    /// `startup`, `gap`, `overflow`, …: a fixed word.
    pub reason: &'static str,
    pub containers: usize,
    pub synthetic: usize,
}

impl InternalEvent for Resynced {
    fn key(&self) -> Option<&'static str> {
        Some("dockwarden.resync")
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("reason", json!(self.reason)),
            ("containers", json!(self.containers)),
            ("synthetic", json!(self.synthetic)),
        ]
    }

    fn emit(&self, _: &Metrics) {
        info!(
            reason = self.reason,
            containers = self.containers,
            synthetic = self.synthetic,
            "Resynced from the engine's current state."
        );
    }
}

/// The event stream has been down for longer than `[source]
/// lost_after_secs`: healing and audit are blind until it is back.
pub struct StreamOutage<'a> {
    pub down_for: Duration,
    /// The last connection error.
    pub error: &'a str,
}

impl InternalEvent for StreamOutage<'_> {
    fn key(&self) -> Option<&'static str> {
        Some("dockwarden.stream_lost")
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("down_secs", json!(self.down_for.as_secs())),
            ("error", json!(self.error)),
        ]
    }

    fn emit(&self, _: &Metrics) {
        error!(
            down_secs = self.down_for.as_secs(),
            error = self.error,
            "Event stream lost: no events for {}s; healing and audit wait for it.",
            self.down_for.as_secs()
        );
    }
}

/// The stream is back after a [`StreamOutage`].
pub struct StreamRestored {
    pub down_for: Duration,
}

impl InternalEvent for StreamRestored {
    fn key(&self) -> Option<&'static str> {
        Some("dockwarden.stream_restored")
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        vec![("down_secs", json!(self.down_for.as_secs()))]
    }

    fn emit(&self, _: &Metrics) {
        warn!(
            down_secs = self.down_for.as_secs(),
            "Event stream restored after {}s.",
            self.down_for.as_secs()
        );
    }
}
