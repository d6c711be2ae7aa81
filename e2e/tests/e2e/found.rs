//! Issue 7, "found when tried as a new user would": duplicate manifests, image keys naming no
//! container, rollouts the runtime refuses, Events on the Workload, and a watch the caller may
//! not open. Every trial acts as a careless user would and asserts what that user sees.

use std::sync::Arc;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use libtest_mimic::Trial;
use qleetos_crds::{Conditions, UNIQUE_OBJECTS_MESSAGE, Workload, WorkloadInstance};
use qleetos_e2e::environment::{Environment, ensure_namespace};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::gateway::{JSON, call, service_account_token, shared_gateway};
use crate::harness::{Scenario, SharedEnv, shared_trial};
use crate::support::*;

const EU: &str = "qleetos.io/zone";

fn eu_placement() -> Value {
    json!({"runtimeSelector": {"matchLabels": {EU: "eu"}}})
}

/// Every trial of this file, on the shared environment.
pub fn trials(runtime: &Arc<Runtime>, env: &SharedEnv) -> Vec<Trial> {
    let scenarios: Vec<(&str, Scenario)> = vec![
        (
            "found_duplicate_manifests_are_rejected_at_admission",
            |env| Box::pin(duplicate_manifests_are_rejected_at_admission(env)),
        ),
        ("found_unknown_image_key_is_reported_and_refused", |env| {
            Box::pin(unknown_image_key_is_reported_and_refused(env))
        }),
        ("found_refused_pods_fail_the_rollout_with_events", |env| {
            Box::pin(refused_pods_fail_the_rollout_with_events(env))
        }),
        ("found_watch_without_permission_answers_403", |env| {
            Box::pin(watch_without_permission_answers_403(env))
        }),
    ];
    scenarios
        .into_iter()
        .map(|(name, scenario)| shared_trial(name, runtime, env, scenario))
        .collect()
}

fn config_map(name: &str, namespace: Option<&str>) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": "v"}})
}

/// The API server's answer to creating `object` (a Workload or WorkloadInstance) for real.
async fn create_error(client: &Client, ns: &str, object: &Value) -> Result<String> {
    let kind = object["kind"].as_str().context("kind")?;
    let params = PostParams::default();
    let result = if kind == "Workload" {
        let api: Api<Workload> = Api::namespaced(client.clone(), ns);
        api.create(&params, &serde_json::from_value(object.clone())?)
            .await
            .map(|_| ())
    } else {
        let api: Api<WorkloadInstance> = Api::namespaced(client.clone(), ns);
        api.create(&params, &serde_json::from_value(object.clone())?)
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => bail!("the API server accepted {kind}: {object}"),
        Err(kube::Error::Api(status)) => {
            ensure!(status.code == 422, "expected 422, got {status:?}");
            Ok(status.message)
        }
        Err(other) => Err(other.into()),
    }
}

async fn duplicate_manifests_are_rejected_at_admission(env: &Environment) -> Result<()> {
    let (ns, client) = ("found-duplicates", env.management_client().await?);
    ensure_namespace(&client, ns).await?;
    let mut deployments = web_manifests(1, "nginx:1.27");
    let mut again = deployments[0].clone();
    again["spec"]["replicas"] = json!(3);
    deployments.push(again);
    let message =
        create_error(&client, ns, &workload("twice", deployments, eu_placement())).await?;
    ensure!(
        message.contains(UNIQUE_OBJECTS_MESSAGE) && message.contains("Deployment.apps web"),
        "the message names the rule and the object: {message}"
    );

    // Another version of the same group is the same object; so is an explicit namespace twice.
    let mut versions = vec![
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
               "spec": {"maxUnavailable": 1}}),
    ];
    let mut older = versions[0].clone();
    older["apiVersion"] = json!("policy/v1beta1");
    versions.push(older);
    let message =
        create_error(&client, ns, &workload("versions", versions, eu_placement())).await?;
    ensure!(
        message.contains("PodDisruptionBudget.policy web"),
        "versions of one group: {message}"
    );
    let namespaced = vec![
        config_map("settings", Some("team")),
        config_map("settings", Some("team")),
    ];
    let message = create_error(
        &client,
        ns,
        &workload("namespaced", namespaced, eu_placement()),
    )
    .await?;
    ensure!(
        message.contains("ConfigMap team/settings"),
        "namespaced duplicate: {message}"
    );

    let instance = json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadInstance",
        "metadata": {"name": "by-hand"},
        "spec": {"runtimeRef": {"name": "eu-west"},
                 "manifests": [config_map("settings", None), config_map("settings", None)]}
    });
    let message = create_error(&client, ns, &instance).await?;
    ensure!(
        message.contains(UNIQUE_OBJECTS_MESSAGE) && message.contains("ConfigMap settings"),
        "WorkloadInstance duplicate: {message}"
    );
    let instances: Api<WorkloadInstance> = Api::namespaced(client.clone(), ns);
    ensure!(
        instances.get_opt("by-hand").await?.is_none(),
        "the instance was stored"
    );

    // Same name with another kind, group or namespace is a different object, and the largest
    // list allowed stays within the API server's CEL cost budget.
    let mut distinct = vec![
        config_map("web", None),
        config_map("web", Some("other")),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web"}}),
    ];
    distinct.extend(web_manifests(1, "nginx:1.27"));
    distinct.extend((distinct.len()..200).map(|i| config_map(&format!("cm-{i}"), None)));
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let object: Workload = serde_json::from_value(workload("distinct", distinct, eu_placement()))?;
    api.create(&dry_run, &object)
        .await
        .context("200 distinct manifests must be accepted")?;
    Ok(())
}

