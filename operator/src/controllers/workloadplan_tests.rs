//! The WorkloadPlan Qleet against a mocked API server: a plan computed from the caches with
//! nothing written but its own status (no runtime, service or instance created), a plan that
//! cannot be computed saying why, a placement being left, and a plan deleted after its TTL.

use std::sync::Arc;

use http::Method;
use qleetos_crds::{PlanAction, WorkloadInstance, WorkloadPlan, WorkloadPlanStatus};
use serde_json::{Value, json};

use super::reconcile;
use crate::context::Next;
use crate::testing::{
    ApiServer, Harness, Reply, Seen, instance, namespace, object, request, runtime,
    runtime_profile, service_profile, support_profile, tenant_policy,
};

const PLAN: &str = "/apis/qleetos.io/v1alpha1/namespaces/team-a/workloadplans/web-x1";

fn plan(regions: &[&str], extra: Value) -> WorkloadPlan {
    let mut spec = json!({
        "manifests": [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}],
        "placement": {"regions": regions, "provision": "IfNeeded"},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadPlan",
        "metadata": {"name": "web-x1", "namespace": "team-a", "uid": "uid-plan", "generation": 1,
            "resourceVersion": "1", "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {"workloadName": "web", "workload": spec, "ttlSecondsAfterComputed": 600},
    }))
}

/// team-a may provision from profile `standard` and use any capability.
fn provisioning_tenant() -> Harness {
    let policy = tenant_policy(
        "team-a",
        json!({"namespaceSelector": {"matchLabels": {"team": "a"}},
               "runtimeProfiles": ["standard"]}),
    );
    Harness::new()
        .with_policy(&policy)
        .with_namespace(&namespace("team-a", &[("team", "a")]))
}

fn written_status(seen: &[Seen]) -> WorkloadPlanStatus {
    let body = &request(seen, &Method::PATCH, &format!("{PLAN}/status")).body;
    object(body["status"].clone())
}

#[tokio::test]
async fn an_empty_region_plans_a_cluster_its_services_and_objects_and_writes_only_the_plan() {
    let mut standard = runtime_profile("standard", &["ap-south"], 600);
    standard.spec.default = true;
    let harness = provisioning_tenant()
        .with_runtime_profile(&standard)
        .with_profile(&support_profile("cert-manager", &["tls"], 0));
    let ctx = harness.ctx.clone();
    let planned = plan(&["ap-south"], json!({"needs": ["tls"]}));
    let scenario =
        ApiServer::new().patch(format!("{PLAN}/status"), Reply::ok(&plan(&[], json!({}))));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(planned), ctx))
        .await;

    assert_eq!(
        next.expect("a pass"),
        Next::After(std::time::Duration::from_secs(600))
    );
    assert_eq!(seen.len(), 1, "only the plan's status is written: {seen:?}");
    let status = written_status(&seen);
    assert_eq!(
        status.summary.as_deref(),
        Some("1 provision, 1 install, 1 create")
    );
    let placement = &status.placements[0];
    assert_eq!(
        (placement.runtime.as_str(), placement.profile.as_deref()),
        ("standard-ap-south", Some("standard"))
    );
    assert_eq!(
        placement.message.as_deref(),
        Some("cluster not yet provisioned: objects will be created")
    );
    assert_eq!(
        placement.support_services[0].name,
        "cert-manager.standard-ap-south"
    );
    assert_eq!(placement.objects[0].kind, "Deployment");
    assert_eq!(status.observed_generation, Some(1));
}

#[tokio::test]
async fn a_region_no_profile_serves_fails_the_plan_saying_why() {
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario =
        ApiServer::new().patch(format!("{PLAN}/status"), Reply::ok(&plan(&[], json!({}))));
    let (next, seen) = harness
        .run(
            scenario,
            reconcile(Arc::new(plan(&["mars-1"], json!({}))), ctx),
        )
        .await;

    next.expect("a failed plan is a result, not an error");
    let (status, reason, message) =
        request(&seen, &Method::PATCH, &format!("{PLAN}/status")).ready();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "PlanFailed"));
    assert!(message.contains("mars-1"), "{message}");
    assert!(written_status(&seen).placements.is_empty());
}

