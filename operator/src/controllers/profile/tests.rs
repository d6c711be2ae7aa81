//! The SupportServiceProfile Qleet against a mocked API server: where a profile is
//! installed, and its deletion removing unused services while naming the users of others.

use std::sync::Arc;

use http::Method;
use qleetos_crds::SupportServiceProfile;
use serde_json::{Value, json};

use super::reconcile;
use super::revisions::spec_hash;
use crate::context::Next;
use crate::engine::revisions::HASH_LABEL;
use crate::testing::{
    ApiServer, DELETED_AT, Harness, QLEET_API, Reply, instance, object, request, requests, runtime,
    support_profile, support_service,
};

const PROFILE: &str = "/apis/qleetos.io/v1alpha1/supportserviceprofiles/traefik";
const STATUS: &str = "/apis/qleetos.io/v1alpha1/supportserviceprofiles/traefik/status";
const REVISIONS: &str = "/apis/apps/v1/namespaces/qleetos-system/controllerrevisions";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// `profile` whose status records `revision` as its current spec, with a rollout status.
fn at_revision(
    mut profile: SupportServiceProfile,
    revision: i64,
    rollout: Option<Value>,
) -> SupportServiceProfile {
    profile.status = Some(object(json!({
        "revision": revision, "revisionHash": spec_hash(&profile.spec), "rollout": rollout,
    })));
    profile
}

fn traefik() -> SupportServiceProfile {
    support_profile("traefik", &["ingress"], 300)
}

fn deleted(mut profile: SupportServiceProfile) -> SupportServiceProfile {
    profile.metadata.deletion_timestamp = Some(object(json!(DELETED_AT)));
    profile
}

#[tokio::test]
async fn its_first_pass_records_revision_one_and_lists_the_runtimes() {
    let profile = traefik();
    let harness = Harness::new()
        .with_support_service(&support_service("traefik", "us"))
        .with_support_service(&support_service("traefik", "eu"))
        .with_support_service(&support_service("prometheus", "eu"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(
            REVISIONS,
            Reply::list::<Value>("ControllerRevisionList", &[]),
        )
        .post(REVISIONS, Reply::Echo(201))
        .patch(STATUS, Reply::ok(&profile));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(profile.clone()), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let recorded = &request(&seen, &Method::POST, REVISIONS).body;
    assert_eq!(recorded["metadata"]["name"], "traefik.r1");
    assert_eq!(recorded["revision"], 1);
    assert_eq!(recorded["data"]["provides"], json!(["ingress"]));
    assert_eq!(
        recorded["metadata"]["labels"][HASH_LABEL],
        json!(spec_hash(&profile.spec))
    );
    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Valid"));
    assert_eq!(message, "provides ingress; installed in 2 runtime(s)");
    assert_eq!(written.body["status"]["installedIn"], json!(["eu", "us"]));
    assert_eq!(written.body["status"]["revision"], 1);
}

#[tokio::test]
async fn an_unchanged_spec_records_nothing() {
    let profile = at_revision(traefik(), 3, None);
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&profile));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;
    assert_eq!(
        request(&seen, &Method::PATCH, STATUS).body["status"]["revision"],
        3
    );
}

#[tokio::test]
async fn a_spec_equal_to_an_earlier_revision_is_that_revision_again() {
    let profile = at_revision(traefik(), 2, None);
    let mut changed = profile.clone();
    changed.spec.grace_period_seconds = 60;
    let earlier = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": 1,
        "metadata": {"name": "traefik.r1", "namespace": "qleetos-system",
            "labels": {HASH_LABEL: spec_hash(&changed.spec)}},
    });
    let harness = Harness::new();
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(REVISIONS, Reply::list("ControllerRevisionList", &[earlier]))
        .patch(STATUS, Reply::ok(&changed));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(changed), ctx))
        .await;
    assert_eq!(
        request(&seen, &Method::PATCH, STATUS).body["status"]["revision"],
        1
    );
}

/// Runtimes `canary` (wave 1), `second` (wave 2) and `third` (the rest), each with the
/// profile's service reporting `installed` in `state`.
fn three_runtimes(installed: [(i64, &str); 3]) -> Harness {
    let mut harness = Harness::new();
    for ((name, region), (revision, state)) in RUNTIMES.iter().zip(installed) {
        let mut service = support_service("traefik", name);
        service.spec.revision = Some(revision);
        service.status = Some(object(json!({
            "observedGeneration": 1, "state": state, "revision": revision,
            "conditions": [{"type": "Ready", "status": "False", "reason": "InstallFailed",
                "message": "pod agent-1 container agent: ErrImagePull", "lastTransitionTime": DELETED_AT}],
        })));
        harness = harness
            .with_runtime(&runtime(name, region))
            .with_support_service(&service);
    }
    harness
}

