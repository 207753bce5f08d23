//! The handler registry: names in the rules file → async handlers.
//!
//! A [`Factory`] is registered under a name, reads and validates its rule's
//! `[rule.with]` table at load time (through [`Table`], which reports unknown
//! keys and bad values with line and column), and builds one [`Handler`] per
//! rule. The dispatcher calls [`Handler::handle`] off the stream reader, with a
//! [`Ctx`] that carries the Docker client, `--dry-run`, the metrics, the audit
//! log and the container view.
//!
//! A handler is told of its rule only what it needs ([`RuleSpec`]): handlers
//! must not know the rules module. The [`Registry`] owns the families'
//! observers.

pub mod emit;
pub mod exec_audit;
pub mod heal;
pub mod log;
pub mod network_audit;
pub mod notify;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::audit::AuditHandle;
use crate::config::ExitCode;
use crate::config::table::Table;
use crate::containers::{Container, Containers};
use crate::docker::DockerHandle;
use crate::docker::calls::Call;
use crate::event::Event;
use crate::internal_events::denied::{CallDenied, report};
use crate::internal_events::{InternalEvent, OwnEvents};
use crate::metrics::Metrics;
use crate::notify::NotifyHandle;

pub use emit::{About, Emitter};

/// A boxed future, so handlers can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a handler run came to; counted in
/// `dockwarden_handler_runs_total{handler,outcome}`.
#[derive(Debug)]
pub enum Outcome {
    /// It did its work.
    Ok,
    /// It decided not to act (dry run, nothing to do, suppressed).
    Skipped,
    /// It failed; the reason is logged.
    Error(HandlerError),
}

/// Why a handler run or a healing action failed, sorted by what a caller
/// does about it: an engine that refused (a socket proxy's 403, a 404 or
/// 409) is not retried as one that did not answer.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("Docker is not connected")]
    NotConnected,
    /// A socket proxy (or authorization plugin) refused the call: 403.
    /// Retrying cannot help until its configuration changes.
    #[error("{during}: {} {} denied (403): {}", call.method(), call.path(), crate::docker::calls::plain(message))]
    Denied {
        during: String,
        call: Call,
        message: String,
    },
    /// The engine answered with an error status.
    #[error("{during}: Docker answered {status}: {message}")]
    Refused {
        during: String,
        status: u16,
        message: String,
    },
    /// The call got no answer (connection lost, timeout, bad body).
    #[error("{during}: {source}")]
    Unanswered {
        during: String,
        source: bollard::errors::Error,
    },
    #[error("recreate: {0}")]
    Recreate(#[from] heal::recreate::RecreateError),
    #[error("handler panicked")]
    Panicked,
    /// A handler that declared it never waits did (a bug).
    #[error("handler waited, though it declared it never waits")]
    Waited,
}

impl HandlerError {
    /// An engine call (`call`, made for `during`: what was being done)
    /// that failed.
    pub fn engine(
        call: Call,
        during: impl Into<String>,
        e: bollard::errors::Error,
    ) -> HandlerError {
        match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 403,
                message,
            } => HandlerError::Denied {
                during: during.into(),
                call,
                message,
            },
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => HandlerError::Refused {
                during: during.into(),
                status: status_code,
                message,
            },
            source => HandlerError::Unanswered {
                during: during.into(),
                source,
            },
        }
    }

    /// A fixed string for metric labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::NotConnected => "not_connected",
            HandlerError::Denied { .. } => "denied",
            HandlerError::Recreate(e) if e.denied() => "denied",
            HandlerError::Refused { .. } => "refused",
            HandlerError::Unanswered { .. } => "unanswered",
            HandlerError::Recreate(_) => "recreate",
            HandlerError::Panicked => "panicked",
            HandlerError::Waited => "waited",
        }
    }

    /// The calls a proxy denied on the way, each with its answer.
    pub fn denials(&self) -> Vec<(Call, &str)> {
        match self {
            HandlerError::Denied { call, message, .. } => vec![(*call, message.as_str())],
            HandlerError::Recreate(e) => e.denials(),
            _ => Vec::new(),
        }
    }
}

impl Outcome {
    /// The metric label.
    /// One of [`crate::metrics::OUTCOMES`].
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Error(_) => "error",
        }
    }
}

