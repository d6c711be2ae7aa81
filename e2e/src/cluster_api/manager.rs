//! The Cluster API core manager process (`sigs.k8s.io/cluster-api/core` at the pinned
//! release), out of cluster against the management API server.
//!
//! Its webhook server gets a self-signed certificate for 127.0.0.1. One webhook is
//! registered with the management API server, as a Cluster API install has it: the
//! MachineDeployment defaulting, which gives a node group with autoscaler bounds and no
//! replica count (what QleetOS writes for an autoscaled pool) `min` replicas at creation and
//! keeps the count the autoscaler chose on every later topology update.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{CertificateParams, KeyPair};
use serde_json::json;

use crate::cluster::free_port;
use crate::error::Error;
use crate::http;
use crate::process::{self, ChildProcess, ProcessSpec};

const READY_TIMEOUT: Duration = Duration::from_secs(120);
const WEBHOOK_CONFIGURATION: &str = "qleetos-e2e-cluster-api-defaults";
const MACHINE_DEPLOYMENT_DEFAULTS: &str = "/mutate-cluster-x-k8s-io-v1beta2-machinedeployment";

/// Starts the manager with its files in `dir`, waits until `/readyz` answers 200, and
/// registers its MachineDeployment defaulting webhook with the management API server.
pub(super) async fn start(
    program: &Path,
    kubeconfig: &Path,
    management: &Client,
    dir: &Path,
) -> Result<ChildProcess, Error> {
    let cert_dir = dir.join("webhook-certs");
    let ca_pem = write_self_signed(&cert_dir)?;
    let (health_port, webhook_port) = (free_port()?, free_port()?);
    let flags = [
        ("kubeconfig", kubeconfig.display().to_string()),
        ("leader-elect", "false".to_owned()),
        ("feature-gates", "ClusterTopology=true".to_owned()),
        ("webhook-port", webhook_port.to_string()),
        ("webhook-cert-dir", cert_dir.display().to_string()),
        ("health-addr", format!("127.0.0.1:{health_port}")),
        ("diagnostics-address", format!("127.0.0.1:{}", free_port()?)),
        ("insecure-diagnostics", "true".to_owned()),
    ];
    let args: Vec<OsString> = flags
        .iter()
        .map(|(name, value)| format!("--{name}={value}").into())
        .collect();
    let mut manager = process::spawn(ProcessSpec {
        component: "cluster-api-manager".to_owned(),
        program: program.to_path_buf(),
        args,
        env: Vec::new(),
        log_path: dir.join("cluster-api-manager.log"),
    })
    .await?;
    http::wait_ready(&mut manager, health_port, "/readyz", READY_TIMEOUT).await?;
    register_defaulting(management, webhook_port, &ca_pem).await?;
    Ok(manager)
}

/// Points the API server at the manager's MachineDeployment defaulting on loopback.
async fn register_defaulting(management: &Client, port: u16, ca_pem: &str) -> Result<(), Error> {
    let configuration: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION},
        "webhooks": [{
            "name": "default.machinedeployment.cluster.x-k8s.io",
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}{MACHINE_DEPLOYMENT_DEFAULTS}"),
                "caBundle": k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()),
            },
            "rules": [{"apiGroups": ["cluster.x-k8s.io"], "apiVersions": ["v1beta2"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["machinedeployments"]}],
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    }))
    .map_err(|e| Error::Setup(format!("the defaulting webhook configuration: {e}")))?;
    let api: Api<MutatingWebhookConfiguration> = Api::all(management.clone());
    api.patch(
        WEBHOOK_CONFIGURATION,
        &PatchParams::apply(super::provider::FIELD_MANAGER).force(),
        &Patch::Apply(&configuration),
    )
    .await?;
    Ok(())
}

/// Removes the webhook registration, so the API server stops calling a manager that is about
/// to stop (a Fail policy would then refuse every MachineDeployment change). Best effort.
pub(super) async fn unregister_defaulting(management: &Client) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(management.clone());
    if let Err(error) = api.delete(WEBHOOK_CONFIGURATION, &Default::default()).await {
        tracing::warn!(%error, "could not remove the Cluster API defaulting webhook");
    }
}

/// `tls.crt` and `tls.key` for 127.0.0.1/localhost in `dir`; returns the certificate's PEM
/// (self-signed, it is its own CA).
fn write_self_signed(dir: &Path) -> Result<String, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let cert = params.self_signed(&key)?;
    for (name, pem) in [("tls.crt", cert.pem()), ("tls.key", key.serialize_pem())] {
        let path = dir.join(name);
        std::fs::write(&path, pem).map_err(|e| Error::io("cannot write", &path, e))?;
    }
    Ok(cert.pem())
}
