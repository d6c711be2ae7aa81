//! `qleetos-operator`: runs any subset of the Qleets against the management cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use qleetos_crds::notification::{NatsAuth, redact_url};
use qleetos_crds::parse_duration;
use qleetos_operator::chart::{ChartSettings, Charts};
use qleetos_operator::context::{CacheWriters, Context, Settings, caches};
use qleetos_operator::controllers::{self, Registered};
use qleetos_operator::kubeconfig::KubeconfigPolicy;
use qleetos_operator::metrics::{self, Metrics};
use qleetos_operator::provisioning::local::LocalClusters;
use qleetos_operator::queue::notifier::{self, Publisher};
use qleetos_operator::queue::worker::{Worker, report_queue_depth};
use qleetos_operator::queue::{Broker, BrokerOptions, drift};
use qleetos_operator::supervisor::Supervisor;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// How long a drain may take beyond the reconcile timeout (acks, lock releases, flush).
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// QleetOS operator. Reaches the management cluster through the usual kubeconfig lookup
/// (KUBECONFIG, ~/.kube/config, or the in-cluster service account).
#[derive(Debug, Parser)]
#[command(version, about, args_override_self = true)]
struct Args {
    /// Qleets to run (comma-separated); every Qleet when not given.
    #[arg(long, value_delimiter = ',', value_parser = qleet_named, env = "QLEETOS_QLEETS")]
    qleets: Vec<Registered>,
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "QLEETOS_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// How often converged objects are reconciled again to correct drift.
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "QLEETOS_RESYNC")]
    resync: Duration,
    /// How often runtimes are probed.
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "QLEETOS_PROBE_INTERVAL")]
    probe_interval: Duration,
    /// How long a placement's runtime must stay unreachable before a Workload with
    /// `spec.placement.failover` and no `after` of its own moves off it.
    #[arg(long, default_value = "2m", value_parser = parse_duration, env = "QLEETOS_FAILOVER_AFTER")]
    failover_after: Duration,
    /// How soon a rollout in progress is checked again.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "QLEETOS_PROGRESS_POLL")]
    progress_poll: Duration,
    /// Retry delay after a first failure; doubles per failure.
    #[arg(long, default_value = "1s", value_parser = parse_duration, env = "QLEETOS_BASE_BACKOFF")]
    base_backoff: Duration,
    /// Longest retry delay after repeated failures.
    #[arg(long, default_value = "2m", value_parser = parse_duration, env = "QLEETOS_MAX_BACKOFF")]
    max_backoff: Duration,
    /// Longest a single reconcile may run before it counts as failed; also bounds the drain
    /// on SIGTERM.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "QLEETOS_RECONCILE_TIMEOUT")]
    reconcile_timeout: Duration,
    /// Lifetime of an object's lock unless its holder refreshes it (every third of it): how
    /// long the objects of a replica that died wait before another replica takes them.
    #[arg(long, default_value = "10s", value_parser = lock_ttl, env = "QLEETOS_LOCK_TTL")]
    lock_ttl: Duration,
    /// Reconciles this replica runs at once, per Qleet.
    #[arg(long, default_value = "8", env = "QLEETOS_CONCURRENCY")]
    concurrency: usize,
    /// QleetOS's own namespace: where runtime kubeconfig Secrets live, never a tenant target.
    #[arg(long, default_value = "qleetos-system", env = "QLEETOS_NAMESPACE")]
    system_namespace: String,
    /// NATS server URL (JetStream enabled); `user:password@` or `token@` in it is used as
    /// credentials (the flags below win) and never logged.
    #[arg(long, env = "QLEETOS_NATS_URL")]
    nats_url: String,
    /// Servers each work queue and key-value bucket is replicated on: 1 for a single
    /// nats-server, 3 for a NATS cluster that survives the loss of one server. Raising it
    /// scales an existing layout in place.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u8).range(1..=5), env = "QLEETOS_NATS_REPLICAS")]
    nats_replicas: u8,
    #[command(flatten)]
    nats: NatsAuth,
    /// Accept kubeconfigs with `exec` credential plugins or `auth-provider`s (they run
    /// programs inside the operator).
    #[arg(long, env = "QLEETOS_ALLOW_KUBECONFIG_EXEC")]
    allow_kubeconfig_exec: bool,
    /// Accept kubeconfigs referring to files (tokenFile, client-certificate, client-key,
    /// certificate-authority paths), read from the operator's file system.
    #[arg(long, env = "QLEETOS_ALLOW_KUBECONFIG_FILES")]
    allow_kubeconfig_files: bool,
    /// Enables the `Local` provisioning provider: the directory holding `kwokctl`,
    /// `kube-apiserver`, `kube-controller-manager`, `kube-scheduler` and `kwok`.
    #[arg(long, env = "QLEETOS_LOCAL_CLUSTERS_BIN_DIR")]
    local_clusters_bin_dir: Option<std::path::PathBuf>,
    /// The etcd binary local clusters run.
    #[arg(
        long,
        default_value = "/usr/bin/etcd",
        env = "QLEETOS_LOCAL_CLUSTERS_ETCD"
    )]
    local_clusters_etcd: std::path::PathBuf,
    /// Where local clusters keep their data and logs (one folder per cluster).
    #[arg(
        long,
        default_value = "/var/lib/qleetos/local-clusters",
        env = "QLEETOS_LOCAL_CLUSTERS_DIR"
    )]
    local_clusters_dir: std::path::PathBuf,
    /// The pinned Helm CLI that renders charts (`helm template`) and pulls them from OCI
    /// registries.
    #[arg(long, default_value = "helm", env = "QLEETOS_HELM")]
    helm: std::path::PathBuf,
    /// Where fetched chart archives and helm's own state are kept; default: a folder of the
    /// temporary directory.
    #[arg(long, env = "QLEETOS_CHART_CACHE")]
    chart_cache: Option<std::path::PathBuf>,
    /// `FROM=TO`: fetch charts whose repository starts with FROM from TO instead (a mirror,
    /// e.g. for air-gapped sites). Repeatable.
    #[arg(long, value_parser = chart_mirror, env = "QLEETOS_CHART_MIRRORS", value_delimiter = ',')]
    chart_mirror: Vec<(String, String)>,
    /// Name of this replica in locks and logs; defaults to <hostname>-<pid>.
    #[arg(long, env = "QLEETOS_REPLICA_ID")]
    replica_id: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "QLEETOS_LOG_JSON")]
    log_json: bool,
}

