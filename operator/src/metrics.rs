//! Prometheus metrics of the Qleets and the HTTP endpoints serving them with health probes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use qleetos_crds::RuntimeCapacity;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    controller: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    controller: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    runtime: String,
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    runtime: String,
}

/// What each runtime holds and costs, as its last probe measured.
#[derive(Debug, Default)]
struct RuntimeGauges {
    allocatable: Family<RuntimeLabels, Gauge>,
    requested: Family<RuntimeLabels, Gauge>,
    cost: Family<CostLabels, Gauge<f64, AtomicU64>>,
}

impl RuntimeGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "runtime_allocatable",
            "Allocatable resource of a runtime's nodes (cpu in millicores, memory in bytes)",
            self.allocatable.clone(),
        );
        registry.register(
            "runtime_requested",
            "Resource requested by a runtime's unfinished pods (cpu in millicores, memory in bytes)",
            self.requested.clone(),
        );
        registry.register(
            "runtime_cost_per_hour",
            "What a runtime costs per hour (its nodes and the cluster), as operations priced it",
            self.cost.clone(),
        );
    }
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

/// Reconcile counters and durations per Qleet, plus the readiness flag.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: HistogramFamily,
    messages: Family<OutcomeLabels, Counter>,
    lock_contention: Family<ControllerLabels, Counter>,
    lock_releases: Family<OutcomeLabels, Counter>,
    queue_depth: Family<ControllerLabels, Gauge>,
    notify_to_done: HistogramFamily,
    aborted: Family<FailureLabels, Counter>,
    queue_interruptions: Family<ControllerLabels, Counter>,
    drift_rejected: Counter,
    object_reads: Family<OutcomeLabels, Counter>,
    writes_skipped: Family<OutcomeLabels, Counter>,
    failovers: Family<FailoverLabels, Counter>,
    runtimes: RuntimeGauges,
    ready: AtomicBool,
    /// The first background task that stopped on its own; `/healthz` fails once set.
    stopped_task: OnceLock<&'static str>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let mut registry = Registry::with_prefix("qleetos");
        registry.register("reconciles", "Reconciles run, by Qleet", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by Qleet and reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, by Qleet",
            duration.clone(),
        );
        let messages = Family::<OutcomeLabels, Counter>::default();
        let lock_contention = Family::<ControllerLabels, Counter>::default();
        let lock_releases = Family::<OutcomeLabels, Counter>::default();
        let queue_depth = Family::<ControllerLabels, Gauge>::default();
        let notify_to_done: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let help = [
            (
                "messages",
                "Work-queue messages by outcome: received, acked, naked, terminated",
            ),
            (
                "lock_contention",
                "Messages requeued because another replica held the object's lock",
            ),
            (
                "lock_releases",
                "Lock releases: clean (held throughout) or lost",
            ),
            (
                "queue_depth",
                "Messages pending or unacknowledged in the Qleet's consumer",
            ),
            (
                "notify_to_done_seconds",
                "Time from a notification's publication to its reconcile's end",
            ),
            (
                "reconciles_aborted",
                "Reconciles stopped before they finished, by Qleet and reason (LockLost)",
            ),
            (
                "work_queue_interruptions",
                "Errors of the pull stream (missed heartbeats, reconnects) followed by a new pull",
            ),
            (
                "drift_rejected",
                "Drift events ignored because they named no instance placed on their runtime",
            ),
        ];
        registry.register(help[0].0, help[0].1, messages.clone());
        registry.register(help[1].0, help[1].1, lock_contention.clone());
        registry.register(help[2].0, help[2].1, lock_releases.clone());
        registry.register(help[3].0, help[3].1, queue_depth.clone());
        registry.register(help[4].0, help[4].1, notify_to_done.clone());
        let aborted = Family::<FailureLabels, Counter>::default();
        let queue_interruptions = Family::<ControllerLabels, Counter>::default();
        let drift_rejected = Counter::default();
        registry.register(help[5].0, help[5].1, aborted.clone());
        registry.register(help[6].0, help[6].1, queue_interruptions.clone());
        registry.register(help[7].0, help[7].1, drift_rejected.clone());
        let object_reads = Family::<OutcomeLabels, Counter>::default();
        let writes_skipped = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "object_reads",
            "Objects a reconcile started from, by Qleet and source (cache: the watch cache had caught up with the notification; api: read from the API server)",
            object_reads.clone(),
        );
        registry.register(
            "writes_skipped",
            "Writes not sent because the object already was as wanted, by Qleet and write (status, instance, apply)",
            writes_skipped.clone(),
        );
        let failovers = Family::<FailoverLabels, Counter>::default();
        registry.register(
            "failovers",
            "Placements moved off an unreachable runtime (moved), back to it once recovered (returned), or kept where they moved (stayed)",
            failovers.clone(),
        );
        let runtimes = RuntimeGauges::default();
        runtimes.register(&mut registry);
        Self {
            registry,
            reconciles,
            failures,
            duration,
            messages,
            lock_contention,
            lock_releases,
            queue_depth,
            notify_to_done,
            aborted,
            queue_interruptions,
            drift_rejected,
            object_reads,
            writes_skipped,
            failovers,
            runtimes,
            ready: AtomicBool::new(false),
            stopped_task: OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Records one reconcile of `controller` that started at `started`.
    pub fn observe<T>(
        &self,
        controller: &'static str,
        started: Instant,
        result: &Result<T, Error>,
    ) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = result {
            let labels = FailureLabels {
                controller,
                reason: error.reason().as_str(),
            };
            self.failures.get_or_create(&labels).inc();
        }
    }

    /// Counts a work-queue message outcome: received, handled (the worker is done with it,
    /// however it ended), acked, naked or terminated.
    pub fn message(&self, controller: &'static str, outcome: &'static str) {
        self.messages
            .get_or_create(&OutcomeLabels {
                controller,
                outcome,
            })
            .inc();
    }

    /// Counts where a reconcile read its object: `cache` or `api`.
    pub fn object_read(&self, controller: &'static str, source: &'static str) {
        let labels = OutcomeLabels {
            controller,
            outcome: source,
        };
        self.object_reads.get_or_create(&labels).inc();
    }

    /// Sets what `runtime` holds and costs (`None`: it is gone, its series too).
    pub fn set_runtime_capacity(&self, runtime: &str, capacity: Option<&RuntimeCapacity>) {
        let gauges = &self.runtimes;
        let label = |resource| RuntimeLabels {
            runtime: runtime.to_owned(),
            resource,
        };
        let cost = CostLabels {
            runtime: runtime.to_owned(),
        };
        let Some(capacity) = capacity else {
            for resource in ["cpu", "memory"] {
                gauges.allocatable.remove(&label(resource));
                gauges.requested.remove(&label(resource));
            }
            gauges.cost.remove(&cost);
            return;
        };
        for (family, amounts) in [
            (&gauges.allocatable, capacity.allocatable),
            (&gauges.requested, capacity.requested),
        ] {
            family
                .get_or_create(&label("cpu"))
                .set(amounts.cpu_millicores);
            family
                .get_or_create(&label("memory"))
                .set(amounts.memory_bytes);
        }
        match capacity
            .cost_per_hour
            .as_deref()
            .and_then(|c| c.parse().ok())
        {
            Some(per_hour) => {
                gauges.cost.get_or_create(&cost).set(per_hour);
            }
            None => {
                gauges.cost.remove(&cost);
            }
        }
    }

    /// Counts a failover step of a placement: `moved`, `returned` or `stayed`.
    pub fn failover(&self, outcome: &'static str) {
        self.failovers
            .get_or_create(&FailoverLabels { outcome })
            .inc();
    }

    /// Counts a write left out because nothing changed: `status`, `instance` or `apply`.
    pub fn write_skipped(&self, controller: &'static str, write: &'static str) {
        let labels = OutcomeLabels {
            controller,
            outcome: write,
        };
        self.writes_skipped.get_or_create(&labels).inc();
    }

    pub fn lock_contended(&self, controller: &'static str) {
        self.lock_contention
            .get_or_create(&ControllerLabels { controller })
            .inc();
    }

    /// Counts a lock release by outcome: clean, lost or unconfirmed.
    pub fn lock_released(&self, controller: &'static str, outcome: &'static str) {
        self.lock_releases
            .get_or_create(&OutcomeLabels {
                controller,
                outcome,
            })
            .inc();
    }

    pub fn set_queue_depth(&self, controller: &'static str, depth: u64) {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        self.queue_depth
            .get_or_create(&ControllerLabels { controller })
            .set(depth);
    }

    pub fn notification_done(&self, controller: &'static str, seconds: f64) {
        self.notify_to_done
            .get_or_create(&ControllerLabels { controller })
            .observe(seconds);
    }

    pub fn reconcile_aborted(&self, controller: &'static str, reason: &'static str) {
        self.aborted
            .get_or_create(&FailureLabels { controller, reason })
            .inc();
    }

    pub fn queue_interrupted(&self, controller: &'static str) {
        self.queue_interruptions
            .get_or_create(&ControllerLabels { controller })
            .inc();
    }

    pub fn drift_rejected(&self) {
        self.drift_rejected.inc();
    }

    /// Never ready again once a background task stopped.
    pub fn set_ready(&self, ready: bool) {
        let ready = ready && self.stopped_task.get().is_none();
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The background task that stopped on its own, if one did.
    pub fn stopped_task(&self) -> Option<&'static str> {
        self.stopped_task.get().copied()
    }

    /// Marks the process unhealthy: background task `task` stopped on its own.
    pub fn task_stopped(&self, task: &'static str) {
        let _ = self.stopped_task.set(task);
        self.ready.store(false, Ordering::Relaxed);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `/metrics`, `/healthz` (every background task is running) and `/readyz` (connected to
/// NATS, Qleets running).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_health))
        .route("/readyz", get(serve_ready))
        .with_state(metrics)
}

async fn serve_health(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    match metrics.stopped_task.get() {
        None => (StatusCode::OK, "ok".into()),
        Some(task) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("background task {task} stopped"),
        ),
    }
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    match metrics.encode() {
        Ok(text) => (StatusCode::OK, text),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

async fn serve_ready(State(metrics): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to NATS or Qleets not started",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_reason() {
        let metrics = Metrics::default();
        metrics.observe::<()>("workload", Instant::now(), &Ok(()));
        metrics.observe::<()>(
            "workload",
            Instant::now(),
            &Err(Error::RuntimeNotFound("x".into())),
        );
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(r#"qleetos_reconciles_total{controller="workload"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"qleetos_reconcile_failures_total{controller="workload",reason="RuntimeNotFound"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn health_fails_once_a_background_task_stopped() {
        let metrics = Arc::new(Metrics::default());
        metrics.set_ready(true);
        let (status, _) = serve_health(State(metrics.clone())).await;
        assert_eq!(status, StatusCode::OK);
        metrics.task_stopped("notifier");
        let (status, body) = serve_health(State(metrics.clone())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("notifier"), "{body}");
        let (ready, _) = serve_ready(State(metrics)).await;
        assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    }
}
