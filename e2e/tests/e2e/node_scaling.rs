//! Issue 28: nodes scale for real. A cluster QleetOS provisions through the real Cluster API
//! core manager, with an autoscaled pool (`min: 1, max: 3`), grows to 3 nodes when the
//! Workload's pods do not fit and shrinks back to 1 when they go. The node-group autoscaler
//! is the environment's stand-in for the cluster-autoscaler
//! ([`qleetos_e2e::cluster_api::node_scaler`]); Cluster API and the environment's provider
//! create and remove the Machines and Nodes.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use qleetos_crds::KubernetesRuntime;
use qleetos_e2e::cluster_api::node_scaler::{MAX_SIZE, MIN_SIZE, NodeScaler, NodeScalerSettings};
use qleetos_e2e::cluster_api::{self, CLUSTER_CLASS, ClusterApi, DEFAULT_NAMESPACE};
use qleetos_e2e::environment::Environment;
use serde_json::{Value, json};

use crate::provisioning::{
    PROVISION_TIMEOUT, apply_runtime_profile, delete_runtime_profile, provisioned,
    provisioned_client,
};
use crate::support::*;

const NS: &str = "node-scaling";
const PROFILE: &str = "scaled";
const REGION: &str = "capi-scaled";
const RUNTIME: &str = "scaled-capi-scaled";
const POOL: &str = "workers";
/// A kwok node offers 32 CPUs: one pod of 20 per node.
const POD_CPU: &str = "20";

pub async fn in_own_environment(dir: PathBuf) -> Result<()> {
    let env = crate::start_environment(dir, Vec::new()).await?;
    let mut capi = ClusterApi::start(
        &env.dir().join("cluster-api"),
        &env.management,
        DEFAULT_NAMESPACE,
    )
    .await
    .context("starting Cluster API")?;
    let scaler = NodeScaler::start(
        env.management_client().await?,
        NodeScalerSettings::default(),
    );
    let result = nodes_follow_the_pods(&env, &capi).await;
    drop(scaler);
    if result.is_err() {
        eprintln!(
            "Cluster API logs: {} and {}",
            capi.manager_log().display(),
            capi.provider_log().display()
        );
    }
    let running = capi.check_running();
    capi.stop().await;
    env.stop().await;
    result.and(running.map_err(Into::into))
}

fn profile() -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntimeProfile",
        "metadata": {"name": PROFILE},
        "spec": {"provider": "ClusterAPI", "regions": [REGION], "default": true,
                 "kubernetesVersion": "v1.36.2",
                 "nodePools": [{"name": POOL, "count": 1, "autoscaling": {"min": 1, "max": 3}}],
                 "idle": {"afterSeconds": 0},
                 "clusterAPI": {"clusterClass": CLUSTER_CLASS, "namespace": DEFAULT_NAMESPACE}}
    })
}

/// Deployment `app`: `replicas` pods of 20 CPUs each.
fn app(replicas: i64) -> Value {
    provisioned(
        "app",
        REGION,
        vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                        "resources": {"requests": {"cpu": POD_CPU, "memory": "1Gi"}}}]}}}}),
        ],
    )
}

async fn nodes_follow_the_pods(env: &Environment, capi: &ClusterApi) -> Result<()> {
    let client = env.management_client().await?;
    apply_runtime_profile(&client, &profile()).await?;
    apply_lab_workload(&client, NS, &app(3)).await?;
    // Ready means 3 pods available: the cluster starts with one node that holds one.
    wait_ready_within(&client, "app").await?;
    let workload = provisioned_client(&client, RUNTIME).await?;
    check_group(&client, &workload, 3).await?;
    pods_on_distinct_nodes(&workload, 3).await?;
    waited_for_room(&workload).await?;
    runtime_allocatable_cpu(&client, 3 * 32_000).await?;

    apply_lab_workload(&client, NS, &app(1)).await?;
    wait_ready_within(&client, "app").await?;
    eventually(
        "the node group back at its minimum",
        PROVISION_TIMEOUT,
        || {
            let (client, workload) = (client.clone(), workload.clone());
            async move { Ok(check_group(&client, &workload, 1).await.ok()) }
        },
    )
    .await?;
    pods_on_distinct_nodes(&workload, 1).await?;
    runtime_allocatable_cpu(&client, 32_000).await?;

    delete_workload(&client, NS, "app").await?;
    eventually("runtime and Cluster gone", PROVISION_TIMEOUT, || async {
        let runtime = Api::<KubernetesRuntime>::all(client.clone())
            .get_opt(RUNTIME)
            .await?;
        let cluster = cluster_api::api(&client, Some(DEFAULT_NAMESPACE), "Cluster")
            .get_opt(RUNTIME)
            .await?;
        Ok((runtime.is_none() && cluster.is_none()).then_some(()))
    })
    .await?;
    eventually("no local cluster left", TIMEOUT, || async {
        Ok((capi.running_local_clusters() == 0).then_some(()))
    })
    .await?;
    delete_runtime_profile(&client, PROFILE).await
}

