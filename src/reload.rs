//! Hot reload of the rules file: on SIGHUP and on `POST /-/reload`.
//!
//! The file is parsed and validated again with the same handler registry (so
//! healing state survives); on success the new rules are swapped in between
//! two events; on failure the old rules stay, every problem is logged with
//! its line and column, and `dockwarden_rules_reloads_total{result="error"}`
//! counts it. Sections other than the rules (`[server]`, `[source]`,
//! `[dispatch]`, `[audit]`, `[notify]`) take effect at the next start. So
//! rules that send to a notify target the sidecar did not start with (one
//! added or renamed since) are such a failure: nothing would deliver
//! their messages.
//!
//! It must not touch handler state: the registry it reuses keeps it.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::handlers::Registry;
use crate::metrics::Metrics;
use crate::rules::{Config, Ruleset};

/// What asked for a reload, and where the answer goes.
pub struct Request {
    pub origin: &'static str,
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// Sends reload requests.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<Request>,
}

impl Reloader {
    /// Asks for a reload and waits for its outcome: `Ok(summary)` or
    /// `Err(every problem, one per line)`.
    pub async fn reload(&self, origin: &'static str) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                origin,
                reply: Some(reply),
            })
            .await
            .map_err(|_| "shutting down".to_owned())?;
        answer.await.map_err(|_| "shutting down".to_owned())?
    }
}

/// The task that performs reloads, one at a time.
pub struct ReloadTask {
    pub path: PathBuf,
    pub registry: Arc<Registry>,
    pub rules: watch::Sender<Arc<Ruleset>>,
    /// The notify targets that have a sender, the only ones new rules may
    /// name.
    pub notify_targets: Arc<[String]>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl ReloadTask {
    /// Starts the task and a SIGHUP listener; returns the handle the HTTP
    /// endpoint uses.
    pub fn spawn(self) -> Reloader {
        let (tx, mut rx) = mpsc::channel::<Request>(8);
        let hup = tx.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut sighup) = signal(SignalKind::hangup()) else {
                error!("Cannot listen for SIGHUP; reload with POST /-/reload.");
                return;
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    s = sighup.recv() => {
                        if s.is_none() {
                            return;
                        }
                        let _ = hup.send(Request { origin: "SIGHUP", reply: None }).await;
                    }
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    r = rx.recv() => match r {
                        Some(r) => r,
                        None => return,
                    },
                };
                let outcome = self.reload(request.origin);
                if let Some(reply) = request.reply {
                    let _ = reply.send(outcome);
                }
            }
        });
        Reloader { tx }
    }

    fn reload(&self, origin: &'static str) -> Result<String, String> {
        match Config::reload_file(&self.path, &self.registry, &self.notify_targets) {
            Ok(config) => {
                let summary = format!(
                    "{} rules, handlers: {}",
                    config.rules.rules.len(),
                    config
                        .rules
                        .handlers_used()
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(",")
                );
                self.rules.send_replace(config.rules);
                self.metrics.rules_reloaded(true);
                info!(origin, file = %self.path.display(), rules = %summary, "Rules reloaded.");
                Ok(summary)
            }
            Err(diags) => {
                self.metrics.rules_reloaded(false);
                for d in &diags.items {
                    error!(origin, "{}:{}:{}: {}", diags.file, d.line, d.col, d.message);
                }
                warn!(
                    origin,
                    problems = diags.items.len(),
                    "Rules reload failed; the old rules stay in force."
                );
                Err(diags.to_string())
            }
        }
    }
}
