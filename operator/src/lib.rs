//! QleetOS operator: the Qleets (controllers) that place Workloads on runtimes, apply them
//! with server-side apply, read their health back and remove them on deletion.

pub mod applier;
pub mod backoff;
pub mod capacity;
pub mod chart;
pub mod context;
pub mod controllers;
pub mod dependencies;
pub mod diff;
pub mod engine;
pub mod error;
pub mod failover;
pub mod fence;
pub mod finalizer;
pub mod health;
pub mod hosts;
pub mod kubeconfig;
pub mod metrics;
pub mod names;
pub mod owners;
pub mod placement;
pub mod pool;
pub mod provisioning;
pub mod queue;
pub mod render;
pub mod runtime_client;
pub mod supervisor;
pub mod tenancy;
#[cfg(test)]
pub(crate) mod testing;

pub use error::{Error, Result};
