//! QleetOS convergence throughput against the physical limit of the API servers.
//!
//! For each size N (`BENCH_SIZES`, default `100,1000`): the baseline applies N ConfigMaps
//! straight to the two workload clusters with a bare kube client (server-side apply,
//! `IN_FLIGHT` calls at once); then, with 1 and 2 operator replicas, N ConfigMap-only
//! Workloads (alternating regions eu-west-1 / us-east-1) are applied to the management
//! cluster the same way and the bench measures the time until all N report Ready at their
//! generation, each object's latency from its apply call to its first sighting in the
//! runtime (kube watchers), and the operators' peak RSS (`VmHWM`). Nothing is asserted: a run
//! that does not finish within `BENCH_TIMEOUT_SECS` (default 900) is reported as a timeout.
//!
//! Run with `make bench` (which builds the release binaries first) or
//! `cargo build --release --workspace --bins && cargo bench -p qleetos-e2e --bench queue`.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use qleetos_crds::{Conditions as _, KubernetesRuntime, Workload};
use qleetos_e2e::environment::{Environment, default_runtimes, ensure_namespace};
use qleetos_e2e::operator::OperatorOptions;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const DEFAULT_SIZES: [usize; 2] = [100, 1000];
const REPLICAS: [usize; 2] = [1, 2];
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];
/// Apply calls in flight, for the baseline and for the Workloads alike.
const IN_FLIGHT: usize = 16;
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the runtime watchers may lag behind the Ready statuses.
const SIGHTING_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
const FIELD_MANAGER: &str = "qleetos-bench";

#[derive(Debug)]
struct Settings {
    sizes: Vec<usize>,
    run_timeout: Duration,
}

fn settings() -> Result<Settings> {
    let sizes = match std::env::var("BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .with_context(|| format!("BENCH_SIZES: {n}"))
            })
            .collect::<Result<_>>()?,
        Err(_) => DEFAULT_SIZES.to_vec(),
    };
    let run_timeout = match std::env::var("BENCH_TIMEOUT_SECS") {
        Ok(secs) => Duration::from_secs(secs.parse().context("BENCH_TIMEOUT_SECS")?),
        Err(_) => DEFAULT_RUN_TIMEOUT,
    };
    Ok(Settings { sizes, run_timeout })
}

/// Production defaults, except more reconciles at once and no resync during a run.
fn operator_options() -> OperatorOptions {
    OperatorOptions {
        extra_args: vec!["--concurrency=8".into(), "--resync=10m".into()],
    }
}

/// One measured run: the baseline (`replicas == None`) or QleetOS with some replicas.
#[derive(Debug)]
struct Row {
    n: usize,
    replicas: Option<usize>,
    elapsed: Duration,
    /// Objects that finished (applied, or Ready); below `n` only after a timeout.
    completed: usize,
    timed_out: bool,
    latencies: Vec<Duration>,
    peak_rss_kib: Vec<u64>,
}

impl Row {
    fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }
}

fn config_map(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("settings-w-{i}")},
        "data": {"owner": format!("w-{i}")}
    })
}

fn workload(i: usize) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": format!("w-{i}")},
        "spec": {
            "manifests": [config_map(i)],
            "placement": {"regions": [REGIONS[i % REGIONS.len()]]}
        }
    })
}