#[tokio::test]
async fn a_runtime_left_by_the_placement_deletes_what_its_instance_applied() {
    let mut web = crate::testing::workload("team-a", "web", &["eu-west"]);
    web.metadata.uid = Some("uid-web".into());
    let mut left: WorkloadInstance = instance("team-a", "web", "eu");
    left.metadata.owner_references =
        Some(vec![object(json!({"apiVersion": "qleetos.io/v1alpha1",
        "kind": "Workload", "name": "web", "uid": "uid-web"}))]);
    left.status = Some(object(json!({"appliedObjects": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "team-a", "name": "web", "uid": "d1"}]})));
    let mut standard = runtime_profile("standard", &["us-east"], 600);
    standard.spec.default = true;
    let harness = provisioning_tenant()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_runtime_profile(&standard)
        .with_workload(&web)
        .with_instance(&left);
    let ctx = harness.ctx.clone();
    let scenario =
        ApiServer::new().patch(format!("{PLAN}/status"), Reply::ok(&plan(&[], json!({}))));
    let (_, seen) = harness
        .run(
            scenario,
            reconcile(Arc::new(plan(&["us-east"], json!({}))), ctx),
        )
        .await;

    let status = written_status(&seen);
    let leaving = status
        .placements
        .iter()
        .find(|p| p.runtime == "eu")
        .unwrap_or_else(|| panic!("the placement on eu is left: {status:?}"));
    assert_eq!(leaving.action, qleetos_crds::PlanAction::Delete);
    assert_eq!(leaving.objects[0].name, "web");
    assert_eq!(
        status.summary.as_deref(),
        Some("1 provision, 1 create, 2 delete")
    );
}

#[tokio::test]
async fn a_computed_plan_is_deleted_after_its_ttl() {
    let mut old = plan(&["eu-west"], json!({}));
    old.status = Some(object(json!({"observedGeneration": 1,
        "computedAt": "2026-01-01T00:00:00Z", "conditions": []})));
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().delete(PLAN, Reply::ok(&plan(&[], json!({}))));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(old), ctx)).await;

    assert_eq!(next.expect("a pass"), Next::Done);
    assert_eq!(seen.len(), 1, "only the delete: {seen:?}");
}

fn with_rpc_dependency(regions: &[&str]) -> WorkloadPlan {
    let mut planned = plan(regions, json!({}));
    planned.spec.service_dependencies = vec![object(json!({"name": "chain",
        "spec": {"profileRef": {"name": "ethereum-rpc"}, "workloads": ["web"],
                 "parameters": {"chainId": 31337}}}))];
    planned
}

fn rpc_profile() -> qleetos_crds::ServiceProfile {
    service_profile(
        "ethereum-rpc",
        json!({"requires": ["tls"], "manifests": [],
               "parameters": [{"name": "chainId", "type": "integer"}],
               "connection": {"values": {"RPC_URL": "http://$(service.name):8545"}}}),
    )
}

/// The plan of `web` in ap-south with WorkloadServiceDependency `chain` on `ethereum-rpc`.
async fn plan_with_rpc_dependency(harness: Harness) -> Vec<Seen> {
    let harness = harness.with_service_profile(&rpc_profile());
    let ctx = harness.ctx.clone();
    let scenario =
        ApiServer::new().patch(format!("{PLAN}/status"), Reply::ok(&plan(&[], json!({}))));
    let (_, seen) = harness
        .run(
            scenario,
            reconcile(Arc::new(with_rpc_dependency(&["ap-south"])), ctx),
        )
        .await;
    seen
}

#[tokio::test]
async fn a_planned_service_dependency_installs_its_service_and_what_its_profile_requires() {
    let mut standard = runtime_profile("standard", &["ap-south"], 600);
    standard.spec.default = true;
    let harness = provisioning_tenant()
        .with_runtime_profile(&standard)
        .with_profile(&support_profile("cert-manager", &["tls"], 0));
    let seen = plan_with_rpc_dependency(harness).await;

    assert_eq!(seen.len(), 1, "only the plan's status is written: {seen:?}");
    let status = written_status(&seen);
    let services: Vec<_> = status.placements[0]
        .support_services
        .iter()
        .map(|s| (s.profile.as_str(), s.dependency.as_deref(), s.action))
        .collect();
    assert_eq!(
        services,
        [
            ("cert-manager", None, PlanAction::Install),
            ("ethereum-rpc", Some("chain"), PlanAction::Install)
        ]
    );
    assert!(
        status.placements[0].support_services[1]
            .name
            .ends_with(".team-a.standard-ap-south"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_service_profile_the_tenant_may_not_use_is_refused_in_the_plan() {
    let mut standard = runtime_profile("standard", &["ap-south"], 600);
    standard.spec.default = true;
    let policy = tenant_policy(
        "team-a",
        json!({"namespaceSelector": {"matchLabels": {"team": "a"}},
               "runtimeProfiles": ["standard"], "serviceProfiles": ["postgres"]}),
    );
    let harness = Harness::new()
        .with_policy(&policy)
        .with_namespace(&namespace("team-a", &[("team", "a")]))
        .with_runtime_profile(&standard);
    let seen = plan_with_rpc_dependency(harness).await;

    let status = written_status(&seen);
    let placement = &status.placements[0];
    assert!(
        placement
            .objects
            .iter()
            .all(|o| o.action == PlanAction::Refused),
        "{placement:?}"
    );
    let message = placement.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("TenancyViolation") && message.contains("chain"),
        "{message}"
    );
}
