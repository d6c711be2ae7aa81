//! Changes under steady load (issue 29): how long one change takes to reach its runtime while
//! many Workloads are already converged.
//!
//! 1. **Burst.** One operator (`--resync=10m`, otherwise production defaults) and the gateway
//!    start; `BENCH_CONVERGED` Workloads (default 10,000; regions alternating eu-west-1 /
//!    us-east-1) are applied, `IN_FLIGHT` at once, until all are Ready at their generation.
//!    Each holds a ConfigMap; every `IMAGE_EVERY`-th also a Deployment of 0 replicas whose
//!    container `web` the stream's image changes go to. The rate until all are Ready is the
//!    *capacity*; the time until the operator has nothing left in its queues either (what
//!    each apply's echo from the runtime asks for) is the *drain time*. The operator's
//!    resident memory before and after gives the memory per Workload.
//! 2. **Streams.** For each load L in `BENCH_LOADS` (default `0.5,0.8`), an open-loop stream
//!    of changes at L × capacity for `BENCH_STREAM_SECS` (default 60): each change starts at
//!    its scheduled time whether the earlier ones are done or not, in turn a new Workload
//!    (server-side apply), an image change through the gateway's hook
//!    (`POST .../workloads/NAME/images`, as CI does) and a Workload deletion. Latency is from
//!    the scheduled time to the effect seen by a watch on the runtime: the ConfigMap there,
//!    the Deployment with the new image, the ConfigMap gone. A change not seen within
//!    `LANDING_GRACE` after the stream is *lost*, unless it is an image change overtaken by
//!    a later one of the same Workload that landed (*superseded*: the newer image won). The
//!    baseline of each load, in the same run, is a bare client applying ConfigMaps straight
//!    to the runtimes at the same rate, measured the same way.
//! 3. **Restart.** Once the operator has nothing left from the streams, it is restarted: the
//!    time until it has reconciled every instance once and has nothing of Workloads and
//!    instances left (its NATS consumers drained, every message handled), and the API writes in that time (lease
//!    renewals left out).
//!
//! `BENCH_KEEP_DIR=1` keeps the environment's folder (every process's log) and prints where.
//! Nothing is asserted. Run with `make bench`, or
//! `cargo build --release --workspace --bins && cargo bench -p qleetos-e2e --bench steady`.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::{Client, ResourceExt as _};
use qleetos_crds::{Conditions as _, Workload, WorkloadInstance};
use qleetos_e2e::environment::{Environment, default_runtimes};
use qleetos_e2e::gateway::{GatewayProcess, admin_service_account_token};
use qleetos_e2e::quiescence::{self, metric};
use serde_json::{Value, json};
use support::*;

const DEFAULT_CONVERGED: usize = 10_000;
const DEFAULT_STREAM: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "steady";
/// The runtime namespace of the baseline's ConfigMaps (QleetOS's own stays QleetOS's).
const DIRECT_NAMESPACE: &str = "steady-direct";
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];
/// Every this many converged Workloads also holds the Deployment image changes go to.
const IMAGE_EVERY: usize = 10;
/// How long after a stream's last change its changes may still land before they count as lost.
const LANDING_GRACE: Duration = Duration::from_secs(30);
/// The burst may take this long per Workload, and at least `MIN_BURST_TIMEOUT`.
const BURST_TIMEOUT_PER_OBJECT: Duration = Duration::from_millis(900);
const MIN_BURST_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const RESTART_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The Qleets of Workloads and their instances.
const KINDS: [&str; 2] = ["workload", "workloadinstance"];

#[derive(Debug)]
struct Settings {
    converged: usize,
    loads: Vec<f64>,
    stream: Duration,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let converged = positive_list("BENCH_CONVERGED", &[DEFAULT_CONVERGED])?;
        let stream = positive_list("BENCH_STREAM_SECS", &[DEFAULT_STREAM.as_secs() as usize])?;
        let loads = match std::env::var("BENCH_LOADS") {
            Ok(list) => list
                .split(',')
                .map(|item| match item.trim().parse::<f64>() {
                    Ok(load) if load > 0.0 && load <= 1.0 => Ok(load),
                    _ => bail!("BENCH_LOADS: {item:?} is not a fraction in (0, 1]"),
                })
                .collect::<Result<_>>()?,
            Err(_) => vec![0.5, 0.8],
        };
        Ok(Self {
            converged: converged[0],
            loads,
            stream: Duration::from_secs(stream[0] as u64),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Objects

fn config_map_name(workload: &str) -> String {
    format!("settings-{workload}")
}

fn deployment_name(workload: &str) -> String {
    format!("web-{workload}")
}

fn image(tag: usize) -> String {
    format!("registry.qleetos.test/web:{tag}")
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn deployment(name: &str) -> Value {
    let labels = json!({"app": name});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image(0)}]}
            }
        }
    })
}

