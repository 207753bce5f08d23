//! `/metrics`, `/healthz`, `/readyz` and `POST /-/reload` on the listen
//! address. It serves what others compute; it must not count, decide or
//! reload anything itself.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::source::Health;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    reload: Option<(Reloader, Arc<str>)>,
}

/// The HTTP routes. `reload` is the reloader and the bearer token
/// `POST /-/reload` requires; without one the endpoint refuses.
pub fn router(
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    reload: Option<(Reloader, Arc<str>)>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/-/reload", post(reload_handler))
        .with_state(AppState {
            metrics,
            health,
            reload,
        })
}

/// Compares in constant time, so the token cannot be guessed byte by byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn reload_handler(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let Some((reloader, token)) = state.reload else {
        return (
            StatusCode::FORBIDDEN,
            "reload over HTTP is disabled: set [server] token_file\n".to_owned(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(given.trim().as_bytes(), token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token\n".to_owned(),
        );
    }
    match reloader.reload("POST /-/reload").await {
        Ok(summary) => (StatusCode::OK, format!("reloaded: {summary}\n")),
        Err(problems) => (
            StatusCode::BAD_REQUEST,
            format!("reload failed; the old rules stay in force:\n{problems}\n"),
        ),
    }
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// 200 once the event stream is connected, 503 otherwise.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_connected() {
        (StatusCode::OK, "ready: event stream connected\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: event stream not connected\n",
        )
    }
}
