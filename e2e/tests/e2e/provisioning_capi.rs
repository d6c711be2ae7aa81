//! Issue 10: QleetOS's `ClusterAPI` provider against the real Cluster API v1.14.2 core
//! controller and the test environment's own local infrastructure provider.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use qleetos_crds::{KubernetesRuntime, ProvisioningPhase};
use qleetos_e2e::cluster_api::{CLUSTER_CLASS, ClusterApi, DEFAULT_NAMESPACE};
use qleetos_e2e::environment::Environment;
use serde_json::{Value, json};

use crate::provisioning::{
    PROVISION_TIMEOUT, apply_runtime_profile, config_map, delete_runtime_profile, provisioned,
    provisioned_client, ready_with_history,
};
use crate::support::*;

const AUTOSCALER_MIN: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
const AUTOSCALER_MAX: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";

fn capi_cluster_resource() -> kube::core::ApiResource {
    kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta2",
        "Cluster",
    ))
}

fn capi_profile(name: &str, region: &str, class: &str) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntimeProfile",
        "metadata": {"name": name},
        "spec": {"provider": "ClusterAPI", "regions": [region], "default": true,
                 "kubernetesVersion": "v1.36.2",
                 "nodePools": [{"name": "workers", "count": 2},
                               {"name": "burst", "count": 0, "autoscaling": {"min": 0, "max": 3}}],
                 "idle": {"afterSeconds": 0},
                 "clusterAPI": {"clusterClass": class, "namespace": DEFAULT_NAMESPACE}}
    })
}

/// QleetOS's ClusterAPI provider against the real Cluster API core controller (and the
/// environment's own local infrastructure provider): a Workload in an empty region gets a
/// topology Cluster, its kubeconfig, its objects; a missing ClusterClass shows as the
/// provider's message; deleting the Workloads removes every Cluster and local cluster.
pub async fn cluster_api_provisions_a_runtime_through_real_cluster_api(
    env: &mut Environment,
) -> Result<()> {
    crate::dependencies::operator_running(env).await?;
    let mut capi = ClusterApi::start(
        &env.dir().join("cluster-api"),
        &env.management,
        DEFAULT_NAMESPACE,
    )
    .await
    .context("starting Cluster API")?;
    let result = through_cluster_api(env, &capi).await;
    if result.is_err() {
        eprintln!(
            "Cluster API logs: {} and {}",
            capi.manager_log().display(),
            capi.provider_log().display()
        );
    }
    capi.check_running()?;
    capi.stop().await;
    result
}

