//! Issue 3 scenarios: Qleets driven by NATS JetStream (durable work, shared replicas,
//! per-object locks, requeue through the broker, drift, broker outages).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use qleetos_crds::{Conditions, Workload};
use qleetos_e2e::environment::Environment;
use qleetos_e2e::operator::OperatorOptions;
use serde_json::json;

use crate::support::*;

const BURST_TIMEOUT: Duration = Duration::from_secs(300);

/// Replicas with a short reconcile timeout, so a killed replica's locks expire quickly.
pub fn replica_options() -> OperatorOptions {
    let mut options = OperatorOptions::default();
    options.extra_args.extend([
        "--reconcile-timeout=10s".to_owned(),
        "--resync=5m".to_owned(),
    ]);
    options
}

fn config_workload(name: &str) -> serde_json::Value {
    let manifest = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("settings-{name}")},
        "data": {"owner": name}
    });
    workload(name, vec![manifest], json!({"regions": ["eu-west-1"]}))
}

/// Applies `count` ConfigMap workloads named `w-<i>` into `namespace`, 16 at a time.
async fn apply_burst(client: &Client, namespace: &str, count: usize) -> Result<()> {
    ensure_ns(client, namespace).await?;
    futures::stream::iter(0..count)
        .map(|i| async move {
            apply_workload(client, namespace, &config_workload(&format!("w-{i}"))).await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn ensure_ns(client: &Client, namespace: &str) -> Result<()> {
    qleetos_e2e::environment::ensure_namespace(client, namespace).await?;
    Ok(())
}

async fn ready_count(client: &Client, namespace: &str) -> Result<usize> {
    let workloads = Api::<Workload>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(workloads
        .items
        .iter()
        .filter(|w| {
            let status = w.status.clone().unwrap_or_default();
            status.is_ready() && status.observed_generation == w.metadata.generation
        })
        .count())
}

async fn wait_all_ready(client: &Client, namespace: &str, count: usize) -> Result<()> {
    eventually(
        &format!("{count} Workloads Ready in {namespace}"),
        BURST_TIMEOUT,
        || async {
            let ready = ready_count(client, namespace).await?;
            if ready == count {
                return Ok(Some(()));
            }
            anyhow::bail!("{ready}/{count} ready")
        },
    )
    .await
}

/// Every workload's ConfigMap is in the runtime with the right content: nothing half-applied.
async fn assert_all_applied(env: &Environment, namespace: &str, count: usize) -> Result<()> {
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let config_maps = Api::<ConfigMap>::namespaced(runtime, namespace)
        .list(&ListParams::default())
        .await?;
    for i in 0..count {
        let name = format!("w-{i}");
        let found = config_maps
            .items
            .iter()
            .find(|c| c.name_any() == format!("settings-{name}"));
        let owner = found
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get("owner"));
        ensure!(
            owner == Some(&name),
            "ConfigMap of {name} missing or wrong in the runtime"
        );
    }
    Ok(())
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

async fn restart_replicas(env: &mut Environment, count: usize) -> Result<()> {
    env.stop_operators().await;
    for _ in 0..count {
        env.start_operator(replica_options()).await?;
    }
    Ok(())
}

pub async fn pending_work_waits_for_an_operator(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-offline", env.management_client().await?);
    env.stop_operators().await;
    apply_burst(&client, ns, 20).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let untouched = Api::<Workload>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    ensure!(
        untouched.items.iter().all(|w| w.status.is_none()),
        "something reconciled with no operator running"
    );
    env.start_operator(replica_options()).await?;
    wait_all_ready(&client, ns, 20).await?;
    assert_all_applied(env, ns, 20).await
}

pub async fn two_replicas_share_work_without_overlap(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-pair", env.management_client().await?);
    restart_replicas(env, 2).await?;
    apply_burst(&client, ns, 200).await?;
    wait_all_ready(&client, ns, 200).await?;
    assert_all_applied(env, ns, 200).await?;
    for operator in env.operators() {
        let metrics = operator.metrics().await?;
        let done = metric(
            &metrics,
            r#"qleetos_reconciles_total{controller="workloadinstance"}"#,
        );
        ensure!(
            done > 0.0,
            "replica {} reconciled no instance",
            operator.log_path().display()
        );
        let lost = metric(
            &metrics,
            r#"qleetos_lock_releases_total{controller="workloadinstance",outcome="lost"}"#,
        );
        ensure!(lost == 0.0, "replica lost {lost} locks while reconciling");
        let log = operator.log();
        let reconciled: Vec<&str> = log.lines().filter(|l| l.contains("reconciled")).collect();
        ensure!(
            !reconciled.is_empty(),
            "no reconcile in {}",
            operator.log_path().display()
        );
        // A clean release deletes the lock only at the revision this replica created, which
        // proves no other replica held the object's lock during the reconcile.
        ensure!(
            reconciled.iter().all(|l| l.contains("lock=Clean")),
            "a reconcile did not hold its lock throughout"
        );
    }
    Ok(())
}

pub async fn surviving_replica_finishes_after_sigkill(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-sigkill", env.management_client().await?);
    restart_replicas(env, 2).await?;
    apply_burst(&client, ns, 200).await?;
    eventually("a quarter of the burst ready", BURST_TIMEOUT, || async {
        Ok((ready_count(&client, ns).await? >= 50).then_some(()))
    })
    .await?;
    ensure!(
        ready_count(&client, ns).await? < 200,
        "burst finished before the kill; nothing was tested"
    );
    env.operators_mut()[0].kill();
    wait_all_ready(&client, ns, 200).await?;
    assert_all_applied(env, ns, 200).await
}

pub async fn work_survives_a_nats_restart(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-nats", env.management_client().await?);
    restart_replicas(env, 1).await?;
    apply_burst(&client, ns, 50).await?;
    env.nats.stop().await;
    apply_burst(&client, "q-nats-down", 30).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.nats.resume().await?;
    wait_all_ready(&client, ns, 50).await?;
    wait_all_ready(&client, "q-nats-down", 30).await?;
    assert_all_applied(env, "q-nats-down", 30).await
}

pub async fn drift_in_a_runtime_is_corrected(env: &Environment) -> Result<()> {
    let (ns, client) = ("q-drift", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1"]});
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(2, "nginx:1.27"), placement),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(runtime.clone(), ns);
    let scale = json!({"spec": {"replicas": 5}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale))
        .await?;
    let services: Api<Service> = Api::namespaced(runtime, ns);
    services.delete("web", &DeleteParams::default()).await?;
    eventually("drift corrected", TIMEOUT, || async {
        let replicas = deployments.get("web").await?.spec.and_then(|s| s.replicas);
        let service = services.get_opt("web").await?;
        Ok((replicas == Some(2) && service.is_some()).then_some(()))
    })
    .await
}

pub async fn a_poison_workload_does_not_block_others(env: &Environment) -> Result<()> {
    let (ns, client) = ("q-poison", env.management_client().await?);
    let widget = json!({"apiVersion": "widgets.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    apply_workload(
        &client,
        ns,
        &workload("poison", vec![widget], json!({"regions": ["eu-west-1"]})),
    )
    .await?;
    apply_burst(&client, ns, 30).await?;
    wait_all_ready_but(&client, ns, 30, "poison").await?;
    let message = wait_workload_not_ready(&client, ns, "poison", "PlacementFailed").await?;
    ensure!(
        message.contains("UnknownKind"),
        "poison condition: {message}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(
        "a Warning Event on the poison instance",
        TIMEOUT,
        || async {
            let events = events.list(&ListParams::default()).await?;
            Ok(events
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("UnknownKind")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(()))
        },
    )
    .await?;
    let metrics = env.operators()[0].metrics().await?;
    let failures = metric(
        &metrics,
        r#"qleetos_reconcile_failures_total{controller="workloadinstance",reason="UnknownKind"}"#,
    );
    ensure!(failures >= 1.0, "failure metric not counted: {failures}");
    Ok(())
}

async fn wait_all_ready_but(
    client: &Client,
    namespace: &str,
    count: usize,
    except: &str,
) -> Result<()> {
    let api = Api::<Workload>::namespaced(client.clone(), namespace);
    eventually(
        &format!("{count} healthy Workloads Ready"),
        BURST_TIMEOUT,
        || async {
            let workloads = api.list(&ListParams::default()).await?;
            let ready = workloads
                .items
                .iter()
                .filter(|w| {
                    w.name_any() != except && w.status.as_ref().is_some_and(|s| s.is_ready())
                })
                .count();
            Ok((ready == count).then_some(()))
        },
    )
    .await
}

type Exclusive =
    for<'a> fn(
        &'a mut Environment,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// The environment the exclusive scenarios take turns on (they stop and start replicas
/// and NATS), created by whichever runs first.
#[derive(Clone, Default)]
pub struct QueueEnv(std::sync::Arc<tokio::sync::Mutex<Option<Environment>>>);

impl QueueEnv {
    pub async fn stop(self) {
        if let Some(env) = self.0.lock().await.take() {
            env.stop().await;
        }
    }

    async fn run(&self, dir: std::path::PathBuf, scenario: Exclusive) -> Result<()> {
        let mut guard = self.0.lock().await;
        if guard.is_none() {
            let runtimes = vec![qleetos_e2e::environment::RuntimeSpec::new(
                "eu-west",
                "eu-west-1",
                &[],
            )];
            *guard = Some(
                Environment::start(&dir, runtimes)
                    .await
                    .context("starting the queue environment")?,
            );
        }
        let env = guard.as_mut().context("queue environment")?;
        scenario(env).await
    }
}

/// The issue 3 trials: two on the shared environment, four taking turns on their own.
pub fn trials(
    runtime: &std::sync::Arc<tokio::runtime::Runtime>,
    shared: &crate::harness::SharedEnv,
    dir: &std::path::Path,
) -> (Vec<libtest_mimic::Trial>, QueueEnv) {
    use libtest_mimic::Trial;
    let shared_scenarios: [(&str, crate::harness::Scenario); 2] = [
        ("drift_in_a_runtime_is_corrected", |env| {
            Box::pin(drift_in_a_runtime_is_corrected(env))
        }),
        ("a_poison_workload_does_not_block_others", |env| {
            Box::pin(a_poison_workload_does_not_block_others(env))
        }),
    ];
    let exclusive_scenarios: [(&str, Exclusive); 4] = [
        ("pending_work_waits_for_an_operator", |env| {
            Box::pin(pending_work_waits_for_an_operator(env))
        }),
        ("two_replicas_share_work_without_overlap", |env| {
            Box::pin(two_replicas_share_work_without_overlap(env))
        }),
        ("surviving_replica_finishes_after_sigkill", |env| {
            Box::pin(surviving_replica_finishes_after_sigkill(env))
        }),
        ("work_survives_a_nats_restart", |env| {
            Box::pin(work_survives_a_nats_restart(env))
        }),
    ];
    let mut trials: Vec<Trial> = shared_scenarios
        .into_iter()
        .map(|(name, scenario)| crate::harness::shared_trial(name, runtime, shared, scenario))
        .collect();
    let queue_env = QueueEnv::default();
    for (name, scenario) in exclusive_scenarios {
        let (env, dir) = (queue_env.clone(), dir.join("queue"));
        let work = async move { env.run(dir, scenario).await };
        trials.push(crate::harness::own_trial(name, runtime, work));
    }
    (trials, queue_env)
}
