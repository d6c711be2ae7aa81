//! Issue 7 scenarios on what QleetOS owns in a runtime: API version changes, autoscaled
//! workloads, the longest names, and runtimes deleted while in use.

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use qleetos_crds::{Conditions, KubernetesRuntime, Workload};
use qleetos_e2e::environment::{Environment, RuntimeSpec, register_runtime};
use serde_json::{Value, json};

use crate::support::*;

fn eu() -> Value {
    json!({"runtimeSelector": {"matchLabels": {"qleetos.io/zone": "eu"}}})
}

fn autoscaled_web(hpa_api_version: &str) -> Vec<Value> {
    let mut manifests = web_manifests(1, "nginx:1.27");
    manifests.truncate(1);
    let mut hpa = json!({
        "apiVersion": hpa_api_version, "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5
        }
    });
    if hpa_api_version == "autoscaling/v1" {
        hpa["spec"]["targetCPUUtilizationPercentage"] = json!(80);
    }
    manifests.push(hpa);
    manifests
}

pub async fn api_version_changes_and_autoscaling_keep_the_live_objects(
    env: &Environment,
) -> Result<()> {
    let (ns, client) = ("team-versions", env.management_client().await?);
    apply_workload(
        &client,
        ns,
        &workload("web", autoscaled_web("autoscaling/v1"), eu()),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(eu_west.clone(), ns);
    let before = hpas.get("web").await?.uid();

    let deployments: Api<Deployment> = Api::namespaced(eu_west.clone(), ns);
    let scale = json!({"spec": {"replicas": 3}});
    deployments
        .patch_scale("web", &PatchParams::default(), &Patch::Merge(&scale))
        .await?;
    apply_workload(
        &client,
        ns,
        &workload("web", autoscaled_web("autoscaling/v2"), eu()),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    let instance = instances_of(&client, ns, "web").await?.remove(0);
    let inventory = instance.status.unwrap_or_default().applied_objects;
    let hpa_entries: Vec<_> = inventory
        .iter()
        .filter(|o| o.kind == "HorizontalPodAutoscaler")
        .collect();
    ensure!(
        hpa_entries.len() == 1 && hpa_entries[0].api_version == "autoscaling/v2",
        "inventory after the version change: {inventory:?}"
    );
    let after = hpas.get_opt("web").await?.map(|h| h.uid());
    ensure!(
        after == Some(before.clone()),
        "the HPA was deleted and re-created by the apiVersion change ({before:?} -> {after:?})"
    );
    let replicas = deployments.get("web").await?.spec.and_then(|s| s.replicas);
    ensure!(
        replicas == Some(3),
        "re-applying scaled the autoscaled Deployment back: replicas {replicas:?}"
    );
    delete_workload(&client, ns, "web").await?;
    Ok(())
}

pub async fn the_longest_workload_name_is_placed_and_deleted(env: &Environment) -> Result<()> {
    let (ns, client) = ("team-long-names", env.management_client().await?);
    let name = format!("w{}", "-abcdefghi".repeat(25))
        .chars()
        .take(253)
        .collect::<String>();
    let name = name.trim_end_matches('-').to_owned();
    ensure!(name.len() >= 250, "test name too short: {}", name.len());
    let manifests = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "long"}, "data": {"a": "b"}}),
    ];
    apply_workload(
        &client,
        ns,
        &workload(
            &name,
            manifests,
            json!({"regions": ["eu-west-1", "us-east-1"]}),
        ),
    )
    .await?;
    wait_workload_ready(&client, ns, &name).await?;
    let instances = instances_of_workload(&client, ns, &name).await?;
    ensure!(
        instances.len() == 2,
        "instances of the long-named Workload: {}",
        instances.len()
    );
    for instance in &instances {
        ensure!(instance.name_any().len() <= 253, "instance name too long");
        for value in instance.labels().values() {
            ensure!(value.len() <= 63, "label value over 63 characters: {value}");
        }
    }
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(eu_west, ns);
    ensure!(
        config_maps.get_opt("long").await?.is_some(),
        "ConfigMap not applied"
    );
    delete_workload(&client, ns, &name).await?;
    let workloads: Api<Workload> = Api::namespaced(client.clone(), ns);
    eventually("long-named Workload deleted", TIMEOUT, || async {
        Ok(workloads.get_opt(&name).await?.is_none().then_some(()))
    })
    .await?;
    ensure!(
        config_maps.get_opt("long").await?.is_none(),
        "ConfigMap left behind"
    );
    Ok(())
}

