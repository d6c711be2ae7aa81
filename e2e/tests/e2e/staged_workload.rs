//! A Workload's revisions and staged rollout across three regions (issue 27), on the runtimes
//! of the staged environment: revision 2 pulls the image from each region's mirror and
//! us-east's does not exist, so the second wave fails for real (kwok's `ErrImagePull`), the
//! rollout halts with ap-south untouched and, with `onFailure: Rollback`, the moved placements
//! return to revision 1; then rollbacks through qleetctl and through the gateway, a healthy
//! revision rolled out wave by wave, and one paused after its first wave, then resumed.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::Client;
use kube::api::{Api, ListParams};
use qleetos_crds::Workload;
use qleetos_crds::staged::RolloutPhase;
use qleetos_e2e::charts::ChartRepository;
use qleetos_e2e::environment::Environment;
use qleetos_e2e::gateway::GatewayProcess;
use serde_json::{Value, json};

use crate::charted::allow_charts;
use crate::gateway::service_account_token;
use crate::qleetctl::expect;
use crate::staged::{RUNTIMES, told};
use crate::support::*;

const NS: &str = "staged-web";

fn web(repository: &str, image_repository: &str, tag: &str) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "web"},
        "spec": {
            "chart": {"repository": repository, "name": "web", "version": "1.0.0",
                "values": {"image": {"repository": image_repository, "tag": tag}}},
            "placement": {"regions": ["eu-west-1", "us-east-1", "ap-south-1"]},
            "rollout": {
                "waves": [{"regions": ["eu-west-1"]}, {"regions": ["us-east-1"]}],
                "bakeSeconds": 3, "progressDeadlineSeconds": 120, "onFailure": "Rollback"
            }
        }
    })
}

/// The image of the chart's Deployment in `runtime`.
async fn image_in(env: &Environment, runtime: &str) -> Result<Option<String>> {
    let client = env.runtime(runtime).context("runtime")?.client().await?;
    deployment_image(&client, NS).await
}

/// Waits until the rollout is `phase` at `revision`, every region running `image`.
async fn settled(
    env: &Environment,
    client: &Client,
    phase: RolloutPhase,
    revision: i64,
    image: &str,
) -> Result<Workload> {
    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    let what = format!("rollout {phase} at revision {revision}, {image} everywhere");
    eventually(&what, TIMEOUT, || async {
        let found = workloads.get("web").await?;
        let status = found.status.clone().unwrap_or_default();
        let at = status.rollout.as_ref().map(|r| (r.phase, r.revision));
        if at != Some((phase, revision)) {
            return Ok(None);
        }
        for (runtime, _, _) in RUNTIMES {
            if image_in(env, runtime).await?.as_deref() != Some(image) {
                return Ok(None);
            }
        }
        Ok(Some(found))
    })
    .await
}

pub async fn a_workload_rollout_halts_rolls_back_and_is_rolled_back_by_hand(
    env: &Environment,
) -> Result<()> {
    let client = env.management_client().await?;
    let repository = ChartRepository::get().await?;
    allow_charts(&client, NS, &[&repository.url]).await?;
    apply_workload(
        &client,
        NS,
        &web(&repository.url, "registry.example/web", "1.0"),
    )
    .await?;
    let stable = "registry.example/web:1.0";
    let first = settled(env, &client, RolloutPhase::Complete, 1, stable).await?;
    ensure!(first.status.and_then(|s| s.revision) == Some(1));

    let mirrored = web(&repository.url, "$(runtime.labels.mirror)/web", "2.0");
    apply_workload(&client, NS, &mirrored).await?;
    let back = settled(env, &client, RolloutPhase::RolledBack, 2, stable).await?;
    let rollout = back
        .status
        .clone()
        .unwrap_or_default()
        .rollout
        .context("rollout")?;
    ensure!(
        rollout.wave == 2
            && rollout.message.contains("us-east")
            && rollout.message.contains("ErrImagePull")
            && rollout
                .message
                .contains("every member is back on revision 1"),
        "the halt does not say why: {rollout:?}"
    );
    halted_as_told(&client, &back).await?;

    let admin = env.management.kubeconfig_path();
    let history = expect(admin, &["history", "web", "-n", NS], 0).await?;
    ensure!(
        history.stdout.contains("latest (the spec)") && history.stdout.lines().count() == 3,
        "history: {}",
        history.stdout
    );
    let undone = expect(admin, &["rollback", "web", "-n", NS], 0).await?;
    ensure!(
        undone.stdout.contains("rolled back to revision 1"),
        "{}",
        undone.stdout
    );
    settled(env, &client, RolloutPhase::Complete, 1, stable).await?;

    let healthy = web(&repository.url, "registry.example/web", "3.0");
    apply_workload(&client, NS, &healthy).await?;
    let third = settled(
        env,
        &client,
        RolloutPhase::Complete,
        3,
        "registry.example/web:3.0",
    )
    .await?;
    ensure!(
        third
            .status
            .and_then(|s| s.rollout)
            .is_some_and(|r| r.stable_revision == 3),
        "revision 3 did not become stable"
    );
    paused_and_resumed(env, &client, &repository.url).await?;
    rolled_back_through_the_gateway(env, &client).await?;
    settled(env, &client, RolloutPhase::Complete, 1, stable).await?;
    deleted_with_its_revisions(&client).await
}

