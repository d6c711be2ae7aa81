//! Time to failover: Workloads on eu-west with a failover policy to us-east; eu-west's API
//! server is stopped and the clock runs until every Workload is Ready again through its
//! stand-in on us-east. The baseline, measured in the same run, is the same Workloads
//! applied straight to us-east (apply to Ready). The failover time minus the tolerance is
//! QleetOS's own reaction (probe, re-placement, apply); its ratio to the baseline says what
//! the move costs over placing anew. Then the time to return once eu-west is back. Run with
//! `cargo bench -p qleetos-e2e --bench failover` (`BENCH_ROUNDS`, default 3;
//! `BENCH_FAILOVER_WORKLOADS`, default 20).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use qleetos_crds::{Conditions, Workload};
use qleetos_e2e::environment::{Environment, default_runtimes, ensure_namespace};
use qleetos_e2e::operator::OperatorOptions;
use serde_json::{Value, json};

const NS: &str = "bench-failover";
const TIMEOUT: Duration = Duration::from_secs(300);
const TOLERANCE: Duration = Duration::from_secs(5);

fn workload(name: &str, placement: Value) -> Value {
    json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"placement": placement, "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
             "data": {"k": "v"}}]}})
}

fn on_eu_west_with_failover() -> Value {
    json!({"regions": ["eu-west-1"], "failover": {
        "after": format!("{}s", TOLERANCE.as_secs()), "regions": ["us-east-1"]}})
}

/// Polls `check` over the namespace's Workloads until it holds for all `count` of them.
async fn until_all(
    api: &Api<Workload>,
    count: usize,
    what: &str,
    check: impl Fn(&Workload) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let workloads = api.list(&ListParams::default()).await?.items;
        if workloads.len() == count && workloads.iter().all(&check) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_ready(workload: &Workload) -> bool {
    let status = workload.status.clone().unwrap_or_default();
    status.is_ready() && status.observed_generation == workload.metadata.generation
}

fn on_stand_in(workload: &Workload) -> bool {
    is_ready(workload)
        && workload.status.iter().any(|s| {
            s.placements
                .iter()
                .any(|p| p.replaces.as_deref() == Some("eu-west") && p.ready)
        })
}

fn back_home(workload: &Workload) -> bool {
    is_ready(workload)
        && workload
            .status
            .iter()
            .all(|s| s.placements.iter().all(|p| p.runtime == "eu-west"))
}

async fn apply_all(api: &Api<Workload>, count: usize, placement: &Value) -> Result<()> {
    for i in 0..count {
        let name = format!("w{i}");
        let params = PatchParams::apply("bench").force();
        let wanted = workload(&name, placement.clone());
        api.patch(&name, &params, &Patch::Apply(&wanted)).await?;
    }
    Ok(())
}

async fn delete_all(api: &Api<Workload>) -> Result<()> {
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    until_all(api, 0, "Workloads gone", |_| true).await
}

struct Round {
    placed_fresh: Duration,
    failed_over: Duration,
    returned: Duration,
}

async fn round(env: &mut Environment, client: &Client, count: usize) -> Result<Round> {
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    apply_all(&api, count, &json!({"regions": ["us-east-1"]})).await?;
    until_all(&api, count, "Ready on us-east", is_ready).await?;
    let placed_fresh = started.elapsed();
    delete_all(&api).await?;

    apply_all(&api, count, &on_eu_west_with_failover()).await?;
    until_all(&api, count, "Ready on eu-west", is_ready).await?;
    let stopped = Instant::now();
    let eu_west = env.runtime_mut("eu-west").expect("eu-west runtime");
    eu_west.stop_apiserver().await?;
    until_all(&api, count, "Ready on the stand-in", on_stand_in).await?;
    let failed_over = stopped.elapsed();
    let restarted = Instant::now();
    let eu_west = env.runtime_mut("eu-west").expect("eu-west runtime");
    eu_west.start_apiserver().await?;
    until_all(&api, count, "back on eu-west", back_home).await?;
    let returned = restarted.elapsed();
    delete_all(&api).await?;
    Ok(Round {
        placed_fresh,
        failed_over,
        returned,
    })
}

async fn bench(env: &mut Environment, rounds: usize, count: usize) -> Result<()> {
    let client = env.management_client().await?;
    ensure_namespace(&client, NS).await?;
    println!(
        "{count} ConfigMap Workloads, failover.after {}s, runtime probe every 2s",
        TOLERANCE.as_secs()
    );
    println!(
        "round  apply->Ready on us-east (s)  stop->Ready on us-east (s)  minus tolerance (s)  ratio  restart->back on eu-west (s)"
    );
    for n in 1..=rounds {
        let r = round(env, &client, count).await?;
        let reaction = r.failed_over.saturating_sub(TOLERANCE);
        println!(
            "{n:>5}  {:>27.2}  {:>26.2}  {:>19.2}  {:>5.2}  {:>29.2}",
            r.placed_fresh.as_secs_f64(),
            r.failed_over.as_secs_f64(),
            reaction.as_secs_f64(),
            reaction.as_secs_f64() / r.placed_fresh.as_secs_f64(),
            r.returned.as_secs_f64()
        );
    }
    Ok(())
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let rounds = env_number("BENCH_ROUNDS", 3);
    let count = env_number("BENCH_FAILOVER_WORKLOADS", 20);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::Builder::new()
            .prefix("qleetos-bench-")
            .tempdir()?;
        let mut env = Environment::start(dir.path(), default_runtimes()).await?;
        env.start_operator(OperatorOptions::default()).await?;
        let result = bench(&mut env, rounds, count).await;
        env.stop().await;
        result
    })
}
