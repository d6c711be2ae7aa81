//! QleetOS convergence throughput against the physical limit of the API servers (issues 3
//! and 13).
//!
//! For each size N (`BENCH_SIZES`, default `100,1000`) the bench makes these runs, each
//! `IN_FLIGHT` Workloads (or objects) at once:
//! - `baseline`: N ConfigMaps applied (server-side apply) straight to the two workload
//!   clusters with a bare kube client, alternating like the Workloads: one write per object.
//! - `minimum`: with the operators stopped, a bare kube client makes exactly the writes
//!   QleetOS cannot avoid for one Workload, in sequence: (a) apply the Workload to the
//!   management cluster, (b) apply its WorkloadInstance (owned by the Workload), (c) apply the
//!   ConfigMap in the runtime of the Workload's region, (d) write the instance's status
//!   (Ready, `RolledOut`, the applied ConfigMap) and (e) the Workload's status (Ready, one
//!   placement). It is what a perfect operator would cost: no reads, no retries, no waiting
//!   in a queue. By construction it makes 4 management writes and 1 runtime write per
//!   Workload. Its Workloads and instances are deleted afterwards.
//! - `qleetos xR` for each R in `BENCH_REPLICAS` (default `1,2`): R fresh operator processes
//!   (`--resync=10m`, otherwise production defaults: `--concurrency=8`), N ConfigMap-only
//!   Workloads (regions alternating eu-west-1 / us-east-1) applied to the management cluster;
//!   the run ends when all N report Ready at their generation (seen by a watch). Every
//!   Workload is deleted, with the operators running, before the next run.
//! - `qleetos xR Rk` for each k in `BENCH_NATS_REPLICAS` (default `1`: one nats-server, rows
//!   labelled `qleetos xR`): when a k above 1 is asked for, NATS is a cluster of that many
//!   servers and each run stores the work queues and buckets on k of them
//!   (`--nats-replicas=k`, scaled in place between runs), so `R1` and `R3` rows compare the
//!   cost of replication on the same cluster.
//!
//! Columns:
//! - *time s*: first call to last call (baseline, minimum) or to all-Ready (qleetos);
//!   `timeout ready/N` when the run did not finish within `BENCH_TIMEOUT_SECS` (default 900 s
//!   per 1000 objects, at least 900 s); `error: ...` when it failed after retries.
//! - *obj/s*: N / time. *vs base*, *vs min*: obj/s over that of the baseline, of the minimum.
//! - *p50 ms*, *p99 ms*: per object, from the start of its first call to its ConfigMap being
//!   in the runtime: the end of the apply call (baseline, minimum) or the first watch event
//!   for it in the runtime (qleetos).
//! - *mgmt w/wl*, *mgmt r/wl*, *rt w/wl*: API requests per Workload, from the
//!   `apiserver_request_total` counters of the management API server and of the runtimes'
//!   (summed), scraped right before the first call and right after the end of the run
//!   (cleanup excluded). Reads are GET, LIST and WATCH (a WATCH counts when it ends); writes
//!   are POST, PUT, PATCH, APPLY, DELETE and DELETECOLLECTION. Lease renewals (leader
//!   election of the clusters' own controllers, kwok's node heartbeats) are left out: they
//!   tick whatever the load. The bench's own calls are included (its one Workload apply per
//!   Workload, its watches, its list calls).
//! - *retries*: transient API errors the bench retried during the run, its setup and cleanup
//!   (a dropped pooled connection, 429, 5xx, 409 on a forced apply), up to 10 tries each.
//! - *peak RSS MiB*: `VmHWM` of each operator process at the end of the run (operators are
//!   restarted for every run).
//!
//! Nothing is asserted, and a run that fails is reported as such while the others go on.
//! Run with `make bench` (which builds the release binaries first) or
//! `cargo build --release --workspace --bins && cargo bench -p qleetos-e2e --bench queue`.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt as _};
use qleetos_crds::{
    AppliedObject, Condition, Conditions as _, PlacementStatus, Reason, RuntimeRef, Workload,
    WorkloadInstance, WorkloadInstanceSpec, WorkloadInstanceStatus, WorkloadRef, WorkloadStatus,
};
use qleetos_e2e::environment::{Environment, default_runtimes};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::*;

