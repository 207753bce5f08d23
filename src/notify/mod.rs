//! Notification delivery: a [`Message`] handed to [`NotifyHandle::send`]
//! reaches its target (a webhook, Slack, Discord, ntfy or Gotify) in that
//! service's format, at least once and in order, without the pipeline
//! ever waiting for it.
//!
//! Each `[notify.targets.NAME]` gets a bounded queue (`inbox`) and its own
//! sender task (`sender`) with a timeout per request, retries with
//! backoff, a breaker and a rate limit that coalesces what it holds into
//! one summary ([`summary`]). Undelivered messages live in a spool
//! ([`spool`]) under the state directory and are sent after a restart.
//! Which events become messages, and their wording, is the `notify`
//! handler's business; this module must not know events or rules.
//!
//! [`config`] holds the targets' settings and [`parse`] reads them;
//! [`body`] shapes the requests; [`client`] makes one attempt and
//! classifies its failure; [`policy`] holds backoff, breaker and rate
//! window; `observe` logs and counts.

pub mod body;
pub mod client;
pub mod config;
mod inbox;
mod observe;
pub mod parse;
pub mod policy;
mod sender;
pub mod spool;
pub mod summary;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Kind, NotifyConfig, Secret, TargetConfig, TargetUrl};
use inbox::{DropLog, Inbox};
use observe::{DropReason, Dropped, SpoolFailed, SpoolLoaded};
pub use parse::read;
use sender::{Sender, Wiring};
use spool::Spool;

use crate::internal_events::InternalEvent;
use crate::metrics::Metrics;

/// How much a message matters; services' priorities are mapped from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The container a message is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub id: String,
    pub name: String,
    pub image: String,
}

/// One notification, as a person reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Stable per message: the body's `id` and the `Idempotency-Key`
    /// header, kept across retries and restarts.
    pub id: String,
    /// When it happened (Unix ns).
    pub time_nano: i64,
    /// `dockwarden.restart`, `container.oom`, …
    pub key: String,
    pub severity: Severity,
    /// "web-1 restarted"
    pub title: String,
    /// "web-1 restarted (exit 3, attempt 2 of 5, next backoff 4s)"
    pub text: String,
    pub container: Option<ContainerRef>,
    pub fields: Map<String, Value>,
}

/// Where the pipeline hands messages over. Cheap to clone.
#[derive(Clone, Default)]
pub struct NotifyHandle {
    targets: Arc<BTreeMap<String, Arc<Inbox>>>,
    /// Where messages for a target it does not have are counted and
    /// warned about; None for a disabled handle.
    unknown: Option<Arc<Unknown>>,
}

/// Messages for a target without a sender.
struct Unknown {
    metrics: Arc<Metrics>,
    log: DropLog,
}

impl NotifyHandle {
    /// No targets: every `send` is dropped without a trace (for tests and
    /// tools that deliver nothing, such as `replay`).
    pub fn disabled() -> NotifyHandle {
        NotifyHandle::default()
    }

    pub fn has_target(&self, name: &str) -> bool {
        self.targets.contains_key(name)
    }

    /// The targets it has a sender for, sorted.
    pub fn names(&self) -> Arc<[String]> {
        self.targets.keys().cloned().collect()
    }

    /// Queues `msg` for `target`. Never blocks and never awaits: when the
    /// target's queue is full the message is dropped, counted
    /// (`dockwarden_notifications_total{result="dropped"}`) and logged,
    /// at most one warning per target per ten seconds. So is a message
    /// for a target without a sender, counted as `target="(unknown)"`.
    pub fn send(&self, target: &str, msg: Message) {
        match (self.targets.get(target), &self.unknown) {
            (Some(inbox), _) => inbox.push(msg),
            // Rules, at start and on reload, may name only targets with a
            // sender, so this is a bug; still, a message lost must show.
            (None, Some(unknown)) => Dropped {
                target,
                reason: DropReason::NoSender,
                warn: unknown.log.drop_one(),
            }
            .emit(&unknown.metrics),
            (None, None) => {}
        }
    }
}

/// The running senders, one task per target.
pub struct Notifier {
    handle: NotifyHandle,
    tasks: TaskTracker,
    stop: CancellationToken,
    drain: CancellationToken,
}

