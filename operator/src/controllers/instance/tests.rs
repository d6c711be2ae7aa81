//! The WorkloadInstance Qleet's decisions against a mocked API server: what it waits for,
//! what it refuses, what it creates on first need, and its finalizer.

use std::sync::Arc;

use http::Method;
use qleetos_crds::WorkloadInstance;
use serde_json::json;

use super::{FINALIZER, reconcile};
use crate::context::Next;
use crate::testing::{
    ApiServer, DELETED_AT, Harness, QLEET_API, Reply, Seen, condition, events, instance,
    kubeconfig_secret, object, provisioned_runtime, request, requests, runtime, support_profile,
    support_service,
};

const STATUS: &str = "/apis/qleetos.io/v1alpha1/namespaces/team-a/workloadinstances/web-eu/status";
const INSTANCE: &str = "/apis/qleetos.io/v1alpha1/namespaces/team-a/workloadinstances/web-eu";
const SECRET: &str = "/api/v1/namespaces/qleetos-system/secrets/eu-kubeconfig";

fn runtime_path(name: &str) -> String {
    format!("{QLEET_API}/kubernetesruntimes/{name}")
}

/// `web` of `team-a` on runtime `eu`, needing `needs`.
fn needing(needs: &[&str]) -> WorkloadInstance {
    let mut web = instance("team-a", "web", "eu");
    web.spec.needs = needs.iter().map(|n| (*n).to_owned()).collect();
    web
}

fn deleted(mut instance: WorkloadInstance) -> WorkloadInstance {
    instance.metadata.deletion_timestamp = Some(object(json!(DELETED_AT)));
    instance
}

/// The instance as the API server has it once `seen` wrote its status.
fn with_written_status(instance: &WorkloadInstance, seen: &[Seen]) -> WorkloadInstance {
    let written = request(seen, &Method::PATCH, STATUS);
    let mut updated = instance.clone();
    updated.status = Some(object(written.body["status"].clone()));
    updated
}

#[tokio::test]
async fn a_missing_runtime_is_waited_for_and_reported_without_an_event() {
    let web = instance("team-a", "web", "eu");
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        // Not in the watch cache: looked up once more, in case the cache lags.
        .get(runtime_path("eu"), Reply::not_found())
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;

    assert!(
        matches!(next.expect("a pass"), Next::After(_)),
        "a wait looks again"
    );
    let (status, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RuntimeNotFound")
    );
    assert!(
        message.contains("KubernetesRuntime eu does not exist"),
        "{message}"
    );
    assert!(events(&seen).is_empty(), "a wait is no warning: {seen:?}");
}

#[tokio::test]
async fn a_runtime_the_namespace_may_not_use_is_refused_with_a_warning_once() {
    // No TenantPolicy selects team-a: it may use registered runtimes, but provisioning (and
    // so a runtime made from a profile) needs a policy listing the profile.
    let eu = provisioned_runtime("eu", "eu-west", "standard");
    let web = instance("team-a", "web", "eu");
    let harness = Harness::new().with_runtime(&eu);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("team-a")
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;

    assert_eq!(
        next.expect("a pass"),
        Next::Done,
        "a refusal waits for a change"
    );
    let (status, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TenancyViolation")
    );
    assert!(
        message.contains("may not place Workloads on runtime eu"),
        "{message}"
    );
    let told = events(&seen);
    assert_eq!(
        told,
        [("Warning".to_owned(), "TenancyViolation".to_owned(), message)],
        "one Warning naming the refusal"
    );
    assert!(
        requests(&seen, &Method::GET, SECRET).is_empty(),
        "nothing is done in the runtime"
    );

    // The next pass finds the refusal already reported: no second Event, no write.
    let refused = with_written_status(&web, &seen);
    let harness = Harness::new().with_runtime(&eu);
    let ctx = harness.ctx.clone();
    let (next, seen) = harness
        .run(ApiServer::new(), reconcile(Arc::new(refused), ctx))
        .await;
    assert_eq!(next.expect("a pass"), Next::Done);
    assert!(
        seen.is_empty(),
        "an unchanged refusal is not told again: {seen:?}"
    );
}

#[tokio::test]
async fn a_needed_capability_creates_its_support_service_and_waits_for_it() {
    let web = needing(&["monitoring"]);
    let prometheus = support_profile("prometheus", &["monitoring"], 300);
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_profile(&prometheus);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(SECRET, Reply::Json(200, kubeconfig_secret("eu-kubeconfig")))
        .post(
            format!("{QLEET_API}/supportservices"),
            Reply::created(&support_service("prometheus", "eu")),
        )
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let created = &request(
        &seen,
        &Method::POST,
        &format!("{QLEET_API}/supportservices"),
    )
    .body;
    assert_eq!(created["metadata"]["name"], "prometheus.eu");
    assert_eq!(created["spec"]["profileRef"]["name"], "prometheus");
    assert_eq!(created["spec"]["runtimeRef"]["name"], "eu");
    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForSupportService")
    );
    assert!(
        message.contains("prometheus (monitoring) on eu is Pending"),
        "{message}"
    );
    let dependencies = &written.body["status"]["dependencies"];
    assert_eq!(dependencies[0]["name"], "prometheus.eu", "{dependencies}");
    assert_eq!(dependencies[0]["capability"], "monitoring");
    assert!(events(&seen).is_empty(), "waiting is normal: {seen:?}");
}