const DEFAULT_SIZES: [usize; 2] = [100, 1000];
const DEFAULT_REPLICAS: [usize; 2] = [1, 2];
const REGIONS: [&str; 2] = ["eu-west-1", "us-east-1"];
/// A run may take this long per object, and at least `MIN_RUN_TIMEOUT`.
const RUN_TIMEOUT_PER_OBJECT: Duration = Duration::from_millis(900);
const MIN_RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Deleting a run's objects may take this long per object, and at least `MIN_CLEANUP_TIMEOUT`.
const CLEANUP_TIMEOUT_PER_OBJECT: Duration = Duration::from_millis(600);
const MIN_CLEANUP_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long the runtime watchers may lag behind the Ready statuses.
const SIGHTING_GRACE: Duration = Duration::from_secs(10);
const CLEANUP_POLL: Duration = Duration::from_secs(1);
/// The label the operator puts on the instances of a Workload.
const WORKLOAD_LABEL: &str = "qleetos.io/workload";

#[derive(Debug)]
struct Settings {
    sizes: Vec<usize>,
    replicas: Vec<usize>,
    /// `BENCH_NATS_REPLICAS`: copies of the work queues, one run each.
    nats_replicas: Vec<usize>,
    /// `BENCH_TIMEOUT_SECS`, replacing the timeout scaled with N.
    run_timeout: Option<Duration>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let run_timeout = match std::env::var("BENCH_TIMEOUT_SECS") {
            Ok(secs) => Some(Duration::from_secs(
                secs.trim().parse().context("BENCH_TIMEOUT_SECS")?,
            )),
            Err(_) => None,
        };
        Ok(Self {
            sizes: positive_list("BENCH_SIZES", &DEFAULT_SIZES)?,
            replicas: positive_list("BENCH_REPLICAS", &DEFAULT_REPLICAS)?,
            nats_replicas: positive_list("BENCH_NATS_REPLICAS", &[1])?,
            run_timeout,
        })
    }

    /// Servers of the NATS cluster the runs need; 1: a single server.
    fn nats_servers(&self) -> usize {
        self.nats_replicas.iter().copied().max().unwrap_or(1)
    }

    fn run_timeout(&self, n: usize) -> Duration {
        self.run_timeout
            .unwrap_or_else(|| scaled(RUN_TIMEOUT_PER_OBJECT, n, MIN_RUN_TIMEOUT))
    }
}

// ---------------------------------------------------------------------------------------
// Retries

// ---------------------------------------------------------------------------------------
// API request counters

// ---------------------------------------------------------------------------------------
// Rows

/// Which kind of run a row measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Baseline,
    Minimum,
    Qleetos {
        replicas: usize,
        /// Copies of the work queues, and whether NATS is a cluster (rows say `Rk` then).
        nats_replicas: usize,
        clustered: bool,
    },
}

impl Run {
    fn label(self) -> String {
        match self {
            Run::Baseline => "baseline".into(),
            Run::Minimum => "minimum".into(),
            Run::Qleetos {
                replicas,
                nats_replicas,
                clustered,
            } if clustered => format!("qleetos x{replicas} R{nats_replicas}"),
            Run::Qleetos { replicas, .. } => format!("qleetos x{replicas}"),
        }
    }
}

/// What a run that did not fail measured.
#[derive(Debug)]
struct Measurement {
    elapsed: Duration,
    /// Objects that finished (applied, or Ready); below N only after a timeout.
    completed: usize,
    timed_out: bool,
    latencies: Vec<Duration>,
    peak_rss_kib: Vec<u64>,
    /// Each operator's resident memory once every Workload is Ready.
    rss_after_kib: Vec<u64>,
    requests: Option<RequestTotals>,
}

impl Measurement {
    /// Every object done in `elapsed`.
    fn finished(n: usize, elapsed: Duration, latencies: Vec<Duration>) -> Self {
        Self {
            elapsed,
            completed: n,
            timed_out: false,
            latencies,
            peak_rss_kib: Vec::new(),
            rss_after_kib: Vec::new(),
            requests: None,
        }
    }

    fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Debug)]
struct Row {
    n: usize,
    run: Run,
    retries: usize,
    /// The measurement, or why the run failed.
    result: Result<Measurement, String>,
}

impl Row {
    fn throughput(&self) -> Option<f64> {
        self.result.as_ref().ok().map(Measurement::throughput)
    }
}

// ---------------------------------------------------------------------------------------
// Objects

fn config_map_name(i: usize) -> String {
    format!("settings-w-{i}")
}

fn config_map(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": config_map_name(i)},
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

// ---------------------------------------------------------------------------------------
// Baseline

/// N ConfigMaps applied straight to the workload clusters, alternating like the Workloads.
async fn baseline(
    env: &Environment,
    n: usize,
    timeout: Duration,
    retries: &Retries,
) -> Result<Measurement> {
    let namespace = format!("baseline-{n}");
    let mut apis = Vec::new();
    for client in runtime_clients(env).await? {
        create_namespace(&client, &namespace, retries).await?;
        apis.push(Api::<ConfigMap>::namespaced(client, &namespace));
    }
    let params = forced_apply(FIELD_MANAGER);
    let apply = |i: usize| {
        let (api, params) = (&apis[i % apis.len()], &params);
        async move {
            let (name, patch) = (config_map_name(i), Patch::Apply(config_map(i)));
            with_retries(retries, || api.patch(&name, params, &patch))
                .await
                .with_context(|| format!("applying ConfigMap {name}"))?;
            Ok(())
        }
    };
    let servers = ApiServers::of(env).await?;
    let before = servers.scrape(retries).await?;
    let start = Instant::now();
    let calls = tokio::time::timeout(timeout, apply_all(n, apply))
        .await
        .context("baseline applies timed out")??;
    let elapsed = start.elapsed();
    let latencies = calls.iter().map(|call| call.elapsed).collect();
    Ok(Measurement {
        requests: servers.requests_since(before, retries).await,
        ..Measurement::finished(n, elapsed, latencies)
    })
}

// ---------------------------------------------------------------------------------------
// Minimum

/// The runtime a Workload of the minimum run goes to, and its ConfigMaps there.
#[derive(Debug)]
struct Target {
    runtime: String,
    region: String,
    config_maps: Api<ConfigMap>,
}

/// The management APIs of the minimum run and the runtime of each region, in `REGIONS` order.
#[derive(Debug)]
struct MinimumApis {
    workloads: Api<Workload>,
    instances: Api<WorkloadInstance>,
    targets: Vec<Target>,
}

impl MinimumApis {
    async fn new(
        env: &Environment,
        client: &Client,
        namespace: &str,
        retries: &Retries,
    ) -> Result<Self> {
        let mut targets = Vec::new();
        for region in REGIONS {
            let (spec, cluster) = env
                .runtimes
                .iter()
                .find(|(spec, _)| spec.region == region)
                .with_context(|| format!("no runtime in region {region}"))?;
            let runtime_client = cluster.client().await?;
            // QleetOS applies into the runtime namespace named like the Workload's.
            create_namespace(&runtime_client, namespace, retries).await?;
            targets.push(Target {
                runtime: spec.name.clone(),
                region: spec.region.clone(),
                config_maps: Api::namespaced(runtime_client, namespace),
            });
        }
        Ok(Self {
            workloads: Api::namespaced(client.clone(), namespace),
            instances: Api::namespaced(client.clone(), namespace),
            targets,
        })
    }
}

/// What the operator's Workload controller applies for `workload` on `runtime` (its
/// `apply_instance`), named `<workload>-<runtime>`.
fn instance_for(workload: &Workload, runtime: &str) -> Result<WorkloadInstance> {
    let name = workload.name_any();
    let mut instance = WorkloadInstance::new(
        &format!("{name}-{runtime}"),
        WorkloadInstanceSpec {
            workload_ref: Some(WorkloadRef {
                name: name.clone(),
                generation: workload.metadata.generation,
            }),
            runtime_ref: RuntimeRef {
                name: runtime.to_owned(),
            },
            manifests: workload.spec.manifests.clone(),
            chart: workload.spec.chart.clone(),
            images: workload.spec.images.clone(),
            expose: workload.spec.expose.clone(),
            needs: workload.spec.needs.clone(),
        },
    );
    instance.metadata.labels = Some([(WORKLOAD_LABEL.to_owned(), name)].into());
    let owner = workload
        .controller_owner_ref(&())
        .context("applied Workload has no uid")?;
    instance.metadata.owner_references = Some(vec![owner]);
    Ok(instance)
}

/// The status of an instance whose one ConfigMap was applied and is ready.
fn rolled_out_status(
    instance: &WorkloadInstance,
    runtime: &str,
    config_map: &ConfigMap,
) -> Result<WorkloadInstanceStatus> {
    let generation = instance.metadata.generation;
    let message = format!("1 objects applied to runtime {runtime}; every workload is available");
    // From JSON, so optional fields added to the inventory entry need no change here.
    let applied: AppliedObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "namespace": config_map.namespace(), "name": config_map.name_any(),
        "uid": config_map.uid(),
    }))?;
    Ok(WorkloadInstanceStatus {
        conditions: vec![
            Condition::ready(true, Reason::RolledOut, message).with_generation(generation),
        ],
        observed_generation: generation,
        applied_objects: vec![applied],
        applied_count: 1,
        ..WorkloadInstanceStatus::default()
    })
}

