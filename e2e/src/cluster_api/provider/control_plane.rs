//! `LocalControlPlane`: the control-plane contract of Cluster API v1beta2, fulfilled by a
//! real local cluster (etcd, kube-apiserver, controller-manager, scheduler and kwok).
//!
//! The control plane has no Cluster API Machines: one API server serves however many
//! replicas are asked for, and they are reported as such, all at `spec.version` (the
//! local binaries have one version; the version is not checked against them).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::status::{field, merge, object, owned_by, true_condition};
use super::{
    CLUSTER_NAME_LABEL, ClusterKey, Context, FIELD_MANAGER, LOCAL_CONTROL_PLANE, WAIT,
    api_server_port, kubeconfig_secret_name, local_cluster_name, with_finalizer,
};
use crate::cluster::{Cluster, ClusterSpec};
use crate::error::Error;

/// How often a running control plane's status is refreshed.
const RESYNC: Duration = Duration::from_secs(60);

pub(super) async fn reconcile(
    obj: Arc<DynamicObject>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let (for_apply, for_cleanup) = (context.clone(), context.clone());
    with_finalizer(
        LOCAL_CONTROL_PLANE,
        obj,
        &context,
        |obj| async move { provision(&obj, &for_apply).await },
        |obj| async move { release(&obj, &for_cleanup).await },
    )
    .await
}

/// What the reconciler needs of a running local cluster.
struct Endpoint {
    port: u16,
    kubeconfig: String,
}

async fn provision(obj: &DynamicObject, context: &Context) -> Result<Action, Error> {
    let Some(key) = ClusterKey::of(obj) else {
        return Ok(Action::requeue(WAIT));
    };
    let endpoint = ensure_running(context, &key).await?;
    write_kubeconfig(context, obj, &key, &endpoint.kubeconfig).await?;

    let spec = json!({"controlPlaneEndpoint": {"host": "127.0.0.1", "port": endpoint.port}});
    merge(context, LOCAL_CONTROL_PLANE, obj, "spec", object(spec)).await?;

    let replicas = field(obj, "spec", &["replicas"])
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(1)
        .max(1);
    let version = field(obj, "spec", &["version"])
        .cloned()
        .unwrap_or_default();
    let status = json!({
        "initialization": {"controlPlaneInitialized": true},
        "version": version,
        "versions": [{"version": version, "replicas": replicas}],
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "upToDateReplicas": replicas,
        "selector": format!("{CLUSTER_NAME_LABEL}={}", key.name),
        "observedGeneration": obj.metadata.generation.unwrap_or_default(),
        "conditions": [true_condition(obj, "Available", "Available")],
    });
    merge(context, LOCAL_CONTROL_PLANE, obj, "status", object(status)).await?;
    Ok(Action::requeue(RESYNC))
}

/// Starts the local cluster of `key` unless it runs already. The lock is not held while it
/// starts (seconds); the controller never reconciles one control plane twice at once.
async fn ensure_running(context: &Context, key: &ClusterKey) -> Result<Endpoint, Error> {
    if let Some(cluster) = context.clusters.lock().await.get(key) {
        return Ok(endpoint_of(cluster));
    }
    let name = local_cluster_name(&key.name);
    let base_dir = context.dir.join(&key.namespace);
    tracing::info!(
        namespace = key.namespace,
        cluster = key.name,
        local = name,
        "starting local cluster"
    );
    let cluster = Cluster::start(ClusterSpec::workload(name, 0), &base_dir).await?;
    let endpoint = endpoint_of(&cluster);
    context.clusters.lock().await.insert(key.clone(), cluster);
    Ok(endpoint)
}

fn endpoint_of(cluster: &Cluster) -> Endpoint {
    Endpoint {
        port: api_server_port(cluster),
        kubeconfig: cluster.kubeconfig_yaml(),
    }
}

/// Secret `<cluster>-kubeconfig` as Cluster API expects it: type `cluster.x-k8s.io/secret`,
/// the cluster-name label, the kubeconfig under `value`, owned by the control plane.
async fn write_kubeconfig(
    context: &Context,
    obj: &DynamicObject,
    key: &ClusterKey,
    kubeconfig: &str,
) -> Result<(), Error> {
    let name = kubeconfig_secret_name(&key.name);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some([(CLUSTER_NAME_LABEL.to_owned(), key.name.clone())].into()),
            owner_references: Some(vec![owned_by(LOCAL_CONTROL_PLANE, obj)]),
            ..ObjectMeta::default()
        },
        type_: Some("cluster.x-k8s.io/secret".to_owned()),
        data: Some([("value".to_owned(), ByteString(kubeconfig.into()))].into()),
        ..Secret::default()
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<Secret>::namespaced(context.client.clone(), &key.namespace)
        .patch(&name, &params, &Patch::Apply(&secret))
        .await?;
    Ok(())
}

/// Stops the local cluster and deletes its kubeconfig Secret.
async fn release(obj: &DynamicObject, context: &Context) -> Result<Action, Error> {
    let Some(key) = ClusterKey::of(obj) else {
        return Ok(Action::await_change());
    };
    let cluster = context.clusters.lock().await.remove(&key);
    if let Some(cluster) = cluster {
        tracing::info!(
            namespace = key.namespace,
            cluster = key.name,
            "stopping local cluster"
        );
        cluster.stop().await;
    }
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &key.namespace);
    match secrets
        .delete(&kubeconfig_secret_name(&key.name), &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