#[tokio::test]
async fn a_support_service_another_replica_created_is_read_back_after_a_conflict() {
    let web = needing(&["monitoring"]);
    let mut installing = support_service("prometheus", "eu");
    installing.status = Some(object(json!({
        "state": "Installing",
        "conditions": [condition("Ready", false, "Installing", "0/1 Deployments available")],
    })));
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_profile(&support_profile("prometheus", &["monitoring"], 300));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(SECRET, Reply::Json(200, kubeconfig_secret("eu-kubeconfig")))
        .post(
            format!("{QLEET_API}/supportservices"),
            Reply::status(409, "AlreadyExists"),
        )
        .get(
            format!("{QLEET_API}/supportservices/prometheus.eu"),
            Reply::ok(&installing),
        )
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let (_, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(reason, "WaitingForSupportService");
    assert!(
        message.contains("is Installing (0/1 Deployments available)"),
        "the existing service's progress is shown: {message}"
    );
}

#[tokio::test]
async fn a_support_service_already_cached_is_not_created_again() {
    let web = needing(&["monitoring"]);
    let mut installing = support_service("prometheus", "eu");
    installing.status = Some(object(json!({"state": "Installing"})));
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_profile(&support_profile("prometheus", &["monitoring"], 300))
        .with_support_service(&installing);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(SECRET, Reply::Json(200, kubeconfig_secret("eu-kubeconfig")))
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let (_, reason, _) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(reason, "WaitingForSupportService");
}

#[tokio::test]
async fn the_first_pass_adds_the_finalizer() {
    let mut web = instance("team-a", "web", "eu");
    web.metadata.finalizers = None;
    let mut held = web.clone();
    held.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .patch(INSTANCE, Reply::ok(&held))
        .get(runtime_path("eu"), Reply::not_found())
        .patch(STATUS, Reply::ok(&held));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let patch = &request(&seen, &Method::PATCH, INSTANCE).body;
    assert_eq!(patch["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(
        patch["metadata"]["resourceVersion"], "1",
        "written against the version read"
    );
}

#[tokio::test]
async fn deletion_releases_the_finalizer_once_nothing_was_applied() {
    let web = deleted(instance("team-a", "web", "eu"));
    let harness = Harness::new().with_runtime(&runtime("eu", "eu-west"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(INSTANCE, Reply::ok(&web));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let patch = &request(&seen, &Method::PATCH, INSTANCE).body;
    assert_eq!(patch["metadata"]["finalizers"], json!([]));
    assert!(events(&seen).is_empty());
}

#[tokio::test]
async fn deletion_with_the_runtime_gone_warns_and_releases() {
    let web = deleted(instance("team-a", "web", "eu"));
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(runtime_path("eu"), Reply::not_found())
        .event("team-a")
        .patch(INSTANCE, Reply::ok(&web));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let told = events(&seen);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].0.as_str(), told[0].1.as_str()),
        ("Warning", "RuntimeGone")
    );
    assert_eq!(
        request(&seen, &Method::PATCH, INSTANCE).body["metadata"]["finalizers"],
        json!([])
    );
}

#[tokio::test]
async fn deletion_keeps_the_finalizer_while_applied_objects_cannot_be_removed_yet() {
    let mut web = deleted(instance("team-a", "web", "eu"));
    web.status = Some(object(json!({
        "appliedObjects": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "team-a",
                            "name": "settings", "uid": "uid-settings"}],
    })));
    let harness = Harness::new().with_runtime(&runtime("eu", "eu-west"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        // The runtime's kubeconfig Secret is gone: the objects cannot be reached now.
        .get(SECRET, Reply::not_found())
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let written = request(&seen, &Method::PATCH, STATUS);
    let (_, reason, message) = written.ready();
    assert_eq!(reason, "Deleting");
    assert!(
        message.starts_with("waiting to remove the applied objects"),
        "{message}"
    );
    assert_eq!(
        written.body["status"]["appliedObjects"][0]["name"], "settings",
        "the inventory is kept until the objects are gone"
    );
    assert!(
        requests(&seen, &Method::PATCH, INSTANCE).is_empty(),
        "finalizer kept"
    );
}