/// The status of a Workload whose one placement is Ready.
fn ready_status(workload: &Workload, instance: &str, target: &Target) -> WorkloadStatus {
    let generation = workload.metadata.generation;
    let ready = Condition::ready(true, Reason::AllPlacementsReady, "ready on 1 runtime(s)");
    WorkloadStatus {
        conditions: vec![ready.with_generation(generation)],
        observed_generation: generation,
        placements: vec![PlacementStatus {
            runtime: target.runtime.clone(),
            region: target.region.clone(),
            instance: instance.to_owned(),
            ready: true,
            reason: Reason::RolledOut.into(),
            ..PlacementStatus::default()
        }],
        ready_placements: Some("1/1".into()),
        ..WorkloadStatus::default()
    }
}

/// A server-side apply of `status` on the status subresource of a `K`.
fn status_patch<K: Resource<DynamicType = ()>>(status: &impl Serialize) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    }))
}

/// The five writes of Workload `i`, in sequence; returns when its ConfigMap was applied.
async fn write_minimum(apis: &MinimumApis, i: usize, retries: &Retries) -> Result<Instant> {
    let target = &apis.targets[i % apis.targets.len()];
    let user = forced_apply(FIELD_MANAGER);
    let qleetos = forced_apply(qleetos_crds::FIELD_MANAGER);
    let name = format!("w-{i}");

    let patch = Patch::Apply(workload(i));
    let workload = with_retries(retries, || apis.workloads.patch(&name, &user, &patch))
        .await
        .with_context(|| format!("applying Workload {name}"))?;

    let instance = instance_for(&workload, &target.runtime)?;
    let instance_name = instance.name_any();
    let patch = Patch::Apply(&instance);
    let instance = with_retries(retries, || {
        apis.instances.patch(&instance_name, &qleetos, &patch)
    })
    .await
    .with_context(|| format!("applying WorkloadInstance {instance_name}"))?;

    let (config_map_name, patch) = (config_map_name(i), Patch::Apply(config_map(i)));
    let config_map = with_retries(retries, || {
        target.config_maps.patch(&config_map_name, &qleetos, &patch)
    })
    .await
    .with_context(|| format!("applying ConfigMap {config_map_name} to {}", target.runtime))?;
    let applied_at = Instant::now();

    let status = rolled_out_status(&instance, &target.runtime, &config_map)?;
    let patch = status_patch::<WorkloadInstance>(&status);
    with_retries(retries, || {
        apis.instances
            .patch_status(&instance_name, &qleetos, &patch)
    })
    .await
    .with_context(|| format!("writing the status of WorkloadInstance {instance_name}"))?;

    let patch = status_patch::<Workload>(&ready_status(&workload, &instance_name, target));
    with_retries(retries, || {
        apis.workloads.patch_status(&name, &qleetos, &patch)
    })
    .await
    .with_context(|| format!("writing the status of Workload {name}"))?;
    Ok(applied_at)
}

