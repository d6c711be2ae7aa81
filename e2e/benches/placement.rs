//! Placement by capacity and cost: the same Workloads (2 CPU each) placed on three runtimes
//! of one region with 1, 2 and 3 kwok nodes (32 CPU each), priced 0.05, 0.10 and 0.30 per
//! node-hour (0.10 per cluster-hour), under `Spread` and under `[Cheapest, Pack]`; the
//! baseline, measured in the same run, is the same Workloads without preferences (the first
//! runtime by name, capacity ignored). Reports runtimes used, the cost per hour of the
//! runtimes used, and apply→Ready time with its ratio to the baseline. Run with
//! `cargo bench -p qleetos-e2e --bench placement` (`BENCH_PLACEMENT_WORKLOADS`, default 30).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use qleetos_crds::{Conditions, KubernetesRuntime, Workload};
use qleetos_e2e::environment::{Environment, RuntimeSpec, ensure_namespace};
use qleetos_e2e::operator::OperatorOptions;
use serde_json::{Value, json};

const NS: &str = "bench-placement";
const REGION: &str = "bench-1";
const TIMEOUT: Duration = Duration::from_secs(300);
/// (name, nodes, price per node-hour)
const RUNTIMES: [(&str, usize, &str); 3] = [
    ("a-big", 3, "0.30"),
    ("b-mid", 2, "0.10"),
    ("c-cheap", 1, "0.05"),
];

fn runtimes() -> Vec<RuntimeSpec> {
    RUNTIMES
        .iter()
        .map(|(name, nodes, price)| RuntimeSpec::priced(name, REGION, *nodes, price))
        .collect()
}

fn workload(name: &str, preferences: &Value) -> Value {
    let mut placement = json!({"regions": [REGION]});
    if !preferences.is_null() {
        placement["preferences"] = preferences.clone();
    }
    json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"placement": placement, "manifests": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                        "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]}}}}]}})
}

fn is_ready(workload: &Workload) -> bool {
    let status = workload.status.clone().unwrap_or_default();
    status.is_ready() && status.observed_generation == workload.metadata.generation
}

async fn until_all(api: &Api<Workload>, count: usize, check: fn(&Workload) -> bool) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let workloads = api.list(&ListParams::default()).await?.items;
        if workloads.len() == count && workloads.iter().all(check) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {count} Workloads");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Outcome {
    ready_after: Duration,
    runtimes_used: BTreeSet<String>,
    cost_per_hour: f64,
}

/// Places `count` Workloads with `preferences`, measures, and deletes them again.
async fn place(client: &Client, count: usize, preferences: &Value) -> Result<Outcome> {
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    for i in 0..count {
        let name = format!("w{i}");
        let params = PatchParams::apply("bench").force();
        api.patch(&name, &params, &Patch::Apply(&workload(&name, preferences)))
            .await?;
    }
    until_all(&api, count, is_ready).await?;
    let ready_after = started.elapsed();
    let runtimes_used: BTreeSet<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|w| w.status.as_ref())
        .flat_map(|s| s.placements.iter().map(|p| p.runtime.clone()))
        .collect();
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    let mut cost_per_hour = 0.0;
    for name in &runtimes_used {
        let runtime = runtimes.get(name).await?;
        let capacity = runtime.status.and_then(|s| s.capacity);
        let cost = capacity.and_then(|c| c.cost_per_hour).unwrap_or_default();
        cost_per_hour += cost.parse::<f64>().unwrap_or_default();
    }
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    until_all(&api, 0, |_| true).await?;
    Ok(Outcome {
        ready_after,
        runtimes_used,
        cost_per_hour,
    })
}

async fn bench(env: &Environment, count: usize) -> Result<()> {
    let client = env.management_client().await?;
    ensure_namespace(&client, NS).await?;
    println!(
        "{count} Workloads of 2 CPU; runtimes {RUNTIMES:?} (name, 32-CPU nodes, price per node-hour)"
    );
    println!(
        "placement           runtimes used  cost/h of those  apply->Ready (s)  ratio to baseline"
    );
    // A first round creates each runtime's namespace and tenant identity: not measured.
    place(&client, count, &Value::Null).await?;
    let baseline = place(&client, count, &Value::Null).await?;
    let strategies = [
        ("baseline (by name)", Value::Null),
        ("Spread", json!({"prefer": ["Spread"]})),
        ("Cheapest, Pack", json!({"prefer": ["Cheapest", "Pack"]})),
    ];
    for (label, preferences) in strategies {
        let outcome = if preferences.is_null() {
            None
        } else {
            Some(place(&client, count, &preferences).await?)
        };
        let outcome = outcome.as_ref().unwrap_or(&baseline);
        println!(
            "{label:<18}  {:>13}  {:>15.4}  {:>16.2}  {:>17.2}",
            outcome.runtimes_used.len(),
            outcome.cost_per_hour,
            outcome.ready_after.as_secs_f64(),
            outcome.ready_after.as_secs_f64() / baseline.ready_after.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let count = std::env::var("BENCH_PLACEMENT_WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::Builder::new()
            .prefix("qleetos-bench-")
            .tempdir()?;
        let mut env = Environment::start(dir.path(), runtimes()).await?;
        env.start_operator(OperatorOptions::default()).await?;
        let result = bench(&env, count).await;
        env.stop().await;
        result
    })
}