/// Revision 4 in percentage waves (33% first: one runtime of three, by name ap-south), and
/// revision 5 in one wave of all three with `maxUnavailable: 1`, each paused: only ap-south
/// moves, the others keep the previous image while the rollout says it is paused;
/// `qleetctl rollout resume` takes it everywhere. A percent beside regions is refused.
async fn paused_and_resumed(env: &Environment, client: &Client, repository: &str) -> Result<()> {
    let mut fourth = web(repository, "registry.example/web", "4.0");
    fourth["spec"]["rollout"]["waves"] = json!([{"percent": 33, "regions": ["eu-west-1"]}]);
    let refused = apply_workload(client, NS, &fourth)
        .await
        .err()
        .context("a percent beside regions was accepted")?;
    ensure!(
        format!("{refused:#}").contains("or a percent alone"),
        "{refused:#}"
    );
    fourth["spec"]["rollout"]["waves"] = json!([{"percent": 33}]);
    paused_after_ap_south(env, client, &fourth, 4, "3.0").await?;
    let mut fifth = web(repository, "registry.example/web", "5.0");
    fifth["spec"]["rollout"]["waves"] = json!([{"percent": 100}]);
    fifth["spec"]["rollout"]["maxUnavailable"] = json!(1);
    paused_after_ap_south(env, client, &fifth, 5, "4.0").await
}

/// Pauses, applies `workload` (revision `revision`, image tag `revision`.0): ap-south alone
/// moves, the other regions keep `previous`; then resumes until it runs everywhere.
async fn paused_after_ap_south(
    env: &Environment,
    client: &Client,
    workload: &Value,
    revision: i64,
    previous: &str,
) -> Result<()> {
    let admin = env.management.kubeconfig_path();
    let pause = ["rollout", "pause", "workload", "web", "-n", NS];
    let paused = expect(admin, &pause, 0).await?;
    ensure!(
        paused.stdout.contains("rollout paused"),
        "{}",
        paused.stdout
    );
    apply_workload(client, NS, workload).await?;
    let image = format!("registry.example/web:{revision}.0");
    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    let what = format!("the rollout of revision {revision} paused after ap-south");
    eventually(&what, TIMEOUT, || async {
        let rollout = workloads.get("web").await?.status.and_then(|s| s.rollout);
        let paused =
            rollout.is_some_and(|r| r.phase == RolloutPhase::Paused && r.revision == revision);
        let first = image_in(env, "ap-south").await?;
        Ok((paused && first.as_deref() == Some(image.as_str())).then_some(()))
    })
    .await?;
    for runtime in ["eu-west", "us-east"] {
        let found = image_in(env, runtime).await?;
        let kept = format!("registry.example/web:{previous}");
        ensure!(
            found.as_deref() == Some(kept.as_str()),
            "{runtime} moved while paused: {found:?}"
        );
    }
    let status = ["rollout", "status", "workload", "web", "-n", NS];
    let status = expect(admin, &status, 0).await?;
    ensure!(status.stdout.contains("Paused"), "{}", status.stdout);
    expect(
        admin,
        &["rollout", "resume", "workload", "web", "-n", NS],
        0,
    )
    .await?;
    settled(env, client, RolloutPhase::Complete, revision, &image).await?;
    Ok(())
}

/// The placements' waves and revisions, and the Event, say what happened.
async fn halted_as_told(client: &Client, workload: &Workload) -> Result<()> {
    let status = workload.status.clone().unwrap_or_default();
    let mut waves: Vec<(String, Option<u32>, Option<i64>)> = status
        .placements
        .iter()
        .map(|p| (p.runtime.clone(), p.wave, p.revision))
        .collect();
    waves.sort();
    ensure!(
        waves
            == [
                ("ap-south".to_owned(), Some(3), Some(1)),
                ("eu-west".to_owned(), Some(1), Some(1)),
                ("us-east".to_owned(), Some(2), Some(1)),
            ],
        "each placement's wave and revision: {waves:?}"
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .context("Ready")?;
    ensure!(ready.reason == "RolloutHalted", "{ready:?}");
    ensure!(
        told(client, NS, "web", "RolloutHalted").await?,
        "no RolloutHalted Event on the Workload"
    );
    Ok(())
}

/// CI's identity rolls back to revision 1 through the gateway; a revision not kept is 404.
async fn rolled_back_through_the_gateway(env: &Environment, client: &Client) -> Result<()> {
    let rules = json!([
        {"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get", "update"]},
        {"apiGroups": ["apps"], "resources": ["controllerrevisions"], "verbs": ["get"]},
    ]);
    let token = service_account_token(client, NS, "deployer", rules, None).await?;
    let gateway = GatewayProcess::start_for(env).await?;
    let url = format!(
        "{}/v1/namespaces/{NS}/workloads/web/rollback",
        gateway.base_url()
    );
    let http = qleetos_e2e::http::client_builder().build()?;
    let missing = http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"toRevision": 42}))
        .send()
        .await?;
    ensure!(
        missing.status() == 404,
        "a revision not kept: {}",
        missing.status()
    );
    let done = http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"toRevision": 1}))
        .send()
        .await?;
    let code = done.status();
    let body: Value = done.json().await?;
    ensure!(code == 200 && body["revision"] == 1, "{code}: {body}");
    Ok(())
}

/// Deleting the Workload leaves no revision behind (they are owned by it).
async fn deleted_with_its_revisions(client: &Client) -> Result<()> {
    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    let uid = workloads.get("web").await?.metadata.uid.context("uid")?;
    delete_workload(client, NS, "web").await?;
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), NS);
    let selector = ListParams::default().labels(&format!("qleetos.io/owner-uid={uid}"));
    eventually("the Workload's revisions gone", TIMEOUT, || async {
        Ok(revisions
            .list(&selector)
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await
}