/// The Events regarding the Workload `name`.
async fn events_on(client: &Client, ns: &str, name: &str) -> Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let listed = events.list(&ListParams::default()).await?;
    Ok(listed
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Workload") && r.name.as_deref() == Some(name)
            })
        })
        .collect())
}

/// Warning and Normal Events on the Workload `name`, as `type reason: note`.
async fn workload_events(client: &Client, ns: &str, name: &str) -> Result<Vec<String>> {
    Ok(events_on(client, ns, name)
        .await?
        .iter()
        .map(|e| {
            format!(
                "{} {}: {}",
                e.type_.as_deref().unwrap_or_default(),
                e.reason.as_deref().unwrap_or_default(),
                e.note.as_deref().unwrap_or_default()
            )
        })
        .collect())
}

pub async fn wait_event(client: &Client, ns: &str, name: &str, wanted: &str) -> Result<String> {
    eventually(
        &format!("Event {wanted} on Workload {ns}/{name}"),
        TIMEOUT,
        || async {
            let events = workload_events(client, ns, name).await?;
            if let Some(found) = events.iter().find(|e| e.starts_with(wanted)) {
                return Ok(Some(found.clone()));
            }
            bail!("events: {events:?}")
        },
    )
    .await
}

async fn unknown_image_key_is_reported_and_refused(env: &Environment) -> Result<()> {
    let (ns, client) = ("found-images", env.management_client().await?);
    let mut typo = workload("web", web_manifests(1, "nginx:1.27"), eu_placement());
    typo["spec"]["images"] = json!({"wbe": "nginx:1.28"});
    apply_workload(&client, ns, &typo).await?;
    let message = wait_workload_not_ready(&client, ns, "web", "UnknownImageContainer").await?;
    ensure!(
        message.contains("no container of any pod template: wbe")
            && message.contains("containers are: web"),
        "message: {message}"
    );
    let waited = kubectl(
        env.management.kubeconfig_path(),
        &[
            "wait",
            "--for=condition=Ready",
            "workload/web",
            "-n",
            ns,
            "--timeout=3s",
        ],
    )
    .await;
    ensure!(waited.is_err(), "kubectl wait reported success: {waited:?}");
    wait_event(&client, ns, "web", "Warning UnknownImageContainer").await?;

    let gateway = shared_gateway(env).await?;
    let rules = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get", "patch"]}]);
    let token = service_account_token(&client, ns, "ci-bot", rules, None).await?;
    let workloads: Api<Workload> = Api::namespaced(client.clone(), ns);
    let before = workloads.get("web").await?;
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &format!("/v1/namespaces/{ns}/workloads/web/images"),
        Some((
            JSON,
            json!({"images": {"web": "nginx:1.29", "sidecar": "envoy:1"}}),
        )),
    )
    .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY,
        "expected 422, got {status}: {answer}"
    );
    ensure!(
        answer["reason"] == "Invalid" && answer["code"] == 422,
        "error shape: {answer}"
    );
    let text = answer["message"].as_str().unwrap_or_default();
    ensure!(
        text.contains("sidecar") && text.contains("containers are: web") && !text.contains("wbe"),
        "the message names the request's unknown key: {answer}"
    );
    let after = workloads.get("web").await?;
    ensure!(
        after.metadata.generation == before.metadata.generation
            && after.spec.images == before.spec.images,
        "the Workload changed: {:?}",
        after.spec.images
    );

    // Fixing the key clears the condition and rolls the image.
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &format!("/v1/namespaces/{ns}/workloads/web/images"),
        Some((JSON, json!({"images": {"web": "nginx:1.29"}}))),
    )
    .await?;
    ensure!(status == StatusCode::OK, "known key: {status}: {answer}");
    merge_patch_workload(
        &client,
        ns,
        "web",
        json!({"spec": {"images": {"wbe": null}}}),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let image = deployment_image(&runtime, ns).await?;
    ensure!(image.as_deref() == Some("nginx:1.29"), "image {image:?}");
    Ok(())
}

