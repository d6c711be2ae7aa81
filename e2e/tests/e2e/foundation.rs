//! Issue 2 scenarios: placement, rollout, pruning, deletion, bad input, unreachable runtimes.

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use qleetos_crds::{Conditions, KubernetesRuntime, Workload, WorkloadInstance};
use qleetos_e2e::environment::Environment;
use serde_json::json;

use crate::support::*;

pub async fn deploys_only_to_the_matching_runtime(env: &Environment) -> Result<()> {
    let (ns, client) = ("placement-one", env.management_client().await?);
    let placement = json!({"runtimeSelector": {"matchLabels": {"qleetos.io/zone": "eu"}}});
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(2, "nginx:1.27"), placement),
    )
    .await?;
    kubectl(
        env.management.kubeconfig_path(),
        &[
            "wait",
            "--for=condition=Ready",
            "workload/web",
            "-n",
            ns,
            "--timeout=120s",
        ],
    )
    .await?;
    let eu = env
        .runtime("eu-west")
        .expect("eu-west runtime")
        .client()
        .await?;
    let us = env
        .runtime("us-east")
        .expect("us-east runtime")
        .client()
        .await?;
    ensure!(
        deployment_image(&eu, ns).await?.as_deref() == Some("nginx:1.27"),
        "Deployment missing in eu-west"
    );
    ensure!(
        Api::<Service>::namespaced(eu.clone(), ns)
            .get_opt("web")
            .await?
            .is_some(),
        "Service missing in eu-west"
    );
    ensure!(
        deployment_image(&us, ns).await?.is_none(),
        "Deployment leaked into us-east"
    );
    let pods = Api::<Pod>::namespaced(eu, ns)
        .list(&ListParams::default().labels("app=web"))
        .await?;
    let running = pods
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    ensure!(
        running == 2,
        "expected 2 Running pods under kwok, found {running}"
    );
    let instances = instances_of(&client, ns, "web").await?;
    ensure!(
        placed_on(&instances) == ["eu-west"],
        "instances: {:?}",
        placed_on(&instances)
    );
    ensure!(
        instances[0].is_ready_at_current_generation(),
        "instance not Ready: {:?}",
        instances[0].status
    );
    Ok(())
}

pub async fn places_one_instance_per_region_and_rolls_images(env: &Environment) -> Result<()> {
    let (ns, client) = ("placement-regions", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1", "us-east-1"]});
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(1, "nginx:1.27"), placement),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    ensure!(placed_on(&instances_of(&client, ns, "web").await?) == ["eu-west", "us-east"]);

    merge_patch_workload(
        &client,
        ns,
        "web",
        json!({"spec": {"images": {"web": "nginx:1.28"}}}),
    )
    .await?;
    let workload = wait_workload_ready(&client, ns, "web").await?;
    for runtime in ["eu-west", "us-east"] {
        let runtime_client = env.runtime(runtime).expect("runtime").client().await?;
        let image = deployment_image(&runtime_client, ns).await?;
        ensure!(
            image.as_deref() == Some("nginx:1.28"),
            "{runtime} still runs {image:?}"
        );
    }
    let status = workload.status.unwrap_or_default();
    ensure!(
        status.ready_placements.as_deref() == Some("2/2"),
        "readyPlacements {:?}",
        status.ready_placements
    );
    Ok(())
}

pub async fn removing_a_manifest_prunes_it(env: &Environment) -> Result<()> {
    let (ns, client) = ("prune", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1", "us-east-1"]});
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(1, "nginx:1.27"), placement.clone()),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    let deployment_only = vec![web_manifests(1, "nginx:1.27").remove(0)];
    apply_workload(&client, ns, &workload("web", deployment_only, placement)).await?;
    wait_workload_ready(&client, ns, "web").await?;
    for runtime in ["eu-west", "us-east"] {
        let runtime_client = env.runtime(runtime).expect("runtime").client().await?;
        let services: Api<Service> = Api::namespaced(runtime_client.clone(), ns);
        eventually(
            &format!("Service pruned from {runtime}"),
            TIMEOUT,
            || async { Ok(services.get_opt("web").await?.is_none().then_some(())) },
        )
        .await?;
        ensure!(
            deployment_image(&runtime_client, ns).await?.is_some(),
            "Deployment must stay in {runtime}"
        );
    }
    Ok(())
}

