//! The Workload Qleet's placement against a mocked API server: one instance per selected
//! runtime, instances moved off runtimes no longer selected, a namespace's fence shown in
//! the status, and the placements' health summed up.

use std::sync::Arc;

use http::Method;
use kube::ResourceExt;
use qleetos_crds::{Workload, WorkloadInstance};
use serde_json::{Value, json};

use super::reconcile;
use crate::context::Next;
use crate::names::instance_name;
use crate::testing::{
    ApiServer, Harness, QLEET_API, Reply, Seen, condition, events, instance, namespace, object,
    request, requests, runtime, tenant_policy, workload,
};

const STATUS: &str = "/apis/qleetos.io/v1alpha1/namespaces/team-a/workloads/web/status";

fn instance_path(runtime: &str) -> String {
    format!(
        "{QLEET_API}/namespaces/team-a/workloadinstances/{}",
        instance_name("web", runtime)
    )
}

/// The instance the Workload Qleet applied in `seen` for `runtime`, as the API server
/// would then hold it, with `ready` as its Ready condition at the current generation.
fn applied(seen: &[Seen], runtime: &str, ready: (bool, &str, &str)) -> WorkloadInstance {
    let body = &request(seen, &Method::PATCH, &instance_path(runtime)).body;
    let mut instance: WorkloadInstance = object(body.clone());
    instance.metadata.namespace = Some("team-a".into());
    instance.metadata.uid = Some(format!("uid-{runtime}"));
    instance.metadata.generation = Some(1);
    instance.metadata.resource_version = Some("2".into());
    let (ok, reason, message) = ready;
    instance.status = Some(object(json!({
        "observedGeneration": 1,
        "conditions": [condition("Ready", ok, reason, message)],
    })));
    instance
}

/// `web` of team-a in both regions, placed once: the instances it created.
async fn first_pass(web: &Workload) -> Vec<Seen> {
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_runtime(&runtime("us", "us-east"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .patch(instance_path("eu"), Reply::Echo(200))
        .patch(instance_path("us"), Reply::Echo(200));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;
    assert_eq!(next.expect("a pass"), Next::Done);
    seen
}

#[tokio::test]
async fn one_instance_is_applied_per_selected_runtime() {
    let web = workload("team-a", "web", &["eu-west", "us-east"]);
    let seen = first_pass(&web).await;

    for runtime in ["eu", "us"] {
        let wanted = request(&seen, &Method::PATCH, &instance_path(runtime));
        assert!(
            wanted.query.contains("fieldManager="),
            "server-side apply: {}",
            wanted.query
        );
        let body = &wanted.body;
        assert_eq!(body["spec"]["runtimeRef"]["name"], runtime);
        assert_eq!(body["spec"]["workloadRef"]["name"], "web");
        assert_eq!(body["spec"]["manifests"], json!(web.spec.manifests));
        assert_eq!(body["metadata"]["labels"]["qleetos.io/workload"], "web");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-web");
        assert_eq!(
            body["metadata"]["finalizers"],
            json!([crate::controllers::instance::FINALIZER]),
            "created with the instance Qleet's finalizer"
        );
    }
    // Nothing reported yet: the first status waits for the placements.
    assert!(requests(&seen, &Method::PATCH, STATUS).is_empty());
}

#[tokio::test]
async fn ready_placements_make_the_workload_ready() {
    let web = workload("team-a", "web", &["eu-west", "us-east"]);
    let seen = first_pass(&web).await;
    let eu = applied(&seen, "eu", (true, "RolledOut", "2 objects applied"));
    let us = applied(&seen, "us", (true, "RolledOut", "2 objects applied"));
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_runtime(&runtime("us", "us-east"))
        .with_instance(&eu)
        .with_instance(&us);
    let ctx = harness.ctx.clone();
    // The instances are as wanted: nothing is applied again, only the status written.
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "AllPlacementsReady")
    );
    assert_eq!(message, "ready on 2 runtime(s)");
    assert_eq!(written.body["status"]["readyPlacements"], "2/2");
    assert!(events(&seen).is_empty());
}

