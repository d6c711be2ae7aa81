//! The real `qleetos-operator` binary, started as a process against the management cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::charts::ChartRepository;
use crate::cluster::free_port;
use crate::error::Error;
use crate::process::{ChildProcess, ProcessSpec, spawn};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Flags of an operator process; the defaults suit tests (fast probes, short backoff).
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    pub extra_args: Vec<String>,
}

impl Default for OperatorOptions {
    fn default() -> Self {
        let args = [
            "--probe-interval=2s",
            "--resync=30s",
            "--progress-poll=1s",
            "--base-backoff=500ms",
            "--max-backoff=4s",
        ];
        Self {
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }
}

/// A running operator; killed when dropped.
#[derive(Debug)]
pub struct OperatorProcess {
    process: ChildProcess,
    metrics_port: u16,
}

impl OperatorProcess {
    pub async fn start(
        dir: &Path,
        index: usize,
        kubeconfig: &Path,
        nats_url: &str,
        options: OperatorOptions,
    ) -> Result<Self, Error> {
        Self::start_with_env(dir, index, kubeconfig, nats_url, options, Vec::new()).await
    }

    /// Like [`start`](Self::start), with `extra_env` added to the operator's environment
    /// (e.g. NATS credentials).
    pub async fn start_with_env(
        dir: &Path,
        index: usize,
        kubeconfig: &Path,
        nats_url: &str,
        options: OperatorOptions,
        extra_env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<Self, Error> {
        let program = workspace_binary("qleetos-operator")?;
        let metrics_port = free_port()?;
        let mut args = vec![format!("--metrics-addr=127.0.0.1:{metrics_port}")];
        args.extend(ChartRepository::get().await?.operator_args());
        args.extend(options.extra_args);
        let log_path = dir.join(format!("operator-{index}.log"));
        let mut env = vec![
            ("KUBECONFIG".into(), kubeconfig.as_os_str().to_owned()),
            ("QLEETOS_NATS_URL".into(), nats_url.into()),
            ("RUST_LOG".into(), "info,kube=warn".into()),
        ];
        env.extend(extra_env);
        let process = spawn(ProcessSpec {
            component: format!("qleetos-operator-{index}"),
            program,
            args: args.into_iter().map(Into::into).collect(),
            env,
            log_path,
        })
        .await?;
        let mut operator = Self {
            process,
            metrics_port,
        };
        operator.wait_ready().await?;
        Ok(operator)
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The process id, e.g. to read `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// The Prometheus text exposition of the operator.
    pub async fn metrics(&self) -> Result<String, Error> {
        let (_, body) = crate::http::get(self.metrics_port, "/metrics").await?;
        Ok(body)
    }

    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// SIGTERM, as Kubernetes stops a pod, then waits up to `within` for the replica to
    /// drain and exit; `None` if it is still running then.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.process.terminate(within).await
    }

    /// SIGKILL: the replica dies mid-work, as on a node crash.
    pub fn kill(&mut self) {
        self.process.kill_blocking();
    }

    /// The operator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let port = self.metrics_port;
        crate::http::wait_ready(&mut self.process, port, "/readyz", READY_TIMEOUT).await
    }
}

/// The workspace's cargo target directory (`CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A binary built from this workspace (`cargo build --workspace --bins`), in the target
/// directory of the current profile.
pub fn workspace_binary(name: &'static str) -> Result<PathBuf, Error> {
    let target = target_dir();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::WorkspaceBinaryMissing { binary: name, path })
    }
}
