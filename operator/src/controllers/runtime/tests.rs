//! The KubernetesRuntime Qleet against a mocked API server: a provisioned runtime retires
//! itself once idle for its profile's period and not while used; its teardown removes what
//! QleetOS installed on it before the cluster; a registered runtime's deletion waits for
//! the instances on it.

use std::sync::Arc;

use http::Method;
use qleetos_crds::KubernetesRuntime;
use serde_json::json;

use super::reconcile;
use crate::context::Next;
use crate::testing::{
    ApiServer, DELETED_AT, Harness, QLEET_API, Reply, ago, events, instance, object,
    provisioned_runtime, request, requests, runtime, runtime_profile, support_service,
    tenant_policy,
};

const RUNTIME: &str = "/apis/qleetos.io/v1alpha1/kubernetesruntimes/eu-1";
const STATUS: &str = "/apis/qleetos.io/v1alpha1/kubernetesruntimes/eu-1/status";
const PROFILE: &str = "/apis/qleetos.io/v1alpha1/kubernetesruntimeprofiles/standard";
const CLUSTER: &str = "/apis/cluster.x-k8s.io/v1beta2/namespaces/qleetos-clusters/clusters/eu-1";

/// Runtime `eu-1` made from profile `standard`, last found unused `unused_for` seconds ago.
fn idle_runtime(unused_for: i64) -> KubernetesRuntime {
    let mut runtime = provisioned_runtime("eu-1", "eu-west", "standard");
    let status = runtime.status.get_or_insert_with(Default::default);
    status.provisioning = Some(object(json!({
        "phase": "Provisioned", "message": "ready", "unusedSince": ago(unused_for),
        "cluster": "Cluster qleetos-clusters/eu-1",
    })));
    runtime
}

fn deleted(mut runtime: KubernetesRuntime) -> KubernetesRuntime {
    runtime.metadata.deletion_timestamp = Some(object(json!(DELETED_AT)));
    runtime
}

#[tokio::test]
async fn idle_past_the_profile_period_it_is_retired_with_an_event() {
    let eu = idle_runtime(120);
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(
            PROFILE,
            Reply::ok(&runtime_profile("standard", &["eu-west"], 60)),
        )
        .event("default")
        .delete(RUNTIME, Reply::ok(&eu));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(eu), ctx)).await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let told = events(&seen);
    assert_eq!(told.len(), 1, "{told:?}");
    let (type_, reason, note) = &told[0];
    assert_eq!((type_.as_str(), reason.as_str()), ("Normal", "Idle"));
    assert!(note.contains("unused for 60s"), "{note}");
    assert_eq!(requests(&seen, &Method::DELETE, RUNTIME).len(), 1);
}

#[tokio::test]
async fn a_runtime_in_use_is_kept_and_its_idle_mark_cleared() {
    let eu = idle_runtime(120);
    // team-a may provision from any profile (a policy selects it), so its instance counts.
    let harness = Harness::new()
        .with_policy(&tenant_policy("team-a", json!({"namespaces": ["team-a"]})))
        .with_instance(&instance("team-a", "web", "eu-1"));
    let ctx = harness.ctx.clone();
    let cluster = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "eu-1", "namespace": "qleetos-clusters"}, "status": {},
    });
    let scenario = ApiServer::new()
        .get(
            PROFILE,
            Reply::ok(&runtime_profile("standard", &["eu-west"], 60)),
        )
        .patch(CLUSTER, Reply::Json(200, cluster))
        .patch(STATUS, Reply::ok(&eu));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(eu), ctx)).await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    assert!(requests(&seen, &Method::DELETE, RUNTIME).is_empty());
    assert!(
        events(&seen).iter().all(|(_, reason, _)| reason != "Idle"),
        "{seen:?}"
    );
    let provisioning = &request(&seen, &Method::PATCH, STATUS).body["status"]["provisioning"];
    assert_eq!(provisioning["userCount"], 1, "{provisioning}");
    assert!(provisioning.get("unusedSince").is_none(), "{provisioning}");
}

#[tokio::test]
async fn an_instance_of_a_namespace_that_may_not_use_it_keeps_no_cluster_alive() {
    let eu = idle_runtime(120);
    // No policy selects team-b: it may not use provisioned runtimes, so it is no user.
    let harness = Harness::new().with_instance(&instance("team-b", "web", "eu-1"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(
            PROFILE,
            Reply::ok(&runtime_profile("standard", &["eu-west"], 60)),
        )
        .event("default")
        .delete(RUNTIME, Reply::ok(&eu));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(eu), ctx)).await;

    assert_eq!(next.expect("a pass"), Next::Done);
    assert_eq!(requests(&seen, &Method::DELETE, RUNTIME).len(), 1);
}

#[tokio::test]
async fn teardown_removes_its_support_services_before_the_cluster() {
    let eu = deleted(idle_runtime(0));
    let harness = Harness::new().with_support_service(&support_service("traefik", "eu-1"));
    let ctx = harness.ctx.clone();
    let service = format!("{QLEET_API}/supportservices/traefik.eu-1");
    let scenario = ApiServer::new()
        .get(
            format!("{QLEET_API}/workloadinstances"),
            Reply::list::<qleetos_crds::WorkloadInstance>("WorkloadInstanceList", &[]),
        )
        .delete(&service, Reply::ok(&support_service("traefik", "eu-1")))
        .patch(STATUS, Reply::ok(&eu));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(eu), ctx)).await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    assert_eq!(requests(&seen, &Method::DELETE, &service).len(), 1);
    let written = request(&seen, &Method::PATCH, STATUS);
    let (_, reason, message) = written.ready();
    assert_eq!(reason, "Deprovisioning");
    assert_eq!(
        message,
        "removing support services traefik.eu-1 before the cluster"
    );
    assert_eq!(
        written.body["status"]["provisioning"]["phase"],
        "Deprovisioning"
    );
    assert!(
        seen.iter().all(|s| !s.path.contains("cluster.x-k8s.io")),
        "the cluster waits for its services: {seen:?}"
    );
    assert!(
        requests(&seen, &Method::PATCH, RUNTIME).is_empty(),
        "the finalizer holds"
    );
}

#[tokio::test]
async fn deleting_a_registered_runtime_waits_for_its_instances() {
    let mut eu = deleted(runtime("eu", "eu-west"));
    eu.metadata.name = Some("eu".into());
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let path = format!("{QLEET_API}/kubernetesruntimes/eu");
    let scenario = ApiServer::new()
        .get(
            format!("{QLEET_API}/workloadinstances"),
            Reply::list(
                "WorkloadInstanceList",
                &[
                    instance("team-a", "web", "eu"),
                    instance("team-a", "web", "us"),
                ],
            ),
        )
        .event("default")
        .patch(format!("{path}/status"), Reply::ok(&eu));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(eu), ctx)).await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let (_, reason, message) = request(&seen, &Method::PATCH, &format!("{path}/status")).ready();
    assert_eq!(reason, "WaitingForWorkloads");
    assert!(
        message.contains("WorkloadInstances team-a/web-eu to move"),
        "{message}"
    );
    assert!(
        !message.contains("web-us"),
        "only the instances on it: {message}"
    );
    let told = events(&seen);
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].1, "WaitingForWorkloads");
    assert!(
        requests(&seen, &Method::PATCH, &path).is_empty(),
        "the finalizer holds"
    );
}
