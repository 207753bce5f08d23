//! Every number dockwarden exposes on `/metrics`, in one private registry.
//!
//! Label values come only from fixed sets: event types and actions from
//! [`crate::event`]'s table, rule and handler names from the loaded rules,
//! outcomes from [`crate::handlers::Outcome`]. Never a raw action string or a
//! container ID.
//!
//! It owns names, help texts, buckets and registration; it must not decide
//! when something is counted (the callers, mostly `internal_events`, do).
//! This file is long because every metric is declared, registered and
//! described here once, so the names a dashboard depends on live in one place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::event::Labels;

/// The reasons of `dockwarden_stream_resyncs_total`: its only label values.
pub const RESYNC_REASONS: [&str; 4] = [
    "startup",
    "ring_overflow",
    "engine_restart",
    "queue_overflow",
];

/// The metrics of one dockwarden process.
pub struct Metrics {
    registry: Registry,
    events: IntCounterVec,
    malformed: IntCounter,
    rule_matches: IntCounterVec,
    handler_runs: IntCounterVec,
    handler_duration: HistogramVec,
    stream_connected: IntGauge,
    reconnects: IntCounter,
    event_lag: Histogram,
    queue_depth: IntGauge,
    /// What `queue_depth` reads at each scrape: the queue's own count.
    queue_source: OnceLock<Arc<AtomicUsize>>,
    dropped: IntCounter,
    deduplicated: IntCounter,
    actions: IntCounterVec,
    container_restarts: IntCounterVec,
    oom_events: IntCounter,
    breaker_open: IntGauge,
    heal_latency: Histogram,
    heal_reaction: Histogram,
    exec: IntCounterVec,
    audit_records: IntCounterVec,
    audit_write_errors: IntCounter,
    audit_buffered: IntGauge,
    audit_dropped: IntCounter,
    encode_errors: IntCounterVec,
    reloads: IntCounterVec,
    resyncs: IntCounterVec,
    notifications: IntCounterVec,
    notification_queue: IntGaugeVec,
    notification_breaker_open: IntGaugeVec,
    notification_latency: HistogramVec,
    engine_denied: IntCounterVec,
    label_errors: IntCounterVec,
    /// The calls whose denial was logged: each is logged once.
    denied_logged: std::sync::Mutex<std::collections::HashSet<(&'static str, &'static str)>>,
}

/// The `result` labels of `dockwarden_notifications_total`.
pub const NOTIFICATION_RESULTS: [&str; 5] = ["sent", "retried", "failed", "dropped", "coalesced"];