async fn wait_ready_within(client: &Client, name: &str) -> Result<()> {
    crate::provisioning::ready_with_history(client, NS, name)
        .await
        .map(drop)
}

/// The pool's MachineDeployment at `replicas` with its bounds, as many Machines and Nodes,
/// and the Cluster's topology leaving the count to the autoscaler.
async fn check_group(management: &Client, workload: &Client, replicas: usize) -> Result<()> {
    let selector = format!(
        "cluster.x-k8s.io/cluster-name={RUNTIME},topology.cluster.x-k8s.io/deployment-name={POOL}"
    );
    let deployments = cluster_api::api(management, Some(DEFAULT_NAMESPACE), "MachineDeployment")
        .list(&ListParams::default().labels(&selector))
        .await?;
    let [deployment] = deployments.items.as_slice() else {
        anyhow::bail!("{} MachineDeployments", deployments.items.len());
    };
    let annotations = deployment.annotations();
    ensure!(
        annotations.get(MIN_SIZE).map(String::as_str) == Some("1")
            && annotations.get(MAX_SIZE).map(String::as_str) == Some("3"),
        "bounds: {annotations:?}"
    );
    let wanted = i64::try_from(replicas)?;
    ensure!(
        deployment.data["spec"]["replicas"] == wanted,
        "MachineDeployment replicas {}",
        deployment.data["spec"]["replicas"]
    );
    let machines = cluster_api::api(management, Some(DEFAULT_NAMESPACE), "Machine")
        .list(&ListParams::default().labels(&selector))
        .await?;
    ensure!(
        machines.items.len() == replicas,
        "{} Machines",
        machines.items.len()
    );
    let nodes = Api::<Node>::all(workload.clone())
        .list(&ListParams::default())
        .await?;
    ensure!(nodes.items.len() == replicas, "{} Nodes", nodes.items.len());
    let cluster = cluster_api::api(management, Some(DEFAULT_NAMESPACE), "Cluster")
        .get(RUNTIME)
        .await?;
    let pools = &cluster.data["spec"]["topology"]["workers"]["machineDeployments"];
    ensure!(
        pools[0]["replicas"].is_null(),
        "QleetOS set the autoscaled pool's count: {pools}"
    );
    Ok(())
}

/// Every pod of `app` Running, each on its own node.
async fn pods_on_distinct_nodes(workload: &Client, count: usize) -> Result<()> {
    let pods = Api::<Pod>::namespaced(workload.clone(), NS)
        .list(&ListParams::default().labels("app=app"))
        .await?;
    let running: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    let nodes: BTreeSet<&str> = running
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
        .collect();
    ensure!(
        running.len() == count && nodes.len() == count,
        "{} pods Running on nodes {nodes:?}, expected {count} on as many",
        running.len()
    );
    Ok(())
}

/// The scheduler found no room at first, and the node scaler grew the pool from 1 for
/// the pods that waited (it tells them, as the cluster-autoscaler does).
async fn waited_for_room(workload: &Client) -> Result<()> {
    let events = Api::<Event>::namespaced(workload.clone(), NS)
        .list(&ListParams::default())
        .await?;
    let noted = |reason: &str| {
        events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.message.clone())
            .collect::<Vec<_>>()
    };
    ensure!(
        !noted("FailedScheduling").is_empty(),
        "no FailedScheduling Event: the pods never waited for nodes"
    );
    let scale_ups = noted("TriggeredScaleUp");
    // Pods come one by one, so the pool may grow 1->3 or 1->2, then 2->3.
    let grew = |step: &str| scale_ups.iter().any(|m| m.contains(step));
    ensure!(
        grew(" 1->") && grew("->3 (max: 3)"),
        "no scale-up from 1 to 3 told to the pods: {scale_ups:?}"
    );
    Ok(())
}

/// QleetOS's probe sees the nodes: the runtime's allocatable CPU becomes `millicores`.
async fn runtime_allocatable_cpu(client: &Client, millicores: i64) -> Result<()> {
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    eventually(
        &format!("{RUNTIME} reporting {millicores}m allocatable"),
        PROVISION_TIMEOUT,
        || async {
            let runtime = runtimes.get(RUNTIME).await?;
            let cpu = runtime
                .status
                .and_then(|s| s.capacity)
                .map(|c| c.allocatable.cpu_millicores);
            Ok((cpu == Some(millicores)).then_some(()))
        },
    )
    .await
}
