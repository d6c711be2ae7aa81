//! The `Local` provider: real clusters on the operator's machine (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok's node simulator, run by `kwokctl` with
//! its binary runtime). For local environments and tests; enabled by
//! `--local-clusters-bin-dir`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use qleetos_crds::{KubernetesRuntime, KubernetesRuntimeProfile, ProvisioningPhase};
use tokio::process::Command;
use tokio::sync::OnceCell;

use super::{Progress, failed, write_kubeconfig};
use crate::context::Context;
use crate::error::Result;

/// How long one `kwokctl` call may take.
const KWOKCTL_TIMEOUT: Duration = Duration::from_secs(50);

/// Where the Local provider finds its programs and keeps its clusters.
#[derive(Debug, Clone)]
pub struct LocalClusters {
    /// Holds `kwokctl`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `kwok`.
    pub bin_dir: PathBuf,
    /// The etcd binary.
    pub etcd: PathBuf,
    /// kwokctl's work directory: one folder per cluster, with its data and logs.
    pub work_dir: PathBuf,
}

impl LocalClusters {
    fn kwokctl(&self, cluster: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join("kwokctl"));
        command
            .env("KWOK_WORKDIR", &self.work_dir)
            .arg("--name")
            .arg(cluster)
            .stdin(std::process::Stdio::null())
            // A call that runs out of time stops: it must not go on beside the next one.
            .kill_on_drop(true);
        command
    }

    /// The kubeconfig kwokctl adds the cluster's context to (one per cluster: no races).
    fn scratch_kubeconfig(&self, cluster: &str) -> PathBuf {
        self.work_dir.join(format!("{cluster}.contexts.yaml"))
    }
}

/// Creates the cluster when missing, stores its kubeconfig and sizes its nodes.
pub async fn ensure(
    ctx: &Context,
    runtime: &KubernetesRuntime,
    profile: &KubernetesRuntimeProfile,
) -> Result<Progress> {
    let Some(local) = ctx.settings.local_clusters.as_ref() else {
        return Err(failed(
            runtime,
            "the Local provider is not enabled on this operator (start it with --local-clusters-bin-dir)",
        ));
    };
    let version = binaries_version(local).await;
    if version != profile.spec.kubernetes_version {
        let profile_name = profile.metadata.name.as_deref().unwrap_or_default();
        return Err(failed(
            runtime,
            format!(
                "the Local provider runs Kubernetes {version} (its binaries); profile {profile_name} asks for {}: set spec.kubernetesVersion: {version}",
                profile.spec.kubernetes_version
            ),
        ));
    }
    let cluster = runtime.metadata.name.clone().unwrap_or_default();
    if !exists(local, &cluster) {
        create(local, &cluster, runtime).await?;
    } else if !runtime.is_reachable() {
        // Idempotent: starts what an interrupted create (or a reboot) left stopped.
        run(local.kwokctl(&cluster).args(["start", "cluster"]))
            .await
            .map_err(|message| failed(runtime, format!("kwokctl start cluster: {message}")))?;
    }
    let kubeconfig = match run(local.kwokctl(&cluster).args(["get", "kubeconfig"])).await {
        Ok(output) => output.stdout,
        Err(message) => {
            // A cluster half-created by an interrupted call: start over.
            tracing::warn!(%cluster, %message, "local cluster has no kubeconfig; recreating it");
            delete(local, &cluster).await?;
            return Err(failed(
                runtime,
                format!("recreating the cluster: {message}"),
            ));
        }
    };
    write_kubeconfig(ctx, runtime, &kubeconfig).await?;
    let desired = profile.desired_workers();
    let settled = runtime
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .is_some_and(|p| p.phase == ProvisioningPhase::Provisioned)
        && runtime.status.as_ref().and_then(|s| s.node_count) == Some(desired);
    if !settled {
        let replicas = desired.to_string();
        run(local
            .kwokctl(&cluster)
            .args(["scale", "node", "--replicas", &replicas]))
        .await
        .map_err(|message| failed(runtime, format!("adding {desired} nodes: {message}")))?;
    }
    Ok(Progress::provisioned(
        format!("local cluster {cluster} running, {desired} node(s) requested"),
        Some(format!("kwokctl cluster {cluster}")),
    ))
}

