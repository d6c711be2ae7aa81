//! Real Kubernetes clusters run as local processes on 127.0.0.1.
//!
//! A management cluster is etcd + kube-apiserver + kube-controller-manager; a workload
//! cluster adds kube-scheduler and kwok with fake nodes, so pods get scheduled and become
//! Running. Each cluster lives in `<base_dir>/<name>` (certificates, kubeconfig, and one
//! log per process in `logs/<component>.log`); etcd keeps its data in `/dev/shm`.

mod args;
mod kubeconfig;
mod metrics;
mod ports;

pub use ports::free_loopback_address;
pub use ports::free_port;
pub(crate) mod probes;

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tempfile::TempDir;
use tracing::instrument::WithSubscriber;
use tracing::subscriber::NoSubscriber;

use self::args::{ComponentArgs, Layout, Ports};
use self::kubeconfig::CertKubeconfig;
use crate::binaries::Binaries;
use crate::certs::ClusterCerts;
use crate::error::Error;
use crate::process::{self, ChildProcess, ProcessSpec};

const KWOK_STAGES: &str = include_str!("../assets/kwok-stages.yaml");
/// Upper bound for each start-up phase (generous: several clusters may start at once
/// on a small machine).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a single readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// etcd data goes here when it exists (tmpfs: fast, and gone after a reboot).
const ETCD_DATA_PARENT: &str = "/dev/shm";
const ETCD_DATA_PREFIX: &str = "qleetos-etcd-";

const ETCD: &str = "etcd";
const APISERVER: &str = "kube-apiserver";
const CONTROLLER_MANAGER: &str = "kube-controller-manager";
const SCHEDULER: &str = "kube-scheduler";
const KWOK: &str = "kwok";

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Directory name under the base directory; lowercase letters, digits and `-`.
    pub name: String,
    pub kind: ClusterKind,
    /// Number of kwok nodes (workload clusters only; must be 0 for management clusters).
    pub fake_nodes: usize,
    /// Workload clusters only: kwok simulates resource usage and metrics-server serves it,
    /// so HorizontalPodAutoscalers scale.
    pub metrics: bool,
}

impl ClusterSpec {
    pub fn management(name: impl Into<String>) -> Self {
        ClusterSpec {
            name: name.into(),
            kind: ClusterKind::Management,
            fake_nodes: 0,
            metrics: false,
        }
    }

    pub fn workload(name: impl Into<String>, fake_nodes: usize) -> Self {
        ClusterSpec {
            name: name.into(),
            kind: ClusterKind::Workload,
            fake_nodes,
            metrics: false,
        }
    }

    /// The same cluster with resource metrics (see [`ClusterSpec::metrics`]).
    pub fn with_metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| Error::InvalidSpec {
            name: self.name.clone(),
            reason: reason.to_owned(),
        };
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err(invalid("the name must be 1-40 characters of [a-z0-9-]"));
        }
        if self.kind == ClusterKind::Management && self.metrics {
            return Err(invalid(
                "management clusters have no kwok to simulate metrics",
            ));
        }
        if self.kind == ClusterKind::Management && self.fake_nodes > 0 {
            return Err(invalid(
                "management clusters have no scheduler or kwok, so no fake nodes",
            ));
        }
        Ok(())
    }
}

/// Which components a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// etcd, kube-apiserver, kube-controller-manager.
    Management,
    /// Management components plus kube-scheduler and kwok with fake nodes.
    Workload,
}

/// A running cluster. Dropping it kills its processes; [`Cluster::stop`] shuts them down
/// gracefully.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    dir: PathBuf,
    kubeconfig_path: PathBuf,
    kubeconfig_yaml: String,
    server_url: String,
    ca_pem: String,
    ports: Ports,
    args: ComponentArgs,
    binaries: &'static Binaries,
    etcd: Option<ChildProcess>,
    apiserver: Option<ChildProcess>,
    /// Controller manager, scheduler and kwok (and metrics-server).
    controllers: Vec<ChildProcess>,
    etcd_data: Option<TempDir>,
    metrics: Option<metrics::Metrics>,
}