pub async fn deleting_a_workload_removes_everything(env: &Environment) -> Result<()> {
    let (ns, client) = ("deletion", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1", "us-east-1"]});
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(1, "nginx:1.27"), placement),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    delete_workload(&client, ns, "web").await?;
    let workloads: Api<Workload> = Api::namespaced(client.clone(), ns);
    eventually("Workload deleted", TIMEOUT, || async {
        Ok(workloads.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(
        instances_of(&client, ns, "web").await?.is_empty(),
        "WorkloadInstances left behind"
    );
    let instances: Api<WorkloadInstance> = Api::namespaced(client.clone(), ns);
    ensure!(
        instances
            .list(&ListParams::default())
            .await?
            .items
            .is_empty(),
        "WorkloadInstances left in {ns}"
    );
    for runtime in ["eu-west", "us-east"] {
        let runtime_client = env.runtime(runtime).expect("runtime").client().await?;
        ensure!(
            deployment_image(&runtime_client, ns).await?.is_none(),
            "Deployment left in {runtime}"
        );
        let services: Api<Service> = Api::namespaced(runtime_client.clone(), ns);
        ensure!(
            services.get_opt("web").await?.is_none(),
            "Service left in {runtime}"
        );
        let managed = Api::<Deployment>::all(runtime_client)
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=qleetos"))
            .await?;
        ensure!(
            managed
                .items
                .iter()
                .all(|d| d.metadata.namespace.as_deref() != Some(ns)),
            "managed objects left in {runtime}/{ns}"
        );
    }
    Ok(())
}

pub async fn invalid_manifests_report_the_api_server_message(env: &Environment) -> Result<()> {
    let (ns, client) = ("invalid", env.management_client().await?);
    let placement = json!({"runtimeSelector": {"matchLabels": {"qleetos.io/zone": "eu"}}});
    let unknown_kind = json!({"apiVersion": "widgets.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    apply_workload(
        &client,
        ns,
        &workload("unknown-kind", vec![unknown_kind], placement.clone()),
    )
    .await?;
    let mut bad_field = web_manifests(1, "nginx:1.27").remove(0);
    bad_field["metadata"]["name"] = json!("bad-field");
    bad_field["spec"]["replicaz"] = json!(3);
    apply_workload(
        &client,
        ns,
        &workload("bad-field", vec![bad_field], placement.clone()),
    )
    .await?;
    apply_workload(
        &client,
        ns,
        &workload("healthy", web_manifests(1, "nginx:1.27"), placement),
    )
    .await?;

    wait_workload_ready(&client, ns, "healthy").await?;
    let message = wait_workload_not_ready(&client, ns, "unknown-kind", "PlacementFailed").await?;
    ensure!(
        message.contains("UnknownKind") && message.contains("Widget"),
        "unknown kind message: {message}"
    );
    let message = wait_workload_not_ready(&client, ns, "bad-field", "PlacementFailed").await?;
    ensure!(
        message.contains("replicaz"),
        "bad field message does not quote the API server: {message}"
    );
    Ok(())
}

pub async fn schema_rejects_malformed_workloads(env: &Environment) -> Result<()> {
    let (ns, client) = ("schema", env.management_client().await?);
    let cases = [
        (
            workload("no-placement-target", web_manifests(1, "nginx"), json!({})),
            "placement needs regions or a runtimeSelector",
        ),
        (
            workload(
                "nameless",
                vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})],
                json!({"regions": ["eu-west-1"]}),
            ),
            "every manifest needs metadata.name",
        ),
        (
            workload(
                "bad-strategy",
                web_manifests(1, "nginx"),
                json!({"regions": ["eu-west-1"], "strategy": "Everywhere"}),
            ),
            "Unsupported value: \"Everywhere\"",
        ),
        (
            workload("no-manifests", vec![], json!({"regions": ["eu-west-1"]})),
            "set either manifests (one or more) or chart",
        ),
        (
            {
                let mut both = workload(
                    "both",
                    web_manifests(1, "nginx"),
                    json!({"regions": ["eu-west-1"]}),
                );
                both["spec"]["chart"] = json!({"repository": "https://charts.example.com", "name": "web", "version": "1.0.0"});
                both
            },
            "set either manifests (one or more) or chart, not both",
        ),
        (
            {
                let mut unmapped =
                    workload("unmapped-image", vec![], json!({"regions": ["eu-west-1"]}));
                unmapped["spec"]["chart"] = json!({"repository": "oci://registry.example.com/charts", "name": "web", "version": "1.0.0"});
                unmapped["spec"]["images"] = json!({"web": "web:2"});
                unmapped
            },
            "each images key must name an entry of chart.images",
        ),
        (
            {
                let mut ftp = workload("ftp-chart", vec![], json!({"regions": ["eu-west-1"]}));
                ftp["spec"]["chart"] = json!({"repository": "ftp://charts.example.com", "name": "web", "version": "1.0.0"});
                ftp
            },
            "repository must be an https:// (or http://) chart repository or an oci:// registry reference",
        ),
    ];
    for (workload, expected) in cases {
        match apply_workload(&client, ns, &workload).await {
            Ok(_) => bail!("{} was accepted", workload["metadata"]["name"]),
            Err(error) => {
                let text = format!("{error:#}");
                ensure!(text.contains(expected), "expected {expected:?} in: {text}");
                ensure!(
                    text.contains("422") || text.contains("Invalid"),
                    "not a validation error: {text}"
                );
            }
        }
    }
    Ok(())
}

pub async fn runtimes_report_version_and_nodes(env: &Environment) -> Result<()> {
    let client = env.management_client().await?;
    let runtimes: Api<KubernetesRuntime> = Api::all(client);
    for name in ["eu-west", "us-east"] {
        let runtime = eventually(&format!("runtime {name} Ready"), TIMEOUT, || async {
            let runtime = runtimes.get(name).await?;
            Ok(runtime.is_ready().then_some(runtime))
        })
        .await?;
        let status = runtime.status.unwrap_or_default();
        ensure!(
            status.server_version.as_deref() == Some("v1.36.2"),
            "version {:?}",
            status.server_version
        );
        ensure!(
            status.node_count == Some(1),
            "nodes {:?}",
            status.node_count
        );
        ensure!(status.last_probe_time.is_some(), "no probe time");
    }
    let table = kubectl(
        env.management.kubeconfig_path(),
        &["get", "kubernetesruntimes"],
    )
    .await?;
    ensure!(
        table.contains("READY") && table.contains("REGION") && table.contains("eu-west-1"),
        "printer columns: {table}"
    );
    Ok(())
}

/// Runs in an environment of its own because it stops a runtime's API server.
pub async fn unreachable_runtime_recovers(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("unreachable", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1"]});
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(1, "nginx:1.27"), placement),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;

    env.runtime_mut("eu-west")
        .expect("runtime")
        .stop_apiserver()
        .await?;
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    let condition = eventually("runtime eu-west Ready=False", TIMEOUT, || async {
        let status = runtimes.get("eu-west").await?.status.unwrap_or_default();
        Ok(status
            .condition(qleetos_crds::READY)
            .filter(|c| !c.is_true())
            .cloned())
    })
    .await?;
    ensure!(
        condition.reason == "RuntimeUnreachable",
        "reason {}",
        condition.reason
    );
    ensure!(
        condition.message.contains("unreachable"),
        "message {}",
        condition.message
    );
    merge_patch_workload(
        &client,
        ns,
        "web",
        json!({"spec": {"images": {"web": "nginx:1.28"}}}),
    )
    .await?;
    let message = wait_workload_not_ready(&client, ns, "web", "PlacementFailed").await?;
    ensure!(
        message.contains("RuntimeUnreachable"),
        "workload message: {message}"
    );

    env.runtime_mut("eu-west")
        .expect("runtime")
        .start_apiserver()
        .await?;
    wait_workload_ready(&client, ns, "web").await?;
    let runtime_client = env.runtime("eu-west").expect("runtime").client().await?;
    ensure!(
        deployment_image(&runtime_client, ns).await?.as_deref() == Some("nginx:1.28"),
        "image not rolled after recovery"
    );
    eventually("runtime eu-west Ready again", TIMEOUT, || async {
        Ok(runtimes.get("eu-west").await?.is_ready().then_some(()))
    })
    .await?;
    Ok(())
}
