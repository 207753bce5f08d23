//! The read-only status API, `/api/v1`: who may read ([`refusal`]: the
//! API token or the reload token, compared in constant time), what a query
//! asks for ([`Filter`]), and how the container view reads as JSON.
//!
//! It serves the container view from memory and makes no engine call; it
//! must not change the view, judge a container, or reload anything.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;
use serde_json::json;

use super::entry::{Entry, entry};
use super::{AppState, same_secret};
use crate::containers::{Container, Status};

/// The states a container can be in, as the engine names them.
const STATES: &[&str] = &[
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

/// `GET /api/v1/containers`.
pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    let filter = match Filter::parse(query.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    if !filter.stats {
        // Built off the async workers: a scrape of /metrics that lands on
        // the same worker must not wait for a list of a thousand.
        return off_the_workers(move || {
            let found = found(&state, &filter);
            let entries: Vec<Entry<'_>> = found.iter().map(|(c, s)| entry(&state, c, s)).collect();
            serde_json::to_vec(&entries)
        })
        .await;
    }
    let found = found(&state, &filter);
    let mut entries: Vec<Entry<'_>> = found.iter().map(|(c, s)| entry(&state, c, s)).collect();
    let containers: Vec<&Container> = found.iter().map(|(c, _)| &**c).collect();
    add_stats(&state, &containers, &mut entries).await;
    json_response(StatusCode::OK, &entries)
}

/// The containers `filter` admits, sorted by name.
fn found(state: &AppState, filter: &Filter) -> Vec<(Arc<Container>, Status)> {
    state
        .containers
        .snapshot()
        .into_iter()
        .filter(|(c, _)| filter.admits(c))
        .collect()
}

/// A 200 JSON answer encoded by `encode` on the blocking pool.
pub(super) async fn off_the_workers(
    encode: impl FnOnce() -> Result<Vec<u8>, serde_json::Error> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(encode).await {
        Ok(Ok(bytes)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("building the answer failed: {e}"),
        ),
    }
}

/// `GET /api/v1/containers/{name-or-id}`.
pub(super) async fn one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    // No parameters yet; any is a mistake worth saying.
    if let Some((name, _)) = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|p| (!p.is_empty()).then(|| p.split_once('=').unwrap_or((p, ""))))
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unknown query parameter `{}`", decode(name)),
        );
    }
    match state.containers.find(&key) {
        Some((c, s)) => {
            let mut one = [entry(&state, &c, &s)];
            add_stats(&state, &[&c], &mut one).await;
            json_response(StatusCode::OK, &one[0])
        }
        None => error(StatusCode::NOT_FOUND, &format!("no container \"{key}\"")),
    }
}

/// Adds `stats` to the entries of the running (or paused, or restarting)
/// containers, read concurrently; a stopped container has none (the engine
/// would report zeros).
async fn add_stats(state: &AppState, containers: &[&Container], entries: &mut [Entry<'_>]) {
    let live: Vec<usize> = (0..containers.len())
        .filter(|&i| {
            matches!(
                containers[i].state.status,
                "running" | "paused" | "restarting"
            )
        })
        .collect();
    let ids: Vec<String> = live.iter().map(|&i| containers[i].id.clone()).collect();
    let readings = state.stats.read(&ids).await;
    for (i, reading) in live.into_iter().zip(readings) {
        entries[i].stats = Some(reading.to_json());
    }
}

/// None for a request bearing the API token or the reload token, else the
/// answer that refuses it: without an API token configured the API is off
/// (403); a wrong or missing token is 401.
pub(super) fn refusal(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(api_token) = &state.api_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the status API is disabled: set [server] api_token_file to a file holding a bearer token (16+ characters)",
        ));
    };
    let given = bearer(headers);
    let reload_token = state.reload.as_ref().map(|(_, t)| t);
    let allowed = same_secret(given.as_bytes(), api_token.as_bytes())
        | reload_token.is_some_and(|t| same_secret(given.as_bytes(), t.as_bytes()));
    if allowed && !given.is_empty() {
        return None;
    }
    let mut refused = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    refused.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    Some(refused)
}

/// The bearer token of a request, or "" without one.
pub(super) fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
}

