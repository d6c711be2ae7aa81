//! Issue 29: fewer writes on the way to Ready, without losing track of anything applied.
//! A new Workload gets the Workload Qleet's finalizer from QleetOS's MutatingAdmissionPolicy,
//! and a first pass records what it applied only once, after applying it. What a pass applied
//! and could not record (it stopped first) is found again through the runtime's drift
//! caches: pruned when unwanted, removed with the Workload.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use qleetos_e2e::environment::Environment;
use serde_json::{Value, json};

use crate::support::*;

/// What a pass of instance `uid` (`namespace/name`) leaves in the runtime when it stops
/// after applying ConfigMap `name` and before writing its status.
fn unrecorded_config_map(name: &str, namespace: &str, uid: &str, instance: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "qleetos", "qleetos.io/instance-uid": uid},
            "annotations": {"qleetos.io/instance": instance},
        },
        "data": {"left": "by a pass that stopped"},
    })
}

async fn put(runtime: &Client, object: &Value) -> Result<()> {
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .context("namespace")?;
    let name = object["metadata"]["name"].as_str().context("name")?;
    let namespaces: Api<Namespace> = Api::all(runtime.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    let params = PatchParams::apply("e2e-crashed-pass").force();
    namespaces
        .patch(namespace, &params, &Patch::Apply(&ns))
        .await?;
    Api::<ConfigMap>::namespaced(runtime.clone(), namespace)
        .patch(name, &params, &Patch::Apply(object))
        .await?;
    Ok(())
}

pub async fn unrecorded_objects_are_found_again(env: &Environment) -> Result<()> {
    let (ns, client) = ("found-again", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1"]});
    let created = apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(1, "nginx:1.27"), placement),
    )
    .await?;
    ensure!(
        created
            .finalizers()
            .iter()
            .any(|f| f == "qleetos.io/instances"),
        "the Workload came back from its creation without QleetOS's finalizer: {:?} \
         (the MutatingAdmissionPolicy qleetos-workload-finalizer sets it)",
        created.finalizers()
    );
    wait_workload_ready(&client, ns, "web").await?;
    let instance = instances_of(&client, ns, "web")
        .await?
        .pop()
        .context("an instance")?;
    let (uid, key) = (
        instance.uid().context("uid")?,
        format!("{ns}/{}", instance.name_any()),
    );
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    put(
        &runtime,
        &unrecorded_config_map("left-over", ns, &uid, &key),
    )
    .await?;
    // The same labels in a namespace the instance does not use: never its to delete.
    put(
        &runtime,
        &unrecorded_config_map("elsewhere", "found-again-other", &uid, &key),
    )
    .await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(runtime.clone(), ns);
    eventually("the unrecorded ConfigMap pruned", TIMEOUT, || async {
        Ok(config_maps
            .get_opt("left-over")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    let other: Api<ConfigMap> = Api::namespaced(runtime.clone(), "found-again-other");
    ensure!(
        other.get_opt("elsewhere").await?.is_some(),
        "a labelled ConfigMap outside the instance's namespaces was deleted"
    );
    put(
        &runtime,
        &unrecorded_config_map("left-at-deletion", ns, &uid, &key),
    )
    .await?;
    delete_workload(&client, ns, "web").await?;
    let workloads: Api<qleetos_crds::Workload> = Api::namespaced(client.clone(), ns);
    eventually("Workload deleted", TIMEOUT, || async {
        Ok(workloads.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(
        config_maps.get_opt("left-at-deletion").await?.is_none(),
        "an object the instance applied without recording it outlived the Workload"
    );
    other.delete("elsewhere", &DeleteParams::default()).await?;
    Ok(())
}
