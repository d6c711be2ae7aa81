//! What the benchmarks share: retried API calls, request counters, watches, operator
//! processes and percentiles. Each bench uses part of it.
#![allow(dead_code, reason = "each bench uses part of this module")]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource};
use qleetos_crds::KubernetesRuntime;
use qleetos_e2e::environment::Environment;
use qleetos_e2e::operator::OperatorOptions;
use qleetos_e2e::requests::{self, RequestCounts};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::task::JoinHandle;

/// Objects in flight at once when a bench applies many.
pub const IN_FLIGHT: usize = 16;

/// How long a watch may take to list, and the runtimes to be Ready.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
pub const POLL: Duration = Duration::from_millis(100);
/// Retries of transient API errors: the first delay, doubling up to the last, at most so many
/// tries.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);
pub const MAX_TRIES: usize = 10;
/// The field manager of what a user applies (the Workloads, the baseline's ConfigMaps).
pub const FIELD_MANAGER: &str = "qleetos-bench";

/// Longest error message shown in a table.
const MAX_ERROR_CHARS: usize = 100;

/// The first line of an error chain, short enough for a table cell.
pub fn short_message(error: &anyhow::Error) -> String {
    let message = format!("{error:#}");
    let first_line = message.lines().next().unwrap_or_default();
    first_line.chars().take(MAX_ERROR_CHARS).collect()
}

/// A fresh folder for a bench's environment (`qleetos-bench-*` in the temporary directory).
pub fn bench_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("qleetos-bench-")
        .tempdir()?)
}

/// `per_object` times `objects`, and at least `minimum`.
pub fn scaled(per_object: Duration, objects: usize, minimum: Duration) -> Duration {
    per_object.mul_f64(objects as f64).max(minimum)
}

/// The comma-separated positive numbers in environment variable `name`, or `default`.
pub fn positive_list(name: &str, default: &[usize]) -> Result<Vec<usize>> {
    let Ok(list) = std::env::var(name) else {
        return Ok(default.to_vec());
    };
    list.split(',')
        .map(|item| match item.trim().parse() {
            Ok(0) | Err(_) => bail!("{name}: {item:?} is not a positive number"),
            Ok(number) => Ok(number),
        })
        .collect()
}

/// Production defaults, except no resync during a run; work queues on `nats_replicas` servers.
pub fn operator_options(nats_replicas: usize) -> OperatorOptions {
    OperatorOptions {
        extra_args: vec![
            "--resync=10m".into(),
            format!("--nats-replicas={nats_replicas}"),
        ],
    }
}

/// Transient errors retried during one run, counted across all its concurrent calls.
#[derive(Debug, Default)]
pub struct Retries(AtomicUsize);

impl Retries {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Calls `call` until it succeeds, fails for good, or has been tried `MAX_TRIES` times,
/// waiting `FIRST_RETRY_DELAY`, doubling up to `MAX_RETRY_DELAY`, between tries.
pub async fn with_retries<T, F, Fut>(retries: &Retries, mut call: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let mut delay = FIRST_RETRY_DELAY;
    let mut tries = 1;
    loop {
        match call().await {
            Err(error) if tries < MAX_TRIES && is_transient(&error) => {
                eprintln!("retrying after a transient error (try {tries}): {error}");
                retries.0.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                tries += 1;
            }
            result => return result,
        }
    }
}

/// Errors another try may not get: the connection went away (hyper reused a pooled
/// connection the API server had closed), the server was overloaded (429) or failed (5xx),
/// or a write lost an optimistic-concurrency race (409: every write here is a forced
/// server-side apply, so a 409 is never a field-ownership conflict).
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500..=599),
        kube::Error::Service(_) | kube::Error::HyperError(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// Server-side apply, taking over every field (so a 409 is a race, never a conflict).
pub fn forced_apply(field_manager: &str) -> PatchParams {
    PatchParams::apply(field_manager).force()
}

pub async fn create_namespace(client: &Client, name: &str, retries: &Retries) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let patch = Patch::Apply(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }));
    let params = forced_apply(FIELD_MANAGER);
    with_retries(retries, || namespaces.patch(name, &params, &patch))
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Requests of the management API server and of the runtimes' together.
#[derive(Debug, Clone, Default)]
pub struct RequestTotals {
    pub management: RequestCounts,
    pub runtimes: RequestCounts,
    /// The management writes by request (`"PATCH workloads/status"`).
    pub management_writes: BTreeMap<String, f64>,
}

/// Admin clients of every API server, to read their request counters.
pub struct ApiServers {
    management: Client,
    runtimes: Vec<Client>,
}

impl ApiServers {
    pub async fn of(env: &Environment) -> Result<Self> {
        Ok(Self {
            management: env.management_client().await?,
            runtimes: runtime_clients(env).await?,
        })
    }

    pub async fn scrape(&self, retries: &Retries) -> Result<RequestTotals> {
        let mut runtimes = RequestCounts::default();
        for client in &self.runtimes {
            runtimes = runtimes.plus(request_counts(&metrics(client, retries).await?));
        }
        let management = metrics(&self.management, retries).await?;
        Ok(RequestTotals {
            management: request_counts(&management),
            runtimes,
            management_writes: requests::writes_by_request(&management, counted),
        })
    }