impl Cluster {
    /// Starts a cluster and returns once `/readyz` is ok, the `default` ServiceAccount of
    /// namespace `default` exists (pods are rejected before that) and every fake node is
    /// Ready. On error, everything started so far is killed again.
    pub async fn start(spec: ClusterSpec, base_dir: &Path) -> Result<Cluster, Error> {
        spec.validate()?;
        let started = Instant::now();
        let binaries = Binaries::get().await?;
        let mut cluster = Cluster::prepare(spec, base_dir, binaries)?;
        tracing::info!(cluster = cluster.name(), dir = %cluster.dir.display(), "starting cluster");

        cluster.start_etcd().await?;
        cluster.start_apiserver().await?;
        cluster.start_controllers().await?;
        cluster.wait_settled().await?;
        cluster.start_metrics_server().await?;

        tracing::info!(
            cluster = cluster.name(),
            server = cluster.server_url,
            elapsed_ms = started.elapsed().as_millis(),
            "cluster ready"
        );
        Ok(cluster)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn kind(&self) -> ClusterKind {
        self.spec.kind
    }

    /// The cluster's directory: certificates, kubeconfig, `logs/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Admin kubeconfig (client certificate in group `system:masters`, certificates inline).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The content of [`Cluster::kubeconfig_path`]: self-contained, fit for a Secret.
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml.clone()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        self.server_url.clone()
    }

    /// PEM of the cluster CA (it signed the serving certificate).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// A new kube-rs client authenticated as the admin.
    pub async fn client(&self) -> Result<Client, Error> {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig_yaml)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Stops kube-apiserver only; etcd, the other components and all data stay.
    pub async fn stop_apiserver(&mut self) -> Result<(), Error> {
        if let Some(mut apiserver) = self.apiserver.take() {
            apiserver.stop().await;
            tracing::info!(cluster = self.name(), "kube-apiserver stopped");
        }
        Ok(())
    }

    /// Freezes kube-apiserver (SIGSTOP): connections are accepted, requests never answered.
    pub fn pause_apiserver(&mut self) {
        if let Some(apiserver) = self.apiserver.as_mut() {
            apiserver.pause();
        }
    }

    /// Lets a paused kube-apiserver run again (SIGCONT).
    pub fn resume_apiserver(&mut self) {
        if let Some(apiserver) = self.apiserver.as_mut() {
            apiserver.unpause();
        }
    }

    /// (Re)starts kube-apiserver on the same port with the same certificates and waits
    /// for `/readyz`. Does nothing if it is running.
    pub async fn start_apiserver(&mut self) -> Result<(), Error> {
        if self.apiserver.is_some() {
            return Ok(());
        }
        let program = &self.binaries.kube_apiserver;
        let apiserver = self.spawn(APISERVER, program, &self.args.apiserver).await?;
        self.apiserver = Some(apiserver);
        let client = self.client().await?;
        self.wait_for("kube-apiserver /readyz", || {
            let client = client.clone();
            // kube-rs logs every failed request at ERROR level; while the apiserver
            // starts, refused connections and 500s are expected, so keep them quiet.
            async move { probes::apiserver_ready(&client).await }
                .with_subscriber(NoSubscriber::default())
        })
        .await
    }

    /// Stops every process (gracefully, with a short timeout) and removes the etcd data.
    /// Certificates and logs stay in [`Cluster::dir`].
    pub async fn stop(mut self) {
        let mut processes: Vec<ChildProcess> = self.controllers.drain(..).collect();
        processes.extend(self.apiserver.take());
        futures::future::join_all(processes.iter_mut().map(ChildProcess::stop)).await;
        if let Some(mut etcd) = self.etcd.take() {
            etcd.stop().await;
        }
        self.remove_etcd_data();
        tracing::info!(cluster = self.name(), "cluster stopped");
    }