impl Args {
    /// Every Qleet when `--qleets` named none.
    fn with_every_qleet(mut self) -> Self {
        if self.qleets.is_empty() {
            self.qleets = controllers::QLEETS.to_vec();
        }
        self
    }
}

/// The Qleet `--qleets` names.
fn qleet_named(name: &str) -> Result<Registered, String> {
    controllers::named(name).ok_or_else(|| {
        let names: Vec<&str> = controllers::QLEETS.iter().map(|q| q.name).collect();
        format!("{name:?} is not a Qleet; one of {}", names.join(", "))
    })
}

/// A chart mirror: `FROM=TO`, both repository prefixes.
fn chart_mirror(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => {
            Ok((from.to_owned(), to.to_owned()))
        }
        _ => Err(format!(
            "{text:?}: a chart mirror is FROM=TO (two repository prefixes)"
        )),
    }
}

/// A lock TTL: a duration of at least one second (it is refreshed every third of it).
fn lock_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    if ttl < Duration::from_secs(1) {
        return Err(format!("{text:?}: the lock TTL must be at least 1s"));
    }
    Ok(ttl)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse().with_every_qleet();
    init_logging(args.log_json);
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let metrics = Arc::new(Metrics::default());
    let mut supervisor = Supervisor::new(shutdown.clone(), metrics.clone());
    serve_metrics(&mut supervisor, args.metrics_addr, metrics.clone()).await?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the management cluster")?;
    let (caches, cache_writers) = caches();
    let charts = Charts::new(ChartSettings {
        helm: args.helm.clone(),
        cache: args
            .chart_cache
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("qleetos-charts")),
        mirrors: args.chart_mirror.clone(),
    })
    .context("setting up chart rendering")?;
    let ctx = Context::new(client, settings(&args), metrics, caches).with_charts(charts);
    let ctx = Arc::new(ctx);
    let replica = args.replica_id.clone().unwrap_or_else(default_replica_id);
    let qleets: Vec<&str> = args.qleets.iter().map(|q| q.name).collect();
    tracing::info!(addr = %args.metrics_addr, ?qleets, %replica, nats = %redact_url(&args.nats_url), "qleetos-operator starting");
    let connecting = Broker::connect(broker_options(&args, &replica));
    let broker = tokio::select! {
        broker = connecting => broker.context("connecting to NATS")?,
        () = shutdown.cancelled() => return Ok(()),
    };
    start_background(&mut supervisor, &broker, &ctx, cache_writers);
    let worker = Worker {
        broker: broker.clone(),
        ctx: ctx.clone(),
        concurrency: args.concurrency,
        holder: replica,
    };
    start_qleets(&mut supervisor, &args.qleets, worker);
    let drained = supervisor.run(args.reconcile_timeout + DRAIN_MARGIN).await;
    broker.flush().await;
    drained?;
    tracing::info!("qleetos-operator stopped");
    Ok(())
}