/// Calls `apply(i)` for every `i < n`, `IN_FLIGHT` at once; returns each call's start.
async fn apply_all<F, Fut>(n: usize, apply: F) -> Result<Vec<(Instant, Duration)>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut calls: Vec<(usize, Instant, Duration)> = futures::stream::iter(0..n)
        .map(|i| {
            let call = apply(i);
            async move {
                let start = Instant::now();
                call.await?;
                Ok::<_, anyhow::Error>((i, start, start.elapsed()))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    calls.sort_by_key(|(i, _, _)| *i);
    Ok(calls.into_iter().map(|(_, s, d)| (s, d)).collect())
}

async fn runtime_clients(env: &Environment) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for (_, cluster) in &env.runtimes {
        clients.push(cluster.client().await?);
    }
    Ok(clients)
}

/// N ConfigMaps applied straight to the workload clusters, alternating like the Workloads.
async fn baseline(env: &Environment, n: usize, timeout: Duration) -> Result<Row> {
    let namespace = format!("baseline-{n}");
    let clients = runtime_clients(env).await?;
    let mut apis = Vec::new();
    for client in &clients {
        ensure_namespace(client, &namespace).await?;
        apis.push(Api::<ConfigMap>::namespaced(client.clone(), &namespace));
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let apply = |i: usize| {
        let (api, params) = (apis[i % apis.len()].clone(), params.clone());
        async move {
            let name = format!("settings-w-{i}");
            api.patch(&name, &params, &Patch::Apply(config_map(i)))
                .await?;
            Ok(())
        }
    };
    let start = Instant::now();
    let calls = tokio::time::timeout(timeout, apply_all(n, apply))
        .await
        .context("baseline applies timed out")??;
    Ok(Row {
        n,
        replicas: None,
        elapsed: start.elapsed(),
        completed: n,
        timed_out: false,
        latencies: calls.into_iter().map(|(_, d)| d).collect(),
        peak_rss_kib: Vec::new(),
    })
}

/// Watches `api` in the background, calling `on_object` with each object and the time it
/// was seen; returns once the initial list is done, so nothing created later is missed.
async fn spawn_watch<K, F>(api: Api<K>, mut on_object: F) -> Result<JoinHandle<()>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(K, Instant) + Send + 'static,
{
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut synced = Some(synced_tx);
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    on_object(object, Instant::now());
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = synced.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(SETUP_TIMEOUT, synced_rx)
        .await
        .context("watch did not sync")?
        .context("watch ended before syncing")?;
    Ok(task)
}

type Sightings = Arc<Mutex<HashMap<String, Instant>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records when each ConfigMap was first seen in a runtime.
fn record_sightings(seen: Sightings) -> impl FnMut(ConfigMap, Instant) + Send + 'static {
    move |config_map, at| {
        lock(&seen).entry(config_map.name_any()).or_insert(at);
    }
}

/// Which Workloads are Ready at their generation, and when all `n` first were.
#[derive(Debug, Default)]
struct Readiness {
    ready: HashSet<String>,
    all_ready_at: Option<Instant>,
}

fn record_readiness(
    state: Arc<Mutex<Readiness>>,
    n: usize,
) -> impl FnMut(Workload, Instant) + Send + 'static {
    move |workload, at| {
        let status = workload.status.clone().unwrap_or_default();
        let current = status.observed_generation == workload.metadata.generation;
        let mut state = lock(&state);
        if current && status.is_ready() {
            state.ready.insert(workload.name_any());
        } else {
            state.ready.remove(&workload.name_any());
        }
        if state.ready.len() == n && state.all_ready_at.is_none() {
            state.all_ready_at = Some(at);
        }
    }
}

