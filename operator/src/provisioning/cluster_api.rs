//! The `ClusterAPI` provider: a Cluster API `Cluster` with a ClusterClass topology (version,
//! control plane, one machine deployment per node pool with the cluster-autoscaler's
//! min/max annotations). Cluster API and its infrastructure provider build the cluster; the
//! kubeconfig Secret Cluster API writes (`<cluster>-kubeconfig`, key `value`) is copied into
//! the runtime's Secret in QleetOS's namespace.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use qleetos_crds::template::Variables;
use qleetos_crds::{
    ClusterApiSettings, FIELD_MANAGER, KubernetesRuntime, KubernetesRuntimeProfile, NodePool,
};
use serde_json::{Value, json};

use super::{Progress, RUNTIME_LABEL, failed, write_kubeconfig};
use crate::context::Context;
use crate::error::{Error, Result};

/// Cluster API's annotations bounding a node group for the cluster-autoscaler.
pub const AUTOSCALER_MIN: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
pub const AUTOSCALER_MAX: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";
/// Key of the kubeconfig in the Secret Cluster API writes.
const CAPI_KUBECONFIG_KEY: &str = "value";

fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta2",
        "Cluster",
    ))
}

/// Applies the `Cluster`, reports its progress, and copies its kubeconfig once it has one.
pub async fn ensure(
    ctx: &Context,
    runtime: &KubernetesRuntime,
    profile: &KubernetesRuntimeProfile,
) -> Result<Progress> {
    let Some(settings) = profile.spec.cluster_api.as_ref() else {
        return Err(failed(runtime, "the profile has no spec.clusterAPI"));
    };
    let name = runtime.metadata.name.clone().unwrap_or_default();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &settings.namespace, &cluster_resource());
    let wanted = desired_cluster(runtime, profile, settings);
    let applied = clusters
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&wanted),
        )
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 404 => failed(
                runtime,
                "the management cluster does not serve cluster.x-k8s.io/v1beta2 Clusters: install Cluster API",
            ),
            kube::Error::Api(status) => failed(runtime, status.message),
            other => Error::Management(other),
        })?;
    let object = format!("Cluster {}/{name}", settings.namespace);
    let status = applied.data.get("status").cloned().unwrap_or(Value::Null);
    if let Some(problem) = failure(&status) {
        return Err(failed(runtime, format!("{object}: {problem}")));
    }
    let progress = describe(&status);
    if !initialized(&status) {
        return Ok(Progress::provisioning(progress, Some(object)));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &settings.namespace);
    let kubeconfig = secrets
        .get_opt(&format!("{name}-kubeconfig"))
        .await
        .map_err(Error::Management)?
        .and_then(|s| s.data)
        .and_then(|d| d.get(CAPI_KUBECONFIG_KEY).cloned());
    let Some(kubeconfig) = kubeconfig else {
        let waiting = format!("{progress}, waiting for Secret {name}-kubeconfig");
        return Ok(Progress::provisioning(waiting, Some(object)));
    };
    write_kubeconfig(ctx, runtime, &kubeconfig.0).await?;
    Ok(Progress::provisioned(progress, Some(object)))
}

/// Deletes the `Cluster` and waits for Cluster API to tear it down: `None` once it is gone.
/// Without a profile, the Cluster is looked for by label in every namespace.
pub async fn remove(
    ctx: &Context,
    runtime: &KubernetesRuntime,
    profile: Option<&KubernetesRuntimeProfile>,
) -> Result<Option<String>> {
    let name = runtime.metadata.name.clone().unwrap_or_default();
    let namespace = match profile.and_then(|p| p.spec.cluster_api.as_ref()) {
        Some(settings) => settings.namespace.clone(),
        None => match labelled_cluster_namespace(ctx, &name).await? {
            Some(namespace) => namespace,
            None => return Ok(None),
        },
    };
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &cluster_resource());
    let found = match clusters.get_opt(&name).await {
        Ok(found) => found,
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(error) => return Err(Error::Management(error)),
    };
    let Some(cluster) = found else {
        return Ok(None);
    };
    if cluster.metadata.deletion_timestamp.is_none() {
        match clusters.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(cluster = %name, %namespace, "Cluster API Cluster deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(error) => return Err(Error::Management(error)),
        }
    }
    let stuck = cluster
        .data
        .get("status")
        .and_then(failure)
        .map(|problem| format!(" (it reports {problem})"))
        .unwrap_or_default();
    Ok(Some(format!(
        "Cluster {namespace}/{name} is being deleted by Cluster API{stuck}"
    )))
}

