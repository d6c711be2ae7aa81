//! Helpers shared by the end-to-end scenarios: fixtures, polling, kubectl.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use qleetos_crds::{Conditions, TenantPolicy, Workload, WorkloadInstance};
use qleetos_e2e::environment::{LAB_POLICY, ensure_lab_namespace, ensure_namespace};
use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `check` until it returns `Some`, failing after `timeout` with the last observation.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no observation yet");
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last = format!("{error:#}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Deployment named `web` with one container `web`, and a Service `web`.
pub fn web_manifests(replicas: i64, image: &str) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image}]}
                }
            }
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }),
    ]
}

pub fn workload(name: &str, manifests: Vec<Value>, placement: Value) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name},
        "spec": {"manifests": manifests, "placement": placement}
    })
}

/// Creates the namespace and applies the Workload in it.
pub async fn apply_workload(
    client: &Client,
    namespace: &str,
    workload: &Value,
) -> Result<Workload> {
    ensure_namespace(client, namespace).await?;
    let name = workload["metadata"]["name"]
        .as_str()
        .context("workload name")?;
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply("e2e-test").force();
    Ok(api.patch(name, &params, &Patch::Apply(workload)).await?)
}

/// Creates lab namespace `namespace` (`ensure_lab_namespace`: hosts under `qleetos.test`,
/// clusters on demand) and waits until the operator sees it as one (the TenantPolicy
/// `e2e-lab` lists it), so that no Workload of it is judged by the default first.
pub async fn lab_namespace(client: &Client, namespace: &str) -> Result<()> {
    ensure_lab_namespace(client, namespace).await?;
    policy_selects(client, LAB_POLICY, namespace).await
}

/// Waits until the operator reports TenantPolicy `policy` (its current generation) in force
/// for management namespace `namespace`.
pub async fn policy_selects(client: &Client, policy: &str, namespace: &str) -> Result<()> {
    let api: Api<TenantPolicy> = Api::all(client.clone());
    eventually(
        &format!("TenantPolicy {policy} selecting {namespace}"),
        TIMEOUT,
        || async {
            let found = api.get(policy).await?;
            let status = found.status.unwrap_or_default();
            let selected = status.observed_generation == found.metadata.generation
                && status.selected_namespaces.iter().any(|n| n == namespace);
            Ok(selected.then_some(()))
        },
    )
    .await
}

/// Like [`apply_workload`], in a [`lab_namespace`]: for Workloads that expose hosts under
/// `qleetos.test` or provision clusters, which no namespace may by default.
pub async fn apply_lab_workload(
    client: &Client,
    namespace: &str,
    workload: &Value,
) -> Result<Workload> {
    lab_namespace(client, namespace).await?;
    apply_workload(client, namespace, workload).await
}

pub async fn merge_patch_workload(
    client: &Client,
    namespace: &str,
    name: &str,
    patch: Value,
) -> Result<Workload> {
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?)
}

/// Waits until the Workload reports Ready=True for its current generation.
pub async fn wait_workload_ready(client: &Client, namespace: &str, name: &str) -> Result<Workload> {
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("Workload {namespace}/{name} Ready"),
        TIMEOUT,
        || async {
            let workload = api.get(name).await?;
            let status = workload.status.clone().unwrap_or_default();
            let current = status.observed_generation == workload.metadata.generation;
            if current && status.is_ready() {
                return Ok(Some(workload));
            }
            bail!("status: {}", serde_json::to_string(&status)?)
        },
    )
    .await
}

/// Waits until the Workload's Ready condition is False with `reason`, returning its message.
pub async fn wait_workload_not_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> Result<String> {
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("Workload {namespace}/{name} Ready=False {reason}"),
        TIMEOUT,
        || async {
            let workload = api.get(name).await?;
            let status = workload.status.clone().unwrap_or_default();
            match status.condition(qleetos_crds::READY) {
                Some(c)
                    if !c.is_true()
                        && c.reason == reason
                        && status.observed_generation == workload.metadata.generation =>
                {
                    Ok(Some(c.message.clone()))
                }
                _ => bail!("status: {}", serde_json::to_string(&status)?),
            }
        },
    )
    .await
}

pub async fn instances_of(
    client: &Client,
    namespace: &str,
    workload: &str,
) -> Result<Vec<WorkloadInstance>> {
    let api: Api<WorkloadInstance> = Api::namespaced(client.clone(), namespace);
    let selector = format!("qleetos.io/workload={workload}");
    Ok(api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?
        .items)
}

pub async fn delete_workload(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    api.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// The image of container `web` of Deployment `web` in a runtime, once it exists.
pub async fn deployment_image(runtime: &Client, namespace: &str) -> Result<Option<String>> {
    let api: Api<Deployment> = Api::namespaced(runtime.clone(), namespace);
    Ok(api.get_opt("web").await?.and_then(|d| {
        d.spec?
            .template
            .spec?
            .containers
            .first()
            .and_then(|c| c.image.clone())
    }))
}

/// Runs the real kubectl against a cluster and returns its stdout, failing with its stderr.
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let binaries = qleetos_e2e::binaries::Binaries::get().await?;
    let output = tokio::process::Command::new(&binaries.kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .context("running kubectl")?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The runtimes the instances are placed on, sorted.
pub fn placed_on(instances: &[WorkloadInstance]) -> Vec<String> {
    let mut runtimes: Vec<String> = instances
        .iter()
        .map(|i| i.spec.runtime_ref.name.clone())
        .collect();
    runtimes.sort();
    runtimes
}

/// Where each running operator's log stands now, for [`wait_reconciled`].
pub fn log_marks(env: &qleetos_e2e::environment::Environment) -> Vec<usize> {
    env.operators().iter().map(|o| o.log().len()).collect()
}

/// Waits until the operators have logged `times` finished reconciles of the `kind` object
/// `namespace/name` (`_` for a cluster-scoped one) since `marks` ([`log_marks`]): a positive
/// sign that its Qleet looked at it again.
pub async fn wait_reconciled(
    env: &qleetos_e2e::environment::Environment,
    marks: &[usize],
    kind: &str,
    namespace: &str,
    name: &str,
    times: usize,
) -> Result<()> {
    // The worker's `reconcile` span names the kind and the object of every line in it.
    let object = match namespace {
        "_" => format!("kind=\"{kind}\" object={name} "),
        namespace => format!("kind=\"{kind}\" object={namespace}/{name} "),
    };
    eventually(
        &format!("{times} reconcile(s) of {kind} {namespace}/{name}"),
        TIMEOUT,
        || async {
            let done: usize = env
                .operators()
                .iter()
                .zip(marks)
                .map(|(operator, mark)| {
                    let log = operator.log();
                    let since = log.get(*mark..).unwrap_or_default();
                    since
                        .lines()
                        .filter(|l| l.contains(" reconciled ") && l.contains(&object))
                        .count()
                })
                .sum();
            Ok((done >= times).then_some(()))
        },
    )
    .await
}