/// Polls `check` until it returns `Some` or `deadline` passes.
async fn poll_until<T>(deadline: Instant, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_runtimes_ready(client: &Client) -> Result<()> {
    let api: Api<KubernetesRuntime> = Api::all(client.clone());
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while Instant::now() < deadline {
        let runtimes = api.list(&ListParams::default()).await?.items;
        if !runtimes.is_empty() && runtimes.iter().all(KubernetesRuntime::is_ready) {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("KubernetesRuntimes not Ready within {SETUP_TIMEOUT:?}")
}

/// Deletes every Workload (with the operators still running, so finalizers complete) and
/// waits until all are gone, so the next run starts from an empty management cluster.
async fn delete_all_workloads(client: &Client) -> Result<()> {
    let all: Api<Workload> = Api::all(client.clone());
    let namespaces: HashSet<String> = all
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|w| w.namespace())
        .collect();
    if namespaces.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    for namespace in &namespaces {
        Api::<Workload>::namespaced(client.clone(), namespace)
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await?;
    }
    let deadline = start + CLEANUP_TIMEOUT;
    while Instant::now() < deadline {
        let left = all.list(&ListParams::default()).await?.items.len();
        if left == 0 {
            eprintln!(
                "cleanup: deleted the previous Workloads in {:.1?}",
                start.elapsed()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("cleanup: Workloads still deleting after {CLEANUP_TIMEOUT:?}; going on");
    Ok(())
}

async fn restart_operators(env: &mut Environment, replicas: usize) -> Result<()> {
    env.stop_operators().await;
    for _ in 0..replicas {
        env.start_operator(operator_options()).await?;
    }
    Ok(())
}

/// `VmHWM` of a process in KiB: the most resident memory it ever had.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// Watchers on the ConfigMaps of `namespace` in every runtime.
async fn watch_runtimes(
    env: &Environment,
    namespace: &str,
    seen: &Sightings,
) -> Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for client in runtime_clients(env).await? {
        let api = Api::<ConfigMap>::namespaced(client, namespace);
        tasks.push(spawn_watch(api, record_sightings(seen.clone())).await?);
    }
    Ok(tasks)
}

/// Apply-call start to first sighting in the runtime, for every Workload seen there.
fn apply_to_runtime(
    calls: &[(Instant, Duration)],
    seen: &HashMap<String, Instant>,
) -> Vec<Duration> {
    calls
        .iter()
        .enumerate()
        .filter_map(|(i, (start, _))| {
            seen.get(&format!("settings-w-{i}"))
                .map(|at| at.saturating_duration_since(*start))
        })
        .collect()
}

/// N Workloads through QleetOS with `replicas` fresh operator processes.
async fn qleetos(
    env: &mut Environment,
    n: usize,
    replicas: usize,
    timeout: Duration,
) -> Result<Row> {
    let client = env.management_client().await?;
    delete_all_workloads(&client).await?;
    restart_operators(env, replicas).await?;
    wait_runtimes_ready(&client).await?;
    let namespace = format!("bench-{n}-x{replicas}");
    ensure_namespace(&client, &namespace).await?;
    let seen = Sightings::default();
    let mut tasks = watch_runtimes(env, &namespace, &seen).await?;
    let readiness = Arc::new(Mutex::new(Readiness::default()));
    let workloads = Api::<Workload>::namespaced(client.clone(), &namespace);
    tasks.push(spawn_watch(workloads.clone(), record_readiness(readiness.clone(), n)).await?);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let apply = |i: usize| {
        let (api, params) = (workloads.clone(), params.clone());
        async move {
            api.patch(&format!("w-{i}"), &params, &Patch::Apply(workload(i)))
                .await?;
            Ok(())
        }
    };
    let start = Instant::now();
    let deadline = start + timeout;
    let calls = tokio::time::timeout(timeout, apply_all(n, apply))
        .await
        .context("Workload applies timed out")??;
    let all_ready_at = poll_until(deadline, || lock(&readiness).all_ready_at).await;
    let grace = deadline.min(Instant::now() + SIGHTING_GRACE);
    poll_until(grace, || (lock(&seen).len() >= n).then_some(())).await;
    let peak_rss_kib = env
        .operators()
        .iter()
        .map(|o| peak_rss_kib(o.pid()))
        .collect::<Result<_>>()?;
    tasks.iter().for_each(JoinHandle::abort);
    let latencies = apply_to_runtime(&calls, &lock(&seen));
    Ok(Row {
        n,
        replicas: Some(replicas),
        elapsed: all_ready_at.map_or(timeout, |at| at - start),
        completed: all_ready_at.map_or_else(|| lock(&readiness).ready.len(), |_| n),
        timed_out: all_ready_at.is_none(),
        latencies,
        peak_rss_kib,
    })
}

/// Nearest-rank percentile of unsorted durations.
fn percentile(latencies: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied()
}

fn millis(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

fn rss_column(kib: &[u64]) -> String {
    if kib.is_empty() {
        return "-".into();
    }
    let mib: Vec<String> = kib
        .iter()
        .map(|k| format!("{:.0}", *k as f64 / 1024.0))
        .collect();
    let total = kib.iter().sum::<u64>() as f64 / 1024.0;
    if kib.len() == 1 {
        format!("{total:.0}")
    } else {
        format!("{total:.0} ({})", mib.join("+"))
    }
}

fn format_row(row: &Row, baseline: Option<&Row>) -> String {
    let who = row
        .replicas
        .map_or_else(|| "baseline".into(), |r| format!("qleetos x{r}"));
    let ratio = baseline.map_or_else(
        || "-".into(),
        |b| format!("{:.3}", row.throughput() / b.throughput()),
    );
    let time = if row.timed_out {
        format!("timeout {}/{}", row.completed, row.n)
    } else {
        format!("{:.2}", row.elapsed.as_secs_f64())
    };
    format!(
        "| {:>5} | {who:<11} | {time:>12} | {:>8.1} | {ratio:>8} | {:>9} | {:>9} | {:>14} |",
        row.n,
        row.throughput(),
        millis(percentile(&row.latencies, 0.50)),
        millis(percentile(&row.latencies, 0.99)),
        rss_column(&row.peak_rss_kib),
    )
}

fn print_table(rows: &[Row]) {
    println!(
        "\nConfigMap-only Workloads, {IN_FLIGHT} applies in flight; latency = apply call to object in runtime"
    );
    println!(
        "| {:>5} | {:<11} | {:>12} | {:>8} | {:>8} | {:>9} | {:>9} | {:>14} |",
        "N", "run", "time s", "obj/s", "vs base", "p50 ms", "p99 ms", "peak RSS MiB"
    );
    println!(
        "|------:|:------------|-------------:|---------:|---------:|----------:|----------:|---------------:|"
    );
    for row in rows {
        let baseline = rows
            .iter()
            .find(|b| b.n == row.n && b.replicas.is_none() && row.replicas.is_some());
        println!("{}", format_row(row, baseline));
    }
}

async fn bench(env: &mut Environment, settings: &Settings) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &n in &settings.sizes {
        let base = baseline(env, n, settings.run_timeout).await?;
        eprintln!("{}", format_row(&base, None));
        for replicas in REPLICAS {
            let row = qleetos(env, n, replicas, settings.run_timeout).await?;
            eprintln!("{}", format_row(&row, Some(&base)));
            rows.push(row);
        }
        rows.insert(rows.len() - REPLICAS.len(), base);
    }
    Ok(rows)
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let settings = settings()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::Builder::new()
            .prefix("qleetos-bench-")
            .tempdir()?;
        let mut env = Environment::start(dir.path(), default_runtimes()).await?;
        let result = bench(&mut env, &settings).await;
        env.stop().await;
        print_table(&result?);
        Ok(())
    })
}
