//! The RPC nodes of one runtime: an anvil stand-in for every RPC node Deployment QleetOS
//! installs there (kwok only simulates its pods).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::cluster::free_loopback_address;
use crate::error::Error;
use crate::standin::{StandIn, StandInSpec};

/// What marks the Deployment of an RPC node (examples/services/ethereum-rpc.yaml).
const RPC_NODE_SELECTOR: &str = "app.kubernetes.io/name=ethereum-rpc";
/// The port of an RPC node's Service, and the one its anvil listens on.
pub const RPC_NODE_PORT: u16 = 8545;

/// What an RPC node's connection Secret says in `RPC_URL`: its Service in cluster DNS.
pub fn rpc_node_url(namespace: &str, deployment: &str) -> String {
    format!("http://{deployment}.{namespace}.svc:{RPC_NODE_PORT}")
}

/// The RPC node Deployments of one runtime and their anvil stand-ins.
#[derive(Debug)]
pub(super) struct RpcNodes {
    pub runtime: String,
    pub kubeconfig: PathBuf,
    pub log_dir: PathBuf,
    pub deployments: Api<Deployment>,
    /// (namespace, Deployment) → its stand-in and the address anvil listens on.
    pub running: BTreeMap<(String, String), (StandIn, SocketAddr)>,
}

impl RpcNodes {
    /// Service URL → address, for every node whose stand-in runs.
    pub fn urls(&self) -> BTreeMap<String, SocketAddr> {
        self.running
            .iter()
            .map(|((namespace, name), (_, address))| (rpc_node_url(namespace, name), *address))
            .collect()
    }

    /// Pids of the anvil processes running now, by component.
    pub fn pids(&self) -> impl Iterator<Item = (String, u32)> + '_ {
        self.running
            .iter()
            .filter_map(|((namespace, name), (s, _))| {
                Some((format!("anvil-{namespace}-{name}"), s.status().pid?))
            })
    }

    /// Starts a stand-in for every new RPC node Deployment, stops those of deleted ones.
    pub async fn step(&mut self) {
        let listed = match self
            .deployments
            .list(&ListParams::default().labels(RPC_NODE_SELECTOR))
            .await
        {
            Ok(listed) => listed,
            Err(e) => {
                // Keep the stand-ins as they are while the cluster does not answer.
                tracing::debug!(runtime = self.runtime, error = %e, "cannot list RPC node Deployments");
                return;
            }
        };
        let present: BTreeSet<(String, String)> = listed
            .items
            .iter()
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .map(|d| (d.namespace().unwrap_or_default(), d.name_any()))
            .collect();
        let gone: Vec<_> = self
            .running
            .keys()
            .filter(|key| !present.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            if let Some((stand_in, _)) = self.running.remove(&key) {
                stand_in.stop().await;
                tracing::info!(
                    runtime = self.runtime,
                    deployment = format!("{}/{}", key.0, key.1),
                    "RPC node removed"
                );
            }
        }
        for key in present {
            if self.running.contains_key(&key) {
                continue;
            }
            match self.start(&key.0, &key.1).await {
                Ok(started) => {
                    tracing::info!(runtime = self.runtime, deployment = format!("{}/{}", key.0, key.1), address = %started.1, "RPC node stand-in started");
                    self.running.insert(key, started);
                }
                // Tried again on the next poll.
                Err(e) => {
                    tracing::warn!(runtime = self.runtime, deployment = format!("{}/{}", key.0, key.1), error = %e, "cannot start the RPC node stand-in")
                }
            }
        }
    }

    async fn start(
        &self,
        namespace: &str,
        deployment: &str,
    ) -> Result<(StandIn, SocketAddr), Error> {
        let address = free_loopback_address(RPC_NODE_PORT)?;
        let spec = StandInSpec::anvil(namespace, deployment, address).await?;
        let stand_in = StandIn::start(spec, &self.kubeconfig, &self.log_dir).await?;
        Ok((stand_in, address))
    }

    /// Stops every anvil.
    pub async fn stop(mut self) {
        for (_, (stand_in, _)) in std::mem::take(&mut self.running) {
            stand_in.stop().await;
        }
    }
}