/// What every handler run may use.
pub struct Ctx {
    /// `--dry-run`: decide and log, but call no mutating Docker API.
    pub dry_run: bool,
    /// The engine, negotiated by the source once it connects.
    pub docker: DockerHandle,
    pub metrics: Arc<Metrics>,
    /// Cancelled on SIGTERM: long waits (backoff) must give way to it.
    pub shutdown: CancellationToken,
    /// Work a handler schedules beyond its own run (a restart after a
    /// backoff) is spawned here, so shutdown waits for it within the grace.
    pub tasks: TaskTracker,
    /// The audit log.
    pub audit: AuditHandle,
    /// What dockwarden knows of each container, kept current by the
    /// dispatcher; handlers read it instead of inspecting on their own.
    pub containers: Arc<Containers>,
    /// Where dockwarden's own `dockwarden.*` events go: the dispatch queue.
    pub own: Arc<dyn OwnEvents>,
    /// The notification targets' queues.
    pub notify: NotifyHandle,
}

impl Ctx {
    /// What scheduled work uses to log, count and route its facts.
    pub fn emitter(&self) -> Emitter {
        Emitter::new(
            self.metrics.clone(),
            self.containers.clone(),
            self.own.clone(),
        )
    }

    /// Logs and counts `fact`; a keyed one is also routed through the rules
    /// as an event about `about`.
    pub fn emit(&self, fact: &dyn InternalEvent, about: Option<About<'_>>) {
        self.emitter().emit(fact, about);
    }

    /// The view of container `id` (inspected now if it is not cached), or
    /// None if the engine cannot tell; a denied inspect is reported.
    pub async fn container(
        &self,
        docker: &crate::docker::Engine,
        id: &str,
    ) -> Option<Arc<Container>> {
        match self.containers.lookup(docker, id).await {
            Ok(c) => Some(c),
            Err(e) => {
                report(&self.metrics, Call::ContainerInspect, id, &e);
                None
            }
        }
    }

    /// Logs a failed handler run. A call a socket proxy denied is logged
    /// once per call, with what to allow; the run's own line is then only
    /// a debug line.
    pub fn handler_failed(&self, rule: &str, handler: &str, event: &Event, error: &HandlerError) {
        let denials = error.denials();
        for (call, message) in &denials {
            let during = format!("{handler} for {event}");
            self.emit(
                &CallDenied {
                    call: *call,
                    during: &during,
                    message,
                },
                None,
            );
        }
        let kind = error.kind();
        if denials.is_empty() {
            warn!(rule, handler, event = %event, error = %error, kind, "Handler failed.");
        } else {
            debug!(rule, handler, event = %event, error = %error, kind, "Handler failed.");
        }
    }
}

/// What a handler is told of the rule it serves: no more than it needs, so
/// handlers never depend on the rules module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The rule's name, for logs.
    pub name: Arc<str>,
    /// `match.exit_code`, for handlers that check it against the engine
    /// ([`Factory::verifies_exit_code`]).
    pub exit_code: Option<ExitCode>,
    /// The names under `[notify.targets]`, for the `notify` handler to
    /// check its `target` against.
    pub notify_targets: Arc<[String]>,
    /// On a reload: the targets the running sidecar has senders for (they
    /// are built once, at start). None when loading for a start or a
    /// check. A target the file declares but the sidecar lacks has no
    /// sender, so a rule naming it must be refused, not left to drop
    /// every message.
    pub started_targets: Option<Arc<[String]>>,
}

/// A handler bound to one rule's parameters.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event its rule matched. Runs in order with the other
    /// events of the same container, concurrently with other containers.
    fn handle<'a>(&'a self, ctx: &'a Ctx, event: &'a Arc<Event>) -> BoxFuture<'a, Outcome>;

    /// Whether `handle` finishes without ever waiting (no engine call, no
    /// timer, no queue with back-pressure). An event whose handlers all
    /// never wait runs in the dispatcher itself when its container has no
    /// work pending: no task, no wake-up. A handler that says so and then
    /// waits fails that run ([`HandlerError::Waited`]).
    fn never_waits(&self) -> bool {
        false
    }
}

/// Sees every event it [`wants`](Observer::wants), whatever the rules say,
/// in the container's lane before the rules' handlers: the bookkeeping a
/// handler family needs (who stopped a container, which events were its own).
pub trait Observer: Send + Sync + 'static {
    fn wants(&self, event: &Event) -> bool;
    /// Bookkeeping only: it must not wait (it runs before every handler of
    /// the container, and often in the dispatcher itself).
    fn observe(&self, ctx: &Ctx, event: &Arc<Event>);
}