/// Workload `name`, the `i`-th of its kind: a ConfigMap, and the Deployment when asked.
fn workload(name: &str, i: usize, with_deployment: bool) -> Value {
    let mut manifests = vec![config_map(&config_map_name(name))];
    if with_deployment {
        manifests.push(deployment(&deployment_name(name)));
    }
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name},
        "spec": {"manifests": manifests, "placement": {"regions": [REGIONS[i % REGIONS.len()]]}}
    })
}

fn converged_name(i: usize) -> String {
    format!("w-{i}")
}

// ---------------------------------------------------------------------------------------
// What the runtimes show

/// When each effect was first seen in a runtime.
#[derive(Debug, Default)]
struct Seen {
    config_maps: HashMap<String, Instant>,
    deleted: HashMap<String, Instant>,
    /// (Deployment, image of its first container).
    images: HashMap<(String, String), Instant>,
}

type SharedSeen = Arc<Mutex<Seen>>;

/// Watches of the ConfigMaps of `NAMESPACE` and `DIRECT_NAMESPACE`, and of the Deployments
/// of `NAMESPACE`, in every runtime.
async fn watch_runtimes(env: &Environment, seen: &SharedSeen) -> Result<Watches> {
    let mut watches = Watches::default();
    for client in runtime_clients(env).await? {
        for namespace in [NAMESPACE, DIRECT_NAMESPACE] {
            let seen_maps = seen.clone();
            let maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
            let task = spawn_watch_sightings(maps, move |sighting, at| {
                let mut seen = lock(&seen_maps);
                match sighting {
                    Sighting::Applied(map) => seen.config_maps.entry(map.name_any()).or_insert(at),
                    Sighting::Deleted(map) => seen.deleted.entry(map.name_any()).or_insert(at),
                };
            });
            watches.0.push(task.await?);
        }
        let seen_images = seen.clone();
        let deployments = Api::<Deployment>::namespaced(client, NAMESPACE);
        let task = spawn_watch(deployments, move |deployment: Deployment, at| {
            let image = deployment
                .spec
                .as_ref()
                .and_then(|spec| spec.template.spec.as_ref())
                .and_then(|pod| pod.containers.first())
                .and_then(|container| container.image.clone())
                .unwrap_or_default();
            let key = (deployment.name_any(), image);
            lock(&seen_images).images.entry(key).or_insert(at);
        });
        watches.0.push(task.await?);
    }
    Ok(watches)
}

/// Workloads Ready at their generation, by name.
async fn watch_readiness(client: &Client, ready: Arc<Mutex<HashSet<String>>>) -> Result<Watches> {
    let workloads = Api::<Workload>::namespaced(client.clone(), NAMESPACE);
    let task = spawn_watch_sightings(workloads, move |sighting, _| {
        let mut ready = lock(&ready);
        match sighting {
            Sighting::Applied(workload) => {
                let status = workload.status.clone().unwrap_or_default();
                if status.observed_generation == workload.metadata.generation && status.is_ready() {
                    ready.insert(workload.name_any());
                } else {
                    ready.remove(&workload.name_any());
                }
            }
            Sighting::Deleted(workload) => {
                ready.remove(&workload.name_any());
            }
        }
    });
    Ok(Watches(vec![task.await?]))
}

// ---------------------------------------------------------------------------------------
// Burst

#[derive(Debug)]
struct Burst {
    converged: usize,
    /// Until every Workload was Ready.
    all_ready: Duration,
    /// Until the operator had nothing left in its queues either.
    drain: Duration,
    writes_per_workload: Option<f64>,
    rss_before_kib: Vec<u64>,
    rss_after_kib: Vec<u64>,
}

impl Burst {
    fn capacity(&self) -> f64 {
        self.converged as f64 / self.all_ready.as_secs_f64()
    }
}