#[tokio::test]
async fn a_failing_placement_is_reported_with_a_warning() {
    let web = workload("team-a", "web", &["eu-west", "us-east"]);
    let seen = first_pass(&web).await;
    let eu = applied(&seen, "eu", (false, "ApplyFailed", "forbidden"));
    let us = applied(&seen, "us", (true, "RolledOut", "2 objects applied"));
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_runtime(&runtime("us", "us-east"))
        .with_instance(&eu)
        .with_instance(&us);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("team-a")
        .patch(STATUS, Reply::ok(&web));
    let (_, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    let (_, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(reason, "PlacementFailed");
    assert!(message.contains("eu: ApplyFailed: forbidden"), "{message}");
    let told = events(&seen);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        (told[0].0.as_str(), told[0].1.as_str()),
        ("Warning", "PlacementFailed")
    );
}

#[tokio::test]
async fn an_instance_on_a_runtime_no_longer_selected_is_deleted() {
    let web = workload("team-a", "web", &["eu-west"]);
    let mut old = instance("team-a", "web", "old");
    old.metadata.owner_references = Some(vec![object(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload", "name": "web",
        "uid": "uid-web", "controller": true,
    }))]);
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_instance(&old);
    let ctx = harness.ctx.clone();
    let old_path = format!("{QLEET_API}/namespaces/team-a/workloadinstances/web-old");
    let scenario = ApiServer::new()
        .patch(instance_path("eu"), Reply::Echo(200))
        .delete(&old_path, Reply::ok(&old));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    assert_eq!(next.expect("a pass"), Next::Done);
    assert_eq!(requests(&seen, &Method::DELETE, &old_path).len(), 1);
    assert_eq!(
        request(&seen, &Method::PATCH, &instance_path("eu")).body["spec"]["runtimeRef"]["name"],
        "eu"
    );
}

#[tokio::test]
async fn a_namespace_fenced_out_of_every_runtime_is_told_why() {
    let web = workload("team-a", "web", &["eu-west"]);
    // Namespaces labelled tier=bronze may only use runtimes in us-east.
    let bronze = tenant_policy(
        "bronze",
        json!({"namespaceSelector": {"matchLabels": {"tier": "bronze"}},
               "runtimes": {"regions": ["us-east"]}}),
    );
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_policy(&bronze)
        .with_namespace(&namespace("team-a", &[("tier", "bronze")]));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;

    assert_eq!(next.expect("a pass"), Next::Done);
    let (status, reason, message) = request(&seen, &Method::PATCH, STATUS).ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NoMatchingRuntime")
    );
    assert!(
        message.contains("1 runtime(s) are outside what this namespace may use"),
        "{message}"
    );
    assert!(
        seen.iter().all(|s| !s.path.contains("/workloadinstances/")),
        "no instance on a runtime the namespace may not use: {seen:?}"
    );

    // Without the label the policy does not select team-a: its default grant allows every
    // registered runtime, and the workload is placed.
    let harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_policy(&bronze)
        .with_namespace(&namespace("team-a", &[]));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(instance_path("eu"), Reply::Echo(200));
    let (_, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;
    assert_eq!(
        request(&seen, &Method::PATCH, &instance_path("eu")).body["spec"]["runtimeRef"]["name"],
        "eu"
    );
}

const REVISIONS: &str = "/apis/apps/v1/namespaces/team-a/controllerrevisions";

/// `web` in eu-west (wave 1) and us-east (the rest), whose instances run revision 1 (its
/// current spec) Ready; the spec then changes `images`.
async fn changed_with_a_rollout() -> (Workload, Vec<WorkloadInstance>) {
    let mut web = workload("team-a", "web", &["eu-west", "us-east"]);
    let seen = first_pass(&web).await;
    web.spec.rollout = Some(object(
        json!({"waves": [{"regions": ["eu-west"]}], "bakeSeconds": 0}),
    ));
    let mut instances = Vec::new();
    for runtime in ["eu", "us"] {
        let mut running = applied(&seen, runtime, (true, "RolledOut", "2 objects applied"));
        running
            .annotations_mut()
            .insert(super::rollout::REVISION_ANNOTATION.into(), "1".into());
        instances.push(running);
    }
    let hash = crate::engine::revisions::hash_of(&super::revisions::value_of(&web.spec.template()));
    web.status = Some(object(json!({
        "revision": 1, "revisionHash": hash,
        "rollout": {"phase": "Complete", "revision": 1, "stableRevision": 1, "wave": 3, "waves": 2},
    })));
    web.spec.images = [("web".to_owned(), "nginx:1.29".to_owned())].into();
    web.metadata.generation = Some(2);
    (web, instances)
}