/// What `GET /api/v1/containers` asks for: every condition must hold.
#[derive(Debug, Default)]
pub struct Filter {
    /// `state=`: any of these (repeatable).
    states: Vec<String>,
    /// `label=k=v` (value must equal) or `label=k` (present), all of them.
    labels: Vec<(String, Option<String>)>,
    /// `name=GLOB`: any of them (repeatable).
    names: Option<GlobSet>,
    /// `stats=true`: read each container's CPU and memory.
    pub stats: bool,
}

impl Filter {
    /// Parses a query string; the error names the bad parameter.
    pub fn parse(query: &str) -> Result<Filter, String> {
        let mut filter = Filter::default();
        let mut names = GlobSetBuilder::new();
        let mut any_name = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, value) = (decode(key), decode(value));
            match key.as_str() {
                "state" => {
                    if !STATES.contains(&value.as_str()) {
                        return Err(format!(
                            "`state` must be one of {}, found \"{value}\"",
                            STATES.join(", ")
                        ));
                    }
                    filter.states.push(value);
                }
                "label" => {
                    let (k, v) = match value.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (value.clone(), None),
                    };
                    if k.is_empty() {
                        return Err(format!(
                            "`label` must be KEY or KEY=VALUE with a non-empty KEY, found \"{value}\""
                        ));
                    }
                    filter.labels.push((k, v));
                }
                "name" => {
                    if value.is_empty() {
                        return Err("`name` must be a glob such as web-*, found \"\"".into());
                    }
                    let glob = Glob::new(&value)
                        .map_err(|e| format!("`name` is not a valid glob \"{value}\": {e}"))?;
                    names.add(glob);
                    any_name = true;
                }
                "stats" => {
                    filter.stats = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(format!(
                                "`stats` must be true or false, found \"{value}\""
                            ));
                        }
                    }
                }
                other => return Err(format!("unknown query parameter `{other}`")),
            }
        }
        if any_name {
            filter.names = Some(
                names
                    .build()
                    .map_err(|e| format!("`name` globs do not compile: {e}"))?,
            );
        }
        Ok(filter)
    }

    /// Whether container `c` passes every condition.
    pub fn admits(&self, c: &Container) -> bool {
        (self.states.is_empty() || self.states.iter().any(|s| s == c.state.status))
            && self.labels.iter().all(|(k, v)| match (c.labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
            && self.names.as_ref().is_none_or(|g| g.is_match(&c.name))
    }
}

/// `{"error": why}` with `status`.
pub(super) fn error(status: StatusCode, why: &str) -> Response {
    json_response(status, &json!({ "error": why }))
}

pub(super) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "error": format!("cannot encode the answer: {e}") }).to_string(),
        )
            .into_response(),
    }
}

/// Percent-decodes a query component (`+` is a space); bytes that do not
/// decode are kept as written.
pub(super) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, status: &'static str, labels: &[(&str, &str)]) -> Container {
        let mut c = Container {
            name: name.into(),
            ..Container::default()
        };
        c.state.status = status;
        c.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        c
    }

    #[test]
    fn filters_combine() {
        let web = container("web-1", "running", &[("team", "a"), ("tier", "")]);
        let db = container("db-1", "exited", &[("team", "b")]);
        let all = Filter::parse("").expect("empty");
        assert!(all.admits(&web) && all.admits(&db));
        let f = Filter::parse("state=running").expect("state");
        assert!(f.admits(&web) && !f.admits(&db));
        let f = Filter::parse("label=team%3Da&label=tier").expect("labels");
        assert!(f.admits(&web) && !f.admits(&db));
        let f = Filter::parse("label=team=b").expect("unescaped =");
        assert!(!f.admits(&web) && f.admits(&db));
        let f = Filter::parse("name=web-*&name=nope").expect("names");
        assert!(f.admits(&web) && !f.admits(&db));
        let f = Filter::parse("state=exited&state=running&name=db-%2A").expect("mixed");
        assert!(!f.admits(&web) && f.admits(&db));
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, named) in [
            ("label==x", "`label`"),
            ("label=", "`label`"),
            ("state=", "`state`"),
            ("state=sleeping", "`state`"),
            ("name=", "`name`"),
            ("name=a[", "`name`"),
            ("colour=red", "`colour`"),
            ("stats=yes", "`stats`"),
        ] {
            let why = Filter::parse(query).expect_err(query);
            assert!(why.contains(named), "{query}: {why}");
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(decode("a%3Db+c"), "a=b c");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%4"), "%4");
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdeX"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same_secret(b"", b"x"));
    }
}
