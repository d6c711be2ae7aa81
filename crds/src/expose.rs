//! What a developer declares to make a workload reachable: hosts, the Service behind them,
//! TLS and DNS. QleetOS generates the route, certificate and DNS record in each runtime.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How the workload is reached from outside its runtime.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Expose {
    /// Hosts the workload answers on, e.g. `shop.example.com`: lower-case DNS names of at
    /// least two labels, or `*.` wildcards.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(inner(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
        )
    ))]
    pub hosts: Vec<String>,
    /// The Service (one of the manifests) and port behind the hosts.
    pub service: ServicePort,
    /// URL path prefixes routed to the Service; default `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(inner(length(min = 1, max = 1024), regex(pattern = r"^/[^\s]*$")))]
    pub paths: Vec<String>,
    /// Serve HTTPS with a certificate issued for the hosts (needs the `tls` capability).
    #[serde(default)]
    pub tls: bool,
    /// Publish DNS records for the hosts (needs the `dns` capability).
    #[serde(default)]
    pub dns: bool,
}

/// A Service of the workload's manifests and one of its ports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Name of the Service.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Port number of the Service.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Expose {
    /// The capabilities the workload needs from its runtime to be reached this way.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut needs = vec!["ingress"];
        if self.tls {
            needs.push("tls");
        }
        if self.dns {
            needs.push("dns");
        }
        needs
    }

    /// Path prefixes, `/` when none are given.
    pub fn paths_or_root(&self) -> Vec<String> {
        if self.paths.is_empty() {
            vec!["/".to_owned()]
        } else {
            self.paths.clone()
        }
    }

    /// The URLs the workload answers on: one per host and path.
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.hosts
            .iter()
            .flat_map(|host| {
                self.paths_or_root()
                    .into_iter()
                    .map(move |path| format!("{scheme}://{host}{path}"))
            })
            .collect()
    }
}