    /// The requests served since `before`; `None` (and a note) when they cannot be read, so
    /// the run's timing is kept.
    pub async fn requests_since(
        &self,
        before: RequestTotals,
        retries: &Retries,
    ) -> Option<RequestTotals> {
        match self.scrape(retries).await {
            Ok(after) => Some(RequestTotals {
                management: after.management.minus(before.management),
                runtimes: after.runtimes.minus(before.runtimes),
                management_writes: after
                    .management_writes
                    .into_iter()
                    .map(|(request, count)| {
                        let earlier = before.management_writes.get(&request).copied();
                        (request, count - earlier.unwrap_or(0.0))
                    })
                    .filter(|(_, count)| *count > 0.0)
                    .collect(),
            }),
            Err(error) => {
                eprintln!("reading the API servers' request counters: {error:#}");
                None
            }
        }
    }
}

pub async fn metrics(client: &Client, retries: &Retries) -> Result<String> {
    with_retries(retries, || requests::scrape(client))
        .await
        .context("reading /metrics")
}

/// Lease renewals are the clusters' own controllers and kwok, whatever the load.
pub fn counted(resource: &str) -> bool {
    resource != "leases"
}

pub fn request_counts(metrics: &str) -> RequestCounts {
    requests::request_counts(metrics, counted)
}

pub async fn runtime_clients(env: &Environment) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for (_, cluster) in &env.runtimes {
        clients.push(cluster.client().await?);
    }
    Ok(clients)
}

/// Background watch tasks, stopped when dropped (also when a run fails half-way).
#[derive(Debug, Default)]
pub struct Watches(pub Vec<JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

/// What a watch saw of an object.
#[derive(Debug)]
pub enum Sighting<K> {
    Applied(K),
    Deleted(K),
}

/// Watches `api` in the background, calling `on_object` with each object and the time it
/// was seen; returns once the initial list is done, so nothing created later is missed.
pub async fn spawn_watch<K, F>(api: Api<K>, mut on_object: F) -> Result<JoinHandle<()>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(K, Instant) + Send + 'static,
{
    spawn_watch_sightings(api, move |sighting, at| {
        if let Sighting::Applied(object) = sighting {
            on_object(object, at);
        }
    })
    .await
}

/// Like [`spawn_watch`], with deletions too.
pub async fn spawn_watch_sightings<K, F>(api: Api<K>, mut on_sighting: F) -> Result<JoinHandle<()>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(Sighting<K>, Instant) + Send + 'static,
{
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut synced = Some(synced_tx);
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    on_sighting(Sighting::Applied(object), Instant::now());
                }
                Ok(watcher::Event::Delete(object)) => {
                    on_sighting(Sighting::Deleted(object), Instant::now());
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
    let synced = tokio::time::timeout(SETUP_TIMEOUT, synced_rx).await;
    if !matches!(synced, Ok(Ok(()))) {
        task.abort();
        bail!("watch did not sync within {SETUP_TIMEOUT:?}");
    }
    Ok(task)
}

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `check` until it returns `Some` or `deadline` passes.
pub async fn poll_until<T>(deadline: Instant, mut check: impl FnMut() -> Option<T>) -> Option<T> {
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

pub async fn wait_runtimes_ready(client: &Client, retries: &Retries) -> Result<()> {
    let api: Api<KubernetesRuntime> = Api::all(client.clone());
    let all = ListParams::default();
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while Instant::now() < deadline {
        let runtimes = with_retries(retries, || api.list(&all)).await?.items;
        if !runtimes.is_empty() && runtimes.iter().all(KubernetesRuntime::is_ready) {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("KubernetesRuntimes not Ready within {SETUP_TIMEOUT:?}")
}

pub async fn restart_operators(
    env: &mut Environment,
    replicas: usize,
    nats_replicas: usize,
) -> Result<()> {
    env.stop_operators().await;
    for _ in 0..replicas {
        env.start_operator(operator_options(nats_replicas)).await?;
    }
    Ok(())
}

/// `VmHWM` of a process in KiB: the most resident memory it ever had.
/// `field` (`VmHWM`, the peak; `VmRSS`, now) of process `pid`, in KiB.
pub fn memory_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Peak RSS of every operator; one that cannot be read is left out (and said so).
pub fn operators_memory_kib(env: &Environment, field: &str) -> Vec<u64> {
    env.operators()
        .iter()
        .filter_map(|operator| {
            memory_kib(operator.pid(), field)
                .inspect_err(|error| eprintln!("{field}: {error:#}"))
                .ok()
        })
        .collect()
}

/// Nearest-rank percentile of unsorted durations.
pub fn percentile(latencies: &[Duration], q: f64) -> Option<Duration> {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied()
}

pub fn millis(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

/// One call of `apply_all`: when it started, how long it took and what it returned.
#[derive(Debug)]
pub struct Timed<T> {
    pub start: Instant,
    pub elapsed: Duration,
    pub output: T,
}

/// Calls `apply(i)` for every `i < n`, `IN_FLIGHT` at once; returns the calls in order of `i`.
pub async fn apply_all<T, F, Fut>(n: usize, apply: F) -> Result<Vec<Timed<T>>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut calls: Vec<(usize, Timed<T>)> = futures::stream::iter(0..n)
        .map(|i| {
            let call = apply(i);
            async move {
                let start = Instant::now();
                let output = call.await?;
                let elapsed = start.elapsed();
                Ok::<_, anyhow::Error>((
                    i,
                    Timed {
                        start,
                        elapsed,
                        output,
                    },
                ))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    calls.sort_by_key(|(i, _)| *i);
    Ok(calls.into_iter().map(|(_, call)| call).collect())
}
