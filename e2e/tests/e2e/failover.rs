//! Issue 12 regional failover: a runtime's API server is stopped for real; Workloads with a
//! failover policy move to the other region once the tolerance has passed, and move back or
//! stay when it is started again; a Workload without the policy waits; short outages move
//! nothing. A Workload whose policy has nowhere to go but may provision gets a new cluster
//! in its region (a real kwokctl cluster of the `Local` provider), which retires once the
//! Workload is back home.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::Api;
use qleetos_crds::{Conditions, KubernetesRuntime, Workload};
use qleetos_e2e::environment::Environment;
use serde_json::{Value, json};

use crate::provisioning::{
    PROVISION_TIMEOUT, apply_runtime_profile, config_map, local_profile, provisioned_client,
    wait_cluster_gone,
};
use crate::support::*;

const NS: &str = "failover";
/// Long enough that a stopped and restarted API server is back within it.
const TOLERANCE: Duration = Duration::from_secs(30);

fn placement(failover: Option<Value>) -> Value {
    match failover {
        Some(failover) => json!({"regions": ["eu-west-1"], "failover": failover}),
        None => json!({"regions": ["eu-west-1"]}),
    }
}

fn to_us_east(on_recovery: &str, after: Duration) -> Option<Value> {
    Some(json!({
        "after": format!("{}s", after.as_secs()),
        "regions": ["us-east-1"],
        "onRecovery": on_recovery,
    }))
}

/// The runtime provisioned to stand in for eu-west: profile `standby`, region eu-west-1.
const STANDBY: &str = "standby-eu-west-1";

/// Its own region only, with clusters on demand: nothing to move to but a new cluster.
fn renewed() -> Value {
    json!({
        "regions": ["eu-west-1"],
        "provision": "IfNeeded",
        "failover": {"after": format!("{}s", TOLERANCE.as_secs()), "onRecovery": "Return"},
    })
}