/// Registering a metric fails only on a programming error (a duplicate name
/// or bad label set), which every test run would show at once.
fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: T) -> T {
    registry
        .register(Box::new(m.clone()))
        .expect("metric definitions are static and unique");
    m
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let events = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_events_total",
                    "Events read from the engine, by type and normalised action.",
                ),
                &["type", "action"],
            )
            .expect("valid metric"),
        );
        let malformed = reg(
            &r,
            IntCounter::new(
                "dockwarden_events_malformed_total",
                "Lines of the event stream that were not a usable event (bad JSON, missing fields, truncated).",
            )
            .expect("valid metric"),
        );
        let rule_matches = reg(
            &r,
            IntCounterVec::new(
                Opts::new("dockwarden_rule_matches_total", "Events matched, by rule."),
                &["rule"],
            )
            .expect("valid metric"),
        );
        let handler_runs = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_handler_runs_total",
                    "Handler runs, by handler and outcome (ok, error, skipped).",
                ),
                &["handler", "outcome"],
            )
            .expect("valid metric"),
        );
        let handler_duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "dockwarden_handler_duration_seconds",
                    "Time a handler run took.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
                ]),
                &["handler"],
            )
            .expect("valid metric"),
        );
        let stream_connected = reg(
            &r,
            IntGauge::new(
                "dockwarden_stream_connected",
                "1 while the event stream is connected, else 0.",
            )
            .expect("valid metric"),
        );
        let reconnects = reg(
            &r,
            IntCounter::new(
                "dockwarden_stream_reconnects_total",
                "Times the event stream was connected again after being lost.",
            )
            .expect("valid metric"),
        );
        let event_lag = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "dockwarden_event_lag_seconds",
                    "From the engine's event time to the end of its handling.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
                ]),
            )
            .expect("valid metric"),
        );
        let queue_depth = reg(
            &r,
            IntGauge::new(
                "dockwarden_queue_depth",
                "Events read but not yet handled (queued, or waiting or running in a container's lane).",
            )
            .expect("valid metric"),
        );
        let dropped = reg(
            &r,
            IntCounter::new(
                "dockwarden_events_dropped_total",
                "Events dropped because the queue was full (the reader never waits for handlers).",
            )
            .expect("valid metric"),
        );
        let deduplicated = reg(
            &r,
            IntCounter::new(
                "dockwarden_events_deduplicated_total",
                "Events the engine sent again on reconnect (inclusive `since` replay) and that were dropped as already read.",
            )
            .expect("valid metric"),
        );
        let actions = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_actions_total",
                    "Healing actions, by action (restart, recreate, stop, raise_memory) and result (ok, error, suppressed).",
                ),
                &["action", "result"],
            )
            .expect("valid metric"),
        );
        let container_restarts = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_container_restarts_total",
                    "Restarts dockwarden made, by container name; removed when the container is destroyed for good.",
                ),
                &["name"],
            )
            .expect("valid metric"),
        );
        let oom_events = reg(
            &r,
            IntCounter::new("dockwarden_oom_events_total", "container.oom events seen.")
                .expect("valid metric"),
        );
        let breaker_open = reg(
            &r,
            IntGauge::new(
                "dockwarden_breaker_open",
                "Containers whose breaker is open: dockwarden gave up healing them.",
            )
            .expect("valid metric"),
        );
        let heal_latency = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "dockwarden_heal_latency_seconds",
                    "From the failure event's time to the healing action completed (backoff included).",
                )
                .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
            )
            .expect("valid metric"),
        );
        let heal_reaction = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "dockwarden_heal_reaction_seconds",
                    "dockwarden's own reaction: failure event read → action call issued, backoff excluded.",
                )
                .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5]),
            )
            .expect("valid metric"),
        );
        let exec = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_exec_total",
                    "Execs started, by kind (user, healthcheck).",
                ),
                &["kind"],
            )
            .expect("valid metric"),
        );
        let audit_records = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_audit_records_total",
                    "Audit records submitted, by severity.",
                ),
                &["severity"],
            )
            .expect("valid metric"),
        );
        let audit_write_errors = reg(
            &r,
            IntCounter::new(
                "dockwarden_audit_write_errors_total",
                "Failed writes or syncs of the audit log.",
            )
            .expect("valid metric"),
        );
        let encode_errors = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_encode_errors_total",
                    "Values dockwarden could not encode as JSON (and so did not write), by what they were.",
                ),
                &["what"],
            )
            .expect("valid metric"),
        );
        let audit_buffered = reg(
            &r,
            IntGauge::new(
                "dockwarden_audit_buffered_records",
                "Audit records waiting to be written.",
            )
            .expect("valid metric"),
        );
        let audit_dropped = reg(
            &r,
            IntCounter::new(
                "dockwarden_audit_dropped_records_total",
                "Audit records dropped because the buffer was full (the log was not writable for too long).",
            )
            .expect("valid metric"),
        );
        for kind in ["user", "healthcheck"] {
            exec.with_label_values(&[kind]);
        }
        let reloads = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_rules_reloads_total",
                    "Rules reloads, by result (ok, error).",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        let resyncs = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_stream_resyncs_total",
                    "Reconciliations from the engine's current state, by reason (startup, ring_overflow, engine_restart, queue_overflow).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        );
        for reason in RESYNC_REASONS {
            resyncs.with_label_values(&[reason]);
        }
        let notifications = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_notifications_total",
                    "Notifications by target and result: sent, coalesced (delivered inside a summary), failed (refused for good), dropped (queue full, stopped, or no sender for the target) — each message ends in one of these — and retried (attempts that failed and are tried again).",
                ),
                &["target", "result"],
            )
            .expect("valid metric"),
        );
        let notification_queue = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "dockwarden_notification_queue",
                    "Notifications waiting for their target.",
                ),
                &["target"],
            )
            .expect("valid metric"),
        );
        let notification_breaker_open = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "dockwarden_notification_breaker_open",
                    "1 while a target's breaker is open (it failed repeatedly; messages wait), else 0.",
                ),
                &["target"],
            )
            .expect("valid metric"),
        );
        let notification_latency = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "dockwarden_notification_latency_seconds",
                    "From a notification queued to its target's 2xx (retries, rate limit and restarts included).",
                )
                .buckets(vec![
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                ]),
                &["target"],
            )
            .expect("valid metric"),
        );
        let engine_denied = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_engine_calls_denied_total",
                    "Docker API calls refused with 403 (a socket proxy's allow list), by method and path with IDs as {id}.",
                ),
                &["method", "path"],
            )
            .expect("valid metric"),
        );
        let label_errors = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "dockwarden_label_errors_total",
                    "Containers' dockwarden.* labels whose value could not be used (ignored for that key; logged once per container), by label.",
                ),
                &["label"],
            )
            .expect("valid metric"),
        );
        let build_info = reg(
            &r,
            IntGaugeVec::new(
                Opts::new("dockwarden_build_info", "Always 1; the version is a label."),
                &["version"],
            )
            .expect("valid metric"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process metrics register once");

        // Series for the events that matter most exist from the start, so a
        // first increase shows as 0 → 1 rather than as a new series.
        for action in [
            "create",
            "start",
            "die",
            "oom",
            "kill",
            "stop",
            "destroy",
            "health_status",
        ] {
            events.with_label_values(&["container", action]);
        }
        Metrics {
            registry: r,
            events,
            malformed,
            rule_matches,
            handler_runs,
            handler_duration,
            stream_connected,
            reconnects,
            event_lag,
            queue_depth,
            queue_source: OnceLock::new(),
            dropped,
            deduplicated,
            actions,
            container_restarts,
            oom_events,
            breaker_open,
            heal_latency,
            heal_reaction,
            exec,
            audit_records,
            audit_write_errors,
            audit_buffered,
            audit_dropped,
            encode_errors,
            reloads,
            resyncs,
            notifications,
            notification_queue,
            notification_breaker_open,
            notification_latency,
            engine_denied,
            label_errors,
            denied_logged: Default::default(),
        }
    }

    /// The counter for events of one label pair; the source caches these.
    pub fn event_counter(&self, labels: Labels) -> IntCounter {
        self.events.with_label_values(&[labels.typ, labels.action])
    }

    pub fn malformed_event(&self) {
        self.malformed.inc();
    }

    pub fn event_dropped(&self) {
        self.dropped.inc();
    }

    pub fn event_deduplicated(&self) {
        self.deduplicated.inc();
    }

    /// `dockwarden_queue_depth` is `depth` as each scrape finds it.
    pub fn watch_queue_depth(&self, depth: Arc<AtomicUsize>) {
        let _ = self.queue_source.set(depth);
    }

    pub fn stream_connected(&self, connected: bool) {
        self.stream_connected.set(i64::from(connected));
    }

    pub fn stream_reconnected(&self) {
        self.reconnects.inc();
    }

    pub fn rule_matched(&self, rule: &str) {
        self.rule_matches.with_label_values(&[rule]).inc();
    }

    pub fn handler_ran(&self, handler: &str, outcome: &'static str, took: Duration) {
        self.handler_runs
            .with_label_values(&[handler, outcome])
            .inc();
        self.handler_duration
            .with_label_values(&[handler])
            .observe(took.as_secs_f64());
    }

    /// The series one rule moves on every event it matches, each looked up
    /// once, when first moved (as [`rule_matched`](Metrics::rule_matched)
    /// and [`handler_ran`](Metrics::handler_ran) would make it).
    pub fn rule_series(&self, rule: &str, handler: &str) -> RuleSeries {
        RuleSeries {
            rule: rule.to_owned(),
            handler: handler.to_owned(),
            matches: self.rule_matches.clone(),
            runs: self.handler_runs.clone(),
            durations: self.handler_duration.clone(),
            matched: OnceLock::new(),
            ran: Default::default(),
            duration: OnceLock::new(),
        }
    }

    pub fn event_handled(&self, lag: Duration) {
        self.event_lag.observe(lag.as_secs_f64());
    }

    /// A healing action's result: `ok`, `error` or `suppressed`.
    pub fn action(&self, action: &'static str, result: &'static str) {
        self.actions.with_label_values(&[action, result]).inc();
    }

    pub fn container_restarted(&self, name: &str) {
        self.container_restarts.with_label_values(&[name]).inc();
    }

    /// Drops the per-container series of a container destroyed for good.
    pub fn forget_container(&self, name: &str) {
        let _ = self.container_restarts.remove_label_values(&[name]);
    }

    /// A container's `dockwarden.*` label had a value that cannot be used.
    pub fn label_error(&self, label: &'static str) {
        self.label_errors.with_label_values(&[label]).inc();
    }

    pub fn oom_event(&self) {
        self.oom_events.inc();
    }

    pub fn breaker_opened(&self) {
        self.breaker_open.inc();
    }

    pub fn breaker_closed(&self) {
        self.breaker_open.dec();
    }

    pub fn healed(&self, latency: Duration, reaction: Duration) {
        self.heal_latency.observe(latency.as_secs_f64());
        self.heal_reaction.observe(reaction.as_secs_f64());
    }

    /// An exec started: `user` or `healthcheck`.
    pub fn exec_started(&self, kind: &'static str) {
        self.exec.with_label_values(&[kind]).inc();
    }

    pub fn audit_record(&self, severity: &'static str) {
        self.audit_records.with_label_values(&[severity]).inc();
    }

    pub fn audit_write_error(&self) {
        self.audit_write_errors.inc();
    }

    /// Records entering (+) or leaving (-) the audit buffer.
    pub fn audit_buffered(&self, delta: i64) {
        self.audit_buffered.add(delta);
    }

    /// A value was not written because it could not be encoded; `what` is
    /// a fixed name such as `audit record` or `checkpoint`.
    pub fn encode_error(&self, what: &'static str) {
        self.encode_errors.with_label_values(&[what]).inc();
    }

    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// `reason` is one of the fixed set above.
    pub fn resynced(&self, reason: &'static str) {
        self.resyncs.with_label_values(&[reason]).inc();
    }

    /// Drops the per-container series of every name not in `live`.
    pub fn forget_containers_except(&self, live: &std::collections::HashSet<String>) {
        use prometheus::core::Collector;
        let names: Vec<String> = self
            .container_restarts
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().iter())
            .flat_map(|m| m.get_label().iter())
            .filter(|l| l.name() == "name")
            .map(|l| l.value().to_owned())
            .filter(|n| !live.contains(n))
            .collect();
        for n in names {
            let _ = self.container_restarts.remove_label_values(&[&n]);
        }
    }

    pub fn rules_reloaded(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Creates a notification target's series at zero, so a first
    /// increase shows as 0 → 1.
    pub fn notification_target(&self, target: &str) {
        for result in NOTIFICATION_RESULTS {
            self.notifications.with_label_values(&[target, result]);
        }
        self.notification_queue.with_label_values(&[target]);
        self.notification_breaker_open.with_label_values(&[target]);
        self.notification_latency.with_label_values(&[target]);
    }

    /// `result` is one of [`NOTIFICATION_RESULTS`].
    pub fn notifications(&self, target: &str, result: &'static str, n: u64) {
        self.notifications
            .with_label_values(&[target, result])
            .inc_by(n);
    }

    /// Messages entering (+) or leaving (-) a target's queue.
    pub fn notification_queued(&self, target: &str, delta: i64) {
        self.notification_queue
            .with_label_values(&[target])
            .add(delta);
    }

    pub fn notification_breaker(&self, target: &str, open: bool) {
        self.notification_breaker_open
            .with_label_values(&[target])
            .set(i64::from(open));
    }

    pub fn notification_latency(&self, target: &str, latency: Duration) {
        self.notification_latency
            .with_label_values(&[target])
            .observe(latency.as_secs_f64());
    }

    /// A call the engine (or a socket proxy) refused with 403; true the first
    /// time for this method and path, which is the time to log it.
    pub fn engine_call_denied(&self, method: &'static str, path: &'static str) -> bool {
        self.engine_denied.with_label_values(&[method, path]).inc();
        crate::lock::lock(&self.denied_logged).insert((method, path))
    }

    /// The registry, for handlers that add metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Audit records waiting to be written.
    pub fn audit_buffered_records(&self) -> i64 {
        self.audit_buffered.get()
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        if let Some(depth) = self.queue_source.get() {
            self.queue_depth.set(depth.load(Ordering::Acquire) as i64);
        }
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "Cannot encode metrics.");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A rule's series in `dockwarden_rule_matches_total`,
/// `dockwarden_handler_runs_total` and `dockwarden_handler_duration_seconds`,
/// held by the rule: a labelled lookup hashes its label values and takes
/// the vector's lock, three times per rule for every event it matches.
pub struct RuleSeries {
    rule: String,
    handler: String,
    matches: IntCounterVec,
    runs: IntCounterVec,
    durations: HistogramVec,
    matched: OnceLock<IntCounter>,
    /// By outcome, in [`OUTCOMES`]' order.
    ran: [OnceLock<IntCounter>; 3],
    duration: OnceLock<Histogram>,
}

/// A handler run's outcomes, the `outcome` label's values.
pub const OUTCOMES: [&str; 3] = ["ok", "skipped", "error"];

impl RuleSeries {
    pub fn matched(&self) {
        self.matched
            .get_or_init(|| self.matches.with_label_values(&[&self.rule]))
            .inc();
    }

    /// A run of the rule's handler ended with `outcome` (one of
    /// [`OUTCOMES`]) after `took`.
    pub fn ran(&self, outcome: &'static str, took: Duration) {
        match OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => self.ran[i]
                .get_or_init(|| self.runs.with_label_values(&[&self.handler, outcome]))
                .inc(),
            None => self.runs.with_label_values(&[&self.handler, outcome]).inc(),
        }
        self.duration
            .get_or_init(|| self.durations.with_label_values(&[&self.handler]))
            .observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fixed_names() {
        let m = Metrics::new();
        m.event_counter(Labels {
            typ: "container",
            action: "die",
        })
        .inc();
        m.handler_ran("log", "ok", Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("dockwarden_events_total{action=\"die\",type=\"container\"} 1"));
        assert!(text.contains("dockwarden_handler_runs_total{handler=\"log\",outcome=\"ok\"} 1"));
        assert!(text.contains("dockwarden_build_info{version=\""));
        assert!(text.contains("dockwarden_stream_connected 0"));
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn a_rules_series_are_the_labelled_ones() {
        let (by_label, held) = (Metrics::new(), Metrics::new());
        let series = held.rule_series("audit-exec", "exec_audit");
        for outcome in OUTCOMES.into_iter().chain(["ok", "error"]) {
            by_label.rule_matched("audit-exec");
            by_label.handler_ran("exec_audit", outcome, Duration::from_millis(3));
            series.matched();
            series.ran(outcome, Duration::from_millis(3));
        }
        let counts = |m: &Metrics| {
            m.render()
                .lines()
                .filter(|l| l.contains("audit-exec") || l.contains("exec_audit"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let lines = counts(&held);
        assert_eq!(lines, counts(&by_label));
        for line in [
            "dockwarden_rule_matches_total{rule=\"audit-exec\"} 5",
            "dockwarden_handler_runs_total{handler=\"exec_audit\",outcome=\"ok\"} 2",
            "dockwarden_handler_runs_total{handler=\"exec_audit\",outcome=\"skipped\"} 1",
            "dockwarden_handler_duration_seconds_count{handler=\"exec_audit\"} 5",
        ] {
            assert!(lines.iter().any(|l| l == line), "{line} in {lines:#?}");
        }
        // Nothing is made before it is moved.
        let idle = held.rule_series("unmoved", "idle_handler");
        drop(idle);
        let text = held.render();
        assert!(!text.contains("unmoved") && !text.contains("idle_handler"));
    }
}
