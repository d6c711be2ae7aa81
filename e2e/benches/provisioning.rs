//! Time from `apply` to Ready of a Workload in a region with no cluster (QleetOS provisions
//! one with the `Local` provider, then deploys) against the same Workload on an existing
//! runtime, measured in the same run, and their ratio; then the time until the idle cluster
//! and its processes are gone. Run with `cargo bench -p qleetos-e2e --bench provisioning`
//! (`BENCH_ROUNDS` sets the rounds, default 3).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use qleetos_crds::{Conditions, KubernetesRuntime, KubernetesRuntimeProfile, Workload};
use qleetos_e2e::environment::{Environment, RuntimeSpec, ensure_lab_namespace};
use qleetos_e2e::local_clusters;
use qleetos_e2e::operator::OperatorOptions;
use serde_json::{Value, json};

const NS: &str = "bench";
const TIMEOUT: Duration = Duration::from_secs(300);

fn workload(name: &str, placement: Value) -> Value {
    json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"placement": placement, "manifests": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                      "template": {"metadata": {"labels": {"app": "web"}},
                                   "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}]}})
}

async fn until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + TIMEOUT;
    while !check().await? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Applies the Workload and returns the time until it is Ready, then deletes it.
async fn apply_to_ready(client: &Client, name: &str, placement: Value) -> Result<Duration> {
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    api.patch(
        name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(workload(name, placement)),
    )
    .await?;
    until(&format!("{name} Ready"), || async {
        let w = api.get(name).await?;
        let status = w.status.unwrap_or_default();
        Ok(status.is_ready() && status.observed_generation == w.metadata.generation)
    })
    .await?;
    let took = started.elapsed();
    api.delete(name, &DeleteParams::default()).await?;
    until(&format!("{name} gone"), || async {
        Ok(api.get_opt(name).await?.is_none())
    })
    .await?;
    Ok(took)
}

async fn bench(env: &Environment, rounds: usize) -> Result<()> {
    let client = env.management_client().await?;
    // Clusters on demand are granted to lab namespaces only (the default provisions none).
    ensure_lab_namespace(&client, NS).await?;
    let profile = json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntimeProfile",
        "metadata": {"name": "bench"},
        "spec": {"provider": "Local", "regions": ["empty-1"], "default": true,
                 "kubernetesVersion": "v1.36.2", "nodePools": [{"name": "workers", "count": 2}],
                 "idle": {"afterSeconds": 0}}});
    Api::<KubernetesRuntimeProfile>::all(client.clone())
        .patch(
            "bench",
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&profile),
        )
        .await?;
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    println!("round  existing runtime (s)  new cluster (s)  ratio  cluster gone after (s)");
    for round in 1..=rounds {
        let existing =
            apply_to_ready(&client, "existing", json!({"regions": ["eu-west-1"]})).await?;
        let placement = json!({"regions": ["empty-1"], "provision": "IfNeeded"});
        let fresh = apply_to_ready(&client, "fresh", placement).await?;
        let deleted = Instant::now();
        until("the idle cluster gone", || async {
            let gone = runtimes.get_opt("bench-empty-1").await?.is_none();
            Ok(gone
                && local_clusters::processes_of(&env.local_clusters_dir(), "bench-empty-1")
                    .is_empty())
        })
        .await
        .context("deprovisioning")?;
        println!(
            "{round:>5}  {:>20.2}  {:>15.2}  {:>5.1}  {:>22.2}",
            existing.as_secs_f64(),
            fresh.as_secs_f64(),
            fresh.as_secs_f64() / existing.as_secs_f64(),
            deleted.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let dir = tempfile::Builder::new()
            .prefix("qleetos-bench-")
            .tempdir()?;
        let spec = vec![RuntimeSpec::new("eu-west", "eu-west-1", &[])];
        let mut env = Environment::start(dir.path(), spec).await?;
        env.start_operator(OperatorOptions::default()).await?;
        let result = bench(&env, rounds).await;
        env.stop().await;
        result
    })
}