/// Names of the Workloads this trial places, and their placement policies.
fn workloads() -> [(&'static str, Value); 5] {
    [
        ("renewed", renewed()),
        ("back", placement(to_us_east("Return", TOLERANCE))),
        ("stay", placement(to_us_east("Stay", TOLERANCE))),
        (
            "patient",
            placement(to_us_east("Return", Duration::from_secs(600))),
        ),
        ("wait", placement(None)),
    ]
}

/// Runs in an environment of its own: it stops a runtime's API server.
pub async fn a_lost_runtime_fails_over_and_returns_or_stays(env: &mut Environment) -> Result<()> {
    let client = env.management_client().await?;
    rejects_failover_with_all_matching(&client).await?;
    apply_runtime_profile(&client, &local_profile("standby", "eu-west-1", 1)).await?;
    for (name, placement) in workloads() {
        apply_lab_workload(&client, NS, &workload(name, config_map(name), placement)).await?;
    }
    for (name, _) in workloads() {
        wait_workload_ready(&client, NS, name).await?;
    }

    flap_eu_west(env, &client).await?;
    for (name, _) in workloads() {
        let on = placed_on(&instances_of(&client, NS, name).await?);
        ensure!(
            on == ["eu-west"],
            "{name} moved during short outages: {on:?}"
        );
    }
    ensure!(
        event_notes(&client, "FailedOver").await?.is_empty(),
        "short outages reported a failover"
    );

    let stopped = Instant::now();
    env.runtime_mut("eu-west")
        .expect("eu-west")
        .stop_apiserver()
        .await?;
    for name in ["back", "stay"] {
        wait_failed_over(&client, name, "us-east", TIMEOUT).await?;
    }
    let time_to_failover = stopped.elapsed();
    tracing::info!(
        ?time_to_failover,
        "runtime stop -> Workloads Ready on us-east"
    );
    ensure!(
        time_to_failover >= TOLERANCE,
        "moved after {time_to_failover:?}, before the {TOLERANCE:?} tolerance"
    );
    checks_while_failed_over(env, &client).await?;
    wait_failed_over(&client, "renewed", STANDBY, PROVISION_TIMEOUT).await?;
    checks_on_the_provisioned_stand_in(&client).await?;

    env.runtime_mut("eu-west")
        .expect("eu-west")
        .start_apiserver()
        .await?;
    wait_placed(&client, "back", &["eu-west"]).await?;
    wait_placed(&client, "renewed", &["eu-west"]).await?;
    wait_placed(&client, "stay", &["us-east"]).await?;
    for (name, _) in workloads() {
        wait_workload_ready(&client, NS, name).await?;
    }
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    let us_east = env.runtime("us-east").expect("us-east").client().await?;
    wait_config_maps(&eu_west, &["back", "patient", "renewed", "wait"]).await?;
    // Unused once the Workload is home again, the stand-in cluster retires (idle: 0 s).
    wait_cluster_gone(env, STANDBY).await?;
    wait_config_maps(&us_east, &["stay"]).await?;
    ensure!(
        !event_notes(&client, "FailedBack").await?.is_empty()
            && !event_notes(&client, "StayedAfterFailover")
                .await?
                .is_empty(),
        "no FailedBack or StayedAfterFailover Event"
    );
    let back: Api<Workload> = Api::namespaced(client.clone(), NS);
    let status = back.get("back").await?.status.unwrap_or_default();
    let failed_over = status.condition("FailedOver").cloned();
    ensure!(
        failed_over.as_ref().is_some_and(|c| !c.is_true()),
        "back still FailedOver: {failed_over:?}"
    );

    for (name, _) in workloads() {
        delete_workload(&client, NS, name).await?;
    }
    wait_config_maps(&eu_west, &[]).await?;
    wait_config_maps(&us_east, &[]).await?;
    Ok(())
}

async fn rejects_failover_with_all_matching(client: &Client) -> Result<()> {
    let mut all = placement(to_us_east("Return", TOLERANCE));
    all["strategy"] = json!("AllMatching");
    let bad = workload("all", config_map("all"), all);
    let Err(error) = apply_workload(client, NS, &bad).await else {
        bail!("a failover policy with AllMatching was admitted");
    };
    ensure!(
        error
            .to_string()
            .contains("failover needs strategy OnePerRegion"),
        "unexpected error: {error:#}"
    );
    let mut malformed = placement(to_us_east("Return", TOLERANCE));
    malformed["failover"]["after"] = json!("2d");
    let bad = workload("bad-after", config_map("bad-after"), malformed);
    ensure!(
        apply_workload(client, NS, &bad).await.is_err(),
        "failover.after: 2d was admitted"
    );
    Ok(())
}

/// Stops and restarts eu-west's API server twice, each outage well inside the tolerance.
async fn flap_eu_west(env: &mut Environment, client: &Client) -> Result<()> {
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    for _ in 0..2 {
        let outage = Instant::now();
        env.runtime_mut("eu-west")
            .expect("eu-west")
            .stop_apiserver()
            .await?;
        wait_reachable(&runtimes, false).await?;
        env.runtime_mut("eu-west")
            .expect("eu-west")
            .start_apiserver()
            .await?;
        wait_reachable(&runtimes, true).await?;
        let lasted = outage.elapsed();
        ensure!(
            lasted < TOLERANCE,
            "an outage meant to be short lasted {lasted:?}: raise TOLERANCE"
        );
    }
    Ok(())
}

async fn wait_reachable(runtimes: &Api<KubernetesRuntime>, reachable: bool) -> Result<()> {
    eventually(
        &format!("eu-west reachable: {reachable}"),
        TIMEOUT,
        || async {
            let runtime = runtimes.get("eu-west").await?;
            Ok((runtime.is_reachable() == reachable).then_some(()))
        },
    )
    .await
}

/// Waits until `name` is Ready through a Ready stand-in on `to` for eu-west.
async fn wait_failed_over(
    client: &Client,
    name: &str,
    to: &str,
    timeout: Duration,
) -> Result<Workload> {
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    eventually(&format!("{name} failed over to {to}"), timeout, || async {
        let workload = api.get(name).await?;
        let status = workload.status.clone().unwrap_or_default();
        let stand_in = status
            .placements
            .iter()
            .any(|p| p.runtime == to && p.replaces.as_deref() == Some("eu-west") && p.ready);
        if stand_in && status.is_ready() {
            return Ok(Some(workload));
        }
        bail!("status: {}", serde_json::to_string(&status)?)
    })
    .await
}

async fn checks_while_failed_over(env: &Environment, client: &Client) -> Result<()> {
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let status = api.get("back").await?.status.unwrap_or_default();
    let condition = status.condition("FailedOver").cloned();
    ensure!(
        condition
            .as_ref()
            .is_some_and(|c| c.is_true() && c.message.contains("eu-west -> us-east (us-east-1)")),
        "FailedOver condition: {condition:?}"
    );
    let home = status.placements.iter().find(|p| p.runtime == "eu-west");
    ensure!(
        home.is_some_and(|p| p.reason == "FailedOver" && p.message.contains("unreachable since")),
        "eu-west placement: {home:?}"
    );
    ensure!(
        status.ready_placements.as_deref() == Some("1/1"),
        "readyPlacements {:?}",
        status.ready_placements
    );
    let notes = event_notes(client, "FailedOver").await?;
    ensure!(
        notes
            .iter()
            .any(|n| n.starts_with("eu-west-1 unreachable for")),
        "FailedOver Events: {notes:?}"
    );
    for name in ["patient", "wait"] {
        let on = placed_on(&instances_of(client, NS, name).await?);
        ensure!(on == ["eu-west"], "{name} moved: {on:?}");
    }
    let us_east = env.runtime("us-east").expect("us-east").client().await?;
    wait_config_maps(&us_east, &["back", "stay"]).await?;
    let metrics = env.operators()[0].metrics().await?;
    let moved = metrics
        .lines()
        .find_map(|l| l.strip_prefix("qleetos_failovers_total{outcome=\"moved\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    ensure!(moved >= Some(2.0), "failovers moved: {moved:?}");
    Ok(())
}

/// The cluster provisioned for `renewed` runs its ConfigMap, and an Event said why it came.
async fn checks_on_the_provisioned_stand_in(client: &Client) -> Result<()> {
    let standby = provisioned_client(client, STANDBY).await?;
    let config_map: Api<ConfigMap> = Api::namespaced(standby, NS);
    ensure!(
        config_map.get_opt("renewed").await?.is_some(),
        "renewed's ConfigMap is not on {STANDBY}"
    );
    let notes = event_notes(client, "FailingOver").await?;
    ensure!(
        notes.iter().any(|n| n.contains(&format!(
            "runtime eu-west is lost and no runtime can stand in for it: provisioning runtime {STANDBY} in eu-west-1"
        ))),
        "FailingOver Events: {notes:?}"
    );
    let others = placed_on(&instances_of(client, NS, "back").await?);
    ensure!(
        !others.contains(&STANDBY.to_owned()),
        "back (already on us-east) moved to the new cluster: {others:?}"
    );
    Ok(())
}

async fn wait_placed(client: &Client, name: &str, runtimes: &[&str]) -> Result<()> {
    eventually(
        &format!("{name} placed on {runtimes:?}"),
        TIMEOUT,
        || async {
            let on = placed_on(&instances_of(client, NS, name).await?);
            Ok((on == runtimes).then_some(()))
        },
    )
    .await
}

/// Waits until exactly the ConfigMaps `names` (of this trial) are in the runtime's namespace.
async fn wait_config_maps(runtime: &Client, names: &[&str]) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(runtime.clone(), NS);
    eventually(&format!("ConfigMaps {names:?}"), TIMEOUT, || async {
        let mut present: Vec<String> = api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .filter(|n| workloads().iter().any(|(w, _)| w == n))
            .collect();
        present.sort();
        if present == names {
            return Ok(Some(()));
        }
        bail!("present: {present:?}")
    })
    .await
}

async fn event_notes(client: &Client, reason: &str) -> Result<Vec<String>> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    Ok(events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect())
}