#[tokio::test]
async fn a_changed_workload_records_its_new_revision_and_moves_only_the_first_wave() {
    let (web, instances) = changed_with_a_rollout().await;
    let kept = crate::engine::revisions::revision_name("web", 1);
    let record = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": 1,
        "metadata": {"name": kept, "namespace": "team-a", "labels": {"qleetos.io/owner-uid": "uid-web"}},
        "data": super::revisions::value_of(&super::revisions::template_of(&instances[1])),
    });
    let mut harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_runtime(&runtime("us", "us-east"));
    for running in &instances {
        harness = harness.with_instance(running);
    }
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .get(REVISIONS, Reply::list("ControllerRevisionList", &[record]))
        .post(REVISIONS, Reply::Echo(201))
        .event("team-a")
        .patch(instance_path("eu"), Reply::Echo(200))
        .patch(STATUS, Reply::ok(&web));
    let (_, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    let recorded = &request(&seen, &Method::POST, REVISIONS).body;
    assert_eq!(recorded["metadata"]["name"], "web.r2");
    assert_eq!(recorded["data"]["images"]["web"], "nginx:1.29");
    let eu = &request(&seen, &Method::PATCH, &instance_path("eu")).body;
    assert_eq!(eu["spec"]["images"]["web"], "nginx:1.29");
    assert_eq!(eu["metadata"]["annotations"]["qleetos.io/revision"], "2");
    assert!(
        requests(&seen, &Method::PATCH, &instance_path("us")).is_empty(),
        "us-east is in the last wave: it keeps revision 1"
    );
    let status = &request(&seen, &Method::PATCH, STATUS).body["status"];
    assert_eq!(status["revision"], 2);
    assert_eq!(status["rollout"]["phase"], "Progressing");
    let placements = status["placements"].as_array().expect("placements");
    let us = placements
        .iter()
        .find(|p| p["runtime"] == "us")
        .expect("us");
    assert_eq!(
        (us["revision"].as_i64(), us["wave"].as_i64()),
        (Some(1), Some(2))
    );
}

#[tokio::test]
async fn without_a_rollout_a_template_is_kept_when_it_leaves_the_spec() {
    let (mut web, instances) = changed_with_a_rollout().await;
    web.spec.rollout = None;
    if let Some(status) = web.status.as_mut() {
        status.rollout = None;
    }
    let mut harness = Harness::new()
        .with_runtime(&runtime("eu", "eu-west"))
        .with_runtime(&runtime("us", "us-east"));
    for running in &instances {
        harness = harness.with_instance(running);
    }
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .post(REVISIONS, Reply::Echo(201))
        .get(
            REVISIONS,
            Reply::list::<serde_json::Value>("ControllerRevisionList", &[]),
        )
        .patch(instance_path("eu"), Reply::Echo(200))
        .patch(instance_path("us"), Reply::Echo(200))
        .patch(STATUS, Reply::ok(&web));
    let (_, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    let kept = &request(&seen, &Method::POST, REVISIONS).body;
    assert_eq!(kept["metadata"]["name"], "web.r1");
    assert_eq!(
        kept["data"]["images"],
        json!(null),
        "revision 1 set no images"
    );
    for runtime in ["eu", "us"] {
        let body = &request(&seen, &Method::PATCH, &instance_path(runtime)).body;
        assert_eq!(
            body["spec"]["images"]["web"], "nginx:1.29",
            "every placement at once"
        );
    }
    assert_eq!(
        request(&seen, &Method::PATCH, STATUS).body["status"]["revision"],
        2
    );
}

/// A Workload requiring approval on a runtime not Ready yet (so its plan needs no runtime
/// client), at `generation`, approving `approves` (the annotation), with `approval` as status.
fn awaiting_approval(generation: i64, approves: Option<&str>, approval: Option<Value>) -> Workload {
    let mut web = workload("team-a", "web", &["eu-west"]);
    web.spec.approval = qleetos_crds::Approval::Required;
    web.metadata.generation = Some(generation);
    if let Some(approves) = approves {
        web.metadata.annotations = Some(
            [(
                qleetos_crds::plan::APPROVE_ANNOTATION.to_owned(),
                approves.to_owned(),
            )]
            .into(),
        );
    }
    if let Some(approval) = approval {
        web.status = Some(object(json!({"revision": 1,
            "revisionHash": crate::engine::revisions::hash_of(
                &super::revisions::value_of(&web.spec.template())),
            "approval": approval})));
    }
    web
}

fn unready_runtime() -> qleetos_crds::KubernetesRuntime {
    let mut eu = runtime("eu", "eu-west");
    eu.status = Some(object(json!({"conditions": [
        condition("Ready", false, "Unreachable", "no answer")]})));
    eu
}

#[tokio::test]
async fn a_workload_requiring_approval_is_planned_and_not_placed() {
    let web = awaiting_approval(1, None, None);
    let harness = Harness::new().with_runtime(&unready_runtime());
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .post(REVISIONS, Reply::Echo(201))
        .event("team-a")
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    next.expect("a pass");
    assert!(
        requests(&seen, &Method::PATCH, &instance_path("eu")).is_empty(),
        "placed before approval"
    );
    let written = request(&seen, &Method::PATCH, STATUS);
    let (status, reason, message) = written.ready();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PlanPendingApproval")
    );
    assert!(message.contains("qleetctl approve web"), "{message}");
    let approval = &written.body["status"]["approval"];
    assert_eq!(
        (approval["state"].as_str(), approval["generation"].as_i64()),
        (Some("Pending"), Some(1))
    );
    assert_eq!(approval["placements"][0]["objects"][0]["action"], "Create");
    assert_eq!(events(&seen)[0].1, "PlanPendingApproval");
}