    fn prepare(
        spec: ClusterSpec,
        base_dir: &Path,
        binaries: &'static Binaries,
    ) -> Result<Cluster, Error> {
        let dir = base_dir.join(&spec.name);
        fresh_dir(&dir)?;
        let log_dir = dir.join("logs");
        std::fs::create_dir_all(&log_dir).map_err(|e| Error::io("cannot create", &log_dir, e))?;

        let certs = ClusterCerts::generate(&spec.name)?;
        let cert_paths = certs.write_to(&dir.join("certs"))?;
        let ports = Ports {
            etcd_client: ports::free_port()?,
            etcd_peer: ports::free_port()?,
            apiserver: ports::free_port()?,
        };
        let server_url = format!("https://127.0.0.1:{}", ports.apiserver);
        let kubeconfig_yaml = CertKubeconfig {
            name: &spec.name,
            server: &server_url,
            ca_pem: &certs.ca_cert,
            client_cert_pem: &certs.admin_cert,
            client_key_pem: &certs.admin_key,
        }
        .to_yaml()?;
        let kubeconfig_path = dir.join("kubeconfig");
        write_file(&kubeconfig_path, &kubeconfig_yaml)?;
        let kwok_stages = dir.join("kwok-stages.yaml");
        write_file(&kwok_stages, KWOK_STAGES)?;
        let etcd_data = etcd_data_dir(&spec.name)?;

        let layout = Layout {
            certs: cert_paths,
            kubeconfig: kubeconfig_path.clone(),
            kwok_stages,
            etcd_data: etcd_data.path().to_path_buf(),
        };
        let mut args = ComponentArgs::new(&spec.name, &layout, ports);
        let metrics = if spec.metrics {
            let metrics = metrics::Metrics::prepare(
                &dir.join("metrics"),
                ports::free_port()?,
                ports::free_port()?,
            )?;
            args.apiserver.extend(metrics.apiserver_args());
            args.kwok.extend(metrics.kwok_args());
            args.controller_manager
                .extend(metrics.controller_manager_args());
            Some(metrics)
        } else {
            None
        };
        Ok(Cluster {
            spec,
            dir,
            kubeconfig_path,
            kubeconfig_yaml,
            server_url,
            ca_pem: certs.ca_cert,
            ports,
            args,
            binaries,
            etcd: None,
            apiserver: None,
            controllers: Vec::new(),
            etcd_data: Some(etcd_data),
            metrics,
        })
    }

    /// Starts metrics-server and routes `metrics.k8s.io` to it, when the cluster has
    /// metrics; returns once the APIService is Available.
    async fn start_metrics_server(&mut self) -> Result<(), Error> {
        let Some(metrics) = self.metrics.clone() else {
            return Ok(());
        };
        let program = crate::binaries::metrics_server().await?;
        let args = metrics.server_args(&self.kubeconfig_path);
        let process = self.spawn("metrics-server", &program, &args).await?;
        self.controllers.push(process);
        let client = self.client().await?;
        probes::apply_all(&client, &metrics.api_service()).await?;
        self.wait_for("the metrics.k8s.io APIService Available", || {
            let client = client.clone();
            async move { probes::metrics_api_available(&client).await }
        })
        .await
    }

    async fn start_etcd(&mut self) -> Result<(), Error> {
        let etcd = self
            .spawn(ETCD, &self.binaries.etcd, &self.args.etcd)
            .await?;
        self.etcd = Some(etcd);
        let port = self.ports.etcd_client;
        self.wait_for("etcd /health", || probes::etcd_healthy(port))
            .await
    }

    async fn start_controllers(&mut self) -> Result<(), Error> {
        let binaries = self.binaries;
        let mut components = vec![(
            CONTROLLER_MANAGER,
            &binaries.kube_controller_manager,
            &self.args.controller_manager,
        )];
        if self.spec.kind == ClusterKind::Workload {
            components.push((SCHEDULER, &binaries.kube_scheduler, &self.args.scheduler));
            components.push((KWOK, &binaries.kwok, &self.args.kwok));
        }
        for (component, program, args) in components {
            let process = self.spawn(component, program, args).await?;
            self.controllers.push(process);
        }
        Ok(())
    }

    /// Creates the fake nodes, then waits for them and the `default` ServiceAccount.
    async fn wait_settled(&mut self) -> Result<(), Error> {
        let client = self.client().await?;
        let nodes = probes::fake_node_names(self.spec.fake_nodes);
        probes::create_fake_nodes(&client, &nodes).await?;
        self.wait_for("the default ServiceAccount in namespace default", || {
            let client = client.clone();
            async move { probes::default_service_account_exists(&client).await }
        })
        .await?;
        self.wait_for("fake nodes to become Ready", || {
            let client = client.clone();
            let nodes = nodes.clone();
            async move { probes::nodes_ready(&client, &nodes).await }
        })
        .await
    }

