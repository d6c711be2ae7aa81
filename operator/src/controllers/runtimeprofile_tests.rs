//! The KubernetesRuntimeProfile Qleet against a mocked API server: its consistency with the
//! other profiles, and its deletion waiting for the runtimes made from it.

use std::sync::Arc;

use http::Method;
use qleetos_crds::KubernetesRuntimeProfile;
use serde_json::json;

use super::reconcile;
use crate::context::Next;
use crate::testing::{
    ApiServer, DELETED_AT, Harness, Reply, object, provisioned_runtime, request, requests,
    runtime_profile,
};

const PROFILE: &str = "/apis/qleetos.io/v1alpha1/kubernetesruntimeprofiles/standard";
const STATUS: &str = "/apis/qleetos.io/v1alpha1/kubernetesruntimeprofiles/standard/status";

fn default_for(name: &str, regions: &[&str]) -> KubernetesRuntimeProfile {
    let mut profile = runtime_profile(name, regions, 600);
    profile.spec.default = true;
    profile
}

fn deleted(mut profile: KubernetesRuntimeProfile) -> KubernetesRuntimeProfile {
    profile.metadata.deletion_timestamp = Some(object(json!(DELETED_AT)));
    profile
}

#[tokio::test]
async fn two_defaults_for_one_region_are_reported() {
    let standard = default_for("standard", &["eu-west", "us-east"]);
    let large = default_for("large", &["eu-west"]);
    let harness = Harness::new()
        .with_runtime_profile(&standard)
        .with_runtime_profile(&large);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&standard));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(standard), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let (status, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidRuntimeProfile")
    );
    assert!(
        message.contains("KubernetesRuntimeProfile large is also the default for eu-west"),
        "{message}"
    );
}

#[tokio::test]
async fn a_consistent_profile_counts_its_runtimes() {
    let standard = default_for("standard", &["eu-west"]);
    let harness = Harness::new()
        .with_runtime_profile(&standard)
        .with_runtime_profile(&default_for("large", &["us-east"]))
        .with_runtime(&provisioned_runtime("eu-1", "eu-west", "standard"))
        .with_runtime(&provisioned_runtime("us-1", "us-east", "large"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&standard));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(standard), ctx))
        .await;

    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Valid"));
    assert_eq!(message, "serves eu-west; 1 runtime(s) made from it");
    assert_eq!(written.body["status"]["runtimes"], json!(["eu-1"]));
}

#[tokio::test]
async fn deletion_waits_for_the_runtimes_made_from_it() {
    let standard = deleted(runtime_profile("standard", &["eu-west"], 600));
    let harness = Harness::new().with_runtime(&provisioned_runtime("eu-1", "eu-west", "standard"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&standard));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(standard), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    let (_, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(reason, "InUse");
    assert!(message.contains("waits for runtimes eu-1"), "{message}");
    assert!(
        requests(&seen, &Method::PATCH, PROFILE).is_empty(),
        "the finalizer holds"
    );
}

#[tokio::test]
async fn deletion_with_no_runtime_left_releases_the_finalizer() {
    let standard = deleted(runtime_profile("standard", &["eu-west"], 600));
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(PROFILE, Reply::ok(&standard));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(standard), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    assert_eq!(
        request(&seen, &Method::PATCH, PROFILE).body["metadata"]["finalizers"],
        json!([])
    );
}
