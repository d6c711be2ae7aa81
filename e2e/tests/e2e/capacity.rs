//! Capacity and cost (issue 28), in an environment of its own: three runtimes of one region
//! with 1, 2 and 3 kwok nodes (32 CPU each) and different prices. Each reports what it holds
//! and costs; 30 Workloads of 2 CPU packed onto the cheapest land on fewer runtimes than
//! spread ones, and no runtime ever holds more than it has (its scheduler runs every pod); a
//! Workload that fits nowhere overflows to a cluster provisioned from the next pool's profile
//! and says so, or, with nowhere to overflow, says what each runtime had free. Once room is
//! back, the overflowed Workload stays where it is until a planned rebalance
//! (`qleetctl rebalance`) moves it home, and the cluster it leaves is retired.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, ensure};
use kube::Client;
use kube::api::{Api, ListParams};
use qleetos_crds::{Conditions, KubernetesRuntime, WorkloadInstance};
use qleetos_e2e::environment::{Environment, RuntimeSpec};
use serde_json::{Value, json};

use crate::found::wait_event;
use crate::provisioning::{apply_runtime_profile, delete_runtime_profile, local_profile};
use crate::qleetctl::expect;
use crate::support::*;

const REGION: &str = "capacity-1";
const NS: &str = "capacity-e2e";
const BURST: &str = "burst";
const BURST_RUNTIME: &str = "burst-capacity-1";
const WORKLOADS: usize = 30;
const MILLICORES_PER_NODE: i64 = 32_000;

/// (name, nodes, price per node-hour)
const RUNTIMES: [(&str, usize, &str); 3] = [
    ("cap-cheap", 1, "0.05"),
    ("cap-mid", 2, "0.10"),
    ("cap-big", 3, "0.30"),
];

fn runtimes() -> Vec<RuntimeSpec> {
    RUNTIMES
        .iter()
        .map(|(name, nodes, price)| {
            let mut spec = RuntimeSpec::priced(name, REGION, *nodes, price);
            spec.labels.insert("pool".to_owned(), "own".to_owned());
            spec
        })
        .collect()
}

pub async fn in_own_environment(dir: PathBuf) -> Result<()> {
    let env = crate::start_environment(dir, runtimes()).await?;
    let result = capacity_and_cost_decide_placement(&env).await;
    env.stop().await;
    result
}

async fn capacity_and_cost_decide_placement(env: &Environment) -> Result<()> {
    let client = env.management_client().await?;
    lab_namespace(&client, NS).await?;
    runtimes_report_capacity_and_cost(&client).await?;
    let both = json!({"regions": [REGION], "preferences": {"prefer": ["Pack", "Spread"]}});
    let refused = apply_workload(&client, NS, &sized("both", 1, "1", both)).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(
        message.contains("prefer cannot hold both Pack and Spread"),
        "the API server refuses Pack with Spread: {message:?}"
    );
    let metrics = env.operators()[0].metrics().await?;
    for series in [
        r#"qleetos_runtime_allocatable{runtime="cap-mid",resource="cpu"} 64000"#,
        r#"qleetos_runtime_cost_per_hour{runtime="cap-big"} 1.0"#,
    ] {
        ensure!(
            metrics.contains(series),
            "no {series} in the metrics:\n{metrics}"
        );
    }

    let packed = place_all(&client, "pack", json!({"prefer": ["Cheapest", "Pack"]})).await?;
    let expected = BTreeMap::from([("cap-cheap".to_owned(), 16), ("cap-mid".to_owned(), 14)]);
    ensure!(
        packed == expected,
        "packed onto the cheapest, each filled before the next: {packed:?}"
    );
    remove_all(&client, "pack").await?;
    let spread = place_all(&client, "spread", json!({"prefer": ["Spread"]})).await?;
    ensure!(
        spread.len() == 3 && packed.len() < spread.len(),
        "spread uses every runtime, packed {packed:?} fewer: {spread:?}"
    );

    overflows_to_a_provisioned_cluster(&client).await?;
    says_what_is_free_when_nothing_fits(&client).await?;

    remove_all(&client, "spread").await?;
    a_planned_rebalance_brings_it_home(env, &client).await?;
    delete_workload(&client, NS, "huge").await?;
    delete_runtime_profile(&client, BURST).await
}