/// Waits until the one operator has nothing of Workloads and instances left; returns when.
async fn wait_idle(env: &Environment, deadline: Instant) -> Result<Instant> {
    let operator = env.operators().first().context("a running operator")?;
    loop {
        if quiescence::idle(&env.nats, operator, &KINDS).await? {
            return Ok(Instant::now());
        }
        ensure!(
            Instant::now() < deadline,
            "the operator was not idle by the deadline"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn burst(env: &Environment, converged: usize, retries: &Retries) -> Result<Burst> {
    let client = env.management_client().await?;
    let ready = Arc::new(Mutex::new(HashSet::new()));
    let _readiness = watch_readiness(&client, ready.clone()).await?;
    let workloads = Api::<Workload>::namespaced(client, NAMESPACE);
    let params = forced_apply(FIELD_MANAGER);
    let apply = |i: usize| {
        let (api, params) = (&workloads, &params);
        async move {
            let name = converged_name(i);
            let patch = Patch::Apply(workload(&name, i, i.is_multiple_of(IMAGE_EVERY)));
            with_retries(retries, || api.patch(&name, params, &patch))
                .await
                .with_context(|| format!("applying Workload {name}"))?;
            Ok(())
        }
    };
    let rss_before_kib = operators_memory_kib(env, "VmRSS");
    let servers = ApiServers::of(env).await?;
    let before = servers.scrape(retries).await?;
    let start = Instant::now();
    let timeout = scaled(BURST_TIMEOUT_PER_OBJECT, converged, MIN_BURST_TIMEOUT);
    tokio::time::timeout(timeout, apply_all(converged, apply))
        .await
        .context("the burst's applies timed out")??;
    let all_ready = poll_until(start + timeout, || {
        (lock(&ready).len() >= converged).then(Instant::now)
    })
    .await;
    let Some(all_ready) = all_ready else {
        bail!(
            "only {} of {converged} Workloads Ready after {timeout:?}",
            lock(&ready).len()
        );
    };
    let idle = wait_idle(env, start + timeout).await?;
    let requests = servers.requests_since(before, retries).await;
    Ok(Burst {
        converged,
        all_ready: all_ready - start,
        drain: idle - start,
        writes_per_workload: requests.map(|r| r.management.writes / converged as f64),
        rss_before_kib,
        rss_after_kib: operators_memory_kib(env, "VmRSS"),
    })
}

// ---------------------------------------------------------------------------------------
// Streams

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Create,
    Image,
    Delete,
    /// The baseline: a ConfigMap applied straight to a runtime.
    Direct,
}

/// One change of a stream and the effect that shows it landed.
#[derive(Debug, Clone)]
struct Change {
    kind: Kind,
    /// The Workload (or, for `Direct`, the ConfigMap) it is about.
    name: String,
    /// Its index, for the region (or runtime) it goes to.
    index: usize,
    /// The image set, for `Image`.
    image: String,
}

impl Change {
    fn landed_at(&self, seen: &Seen) -> Option<Instant> {
        match self.kind {
            Kind::Create => seen.config_maps.get(&config_map_name(&self.name)).copied(),
            Kind::Direct => seen.config_maps.get(&self.name).copied(),
            Kind::Delete => seen.deleted.get(&config_map_name(&self.name)).copied(),
            Kind::Image => {
                let key = (deployment_name(&self.name), self.image.clone());
                seen.images.get(&key).copied()
            }
        }
    }
}

/// The changes of every stream, in turn: a new Workload, an image change, a deletion. The
/// deletions take converged ConfigMap-only Workloads from the last one down; the image changes
/// go round the Workloads with a Deployment.
#[derive(Debug)]
struct Plan {
    converged: usize,
    issued: usize,
    next_delete: usize,
    next_image: usize,
}

impl Plan {
    fn new(converged: usize) -> Self {
        Self {
            converged,
            issued: 0,
            next_delete: converged,
            next_image: 0,
        }
    }

    fn next(&mut self) -> Result<Change> {
        let k = self.issued;
        self.issued += 1;
        let (kind, name, index) = match k % 3 {
            0 => (Kind::Create, format!("n-{k}"), k),
            1 => {
                let i = self.next_image;
                self.next_image = (i + IMAGE_EVERY) % self.converged.max(1);
                (Kind::Image, converged_name(i), i)
            }
            _ => {
                self.next_delete = (1..self.next_delete)
                    .rev()
                    .find(|i| !i.is_multiple_of(IMAGE_EVERY))
                    .context("no converged Workload left to delete")?;
                let i = self.next_delete;
                (Kind::Delete, converged_name(i), i)
            }
        };
        Ok(Change {
            kind,
            name,
            index,
            image: image(k + 1),
        })
    }
}

/// What a stream's calls go through.
#[derive(Debug, Clone)]
struct Callers {
    workloads: Api<Workload>,
    runtimes: Vec<Api<ConfigMap>>,
    http: reqwest::Client,
    gateway: String,
    token: String,
}

impl Callers {
    async fn call(&self, change: &Change) -> Result<()> {
        match change.kind {
            Kind::Create => {
                let patch = Patch::Apply(workload(&change.name, change.index, false));
                let params = forced_apply(FIELD_MANAGER);
                self.workloads.patch(&change.name, &params, &patch).await?;
            }
            Kind::Delete => {
                self.workloads
                    .delete(&change.name, &DeleteParams::default())
                    .await?;
            }
            Kind::Direct => {
                let api = &self.runtimes[change.index % self.runtimes.len()];
                let patch = Patch::Apply(config_map(&change.name));
                api.patch(&change.name, &forced_apply(FIELD_MANAGER), &patch)
                    .await?;
            }
            Kind::Image => {
                let url = format!(
                    "{}/v1/namespaces/{NAMESPACE}/workloads/{}/images",
                    self.gateway, change.name
                );
                let response = self
                    .http
                    .post(&url)
                    .bearer_auth(&self.token)
                    .json(&json!({"images": {"web": change.image}}))
                    .send()
                    .await?;
                ensure!(
                    response.status().is_success(),
                    "gateway answered {}",
                    response.status()
                );
            }
        }
        Ok(())
    }
}

/// A stream's outcome.
#[derive(Debug, Default)]
struct Stream {
    rate: f64,
    issued: usize,
    /// Calls that failed (each is printed).
    failed: usize,
    lost: usize,
    /// Image changes overtaken by a later one of the same Workload before they were applied.
    superseded: usize,
    latencies: HashMap<Kind, Vec<Duration>>,
}

impl Stream {
    fn all(&self) -> Vec<Duration> {
        self.latencies.values().flatten().copied().collect()
    }
}

/// `count` changes from `next`, one every `1 / rate` seconds, each started on time whatever
/// the earlier ones do; then waits for their effects.
async fn stream(
    callers: &Callers,
    seen: &SharedSeen,
    (rate, count): (f64, usize),
    mut next: impl FnMut() -> Result<Change>,
) -> Result<Stream> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for k in 0..count {
        let change = next()?;
        let scheduled = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(scheduled).await;
        let callers = callers.clone();
        calls.spawn(async move {
            let outcome = callers.call(&change).await;
            (change, scheduled.into_std(), outcome)
        });
    }
    let mut outcome = Stream {
        rate,
        issued: count,
        ..Stream::default()
    };
    let mut pending = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (change, scheduled, result) = joined.context("a stream call panicked")?;
        match result {
            Ok(()) => pending.push((change, scheduled)),
            Err(error) => {
                eprintln!("{:?} {}: {error:#}", change.kind, change.name);
                outcome.failed += 1;
            }
        }
    }
    pending.sort_by_key(|(_, scheduled)| *scheduled);
    let deadline = Instant::now() + LANDING_GRACE;
    poll_until(deadline, || {
        (tally(&pending, &lock(seen)).lost == 0).then_some(())
    })
    .await;
    let tally = tally(&pending, &lock(seen));
    outcome.lost = tally.lost;
    outcome.superseded = tally.superseded;
    for (kind, latency) in tally.landed {
        outcome.latencies.entry(kind).or_default().push(latency);
    }
    Ok(outcome)
}

