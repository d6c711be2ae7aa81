//! `LocalCluster` and `LocalMachine`: the infrastructure-cluster and infrastructure-machine
//! contracts of Cluster API v1beta2.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeSystemInfo, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::status::{field, merge, object, true_condition};
use super::{
    ClusterKey, Context, LOCAL_CLUSTER, LOCAL_MACHINE, WAIT, kubeconfig_secret_name, with_finalizer,
};
use crate::error::Error;

/// How often a settled machine is looked at again (to recreate a Node deleted behind
/// Cluster API's back).
const RESYNC: Duration = Duration::from_secs(30);

/// A LocalCluster has nothing to build. It reports itself provisioned, with the control
/// plane's endpoint, once the local cluster runs and its kubeconfig Secret exists: Cluster
/// API connects to the workload cluster as soon as the infrastructure is provisioned, and
/// after a failed attempt it retries only every 30 s.
pub(super) async fn reconcile_cluster(
    obj: Arc<DynamicObject>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(key) = ClusterKey::of(&obj) else {
        return Ok(Action::requeue(WAIT));
    };
    let Some(port) = context.api_server_port(&key).await else {
        return Ok(Action::requeue(WAIT));
    };
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &key.namespace);
    if secrets
        .get_opt(&kubeconfig_secret_name(&key.name))
        .await?
        .is_none()
    {
        return Ok(Action::requeue(WAIT));
    }
    let spec = json!({"controlPlaneEndpoint": {"host": "127.0.0.1", "port": port}});
    merge(&context, LOCAL_CLUSTER, &obj, "spec", object(spec)).await?;
    let status = json!({
        "initialization": {"provisioned": true},
        "conditions": [true_condition(&obj, "Ready", "Provisioned")],
    });
    merge(&context, LOCAL_CLUSTER, &obj, "status", object(status)).await?;
    Ok(Action::await_change())
}

pub(super) async fn reconcile_machine(
    obj: Arc<DynamicObject>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let (for_apply, for_cleanup) = (context.clone(), context.clone());
    with_finalizer(
        LOCAL_MACHINE,
        obj,
        &context,
        |obj| async move { provision_machine(&obj, &for_apply).await },
        |obj| async move { release_machine(&obj, &for_cleanup).await },
    )
    .await
}

/// The machine is a fake Node named like the LocalMachine, in the local cluster of the
/// machine's Cluster; it waits until that cluster runs.
async fn provision_machine(obj: &DynamicObject, context: &Context) -> Result<Action, Error> {
    let Some(key) = ClusterKey::of(obj) else {
        return Ok(Action::requeue(WAIT));
    };
    let Some(workload) = context.workload_client(&key).await? else {
        tracing::debug!(
            machine = obj.name_any(),
            cluster = key.name,
            "waiting for the local cluster"
        );
        return Ok(Action::requeue(WAIT));
    };
    let Some(version) = machine_version(obj, context).await? else {
        return Ok(Action::requeue(WAIT));
    };
    let node = obj.name_any();
    let provider_id = format!("qleetos-local://{}/{node}", key.namespace);
    ensure_node(&workload, &node, &provider_id, &version).await?;

    let spec = json!({"providerID": provider_id});
    merge(context, LOCAL_MACHINE, obj, "spec", object(spec)).await?;
    let status = json!({
        "initialization": {"provisioned": true},
        "addresses": [{"type": "Hostname", "address": node}],
        "conditions": [true_condition(obj, "Ready", "Provisioned")],
    });
    merge(context, LOCAL_MACHINE, obj, "status", object(status)).await?;
    Ok(Action::requeue(RESYNC))
}

/// `spec.version` of the Machine that owns `obj` (once the Machine controller has set
/// itself as owner): the Node reports it as its kubelet version, which Cluster API compares.
async fn machine_version(obj: &DynamicObject, context: &Context) -> Result<Option<String>, Error> {
    let owner = obj
        .owner_references()
        .iter()
        .find(|r| r.kind == "Machine" && r.api_version.starts_with("cluster.x-k8s.io/"));
    let Some(owner) = owner else {
        return Ok(None);
    };
    let gvk = GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Machine");
    let namespace = obj.namespace().unwrap_or_default();
    let machines: Api<DynamicObject> = Api::namespaced_with(
        context.client.clone(),
        &namespace,
        &ApiResource::from_gvk(&gvk),
    );
    let machine = machines.get(&owner.name).await?;
    Ok(field(&machine, "spec", &["version"])
        .and_then(Value::as_str)
        .map(str::to_owned))
}

/// Deletes the machine's Node (Cluster API leaves Nodes alone while their Cluster is
/// being deleted). Nothing to do when the local cluster is gone already.
async fn release_machine(obj: &DynamicObject, context: &Context) -> Result<Action, Error> {
    let workload = match ClusterKey::of(obj) {
        Some(key) => context.workload_client(&key).await?,
        None => None,
    };
    let provisioned = field(obj, "spec", &["providerID"]).is_some();
    if let (Some(workload), true) = (workload, provisioned) {
        let nodes: Api<Node> = Api::all(workload);
        match nodes
            .delete(&obj.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => tracing::info!(node = obj.name_any(), "deleted node"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

async fn ensure_node(
    workload: &Client,
    name: &str,
    provider_id: &str,
    version: &str,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(workload.clone());
    if nodes.get_opt(name).await?.is_some() {
        return Ok(());
    }
    match nodes
        .create(
            &PostParams::default(),
            &fake_node(name, provider_id, version),
        )
        .await
    {
        Ok(_) => tracing::info!(node = name, provider_id, "created node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The environment's fake Node with the Machine's providerID, reporting kubelet `version`
/// (kwok keeps a version it finds).
fn fake_node(name: &str, provider_id: &str, version: &str) -> Node {
    let mut node = crate::cluster::probes::fake_node(name);
    node.spec = Some(NodeSpec {
        provider_id: Some(provider_id.to_owned()),
        ..NodeSpec::default()
    });
    if let Some(status) = node.status.as_mut() {
        status.node_info = Some(NodeSystemInfo {
            architecture: "amd64".to_owned(),
            operating_system: "linux".to_owned(),
            kubelet_version: version.to_owned(),
            kube_proxy_version: version.to_owned(),
            ..NodeSystemInfo::default()
        });
    }
    node
}
