//! `exec_audit`: who ran what inside which container, as whom, with what
//! privileges.
//!
//! Wired to `container.exec_start` and `container.exec_die`. Each exec gets an
//! `exec_start` record and, when it ends, an `exec_end` record, enriched from
//! `GET /exec/{id}/json` (user, privileged, tty, argv) and the container's
//! inspect (real name, image, user, HEALTHCHECK). Enrichment runs in the
//! container's lane, off the stream reader.
//!
//! Forgery: a container label named `execID` or `exitCode` overwrites those
//! event attributes. An exec ID is trusted only if the container has no such
//! label *and* the engine confirms the exec belongs to this container and runs
//! the command the event names; with a colliding label the real exec is
//! looked for among the container's running execs. What cannot be verified is
//! written with `exec_id: null` and `exec_id_verified: false`, never dropped.
//!
//! Health-check probes (argv equal to the container's HEALTHCHECK test, in
//! the container's user, no tty, not privileged) are counted as
//! `dockwarden_exec_total{kind="healthcheck"}` and written only with
//! `include_healthchecks = true`.
//!
//! `[rule.with]`: `include_healthchecks` (default false).
//!
//! This file holds the handler and its exec tracking; `record` builds,
//! grades and submits the records.

pub(crate) mod record;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use bollard::models::ExecInspectResponse;
use serde_json::Value;
use tracing::{debug, warn};

use super::{About, BoxFuture, Ctx, Factory, Handler, HandlerError, Observer, Outcome, RuleSpec};
use crate::audit::{Record, Severity};
use crate::config::table::Table;
use crate::containers::Container;
use crate::containers::ViewInspect;
use crate::docker::Engine;
use crate::docker::calls::Call;
use crate::docker::retry;
use crate::event::Event;
use crate::internal_events::audit::ExecStarted;
use crate::internal_events::denied::report;
use crate::lock::lock;
use crate::metrics::Metrics;
use record::{Facts, Moment, argv, exec_fields, same_command, submit};

pub use record::is_shell;

/// Execs remembered between start and end; the oldest go past this.
const MAX_OPEN_EXECS: usize = 10_000;

/// An exec between its start and end records.
#[derive(Debug, Clone)]
struct Open {
    container_id: String,
    start_nano: i64,
    /// The start record's fields, reused for the end record.
    fields: Record,
    /// Whether its records are written (probes are not, by default).
    written: bool,
    /// As graded at its start: both records carry it.
    severity: Severity,
    verified: bool,
}

/// State shared by every `exec_audit` rule.
#[derive(Default)]
pub struct ExecAuditor {
    open: Mutex<foldhash::HashMap<String, Open>>,
    /// Start order of `open`, for bounding it.
    order: Mutex<std::collections::VecDeque<String>>,
}

/// A denial is reported, and never retried.
async fn inspect_exec(
    docker: &Engine,
    metrics: &Metrics,
    id: &str,
) -> Result<ExecInspectResponse, bollard::errors::Error> {
    let inspected = retry(|| docker.inspect_exec(id)).await;
    if let Err(e) = &inspected {
        report(metrics, Call::ExecInspect, "auditing an exec", e);
    }
    inspected
}

pub struct ExecAuditFactory(pub Arc<ExecAuditor>);

impl Factory for ExecAuditFactory {
    fn name(&self) -> &'static str {
        "exec_audit"
    }

    fn build(&self, _rule: &RuleSpec, with: &mut Table<'_, '_>) -> Arc<dyn Handler> {
        Arc::new(ExecAudit {
            include_healthchecks: with.bool("include_healthchecks", false),
            state: self.0.clone(),
        })
    }

    fn events(&self) -> Option<&'static [&'static str]> {
        Some(&["container.exec_start", "container.exec_die"])
    }

    fn observer(&self) -> Option<Arc<dyn Observer>> {
        Some(self.0.clone())
    }
}

impl Observer for ExecAuditor {
    fn wants(&self, event: &Event) -> bool {
        event.typ == "container" && event.action == "destroy"
    }

    fn observe(&self, _ctx: &Ctx, event: &Arc<Event>) {
        lock(&self.open).retain(|_, o| o.container_id != event.actor_id);
    }
}

struct ExecAudit {
    include_healthchecks: bool,
    state: Arc<ExecAuditor>,
}

impl Handler for ExecAudit {
    fn handle<'a>(&'a self, ctx: &'a Ctx, event: &'a Arc<Event>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let Ok(docker) = ctx.docker.get() else {
                return Outcome::Error(HandlerError::NotConnected);
            };
            match &*event.action {
                "exec_start" => self.started(ctx, &docker, event).await,
                "exec_die" => self.ended(ctx, &docker, event).await,
                _ => Outcome::Skipped,
            }
        })
    }
}