/// Each runtime: 32 CPU per node allocatable, and 0.10 + nodes × its node-hour price.
async fn runtimes_report_capacity_and_cost(client: &Client) -> Result<()> {
    let api: Api<KubernetesRuntime> = Api::all(client.clone());
    for (name, nodes, price) in RUNTIMES {
        let expected_cost = 0.10 + nodes as f64 * price.parse::<f64>()?;
        eventually(&format!("{name}'s capacity"), TIMEOUT, || async {
            let runtime = api.get(name).await?;
            let capacity = runtime.status.and_then(|s| s.capacity);
            let Some(capacity) = capacity else {
                return Ok(None);
            };
            ensure!(
                capacity.allocatable.cpu_millicores == nodes as i64 * MILLICORES_PER_NODE,
                "{name}: {capacity:?}"
            );
            let cost: f64 = capacity.cost_per_hour.as_deref().unwrap_or("0").parse()?;
            ensure!((cost - expected_cost).abs() < 1e-6, "{name}: {capacity:?}");
            Ok(Some(()))
        })
        .await?;
    }
    Ok(())
}

/// Workload `name`: a Deployment `name` of `replicas` pods of `cpu` CPU each.
fn sized(name: &str, replicas: i64, cpu: &str, placement: Value) -> Value {
    let manifests = vec![json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                    "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}}}})];
    let mut workload = workload(name, manifests, placement);
    workload["metadata"]["namespace"] = json!(NS);
    workload
}

/// Places `prefix-0` … `prefix-29` (2 CPU each) and counts the Workloads on each runtime,
/// once every one is Ready (its pod scheduled and running).
async fn place_all(
    client: &Client,
    prefix: &str,
    preferences: Value,
) -> Result<BTreeMap<String, usize>> {
    let placement = json!({"regions": [REGION], "preferences": preferences});
    for index in 0..WORKLOADS {
        let name = format!("{prefix}-{index}");
        apply_workload(client, NS, &sized(&name, 1, "2", placement.clone())).await?;
    }
    let mut placed = BTreeMap::new();
    for index in 0..WORKLOADS {
        let name = format!("{prefix}-{index}");
        wait_workload_ready(client, NS, &name).await?;
        for runtime in placed_on(&instances_of(client, NS, &name).await?) {
            *placed.entry(runtime).or_insert(0) += 1;
        }
    }
    for (runtime, count) in &placed {
        let nodes = RUNTIMES.iter().find(|r| r.0 == runtime).map_or(0, |r| r.1);
        ensure!(
            *count as i64 * 2_000 <= nodes as i64 * MILLICORES_PER_NODE,
            "{runtime} holds more than it has: {placed:?}"
        );
    }
    Ok(placed)
}

/// Deletes the Workloads of `prefix`; done when their instances are gone and the own
/// runtimes measure nothing requested.
async fn remove_all(client: &Client, prefix: &str) -> Result<()> {
    for index in 0..WORKLOADS {
        delete_workload(client, NS, &format!("{prefix}-{index}")).await?;
    }
    let instances: Api<WorkloadInstance> = Api::namespaced(client.clone(), NS);
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    eventually(&format!("the {prefix} Workloads gone"), TIMEOUT, || async {
        let left = instances.list(&ListParams::default()).await?.items;
        let requested: i64 = runtimes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|r| {
                RUNTIMES
                    .iter()
                    .any(|own| r.metadata.name.as_deref() == Some(own.0))
            })
            .filter_map(|r| r.status.as_ref()?.capacity.as_ref())
            .map(|c| c.requested.cpu_millicores)
            .sum();
        let ours = |i: &WorkloadInstance| {
            let name = i.metadata.name.as_deref().unwrap_or_default();
            name.starts_with(&format!("{prefix}-"))
        };
        Ok((!left.iter().any(ours) && requested == 0).then_some(()))
    })
    .await
}

/// 9 pods of 10 CPU fit none of the own runtimes while the spread Workloads hold a third of
/// each: a cluster is provisioned from the overflow pool's profile (4 nodes), an Event says
/// so, and the pods run there.
async fn overflows_to_a_provisioned_cluster(client: &Client) -> Result<()> {
    apply_runtime_profile(client, &local_profile(BURST, REGION, 4)).await?;
    let preferences = json!({"overflow": [
        {"runtimeSelector": {"matchLabels": {"pool": "own"}}},
        {"runtimeProfile": BURST}]});
    let placement = json!({"regions": [REGION], "provision": "IfNeeded",
        "preferences": preferences});
    apply_workload(client, NS, &sized("huge", 9, "10", placement)).await?;
    let note = wait_event(client, NS, "huge", "Normal Overflow").await?;
    ensure!(
        note.contains(&format!(
            "provisioning runtime {BURST_RUNTIME} from KubernetesRuntimeProfile {BURST}"
        )) && note.contains("no runtime in capacity-1 has room for 90.00 CPU"),
        "{note}"
    );
    wait_workload_ready(client, NS, "huge").await?;
    let on = placed_on(&instances_of(client, NS, "huge").await?);
    ensure!(
        on == [BURST_RUNTIME],
        "huge runs only where it fits: {on:?}"
    );
    Ok(())
}

