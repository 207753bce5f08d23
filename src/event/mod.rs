//! Events as the rest of the pipeline sees them.
//!
//! The source hands every line of the `/events` body to [`Event::decode`]. It
//! normalises the dispatch key (`container.exec_start` for
//! `exec_start: sh -c x`), keeps the free text after `": "` as data, and maps
//! type and action onto fixed metric label sets so a raw action string can
//! never become a label. Decoding never panics: anything that is not a usable
//! event is a [`DecodeError`] the source counts as malformed.

//!
//! Submodules: `wire` (the serde shape), `known` (the fixed type and action
//! table), `identity` (what makes two events the same one).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

mod identity;
mod known;
mod wire;

pub use identity::Identity;
pub use known::{OTHER, known_labels, labels_for};
pub use wire::Attributes;

use known::known;
use wire::Wire;

/// An event from the engine, normalised for matching and dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `Type` as the engine sent it (`container`, `network`, ...). Known
    /// types, actions and keys are shared static strings, not allocations.
    pub typ: Cow<'static, str>,
    /// The action before `": "` (`exec_start`, `health_status`, `die`).
    pub action: Cow<'static, str>,
    /// The free text after `": "`, if any: the exec command, the health status.
    pub detail: Option<String>,
    /// Dispatch key: `<typ>.<action>`.
    pub key: Cow<'static, str>,
    /// `Actor.ID`: container ID, network ID, image ID, ...
    pub actor_id: String,
    /// `Actor.Attributes`. For containers this includes every container label,
    /// copied over the daemon's own keys: never trust one for a decision that
    /// a label could forge (see `exit_code`).
    pub attributes: Attributes,
    /// `timeNano`: nanoseconds since the Unix epoch.
    pub time_nano: i64,
    /// Fixed label values for metrics.
    pub labels: Labels,
    /// When dockwarden read it: the start of its own reaction time.
    pub received: Instant,
    /// Not read from the stream: made up by a resync from the engine's
    /// current state, or one of dockwarden's own (`dockwarden.*`). Never
    /// checkpointed.
    pub synthetic: bool,
    /// The fields of dockwarden's own events (`severity` of a
    /// `dockwarden.exec`, `attempt` of a `dockwarden.restart`); None for the
    /// engine's.
    pub fields: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// The `type` and `action` metric labels of an event, from fixed sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Labels {
    pub typ: &'static str,
    pub action: &'static str,
}

/// Why a line from the stream is not a usable event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a JSON event object: {reason}")]
    Json { reason: String },
    #[error("event has no {field}")]
    Missing { field: &'static str },
}

impl DecodeError {
    /// A short, fixed string for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Json { .. } => "json",
            DecodeError::Missing { .. } => "missing_field",
        }
    }
}

