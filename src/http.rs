//! `/metrics`, `/healthz`, `/readyz`, `POST /-/reload` and the read-only
//! status API `/api/v1` ([`api`]) on the listen address, served by
//! [`serve`]: with `--web-config`, through TLS and basic auth ([`Web`]). It
//! serves what others compute; it must not count, decide or reload anything
//! itself.

mod api;
mod entry;
mod guard;
mod history;
mod listen;
mod passwords;
mod tls;
mod web_config;

pub use guard::Web;
pub use listen::serve;
pub use web_config::WebConfigError;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::containers::Containers;
use crate::containers::stats::StatsReader;
use crate::handlers::heal::Healer;
use crate::history::History;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::rules::Ruleset;
use crate::source::Health;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    reload: Option<(Reloader, Arc<str>)>,
    api_token: Option<Arc<str>>,
    containers: Arc<Containers>,
    history: Arc<History>,
    healer: Option<Arc<Healer>>,
    rules: tokio::sync::watch::Receiver<Arc<Ruleset>>,
    stats: Arc<StatsReader>,
    heal_rules: Arc<entry::HealRules>,
}

/// What the routes serve.
pub struct Routes {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The reloader and the bearer token `POST /-/reload` requires; without
    /// one the endpoint refuses. The token may also read `/api/v1`.
    pub reload: Option<(Reloader, Arc<str>)>,
    /// The bearer token `/api/v1` requires; without one the API refuses.
    pub api_token: Option<Arc<str>>,
    /// The container view `/api/v1/containers` reads.
    pub containers: Arc<Containers>,
    /// The lifecycles and the event ring `/api/v1` serves.
    pub history: Arc<History>,
    /// The heal handlers' book, for each container's `heal`.
    pub healer: Option<Arc<Healer>>,
    /// The rules in force, for the rule that would heal a container.
    pub rules: tokio::sync::watch::Receiver<Arc<Ruleset>>,
    /// Live CPU and memory, for `?stats=true`.
    pub stats: Arc<StatsReader>,
}

/// The HTTP routes.
pub fn router(routes: Routes) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/-/reload", post(reload_handler))
        .route("/api/v1/containers", get(api::list))
        .route("/api/v1/containers/{key}", get(api::one))
        .route("/api/v1/containers/{key}/history", get(history::lifecycle))
        .route("/api/v1/events", get(history::events))
        .with_state(AppState {
            metrics: routes.metrics,
            health: routes.health,
            reload: routes.reload,
            api_token: routes.api_token,
            containers: routes.containers,
            history: routes.history,
            healer: routes.healer,
            rules: routes.rules,
            stats: routes.stats,
            heal_rules: Arc::default(),
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
    // Only the reload token: the API token reads, it does not reload.
    let given = api::bearer(&headers);
    if !same_secret(given.as_bytes(), token.as_bytes()) {
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
