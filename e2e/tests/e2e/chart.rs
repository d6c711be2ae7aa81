//! The Helm chart ships the default SupportServiceProfiles: rendered by the real Helm CLI,
//! identical to `examples/support-services`, accepted by the management cluster's CRD schema,
//! and with the documented production values (an ACME issuer, external-dns with your own
//! provider) accepted by cert-manager's real ClusterIssuer schema.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};
use qleetos_e2e::binaries::{self, CertManager};
use qleetos_e2e::environment::Environment;
use serde::Deserialize;
use serde_json::Value;

use crate::support::kubectl;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/qleetos");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/support-services");

pub async fn chart_ships_the_default_profiles(env: &Environment) -> Result<()> {
    let management = env.management.kubeconfig_path();
    let defaults = profiles(&render(&[]).await?)?;
    let names: Vec<&str> = defaults.iter().map(name).collect();
    ensure!(
        names == ["cert-manager", "traefik"],
        "default profiles: {names:?} (external-dns is off until its provider is configured)"
    );
    for profile in &defaults {
        let example = example(name(profile))?;
        ensure!(
            *profile == example,
            "the chart's {} profile differs from examples/support-services",
            name(profile)
        );
    }
    server_dry_run(management, &defaults).await?;

    let production = profiles(
        &render(&[
            "supportServices.certManager.issuer=acme",
            "supportServices.certManager.acme.email=ops@example.com",
            "supportServices.externalDns.enabled=true",
            "supportServices.externalDns.values.provider.name=aws",
            "supportServices.externalDns.values.sources={ingress}",
            "supportServices.externalDns.values.labelFilter=app=anything",
        ])
        .await?,
    )?;
    let cert_manager = production
        .iter()
        .find(|p| name(p) == "cert-manager")
        .context("no cert-manager profile with ACME values")?;
    ensure!(
        cert_manager["spec"]["workloadObjects"]["certificateIssuer"]["name"] == "qleetos-acme",
        "certificates must use the ACME issuer: {}",
        cert_manager["spec"]["workloadObjects"]
    );
    let manifests = cert_manager["spec"]["manifests"]
        .as_array()
        .context("manifests")?;
    let issuers: Vec<&Value> = manifests
        .iter()
        .filter(|m| m["kind"] == "ClusterIssuer" || m["metadata"]["name"] == "qleetos-ca")
        .collect();
    ensure!(
        issuers.len() == 1 && issuers[0]["spec"]["acme"]["email"] == "ops@example.com",
        "the local CA must give way to one ACME ClusterIssuer: {issuers:?}"
    );
    let external_dns = production
        .iter()
        .find(|p| name(p) == "external-dns")
        .context("external-dns enabled but not rendered")?;
    let values = &external_dns["spec"]["chart"]["values"];
    ensure!(
        values["provider"]["name"] == "aws" && !values.to_string().contains("rfc2136"),
        "external-dns must take the given provider values: {values}"
    );
    ensure!(
        values["labelFilter"] == "qleetos.io/dns=published",
        "external-dns must publish only the routes QleetOS generates: {values}"
    );
    server_dry_run(management, &production).await?;
    cert_manager_accepts(management, issuers[0]).await
}

/// `helm template` of the chart with `--set` values.
pub(crate) async fn render(values: &[&str]) -> Result<String> {
    let helm = binaries::helm().await?;
    let mut command = tokio::process::Command::new(helm);
    command.args([
        "template",
        "qleetos",
        CHART,
        "--namespace",
        "qleetos-system",
    ]);
    for value in values {
        command.args(["--set", value]);
    }
    let output = command.output().await.context("running helm")?;
    if !output.status.success() {
        bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub(crate) fn documents(text: &str) -> Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

fn profiles(rendered: &str) -> Result<Vec<Value>> {
    Ok(documents(rendered)?
        .into_iter()
        .filter(|d| d["kind"] == "SupportServiceProfile")
        .collect())
}

fn example(name: &str) -> Result<Value> {
    let path = PathBuf::from(EXAMPLES).join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    documents(&text)?
        .into_iter()
        .next()
        .with_context(|| format!("{} is empty", path.display()))
}

fn name(profile: &Value) -> &str {
    profile["metadata"]["name"].as_str().unwrap_or_default()
}

/// The objects pass the management API server's schemas, and CEL rules of installed CRDs
/// (nothing is stored).
pub(crate) async fn server_dry_run(kubeconfig: &Path, objects: &[Value]) -> Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(file.path(), list.to_string())?;
    let path = file.path().to_string_lossy().into_owned();
    kubectl(kubeconfig, &["apply", "--dry-run=server", "-f", &path]).await?;
    Ok(())
}

/// cert-manager's real ClusterIssuer CRD accepts the ACME issuer (applied to the management
/// cluster for the check, then removed).
async fn cert_manager_accepts(kubeconfig: &Path, issuer: &Value) -> Result<()> {
    let cert_manager = CertManager::get().await?;
    let crd = cert_manager
        .crds
        .iter()
        .find(|path| path.to_string_lossy().contains("clusterissuers"))
        .context("no ClusterIssuer CRD in cert-manager's release")?;
    let crd = crd.to_string_lossy().into_owned();
    kubectl(kubeconfig, &["apply", "--server-side", "-f", &crd]).await?;
    let crd_name = "clusterissuers.cert-manager.io";
    // `kubectl wait` fails at once while the new CRD has no conditions yet: retry it.
    let crd_ref = format!("crd/{crd_name}");
    let established = crate::support::eventually(
        &format!("CRD {crd_name} Established"),
        std::time::Duration::from_secs(60),
        || async {
            let args = [
                "wait",
                "--for=condition=Established",
                "--timeout=10s",
                &crd_ref,
            ];
            kubectl(kubeconfig, &args).await.map(Some)
        },
    )
    .await;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), issuer.to_string())?;
    let path = file.path().to_string_lossy().into_owned();
    let accepted = match established {
        Ok(_) => kubectl(kubeconfig, &["apply", "--dry-run=server", "-f", &path]).await,
        Err(error) => Err(error),
    };
    kubectl(kubeconfig, &["delete", "crd", crd_name, "--wait=false"]).await?;
    accepted.map(|_| ())
}
