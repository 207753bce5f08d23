//! `dockwarden run`: wires the source, the dispatcher, the handlers and the
//! HTTP endpoint together, and shuts them down in order.
//!
//! Shutdown order: the caller cancels `shutdown` → the reader stops reading and
//! the dispatcher stops starting work → running handler runs get
//! `shutdown_grace_secs` to finish → the HTTP endpoint closes last, so
//! `/metrics` stays scrapable until the end.
//!
//! It owns the wiring and the order of shutdown; it must not hold logic of
//! its own: each piece it starts is built and tested alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::audit::{AuditHandle, AuditSink};
use crate::dispatch::Dispatcher;
use crate::docker::{DockerError, DockerHandle, Endpoint};
use crate::handlers::{Ctx, Registry};
use crate::internal_events::emit_unattached;
use crate::internal_events::lifecycle::Started;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::progress::Progress;
use crate::reload::ReloadTask;
use crate::rules::{Config, DEFAULT_LISTEN, Diagnostics};
use crate::source::{Health, Source, Wiring};

/// What `dockwarden run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub rules_path: PathBuf,
    /// Overrides `[server] listen`.
    pub listen: Option<SocketAddr>,
    pub dry_run: bool,
    /// Overrides `[state] dir`.
    pub state_dir: Option<PathBuf>,
    /// `--web-config`: TLS and basic auth on the HTTP endpoint, in the
    /// exporter-toolkit's format.
    pub web_config: Option<PathBuf>,
    /// `--web-open-probes`: `/healthz` and `/readyz` need no password and
    /// no client certificate.
    pub web_open_probes: bool,
}

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Rules(Diagnostics),
    /// A `--web-config` file that cannot be used (exit 2, like a bad rules file).
    #[error("{0}")]
    WebConfig(crate::http::WebConfigError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("cannot read the bearer token from {path}: {why}")]
    Token { path: String, why: String },
    #[error("the {task} ended unexpectedly")]
    TaskDied { task: &'static str },
    #[error("cannot start the event stream reader's runtime: {source}")]
    Runtime { source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs until `shutdown` is cancelled; Ok after a clean shutdown.
pub async fn run(opts: RunOptions, shutdown: CancellationToken) -> Result<(), AppError> {
    // One registry for the process: reloads reuse it, so handler state
    // (healing books, exec tracking) survives them.
    let registry = Arc::new(Registry::builtin());
    let mut config = Config::start_file(&opts.rules_path, &registry).map_err(AppError::Rules)?;
    if let Some(dir) = &opts.state_dir {
        config.state.dir = dir.clone();
    }
    let token = read_token(config.server.token_file.as_deref())?;
    let api_token = read_token(config.server.api_token_file.as_deref())?;
    let web = opts
        .web_config
        .clone()
        .map(|path| crate::http::Web::load(path, opts.web_open_probes))
        .transpose()
        .map_err(AppError::WebConfig)?;
    let endpoint = Endpoint::resolve(&config.engine)?;
    let default_listen: SocketAddr = DEFAULT_LISTEN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9477)));
    let addr = opts
        .listen
        .or(config.server.listen)
        .unwrap_or(default_listen);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Listen { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let docker = DockerHandle::default();
    info!(
        listen = %local,
        rules_file = %opts.rules_path.display(),
        rules = config.rules.rules.len(),
        handlers = %config
            .rules
            .handlers_used()
            .into_iter()
            .collect::<Vec<_>>()
            .join(","),
        dry_run = opts.dry_run,
        endpoint = %endpoint,
        "dockwarden starting."
    );
    if opts.dry_run {
        warn!("Dry run: handlers decide and log, but call no mutating Docker API.");
    }

    let host = config
        .audit
        .host
        .clone()
        .unwrap_or_else(crate::config::this_host);
    // Before the reloader: it refuses rules that name a target without a
    // sender, and the senders are these, built once.
    let notifier = Notifier::start(&config.notify, &config.state.dir, host, metrics.clone());
    let (rules_tx, rules_rx) = watch::channel(config.rules.clone());
    let reloader = ReloadTask {
        path: opts.rules_path.clone(),
        registry: registry.clone(),
        rules: rules_tx,
        notify_targets: notifier.handle().names(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    }
    .spawn();

    // The one container view: handlers keep it current, the API reads it.
    // With the status API off nobody reads the lifecycles and event ring
    // (nothing is recorded), and the view inspects only what rules need.
    let api_on = api_token.is_some();
    let containers = Arc::new(if api_on {
        crate::containers::Containers::serving_api()
    } else {
        crate::containers::Containers::default()
    });
    containers.keep_all(config.rules.needs_view);
    let history = Arc::new(crate::history::History::new(crate::history::Limits {
        per_container: config.api.history_per_container,
        keep: std::time::Duration::from_secs(config.api.history_keep_secs),
        ring: config.api.event_ring,
    }));
    let http_stop = CancellationToken::new();
    let http = {
        let stop = http_stop.clone();
        let router = crate::http::router(crate::http::Routes {
            metrics: metrics.clone(),
            health: health.clone(),
            reload: token.map(|t| (reloader.clone(), t)),
            api_token,
            containers: containers.clone(),
            history: history.clone(),
            healer: registry.healer(),
            rules: rules_rx.clone(),
            stats: Arc::new(
                crate::containers::stats::StatsReader::new(
                    docker.clone(),
                    std::time::Duration::from_secs(config.api.stats_cache_secs),
                    crate::containers::stats::DEFAULT_LIMIT,
                )
                .reporting(metrics.clone()),
            ),
        });
        tokio::spawn(async move {
            let served = crate::http::serve(listener, router, web, stop).await;
            if let Err(e) = served {
                error!(error = %e, "HTTP endpoint failed.");
            }
        })
    };

    let handlers = TaskTracker::new();
    // Always started (a reload may bring audit rules); the file is opened
    // at the first record.
    let audit = Some(AuditSink::start(config.audit.clone(), metrics.clone()));
    let (queue_tx, queue_rx) = crate::dispatch::queue(config.dispatch.queue_capacity);
    metrics.watch_queue_depth(queue_tx.depth_source());
    let own = Arc::new(crate::dispatch::OwnQueue::new(
        queue_tx.clone(),
        metrics.clone(),
    ));
    let ctx = Arc::new(Ctx {
        dry_run: opts.dry_run,
        docker: docker.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        tasks: handlers.clone(),
        audit: audit
            .as_ref()
            .map_or_else(|| AuditHandle::disabled(metrics.clone()), AuditSink::handle),
        containers: containers.clone(),
        own: own.clone(),
        notify: notifier.handle(),
    });
    // Resume from the checkpoint; without one, reconcile at startup.
    let resume = crate::progress::load(&config.state.dir);
    let (resync_tx, resync_rx) = tokio::sync::mpsc::channel(4);
    let resyncs = crate::progress::ResyncRequests::new(resync_tx);
    match &resume {
        Some(cp) => {
            info!(time_nano = cp.time_nano, dir = %config.state.dir.display(), "Resuming from the checkpoint.");
            // A resync was asked for and the process stopped before it was
            // done: the checkpoint is past what it was to repair.
            if let Some(owed) = &cp.resync_owed {
                let reason = crate::progress::known_reason(owed);
                warn!(
                    reason,
                    "The checkpoint owes a resync that a restart interrupted: resyncing once connected."
                );
                resyncs.ask(reason);
            }
        }
        None => {
            info!(dir = %config.state.dir.display(), "No checkpoint: resyncing from the engine's current state once connected.");
            resyncs.ask("startup");
        }
    }
    let progress = Arc::new(Progress::new(resume.clone()));
    tokio::spawn(crate::resync::fill_view_at_start(
        docker.clone(),
        containers.clone(),
        shutdown.clone(),
        metrics.clone(),
    ));
    let resync = tokio::spawn(crate::resync::resync_task(
        resync_rx,
        crate::resync::Resync {
            docker: docker.clone(),
            queue: queue_tx.clone(),
            metrics: metrics.clone(),
            containers: ctx.containers.clone(),
            history: api_on.then(|| history.clone()),
            own: own.clone(),
            owed: resyncs.owed(),
            shutdown: shutdown.clone(),
        },
    ));
    let checkpoints = tokio::spawn(crate::progress::checkpoint_task(
        config.state.dir.clone(),
        progress.clone(),
        (
            resyncs.owed(),
            resume
                .as_ref()
                .and_then(|cp| cp.resync_owed.as_deref())
                .map(crate::progress::known_reason),
        ),
        metrics.clone(),
        shutdown.clone(),
    ));
    let mut dispatcher = Dispatcher::new(
        queue_rx,
        rules_rx,
        ctx,
        config.dispatch.max_concurrency,
        handlers.clone(),
        progress.clone(),
    );
    if api_on {
        dispatcher = dispatcher.recording(history.clone());
    }
    let source = Source::new(Wiring {
        endpoint,
        queue: queue_tx,
        metrics: metrics.clone(),
        docker,
        health,
        shutdown: shutdown.clone(),
        idle_ping: Duration::from_secs(config.source.idle_ping_secs),
        resume,
        resync: resyncs.clone(),
        own: own.clone(),
        lost_after: Duration::from_secs(config.source.lost_after_secs),
    });
    let mut source = spawn_reader(source)?;
    let mut dispatcher = tokio::spawn(dispatcher.run());
    emit_unattached(
        &Started {
            version: env!("CARGO_PKG_VERSION"),
            rules: config.rules.rules.len(),
            dry_run: opts.dry_run,
            rules_file: &opts.rules_path.display().to_string(),
        },
        &metrics,
        own.as_ref(),
    );

    // The reader and the dispatcher run until shutdown. If either ends
    // before (a bug: a panic), the sidecar is deaf: say so and exit non-zero
    // so the supervisor restarts it, rather than serve /healthz while deaf.
    let died = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        r = &mut source => Some(("event stream reader", r)),
        r = &mut dispatcher => Some(("dispatcher", r)),
    };
    let (source, dispatcher) = match died {
        None => (Some(source), Some(dispatcher)),
        // Ended because shutdown began between two polls: not a death.
        Some(("event stream reader", _)) if shutdown.is_cancelled() => (None, Some(dispatcher)),
        Some((_, _)) if shutdown.is_cancelled() => (Some(source), None),
        Some((task, result)) => {
            let why = match result {
                Err(e) if e.is_panic() => "panicked",
                _ => "stopped",
            };
            error!(task, why, "A core task ended unexpectedly; exiting.");
            shutdown.cancel();
            http_stop.cancel();
            return Err(AppError::TaskDied { task });
        }
    };
    shutdown.cancelled().await;
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    // The grace runs from the signal, whatever is still connecting.
    let deadline = tokio::time::Instant::now() + grace;
    info!(
        grace_secs = grace.as_secs(),
        "Shutting down: stopping the reader, waiting for running handlers."
    );
    if let Some(source) = source {
        let _ = tokio::time::timeout_at(deadline, source).await;
    }
    if let Some(dispatcher) = dispatcher {
        let _ = tokio::time::timeout_at(deadline, dispatcher).await;
    }
    handlers.close();
    if tokio::time::timeout_at(deadline, handlers.wait())
        .await
        .is_err()
    {
        warn!(
            still_running = handlers.len(),
            grace_secs = grace.as_secs(),
            "Handlers still running after the grace period; exiting anyway."
        );
    }
    let _ = resync.await;
    let _ = checkpoints.await;
    crate::progress::final_write(&config.state.dir, &progress, &resyncs.owed(), &metrics);
    // Undelivered notifications stay spooled for the next start.
    notifier.close(Duration::from_secs(2)).await;
    if let Some(audit) = audit {
        // Joins the writer thread: off the async workers.
        let _ = tokio::task::spawn_blocking(move || audit.close(Duration::from_secs(5))).await;
    }
    http_stop.cancel();
    // A client holding a keep-alive connection must not hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
    info!("dockwarden stopped.");
    Ok(())
}

