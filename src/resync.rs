//! Reconciliation from the engine's current state, when the stream cannot
//! be trusted to have told everything: at startup without a checkpoint,
//! after a gap larger than the engine's replay ring (or an engine restart),
//! and after the dispatch queue overflowed.
//!
//! It lists every container, drops metric series of containers that are
//! gone, and feeds the dispatcher *synthetic* events (not counted, not
//! checkpointed) for what the rules may want to heal:
//!
//! - an exited container with a non-zero exit code → `container.die`;
//! - a running container whose health is `unhealthy` →
//!   `container.health_status: unhealthy`.
//!
//! **Stopped on purpose, as far as the engine can tell:** exit code 137 or
//! 143 (SIGKILL or SIGTERM: what `docker stop` and `docker kill` produce)
//! without `OOMKilled`, and exit code 0, are taken as an operator's decision
//! and never healed by a resync. A container whose restart policy will
//! restart it is left to Docker by the heal rules as usual.

use std::collections::HashSet;
use std::sync::Arc;

use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptions;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::containers::{Container, Containers, plain_name};
use crate::dispatch::Enqueue;
use crate::docker::DockerHandle;
use crate::docker::calls::{self, Call};
use crate::event::{Attributes, Event};
use crate::history::History;
use crate::internal_events::denied::report;
use crate::internal_events::lifecycle::Resynced;
use crate::internal_events::{OwnEvents, emit_unattached};
use crate::metrics::Metrics;

/// What a resync reads and feeds.
pub struct Resync {
    pub docker: DockerHandle,
    pub queue: Enqueue,
    pub metrics: Arc<Metrics>,
    pub containers: Arc<Containers>,
    /// The status API's lifecycles: those of containers that went while no
    /// stream told it end at the resync that finds them gone.
    pub history: Option<Arc<History>>,
    pub own: Arc<dyn OwnEvents>,
    pub shutdown: CancellationToken,
}

/// Runs resyncs as they are asked for, one at a time; requests that arrive
/// while one runs are folded into the next.
pub async fn resync_task(mut requests: mpsc::Receiver<&'static str>, wiring: Resync) {
    let Resync {
        docker,
        queue,
        metrics,
        containers,
        history,
        own,
        shutdown,
    } = wiring;
    loop {
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        while requests.try_recv().is_ok() {}
        metrics.resynced(reason);
        // Until the stream is connected there is no engine to ask.
        let client = loop {
            match docker.get() {
                Ok(c) => break c,
                Err(_) => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                },
            }
        };
        match reconcile(&client, &queue, &metrics, &containers, history.as_deref()).await {
            Ok((containers, synthetic)) => emit_unattached(
                &Resynced {
                    reason,
                    containers,
                    synthetic,
                },
                &metrics,
                own.as_ref(),
            ),
            // A denial was logged (once) where it happened.
            Err(e) if calls::denied(&e).is_some() => {
                debug!(reason, error = %e, "Resync failed; the next gap or restart retries it.")
            }
            Err(e) => {
                warn!(reason, error = %e, "Resync failed; the next gap or restart retries it.")
            }
        }
    }
}

/// Lists and inspects every container, refreshing the container view with
/// what the engine says now; returns the number of containers and of
/// synthetic events queued.
async fn reconcile(
    docker: &bollard::Docker,
    queue: &Enqueue,
    metrics: &Metrics,
    containers: &Containers,
    history: Option<&History>,
) -> Result<(usize, usize), bollard::errors::Error> {
    let (listed, known) = list_all(docker, containers, metrics).await?;
    let mut live_names = HashSet::new();
    let mut live_ids = HashSet::new();
    let mut batch = Vec::new();
    for c in &listed {
        let Some(id) = c.id.as_deref() else { continue };
        live_ids.insert(id.to_owned());
        if let Some(name) = c.names.iter().flatten().next() {
            live_names.insert(plain_name(name).to_owned());
        }
    }
    for known in known {
        let id = known.id.clone();
        let state = &known.state;
        let exit = state.exit_code;
        let action = if state.status == "exited"
            && exit != 0
            && (state.oom_killed || (exit != 137 && exit != 143))
        {
            "die"
        } else if state.running && state.health == "unhealthy" {
            "health_status: unhealthy"
        } else {
            continue;
        };
        let mut attributes = Attributes::default();
        for (k, v) in &known.labels {
            attributes.push(k, v);
        }
        attributes.push("name", &known.name);
        attributes.push("image", &known.image);
        if action == "die" {
            attributes.push("exitCode", &exit.to_string());
        }
        let mut event = Event::new(
            "container",
            action,
            id,
            attributes,
            crate::clock::unix_nanos(),
        );
        event.synthetic = true;
        batch.push(Arc::new(event));
    }
    containers.retain(&live_ids);
    if let Some(history) = history {
        history.forget_missing(&live_ids);
    }
    metrics.forget_containers_except(&live_names);
    let synthetic = batch.len();
    if !batch.is_empty() && queue.try_send(batch).is_err() {
        warn!(synthetic, "Dispatch queue full: resync events dropped.");
    }
    Ok((listed.len(), synthetic))
}

/// Lists every container and inspects each into the container view; returns
/// the listing and the views of those still there to inspect.
/// A denied call is reported, never retried here.
async fn list_all(
    docker: &bollard::Docker,
    containers: &Containers,
    metrics: &Metrics,
) -> Result<(Vec<ContainerSummary>, Vec<Arc<Container>>), bollard::errors::Error> {
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .inspect_err(|e| {
            report(metrics, Call::ContainerList, "listing containers", e);
        })?;
    let mut known = Vec::with_capacity(listed.len());
    for c in &listed {
        let Some(id) = c.id.as_deref() else { continue };
        match containers.inspect(docker, id).await {
            Ok(view) => known.push(view),
            Err(e) => {
                report(metrics, Call::ContainerInspect, "listing containers", &e);
            }
        }
    }
    Ok((listed, known))
}

/// Fills the container view once the stream is first connected, so it is
/// complete from the start even when resuming from a checkpoint (which
/// skips the startup resync). Feeds no events: the checkpoint's replay
/// tells the rules what they missed. A failure is retried after 1 s,
/// doubling to a minute (a proxy's denial does not change by itself).
pub async fn fill_view_at_start(
    docker: DockerHandle,
    containers: Arc<Containers>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    if !containers.keeps_all() {
        // No rule reads the view and the status API is off: handlers
        // that come with a reload inspect what they need.
        return;
    }
    let mut retry_in = std::time::Duration::from_secs(1);
    loop {
        let client = loop {
            match docker.get() {
                Ok(c) => break c,
                Err(_) => tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                },
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            listed = list_all(&client, &containers, &metrics) => match listed {
                Ok((listed, _)) => {
                    debug!(containers = listed.len(), "Container view filled.");
                    return;
                }
                Err(e) if calls::denied(&e).is_some() => {
                    debug!(error = %e, retry_in = ?retry_in, "Cannot list containers; retrying.")
                }
                Err(e) => warn!(error = %e, retry_in = ?retry_in, "Cannot list containers; retrying."),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry_in) => {}
        }
        retry_in = (retry_in * 2).min(std::time::Duration::from_secs(60));
    }
}