impl Event {
    /// Decodes one JSON object as sent by `GET /events`.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        Event::decode_read_at(bytes, Instant::now())
    }

    /// [`decode`](Event::decode), for an event read at `received` (the
    /// reader stamps every event of a socket read with the read's time).
    pub fn decode_read_at(bytes: &[u8], received: Instant) -> Result<Event, DecodeError> {
        // One UTF-8 check for the whole line rather than one per string:
        // serde_json's str reader then takes every string as it is.
        let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::Json {
            reason: format!("not UTF-8: {e}"),
        })?;
        let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| DecodeError::Json {
            reason: e.to_string(),
        })?;
        let typ = wire
            .typ
            .map(|t| t.0)
            .filter(|t| !t.is_empty())
            .ok_or(DecodeError::Missing { field: "Type" })?;
        let raw_action = wire
            .action
            .map(|a| a.0)
            .filter(|a| !a.is_empty())
            .ok_or(DecodeError::Missing { field: "Action" })?;
        let time_nano = match (wire.time_nano, wire.time) {
            (Some(n), _) if n > 0 => n,
            (_, Some(s)) if s > 0 => s.saturating_mul(1_000_000_000),
            _ => return Err(DecodeError::Missing { field: "timeNano" }),
        };
        let (actor_id, attributes) = match wire.actor {
            Some(actor) => (
                actor.id.map(|id| id.0.into_owned()).unwrap_or_default(),
                actor.attributes.unwrap_or_default(),
            ),
            None => (String::new(), Attributes::default()),
        };
        Ok(Event::assemble(
            (&typ, &raw_action),
            actor_id,
            attributes,
            time_nano,
            received,
        ))
    }

    /// An event from its parts (`raw_action` as the engine writes it, e.g.
    /// `health_status: unhealthy`), normalised as [`decode`](Event::decode)
    /// does; for events dockwarden makes up itself, such as a resync's.
    pub fn new(
        typ: &str,
        raw_action: &str,
        actor_id: String,
        attributes: Attributes,
        time_nano: i64,
    ) -> Event {
        Event::assemble(
            (typ, raw_action),
            actor_id,
            attributes,
            time_nano,
            Instant::now(),
        )
    }

    fn assemble(
        (typ, raw_action): (&str, &str),
        actor_id: String,
        attributes: Attributes,
        time_nano: i64,
        received: Instant,
    ) -> Event {
        let (action, detail) = split_action(raw_action);
        let (labels, typ, action, key) = match known(typ, action) {
            Some(k) => (
                k.labels,
                Cow::Borrowed(k.typ),
                Cow::Borrowed(k.action),
                Cow::Borrowed(k.key),
            ),
            None => (
                labels_for(typ, action),
                Cow::Owned(typ.to_string()),
                Cow::Owned(action.to_owned()),
                Cow::Owned(format!("{typ}.{action}")),
            ),
        };
        Event {
            typ,
            action,
            detail: detail.map(str::to_owned),
            key,
            actor_id,
            attributes,
            time_nano,
            labels,
            received,
            synthetic: false,
            fields: None,
        }
    }

    /// An attribute of the actor.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key)
    }

    /// The container (or network, volume, ...) name, without a leading `/`.
    pub fn name(&self) -> Option<&str> {
        self.attr("name").map(|n| n.trim_start_matches('/'))
    }

    /// The image as the container was created with it.
    pub fn image(&self) -> Option<&str> {
        self.attr("image")
    }

    /// `exitCode` of a `die` event as the event states it. A container label
    /// named `exitCode` overwrites it: healing re-reads the engine's state.
    pub fn exit_code(&self) -> Option<i64> {
        self.attr("exitCode")?.trim().parse().ok()
    }

    /// The health status of a `health_status` event (`healthy`, `unhealthy`).
    pub fn health_status(&self) -> Option<&str> {
        if self.action == "health_status" {
            self.detail.as_deref().map(str::trim)
        } else {
            None
        }
    }

    /// The key that orders handling: events of one actor run in order.
    pub fn ordering_key(&self) -> &str {
        &self.actor_id
    }

    /// The short form of the actor ID used in logs.
    pub fn short_id(&self) -> &str {
        self.actor_id.get(..12).unwrap_or(&self.actor_id)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.short_id())?;
        if let Some(name) = self.name() {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

/// Splits `exec_start: sh -c x` into `("exec_start", Some("sh -c x"))`.
pub fn split_action(raw: &str) -> (&str, Option<&str>) {
    match raw.split_once(": ") {
        Some((action, detail)) => (action.trim(), Some(detail)),
        None => (raw.trim(), None),
    }
}

/// A container event of actor `c1` with `attrs`, for tests.
#[cfg(test)]
pub(crate) fn test_container_event(action: &str, attrs: &[(&str, &str)], t: i64) -> Event {
    let a: Attributes = attrs.iter().copied().collect();
    Event::new("container", action, "c1".into(), a, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = r#"{"status":"exec_start: sh -c echo hi","id":"abc","from":"busybox","Type":"container","Action":"exec_start: sh -c echo hi","Actor":{"ID":"0123456789abcdef","Attributes":{"execID":"e1","image":"busybox","name":"web-1"}},"scope":"local","time":1700000000,"timeNano":1700000000123456789}"#;

    #[test]
    fn exec_start_keeps_command_as_data() {
        let ev = Event::decode(EXEC.as_bytes()).expect("decodes");
        assert_eq!(ev.key, "container.exec_start");
        assert_eq!(ev.detail.as_deref(), Some("sh -c echo hi"));
        assert_eq!(ev.name(), Some("web-1"));
        assert_eq!(ev.short_id(), "0123456789ab");
        assert_eq!(ev.time_nano, 1_700_000_000_123_456_789);
        assert_eq!(
            ev.labels,
            Labels {
                typ: "container",
                action: "exec_start"
            }
        );
    }

    #[test]
    fn health_status_is_normalised() {
        let line = r#"{"Type":"container","Action":"health_status: unhealthy","Actor":{"ID":"c1","Attributes":{"name":"/api"}},"timeNano":5}"#;
        let ev = Event::decode(line.as_bytes()).expect("decodes");
        assert_eq!(ev.key, "container.health_status");
        assert_eq!(ev.health_status(), Some("unhealthy"));
        assert_eq!(ev.name(), Some("api"));
    }

    #[test]
    fn unknown_type_and_action_get_fixed_labels() {
        let line =
            r#"{"Type":"frobnicator","Action":"twiddle: 42","Actor":{"ID":"x"},"timeNano":7}"#;
        let ev = Event::decode(line.as_bytes()).expect("decodes");
        assert_eq!(ev.key, "frobnicator.twiddle");
        assert_eq!(
            ev.labels,
            Labels {
                typ: OTHER,
                action: OTHER
            }
        );
        let line = r#"{"Type":"container","Action":"levitate","timeNano":7}"#;
        let ev = Event::decode(line.as_bytes()).expect("decodes");
        assert_eq!(ev.labels.action, OTHER);
        assert_eq!(ev.labels.typ, "container");
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"garbage",
            b"{\"Type\":\"container\"",
            b"[1,2]",
            b"{\"Action\":\"die\",\"timeNano\":1}",
            b"{\"Type\":\"container\",\"timeNano\":1}",
            b"{\"Type\":\"container\",\"Action\":\"die\"}",
            b"{\"Type\":7,\"Action\":\"die\",\"timeNano\":1}",
            b"\xff\xfe",
        ] {
            assert!(
                Event::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn seconds_only_time_is_accepted() {
        let ev = Event::decode(br#"{"Type":"image","Action":"tag","time":3}"#).expect("decodes");
        assert_eq!(ev.time_nano, 3_000_000_000);
    }

    #[test]
    fn forged_exit_code_is_readable_but_marked_as_attribute() {
        let line = r#"{"Type":"container","Action":"die","Actor":{"ID":"c","Attributes":{"exitCode":"x3"}},"timeNano":1}"#;
        let ev = Event::decode(line.as_bytes()).expect("decodes");
        assert_eq!(ev.exit_code(), None);
    }

    #[test]
    fn known_labels_cover_other() {
        assert!(known_labels().any(|l| l.typ == "network" && l.action == "connect"));
        assert!(known_labels().any(|l| l.typ == "container" && l.action == OTHER));
    }
}