async fn through_cluster_api(env: &Environment, capi: &ClusterApi) -> Result<()> {
    let (ns, client) = ("prov-capi", env.management_client().await?);
    apply_runtime_profile(
        &client,
        &capi_profile("capi-standard", "capi-1", CLUSTER_CLASS),
    )
    .await?;
    apply_lab_workload(
        &client,
        ns,
        &provisioned("app", "capi-1", web_manifests(1, "nginx:1.27")),
    )
    .await?;
    let history = ready_with_history(&client, ns, "app").await?;
    let waited = history
        .iter()
        .any(|m| m.contains("provisioning capi-1 from profile capi-standard ("));
    ensure!(waited, "never said it waited for the runtime: {history:#?}");
    let name = "capi-standard-capi-1";
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), DEFAULT_NAMESPACE, &capi_cluster_resource());
    let cluster = clusters.get(name).await?;
    ensure!(
        cluster.data["spec"]["topology"]["classRef"]["name"] == CLUSTER_CLASS,
        "topology: {}",
        cluster.data["spec"]["topology"]
    );
    let deployments: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        DEFAULT_NAMESPACE,
        &kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "cluster.x-k8s.io",
            "v1beta2",
            "MachineDeployment",
        )),
    );
    let selector = format!(
        "cluster.x-k8s.io/cluster-name={name},topology.cluster.x-k8s.io/deployment-name=burst"
    );
    let burst = deployments
        .list(&ListParams::default().labels(&selector))
        .await?;
    let annotations = burst
        .items
        .first()
        .and_then(|d| d.metadata.annotations.clone())
        .context("the burst MachineDeployment")?;
    ensure!(
        annotations.get(AUTOSCALER_MIN).map(String::as_str) == Some("0")
            && annotations.get(AUTOSCALER_MAX).map(String::as_str) == Some("3"),
        "autoscaler bounds: {annotations:?}"
    );
    // Cluster API's defaulting webhook gave the pool its minimum; QleetOS set no count.
    let replicas = &burst.items[0].data["spec"]["replicas"];
    ensure!(replicas == 0, "burst MachineDeployment replicas {replicas}");
    let runtime = Api::<KubernetesRuntime>::all(client.clone())
        .get(name)
        .await?;
    ensure!(
        runtime.spec.provider == "cluster-api",
        "provider {}",
        runtime.spec.provider
    );
    let workload_cluster = provisioned_client(&client, name).await?;
    Api::<Deployment>::namespaced(workload_cluster.clone(), ns)
        .get("web")
        .await?;
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(workload_cluster)
        .list(&ListParams::default())
        .await?;
    ensure!(nodes.items.len() >= 2, "{} nodes", nodes.items.len());
    ensure!(
        capi.running_local_clusters() == 1,
        "{} local clusters",
        capi.running_local_clusters()
    );

    apply_runtime_profile(
        &client,
        &capi_profile("capi-broken", "capi-2", "no-such-class"),
    )
    .await?;
    apply_lab_workload(
        &client,
        ns,
        &provisioned("stuck", "capi-2", config_map("stuck")),
    )
    .await?;
    let message = wait_workload_not_ready(&client, ns, "stuck", "PlacementFailed").await?;
    ensure!(
        message.contains("ProvisioningFailed") && message.contains("no-such-class"),
        "{message}"
    );

    delete_workload(&client, ns, "app").await?;
    delete_workload(&client, ns, "stuck").await?;
    // Cluster API cannot delete a Cluster whose ClusterClass is missing: the runtime waits
    // and says why, until the class exists.
    let broken: Api<KubernetesRuntime> = Api::all(client.clone());
    eventually(
        "the broken runtime waiting for Cluster API",
        PROVISION_TIMEOUT,
        || async {
            let runtime = broken.get("capi-broken-capi-2").await?;
            let message = runtime
                .status
                .and_then(|s| s.provisioning)
                .filter(|p| p.phase == ProvisioningPhase::Deprovisioning)
                .map(|p| p.message)
                .unwrap_or_default();
            Ok(message
                .contains("being deleted by Cluster API")
                .then_some(()))
        },
    )
    .await?;
    copy_cluster_class(&client, CLUSTER_CLASS, "no-such-class").await?;
    for runtime in [name, "capi-broken-capi-2"] {
        eventually(
            &format!("runtime {runtime} and its Cluster gone"),
            PROVISION_TIMEOUT,
            || async {
                let left_runtime = Api::<KubernetesRuntime>::all(client.clone())
                    .get_opt(runtime)
                    .await?;
                let left_cluster = clusters.get_opt(runtime).await?;
                Ok((left_runtime.is_none() && left_cluster.is_none()).then_some(()))
            },
        )
        .await?;
    }
    eventually("no local cluster left", TIMEOUT, || async {
        Ok((capi.running_local_clusters() == 0).then_some(()))
    })
    .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "qleetos-system");
    ensure!(
        secrets
            .get_opt(&format!("{name}-kubeconfig"))
            .await?
            .is_none(),
        "kubeconfig Secret left"
    );
    delete_runtime_profile(&client, "capi-standard").await?;
    delete_runtime_profile(&client, "capi-broken").await
}

async fn copy_cluster_class(client: &Client, from: &str, to: &str) -> Result<()> {
    let resource = kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta2",
        "ClusterClass",
    ));
    let classes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), DEFAULT_NAMESPACE, &resource);
    let original = classes.get(from).await?;
    let copy = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "ClusterClass",
        "metadata": {"name": to, "namespace": DEFAULT_NAMESPACE},
        "spec": original.data["spec"],
    });
    classes
        .create(&Default::default(), &serde_json::from_value(copy)?)
        .await?;
    Ok(())
}