#[tokio::test]
async fn approving_the_planned_generation_places_it() {
    let pending = json!({"state": "Pending", "generation": 1, "summary": "1 create"});
    let web = awaiting_approval(1, Some("1"), Some(pending));
    let harness = Harness::new().with_runtime(&unready_runtime());
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("team-a")
        .patch(instance_path("eu"), Reply::Echo(200))
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    next.expect("a pass");
    assert_eq!(events(&seen)[0].1, "PlanApproved");
    let placed = &request(&seen, &Method::PATCH, &instance_path("eu")).body;
    assert_eq!(placed["spec"]["runtimeRef"]["name"], "eu");
    let approval = &request(&seen, &Method::PATCH, STATUS).body["status"]["approval"];
    assert_eq!(approval["state"], "Approved");
    assert_eq!(
        (
            approval["approvedGeneration"].as_i64(),
            approval["approvedRevision"].as_i64()
        ),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn an_approval_of_another_generation_is_stale_and_applies_nothing() {
    let pending = json!({"state": "Pending", "generation": 2, "summary": "1 create"});
    let web = awaiting_approval(2, Some("1"), Some(pending));
    let harness = Harness::new().with_runtime(&unready_runtime());
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("team-a")
        .patch(STATUS, Reply::ok(&web));
    let (next, seen) = harness.run(scenario, reconcile(Arc::new(web), ctx)).await;

    next.expect("a pass");
    assert_eq!(events(&seen)[0].1, "PlanStale");
    assert!(requests(&seen, &Method::PATCH, &instance_path("eu")).is_empty());
    let written = request(&seen, &Method::PATCH, STATUS);
    let message = written.body["status"]["approval"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("the approval of generation 1 is stale"),
        "{message}"
    );
}

/// `web` in eu-west, placed on `eu-b` (Ready), asked to rebalance: placed anew it would go
/// to `eu-a` (first by name).
async fn placed_on_eu_b_and_asked_to_rebalance() -> (Workload, WorkloadInstance) {
    let mut web = workload("team-a", "web", &["eu-west"]);
    let harness = Harness::new().with_runtime(&runtime("eu-b", "eu-west"));
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new().patch(instance_path("eu-b"), Reply::Echo(200));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;
    let on_b = applied(&seen, "eu-b", (true, "RolledOut", "1 object applied"));
    web.metadata.annotations.get_or_insert_default().insert(
        qleetos_crds::REBALANCE_ANNOTATION.to_owned(),
        "t1".to_owned(),
    );
    (web, on_b)
}

fn both_runtimes() -> Harness {
    Harness::new()
        .with_runtime(&runtime("eu-a", "eu-west"))
        .with_runtime(&runtime("eu-b", "eu-west"))
}

#[tokio::test]
async fn a_rebalance_places_anew_and_keeps_the_old_placement_until_the_new_one_is_ready() {
    let (web, on_b) = placed_on_eu_b_and_asked_to_rebalance().await;
    let harness = both_runtimes().with_instance(&on_b);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("team-a")
        .patch(instance_path("eu-a"), Reply::Echo(200))
        .patch(STATUS, Reply::ok(&web));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(web.clone()), ctx))
        .await;

    let b_path = instance_path("eu-b");
    assert!(
        requests(&seen, &Method::DELETE, &b_path).is_empty(),
        "eu-b kept"
    );
    let rebalance = &request(&seen, &Method::PATCH, STATUS).body["status"]["rebalance"];
    assert_eq!(rebalance["state"], "Moving");
    assert_eq!(
        (&rebalance["from"], &rebalance["to"]),
        (&json!(["eu-b"]), &json!(["eu-a"]))
    );
    let told = events(&seen);
    assert_eq!(
        (told[0].0.as_str(), told[0].1.as_str()),
        ("Normal", "Rebalancing")
    );

    // eu-a is Ready: eu-b goes, the rebalance is done.
    let on_a = applied(&seen, "eu-a", (true, "RolledOut", "1 object applied"));
    let mut moving = web.clone();
    moving.status = Some(object(json!({"rebalance": rebalance})));
    let harness = both_runtimes().with_instance(&on_a).with_instance(&on_b);
    let ctx = harness.ctx.clone();
    let scenario = ApiServer::new()
        .event("team-a")
        .delete(&b_path, Reply::ok(&on_b))
        .patch(STATUS, Reply::ok(&web));
    let (_, seen) = harness
        .run(scenario, reconcile(Arc::new(moving), ctx))
        .await;

    assert_eq!(requests(&seen, &Method::DELETE, &b_path).len(), 1);
    let rebalance = &request(&seen, &Method::PATCH, STATUS).body["status"]["rebalance"];
    assert_eq!(rebalance["state"], "Done");
    assert_eq!(rebalance["message"], "moved from eu-b to eu-a");
    let told = events(&seen);
    assert_eq!(
        (told[0].0.as_str(), told[0].1.as_str()),
        ("Normal", "Rebalanced")
    );
}