async fn labelled_cluster_namespace(ctx: &Context, runtime: &str) -> Result<Option<String>> {
    let clusters: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &cluster_resource());
    let selector = format!("{RUNTIME_LABEL}={}", crate::names::label_value(runtime));
    match clusters
        .list_metadata(&kube::api::ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => Ok(list.items.into_iter().find_map(|c| c.metadata.namespace)),
        // Cluster API is not installed: there is no Cluster to remove.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(Error::Management(error)),
    }
}

/// The `Cluster` for `runtime`: the profile's ClusterClass, version, control plane replicas,
/// one machine deployment per node pool, and its variables.
pub fn desired_cluster(
    runtime: &KubernetesRuntime,
    profile: &KubernetesRuntimeProfile,
    settings: &ClusterApiSettings,
) -> Value {
    let name = runtime.metadata.name.clone().unwrap_or_default();
    let mut vars = Variables::default();
    vars.insert("runtime.region", runtime.spec.region.clone());
    vars.insert("runtime.name", name.clone());
    let variables: Vec<Value> = settings
        .variables
        .iter()
        .map(|v| {
            let mut value = v.value.clone();
            vars.substitute(&mut value);
            json!({ "name": v.name, "value": value })
        })
        .collect();
    let machine_deployments: Vec<Value> = profile
        .spec
        .node_pools
        .iter()
        .map(|pool| machine_deployment(pool, &settings.worker_class))
        .collect();
    let mut topology = json!({
        "classRef": { "name": settings.cluster_class },
        "version": profile.spec.kubernetes_version,
        "controlPlane": { "replicas": settings.control_plane_replicas },
        "workers": { "machineDeployments": machine_deployments },
    });
    if !variables.is_empty() {
        topology["variables"] = Value::Array(variables);
    }
    json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": { RUNTIME_LABEL: crate::names::label_value(&name) },
        },
        "spec": { "topology": topology },
    })
}

/// One pool as a topology machine deployment. An autoscaled pool gets the min/max
/// annotations and no replica count, so the topology does not fight the autoscaler.
fn machine_deployment(pool: &NodePool, class: &str) -> Value {
    let mut deployment = json!({ "class": class, "name": pool.name });
    match pool.autoscaling {
        Some(bounds) => {
            deployment["metadata"] = json!({ "annotations": {
                AUTOSCALER_MIN: bounds.min.to_string(),
                AUTOSCALER_MAX: bounds.max.to_string(),
            }});
        }
        None => deployment["replicas"] = json!(pool.count),
    }
    if let Some(size) = &pool.size {
        deployment["variables"] = json!({ "overrides": [{ "name": "nodeSize", "value": size }] });
    }
    deployment
}

fn initialized(status: &Value) -> bool {
    status["initialization"]["controlPlaneInitialized"].as_bool() == Some(true)
}

/// `control plane ready, 0/2 workers` and the like, from the Cluster's status.
pub fn describe(status: &Value) -> String {
    let control_plane = if initialized(status) {
        "control plane ready".to_owned()
    } else if status["initialization"]["infrastructureProvisioned"].as_bool() == Some(true) {
        "infrastructure ready, control plane starting".to_owned()
    } else {
        "creating infrastructure".to_owned()
    };
    let workers = &status["workers"];
    let desired = workers["desiredReplicas"].as_i64().unwrap_or(0);
    let ready = workers["readyReplicas"].as_i64().unwrap_or(0);
    format!("{control_plane}, {ready}/{desired} workers")
}