impl ExecAudit {
    /// The exec this `exec_start` is about, verified with the engine.
    async fn find_exec(
        &self,
        (docker, metrics): (&Engine, &Metrics),
        event: &Event,
        container: Option<&Container>,
    ) -> Option<ExecInspectResponse> {
        let belongs = |e: &ExecInspectResponse| {
            e.container_id.as_deref() == Some(event.actor_id.as_str())
                && same_command(&argv(e), event.detail.as_deref())
        };
        let claimed = event.attr("execID");
        if let (Some(id), Some(false)) = (claimed, container.map(|c| c.forgeable.exec_id))
            && let Ok(exec) = inspect_exec(docker, metrics, id).await
            && belongs(&exec)
        {
            return Some(exec);
        }
        // The attribute is a label (or wrong): look among the container's
        // running execs for the one not yet audited that runs this command.
        let info = retry(|| docker.inspect_container_as::<ViewInspect>(&event.actor_id))
            .await
            .inspect_err(|e| {
                report(metrics, Call::ContainerInspect, &event.actor_id, e);
            })
            .ok()?;
        let mut found = Vec::new();
        for id in info.exec_ids.unwrap_or_default() {
            if lock(&self.state.open).contains_key(&id) {
                continue;
            }
            if let Ok(exec) = inspect_exec(docker, metrics, &id).await
                && belongs(&exec)
            {
                found.push(exec);
            }
        }
        if found.len() == 1 { found.pop() } else { None }
    }

    async fn started(&self, ctx: &Ctx, docker: &Engine, event: &Arc<Event>) -> Outcome {
        let container = ctx.container(docker, &event.actor_id).await;
        let exec = self
            .find_exec((docker, &ctx.metrics), event, container.as_deref())
            .await;
        let claimed = event.attr("execID").map(str::to_owned);

        let facts = Facts::new(exec.as_ref(), container.as_deref(), event);
        let (healthcheck, severity) = (facts.healthcheck, facts.severity);
        let written = !healthcheck || self.include_healthchecks;
        // A probe's records are not written, and nothing else reads them:
        // only its place is kept.
        let fields = if written {
            facts.record(event, claimed.as_deref())
        } else {
            Record::new()
        };
        let verified = exec.is_some();
        let open = Open {
            container_id: event.actor_id.clone(),
            start_nano: event.time_nano,
            fields,
            written,
            severity,
            verified,
        };
        let name = container
            .as_deref()
            .map_or(event.actor_id.as_str(), |c| c.name.as_str());
        ctx.emit(
            &ExecStarted {
                container: name,
                record: &open.fields,
                healthcheck,
                severity: severity.label(),
                written: open.written,
            },
            Some(About {
                id: &event.actor_id,
                name,
                cause: event,
            }),
        );
        submit(&ctx.audit, Cow::Borrowed(&open), Moment::Start);
        if !verified {
            warn!(container = %event.actor_id, claimed = ?claimed, "Exec not verified with the engine; audited as unverified.");
        }
        let key = exec
            .as_ref()
            .and_then(|e| e.id.clone())
            .unwrap_or_else(|| format!("unverified:{}:{}", event.actor_id, event.time_nano));
        // An exec that fails to start (unknown user, missing binary, denied
        // capabilities) never gets an exec_die: it ends with no process (pid
        // 0) and an exit code, usually just after its exec_start event. Look
        // again shortly for an exec that has no process yet.
        // (The engine marks an exec running before it starts its process.)
        let not_started = exec.as_ref().is_some_and(|e| e.pid.unwrap_or(0) == 0);
        self.remember(key.clone(), open);
        if not_started {
            self.check_failed_start(ctx, docker.clone(), key);
        }
        Outcome::Ok
    }