const RUNTIMES: [(&str, &str); 3] = [
    ("canary", "eu-west-1"),
    ("second", "us-east-1"),
    ("third", "ap-south-1"),
];

fn staged(revision: i64, rollout: Value) -> SupportServiceProfile {
    let mut profile = traefik();
    profile.spec.rollout = Some(object(json!({
        "waves": [{"regions": ["eu-west-1"]}, {"regions": ["us-east-1"]}],
        "bakeSeconds": 0,
    })));
    at_revision(profile, revision, Some(rollout))
}

#[tokio::test]
async fn a_new_revision_goes_to_the_first_wave_only() {
    let profile = staged(
        2,
        json!({"phase": "Complete", "revision": 1, "stableRevision": 1, "wave": 4, "waves": 3}),
    );
    let harness = three_runtimes([(1, "Ready"), (1, "Ready"), (1, "Ready")]);
    let ctx = harness.ctx.clone();
    let canary = format!("{QLEET_API}/supportservices/traefik.canary");
    let scenario = ApiServer::new()
        .patch(&canary, Reply::ok(&support_service("traefik", "canary")))
        .event("default")
        .patch(STATUS, Reply::ok(&profile));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;

    assert!(
        matches!(next.expect("a pass"), Next::After(_)),
        "the deadline is watched"
    );
    assert_eq!(
        request(&seen, &Method::PATCH, &canary).body,
        json!({"spec": {"revision": 2}})
    );
    let written = request(&seen, &Method::PATCH, STATUS);
    let rollout = &written.body["status"]["rollout"];
    assert_eq!(
        (rollout["phase"].as_str(), rollout["wave"].as_i64()),
        (Some("Progressing"), Some(1))
    );
    assert_eq!(rollout["stableRevision"], 1);
    let runtimes = &written.body["status"]["runtimes"];
    assert_eq!(
        runtimes[2],
        json!({"runtime": "third", "wave": 3, "revision": 1, "installedRevision": 1, "state": "Ready"})
    );
    let (_, reason, message) = written.ready();
    assert_eq!(reason, "Progressing");
    assert!(
        message.contains("canary to install revision 2"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failing_second_wave_halts_and_the_third_stays_on_the_stable_revision() {
    let profile = staged(
        2,
        json!({"phase": "Progressing", "revision": 2, "stableRevision": 1, "wave": 2, "waves": 3,
            "waveStartedAt": "2099-01-01T00:00:00Z"}),
    );
    let harness = three_runtimes([(2, "Ready"), (2, "Failed"), (1, "Ready")]);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("default")
        .patch(STATUS, Reply::ok(&profile));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;

    assert_eq!(
        next.expect("a pass"),
        Next::Done,
        "a halt waits for a person"
    );
    let event = &requests(&seen, &Method::POST, EVENTS)[0].body;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("RolloutHalted"))
    );
    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "RolloutHalted")
    );
    assert!(
        message.contains("halted at wave 2 of 3: second: pod agent-1 container agent: ErrImagePull; later waves stay on revision 1"),
        "{message}"
    );
}

#[tokio::test]
async fn without_a_rollout_every_service_follows_the_profile() {
    let profile = at_revision(traefik(), 2, None);
    let harness = three_runtimes([(1, "Ready"), (2, "Ready"), (2, "Ready")]);
    let ctx = harness.ctx.clone();
    let mut scenario = ApiServer::new();
    for (name, _) in RUNTIMES {
        scenario = scenario.patch(
            format!("{QLEET_API}/supportservices/traefik.{name}"),
            Reply::ok(&support_service("traefik", name)),
        );
    }
    let scenario = scenario.patch(STATUS, Reply::ok(&profile));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;
    let canary = format!("{QLEET_API}/supportservices/traefik.canary");
    assert_eq!(
        request(&seen, &Method::PATCH, &canary).body,
        json!({"spec": {"revision": null}})
    );
    assert!(
        request(&seen, &Method::PATCH, STATUS).body["status"]
            .get("rollout")
            .is_none()
    );
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
    let scenario = ApiServer::new()
        .delete(
            REVISIONS,
            Reply::ok(&json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        )
        .patch(PROFILE, Reply::ok(&profile));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(profile), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let removed = request(&seen, &Method::DELETE, REVISIONS);
    assert!(
        removed
            .query
            .contains("qleetos.io%2Fowner-uid%3Duid-traefik"),
        "{}",
        removed.query
    );
    assert_eq!(
        request(&seen, &Method::PATCH, PROFILE).body["metadata"]["finalizers"],
        json!([])
    );
}