    async fn spawn(
        &self,
        component: &str,
        program: &Path,
        args: &[OsString],
    ) -> Result<ChildProcess, Error> {
        process::spawn(ProcessSpec {
            component: format!("{}/{component}", self.spec.name),
            program: program.to_path_buf(),
            args: args.to_vec(),
            env: Vec::new(),
            log_path: self.dir.join("logs").join(format!("{component}.log")),
        })
        .await
    }

    /// Polls `probe` until it returns true, failing early (with the log tail) if one of
    /// the cluster's processes exits.
    async fn wait_for<F, Fut>(&mut self, what: &str, mut probe: F) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool, Error>>,
    {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            self.check_processes()?;
            match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(true)) => {
                    tracing::debug!(
                        cluster = self.name(),
                        what,
                        elapsed_ms = started.elapsed().as_millis(),
                        "ready"
                    );
                    return Ok(());
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => last_error = Some(e.to_string()),
                Err(_) => last_error = Some(format!("probe timed out after {PROBE_TIMEOUT:?}")),
            }
            if started.elapsed() >= STARTUP_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!("{what} (cluster {})", self.name()),
                    timeout: STARTUP_TIMEOUT,
                    last_error,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn check_processes(&mut self) -> Result<(), Error> {
        self.etcd
            .iter_mut()
            .chain(self.apiserver.iter_mut())
            .chain(self.controllers.iter_mut())
            .try_for_each(ChildProcess::check_running)
    }

    fn remove_etcd_data(&mut self) {
        if let Some(data) = self.etcd_data.take() {
            let path = data.path().to_path_buf();
            if let Err(e) = data.close() {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove etcd data");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let running =
            self.etcd.is_some() || self.apiserver.is_some() || !self.controllers.is_empty();
        if running {
            tracing::debug!(cluster = self.name(), "killing cluster processes on drop");
        }
        self.controllers.clear();
        self.apiserver.take();
        self.etcd.take();
        self.remove_etcd_data();
    }
}

/// Creates `dir` empty, removing what a previous run left there.
fn fresh_dir(dir: &Path) -> Result<(), Error> {
    if dir.exists() {
        tracing::warn!(dir = %dir.display(), "removing leftovers of a previous cluster");
        std::fs::remove_dir_all(dir).map_err(|e| Error::io("cannot remove", dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))
}

fn write_file(path: &Path, content: &str) -> Result<(), Error> {
    std::fs::write(path, content).map_err(|e| Error::io("cannot write", path, e))
}

/// A fresh etcd data directory named `qleetos-etcd-<our pid>-<cluster>-<random>`.
fn etcd_data_dir(cluster_name: &str) -> Result<TempDir, Error> {
    let parent = Path::new(ETCD_DATA_PARENT);
    let parent = if parent.is_dir() {
        parent.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| remove_orphaned_etcd_dirs(&parent));
    tempfile::Builder::new()
        .prefix(&format!(
            "{ETCD_DATA_PREFIX}{}-{cluster_name}-",
            std::process::id()
        ))
        .tempdir_in(&parent)
        .map_err(|e| Error::io("cannot create etcd data directory in", parent, e))
}

/// Removes etcd data directories left behind by test processes that were killed
/// (SIGKILL skips all clean-up; their etcd died with them).
fn remove_orphaned_etcd_dirs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(ETCD_DATA_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(owner.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed orphaned etcd data"),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot remove orphaned etcd data")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spec_validation() {
        assert!(ClusterSpec::management("mgmt").validate().is_ok());
        assert!(ClusterSpec::workload("wl-1", 2).validate().is_ok());
        assert!(ClusterSpec::workload("Bad_Name", 1).validate().is_err());
        assert!(ClusterSpec::workload("", 1).validate().is_err());
        let mut spec = ClusterSpec::management("mgmt");
        spec.fake_nodes = 1;
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("no fake nodes"), "{err}");
    }
}