/// Where a stream's changes stand.
#[derive(Debug)]
struct Tally {
    landed: Vec<(Kind, Duration)>,
    /// Image changes never seen because a later one of the same Workload landed first.
    superseded: usize,
    lost: usize,
}

/// Tallies `pending` (in the order scheduled) against what the runtimes showed.
fn tally(pending: &[(Change, Instant)], seen: &Seen) -> Tally {
    let mut tally = Tally {
        landed: Vec::new(),
        superseded: 0,
        lost: 0,
    };
    let mut later_image_landed = HashSet::new();
    for (change, scheduled) in pending.iter().rev() {
        match change.landed_at(seen) {
            Some(at) => {
                tally
                    .landed
                    .push((change.kind, at.saturating_duration_since(*scheduled)));
                if change.kind == Kind::Image {
                    later_image_landed.insert(change.name.as_str());
                }
            }
            None if change.kind == Kind::Image
                && later_image_landed.contains(change.name.as_str()) =>
            {
                tally.superseded += 1;
            }
            None => tally.lost += 1,
        }
    }
    tally
}

// ---------------------------------------------------------------------------------------
// Restart

#[derive(Debug)]
struct Restart {
    workloads: usize,
    to_idle: Duration,
    management_writes: Option<f64>,
    runtime_writes: Option<f64>,
}

