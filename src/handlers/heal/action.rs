//! Carrying a decision out: the scheduled task that waits out the backoff
//! (called off by an operator, a removal or shutdown), checks the engine
//! again, then restarts, recreates or raises memory, and counts the result;
//! and the check of who started a container whose breaker is open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::ContainerUpdateBody;
use bollard::query_parameters::{RestartContainerOptions, StopContainerOptions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::book::{Entry, Healer, announce_closed, reopen};
use super::facts::{Facts, Why, describe};
use super::policy::{Failure, Kind};
use super::{Heal, dependents, recreate};
use crate::docker::Engine;
use crate::docker::calls::Call;
use crate::event::Event;
use crate::handlers::About;
use crate::handlers::{Ctx, HandlerError};
use crate::internal_events::denied::{CallDenied, report};
use crate::internal_events::heal::{Acted, ActionResult};

impl Heal {
    /// Runs the plan after its delay as a task of its own. An operator's
    /// kill or start, the container's removal, or shutdown calls it off;
    /// after a backoff the engine is asked again whether it is still needed.
    pub(super) fn schedule(
        &self,
        ctx: &Ctx,
        event: &Arc<Event>,
        facts: Facts,
        plan: Plan,
        (generation, token): (u64, CancellationToken),
    ) {
        let Ok(docker) = ctx.docker.get() else {
            self.healer.finish_pending(&facts.name, generation);
            return;
        };
        let healer = self.healer.clone();
        let emitter = ctx.emitter();
        let metrics = ctx.metrics.clone();
        let containers = ctx.containers.clone();
        let rule_name = self.rule.name.clone();
        let event = event.clone();
        let stop_timeout = plan.stop_timeout;
        let max_restarts = plan.max_restarts;
        // The healer's clock (the events' own offline), as it stamps signals.
        let decided = self.healer.now(&event);
        ctx.tasks.spawn(async move {
            let name = facts.name.clone();
            let kind = plan.kind;
            if !plan.delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(plan.delay) => {}
                    _ = token.cancelled() => {
                        healer.finish_pending(&name, generation);
                        return;
                    }
                }
                if let Some(why) = no_longer_needed(&docker, &metrics, &healer, &facts, (plan.failure, kind, decided)).await {
                    healer.call_off_pending(&name, generation);
                    info!(container = %name, rule = %rule_name, action = kind.label(), reason = why, "Scheduled action called off.");
                    return;
                }
            }
            if token.is_cancelled() {
                healer.finish_pending(&name, generation);
                return;
            }
            // From here the action's own events are recognised as ours; a
            // new failure after them must be free to schedule again.
            healer.finish_pending(&name, generation);
            let reaction = event.received.elapsed().saturating_sub(plan.delay);
            // A restart, stop or recreate waits out the stop timeout: the
            // call may take that long beyond the usual limit.
            let docker = crate::docker::outliving_stop(&docker, stop_timeout);
            let result = act(&docker, &healer, &facts, kind, stop_timeout).await;
            // A denied call is logged once per call, not once per action:
            // the action's own line below stays at debug then.
            if let Err(e) = &result {
                let during = format!("{} {name}", kind.label());
                for (call, message) in e.denials() {
                    emitter.emit(&CallDenied { call, during: &during, message }, None);
                }
            }
            let latency = crate::clock::since_nanos(event.time_nano);
            let done = Acted {
                container: &name,
                rule: &rule_name,
                action: kind.label(),
                failure: &describe(plan.failure),
                attempt: plan.attempt,
                max_restarts,
                backoff: plan.delay,
                why: plan.why.fields(),
                cause: None,
                result: match &result {
                    Ok(Some((done, _))) => ActionResult::Ok(done.clone()),
                    Ok(None) => ActionResult::Suppressed,
                    Err(e) => ActionResult::Error {
                        error: e.to_string(),
                        kind: e.kind(),
                    },
                },
                reaction,
                latency,
            };
            emitter.emit(
                &done,
                Some(About {
                    id: &facts.id,
                    name: &name,
                    cause: &event,
                }),
            );
            containers.record_action(&facts.id, kind.label(), done.result_label());
            healer.note_action(&name, kind.label(), done.result_label());
            // The containers that depend on it follow.
            if let Ok(Some((_, Some(healed)))) = result {
                let failure = describe(plan.failure);
                let cascade = dependents::Cascade {
                    docker: &docker,
                    healer: &healer,
                    emitter: &emitter,
                    containers: &containers,
                    rule: &rule_name,
                    failure: &failure,
                    stop_timeout,
                    event: &event,
                };
                cascade.run(healed).await;
            }
        });
    }
}
/// What a scheduled task is to do.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) kind: Kind,
    pub(super) failure: Failure,
    pub(super) delay: Duration,
    pub(super) attempt: u32,
    /// The parameters in force for this container (the rule's, with its
    /// labels' overrides).
    pub(super) stop_timeout: u32,
    pub(super) max_restarts: u32,
    pub(super) why: Why,
}

