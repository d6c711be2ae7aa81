//! Autoscaling for real (issue 28), in an environment of its own: a runtime whose kwok
//! simulates CPU use and whose metrics-server serves it. A Workload's HorizontalPodAutoscaler
//! (in kube-controller-manager) scales its Deployment from 2 to at least 4 replicas under
//! load and back to 2 after it, while QleetOS applies a new generation and corrects drift:
//! the replicas the autoscaler chose are never reset.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use qleetos_e2e::environment::{Environment, RuntimeSpec};
use serde_json::{Value, json};

use crate::support::*;

const NS: &str = "autoscale-e2e";
const REGION: &str = "autoscale-1";
const RUNTIME: &str = "scaled";
/// What kwok reads as each pod's CPU use.
const USAGE: &str = "kwok.x-k8s.io/usage-cpu";
/// Long enough for metrics-server's two scrapes and the autoscaler's stabilization.
const SCALING: Duration = Duration::from_secs(300);

fn runtimes() -> Vec<RuntimeSpec> {
    let mut spec = RuntimeSpec::new(RUNTIME, REGION, &[]);
    spec.fake_nodes = 2;
    spec.metrics = true;
    vec![spec]
}

pub async fn in_own_environment(dir: PathBuf) -> Result<()> {
    let env = crate::start_environment(dir, runtimes()).await?;
    let result = an_autoscaler_scales_what_qleetos_applies(&env).await;
    env.stop().await;
    result
}

/// Deployment `api` (100m CPU per pod) and its autoscaler: 2 to 6 replicas at 50 % CPU,
/// scaling down 30 s after the load goes; `extra` manifests beside them.
fn api(extra: &[Value]) -> Value {
    let mut manifests = vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                    "spec": {"containers": [{"name": "api", "image": "nginx:1.27",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "api"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                "minReplicas": 2, "maxReplicas": 6,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}}}),
    ];
    manifests.extend(extra.iter().cloned());
    let mut workload = workload("api", manifests, json!({"regions": [REGION]}));
    workload["metadata"]["namespace"] = json!(NS);
    workload
}

async fn an_autoscaler_scales_what_qleetos_applies(env: &Environment) -> Result<()> {
    let client = env.management_client().await?;
    let runtime = env
        .runtime(RUNTIME)
        .context("the runtime")?
        .client()
        .await?;
    apply_workload(&client, NS, &api(&[])).await?;
    wait_workload_ready(&client, NS, "api").await?;
    replicas_become(&runtime, "the autoscaler's minimum", |n| n == 2).await?;

    load(&runtime, Some("200m")).await?;
    let scaled = replicas_become(&runtime, "scaled up under load", |n| n >= 4).await?;
    reported(&client, |n| n >= 4).await?;

    // A new generation is applied, and drift of the pod template corrected, while scaled.
    let settings = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "api-settings"}, "data": {"mode": "busy"}});
    apply_workload(&client, NS, &api(&[settings])).await?;
    wait_workload_ready(&client, NS, "api").await?;
    let deployments: Api<Deployment> = Api::namespaced(runtime.clone(), NS);
    let drift = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "api", "image": "nginx:drifted"}]}}}});
    deployments
        .patch("api", &PatchParams::default(), &Patch::Strategic(&drift))
        .await?;
    eventually("the drifted image corrected", TIMEOUT, || async {
        let image = deployment_image_of(&deployments).await?;
        Ok((image.as_deref() == Some("nginx:1.27")).then_some(()))
    })
    .await?;
    let kept = replicas(&deployments).await?;
    ensure!(
        kept >= 4,
        "QleetOS reset the autoscaler's {scaled} replicas to {kept}"
    );

    load(&runtime, None).await?;
    replicas_become(&runtime, "scaled down after the load", |n| n == 2).await?;
    reported(&client, |n| n == 2).await?;
    delete_workload(&client, NS, "api").await
}

/// The Workload's placement reports a desired count `wanted` accepts, all available.
async fn reported(client: &Client, wanted: impl Fn(i64) -> bool) -> Result<()> {
    let workloads: Api<qleetos_crds::Workload> = Api::namespaced(client.clone(), NS);
    eventually(
        "the placement's replicas in the Workload's status",
        TIMEOUT,
        || async {
            let status = workloads.get("api").await?.status.unwrap_or_default();
            let replicas = status.placements.first().and_then(|p| p.replicas);
            ensure!(
                replicas.is_some_and(|r| wanted(r.desired) && r.available == r.desired),
                "{replicas:?}"
            );
            Ok(Some(()))
        },
    )
    .await
}

/// Turns simulated load on (`Some(cpu)` per pod, on every node) or off.
async fn load(runtime: &Client, cpu: Option<&str>) -> Result<()> {
    let nodes: Api<Node> = Api::all(runtime.clone());
    let patch = json!({"metadata": {"annotations": {USAGE: cpu}}});
    for node in nodes.list(&ListParams::default()).await?.items {
        let name = node.metadata.name.unwrap_or_default();
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

async fn replicas(deployments: &Api<Deployment>) -> Result<i32> {
    let deployment = deployments.get("api").await?;
    Ok(deployment.spec.and_then(|s| s.replicas).unwrap_or_default())
}

async fn deployment_image_of(deployments: &Api<Deployment>) -> Result<Option<String>> {
    let deployment = deployments.get("api").await?;
    Ok(deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.image))
}

/// Waits until the Deployment's desired and ready replicas both satisfy `wanted`.
async fn replicas_become(
    runtime: &Client,
    what: &str,
    wanted: impl Fn(i32) -> bool,
) -> Result<i32> {
    let deployments: Api<Deployment> = Api::namespaced(runtime.clone(), NS);
    eventually(what, SCALING, || async {
        let deployment = deployments.get("api").await?;
        let desired = deployment.spec.and_then(|s| s.replicas).unwrap_or_default();
        let ready = deployment
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or_default();
        ensure!(
            wanted(desired) && ready == desired,
            "{desired} desired, {ready} ready"
        );
        Ok(Some(desired))
    })
    .await
}
