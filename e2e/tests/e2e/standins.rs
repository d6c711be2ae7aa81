//! Stand-ins: real controllers acting, out of cluster, for components whose pods kwok only
//! simulates. The cert-manager trial installs cert-manager the way a chart would (CRDs and a
//! Deployment) into a runtime, has the real controller issue a certificate, and uninstalls it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use qleetos_e2e::binaries::CertManager;
use qleetos_e2e::environment::{Environment, ensure_namespace};
use qleetos_e2e::issued::IssuedCertificate;
use qleetos_e2e::standin::{StandIn, StandInSpec};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{TIMEOUT, eventually};

const FIELD_MANAGER: &str = "e2e-test";
const CERT_MANAGER: &str = "cert-manager";
/// Where the trial's Certificate and its Secret live.
const NAMESPACE: &str = "standin-certs";
const HOST: &str = "web.example.test";

pub async fn cert_manager_stand_in_issues_a_certificate(env: &Environment) -> Result<()> {
    let cluster = env.runtime("us-east").context("us-east")?;
    let client = cluster.client().await?;
    let crds = read_crds(&CertManager::get().await?.crds)?;
    let spec = StandInSpec::cert_manager().await?;
    let log_dir = cluster.dir().join("logs");
    let stand_in = StandIn::start(spec, cluster.kubeconfig_path(), &log_dir).await?;
    let outcome = install_issue_uninstall(&client, &stand_in, &crds).await;
    stand_in.stop().await;
    let cleaned = clean_up(&client, &crds).await;
    outcome
        .with_context(|| {
            format!(
                "controller log: {}",
                log_dir.join("cert-manager.log").display()
            )
        })
        .and(cleaned)
}

async fn install_issue_uninstall(
    client: &Client,
    stand_in: &StandIn,
    crds: &[Value],
) -> Result<()> {
    apply_crds(client, crds).await?;
    // Several polls later, still nothing runs: cert-manager's Deployment does not exist yet.
    let checked = stand_in.status().checks;
    stand_in.wait_checks(checked + 3, TIMEOUT).await?;
    ensure!(
        stand_in.status().starts == 0,
        "started without a Deployment: {:?}",
        stand_in.status()
    );

    ensure_namespace(client, CERT_MANAGER).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), CERT_MANAGER);
    deployments
        .patch(
            CERT_MANAGER,
            &apply_params(),
            &Patch::Apply(cert_manager_deployment()),
        )
        .await?;
    eventually("kwok to run the cert-manager pod", TIMEOUT, || async {
        let deployment = deployments.get(CERT_MANAGER).await?;
        let ready = deployment
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        Ok((ready == 1).then_some(()))
    })
    .await?;
    let pid = stand_in.wait_running(TIMEOUT).await?;

    ensure_namespace(client, NAMESPACE).await?;
    apply_cert_manager_object(client, "ClusterIssuer", None, &self_signed_issuer()).await?;
    apply_cert_manager_object(client, "Certificate", Some(NAMESPACE), &web_certificate()).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let dns_names = eventually("Secret web-tls to hold a certificate", TIMEOUT, || async {
        let data = secrets.get_opt("web-tls").await?.and_then(|s| s.data);
        match data.as_ref().and_then(|d| d.get("tls.crt")) {
            Some(pem) if !pem.0.is_empty() => {
                Ok(Some(IssuedCertificate::from_pem(&pem.0)?.dns_names))
            }
            _ => Ok(None),
        }
    })
    .await?;
    ensure!(
        dns_names.iter().any(|n| n == HOST),
        "SANs {dns_names:?} lack {HOST}"
    );
    let status = stand_in.status();
    ensure!(
        status.pid == Some(pid) && status.starts == 1,
        "the controller restarted: {status:?}"
    );

    deployments
        .delete(CERT_MANAGER, &DeleteParams::default())
        .await?;
    stand_in.wait_stopped(Duration::from_secs(30)).await?;
    ensure!(
        !is_alive(pid),
        "process {pid} still runs after its Deployment was deleted"
    );
    Ok(())
}

/// Every CRD manifest of cert-manager's release, as JSON.
fn read_crds(paths: &[PathBuf]) -> Result<Vec<Value>> {
    let mut crds = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        for document in serde_norway::Deserializer::from_str(&text) {
            let crd = Value::deserialize(document).with_context(|| path.display().to_string())?;
            if !crd.is_null() {
                crds.push(crd);
            }
        }
    }
    ensure!(!crds.is_empty(), "no CRDs in {paths:?}");
    Ok(crds)
}

fn crd_name(crd: &Value) -> Result<&str> {
    crd["metadata"]["name"]
        .as_str()
        .context("CRD without a name")
}

async fn apply_crds(client: &Client, crds: &[Value]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        api.patch(crd_name(crd)?, &apply_params(), &Patch::Apply(crd))
            .await?;
    }
    for crd in crds {
        let name = crd_name(crd)?;
        eventually(
            &format!("CRD {name} to be established"),
            TIMEOUT,
            || async {
                let conditions = api.get(name).await?.status.and_then(|s| s.conditions);
                let established = conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

async fn apply_cert_manager_object(
    client: &Client,
    kind: &str,
    namespace: Option<&str>,
    object: &Value,
) -> Result<()> {
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api: Api<DynamicObject> = match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let name = object["metadata"]["name"].as_str().context("name")?;
    api.patch(name, &apply_params(), &Patch::Apply(object))
        .await?;
    Ok(())
}

/// Removes what the trial created; the CRDs last, waiting until they are gone, so that
/// no cert-manager resource outlives the trial.
async fn clean_up(client: &Client, crds: &[Value]) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in [NAMESPACE, CERT_MANAGER] {
        ignore_not_found(namespaces.delete(namespace, &DeleteParams::default()).await)?;
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        ignore_not_found(api.delete(crd_name(crd)?, &DeleteParams::default()).await)?;
    }
    eventually("cert-manager's CRDs to be removed", TIMEOUT, || async {
        for crd in crds {
            if api.get_opt(crd_name(crd)?).await?.is_some() {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        other => other.map(drop).map_err(Into::into),
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Whether a process runs (a zombie counts as gone).
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or_default()
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// cert-manager's Deployment as its chart renders it, trimmed; kwok runs its pod.
fn cert_manager_deployment() -> Value {
    let labels = json!({"app.kubernetes.io/name": CERT_MANAGER, "app.kubernetes.io/component": "controller"});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": CERT_MANAGER, "namespace": CERT_MANAGER, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "cert-manager-controller",
                    "image": "quay.io/jetstack/cert-manager-controller:v1.21.2",
                    "args": ["--leader-elect=false", "--cluster-resource-namespace=cert-manager"]
                }]}
            }
        }
    })
}

fn self_signed_issuer() -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
        "metadata": {"name": "standin-selfsigned"},
        "spec": {"selfSigned": {}}
    })
}

fn web_certificate() -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {
            "secretName": "web-tls",
            "commonName": HOST,
            "dnsNames": [HOST],
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "standin-selfsigned"}
        }
    })
}
