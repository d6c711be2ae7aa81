//! QleetOS test environment: real Kubernetes clusters as local processes.

pub mod binaries;
pub mod certs;
pub mod cluster;
pub mod error;
pub mod process;

pub use error::Error;