const INSTANCES: &str = "/apis/qleetos.io/v1alpha1/namespaces/team-a/workloadinstances";
const WORKLOAD: &str = "/apis/qleetos.io/v1alpha1/namespaces/team-a/workloads/web";

/// `web` of team-a being deleted, with no instance in the cache.
fn deleting() -> Workload {
    let mut web = workload("team-a", "web", &["eu-west"]);
    web.metadata.deletion_timestamp = Some(object(json!(crate::testing::DELETED_AT)));
    web
}

/// `web` once its finalizer is gone, as the API server answers the release.
fn released() -> Workload {
    let mut web = deleting();
    web.metadata.finalizers = None;
    web
}

/// The API server's answer to a one-item list: its current revision, `revision`.
fn current_revision(revision: &str) -> Reply {
    Reply::Json(
        200,
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {"resourceVersion": revision}, "items": []}),
    )
}

/// The deletion pass of `web` while the instance watch has delivered up to `cache_revision`
/// and the API server is at 100; the instance lists it made.
async fn last_look_with_cache_at(cache_revision: &str, scenario: ApiServer) -> Vec<Seen> {
    let harness = Harness::new();
    let fences = &harness.ctx.fences;
    fences.observed("WorkloadInstance", Some(cache_revision));
    let ctx = harness.ctx.clone();
    let scenario = scenario.patch(WORKLOAD, Reply::ok(&released()));
    let (next, seen) = harness
        .run(scenario, reconcile(Arc::new(deleting()), ctx))
        .await;
    assert_eq!(next.expect("a pass"), Next::Done);
    requests(&seen, &Method::GET, INSTANCES)
        .into_iter()
        .cloned()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_caught_up_instance_cache_lets_a_deleted_workload_go_without_listing_its_namespace() {
    let scenario = ApiServer::new().get(INSTANCES, current_revision("100"));
    let lists = last_look_with_cache_at("120", scenario).await;

    assert_eq!(lists.len(), 1, "only the one-item list: {lists:?}");
    assert!(lists[0].query.contains("limit=1"), "{}", lists[0].query);
}

#[tokio::test(start_paused = true)]
async fn a_lagging_instance_cache_makes_the_last_look_list_from_the_api() {
    let empty = json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadInstanceList",
        "metadata": {"resourceVersion": "100"}, "items": []});
    let scenario = ApiServer::new()
        .get(INSTANCES, current_revision("100"))
        .get(INSTANCES, Reply::Json(200, empty));
    let lists = last_look_with_cache_at("50", scenario).await;

    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(
        lists[1].query.contains("labelSelector"),
        "the quorum list by the Workload's label: {}",
        lists[1].query
    );
}
