//! Staged upgrades of a SupportServiceProfile (issue 26) across three real runtimes: a new
//! revision goes to the canary region, bakes, then to the next wave, where its image cannot
//! be pulled (kwok fails pods whose registry is under `.invalid`, as a kubelet would): the
//! rollout halts there, the third runtime keeps the previous revision, the status and an
//! Event say why, and `qleetctl rollout undo` restores the previous revision everywhere.

use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};
use qleetos_crds::staged::RolloutPhase;
use qleetos_crds::{SupportService, SupportServiceProfile};
use qleetos_e2e::environment::{Environment, RuntimeSpec, SYSTEM_NAMESPACE};
use serde_json::{Value, json};

use crate::dependencies::apply_profile;
use crate::qleetctl::expect;
use crate::support::*;

const NS: &str = "staged";
const STABLE_IMAGE: &str = "registry.example/agent:1.0";
/// Where each runtime pulls the new version from; us-east's mirror does not exist.
pub(crate) const RUNTIMES: [(&str, &str, &str); 3] = [
    ("eu-west", "eu-west-1", "mirror.eu-west.example"),
    ("us-east", "us-east-1", "mirror.us-east.invalid"),
    ("ap-south", "ap-south-1", "mirror.ap-south.example"),
];

pub fn runtimes() -> Vec<RuntimeSpec> {
    RUNTIMES
        .iter()
        .map(|(name, region, mirror)| RuntimeSpec::new(name, region, &[("mirror", mirror)]))
        .collect()
}

fn agent(image: &str) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "SupportServiceProfile",
        "metadata": {"name": "agent"},
        "spec": {
            "provides": ["node-agent"], "namespace": "node-agent", "gracePeriodSeconds": 0,
            "manifests": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agent"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "agent"}},
                    "template": {"metadata": {"labels": {"app": "agent"}},
                        "spec": {"containers": [{"name": "agent", "image": image}]}}}
            }],
            "rollout": {
                "waves": [{"regions": ["eu-west-1"]}, {"regions": ["us-east-1"]}],
                "bakeSeconds": 3, "progressDeadlineSeconds": 120
            }
        }
    })
}

/// The image the agent Deployment runs in `runtime`.
async fn agent_image(env: &Environment, runtime: &str) -> Result<Option<String>> {
    let client = env.runtime(runtime).context("runtime")?.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client, "node-agent");
    Ok(deployments
        .get_opt("agent")
        .await?
        .and_then(|d| d.spec?.template.spec?.containers.first()?.image.clone()))
}

async fn profile(client: &Client) -> Result<SupportServiceProfile> {
    Ok(Api::<SupportServiceProfile>::all(client.clone())
        .get("agent")
        .await?)
}

/// Waits until every runtime runs `image`, with its service Ready at `revision`.
async fn everywhere(env: &Environment, client: &Client, image: &str, revision: i64) -> Result<()> {
    let services: Api<SupportService> = Api::all(client.clone());
    for (runtime, _, _) in RUNTIMES {
        eventually(&format!("{runtime} running {image}"), TIMEOUT, || async {
            let service = services.get(&format!("agent.{runtime}")).await?;
            let status = service.status.clone().unwrap_or_default();
            let ready = service.state() == qleetos_crds::DependencyState::Ready
                && status.revision == Some(revision);
            Ok((ready && agent_image(env, runtime).await?.as_deref() == Some(image)).then_some(()))
        })
        .await?;
    }
    Ok(())
}

