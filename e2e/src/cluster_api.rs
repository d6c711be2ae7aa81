//! Cluster API in the test environment: the real core manager (v1.14.2, built once by
//! `e2e/scripts/cluster-api.sh`) against a management cluster, plus a provider of our own
//! (the `qleetos-capi-provider` binary, see [`provider`]) that turns every Cluster of the
//! ClusterClass [`CLUSTER_CLASS`] into a real local cluster and writes its
//! `<cluster>-kubeconfig` Secret (key `value`), as Cluster API control planes do.
//!
//! A Cluster is provisioned once its v1beta2 `Available` condition is True (infrastructure
//! ready, control plane available, workers available, topology reconciled, remote
//! connection up); `status.initialization.controlPlaneInitialized` comes first.

mod install;
mod manager;
pub mod node_scaler;
mod processes;
pub mod provider;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use tokio::sync::OnceCell;

use crate::binaries::Binaries;
use crate::cluster::Cluster;
use crate::error::Error;
use crate::operator::workspace_binary;
use crate::process::{self, ChildProcess, ProcessSpec};

pub use provider::kubeconfig_secret_name;

/// The ClusterClass every provisioned Cluster refers to (`spec.topology.classRef.name`).
pub const CLUSTER_CLASS: &str = "qleetos-local";
/// The worker class of its MachineDeployments (`spec.topology.workers.machineDeployments[].class`).
pub const WORKER_CLASS: &str = "default-worker";
/// The namespace QleetOS keeps its Clusters in.
pub const DEFAULT_NAMESPACE: &str = "qleetos-clusters";
/// Overrides the directory holding `bin/cluster-api-manager` and `crds/` (otherwise
/// `e2e/scripts/cluster-api.sh` builds them).
pub const CLUSTER_API_DIR_ENV: &str = "QLEETOS_CLUSTER_API_DIR";

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster-api.sh");
const PROVIDER_BINARY: &str = "qleetos-capi-provider";
const PROVIDER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Cluster API's manager and CRDs, as built by the script.
#[derive(Debug)]
struct Bundle {
    manager: PathBuf,
    crds: Vec<PathBuf>,
}

static BUNDLE: OnceCell<Bundle> = OnceCell::const_new();

/// The running Cluster API manager and provider; [`ClusterApi::stop`] stops both (the
/// provider stops the local clusters it still runs). Dropping it kills them.
pub struct ClusterApi {
    namespace: String,
    management: Client,
    local_clusters_dir: PathBuf,
    manager: ChildProcess,
    provider: ChildProcess,
}