/// Whether container `event` is about, whose breaker is open, was started
/// by hand: the engine's `RestartCount` is 0 after a start through the API
/// and counts its restart policy's starts. Closes the breaker if so, else
/// says it stays open. Run off the lane: the observer cannot wait.
pub(super) fn close_if_started_by_hand(
    book: Arc<std::sync::Mutex<foldhash::HashMap<String, Entry>>>,
    docker: Engine,
    ctx: &Ctx,
    event: Arc<Event>,
    name: String,
) -> impl Future<Output = ()> + Send + 'static {
    let (metrics, emitter, dry_run) = (ctx.metrics.clone(), ctx.emitter(), ctx.dry_run);
    async move {
        let id = event.actor_id.as_str();
        // Not through the view's cache: a late answer must not replace a
        // newer view.
        let count = match docker
            .inspect_container_as::<crate::containers::ViewInspect>(id)
            .await
        {
            Ok(info) => Facts::from_inspect(&info.into()).restart_count,
            Err(e) => {
                report(&metrics, Call::ContainerInspect, &name, &e);
                // Gone, or not to be asked: taken for a start by hand.
                0
            }
        };
        let mut book = crate::lock::lock(&book);
        let Some(e) = book
            .get_mut(&name)
            .filter(|e| e.breaker_open && e.container_id.as_deref() == Some(id))
        else {
            return;
        };
        if count > 0 {
            info!(container = %name, restart_count = count, "Breaker stays open: Docker's restart policy started the container again.");
            return;
        }
        reopen(e);
        drop(book);
        announce_closed(&emitter, &name, &event, "started by hand", dry_run);
    }
}

/// After a backoff: is the action still wanted? Some(reason) if not.
async fn no_longer_needed(
    docker: &Engine,
    metrics: &crate::metrics::Metrics,
    healer: &Healer,
    facts: &Facts,
    (failure, kind, since): (Failure, Kind, Instant),
) -> Option<&'static str> {
    let (requested_stop, signalled) = healer.book().get(&facts.name).map_or((false, false), |e| {
        (e.requested_stop, e.signalled.is_some_and(|t| t >= since))
    });
    if requested_stop {
        return Some("stopped or killed through the API meanwhile");
    }
    let now = match docker
        .inspect_container_as::<crate::containers::ViewInspect>(&facts.id)
        .await
    {
        Ok(info) => Facts::from_inspect(&info.into()),
        // Denied: acting blind could restart a container that recovered.
        Err(e) if report(metrics, Call::ContainerInspect, &facts.name, &e) => {
            return Some("inspecting it was denied by the socket proxy");
        }
        Err(_) => return Some("the container is gone"),
    };
    match failure {
        // Down after a signal sent through the API since the action was
        // decided (`docker kill -s INT`): the operator's doing, as a crash
        // right after one is.
        Failure::Unhealthy if !now.running && signalled => {
            Some("it exited after a signal sent through the API")
        }
        // It crashed while this restart waited out its backoff. The crash's
        // own `die` found this action scheduled and left the container to
        // it: calling it off would leave the container down. A clean exit,
        // or one Docker's restart policy restarts, is left alone (an OOM
        // kill of the main process exits 137: `OOMKilled` alone stays set
        // after a child's, on Engine 20.10).
        Failure::Unhealthy if !now.running && now.exit_code != 0 && !now.engine_restarts() => None,
        Failure::Unhealthy if !now.running => Some("it is no longer running"),
        Failure::Unhealthy if !now.unhealthy => Some("it is healthy again"),
        // An OOM kill of a child leaves the main process running, and its
        // limit as low as it was: raising it is still wanted.
        Failure::Oom if matches!(kind, Kind::RaiseMemory { .. }) => None,
        Failure::Exit(_) | Failure::Oom if now.running => Some("it is running again"),
        _ => None,
    }
}

