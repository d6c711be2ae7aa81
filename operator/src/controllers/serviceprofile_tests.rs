//! The ServiceProfile Qleet against a mocked API server: its validity in the status, and
//! its finalizer.

use std::sync::Arc;

use http::Method;
use serde_json::json;

use super::reconcile;
use crate::context::Next;
use crate::testing::{ApiServer, DELETED_AT, Harness, Reply, object, request, service_profile};

const PROFILE: &str = "/apis/qleetos.io/v1alpha1/serviceprofiles/postgres";
const STATUS: &str = "/apis/qleetos.io/v1alpha1/serviceprofiles/postgres/status";

#[tokio::test]
async fn an_unknown_variable_makes_it_invalid() {
    let profile = service_profile(
        "postgres",
        json!({"manifests": [{"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": "$(service.nmae)"}}]}),
    );
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&profile));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let (status, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidServiceProfile")
    );
    assert!(
        message.contains("$(service.nmae) is not a known variable"),
        "{message}"
    );
}

#[tokio::test]
async fn a_consistent_profile_is_valid() {
    let profile = service_profile(
        "postgres",
        json!({"manifests": [{"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": "$(service.name)"}}]}),
    );
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&profile));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;

    let (status, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Valid"));
    assert_eq!(message, "installed 0 time(s)");
}

#[tokio::test]
async fn deletion_with_no_service_left_releases_the_finalizer() {
    let mut profile = service_profile("postgres", json!({"manifests": []}));
    profile.metadata.deletion_timestamp = Some(object(json!(DELETED_AT)));
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(PROFILE, Reply::ok(&profile));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    assert_eq!(
        request(&seen, &Method::PATCH, PROFILE).body["metadata"]["finalizers"],
        json!([])
    );
}