impl std::fmt::Debug for ClusterApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterApi")
            .field("namespace", &self.namespace)
            .field("manager", &self.manager)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl ClusterApi {
    /// Installs Cluster API's and the provider's CRDs into `management`, the ClusterClass
    /// into `namespace` (created if needed), and starts the manager and the provider, with
    /// their logs and the local clusters under `dir`. Returns once Cluster API has
    /// reconciled the ClusterClass, so Clusters can be created right away.
    pub async fn start(dir: &Path, management: &Cluster, namespace: &str) -> Result<Self, Error> {
        let dir = std::path::absolute(dir).map_err(|e| Error::io("cannot resolve", dir, e))?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        let bundle = BUNDLE.get_or_try_init(locate_bundle).await?;
        let provider_binary = workspace_binary(PROVIDER_BINARY)?;
        let binaries = Binaries::get().await?;

        let client = management.client().await?;
        install::install_crds(&client, &bundle.crds).await?;
        install::install_cluster_class(&client, namespace).await?;

        let kubeconfig = management.kubeconfig_path();
        let manager = manager::start(&bundle.manager, kubeconfig, &client, &dir).await?;
        let local_clusters_dir = dir.join("local-clusters");
        let kube_bin_dir = binaries.kube_apiserver.parent().unwrap_or(Path::new("/"));
        let mut provider = process::spawn(ProcessSpec {
            component: PROVIDER_BINARY.to_owned(),
            program: provider_binary,
            args: vec!["--dir".into(), local_clusters_dir.clone().into()],
            env: vec![
                ("KUBECONFIG".into(), kubeconfig.into()),
                ("RUST_LOG".into(), "info,kube=warn".into()),
                // Spare the provider from running the install scripts again.
                ("QLEETOS_KUBE_BIN_DIR".into(), kube_bin_dir.into()),
                (
                    "QLEETOS_NATS_SERVER".into(),
                    binaries.nats_server.clone().into(),
                ),
            ],
            log_path: dir.join("qleetos-capi-provider.log"),
        })
        .await?;
        install::wait_cluster_class(&client, namespace, CLUSTER_CLASS).await?;
        provider.check_running()?;
        tracing::info!(namespace, dir = %dir.display(), "Cluster API running");
        Ok(ClusterApi {
            namespace: namespace.to_owned(),
            management: client,
            local_clusters_dir,
            manager,
            provider,
        })
    }

    /// The namespace the ClusterClass was installed into.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn manager_log(&self) -> &Path {
        self.manager.log_path()
    }

    pub fn provider_log(&self) -> &Path {
        self.provider.log_path()
    }

    /// Fails (with the log tail) if the manager or the provider has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        self.manager.check_running()?;
        self.provider.check_running()
    }

    /// How many local clusters the provider runs now: its kube-apiserver child processes.
    pub fn running_local_clusters(&self) -> usize {
        let provider = self.provider.pid();
        processes::live_processes()
            .iter()
            .filter(|p| p.parent == provider && p.name == "kube-apiserver")
            .count()
    }

    /// Pids of the live processes of the local cluster behind Cluster `namespace/cluster`
    /// (whoever their parent is now): those whose command line names its directory or
    /// its etcd data directory.
    pub fn local_cluster_processes(&self, namespace: &str, cluster: &str) -> Vec<u32> {
        let local = provider::local_cluster_name(cluster);
        let dir = format!(
            "{}/",
            self.local_clusters_dir
                .join(namespace)
                .join(&local)
                .display()
        );
        let etcd_data = format!("qleetos-etcd-{}-{local}-", self.provider.pid());
        processes::live_processes()
            .into_iter()
            .filter(|p| p.command_line.contains(&dir) || p.command_line.contains(&etcd_data))
            .map(|p| p.pid)
            .collect()
    }

    /// Stops the manager (unregistering its webhook first), then the provider (which first
    /// stops its local clusters).
    pub async fn stop(mut self) {
        manager::unregister_defaulting(&self.management).await;
        self.manager.stop().await;
        if self
            .provider
            .terminate(PROVIDER_STOP_TIMEOUT)
            .await
            .is_none()
        {
            tracing::warn!("qleetos-capi-provider did not stop in time; killing it");
        }
        self.provider.stop().await;
    }
}

/// Cluster API kind `kind` (`cluster.x-k8s.io/v1beta2`), in `namespace` or in all.
pub fn api(client: &Client, namespace: Option<&str>, kind: &str) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", kind));
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

async fn locate_bundle() -> Result<Bundle, Error> {
    let dir = match std::env::var_os(CLUSTER_API_DIR_ENV).filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            tracing::info!(
                script = SCRIPT,
                "locating Cluster API (the first run builds it, which takes minutes)"
            );
            PathBuf::from(run_script().await?)
        }
    };
    let missing = |what: &str| {
        Error::Setup(format!(
            "Cluster API: {what} missing in {}: run e2e/scripts/cluster-api.sh (needs Go >= 1.26 \
             and the module proxy) or set {CLUSTER_API_DIR_ENV}",
            dir.display()
        ))
    };
    let manager = dir.join("bin/cluster-api-manager");
    if !manager.is_file() {
        return Err(missing("bin/cluster-api-manager"));
    }
    let mut crds: Vec<PathBuf> = std::fs::read_dir(dir.join("crds"))
        .map_err(|_| missing("crds/"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    if crds.is_empty() {
        return Err(missing("crds/*.yaml"));
    }
    crds.sort();
    Ok(Bundle { manager, crds })
}

/// Runs the build script and returns the directory it printed last.
async fn run_script() -> Result<String, Error> {
    let output = tokio::process::Command::new("bash")
        .arg(SCRIPT)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io("cannot run bash", SCRIPT, e))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed = stdout.lines().rev().map(str::trim).find(|l| !l.is_empty());
    match printed {
        Some(dir) if output.status.success() => Ok(dir.to_owned()),
        _ => Err(Error::Setup(format!(
            "Cluster API is not available: {SCRIPT} failed ({}):\n{}",
            output.status,
            stderr.trim()
        ))),
    }
}