/// The provider's message when the Cluster cannot progress: `status.phase: Failed`, or the
/// topology cannot be reconciled (e.g. a missing ClusterClass).
pub fn failure(status: &Value) -> Option<String> {
    let conditions = status["conditions"].as_array()?;
    let stuck = conditions.iter().find(|c| {
        c["type"] == "TopologyReconciled"
            && c["status"] == "False"
            && c["reason"] != "ClusterUpgrading"
            && c["reason"] != "ControlPlaneUpgradePending"
    });
    if let Some(condition) = stuck {
        return Some(format!(
            "{}: {}",
            condition["reason"].as_str().unwrap_or_default(),
            condition["message"].as_str().unwrap_or_default()
        ));
    }
    (status["phase"] == "Failed").then(|| "Cluster API reports phase Failed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> KubernetesRuntimeProfile {
        serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntimeProfile",
            "metadata": { "name": "standard" },
            "spec": {
                "provider": "ClusterAPI", "regions": ["eu-central-1"], "kubernetesVersion": "v1.36.2",
                "nodePools": [
                    { "name": "workers", "count": 2 },
                    { "name": "burst", "count": 1, "size": "m5.large", "autoscaling": { "min": 1, "max": 5 } },
                ],
                "clusterAPI": { "clusterClass": "aws-standard",
                                "variables": [{ "name": "region", "value": "$(runtime.region)" }] },
            },
        }))
        .expect("profile")
    }

    fn runtime() -> KubernetesRuntime {
        serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntime",
            "metadata": { "name": "standard-eu-central-1" },
            "spec": { "provider": "cluster-api", "region": "eu-central-1",
                      "connection": { "kubeconfigSecretRef": { "namespace": "qleetos-system", "name": "k" } },
                      "provisioning": { "profileRef": { "name": "standard" } } },
        }))
        .expect("runtime")
    }

    #[test]
    fn the_cluster_carries_the_profiles_topology_and_autoscaler_bounds() {
        let profile = profile();
        let settings = profile.spec.cluster_api.clone().expect("clusterAPI");
        let cluster = desired_cluster(&runtime(), &profile, &settings);
        let topology = &cluster["spec"]["topology"];
        assert_eq!(cluster["metadata"]["namespace"], "qleetos-clusters");
        assert_eq!(topology["classRef"]["name"], "aws-standard");
        assert_eq!(topology["version"], "v1.36.2");
        assert_eq!(topology["controlPlane"]["replicas"], 1);
        assert_eq!(topology["variables"][0]["value"], "eu-central-1");
        let pools = topology["workers"]["machineDeployments"]
            .as_array()
            .expect("pools");
        assert_eq!(pools[0]["replicas"], 2);
        assert_eq!(pools[0]["class"], "default-worker");
        assert!(
            pools[1].get("replicas").is_none(),
            "the autoscaler owns the count"
        );
        assert_eq!(pools[1]["metadata"]["annotations"][AUTOSCALER_MIN], "1");
        assert_eq!(pools[1]["metadata"]["annotations"][AUTOSCALER_MAX], "5");
    }

    #[test]
    fn progress_and_failures_come_from_the_cluster_status() {
        let starting = json!({ "initialization": { "infrastructureProvisioned": true },
                               "workers": { "desiredReplicas": 2, "readyReplicas": 0 } });
        assert_eq!(
            describe(&starting),
            "infrastructure ready, control plane starting, 0/2 workers"
        );
        let ready = json!({ "initialization": { "controlPlaneInitialized": true },
                            "workers": { "desiredReplicas": 2, "readyReplicas": 1 } });
        assert_eq!(describe(&ready), "control plane ready, 1/2 workers");
        assert_eq!(failure(&ready), None);
        let missing_class = json!({ "conditions": [{ "type": "TopologyReconciled", "status": "False",
            "reason": "ClusterClassNotReconciled", "message": "ClusterClass aws-standard not found" }] });
        assert_eq!(
            failure(&missing_class).as_deref(),
            Some("ClusterClassNotReconciled: ClusterClass aws-standard not found")
        );
    }
}
