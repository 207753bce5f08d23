//! `/api/v1/containers/{name-or-id}/history` and `/api/v1/events`: what
//! happened, from the [`History`](crate::history::History) the dispatcher
//! keeps. Same access as the rest of `/api/v1` ([`super::api::refusal`]); it
//! must not change what it reads.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::api::{decode, error, json_response, off_the_workers, refusal};
use crate::clock::{parse_rfc3339, rfc3339_nanos};
use crate::event::Attributes;
use crate::history::Entry;

/// Events `/api/v1/events` returns without `limit`.
const DEFAULT_EVENTS: usize = 1000;

/// `GET /api/v1/containers/{name-or-id}/history?limit=N`.
pub(super) async fn lifecycle(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let mut limit = usize::MAX;
    for (name, value) in pairs(query.as_deref()) {
        match name.as_str() {
            "limit" => match positive(&value) {
                Some(n) => limit = n,
                None => {
                    return bad(&format!(
                        "`limit` must be a positive integer, found \"{value}\""
                    ));
                }
            },
            other => return bad(&format!("unknown query parameter `{other}`")),
        }
    }
    // A known container by name or ID; else a name whose history is kept
    // (a destroyed container's).
    let current = state.containers.find(&key).map(|(c, _)| c);
    let name = current.as_ref().map_or_else(
        || crate::containers::plain_name(&key).to_owned(),
        |c| c.name.clone(),
    );
    let Some(entries) = state.history.lifecycle(&name, limit) else {
        let why = match &current {
            Some(_) => format!("nothing has happened to \"{name}\" since dockwarden started"),
            None => format!("no container \"{key}\", and no kept history of one"),
        };
        return match current {
            // Known but quiet: an empty history, not an error.
            Some(c) => json_response(
                StatusCode::OK,
                &json!({"name": c.name, "id": c.id, "gone": false, "entries": []}),
            ),
            None => error(StatusCode::NOT_FOUND, &why),
        };
    };
    let body = json!({
        "name": name,
        "id": current.as_ref().map(|c| c.id.clone()),
        "gone": current.is_none(),
        "entries": entries.iter().map(entry).collect::<Vec<_>>(),
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /api/v1/events?since=RFC3339&key=GLOB&limit=N`.
pub(super) async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let mut since = i64::MIN;
    let mut limit = DEFAULT_EVENTS;
    let mut keys = GlobSetBuilder::new();
    let mut any_key = false;
    for (name, value) in pairs(query.as_deref()) {
        match name.as_str() {
            "since" => match parse_rfc3339(&value) {
                Some(t) => since = t,
                None => {
                    return bad(&format!(
                        "`since` must be an RFC 3339 time such as 2026-11-23T10:00:00Z, found \"{value}\""
                    ));
                }
            },
            "limit" => match positive(&value) {
                Some(n) => limit = n,
                None => {
                    return bad(&format!(
                        "`limit` must be a positive integer, found \"{value}\""
                    ));
                }
            },
            "key" => match Glob::new(&value) {
                Ok(g) if !value.is_empty() => {
                    keys.add(g);
                    any_key = true;
                }
                _ => {
                    return bad(&format!(
                        "`key` must be a glob such as container.* or dockwarden.restart, found \"{value}\""
                    ));
                }
            },
            other => return bad(&format!("unknown query parameter `{other}`")),
        }
    }
    let keys: Option<GlobSet> = match any_key.then(|| keys.build()).transpose() {
        Ok(k) => k,
        Err(e) => return bad(&format!("`key` globs do not compile: {e}")),
    };
    // Built off the async workers, like the container list.
    off_the_workers(move || {
        let found = state.history.recent(limit, |t, e| {
            t >= since && keys.as_ref().is_none_or(|k| k.is_match(&*e.key))
        });
        let body: Vec<EventView<'_>> = found
            .iter()
            .map(|(t, e)| EventView {
                time: rfc3339_nanos(*t),
                key: &e.key,
                id: &e.actor_id,
                attributes: AttributesView(&e.attributes),
                detail: e.detail.as_deref(),
                fields: e.fields.as_deref(),
            })
            .collect();
        serde_json::to_vec(&body)
    })
    .await
}

/// One lifecycle entry as the API shows it.
fn entry(e: &Entry) -> Value {
    // Written by the history as a JSON object; an empty one if not.
    let details: Value = serde_json::from_str(&e.details).unwrap_or_else(|_| json!({}));
    json!({
        "time": rfc3339_nanos(e.time_nano),
        "key": e.key,
        "id": &*e.id,
        "details": details,
    })
}

/// One event of the ring as the API shows it (`Event` in `docs/api.yaml`).
#[derive(Serialize)]
struct EventView<'a> {
    time: String,
    key: &'a str,
    id: &'a str,
    attributes: AttributesView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a Map<String, Value>>,
}

/// An event's attributes as a JSON object, written as they are.
struct AttributesView<'a>(&'a Attributes);

impl Serialize for AttributesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The decoded `name=value` pairs of a query string.
fn pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
}

fn positive(s: &str) -> Option<usize> {
    s.parse().ok().filter(|n| *n > 0)
}

fn bad(why: &str) -> Response {
    error(StatusCode::BAD_REQUEST, why)
}