/// Performs the action; returns the log message of success and, when
/// containers that depend on it are to follow, how it was healed; or None
/// if it decided to leave the container alone.
async fn act(
    docker: &Engine,
    healer: &Healer,
    facts: &Facts,
    kind: Kind,
    stop_timeout: u32,
) -> Result<Option<(String, Option<dependents::Healed>)>, HandlerError> {
    let restarted = || {
        Some(dependents::Healed {
            name: facts.name.clone(),
            old_id: facts.id.clone(),
            new_id: None,
        })
    };
    match kind {
        Kind::Restart => restart(docker, healer, facts, stop_timeout)
            .await
            .map(|()| Some((format!("Restarted {}.", facts.name), restarted()))),
        Kind::Stop => {
            healer.mark_own(&[&facts.name], stop_timeout);
            let stopped = docker
                .stop_container(
                    &facts.id,
                    Some(StopContainerOptions {
                        t: Some(stop_timeout as i32),
                        signal: None,
                    }),
                )
                .await;
            stopped
                .map(|()| Some((format!("Stopped {}; it is left stopped.", facts.name), None)))
                .map_err(|e| {
                    healer.clear_own(&facts.name);
                    HandlerError::engine(Call::ContainerStop, "stop", e)
                })
        }
        Kind::Recreate => {
            let (text, new_id) = recreate_as(
                docker,
                healer,
                (&facts.name, &facts.id),
                stop_timeout,
                |_| {},
            )
            .await?;
            Ok(Some((
                text,
                Some(dependents::Healed {
                    name: facts.name.clone(),
                    old_id: facts.id.clone(),
                    new_id: Some(new_id),
                }),
            )))
        }
        Kind::RaiseMemory { factor, max_bytes } => {
            // The limit may have changed since the event: read it again.
            let (current, swap) = docker
                .inspect_container(&facts.id, None)
                .await
                .map(|i| {
                    let swap = i.host_config.as_ref().and_then(|h| h.memory_swap);
                    (Facts::from_inspect(&i).memory, swap.unwrap_or(0))
                })
                .map_err(|e| HandlerError::engine(Call::ContainerInspect, "inspect", e))?;
            if current == 0 {
                info!(container = %facts.name, "No memory limit to raise; left alone.");
                return Ok(None);
            }
            let raised = ((current as f64) * factor).min(max_bytes as f64) as i64;
            let note = if raised > current {
                docker
                    .update_container(
                        &facts.id,
                        ContainerUpdateBody {
                            memory: Some(raised),
                            memory_swap: Some(raised_swap(current, swap, raised)),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| {
                        HandlerError::engine(
                            Call::ContainerUpdate,
                            format!("raising the memory limit from {current} to {raised} bytes"),
                            e,
                        )
                    })?;
                info!(container = %facts.name, old_bytes = current, new_bytes = raised, max_bytes, "Raised memory limit.");
                format!("raised its memory limit from {current} to {raised} bytes")
            } else {
                warn!(container = %facts.name, limit_bytes = current, max_bytes, "Memory limit already at max_bytes; restarting without raising.");
                format!("memory limit left at max_bytes ({current} bytes)")
            };
            restart(docker, healer, facts, stop_timeout).await?;
            Ok(Some((
                format!("Restarted {} and {note}.", facts.name),
                restarted(),
            )))
        }
    }
}

/// The memory-plus-swap limit that goes with raising the memory limit
/// from `current` to `raised`: the same swap as before (`MemorySwap` is
/// memory plus swap, -1 unlimited). The engine refuses a memory limit
/// above the memory-plus-swap one in force, and a running container's
/// cgroup takes the two in that order; unlimited swap instead would let a
/// container that had none swap.
fn raised_swap(current: i64, swap: i64, raised: i64) -> i64 {
    if swap < 0 {
        return -1;
    }
    // Not set: the engine's default, twice the memory limit.
    let swap = if swap == 0 {
        current.saturating_mul(2)
    } else {
        swap
    };
    swap.saturating_add(raised - current)
}

/// Restarts container `id` (named `name`), its events marked as ours.
pub(super) async fn restart_container(
    docker: &Engine,
    healer: &Healer,
    (name, id): (&str, &str),
    stop_timeout: u32,
) -> Result<(), HandlerError> {
    healer.mark_own(&[name], stop_timeout);
    let restarted = docker
        .restart_container(
            id,
            Some(RestartContainerOptions {
                t: Some(stop_timeout as i32),
                signal: None,
            }),
        )
        .await;
    restarted.map_err(|e| {
        healer.clear_own(name);
        HandlerError::engine(Call::ContainerRestart, "restart", e)
    })
}

async fn restart(
    docker: &Engine,
    healer: &Healer,
    facts: &Facts,
    stop_timeout: u32,
) -> Result<(), HandlerError> {
    restart_container(docker, healer, (&facts.name, &facts.id), stop_timeout).await
}

/// Recreates container `id` (named `name`) from its inspect, changed by
/// `adjust` first, its events marked as ours; the log text and the new ID.
pub(super) async fn recreate_as(
    docker: &Engine,
    healer: &Healer,
    (name, id): (&str, &str),
    stop_timeout: u32,
    adjust: impl FnOnce(&mut bollard::models::ContainerInspectResponse),
) -> Result<(String, String), HandlerError> {
    let aside = recreate::aside_name(name, id);
    let mut old = docker
        .inspect_container_as(id)
        .await
        .and_then(|json| recreate::Old::from_json(json).map_err(Into::into))
        .map_err(|e| HandlerError::engine(Call::ContainerInspect, "inspect", e))?;
    adjust(&mut old.info);
    healer.mark_own(&[name, &aside], stop_timeout);
    let result = recreate::recreate(docker, &old, stop_timeout as i32).await;
    // The old container's aside name is gone for good either way.
    healer.book().remove(&aside);
    match result {
        Ok(new_id) => Ok((
            format!(
                "Recreated {name}: new container {}.",
                new_id.get(..12).unwrap_or(&new_id)
            ),
            new_id,
        )),
        Err(e) => {
            healer.clear_own(name);
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::raised_swap;

    const MIB: i64 = 1024 * 1024;

    #[test]
    fn raising_memory_keeps_the_swap_it_had() {
        // No swap (`--memory-swap` equal to `-m`): still none.
        assert_eq!(raised_swap(32 * MIB, 32 * MIB, 64 * MIB), 64 * MIB);
        // `-m` alone: the engine's default, as much swap as memory.
        assert_eq!(raised_swap(32 * MIB, 64 * MIB, 48 * MIB), 80 * MIB);
        assert_eq!(raised_swap(32 * MIB, 0, 48 * MIB), 80 * MIB);
        // Unlimited stays unlimited.
        assert_eq!(raised_swap(32 * MIB, -1, 64 * MIB), -1);
    }
}
