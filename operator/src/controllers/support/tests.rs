//! The SupportService Qleet's use tracking and removal against a mocked API server: a
//! service nobody uses is marked first and removed only after its grace period; a user
//! clears the mark and blocks removal.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use http::Method;
use qleetos_crds::{SupportService, WorkloadInstance};
use serde_json::{Value, json};

use super::reconcile;
use crate::context::Next;
use crate::testing::{
    ApiServer, DELETED_AT, Harness, Reply, Seen, ago, events, instance, object, request, requests,
    support_profile, support_service, tenant_policy,
};

const SERVICE: &str = "/apis/qleetos.io/v1alpha1/supportservices/traefik.eu";
const STATUS: &str = "/apis/qleetos.io/v1alpha1/supportservices/traefik.eu/status";

/// The ingress service on runtime `eu`, marked unused since `unused_since` when given.
fn traefik(unused_since: Option<String>) -> SupportService {
    let mut service = support_service("traefik", "eu");
    if let Some(since) = unused_since {
        service.status = Some(object(json!({"unusedSince": since})));
    }
    service
}

/// An instance of team-a on `eu` exposing a route (it needs `ingress`).
fn ingress_user() -> WorkloadInstance {
    let mut web = instance("team-a", "web", "eu");
    web.spec.needs = vec!["ingress".to_owned()];
    web
}

fn deleted(mut service: SupportService) -> SupportService {
    service.metadata.deletion_timestamp = Some(object(json!(DELETED_AT)));
    service
}

fn time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a time, got {value}"));
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// One DELETE of the service, after a Normal `Idle` Event saying why.
fn assert_retired_with_an_event(seen: &[Seen]) {
    assert_eq!(requests(seen, &Method::DELETE, SERVICE).len(), 1);
    let told = events(seen);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!((told[0].0.as_str(), told[0].1.as_str()), ("Normal", "Idle"));
    assert!(
        told[0].2.contains("unused for its grace period"),
        "{told:?}"
    );
}

#[tokio::test]
async fn the_first_unused_pass_only_marks_it_even_with_no_grace_period() {
    let service = traefik(None);
    // The runtime is not in the cache: the pass stops after tracking use.
    let harness = Harness::new().with_profile(&support_profile("traefik", &["ingress"], 0));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&service));
    let before = Utc::now() - chrono::Duration::seconds(1);
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    assert!(
        requests(&seen, &Method::DELETE, SERVICE).is_empty(),
        "never removed on the pass that first finds it unused"
    );
    let status = &request(&seen, &Method::PATCH, STATUS).body["status"];
    assert!(time(&status["unusedSince"]) >= before, "{status}");
    assert_eq!(status["users"], json!([]));
}

#[tokio::test]
async fn unused_past_the_grace_period_it_deletes_itself() {
    let service = traefik(Some(ago(400)));
    let harness = Harness::new().with_profile(&support_profile("traefik", &["ingress"], 300));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("default")
        .delete(SERVICE, Reply::ok(&service));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    assert_retired_with_an_event(&seen);
}

#[tokio::test]
async fn unused_within_the_grace_period_it_keeps_its_mark() {
    let since = ago(10);
    let service = traefik(Some(since.clone()));
    let harness = Harness::new().with_profile(&support_profile("traefik", &["ingress"], 300));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&service));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    assert!(requests(&seen, &Method::DELETE, SERVICE).is_empty());
    let status = &request(&seen, &Method::PATCH, STATUS).body["status"];
    assert_eq!(
        time(&status["unusedSince"]),
        time(&json!(since)),
        "the grace period counts from the first unused pass"
    );
}

#[tokio::test]
async fn a_user_clears_the_mark_and_keeps_it_past_the_grace_period() {
    let service = traefik(Some(ago(400)));
    let harness = Harness::new()
        .with_profile(&support_profile("traefik", &["ingress"], 300))
        .with_instance(&ingress_user());
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&service));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    assert!(requests(&seen, &Method::DELETE, SERVICE).is_empty());
    let status = &request(&seen, &Method::PATCH, STATUS).body["status"];
    assert_eq!(status["users"], json!(["team-a/web-eu"]));
    assert_eq!(status["userCount"], 1);
    assert!(status.get("unusedSince").is_none(), "{status}");
}

#[tokio::test]
async fn an_instance_refused_the_capability_is_nobodys_user() {
    let service = traefik(Some(ago(400)));
    let no_capabilities = tenant_policy(
        "team-a",
        json!({"namespaces": ["team-a"], "capabilities": []}),
    );
    let harness = Harness::new()
        .with_profile(&support_profile("traefik", &["ingress"], 300))
        .with_policy(&no_capabilities)
        .with_instance(&ingress_user());
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("default")
        .delete(SERVICE, Reply::ok(&service));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    assert_retired_with_an_event(&seen);
}

#[tokio::test]
async fn deletion_waits_while_a_user_remains_and_removes_nothing() {
    let service = deleted(traefik(None));
    let harness = Harness::new()
        .with_profile(&support_profile("traefik", &["ingress"], 300))
        .with_instance(&ingress_user());
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&service));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InUse"));
    assert!(message.contains("in use by team-a/web-eu"), "{message}");
    assert!(
        requests(&seen, &Method::PATCH, SERVICE).is_empty(),
        "the finalizer holds"
    );
}

#[tokio::test]
async fn deletion_with_no_user_and_no_runtime_releases_the_finalizer() {
    let service = deleted(traefik(None));
    let harness = Harness::new().with_profile(&support_profile("traefik", &["ingress"], 300));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(SERVICE, Reply::ok(&service));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let patch = &request(&seen, &Method::PATCH, SERVICE).body;
    assert_eq!(patch["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn a_revision_that_is_gone_fails_with_how_to_pin_another() {
    let mut service = traefik(None);
    service.spec.revision = Some(4);
    let harness = Harness::new().with_profile(&support_profile("traefik", &["ingress"], 0));
    let ctx = harness.ctx.clone();
    let revision = "/apis/apps/v1/namespaces/qleetos-system/controllerrevisions/traefik.r4";
    let scenario = ApiServer::new()
        .get(revision, Reply::not_found())
        .patch(STATUS, Reply::ok(&service));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RevisionNotFound")
    );
    assert!(
        message.starts_with("revision 4 of SupportServiceProfile traefik does not exist"),
        "{message}"
    );
    assert_eq!(written.body["status"]["revision"], 4);
    assert_eq!(written.body["status"]["state"], "Failed");
}

#[tokio::test]
async fn an_earlier_revision_is_installed_from_its_record() {
    let mut service = traefik(None);
    service.spec.revision = Some(1);
    let harness = Harness::new().with_profile(&support_profile("traefik", &["ingress"], 0));
    let ctx = harness.ctx.clone();
    let revision = "/apis/apps/v1/namespaces/qleetos-system/controllerrevisions/traefik.r1";
    let record = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": 1,
        "metadata": {"name": "traefik.r1", "namespace": "qleetos-system",
            "labels": {"qleetos.io/owner-uid": "uid-traefik"}},
        "data": {"provides": ["ingress"], "namespace": "traefik-v1", "manifests": []},
    });
    // The runtime is not in the cache: the pass stops once it knows what it would install.
    let scenario = ApiServer::new()
        .get(revision, Reply::ok(&record))
        .patch(STATUS, Reply::ok(&service));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(service), ctx))
        .await;
    let written = request(&seen, &Method::PATCH, STATUS);
    assert_eq!(written.body["status"]["revision"], 1);
    assert_eq!(written.ready().1, "WaitingForRuntime");
}
