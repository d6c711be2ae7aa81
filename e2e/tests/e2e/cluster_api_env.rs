//! Cluster API in the test environment: the real core manager and the test provider turn a
//! topology Cluster into a real local cluster, and deleting the Cluster removes all of it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use qleetos_e2e::cluster::{Cluster, ClusterSpec};
use qleetos_e2e::cluster_api::{
    self, CLUSTER_CLASS, ClusterApi, DEFAULT_NAMESPACE, WORKER_CLASS, kubeconfig_secret_name,
};
use serde_json::{Value, json};

const CLUSTER: &str = "capi-e2e";
const WORKERS: &str = "workers";
const VERSION: &str = "v1.36.2";
const MIN_SIZE: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
const MAX_SIZE: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";
const PROVISION_TIMEOUT: Duration = Duration::from_secs(300);
const DELETE_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_secs(1);

pub async fn cluster_api_provisions_a_real_local_cluster_and_removes_it(
    dir: PathBuf,
) -> Result<()> {
    let management = Cluster::start(ClusterSpec::management("capi-management"), &dir)
        .await
        .context("starting the management cluster")?;
    let result =
        match ClusterApi::start(&dir.join("cluster-api"), &management, DEFAULT_NAMESPACE).await {
            Ok(mut capi) => {
                let result = provision_and_remove(&mut capi, &management).await;
                if result.is_err() {
                    eprintln!(
                        "Cluster API logs: {} and {}",
                        capi.manager_log().display(),
                        capi.provider_log().display()
                    );
                }
                capi.stop().await;
                result
            }
            Err(e) => Err(e).context("starting Cluster API"),
        };
    management.stop().await;
    result
}

async fn provision_and_remove(capi: &mut ClusterApi, management: &Cluster) -> Result<()> {
    let client = management.client().await?;
    let clusters = cluster_api::api(&client, Some(DEFAULT_NAMESPACE), "Cluster");
    let cluster: DynamicObject = serde_json::from_value(cluster_object())?;
    clusters.create(&PostParams::default(), &cluster).await?;

    let started = Instant::now();
    wait_available(capi, &clusters).await?;
    eprintln!("Cluster {CLUSTER} Available after {:?}", started.elapsed());
    ensure!(
        capi.running_local_clusters() == 1,
        "expected one local cluster"
    );
    let processes = capi.local_cluster_processes(DEFAULT_NAMESPACE, CLUSTER);
    ensure!(!processes.is_empty(), "no process of {CLUSTER} found");

    let workload = workload_client(&client).await?;
    check_workers(&client, workload).await?;

    let deleting = Instant::now();
    clusters.delete(CLUSTER, &DeleteParams::default()).await?;
    wait_gone(capi, &clusters).await?;
    eprintln!("Cluster {CLUSTER} deleted after {:?}", deleting.elapsed());
    ensure!(
        capi.running_local_clusters() == 0,
        "the provider still runs local clusters"
    );
    let leftovers = capi.local_cluster_processes(DEFAULT_NAMESPACE, CLUSTER);
    ensure!(
        leftovers.is_empty(),
        "processes of {CLUSTER} still run: {leftovers:?} (before deletion: {processes:?})"
    );
    let secrets: Api<Secret> = Api::namespaced(client, DEFAULT_NAMESPACE);
    ensure!(
        secrets
            .get_opt(&kubeconfig_secret_name(CLUSTER))
            .await?
            .is_none(),
        "the kubeconfig Secret outlived the Cluster"
    );
    Ok(())
}

/// A client built from Secret `<cluster>-kubeconfig`, checked against the real API server.
async fn workload_client(management: &Client) -> Result<Client> {
    let secrets: Api<Secret> = Api::namespaced(management.clone(), DEFAULT_NAMESPACE);
    let secret = secrets.get(&kubeconfig_secret_name(CLUSTER)).await?;
    let kubeconfig = secret
        .data
        .and_then(|mut data| data.remove("value"))
        .context("the kubeconfig Secret has no key `value`")?;
    let kubeconfig = Kubeconfig::from_yaml(&String::from_utf8(kubeconfig.0)?)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let workload = Client::try_from(config)?;
    let version = workload.apiserver_version().await?;
    ensure!(
        version.git_version == VERSION,
        "workload API server reports {}",
        version.git_version
    );
    Ok(workload)
}