    /// Writes the end record of an exec that never started, once the engine
    /// reports it finished.
    fn check_failed_start(&self, ctx: &Ctx, docker: Engine, exec_id: String) {
        let state = self.state.clone();
        let audit = ctx.audit.clone();
        let shutdown = ctx.shutdown.clone();
        let metrics = ctx.metrics.clone();
        ctx.tasks.spawn(async move {
            for delay_ms in [0u64, 200, 1000, 5000] {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(delay_ms)) => {}
                    _ = shutdown.cancelled() => return,
                }
                let Ok(exec) = inspect_exec(&docker, &metrics, &exec_id).await else {
                    return;
                };
                if exec.pid.unwrap_or(0) != 0 {
                    return; // it has a process: its exec_die will end it
                }
                if exec.running != Some(true)
                    && let Some(code) = exec.exit_code
                {
                    let Some(open) = lock(&state.open).remove(&exec_id) else {
                        return;
                    };
                    let end = Moment::End {
                        at_nano: crate::clock::unix_nanos(),
                        exit_code: Some(code),
                    };
                    submit(&audit, Cow::Owned(open), end);
                    return;
                }
            }
        });
    }

    fn remember(&self, key: String, open: Open) {
        let mut map = lock(&self.state.open);
        let mut order = lock(&self.state.order);
        map.insert(key.clone(), open);
        order.push_back(key);
        while map.len() > MAX_OPEN_EXECS {
            match order.pop_front() {
                Some(old) => {
                    if map.remove(&old).is_some() {
                        debug!(exec = %old, "Forgetting an exec whose end never came.");
                    }
                }
                None => break,
            }
        }
        if order.len() > MAX_OPEN_EXECS * 2 {
            order.retain(|k| map.contains_key(k));
        }
    }

    async fn ended(&self, ctx: &Ctx, docker: &Engine, event: &Arc<Event>) -> Outcome {
        let container = ctx.container(docker, &event.actor_id).await;
        let trusted = container.as_ref().is_some_and(|c| !c.forgeable.exec_id);
        let claimed = event.attr("execID").map(str::to_owned);
        // The execs this event may be about.
        // With a trustworthy ID, this event is about that exec and no
        // other; only a forged one makes us look among the container's
        // open execs for those that have finished.
        let keys: Vec<String> = {
            let open = lock(&self.state.open);
            match (&claimed, trusted) {
                (Some(id), true) if open.contains_key(id) => vec![id.clone()],
                (Some(_), true) => Vec::new(),
                _ => open
                    .iter()
                    .filter(|(_, o)| o.container_id == event.actor_id && o.verified)
                    .map(|(k, _)| k.clone())
                    .collect(),
            }
        };
        // A trustworthy ID we have no start for: its start was handled
        // before a restart (or before we watched). The engine still knows
        // the exec: write its end from that, verified.
        if let (Some(id), true) = (&claimed, trusted)
            && keys.is_empty()
            && let Ok(exec) = inspect_exec(docker, &ctx.metrics, id).await
            && exec.container_id.as_deref() == Some(event.actor_id.as_str())
        {
            let (fields, healthcheck, severity) =
                exec_fields(Some(&exec), container.as_deref(), event, None);
            let open = Open {
                container_id: event.actor_id.clone(),
                start_nano: 0,
                fields,
                written: !healthcheck || self.include_healthchecks,
                severity,
                verified: true,
            };
            self.write_end(ctx, open, event.time_nano, exec.exit_code);
            return Outcome::Ok;
        }
        // The engine's own exec_die for an exec we saw start: neither its
        // `execID` nor its `exitCode` can have come from a label, so the
        // event says all the inspect would (the exec has ended, and how).
        let attrs_trusted = container
            .as_ref()
            .is_some_and(|c| !c.forgeable.exec_id && !c.forgeable.exit_code);
        if attrs_trusted
            && let (Some(id), [key]) = (&claimed, keys.as_slice())
            && id == key
            && let Some(code) = event.exit_code()
            && let Some(open) = lock(&self.state.open).remove(key)
        {
            self.write_end(ctx, open, event.time_nano, Some(code));
            return Outcome::Ok;
        }
        let mut ended = 0;
        for key in keys {
            let Ok(exec) = inspect_exec(docker, &ctx.metrics, &key).await else {
                continue;
            };
            if exec.running == Some(true) {
                continue;
            }
            let Some(open) = lock(&self.state.open).remove(&key) else {
                continue;
            };
            self.write_end(ctx, open, event.time_nano, exec.exit_code);
            ended += 1;
        }
        if ended > 0 {
            return Outcome::Ok;
        }
        // Nothing verified matches: an exec started before we watched, or
        // one whose start could not be verified. Record it, flagged.
        let attr_code = container
            .as_ref()
            .filter(|c| !c.forgeable.exit_code)
            .and(event.exit_code());
        let unverified_start = {
            let mut open = lock(&self.state.open);
            let key = open
                .iter()
                .filter(|(_, o)| o.container_id == event.actor_id && !o.verified)
                .min_by_key(|(_, o)| o.start_nano)
                .map(|(k, _)| k.clone());
            key.and_then(|k| open.remove(&k))
        };
        let open = unverified_start.unwrap_or_else(|| {
            let mut r = Record::new();
            r.insert("exec_id".into(), Value::Null);
            r.insert("exec_id_verified".into(), false.into());
            r.insert("container_id".into(), event.actor_id.clone().into());
            r.insert(
                "container_name".into(),
                container
                    .as_ref()
                    .map(|c| c.name.clone())
                    .map_or(Value::Null, Value::from),
            );
            r.insert(
                "image".into(),
                container
                    .as_ref()
                    .map(|c| c.image.clone())
                    .map_or(Value::Null, Value::from),
            );
            r.insert("enriched".into(), false.into());
            Open {
                container_id: event.actor_id.clone(),
                start_nano: 0,
                fields: r,
                written: true,
                severity: Severity::Medium,
                verified: false,
            }
        });
        let mut open = open;
        if let Some(c) = &claimed {
            open.fields
                .insert("claimed_exec_id".into(), c.clone().into());
        }
        self.write_end(ctx, open, event.time_nano, attr_code);
        Outcome::Ok
    }

    fn write_end(&self, ctx: &Ctx, open: Open, end_nano: i64, exit_code: Option<i64>) {
        let end = Moment::End {
            at_nano: end_nano,
            exit_code,
        };
        submit(&ctx.audit, Cow::Owned(open), end);
    }
}