fn settings(args: &Args) -> Settings {
    Settings {
        resync: args.resync,
        probe_interval: args.probe_interval,
        failover_after: args.failover_after,
        progress_poll: args.progress_poll,
        base_backoff: args.base_backoff,
        max_backoff: args.max_backoff,
        reconcile_timeout: args.reconcile_timeout,
        system_namespace: args.system_namespace.clone(),
        per_runtime_concurrency: args.concurrency.saturating_sub(1).max(1),
        kubeconfig: KubeconfigPolicy {
            allow_exec: args.allow_kubeconfig_exec,
            allow_files: args.allow_kubeconfig_files,
        },
        local_clusters: args
            .local_clusters_bin_dir
            .clone()
            .map(|bin_dir| LocalClusters {
                bin_dir,
                etcd: args.local_clusters_etcd.clone(),
                work_dir: args.local_clusters_dir.clone(),
            }),
    }
}

fn broker_options(args: &Args, replica: &str) -> BrokerOptions {
    let (url, auth) = args.nats.clone().take_url_credentials(&args.nats_url);
    BrokerOptions {
        url,
        auth,
        name: replica.to_owned(),
        ack_wait: BrokerOptions::ack_wait_for(args.reconcile_timeout),
        lock_ttl: args.lock_ttl,
        replicas: usize::from(args.nats_replicas),
    }
}

/// Serves /metrics, /healthz and /readyz until shutdown.
async fn serve_metrics(
    supervisor: &mut Supervisor,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let server = axum::serve(listener, metrics::router(metrics));
    supervisor.spawn_until_shutdown("metrics server", async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "metrics server failed");
        }
    });
    Ok(())
}

/// The notifier, the drift watches, the queue-depth gauges and the readiness flag.
fn start_background(
    supervisor: &mut Supervisor,
    broker: &Broker,
    ctx: &Arc<Context>,
    cache_writers: CacheWriters,
) {
    let publisher = Publisher::new(broker.clone());
    let triggers = Arc::new(controllers::triggers());
    supervisor.spawn_until_shutdown(
        "notifier",
        notifier::run(publisher.clone(), ctx.clone(), triggers, cache_writers),
    );
    supervisor.spawn_until_shutdown("drift watches", drift::run(publisher, ctx.clone()));
    let (broker, metrics) = (broker.clone(), ctx.metrics.clone());
    supervisor.spawn_until_shutdown("readiness", async move {
        loop {
            metrics.set_ready(broker.is_connected());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// One worker per Qleet asked for, and the gauges of their queues.
fn start_qleets(supervisor: &mut Supervisor, qleets: &[Registered], worker: Worker) {
    let shutdown = supervisor.shutdown();
    for qleet in qleets {
        supervisor.spawn_draining(qleet.name, (qleet.run)(worker.clone(), shutdown.clone()));
    }
    let kinds = qleets.iter().map(|qleet| qleet.kind).collect();
    supervisor.spawn_until_shutdown(
        "queue depth gauges",
        report_queue_depth(worker.broker, worker.ctx, kinds),
    );
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
async fn cancel_on_signal(shutdown: CancellationToken) {
    shutdown_signal().await;
    tracing::info!("signal received: stopping");
    shutdown.cancel();
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "qleetos".into());
    format!("{host}-{}", std::process::id())
}

fn init_logging(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_qleet_by_default_and_names_them_on_a_typo() {
        let args = Args::parse_from(["qleetos-operator", "--nats-url=nats://x"]).with_every_qleet();
        let kinds: Vec<_> = args.qleets.iter().map(|q| q.kind).collect();
        assert_eq!(kinds.len(), controllers::QLEETS.len());
        for qleet in controllers::QLEETS {
            assert!(
                kinds.contains(&qleet.kind),
                "{} is not run by default",
                qleet.name
            );
        }
        let error = qleet_named("workloads").expect_err("not a Qleet");
        assert!(error.contains("runtime, workload, instance"), "{error}");
    }

    #[test]
    fn nats_replicas_default_to_one_and_stay_within_a_cluster_size() {
        let args = Args::parse_from(["qleetos-operator", "--nats-url=nats://a,nats://b"]);
        assert_eq!(broker_options(&args, "r").replicas, 1);
        let three = Args::parse_from([
            "qleetos-operator",
            "--nats-url=nats://x",
            "--nats-replicas=3",
        ]);
        assert_eq!(broker_options(&three, "r").replicas, 3);
        for refused in ["0", "6"] {
            let flag = format!("--nats-replicas={refused}");
            assert!(
                Args::try_parse_from(["qleetos-operator", "--nats-url=nats://x", &flag]).is_err()
            );
        }
    }

    #[test]
    fn lock_ttl_defaults_to_ten_seconds_and_refuses_sub_second_values() {
        let args = Args::parse_from(["qleetos-operator", "--nats-url=nats://x"]);
        assert_eq!(args.lock_ttl, Duration::from_secs(10));
        assert_eq!(lock_ttl("3s"), Ok(Duration::from_secs(3)));
        assert!(lock_ttl("500ms").is_err());
        let options = broker_options(&args, "r");
        assert_eq!(options.ack_wait, Duration::from_secs(65));
    }
}