/// The writes QleetOS cannot avoid, made by a bare client with the operators stopped.
async fn minimum(
    env: &mut Environment,
    n: usize,
    timeout: Duration,
    retries: &Retries,
) -> Result<Measurement> {
    let client = env.management_client().await?;
    // The previous run's Workloads have finalizers: delete them while operators still run.
    delete_all_workloads(&client, retries).await?;
    env.stop_operators().await;
    let namespace = format!("minimum-{n}");
    create_namespace(&client, &namespace, retries).await?;
    let apis = MinimumApis::new(env, &client, &namespace, retries).await?;
    let servers = ApiServers::of(env).await?;
    let measured = measure_minimum(&apis, &servers, n, timeout, retries).await;
    if let Err(error) = delete_minimum_objects(&apis, n, retries).await {
        eprintln!("cleanup of {namespace}: {error:#}");
    }
    measured
}

async fn measure_minimum(
    apis: &MinimumApis,
    servers: &ApiServers,
    n: usize,
    timeout: Duration,
    retries: &Retries,
) -> Result<Measurement> {
    let before = servers.scrape(retries).await?;
    let start = Instant::now();
    let writes = apply_all(n, |i| write_minimum(apis, i, retries));
    let calls = tokio::time::timeout(timeout, writes)
        .await
        .context("minimum writes timed out")??;
    let elapsed = start.elapsed();
    let latencies = calls
        .iter()
        .map(|call| call.output.saturating_duration_since(call.start))
        .collect();
    Ok(Measurement {
        requests: servers.requests_since(before, retries).await,
        ..Measurement::finished(n, elapsed, latencies)
    })
}

/// Deletes the minimum run's Workloads and instances (the instances explicitly, as the
/// management cluster may not collect garbage). The Workloads got QleetOS's finalizer at
/// admission, and no operator runs to release it: the bench takes it off first.
async fn delete_minimum_objects(apis: &MinimumApis, n: usize, retries: &Retries) -> Result<()> {
    let deadline = Instant::now() + scaled(CLEANUP_TIMEOUT_PER_OBJECT, n, MIN_CLEANUP_TIMEOUT);
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let params = PatchParams::default();
    for i in 0..n {
        let name = format!("w-{i}");
        let patched = with_retries(retries, || {
            apis.workloads.patch(&name, &params, &no_finalizers)
        })
        .await;
        match patched {
            // A run that timed out did not create them all.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            other => {
                other.with_context(|| format!("taking the finalizer off Workload {name}"))?;
            }
        }
    }
    delete_collection(&apis.workloads, retries).await?;
    delete_collection(&apis.instances, retries).await?;
    let gone = wait_until_empty(&apis.workloads, deadline, retries).await?
        && wait_until_empty(&apis.instances, deadline, retries).await?;
    if !gone {
        bail!("objects still there after the cleanup timeout");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Cleanup

async fn delete_collection<K>(api: &Api<K>, retries: &Retries) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let (params, all) = (DeleteParams::default(), ListParams::default());
    with_retries(retries, || api.delete_collection(&params, &all))
        .await
        .with_context(|| format!("deleting every {}", std::any::type_name::<K>()))?;
    Ok(())
}

/// Polls until `api` lists nothing; false if `deadline` passes first.
async fn wait_until_empty<K>(api: &Api<K>, deadline: Instant, retries: &Retries) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let one = ListParams::default().limit(1);
    loop {
        let left = with_retries(retries, || api.list_metadata(&one)).await?;
        if left.items.is_empty() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(CLEANUP_POLL).await;
    }
}