/// Two Running worker Machines whose Nodes exist in the workload cluster, and a
/// MachineDeployment carrying the autoscaler bounds.
async fn check_workers(management: &Client, workload: Client) -> Result<()> {
    let selector = format!(
        "cluster.x-k8s.io/cluster-name={CLUSTER},topology.cluster.x-k8s.io/deployment-name={WORKERS}"
    );
    let machines = cluster_api::api(management, Some(DEFAULT_NAMESPACE), "Machine")
        .list(&ListParams::default().labels(&selector))
        .await?;
    ensure!(
        machines.items.len() == 2,
        "{} worker Machines, expected 2",
        machines.items.len()
    );
    let nodes: Api<Node> = Api::all(workload);
    for machine in &machines.items {
        let phase = machine.data["status"]["phase"].as_str().unwrap_or_default();
        ensure!(
            phase == "Running",
            "Machine {} is {phase}",
            machine.name_any()
        );
        let node = machine.data["status"]["nodeRef"]["name"]
            .as_str()
            .with_context(|| format!("Machine {} has no nodeRef", machine.name_any()))?;
        nodes
            .get(node)
            .await
            .with_context(|| format!("Node {node} in the workload cluster"))?;
    }

    let deployments = cluster_api::api(management, Some(DEFAULT_NAMESPACE), "MachineDeployment")
        .list(&ListParams::default().labels(&selector))
        .await?;
    let [deployment] = deployments.items.as_slice() else {
        bail!(
            "{} MachineDeployments for {WORKERS}, expected 1",
            deployments.items.len()
        );
    };
    let annotations = deployment.annotations();
    ensure!(
        annotations.get(MIN_SIZE).map(String::as_str) == Some("1")
            && annotations.get(MAX_SIZE).map(String::as_str) == Some("3"),
        "MachineDeployment {} lacks the autoscaler annotations: {annotations:?}",
        deployment.name_any()
    );
    Ok(())
}

/// The Cluster QleetOS's operator creates: ClusterClass topology, one control plane
/// replica, one MachineDeployment with autoscaler bounds.
fn cluster_object() -> Value {
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {"name": CLUSTER, "namespace": DEFAULT_NAMESPACE},
        "spec": {
            "topology": {
                "classRef": {"name": CLUSTER_CLASS},
                "version": VERSION,
                "controlPlane": {"replicas": 1},
                "workers": {
                    "machineDeployments": [{
                        "class": WORKER_CLASS,
                        "name": WORKERS,
                        "replicas": 2,
                        "metadata": {"annotations": {MIN_SIZE: "1", MAX_SIZE: "3"}},
                    }],
                },
            },
        },
    })
}

/// Waits until conditions `Available` and `TopologyReconciled` are True, failing with the
/// Cluster's conditions.
async fn wait_available(capi: &mut ClusterApi, clusters: &Api<DynamicObject>) -> Result<()> {
    let deadline = Instant::now() + PROVISION_TIMEOUT;
    loop {
        capi.check_running()?;
        let cluster = clusters.get(CLUSTER).await?;
        let conditions = &cluster.data["status"]["conditions"];
        let is_true = |type_: &str| {
            conditions
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        };
        if is_true("Available") && is_true("TopologyReconciled") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "Cluster {CLUSTER} not Available after {PROVISION_TIMEOUT:?}; conditions:\n{}",
                describe(conditions)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_gone(capi: &mut ClusterApi, clusters: &Api<DynamicObject>) -> Result<()> {
    let deadline = Instant::now() + DELETE_TIMEOUT;
    while let Some(cluster) = clusters.get_opt(CLUSTER).await? {
        capi.check_running()?;
        if Instant::now() > deadline {
            bail!(
                "Cluster {CLUSTER} still exists {DELETE_TIMEOUT:?} after its deletion; conditions:\n{}",
                describe(&cluster.data["status"]["conditions"])
            );
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// One line per condition: `type=status reason: message`.
fn describe(conditions: &Value) -> String {
    conditions
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "  {}={} {}: {}",
                c["type"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
