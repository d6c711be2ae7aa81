//! Starts a management cluster and a workload cluster with one kwok node, rolls out a
//! Deployment, restarts the workload kube-apiserver, and checks that nothing is left
//! running afterwards.
//!
//! Run with: `cargo run -p qleetos-e2e --example two_clusters` (set `QLEETOS_KEEP_DIR=1`
//! to keep the cluster directories with their logs).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use qleetos_e2e::cluster::{Cluster, ClusterSpec};
use qleetos_e2e::process::kill_all_children;

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            kill_all_children();
            std::process::exit(130);
        }
    });

    let base = tempfile::Builder::new()
        .prefix("qleetos-two-clusters-")
        .tempdir()?;
    let result = run(base.path()).await;
    if result.is_err() || std::env::var_os("QLEETOS_KEEP_DIR").is_some() {
        let kept = base.keep();
        eprintln!("cluster directories (logs) kept in {}", kept.display());
    }
    result
}

async fn run(base: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let (management, workload) = tokio::join!(
        timed(ClusterSpec::management("mgmt"), base),
        timed(ClusterSpec::workload("wl", 1), base),
    );
    let management = management?;
    let mut workload = workload?;
    println!("both clusters ready after {:.1?}", started.elapsed());

    let mgmt_client = management.client().await?;
    let version = mgmt_client.apiserver_version().await?;
    println!(
        "management cluster {} serves {}",
        management.server_url(),
        version.git_version
    );

    let client = workload.client().await?;
    roll_out(&client).await?;

    workload.stop_apiserver().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    ensure!(
        deployments.get("demo").await.is_err(),
        "the API call succeeded although kube-apiserver is stopped"
    );
    println!("kube-apiserver stopped: API calls fail as expected");

    let restart = Instant::now();
    workload.start_apiserver().await?;
    let demo = deployments.get("demo").await.context("after the restart")?;
    let available = demo.status.and_then(|s| s.available_replicas);
    ensure!(
        available == Some(2),
        "after the restart: availableReplicas {available:?}"
    );
    println!(
        "kube-apiserver restarted on {} in {:.1?}; the Deployment survived",
        workload.server_url(),
        restart.elapsed()
    );
    let scale = serde_json::json!({ "spec": { "replicas": 3 } });
    deployments
        .patch("demo", &PatchParams::default(), &Patch::Merge(&scale))
        .await?;
    wait_available(&deployments, 3).await?;
    println!("scaled to 3 replicas: controllers, scheduler and kwok reconnected");

    let stopping = Instant::now();
    tokio::join!(management.stop(), workload.stop());
    println!("stopped both clusters in {:.1?}", stopping.elapsed());
    check_no_leftovers(base)
}

async fn wait_available(deployments: &Api<Deployment>, replicas: i32) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let available = deployments
            .get("demo")
            .await?
            .status
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        if available == replicas {
            return Ok(());
        }
        if started.elapsed() > ROLLOUT_TIMEOUT {
            bail!(
                "Deployment demo has {available}/{replicas} available replicas after {ROLLOUT_TIMEOUT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn timed(spec: ClusterSpec, base: &Path) -> anyhow::Result<Cluster> {
    let started = Instant::now();
    let name = spec.name.clone();
    let cluster = Cluster::start(spec, base)
        .await
        .with_context(|| format!("starting cluster {name}"))?;
    println!("cluster {name} ready after {:.1?}", started.elapsed());
    Ok(cluster)
}

async fn roll_out(client: &Client) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "demo" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "demo" } },
            "template": {
                "metadata": { "labels": { "app": "demo" } },
                "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] }
            }
        }
    }))?;
    let started = Instant::now();
    deployments
        .patch(
            "demo",
            &PatchParams::apply("two-clusters-example"),
            &Patch::Apply(&deployment),
        )
        .await?;
    wait_available(&deployments, 2).await?;
    println!(
        "Deployment demo available (2/2) after {:.1?}",
        started.elapsed()
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for pod in pods.list(&ListParams::default().labels("app=demo")).await? {
        let status = pod.status.unwrap_or_default();
        println!(
            "  pod {} on {}: {} with IP {}",
            pod.metadata.name.unwrap_or_default(),
            pod.spec.and_then(|s| s.node_name).unwrap_or_default(),
            status.phase.unwrap_or_default(),
            status.pod_ip.unwrap_or_default()
        );
    }
    Ok(())
}

/// No process of ours may survive `stop`: every component's command line names a file
/// under `base`, except etcd, whose data directory is `qleetos-etcd-<our pid>-<cluster>-…`.
fn check_no_leftovers(base: &Path) -> anyhow::Result<()> {
    let patterns = [
        base.display().to_string(),
        format!("qleetos-etcd-{}-", std::process::id()),
    ];
    for pattern in &patterns {
        let output = std::process::Command::new("pgrep")
            .args(["-a", "-f", pattern])
            .output()
            .context("running pgrep")?;
        let found = String::from_utf8_lossy(&output.stdout);
        ensure!(found.trim().is_empty(), "processes left running:\n{found}");
    }
    let global = std::process::Command::new("pgrep")
        .args(["-l", "^(etcd|kube-|kwok)"])
        .output()
        .context("running pgrep")?;
    let global = String::from_utf8_lossy(&global.stdout);
    if global.trim().is_empty() {
        println!("no etcd, kube-* or kwok processes left");
    } else {
        // Other test runs on this machine may have clusters of their own.
        println!("none of ours left; other etcd/kube-*/kwok processes:\n{global}");
    }
    Ok(())
}