pub async fn a_staged_profile_upgrade_halts_on_a_failing_wave_and_rolls_back(
    env: &Environment,
) -> Result<()> {
    let client = env.management_client().await?;
    let admin = env.management.kubeconfig_path();
    let mut selecting_nothing = agent(STABLE_IMAGE);
    selecting_nothing["spec"]["rollout"]["waves"] = json!([{"regions": ["eu-west-1"]}, {}]);
    let refused = apply_profile(&client, &selecting_nothing)
        .await
        .err()
        .context("a wave that selects nothing was accepted")?;
    ensure!(
        format!("{refused:#}").contains("a runtime selection needs names, regions or matchLabels"),
        "{refused:#}"
    );
    ensure!(
        Api::<SupportServiceProfile>::all(client.clone())
            .get_opt("agent")
            .await?
            .is_none(),
        "a refused profile was stored"
    );
    apply_profile(&client, &agent(STABLE_IMAGE)).await?;
    for (runtime, region, _) in RUNTIMES {
        let mut user = workload(runtime, vec![], json!({"regions": [region]}));
        user["spec"]["needs"] = json!(["node-agent"]);
        user["spec"]["manifests"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "uses-agent"}, "data": {"k": "v"}}]);
        apply_workload(&client, NS, &user).await?;
    }
    everywhere(env, &client, STABLE_IMAGE, 1).await?;

    apply_profile(&client, &agent("$(runtime.labels.mirror)/agent:2.0")).await?;
    let halted = eventually("the rollout halted at wave 2", TIMEOUT, || async {
        let found = profile(&client).await?;
        let status = found.status.unwrap_or_default();
        Ok(status
            .rollout
            .filter(|r| r.phase == RolloutPhase::Halted && r.revision == 2)
            .map(|r| (r, status.runtimes, status.conditions)))
    })
    .await?;
    let (rollout, runtimes, conditions) = halted;
    ensure!(
        rollout.wave == 2 && rollout.stable_revision == 1,
        "{rollout:?}"
    );
    ensure!(
        rollout.message.contains("us-east") && rollout.message.contains("ErrImagePull"),
        "the halt does not say why: {}",
        rollout.message
    );
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .context("Ready")?;
    ensure!(
        ready.reason == "RolloutHalted" && ready.status == qleetos_crds::ConditionStatus::False,
        "{ready:?}"
    );
    let waves: Vec<(String, Option<u32>, i64)> = runtimes
        .iter()
        .map(|r| (r.runtime.clone(), r.wave, r.revision))
        .collect();
    ensure!(
        waves
            == [
                ("ap-south".to_owned(), Some(3), 1),
                ("eu-west".to_owned(), Some(1), 2),
                ("us-east".to_owned(), Some(2), 2),
            ],
        "each runtime's wave and revision: {waves:?}"
    );
    ensure!(
        agent_image(env, "eu-west").await?.as_deref() == Some("mirror.eu-west.example/agent:2.0"),
        "the canary did not get revision 2"
    );
    ensure!(
        agent_image(env, "ap-south").await?.as_deref() == Some(STABLE_IMAGE),
        "the third wave was touched by a halted rollout"
    );
    ensure!(
        told(&client, "default", "agent", "RolloutHalted").await?,
        "no RolloutHalted Event on the profile"
    );

    let shown = expect(admin, &["rollout", "status", "ssp", "agent"], 0).await?;
    ensure!(
        shown
            .stdout
            .contains("revision 2 Halted at wave 2 of 3 (stable revision 1)")
            && shown.stdout.contains("ap-south"),
        "{}",
        shown.stdout
    );
    let undone = expect(admin, &["rollout", "undo", "ssp", "agent"], 0).await?;
    ensure!(
        undone.stdout.contains("rolled back to revision 1"),
        "{}",
        undone.stdout
    );
    everywhere(env, &client, STABLE_IMAGE, 1).await?;
    let back = profile(&client).await?.status.unwrap_or_default();
    ensure!(
        back.revision == Some(1),
        "the profile is not at revision 1: {:?}",
        back.revision
    );
    ensure!(
        back.rollout
            .is_some_and(|r| r.phase == RolloutPhase::Complete),
        "the rollback did not complete"
    );

    removed_with_its_revisions(&client).await
}

/// Deleting the users, then the profile, leaves no revision behind.
async fn removed_with_its_revisions(client: &Client) -> Result<()> {
    for (runtime, _, _) in RUNTIMES {
        delete_workload(client, NS, runtime).await?;
    }
    let uid = profile(client).await?.metadata.uid.context("uid")?;
    let profiles: Api<SupportServiceProfile> = Api::all(client.clone());
    profiles.delete("agent", &Default::default()).await?;
    eventually("the profile gone", TIMEOUT, || async {
        Ok(profiles.get_opt("agent").await?.is_none().then_some(()))
    })
    .await?;
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let left = revisions
        .list(&ListParams::default().labels(&format!("qleetos.io/owner-uid={uid}")))
        .await?
        .items;
    ensure!(left.is_empty(), "{} revision(s) left behind", left.len());
    Ok(())
}

/// Whether an Event in `namespace` with `reason` is about object `name`.
pub(crate) async fn told(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> Result<bool> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.and_then(|r| r.name).as_deref() == Some(name)
        }))
}

pub async fn in_own_environment(dir: PathBuf) -> Result<()> {
    let env = crate::start_environment(dir, runtimes()).await?;
    let profile = a_staged_profile_upgrade_halts_on_a_failing_wave_and_rolls_back(&env).await;
    let workload = if profile.is_ok() {
        crate::staged_workload::a_workload_rollout_halts_rolls_back_and_is_rolled_back_by_hand(&env)
            .await
            .context("the Workload's staged rollout")
    } else {
        Ok(())
    };
    env.stop().await;
    profile
        .context("the profile's staged upgrade")
        .and(workload)
}