/// Deletes every Workload (with the operators still running, so finalizers complete) and
/// waits until all are gone, so the next run starts from an empty management cluster.
async fn delete_all_workloads(client: &Client, retries: &Retries) -> Result<()> {
    let all: Api<Workload> = Api::all(client.clone());
    let every = ListParams::default();
    let existing = with_retries(retries, || all.list_metadata(&every))
        .await
        .context("listing Workloads")?
        .items;
    if existing.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    // One DELETE per Workload, not one DELETECOLLECTION: marking thousands of Workloads with
    // finalizers for deletion in one request outlasts the API server's 60 s request timeout,
    // which then closes the connection.
    futures::stream::iter(&existing)
        .map(|workload| {
            let api = Api::<Workload>::namespaced(
                client.clone(),
                &workload.namespace().unwrap_or_default(),
            );
            let name = workload.name_any();
            let params = DeleteParams::default();
            async move {
                match with_retries(retries, || api.delete(&name, &params)).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(error) => {
                        Err(anyhow::Error::new(error).context(format!("deleting Workload {name}")))
                    }
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    let timeout = scaled(
        CLEANUP_TIMEOUT_PER_OBJECT,
        existing.len(),
        MIN_CLEANUP_TIMEOUT,
    );
    if wait_until_empty(&all, start + timeout, retries).await? {
        eprintln!(
            "cleanup: deleted the previous {} Workloads in {:.1?}",
            existing.len(),
            start.elapsed()
        );
    } else {
        eprintln!("cleanup: Workloads still deleting after {timeout:?}; going on");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// QleetOS

type Sightings = Arc<Mutex<HashMap<String, Instant>>>;

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

/// Watchers on the ConfigMaps of `namespace` in every runtime.
async fn watch_runtimes(env: &Environment, namespace: &str, seen: &Sightings) -> Result<Watches> {
    let mut watches = Watches::default();
    for client in runtime_clients(env).await? {
        let api = Api::<ConfigMap>::namespaced(client, namespace);
        watches
            .0
            .push(spawn_watch(api, record_sightings(seen.clone())).await?);
    }
    Ok(watches)
}

/// Apply-call start to first sighting in the runtime, for every Workload seen there.
fn apply_to_runtime(calls: &[Timed<()>], seen: &HashMap<String, Instant>) -> Vec<Duration> {
    calls
        .iter()
        .enumerate()
        .filter_map(|(i, call)| {
            seen.get(&config_map_name(i))
                .map(|at| at.saturating_duration_since(call.start))
        })
        .collect()
}

/// N Workloads through QleetOS with `replicas` fresh operator processes, their work queues
/// on `nats_replicas` servers.
async fn qleetos(
    env: &mut Environment,
    n: usize,
    (replicas, nats_replicas): (usize, usize),
    timeout: Duration,
    retries: &Retries,
) -> Result<Measurement> {
    let client = env.management_client().await?;
    delete_all_workloads(&client, retries).await?;
    restart_operators(env, replicas, nats_replicas).await?;
    wait_runtimes_ready(&client, retries).await?;
    let namespace = format!("bench-{n}-x{replicas}-r{nats_replicas}");
    create_namespace(&client, &namespace, retries).await?;
    let seen = Sightings::default();
    let mut watches = watch_runtimes(env, &namespace, &seen).await?;
    let readiness = Arc::new(Mutex::new(Readiness::default()));
    let workloads = Api::<Workload>::namespaced(client.clone(), &namespace);
    let readiness_watch = spawn_watch(workloads.clone(), record_readiness(readiness.clone(), n));
    watches.0.push(readiness_watch.await?);
    let params = forced_apply(FIELD_MANAGER);
    let apply = |i: usize| {
        let (api, params) = (&workloads, &params);
        async move {
            let (name, patch) = (format!("w-{i}"), Patch::Apply(workload(i)));
            with_retries(retries, || api.patch(&name, params, &patch))
                .await
                .with_context(|| format!("applying Workload {name}"))?;
            Ok(())
        }
    };
    let servers = ApiServers::of(env).await?;
    let before = servers.scrape(retries).await?;
    let start = Instant::now();
    let deadline = start + timeout;
    let calls = tokio::time::timeout(timeout, apply_all(n, apply))
        .await
        .context("Workload applies timed out")??;
    let all_ready_at = poll_until(deadline, || lock(&readiness).all_ready_at).await;
    let requests = servers.requests_since(before, retries).await;
    let grace = deadline.min(Instant::now() + SIGHTING_GRACE);
    poll_until(grace, || (lock(&seen).len() >= n).then_some(())).await;
    let peak_rss_kib = operators_memory_kib(env, "VmHWM");
    let rss_after_kib = operators_memory_kib(env, "VmRSS");
    drop(watches);
    let latencies = apply_to_runtime(&calls, &lock(&seen));
    Ok(Measurement {
        elapsed: all_ready_at.map_or(timeout, |at| at - start),
        completed: all_ready_at.map_or_else(|| lock(&readiness).ready.len(), |_| n),
        timed_out: all_ready_at.is_none(),
        latencies,
        peak_rss_kib,
        rss_after_kib,
        requests,
    })
}

// ---------------------------------------------------------------------------------------
// Table

#[derive(Debug, Clone, Copy)]
enum Align {
    Left,
    Right,
}

const COLUMNS: [(&str, usize, Align); 13] = [
    ("N", 5, Align::Right),
    ("run", 11, Align::Left),
    ("time s", 12, Align::Right),
    ("obj/s", 8, Align::Right),
    ("vs base", 8, Align::Right),
    ("vs min", 8, Align::Right),
    ("p50 ms", 9, Align::Right),
    ("p99 ms", 9, Align::Right),
    ("mgmt w/wl", 9, Align::Right),
    ("mgmt r/wl", 9, Align::Right),
    ("rt w/wl", 7, Align::Right),
    ("retries", 7, Align::Right),
    ("peak RSS MiB", 14, Align::Right),
];

fn table_line(cells: &[String]) -> String {
    let cells: Vec<String> = cells
        .iter()
        .zip(COLUMNS)
        .map(|(cell, (_, width, align))| match align {
            Align::Left => format!("{cell:<width$}"),
            Align::Right => format!("{cell:>width$}"),
        })
        .collect();
    format!("| {} |", cells.join(" | "))
}

fn table_header() -> String {
    let names: Vec<String> = COLUMNS.iter().map(|(name, _, _)| (*name).into()).collect();
    let rules: Vec<String> = COLUMNS
        .iter()
        .map(|(_, width, align)| match align {
            Align::Left => format!(":{}", "-".repeat(width + 1)),
            Align::Right => format!("{}:", "-".repeat(width + 1)),
        })
        .collect();
    format!("{}\n|{}|", table_line(&names), rules.join("|"))
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

/// `row`'s throughput over that of the `reference` run of the same N, when both have one.
fn ratio(row: &Row, rows: &[Row], reference: Run) -> String {
    let reference = rows
        .iter()
        .find(|r| r.n == row.n && r.run == reference)
        .and_then(Row::throughput);
    match (row.throughput(), reference) {
        (Some(ours), Some(theirs)) if row.run != Run::Baseline => {
            let ratio = ours / theirs;
            if ratio < 0.01 {
                format!("{ratio:.4}")
            } else {
                format!("{ratio:.3}")
            }
        }
        _ => "-".into(),
    }
}

/// Requests per Workload, one decimal; `-` when they could not be read.
fn per_workload(
    row: &Row,
    requests: Option<&RequestTotals>,
    pick: fn(&RequestTotals) -> f64,
) -> String {
    requests.map_or_else(|| "-".into(), |r| format!("{:.1}", pick(r) / row.n as f64))
}

fn format_row(row: &Row, rows: &[Row]) -> String {
    let measurement = row.result.as_ref().ok();
    let time = match &row.result {
        Err(message) => format!("error: {message}"),
        Ok(m) if m.timed_out => format!("timeout {}/{}", m.completed, row.n),
        Ok(m) => format!("{:.2}", m.elapsed.as_secs_f64()),
    };
    let latencies = measurement.map_or(&[][..], |m| &m.latencies);
    let requests = measurement.and_then(|m| m.requests.as_ref());
    let vs_min = match row.run {
        Run::Qleetos { .. } => ratio(row, rows, Run::Minimum),
        Run::Baseline | Run::Minimum => "-".into(),
    };
    table_line(&[
        row.n.to_string(),
        row.run.label(),
        time,
        row.throughput()
            .map_or_else(|| "-".into(), |t| format!("{t:.1}")),
        ratio(row, rows, Run::Baseline),
        vs_min,
        millis(percentile(latencies, 0.50)),
        millis(percentile(latencies, 0.99)),
        per_workload(row, requests, |r| r.management.writes),
        per_workload(row, requests, |r| r.management.reads),
        per_workload(row, requests, |r| r.runtimes.writes),
        row.retries.to_string(),
        rss_column(measurement.map_or(&[][..], |m| &m.peak_rss_kib)),
    ])
}

fn print_table(rows: &[Row]) {
    println!(
        "\nConfigMap-only Workloads, {IN_FLIGHT} in flight; latency = first call to ConfigMap in runtime; \
         w/wl, r/wl = API writes, reads per Workload (leases left out)"
    );
    println!("{}", table_header());
    for row in rows {
        println!("{}", format_row(row, rows));
    }
    println!("\nManagement writes per Workload, by request (the bench's own applies included)");
    for row in rows.iter().filter(|row| row.run != Run::Baseline) {
        if let Some(requests) = row.result.as_ref().ok().and_then(|m| m.requests.as_ref()) {
            println!("{}", writes_line(row, &requests.management_writes));
        }
    }
    println!("\nOperator memory once every Workload is Ready (VmRSS), MiB");
    for row in rows
        .iter()
        .filter(|row| matches!(row.run, Run::Qleetos { .. }))
    {
        if let Ok(measurement) = &row.result {
            let rss = rss_column(&measurement.rss_after_kib);
            println!("N={} {}: {rss}", row.n, row.run.label());
        }
    }
}

/// `N=1000 qleetos x1: APPLY workloads 1.00, PATCH workloads/status 1.02, ...`, the largest
/// first.
fn writes_line(row: &Row, writes: &BTreeMap<String, f64>) -> String {
    let mut writes: Vec<(&String, f64)> = writes.iter().map(|(r, c)| (r, *c)).collect();
    writes.sort_by(|a, b| b.1.total_cmp(&a.1));
    let per_workload: Vec<String> = writes
        .iter()
        .map(|(request, count)| format!("{request} {:.2}", count / row.n as f64))
        .collect();
    format!(
        "N={} {}: {}",
        row.n,
        row.run.label(),
        per_workload.join(", ")
    )
}

// ---------------------------------------------------------------------------------------
// Main

/// Every run of every size, in table order; a failed run becomes a failed row.
async fn bench(env: &mut Environment, settings: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    for &n in &settings.sizes {
        let timeout = settings.run_timeout(n);
        let clustered = settings.nats_servers() > 1;
        let qleetos_runs = settings.nats_replicas.iter().flat_map(|&nats_replicas| {
            settings.replicas.iter().map(move |&replicas| Run::Qleetos {
                replicas,
                nats_replicas,
                clustered,
            })
        });
        for run in [Run::Baseline, Run::Minimum]
            .into_iter()
            .chain(qleetos_runs)
        {
            let retries = Retries::default();
            let result = match run {
                Run::Baseline => baseline(env, n, timeout, &retries).await,
                Run::Minimum => minimum(env, n, timeout, &retries).await,
                Run::Qleetos {
                    replicas,
                    nats_replicas,
                    ..
                } => qleetos(env, n, (replicas, nats_replicas), timeout, &retries).await,
            };
            rows.push(Row {
                n,
                run,
                retries: retries.count(),
                result: result.map_err(|error| short_message(&error)),
            });
            if let Some(row) = rows.last() {
                eprintln!("{}", format_row(row, &rows));
            }
        }
    }
    rows
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let settings = Settings::from_env()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = bench_dir()?;
        let mut env = match settings.nats_servers() {
            1 => Environment::start(dir.path(), default_runtimes()).await?,
            servers => {
                Environment::start_with_nats_cluster(dir.path(), default_runtimes(), servers)
                    .await?
            }
        };
        let rows = bench(&mut env, &settings).await;
        env.stop().await;
        print_table(&rows);
        Ok(())
    })
}