/// The stream reader on a thread of its own, driven by a runtime of its
/// own: however busy handlers are, nothing they do can delay a read (the
/// engine drops a subscriber that stalls for 100 ms), and reading wakes the
/// dispatcher once per batch, not once per event. Its handle says whether
/// it panicked, as a task's would.
fn spawn_reader(source: Source) -> Result<tokio::task::JoinHandle<()>, AppError> {
    let reader = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("event-reader")
        .build()
        .map_err(|source| AppError::Runtime { source })?;
    Ok(tokio::task::spawn_blocking(move || {
        reader.block_on(source.run())
    }))
}

/// Reads a bearer token from `path` (trimmed; at least 16 characters).
fn read_token(path: Option<&std::path::Path>) -> Result<Option<Arc<str>>, AppError> {
    let Some(path) = path else { return Ok(None) };
    let token = std::fs::read_to_string(path)
        .map_err(|e| AppError::Token {
            path: path.display().to_string(),
            why: e.to_string(),
        })?
        .trim()
        .to_owned();
    if token.chars().count() < crate::rules::MIN_TOKEN_CHARS {
        return Err(AppError::Token {
            path: path.display().to_string(),
            why: format!(
                "the token must be at least {} characters",
                crate::rules::MIN_TOKEN_CHARS
            ),
        });
    }
    Ok(Some(Arc::from(token)))
}