/// Stops the cluster's processes and deletes its data: `None` once it is gone.
pub async fn remove(ctx: &Context, runtime: &KubernetesRuntime) -> Result<Option<String>> {
    let Some(local) = ctx.settings.local_clusters.as_ref() else {
        return Ok(None);
    };
    let cluster = runtime.metadata.name.clone().unwrap_or_default();
    if exists(local, &cluster) {
        delete(local, &cluster).await?;
        tracing::info!(%cluster, "local cluster deleted");
    }
    Ok(None)
}

fn exists(local: &LocalClusters, cluster: &str) -> bool {
    local.work_dir.join("clusters").join(cluster).is_dir()
}

async fn create(local: &LocalClusters, cluster: &str, runtime: &KubernetesRuntime) -> Result<()> {
    tracing::info!(%cluster, "creating local cluster");
    let bin = |name: &str| local.bin_dir.join(name);
    let mut command = local.kwokctl(cluster);
    command
        .args(["create", "cluster", "--runtime", "binary", "--wait", "40s"])
        .arg("--kubeconfig")
        .arg(local.scratch_kubeconfig(cluster))
        .arg("--kube-apiserver-binary")
        .arg(bin("kube-apiserver"))
        .arg("--kube-controller-manager-binary")
        .arg(bin("kube-controller-manager"))
        .arg("--kube-scheduler-binary")
        .arg(bin("kube-scheduler"))
        .arg("--kwok-controller-binary")
        .arg(bin("kwok"))
        .arg("--etcd-binary")
        .arg(&local.etcd);
    if let Err(message) = run(&mut command).await {
        // A create cut short (a timeout under load) can leave components that never started
        // (the controller manager filling the aggregated roles, kwok): nothing is kept of it,
        // and the next pass creates the cluster whole.
        tracing::warn!(%cluster, %message, "local cluster not created; removing what was started");
        if exists(local, cluster) {
            delete(local, cluster).await?;
        }
        return Err(failed(
            runtime,
            format!("kwokctl create cluster: {message}"),
        ));
    }
    Ok(())
}

async fn delete(local: &LocalClusters, cluster: &str) -> Result<()> {
    let mut command = local.kwokctl(cluster);
    command
        .args(["delete", "cluster"])
        .arg("--kubeconfig")
        .arg(local.scratch_kubeconfig(cluster));
    run(&mut command)
        .await
        .map_err(|message| crate::error::Error::Provisioning {
            runtime: cluster.to_owned(),
            message: format!("kwokctl delete cluster: {message}"),
        })?;
    let _ = std::fs::remove_file(local.scratch_kubeconfig(cluster));
    Ok(())
}

/// Runs a kwokctl call; its error is the last message kwokctl logged.
async fn run(command: &mut Command) -> std::result::Result<Output, String> {
    let output = tokio::time::timeout(KWOKCTL_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("no answer within {}s", KWOKCTL_TIMEOUT.as_secs()))?
        .map_err(|e| format!("cannot run kwokctl: {e}"))?;
    if output.status.success() {
        return Ok(output);
    }
    Err(last_error(&output.stderr))
}

/// The `err` (or `msg`) of kwokctl's last JSON log line, or its last line of text.
fn last_error(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return "kwokctl failed without a message".to_owned();
    };
    let message = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| {
            v.get("err")
                .or_else(|| v.get("msg"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| line.trim().to_owned());
    message.chars().take(400).collect()
}

/// The version the Local provider's kube-apiserver reports (`v1.36.2`), read once.
async fn binaries_version(local: &LocalClusters) -> String {
    static VERSION: OnceCell<String> = OnceCell::const_new();
    VERSION
        .get_or_init(|| read_version(&local.bin_dir))
        .await
        .clone()
}

async fn read_version(bin_dir: &Path) -> String {
    let output = Command::new(bin_dir.join("kube-apiserver"))
        .arg("--version")
        .output()
        .await;
    match output {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .last()
            .unwrap_or("unknown")
            .to_owned(),
        Err(error) => format!("unknown ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::last_error;

    #[test]
    fn the_error_is_kwokctls_last_logged_err() {
        let stderr = br#"{"level":"INFO","msg":"Cluster is creating"}
{"level":"ERROR","msg":"Execute exit","err":"stat /x/kwok: no such file or directory"}
"#;
        assert_eq!(
            last_error(stderr),
            "stat /x/kwok: no such file or directory"
        );
        assert_eq!(last_error(b"plain failure\n"), "plain failure");
        assert_eq!(last_error(b""), "kwokctl failed without a message");
    }
}
