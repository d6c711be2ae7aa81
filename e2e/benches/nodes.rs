//! Node autoscaling: how long a burst of pods that do not fit takes to be scheduled through
//! the node-group autoscaler (the environment's stand-in for the cluster-autoscaler, against
//! the real Cluster API core manager and the environment's provider), against the same burst
//! where the nodes already exist, measured in the same run. Two Cluster API clusters of the
//! same class: `fixed` runs 3 nodes; `scaled` has an autoscaled pool (`min 1, max 3`). Each
//! round bursts 3 pods of 20 CPUs (one per 32-CPU kwok node) into each, reports both times
//! with their ratio, then the time `scaled` takes to shrink back to 1 node once the pods go.
//! Run with `cargo bench -p qleetos-e2e --bench nodes` (`BENCH_NODES_ROUNDS`, default 3).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use qleetos_e2e::cluster::{Cluster, ClusterSpec};
use qleetos_e2e::cluster_api::node_scaler::{MAX_SIZE, MIN_SIZE, NodeScaler, NodeScalerSettings};
use qleetos_e2e::cluster_api::{
    self, CLUSTER_CLASS, ClusterApi, DEFAULT_NAMESPACE, WORKER_CLASS, kubeconfig_secret_name,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(100);
const BURST: usize = 3;

/// A topology Cluster with one pool: 3 nodes, or autoscaled between 1 and 3.
fn cluster(name: &str, autoscaled: bool) -> Value {
    let mut pool = json!({"class": WORKER_CLASS, "name": "workers"});
    if autoscaled {
        pool["metadata"] = json!({"annotations": {MIN_SIZE: "1", MAX_SIZE: "3"}});
    } else {
        pool["replicas"] = json!(BURST);
    }
    json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": name, "namespace": DEFAULT_NAMESPACE},
        "spec": {"topology": {"classRef": {"name": CLUSTER_CLASS}, "version": "v1.36.2",
            "controlPlane": {"replicas": 1},
            "workers": {"machineDeployments": [pool]}}}})
}

/// Polls `check` until it yields, failing after [`TIMEOUT`] with `what`.
async fn until<F, Fut>(what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    while !check().await? {
        if started.elapsed() > TIMEOUT {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(started.elapsed())
}

/// Creates the Cluster and returns a client for it once it has `nodes` Ready nodes.
async fn provision(management: &Client, name: &str, autoscaled: bool) -> Result<Client> {
    cluster_api::api(management, Some(DEFAULT_NAMESPACE), "Cluster")
        .create(
            &PostParams::default(),
            &serde_json::from_value(cluster(name, autoscaled))?,
        )
        .await?;
    let secrets: Api<Secret> = Api::namespaced(management.clone(), DEFAULT_NAMESPACE);
    let secret_name = kubeconfig_secret_name(name);
    until(&secret_name, || async {
        Ok(secrets.get_opt(&secret_name).await?.is_some())
    })
    .await?;
    let secret = secrets.get(&secret_name).await?;
    let bytes = secret
        .data
        .and_then(|mut d| d.remove("value"))
        .context("kubeconfig value")?;
    let kubeconfig = Kubeconfig::from_yaml(std::str::from_utf8(&bytes.0)?)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    let nodes = if autoscaled { 1 } else { BURST };
    until(&format!("{name} with {nodes} nodes"), || {
        ready_nodes_are(&client, nodes)
    })
    .await?;
    Ok(client)
}

async fn ready_nodes_are(client: &Client, count: usize) -> Result<bool> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let ready = nodes.items.iter().filter(|node| {
        let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    Ok(nodes.items.len() == count && ready.count() == count)
}

fn burst() -> Deployment {
    serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "burst", "namespace": "default"},
        "spec": {"replicas": BURST, "selector": {"matchLabels": {"app": "burst"}},
            "template": {"metadata": {"labels": {"app": "burst"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                    "resources": {"requests": {"cpu": "20", "memory": "1Gi"}}}]}}}}))
    .expect("a Deployment")
}

/// Creates the burst and returns how long until every pod of it is bound to a node; then
/// deletes it and waits until its pods are gone.
async fn burst_scheduled(client: &Client) -> Result<Duration> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    deployments.create(&PostParams::default(), &burst()).await?;
    until("the burst scheduled", || async {
        let list = pods
            .list(&ListParams::default().labels("app=burst"))
            .await?;
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        Ok(bound == BURST)
    })
    .await?;
    let scheduled = started.elapsed();
    deployments
        .delete("burst", &DeleteParams::foreground())
        .await?;
    until("the burst gone", || async {
        let list = pods
            .list(&ListParams::default().labels("app=burst"))
            .await?;
        Ok(list.items.is_empty())
    })
    .await?;
    Ok(scheduled)
}

async fn bench(management: &Client, rounds: usize) -> Result<()> {
    let fixed = provision(management, "fixed", false).await?;
    let scaled = provision(management, "scaled", true).await?;
    println!(
        "burst of {BURST} pods of 20 CPUs, one per 32-CPU node; node scaler scan 1 s, scale-down after 5 s empty"
    );
    println!("round  nodes there (s)  through the node scaler (s)  ratio  back to 1 node (s)");
    for round in 1..=rounds {
        let baseline = burst_scheduled(&fixed).await?;
        let through_scaler = burst_scheduled(&scaled).await?;
        let shrink = until("scaled back at 1 node", || ready_nodes_are(&scaled, 1)).await?;
        println!(
            "{round:>5}  {:>15.2}  {:>27.2}  {:>5.1}  {:>18.2}",
            baseline.as_secs_f64(),
            through_scaler.as_secs_f64(),
            through_scaler.as_secs_f64() / baseline.as_secs_f64(),
            shrink.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let rounds = std::env::var("BENCH_NODES_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::Builder::new()
            .prefix("qleetos-bench-")
            .tempdir()?;
        let management =
            Cluster::start(ClusterSpec::management("bench-management"), dir.path()).await?;
        let cluster_api = ClusterApi::start(
            &dir.path().join("cluster-api"),
            &management,
            DEFAULT_NAMESPACE,
        )
        .await?;
        let client = management.client().await?;
        let scaler = NodeScaler::start(client.clone(), NodeScalerSettings::default());
        let result = bench(&client, rounds).await;
        drop(scaler);
        for name in ["fixed", "scaled"] {
            cluster_api::api(&client, Some(DEFAULT_NAMESPACE), "Cluster")
                .delete(name, &DeleteParams::default())
                .await
                .ok();
        }
        until("the Clusters gone", || async {
            Ok(
                cluster_api::api(&client, Some(DEFAULT_NAMESPACE), "Cluster")
                    .list(&ListParams::default())
                    .await?
                    .items
                    .is_empty(),
            )
        })
        .await?;
        cluster_api.stop().await;
        management.stop().await;
        result
    })
}
