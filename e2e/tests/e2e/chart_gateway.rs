//! The gateway exactly as the chart runs it (issue 11): the rendered container's command,
//! arguments, environment and mounted TLS Secret, with only the listen address, the NATS
//! address and the mount paths mapped to this machine, and as the chart's ServiceAccount with
//! the chart's ClusterRole alone. Over HTTPS it reviews a token, creates a
//! Workload as that user and publishes the notification on the chart's NATS with the chart's
//! credentials; the operator places the Workload; `/metrics` counts the notification.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams};
use qleetos_e2e::certs::ClusterCerts;
use qleetos_e2e::cluster::free_port;
use qleetos_e2e::environment::{Environment, ensure_namespace};
use qleetos_e2e::operator::workspace_binary;
use qleetos_e2e::process::{ChildProcess, ProcessSpec, spawn};
use serde_json::{Value, json};

use crate::chart_nats::{charted_env, named};
use crate::gateway::{apply_dynamic, service_account_token, token_for};
use crate::provisioning::config_map;
use crate::support::*;

/// The value the trial renders the chart with: HTTPS from a Secret.
pub(crate) const TLS_VALUE: &str = "gateway.tls.secretName=qleetos-gateway-tls";
const TLS_SECRET: &str = "qleetos-gateway-tls";
const NS: &str = "chart-gateway";
const READY_WITHIN: Duration = Duration::from_secs(60);

pub(crate) async fn serves_as_charted(
    env: &Environment,
    rendered: &[Value],
    auth: &BTreeMap<String, String>,
) -> Result<()> {
    let dir = env.dir().join("chart-gateway");
    let deployment = named(rendered, "Deployment", "qleetos-gateway")?;
    let kubeconfig = charted_identity(env, rendered, &dir).await?;
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    ensure!(
        container["command"] == json!(["/qleetos-api-gateway"]),
        "the chart starts {}",
        container["command"]
    );
    let mounts = secret_mounts(pod, container, &dir)?;
    let tls = mounts
        .iter()
        .find(|m| m.secret == TLS_SECRET)
        .context("the TLS Secret is not mounted")?;
    let ca = write_tls_secret(&tls.local, &dir)?;
    let port = free_port()?;
    let args = mapped_args(container, port, &env.nats_url(), &mounts)?;
    let mut variables = charted_env(container, auth)?;
    variables.push(("KUBECONFIG".into(), kubeconfig.into()));
    let mut gateway = spawn(ProcessSpec {
        component: "qleetos-api-gateway (chart)".into(),
        program: workspace_binary("qleetos-api-gateway")?,
        args: args.into_iter().map(Into::into).collect(),
        env: variables,
        log_path: dir.join("gateway.log"),
    })
    .await?;
    let https = Https {
        base: format!("https://127.0.0.1:{port}"),
        ca,
        dir: dir.clone(),
    };
    let result = creates_and_notifies(env, &https, &mut gateway).await;
    gateway.stop().await;
    result
}

async fn creates_and_notifies(
    env: &Environment,
    https: &Https,
    gateway: &mut ChildProcess,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    while https.call(None, "GET", "/readyz", None).await?.0 != 200 {
        gateway.check_running()?;
        if tokio::time::Instant::now() > deadline {
            bail!("the charted gateway was not ready over HTTPS within {READY_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client = env.management_client().await?;
    let rules = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"],
        "verbs": ["get", "create", "delete"]}]);
    let token = service_account_token(&client, NS, "ci", rules, None).await?;
    let placement = json!({"regions": ["eu-west-1"]});
    let object = workload("via-gateway", config_map("via-gateway"), placement);
    let path = format!("/v1/namespaces/{NS}/workloads");
    let (code, body) = https
        .call(Some(&token), "POST", &path, Some(&object))
        .await?;
    ensure!(code == 201, "POST {path}: {code} {body}");
    wait_workload_ready(&client, NS, "via-gateway").await?;
    // The gateway publishes after answering, and counts a notification once the replicated
    // stream acknowledged it: the Workload may be Ready (through the operator's watch) first.
    eventually(
        "a notification published on the chart's NATS",
        TIMEOUT,
        || async {
            let (_, metrics) = https.call(None, "GET", "/metrics", None).await?;
            let published = metrics.lines().any(|l| {
                l.starts_with("qleetos_gateway_notifications_total{result=\"published\"}")
            });
            if published {
                return Ok(Some(()));
            }
            bail!("no notification published on the chart's NATS:\n{metrics}")
        },
    )
    .await?;
    let (code, body) = https
        .call(Some(&token), "DELETE", &format!("{path}/via-gateway"), None)
        .await?;
    ensure!(code == 200 || code == 202, "DELETE: {code} {body}");
    Ok(())
}