impl Notifier {
    /// Opens each target's spool under `spool_dir/notify/` (its messages
    /// from before a restart are sent first) and starts the senders.
    /// `host` goes into every message. Must run inside a tokio runtime.
    pub fn start(
        config: &NotifyConfig,
        spool_dir: &Path,
        host: String,
        metrics: Arc<Metrics>,
    ) -> Notifier {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        // Built only for targets: building it loads rustls and the bundled
        // roots, code and data that stay resident after.
        let client = if config.targets.is_empty() {
            None
        } else {
            match client::build() {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "Cannot build the HTTP client; notifications will be dropped.");
                    None
                }
            }
        };
        let dir = spool_dir.join("notify");
        let mut targets = BTreeMap::new();
        for target in &config.targets {
            metrics.notification_target(&target.name);
            let inbox = Arc::new(Inbox::new(&target.name, target.queue, metrics.clone()));
            targets.insert(target.name.clone(), inbox.clone());
            let Some(client) = client.clone() else {
                inbox.close();
                continue;
            };
            let (spool, restored) = match Spool::open(&dir, &target.name) {
                Ok((spool, pending, loaded)) => {
                    SpoolLoaded {
                        target: &target.name,
                        pending: pending.len(),
                        unreadable: loaded.unreadable,
                    }
                    .emit(&metrics);
                    (Some(spool), pending)
                }
                Err(e) => {
                    SpoolFailed {
                        target: &target.name,
                        error: &e,
                    }
                    .emit(&metrics);
                    (None, Vec::new())
                }
            };
            inbox.restored(restored.len());
            let sender = Sender::new(Wiring {
                target: target.clone(),
                inbox,
                client,
                host: host.clone(),
                metrics: metrics.clone(),
                spool,
                restored,
                stop: stop.clone(),
                drain: drain.clone(),
            });
            tasks.spawn(sender.run());
        }
        tasks.close();
        Notifier {
            handle: NotifyHandle {
                targets: Arc::new(targets),
                unknown: Some(Arc::new(Unknown {
                    metrics,
                    log: DropLog::default(),
                })),
            },
            tasks,
            stop,
            drain,
        }
    }

    pub fn handle(&self) -> NotifyHandle {
        self.handle.clone()
    }

    /// Stops delivery. Within `grace`, each target sends what it can send
    /// at once (nothing that waits for a backoff, an open breaker or the
    /// rate limit); then requests in flight are abandoned. Whatever is
    /// undelivered stays in the spool for the next start, and later
    /// `send`s are dropped and counted.
    pub async fn close(self, grace: Duration) {
        self.drain.cancel();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.stop.cancel();
            self.tasks.wait().await;
        }
    }
}

impl Drop for Notifier {
    /// Dropped without `close`: the senders stop at their next step,
    /// leaving the spool as it is.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `dockwarden notify test`: one test message to each named target, one
/// attempt each, all at once. Per target: Ok(HTTP status), whatever it
/// is, or Err(why no answer came); the reason names the URL's host only.
pub async fn test_targets(
    config: &NotifyConfig,
    names: &[String],
    host: &str,
) -> Vec<(String, Result<u16, String>)> {
    let client = client::build();
    let now = crate::clock::unix_nanos();
    let runs = names.iter().map(|name| {
        let client = client.clone();
        async move {
            let result = async {
                let client = client.map_err(|e| format!("cannot build the HTTP client: {e}"))?;
                let target = config.target(name).ok_or_else(|| {
                    let known = config.names();
                    format!(
                        "no target \"{name}\" under [notify.targets] (defined: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    )
                })?;
                let msg = test_message(host, now);
                let request = body::render(target, &msg, host).map_err(|e| e.to_string())?;
                match client::attempt(&client, &request, target.timeout).await {
                    Ok(status) => Ok(status),
                    Err(client::AttemptError::Status { status, .. }) => Ok(status),
                    Err(e) => Err(e.to_string()),
                }
            }
            .await;
            (name.clone(), result)
        }
    });
    futures::future::join_all(runs).await
}

fn test_message(host: &str, now: i64) -> Message {
    Message {
        id: format!("test-{now}"),
        time_nano: now,
        key: "dockwarden.test".to_owned(),
        severity: Severity::Info,
        title: "dockwarden test".to_owned(),
        text: format!("A test notification from dockwarden on {host}: this target works."),
        container: None,
        fields: Map::new(),
    }
}