/// The instances owned by a Workload (by owner reference, whatever its label value).
async fn instances_of_workload(
    client: &Client,
    namespace: &str,
    workload: &str,
) -> Result<Vec<qleetos_crds::WorkloadInstance>> {
    let workloads: Api<Workload> = Api::namespaced(client.clone(), namespace);
    let uid = workloads.get(workload).await?.uid();
    let instances: Api<qleetos_crds::WorkloadInstance> = Api::namespaced(client.clone(), namespace);
    Ok(instances
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|i| {
            i.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect())
}

/// Registers an extra KubernetesRuntime `name` in `region` for one of the environment's
/// clusters (two runtime objects may stand for the same cluster here).
async fn extra_runtime(env: &Environment, name: &str, region: &str, cluster: &str) -> Result<()> {
    let client = env.management_client().await?;
    let spec = RuntimeSpec::new(name, region, &[]);
    register_runtime(&client, &spec, env.runtime(cluster).expect("cluster")).await?;
    let runtimes: Api<KubernetesRuntime> = Api::all(client);
    eventually(&format!("runtime {name} Ready"), TIMEOUT, || async {
        Ok(runtimes.get(name).await?.is_ready().then_some(()))
    })
    .await
}

pub async fn deleting_a_runtime_in_use_moves_its_workloads(env: &Environment) -> Result<()> {
    let (ns, client) = ("team-moving", env.management_client().await?);
    extra_runtime(env, "moving-a", "moving-1", "eu-west").await?;
    apply_workload(
        &client,
        ns,
        &workload(
            "web",
            web_manifests(1, "nginx:1.27"),
            json!({"regions": ["moving-1"]}),
        ),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    ensure!(placed_on(&instances_of(&client, ns, "web").await?) == ["moving-a"]);

    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    runtimes.delete("moving-a", &Default::default()).await?;
    let waiting = eventually(
        "runtime moving-a waiting for its workloads",
        TIMEOUT,
        || async {
            let runtime = runtimes.get("moving-a").await?;
            Ok(runtime
                .status
                .unwrap_or_default()
                .condition(qleetos_crds::READY)
                .filter(|c| c.reason == "WaitingForWorkloads")
                .map(|c| c.message.clone()))
        },
    )
    .await?;
    ensure!(
        waiting.contains(ns),
        "waiting message does not name the users: {waiting}"
    );
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    ensure!(
        deployment_image(&eu_west, ns).await?.is_some(),
        "the workload was torn down before a replacement existed"
    );

    extra_runtime(env, "moving-b", "moving-1", "us-east").await?;
    eventually("runtime moving-a released", TIMEOUT, || async {
        Ok(runtimes.get_opt("moving-a").await?.is_none().then_some(()))
    })
    .await?;
    let workload = wait_workload_ready(&client, ns, "web").await?;
    let placements = workload.status.unwrap_or_default().placements;
    ensure!(
        placements.len() == 1 && placements[0].runtime == "moving-b",
        "placements after the move: {placements:?}"
    );
    let us_east = env.runtime("us-east").expect("us-east").client().await?;
    ensure!(
        deployment_image(&us_east, ns).await?.is_some(),
        "not running on the new runtime"
    );
    ensure!(
        deployment_image(&eu_west, ns).await?.is_none(),
        "left behind on the deleted runtime"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let storms: Vec<String> = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    ensure!(
        storms.is_empty(),
        "normal waits produced Warning Events: {storms:?}"
    );

    delete_workload(&client, ns, "web").await?;
    eventually("Workload removed", TIMEOUT, || async {
        Ok(instances_of(&client, ns, "web")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    runtimes.delete("moving-b", &Default::default()).await?;
    Ok(())
}

pub async fn an_abandoned_runtime_lets_its_placements_go(env: &Environment) -> Result<()> {
    let (ns, client) = ("team-abandon", env.management_client().await?);
    extra_runtime(env, "abandoned", "abandon-1", "eu-west").await?;
    let manifests = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "left"}, "data": {"a": "b"}}),
    ];
    apply_workload(
        &client,
        ns,
        &workload("web", manifests, json!({"regions": ["abandon-1"]})),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;

    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    let abandon = json!({"spec": {"deletionPolicy": "Abandon"}});
    runtimes
        .patch(
            "abandoned",
            &PatchParams::default(),
            &Patch::Merge(&abandon),
        )
        .await?;
    runtimes.delete("abandoned", &Default::default()).await?;
    eventually("abandoned runtime released", TIMEOUT, || async {
        Ok(runtimes.get_opt("abandoned").await?.is_none().then_some(()))
    })
    .await?;
    wait_workload_not_ready(&client, ns, "web", "NoMatchingRuntime").await?;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(
        "RuntimeAbandoned Warning on the instance",
        TIMEOUT,
        || async {
            let found = events
                .list(&Default::default())
                .await?
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("RuntimeAbandoned")
                        || e.reason.as_deref() == Some("RuntimeGone")
                });
            Ok(found.then_some(()))
        },
    )
    .await?;
    delete_workload(&client, ns, "web").await?;
    let workloads: Api<Workload> = Api::namespaced(client.clone(), ns);
    eventually("Workload deleted without its runtime", TIMEOUT, || async {
        Ok(workloads.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    let left: Api<ConfigMap> = Api::namespaced(eu_west, ns);
    match left.get_opt("left").await? {
        Some(_) => left.delete("left", &Default::default()).await.map(|_| ())?,
        None => bail!("an abandoned runtime's objects must be left in place, not deleted"),
    }
    Ok(())
}