async fn refused_pods_fail_the_rollout_with_events(env: &Environment) -> Result<()> {
    let (ns, client) = ("found-rollout", env.management_client().await?);
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(1, " nginx:1.27 "), eu_placement()),
    )
    .await?;
    let message = wait_workload_not_ready(&client, ns, "web", "PlacementFailed").await?;
    ensure!(
        message.contains("RolloutFailed")
            && message.contains("ReplicaFailure")
            && message.contains("whitespace"),
        "the Workload's message shows the runtime's refusal: {message}"
    );
    let instance = instances_of(&client, ns, "web")
        .await?
        .pop()
        .context("an instance")?;
    let status = instance.status.clone().unwrap_or_default();
    let ready = status.condition(qleetos_crds::READY).context("Ready")?;
    ensure!(ready.reason == "RolloutFailed", "instance Ready: {ready:?}");
    let health = status.health.first().context("health")?;
    ensure!(
        health.reason.as_deref() == Some("ReplicaFailure")
            && health
                .message
                .as_deref()
                .is_some_and(|m| m.contains("FailedCreate")),
        "health: {health:?}"
    );

    let warning = wait_event(&client, ns, "web", "Warning PlacementFailed").await?;
    ensure!(
        warning.contains("eu-west") && warning.contains("RolloutFailed"),
        "event: {warning}"
    );
    let described = kubectl(
        env.management.kubeconfig_path(),
        &["describe", "workload", "web", "-n", ns],
    )
    .await?;
    ensure!(
        described.contains("PlacementFailed") && described.contains("Warning"),
        "kubectl describe shows no Events: {described}"
    );
    // Reconciles keep running while it fails; the Warning is told once, not on every pass.
    // A new annotation notifies the Workload Qleet of the Workload; wait until it has
    // reconciled it again, then count.
    let marks = log_marks(env);
    merge_patch_workload(
        &client,
        ns,
        "web",
        json!({"metadata": {"annotations": {"e2e.qleetos.io/touched": "once"}}}),
    )
    .await?;
    wait_reconciled(env, &marks, "workload", ns, "web", 1).await?;
    let warnings = count_events(&client, ns, "web", "PlacementFailed").await?;
    ensure!(warnings == 1, "{warnings} PlacementFailed Events");

    merge_patch_workload(
        &client,
        ns,
        "web",
        json!({"spec": {"images": {"web": "nginx:1.27"}}}),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    wait_event(&client, ns, "web", "Normal PlacementRecovered").await?;
    Ok(())
}

/// How many times the API server counted Events of `reason` on the Workload (a repeated Event
/// is one object with a series count).
async fn count_events(client: &Client, ns: &str, name: &str, reason: &str) -> Result<i32> {
    Ok(events_on(client, ns, name)
        .await?
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum())
}

async fn watch_without_permission_answers_403(env: &Environment) -> Result<()> {
    let (ns, client) = ("found-watch", env.management_client().await?);
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(1, "nginx:1.27"), eu_placement()),
    )
    .await?;
    let gateway = shared_gateway(env).await?;
    let get_only =
        json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get"]}]);
    let token = service_account_token(&client, ns, "reader", get_only, None).await?;
    let path = format!("/v1/namespaces/{ns}/workloads/web/watch");
    let (status, answer) = call(gateway, Some(&token), Method::GET, &path, None).await?;
    ensure!(
        status == StatusCode::FORBIDDEN,
        "expected 403, got {status}: {answer}"
    );
    ensure!(
        answer["reason"] == "Forbidden" && answer["code"] == 403,
        "error shape: {answer}"
    );
    let message = answer["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("cannot watch")
            && message.contains("system:serviceaccount:found-watch:reader"),
        "message: {answer}"
    );

    let watcher = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get", "watch"]}]);
    let token = service_account_token(&client, ns, "watcher", watcher, None).await?;
    let response = qleetos_e2e::http::client_builder()
        .build()?
        .get(format!("{}{path}", gateway.base_url()))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::OK,
        "a caller who may watch: {}",
        response.status()
    );
    let mut response = response;
    let first = tokio::time::timeout(TIMEOUT, response.chunk())
        .await
        .context("no first event")??
        .context("stream ended")?;
    let text = String::from_utf8_lossy(&first);
    ensure!(text.contains("event: status"), "first chunk: {text}");
    Ok(())
}
