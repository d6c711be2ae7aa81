//! Issue 13: a control plane that has converged stays quiet. With Workloads converged, an
//! operator restart and a full resync reconcile every object again and write nothing to
//! either API server (counted from the API servers' own request metrics).

use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use qleetos_crds::Workload;
use qleetos_e2e::environment::Environment;
use qleetos_e2e::quiescence;
use qleetos_e2e::requests::{self, RequestCounts};

use crate::queue::{apply_burst, metric, restart_replicas, restart_replicas_with, wait_all_ready};
use crate::support::*;

const WORKLOADS: usize = 40;
/// The resync interval of the restarted replica: short, so one full resync happens soon.
const RESYNC: &str = "--resync=5s";
/// What QleetOS writes for a converged Workload, in the management cluster and a runtime.
const MANAGEMENT_RESOURCES: [&str; 3] = ["workloads", "workloadinstances", "events"];
const RUNTIME_RESOURCES: [&str; 4] = ["configmaps", "namespaces", "rolebindings", "services"];
/// The Qleets of Workloads and their instances.
const KINDS: [&str; 2] = ["workload", "workloadinstance"];

/// Writes so far to the resources QleetOS writes for Workloads, on the management cluster and
/// on runtime eu-west.
async fn writes(management: &Client, runtime: &Client) -> Result<(f64, f64)> {
    let counted = |metrics: &str, resources: &[&str]| -> RequestCounts {
        requests::request_counts(metrics, |resource| resources.contains(&resource))
    };
    let on_management = requests::scrape(management).await?;
    let on_runtime = requests::scrape(runtime).await?;
    Ok((
        counted(&on_management, &MANAGEMENT_RESOURCES).writes,
        counted(&on_runtime, &RUNTIME_RESOURCES).writes,
    ))
}

/// Removes what earlier trials left in this environment, so only this trial's Workloads are
/// converging while writes are counted.
async fn delete_every_workload(client: &Client) -> Result<()> {
    let all: Api<Workload> = Api::all(client.clone());
    for workload in all.list(&ListParams::default()).await?.items {
        let namespace = workload.metadata.namespace.clone().unwrap_or_default();
        let name = workload.metadata.name.clone().unwrap_or_default();
        let _ = Api::<Workload>::namespaced(client.clone(), &namespace)
            .delete(&name, &DeleteParams::default())
            .await;
    }
    eventually("every earlier Workload gone", TIMEOUT, || async {
        Ok(all
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await
}

/// Waits until the replica reconciled every Workload and instance at least `times` times
/// and has nothing of them left to do (their work queues drained, every message received
/// handled); returns the write counters then, once two such readings agree.
async fn settled_writes(
    env: &Environment,
    clients: (&Client, &Client),
    times: f64,
) -> Result<(f64, f64)> {
    let operator = env.operators().first().context("a running replica")?;
    eventually("every object reconciled", TIMEOUT, || async {
        let text = operator.metrics().await?;
        let reconciles = |kind: &str| {
            metric(
                &text,
                &format!(r#"qleetos_reconciles_total{{controller="{kind}"}}"#),
            )
        };
        let enough = reconciles("workload") >= times * WORKLOADS as f64
            && reconciles("workloadinstance") >= times * WORKLOADS as f64;
        Ok(enough.then_some(()))
    })
    .await?;
    let last = std::sync::Mutex::new(None);
    eventually(
        "the replica idle with the same writes twice",
        TIMEOUT,
        || async {
            if !idle(env).await? {
                return Ok(None);
            }
            let now = writes(clients.0, clients.1).await?;
            let previous = last
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .replace(now);
            Ok((previous == Some(now)).then_some(now))
        },
    )
    .await
}

/// Whether the replica has nothing of Workloads and instances left.
async fn idle(env: &Environment) -> Result<bool> {
    let operator = env.operators().first().context("a running replica")?;
    Ok(quiescence::idle(&env.nats, operator, &KINDS).await?)
}

pub async fn a_restart_and_resync_of_converged_workloads_write_nothing(
    env: &mut Environment,
) -> Result<()> {
    let (ns, management) = ("q-quiet", env.management_client().await?);
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    restart_replicas(env, 1).await?;
    delete_every_workload(&management).await?;
    apply_burst(&management, ns, WORKLOADS).await?;
    wait_all_ready(&management, ns, WORKLOADS).await?;
    let converged = settled_writes(env, (&management, &runtime), 1.0).await?;

    let restarted = Instant::now();
    restart_replicas_with(env, 1, &[RESYNC]).await?;
    // The restart's first look and one full resync: twice every object.
    let after = settled_writes(env, (&management, &runtime), 2.0).await?;
    println!(
        "restart and resync of {WORKLOADS} converged Workloads: reconciled twice each within {:.1}s",
        restarted.elapsed().as_secs_f64()
    );
    ensure!(
        after == converged,
        "writes after the restart and a resync: management {} -> {}, runtime {} -> {} (expected none)",
        converged.0,
        after.0,
        converged.1,
        after.1
    );
    wait_all_ready(&management, ns, WORKLOADS).await
}