/// Builds handlers of one kind from `[rule.with]`.
pub trait Factory: Send + Sync + 'static {
    /// The name rules refer to in `handler = "..."`.
    fn name(&self) -> &'static str;

    /// Reads the parameters (each getter declares a key and records any
    /// problem with its position) and builds the handler. A handler is
    /// returned even when a parameter was bad; the loader then rejects the
    /// whole file, so it is never used.
    fn build(&self, rule: &RuleSpec, with: &mut Table<'_, '_>) -> Arc<dyn Handler>;

    /// The event keys this handler can act on, if it is limited to some: a
    /// rule whose `on` matches none of them is rejected at load time.
    fn events(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Whether the handler checks `match.exit_code` against the engine's own
    /// record itself. The matcher then lets every `die` through to it, since
    /// the event's `exitCode` attribute can be forged by a container label.
    fn verifies_exit_code(&self) -> bool {
        false
    }

    /// Whether the handler may act on dockwarden's own `dockwarden.*`
    /// events. Handlers that heal or audit must not (an action's own event
    /// must never trigger another action); `log` and `notify` do. A rule
    /// whose `on` matches a `dockwarden.*` key is rejected for the others.
    fn own_events(&self) -> bool {
        false
    }

    /// The observer this family needs, shared by all its handlers.
    fn observer(&self) -> Option<Arc<dyn Observer>> {
        None
    }

    /// Whether the handler reads the container view ([`Ctx::container`],
    /// [`Ctx::containers`]). With no such rule in force (and the status API
    /// off) the view inspects nothing on its own: no engine call that no
    /// rule needs.
    fn reads_view(&self) -> bool {
        true
    }
}

/// Handler factories by name, and the observers of their families.
pub struct Registry {
    factories: BTreeMap<&'static str, Box<dyn Factory>>,
    observers: BTreeMap<&'static str, Arc<dyn Observer>>,
    /// The heal handlers' shared book, for the status API.
    healer: Option<Arc<heal::Healer>>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry {
            factories: BTreeMap::new(),
            observers: BTreeMap::new(),
            healer: None,
        }
    }

    /// Every handler dockwarden ships.
    pub fn builtin() -> Self {
        Registry::builtin_with(heal::Healer::default())
    }

    /// Every handler dockwarden ships, healing offline (`dockwarden
    /// replay`): decided from the events alone, on their clock.
    pub fn offline() -> Self {
        Registry::builtin_with(heal::Healer::offline())
    }

    fn builtin_with(healer: heal::Healer) -> Self {
        let mut r = Registry::empty();
        r.register(Box::new(log::LogFactory));
        // One healer: restart, recreate, stop and raise_memory share its book.
        let healer = Arc::new(healer);
        r.register(Box::new(heal::RestartFactory(healer.clone())));
        r.register(Box::new(heal::RecreateFactory(healer.clone())));
        r.register(Box::new(heal::StopFactory(healer.clone())));
        r.register(Box::new(heal::RaiseMemoryFactory(healer.clone())));
        r.healer = Some(healer);
        r.register(Box::new(exec_audit::ExecAuditFactory(Arc::default())));
        r.register(Box::new(network_audit::NetworkAuditFactory::default()));
        r.register(Box::new(notify::NotifyFactory));
        r
    }

    /// The heal handlers' book of per-container state, if they are built in.
    pub fn healer(&self) -> Option<Arc<heal::Healer>> {
        self.healer.clone()
    }

    /// Adds a factory; a later one with the same name replaces the earlier.
    pub fn register(&mut self, factory: Box<dyn Factory>) {
        match factory.observer() {
            Some(o) => self.observers.insert(factory.name(), o),
            None => self.observers.remove(factory.name()),
        };
        self.factories.insert(factory.name(), factory);
    }

    /// The observers of the handlers named in `used`, each once (a family's
    /// handlers share one).
    pub fn observers_for<'a>(
        &self,
        used: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Arc<dyn Observer>> {
        let mut out: Vec<Arc<dyn Observer>> = Vec::new();
        for name in used {
            if let Some(o) = self.observers.get(name)
                && !out.iter().any(|known| Arc::ptr_eq(known, o))
            {
                out.push(o.clone());
            }
        }
        out
    }

    pub fn get(&self, name: &str) -> Option<&dyn Factory> {
        self.factories.get(name).map(|f| f.as_ref())
    }

    /// Whether any handler named in `used` reads the container view.
    pub fn reads_view<'a>(&self, used: impl IntoIterator<Item = &'a str>) -> bool {
        used.into_iter()
            .any(|name| self.factories.get(name).is_some_and(|f| f.reads_view()))
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }
}