/// Without an overflow pool, a Workload no runtime has room for is not placed, and its
/// status says what it needs and what each runtime has free.
async fn says_what_is_free_when_nothing_fits(client: &Client) -> Result<()> {
    let placement = json!({"regions": [REGION], "preferences": {}});
    apply_workload(client, NS, &sized("enormous", 20, "10", placement)).await?;
    let message = wait_workload_not_ready(client, NS, "enormous", "InsufficientCapacity").await?;
    ensure!(
        message.contains("no runtime in capacity-1 has room for 200.00 CPU")
            && message.contains("cap-big has"),
        "{message}"
    );
    ensure!(
        instances_of(client, NS, "enormous").await?.is_empty(),
        "enormous was placed somewhere"
    );
    delete_workload(client, NS, "enormous").await
}

/// With the own runtimes empty again, `huge` (90 CPU) would now fit cap-big (96), yet stays
/// on the overflow cluster: placements do not move by themselves. `qleetctl rebalance` plans
/// the move (changing nothing); `--apply` makes it: cap-big first, the overflow placement
/// removed once that is Ready, and the overflow cluster, left with nothing, retired.
async fn a_planned_rebalance_brings_it_home(env: &Environment, client: &Client) -> Result<()> {
    let on = placed_on(&instances_of(client, NS, "huge").await?);
    ensure!(on == [BURST_RUNTIME], "huge moved by itself: {on:?}");
    let kubeconfig = env.management.kubeconfig_path();
    let args = ["rebalance", "huge", "-n", NS, "-o", "json"];
    let plan: Value = serde_json::from_str(&expect(kubeconfig, &args, 0).await?.stdout)?;
    let placements = &plan["status"]["placements"];
    let planned = |runtime: &str| {
        placements
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["runtime"] == runtime)
            .cloned()
            .unwrap_or_default()
    };
    let creates_huge = planned("cap-big")["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["kind"] == "Deployment" && o["name"] == "huge" && o["action"] == "Create");
    ensure!(
        creates_huge,
        "the plan places huge on cap-big: {placements}"
    );
    let leaving = planned(BURST_RUNTIME);
    let message = leaving["message"].as_str().unwrap_or_default();
    ensure!(
        leaving["action"] == "Delete"
            && message.contains("left with no placement")
            && message.contains(&format!("KubernetesRuntimeProfile {BURST}, it is retired")),
        "the plan leaves the overflow cluster, to be retired: {leaving}"
    );
    let on = placed_on(&instances_of(client, NS, "huge").await?);
    ensure!(on == [BURST_RUNTIME], "planning moved huge: {on:?}");

    let applied = expect(kubeconfig, &["rebalance", "huge", "-n", NS, "--apply"], 0).await?;
    ensure!(
        applied.stdout.contains("rebalance requested"),
        "{}",
        applied.stdout
    );
    let note = wait_event(client, NS, "huge", "Normal Rebalanced").await?;
    ensure!(
        note.contains(&format!("moved from {BURST_RUNTIME} to cap-big")),
        "{note}"
    );
    let workloads: Api<qleetos_crds::Workload> = Api::namespaced(client.clone(), NS);
    eventually("huge Ready on cap-big alone", TIMEOUT, || async {
        let instances = instances_of(client, NS, "huge").await?;
        let ready = workloads
            .get("huge")
            .await?
            .status
            .is_some_and(|s| s.is_ready());
        Ok((placed_on(&instances) == ["cap-big"] && ready).then_some(()))
    })
    .await?;
    let rebalance = workloads
        .get("huge")
        .await?
        .status
        .and_then(|s| s.rebalance);
    ensure!(
        rebalance.as_ref().map(|r| r.state) == Some(qleetos_crds::RebalanceState::Done),
        "{rebalance:?}"
    );
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    eventually("the overflow cluster it left retired", TIMEOUT, || async {
        Ok(runtimes
            .get_opt(BURST_RUNTIME)
            .await?
            .is_none()
            .then_some(()))
    })
    .await
}