/// Restarts the operator and waits until it reconciled every instance once and has nothing
/// left to do.
async fn restart(env: &mut Environment, retries: &Retries) -> Result<Restart> {
    let client = env.management_client().await?;
    let workloads = Api::<Workload>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    let instances = Api::<WorkloadInstance>::all(client)
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    // Converged first: what the streams left in the queues is done before the restart.
    wait_idle(env, Instant::now() + RESTART_TIMEOUT).await?;
    let servers = ApiServers::of(env).await?;
    let before = servers.scrape(retries).await?;
    let start = Instant::now();
    restart_operators(env, 1, 1).await?;
    let deadline = start + RESTART_TIMEOUT;
    loop {
        if caught_up(env, instances).await? {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the restarted operator was not idle within {RESTART_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let to_idle = start.elapsed();
    let requests = servers.requests_since(before, retries).await;
    Ok(Restart {
        workloads,
        to_idle,
        management_writes: requests.as_ref().map(|r| r.management.writes),
        runtime_writes: requests.as_ref().map(|r| r.runtimes.writes),
    })
}

/// Whether the one operator reconciled `instances` instances since its start and has nothing
/// of Workloads and instances left. (A restart's first look passes converged Workloads by
/// without a reconcile; every instance is looked at, against its runtime.)
async fn caught_up(env: &Environment, instances: usize) -> Result<bool> {
    let operator = env.operators().first().context("a running operator")?;
    let text = operator.metrics().await?;
    let series = r#"qleetos_reconciles_total{controller="workloadinstance"}"#;
    let reconciled = metric(&text, series) >= instances as f64;
    Ok(reconciled && quiescence::idle(&env.nats, operator, &KINDS).await?)
}

// ---------------------------------------------------------------------------------------
// Report

fn mib(kib: &[u64]) -> String {
    let mib: Vec<String> = kib
        .iter()
        .map(|k| format!("{:.0}", *k as f64 / 1024.0))
        .collect();
    mib.join("+")
}

fn print_burst(burst: &Burst) {
    let (before, after) = (&burst.rss_before_kib, &burst.rss_after_kib);
    let per_workload = match (before.first(), after.first()) {
        (Some(b), Some(a)) => format!(
            "{:.1}",
            a.saturating_sub(*b) as f64 / burst.converged as f64
        ),
        _ => "-".into(),
    };
    println!(
        "\nBurst: {} Workloads Ready in {:.1} s, {:.1}/s (capacity), the operator idle after {:.1} s (drain time); \
         management writes per Workload {}; operator RSS {} -> {} MiB, {per_workload} KiB per Workload",
        burst.converged,
        burst.all_ready.as_secs_f64(),
        burst.capacity(),
        burst.drain.as_secs_f64(),
        burst
            .writes_per_workload
            .map_or_else(|| "-".into(), |w| format!("{w:.2}")),
        mib(before),
        mib(after),
    );
}

fn stream_line(load: f64, run: &str, stream: &Stream) -> String {
    let all = stream.all();
    let kind = |kind: Kind| {
        let latencies = stream.latencies.get(&kind).map_or(&[][..], Vec::as_slice);
        format!(
            "{}/{}",
            millis(percentile(latencies, 0.50)),
            millis(percentile(latencies, 0.99))
        )
    };
    format!(
        "| {load:>4.2} | {run:<8} | {:>6.1} | {:>7} | {:>8} | {:>8} | {:>8} | {:>4} | {:>10} | {:>6} | {:>13} | {:>13} | {:>13} |",
        stream.rate,
        stream.issued,
        millis(percentile(&all, 0.50)),
        millis(percentile(&all, 0.99)),
        millis(all.iter().max().copied()),
        stream.lost,
        stream.superseded,
        stream.failed,
        kind(Kind::Create),
        kind(Kind::Image),
        kind(Kind::Delete),
    )
}

fn print_streams(rows: &[(f64, &str, Result<Stream, String>)]) {
    println!("\nOpen-loop streams; latency = scheduled start to effect seen in the runtime, ms");
    println!(
        "| load | run      | rate/s | changes |      p50 |      p99 |      max | lost | superseded | failed | create p50/99 |  image p50/99 | delete p50/99 |"
    );
    println!(
        "|-----:|:---------|-------:|--------:|---------:|---------:|---------:|-----:|-----------:|-------:|--------------:|--------------:|--------------:|"
    );
    for (load, run, result) in rows {
        match result {
            Ok(stream) => println!("{}", stream_line(*load, run, stream)),
            Err(message) => println!("| {load:>4.2} | {run:<8} | error: {message} |"),
        }
    }
}

fn print_restart(restart: &Result<Restart, String>) {
    let count = |writes: Option<f64>| writes.map_or_else(|| "-".into(), |w| format!("{w:.0}"));
    match restart {
        Ok(r) => println!(
            "\nRestart with {} Workloads: idle after {:.1} s; writes meanwhile: management {}, runtimes {} (leases left out)",
            r.workloads,
            r.to_idle.as_secs_f64(),
            count(r.management_writes),
            count(r.runtime_writes)
        ),
        Err(message) => println!("\nRestart: error: {message}"),
    }
}

// ---------------------------------------------------------------------------------------
// Main

async fn callers(env: &Environment, gateway: &GatewayProcess) -> Result<Callers> {
    let client = env.management_client().await?;
    let token = admin_service_account_token(&client, NAMESPACE, "ci").await?;
    let runtimes = runtime_clients(env)
        .await?
        .into_iter()
        .map(|client| Api::<ConfigMap>::namespaced(client, DIRECT_NAMESPACE))
        .collect();
    Ok(Callers {
        workloads: Api::namespaced(client, NAMESPACE),
        runtimes,
        http: qleetos_e2e::http::client_builder().build()?,
        gateway: gateway.base_url(),
        token,
    })
}

async fn bench(env: &mut Environment, settings: &Settings) -> Result<()> {
    let retries = Retries::default();
    let client = env.management_client().await?;
    create_namespace(&client, NAMESPACE, &retries).await?;
    for runtime in runtime_clients(env).await? {
        create_namespace(&runtime, DIRECT_NAMESPACE, &retries).await?;
    }
    let gateway = GatewayProcess::start_for(env).await?;
    restart_operators(env, 1, 1).await?;
    wait_runtimes_ready(&client, &retries).await?;
    let seen = SharedSeen::default();
    let _watches = watch_runtimes(env, &seen).await?;
    let callers = callers(env, &gateway).await?;

    eprintln!("burst: {} Workloads", settings.converged);
    let burst = burst(env, settings.converged, &retries).await?;
    print_burst(&burst);
    let mut plan = Plan::new(settings.converged);
    let mut rows = Vec::new();
    for &load in &settings.loads {
        let rate = load * burst.capacity();
        let count = (rate * settings.stream.as_secs_f64()).round().max(1.0) as usize;
        eprintln!("streams at {load} of capacity: {count} changes at {rate:.1}/s each");
        let mut direct = 0;
        let baseline = stream(&callers, &seen, (rate, count), || {
            direct += 1;
            Ok(Change {
                kind: Kind::Direct,
                name: format!("direct-{load}-{direct}"),
                index: direct,
                image: String::new(),
            })
        })
        .await;
        rows.push((load, "baseline", baseline.map_err(|e| short_message(&e))));
        let qleetos = stream(&callers, &seen, (rate, count), || plan.next()).await;
        rows.push((load, "qleetos", qleetos.map_err(|e| short_message(&e))));
        print_streams(&rows);
    }
    eprintln!("restart");
    let restart = restart(env, &retries).await.map_err(|e| short_message(&e));
    print_burst(&burst);
    print_streams(&rows);
    print_restart(&restart);
    println!("retried transient API errors: {}", retries.count());
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = bench_dir()?;
        let mut env = Environment::start(dir.path(), default_runtimes()).await?;
        let result = bench(&mut env, &settings).await;
        env.stop().await;
        if std::env::var_os("BENCH_KEEP_DIR").is_some() {
            eprintln!("logs kept in {}", dir.keep().display());
        }
        result
    })
}
