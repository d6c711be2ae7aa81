//! The SupportServiceProfile Qleet against a mocked API server: where a profile is
//! installed, and its deletion removing unused services while naming the users of others.

use std::sync::Arc;

use http::Method;
use qleetos_crds::SupportServiceProfile;
use serde_json::json;

use super::reconcile;
use crate::context::Next;
use crate::testing::{
    ApiServer, DELETED_AT, Harness, QLEET_API, Reply, instance, object, request, requests,
    support_profile, support_service,
};

const PROFILE: &str = "/apis/qleetos.io/v1alpha1/supportserviceprofiles/traefik";
const STATUS: &str = "/apis/qleetos.io/v1alpha1/supportserviceprofiles/traefik/status";

fn traefik() -> SupportServiceProfile {
    support_profile("traefik", &["ingress"], 300)
}

fn deleted(mut profile: SupportServiceProfile) -> SupportServiceProfile {
    profile.metadata.deletion_timestamp = Some(object(json!(DELETED_AT)));
    profile
}

#[tokio::test]
async fn its_status_lists_the_runtimes_it_is_installed_in() {
    let profile = traefik();
    let harness = Harness::new()
        .with_support_service(&support_service("traefik", "us"))
        .with_support_service(&support_service("traefik", "eu"))
        .with_support_service(&support_service("prometheus", "eu"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&profile));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Valid"));
    assert_eq!(message, "provides ingress; installed in 2 runtime(s)");
    assert_eq!(written.body["status"]["installedIn"], json!(["eu", "us"]));
}

#[tokio::test]
async fn deletion_removes_unused_services_and_names_the_users_of_the_others() {
    let profile = deleted(traefik());
    let mut web = instance("team-a", "web", "eu");
    web.spec.needs = vec!["ingress".into()];
    let harness = Harness::new()
        .with_profile(&profile)
        .with_instance(&web)
        .with_support_service(&support_service("traefik", "eu"))
        .with_support_service(&support_service("traefik", "us"));
    let ctx = harness.ctx.clone();
    let unused = format!("{QLEET_API}/supportservices/traefik.us");
    let scenario = ApiServer::new()
        .delete(&unused, Reply::ok(&support_service("traefik", "us")))
        .patch(STATUS, Reply::ok(&profile));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;

    assert!(matches!(next.expect("a pass"), Next::After(_)));
    assert_eq!(requests(&seen, &Method::DELETE, &unused).len(), 1);
    let (_, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(reason, "InUse");
    assert!(
        message.contains("still in use on eu (used by team-a/web-eu)"),
        "{message}"
    );
    assert!(
        requests(&seen, &Method::PATCH, PROFILE).is_empty(),
        "the finalizer holds"
    );
}

#[tokio::test]
async fn deletion_releases_the_finalizer_once_no_service_is_left() {
    let profile = deleted(traefik());
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
