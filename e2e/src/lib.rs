//! QleetOS test environment: real Kubernetes clusters as local processes.

pub mod binaries;
pub mod certs;
pub mod cluster;
pub mod cluster_api;
pub mod dns;
pub mod environment;
pub mod error;
pub mod exposure;
pub mod fleet;
pub mod gateway;
pub mod http;
pub mod issued;
pub mod jsonrpc;
pub mod local_clusters;
pub mod nats;
pub mod operator;
pub mod process;
pub mod requests;
pub mod standin;

pub use error::Error;
