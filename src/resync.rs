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
use crate::progress::Owed;

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
    /// What is owed (until a resync succeeds), for the checkpoint.
    pub owed: Arc<Owed>,
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
        owed,
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
        let reason = if reason == "queue_overflow" {
            match settled(&mut requests, &queue, &shutdown).await {
                Some(r) => r,
                None => return,
            }
        } else {
            reason
        };
        metrics.resynced(reason);
        // Until the stream is connected there is no engine to ask.
        let client = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = docker.connected() => c,
        };
        let answers = owed.begin();
        // Shutdown does not wait for it (against a hung engine each call
        // waits its timeout, thrice): it stays owed, and the checkpoint
        // written at shutdown makes the next start do it.
        let reconciled = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = reconcile(&client, &queue, &metrics, &containers, history.as_deref()) => r,
        };
        match reconciled {
            Ok((containers, synthetic, rest)) => {
                // What the queue had no room for goes in once it drains
                // (the same events: a resync again would feed those that
                // went in twice).
                let Some(rest) = feed_rest(rest, &queue, &shutdown).await else {
                    return;
                };
                if !rest.is_empty() {
                    warn!(
                        reason,
                        synthetic,
                        dropped = rest.len(),
                        "Dispatch queue full for a minute: resync events dropped."
                    );
                }
                owed.done(answers);
                emit_unattached(
                    &Resynced {
                        reason,
                        containers,
                        synthetic,
                    },
                    &metrics,
                    own.as_ref(),
                )
            }
            // A denial was logged (once) where it happened.
            Err(e) if calls::denied(&e).is_some() => {
                debug!(reason, error = %e, "Resync failed; the next gap or restart retries it.")
            }
            // Still owed: the checkpoint says so, so a restart retries it.
            Err(e) => {
                warn!(reason, error = %e, "Resync failed; the next gap or restart retries it.")
            }
        }
    }
}

/// Feeds `rest` (a resync's events the queue had no room for) once the
/// queue is at most a quarter full, checking once a second for a minute;
/// returns what still did not fit (then dropped), None at shutdown.
async fn feed_rest(
    mut rest: Vec<Arc<Event>>,
    queue: &Enqueue,
    shutdown: &CancellationToken,
) -> Option<Vec<Arc<Event>>> {
    for _ in 0..60 {
        if rest.is_empty() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        if queue.depth() <= queue.capacity() / 4 {
            rest = match queue.try_send(rest) {
                Ok(()) => Vec::new(),
                Err(left) => left,
            };
        }
    }
    Some(rest)
}

/// Waits, after a queue overflow, for the burst to pass: while events are
/// still being dropped, a reconciliation is undone by the next drop, and
/// it competes with the handlers for the engine (an inspect of every
/// container). Passed: a second with no new drop and the queue at most a
/// quarter full. A request for another reason (a gap, an engine restart)
/// ends the wait at once and is the reason. None at shutdown.
async fn settled(
    requests: &mut mpsc::Receiver<&'static str>,
    queue: &Enqueue,
    shutdown: &CancellationToken,
) -> Option<&'static str> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        let mut dropped = false;
        while let Ok(r) = requests.try_recv() {
            if r != "queue_overflow" {
                return Some(r);
            }
            dropped = true;
        }
        if !dropped && queue.depth() <= queue.capacity() / 4 {
            return Some("queue_overflow");
        }
    }
}

/// Lists and inspects every container, refreshing the container view with
/// what the engine says now; returns the number of containers, of
/// synthetic events made, and those the queue had no room for.
async fn reconcile(
    docker: &crate::docker::Engine,
    queue: &Enqueue,
    metrics: &Metrics,
    containers: &Containers,
    history: Option<&History>,
) -> Result<(usize, usize, Vec<Arc<Event>>), bollard::errors::Error> {
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
    let rest = if batch.is_empty() {
        Vec::new()
    } else {
        queue.try_send(batch).err().unwrap_or_default()
    };
    Ok((listed.len(), synthetic, rest))
}

