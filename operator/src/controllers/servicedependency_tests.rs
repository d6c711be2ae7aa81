//! The WorkloadServiceDependency Qleet against a mocked API server: what its status says
//! about its profile, its workloads and their services.

use std::sync::Arc;

use http::Method;
use serde_json::json;

use super::reconcile;
use crate::context::Next;
use crate::testing::{
    ApiServer, Harness, Reply, instance, object, request, service_dependency, service_profile,
    workload,
};

const STATUS: &str =
    "/apis/qleetos.io/v1alpha1/namespaces/team-a/workloadservicedependencies/db/status";

fn postgres() -> qleetos_crds::ServiceProfile {
    service_profile("postgres", json!({"manifests": []}))
}

#[tokio::test]
async fn a_missing_profile_is_reported() {
    let db = service_dependency("team-a", "db", "postgres", &["web"]);
    let harness = Harness::new().with_workload(&workload("team-a", "web", &["eu-west"]));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&db));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(db), ctx)).await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let (status, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ProfileNotFound")
    );
    assert_eq!(message, "ServiceProfile postgres does not exist");
}

#[tokio::test]
async fn no_existing_workload_means_nothing_is_bound() {
    let db = service_dependency("team-a", "db", "postgres", &["web"]);
    // `web` exists, but in another namespace.
    let harness = Harness::new()
        .with_service_profile(&postgres())
        .with_workload(&workload("team-b", "web", &["eu-west"]));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&db));
    let (_, seen) = harness.run(scenario, reconcile(Arc::new(db), ctx)).await;

    let written = request(&seen, &Method::PATCH, STATUS);
    let (_, reason, message) = written.ready();
    assert_eq!(reason, "NoBoundWorkload");
    assert_eq!(message, "none of the named workloads (web) exists");
    assert_eq!(written.body["status"]["boundWorkloads"], json!([]));
}

#[tokio::test]
async fn a_placement_whose_service_is_ready_binds_it() {
    let db = service_dependency("team-a", "db", "postgres", &["web"]);
    let mut web_eu = instance("team-a", "web", "eu");
    web_eu.status = Some(object(json!({"dependencies": [{
        "capability": "postgres", "kind": "SupportService", "name": "postgres.team-a.eu",
        "state": "Ready", "message": "installed", "dependency": "db",
    }]})));
    let harness = Harness::new()
        .with_service_profile(&postgres())
        .with_workload(&workload("team-a", "web", &["eu-west"]))
        .with_instance(&web_eu);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&db));
    let (_, seen) = harness.run(scenario, reconcile(Arc::new(db), ctx)).await;

    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Bound"));
    assert_eq!(message, "1 placement(s) of web use it");
    let services = &written.body["status"]["services"];
    assert_eq!(services[0]["runtime"], "eu", "{services}");
    assert_eq!(services[0]["supportService"], "postgres.team-a.eu");
}