/// A kubeconfig for the management API as the chart's gateway ServiceAccount, after applying
/// the chart's ServiceAccount, ClusterRole and ClusterRoleBinding: the gateway then has exactly
/// the rights the chart gives it.
async fn charted_identity(env: &Environment, rendered: &[Value], dir: &Path) -> Result<PathBuf> {
    let client = env.management_client().await?;
    let account = named(rendered, "ServiceAccount", "qleetos-gateway")?;
    let namespace = account["metadata"]["namespace"]
        .as_str()
        .context("the ServiceAccount has no namespace")?;
    ensure_namespace(&client, namespace).await?;
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .patch(
            "qleetos-gateway",
            &PatchParams::apply("qleetos-e2e").force(),
            &Patch::Apply(account),
        )
        .await?;
    let role = named(rendered, "ClusterRole", "qleetos-gateway")?;
    apply_dynamic(&client, "clusterroles", None, role).await?;
    let binding = named(rendered, "ClusterRoleBinding", "qleetos-gateway")?;
    apply_dynamic(&client, "clusterrolebindings", None, binding).await?;
    let token = token_for(&client, namespace, "qleetos-gateway").await?;
    let admin = std::fs::read_to_string(env.management.kubeconfig_path())?;
    let mut kubeconfig: Value = serde_norway::from_str(&admin)?;
    for user in kubeconfig["users"].as_array_mut().into_iter().flatten() {
        user["user"] = json!({"token": token});
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join("gateway.kubeconfig");
    std::fs::write(&path, kubeconfig.to_string())?;
    Ok(path)
}

/// A Secret volume the container mounts, and the local folder standing in for it.
struct SecretMount {
    secret: String,
    mount_path: String,
    local: PathBuf,
}

fn secret_mounts(pod: &Value, container: &Value, dir: &Path) -> Result<Vec<SecretMount>> {
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
            .with_context(|| format!("mount {mount} names no volume"))?;
        let secret = volume["secret"]["secretName"]
            .as_str()
            .with_context(|| format!("volume {volume} is not a Secret"))?;
        let local = dir.join(mount["name"].as_str().unwrap_or_default());
        std::fs::create_dir_all(&local)?;
        mounts.push(SecretMount {
            secret: secret.to_owned(),
            mount_path: mount["mountPath"].as_str().unwrap_or_default().to_owned(),
            local,
        });
    }
    Ok(mounts)
}

/// The chart's arguments with the listen address, NATS address and mount paths made local.
fn mapped_args(
    container: &Value,
    port: u16,
    nats_url: &str,
    mounts: &[SecretMount],
) -> Result<Vec<String>> {
    let args: Vec<String> = serde_json::from_value(container["args"].clone())?;
    let mut mapped = Vec::new();
    for arg in args {
        let arg = if arg.starts_with("--listen=") {
            format!("--listen=127.0.0.1:{port}")
        } else if arg.starts_with("--nats-url=") {
            format!("--nats-url={nats_url}")
        } else {
            mounts.iter().fold(arg, |arg, mount| {
                let local = format!("={}/", mount.local.display());
                arg.replace(&format!("={}/", mount.mount_path), &local)
            })
        };
        mapped.push(arg);
    }
    for flag in ["--tls-cert=", "--tls-key=", "--nats-url="] {
        if !mapped.iter().any(|a| a.starts_with(flag)) {
            bail!("the chart's gateway has no {flag}: {mapped:?}");
        }
    }
    Ok(mapped)
}

/// Writes what the kubelet would project from a `kubernetes.io/tls` Secret; returns the CA.
fn write_tls_secret(mount: &Path, dir: &Path) -> Result<PathBuf> {
    let certs = ClusterCerts::generate("chart-gateway")?;
    std::fs::write(mount.join("tls.crt"), &certs.serving_cert)?;
    std::fs::write(mount.join("tls.key"), &certs.serving_key)?;
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, &certs.ca_cert)?;
    Ok(ca)
}

/// curl over HTTPS, trusting only the trial's CA; the token goes in a header file, not argv.
struct Https {
    base: String,
    ca: PathBuf,
    dir: PathBuf,
}

impl Https {
    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String)> {
        let mut command = tokio::process::Command::new("curl");
        command
            .args(["-sS", "--max-time", "30", "-X", method, "--cacert"])
            .arg(&self.ca)
            .args(["-w", "\n%{http_code}"]);
        if let Some(token) = token {
            let header = self.dir.join("authorization");
            std::fs::write(&header, format!("Authorization: Bearer {token}\n"))?;
            command.arg("-H").arg(format!("@{}", header.display()));
        }
        if let Some(body) = body {
            command
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(body.to_string());
        }
        let output = command
            .arg(format!("{}{path}", self.base))
            .output()
            .await
            .context("running curl (Debian package curl)")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or(0);
        if code == 0 {
            let error = String::from_utf8_lossy(&output.stderr);
            return Ok((0, error.into_owned()));
        }
        Ok((code, body.to_owned()))
    }
}