/// A container in the engine's listing, as far as a resync reads it: the
/// listing of every container is decoded whole, at once (a burst's drops
/// start a resync), and the rest of each entry (labels, mounts, ports,
/// networks) is the inspect's to tell.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    id: Option<String>,
    names: Option<Vec<String>>,
}

/// Lists every container and inspects each into the container view; returns
/// the listing and the views of those still there to inspect.
/// A denied call is reported, never retried here.
async fn list_all(
    docker: &crate::docker::Engine,
    containers: &Containers,
    metrics: &Metrics,
) -> Result<(Vec<Listed>, Vec<Arc<Container>>), bollard::errors::Error> {
    let listed = docker
        .list_containers_as::<Listed>()
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
        let client = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = docker.connected() => c,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    fn events(n: usize) -> Vec<Arc<Event>> {
        (0..n)
            .map(|i| {
                let id = format!("c{i}");
                Arc::new(Event::new(
                    "container",
                    "start",
                    id,
                    Attributes::default(),
                    1,
                ))
            })
            .collect()
    }

    /// A resync's events the queue had no room for go in once it drains,
    /// not by a resync again (which would feed the others twice); after a
    /// minute of a full queue they are given up.
    #[tokio::test(start_paused = true)]
    async fn a_resyncs_events_that_did_not_fit_go_in_once_the_queue_drains() {
        let shutdown = CancellationToken::new();
        let (queue, mut dequeue) = crate::dispatch::queue(4);
        assert!(queue.try_send(events(4)).is_ok());
        let drain = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            for _ in dequeue.recv().await.unwrap_or_default() {
                drop(dequeue.held());
            }
            dequeue
        });
        let start = Instant::now();
        let left = feed_rest(events(2), &queue, &shutdown).await;
        assert_eq!(left.map(|l| l.len()), Some(0));
        assert!(start.elapsed() >= Duration::from_secs(3));
        assert_eq!(queue.depth(), 2, "the two went in");
        let _dequeue = drain.await.expect("drained");

        // Never drained: given back after a minute.
        let (full, _held) = crate::dispatch::queue(2);
        assert!(full.try_send(events(2)).is_ok());
        let start = Instant::now();
        let left = feed_rest(events(3), &full, &shutdown).await;
        assert_eq!(left.map(|l| l.len()), Some(3));
        assert!(start.elapsed() >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_overflow_resync_waits_for_the_burst_to_pass() {
        let (tx, mut requests) = mpsc::channel(16);
        let (queue, mut dequeue) = crate::dispatch::queue(8);
        let shutdown = CancellationToken::new();
        // Drops go on for 3 s; the queue stays full until 5 s.
        assert!(queue.try_send(events(7)).is_ok());
        let burst = tx.clone();
        let drain = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = burst.send("queue_overflow").await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Taken and handled: their places in the budget are free.
            for _ in dequeue.recv().await.unwrap_or_default() {
                drop(dequeue.held());
            }
            dequeue
        });
        let start = Instant::now();
        let reason = settled(&mut requests, &queue, &shutdown).await;
        assert_eq!(reason, Some("queue_overflow"));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited <= Duration::from_secs(7),
            "waited {waited:?}: not until the drops stopped and the queue drained"
        );

        // Another reason does not wait.
        let _dequeue = drain.await.expect("the burst task");
        tx.send("queue_overflow").await.expect("send");
        tx.send("engine_restart").await.expect("send");
        assert!(queue.try_send(events(7)).is_ok());
        let start = Instant::now();
        let reason = settled(&mut requests, &queue, &shutdown).await;
        assert_eq!(reason, Some("engine_restart"));
        assert!(start.elapsed() <= Duration::from_secs(1));

        shutdown.cancel();
        assert_eq!(settled(&mut requests, &queue, &shutdown).await, None);
    }
}
