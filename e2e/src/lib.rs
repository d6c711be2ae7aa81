//! QleetOS test environment: real Kubernetes clusters as local processes.

pub mod binaries;
pub mod certs;
pub mod charts;
pub mod cluster;
pub mod cluster_api;
pub mod dns;
pub mod environment;
pub mod error;
pub mod exposure;
pub mod fleet;
pub mod gateway;
pub mod host;
pub mod http;
pub mod issued;
pub mod jsonrpc;
pub mod local_clusters;
pub mod nats;
pub mod operator;
pub mod process;
pub mod quiescence;
pub mod requests;
pub mod standin;

pub use error::Error;

/// Logs of the environment's own programs to stderr: `RUST_LOG`, else `info,kube=warn`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
}
