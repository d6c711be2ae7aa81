//! Capacity and cost (issue 28): what a runtime can hold and what it costs, as operations
//! declare and QleetOS measures them, and the placement preferences that use them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a runtime costs, as operations set it (on a registered runtime, or on the profile of
/// provisioned ones). Prices are decimal strings, in the currency operations choose.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// Price of one node for one hour, e.g. `0.096`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,6})?$"))]
    pub per_node_hour: Option<String>,
    /// Price of the cluster itself (its control plane) for one hour, e.g. `0.10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,6})?$"))]
    pub per_cluster_hour: Option<String>,
}

impl Cost {
    /// The price of one node-hour (0 when not set).
    pub fn node_hour(&self) -> f64 {
        price(self.per_node_hour.as_deref())
    }

    /// What `nodes` nodes and the cluster cost for one hour; `None` when no price is set.
    pub fn per_hour(&self, nodes: i64) -> Option<f64> {
        if self.per_node_hour.is_none() && self.per_cluster_hour.is_none() {
            return None;
        }
        let nodes = nodes.max(0) as f64;
        Some(price(self.per_cluster_hour.as_deref()) + nodes * self.node_hour())
    }
}

fn price(text: Option<&str>) -> f64 {
    text.and_then(|t| t.parse().ok()).unwrap_or(0.0)
}

/// CPU and memory, in the units the API server counts them in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Thousandths of a CPU.
    pub cpu_millicores: i64,
    /// Bytes of memory.
    pub memory_bytes: i64,
}

impl Resources {
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millicores: self.cpu_millicores.saturating_add(other.cpu_millicores),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// `self - other`, each at least 0.
    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            cpu_millicores: (self.cpu_millicores - other.cpu_millicores).max(0),
            memory_bytes: (self.memory_bytes - other.memory_bytes).max(0),
        }
    }

    /// The larger of each.
    pub fn max(self, other: Resources) -> Resources {
        Resources {
            cpu_millicores: self.cpu_millicores.max(other.cpu_millicores),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }

    /// Whether `request` fits in `self`.
    pub fn holds(self, request: Resources) -> bool {
        request.cpu_millicores <= self.cpu_millicores && request.memory_bytes <= self.memory_bytes
    }

    pub fn is_zero(self) -> bool {
        self == Resources::default()
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cpu = self.cpu_millicores as f64 / 1000.0;
        let memory = self.memory_bytes as f64 / f64::from(1u32 << 30);
        write!(f, "{cpu:.2} CPU, {memory:.2} GiB")
    }
}

/// What the runtime holds and costs, measured at its last probe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeCapacity {
    /// The sum of its nodes' allocatable CPU and memory.
    pub allocatable: Resources,
    /// The sum of the requests of its pods that have not finished.
    pub requested: Resources,
    /// Price per hour (`perClusterHour` + nodes × `perNodeHour`), when a cost is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_hour: Option<String>,
    /// Price of one node-hour, the figure `Cheapest` compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_node_hour: Option<String>,
}

/// How a Workload's placement weighs capacity and cost among the runtimes it may use.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.prefer) || !(self.prefer.exists(p, p == 'Pack') && self.prefer.exists(p, p == 'Spread'))").message("prefer cannot hold both Pack and Spread"))]
#[serde(rename_all = "camelCase")]
pub struct PlacementPreferences {
    /// `Required` (default): never place where the workload's requested CPU and memory do
    /// not fit the runtime's free capacity (the runtime stays as it is; the Workload says
    /// so). `Ignore`: capacity only orders the runtimes.
    #[serde(default)]
    pub fit: Fit,
    /// How to choose among the runtimes that fit, in order: `Pack` (the least free CPU
    /// first, so fewer clusters run), `Spread` (the largest free share of its CPU first, so
    /// the runtimes are used evenly), `Cheapest` (the lowest node-hour price first). Ties go
    /// to the runtime name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub prefer: Vec<Preference>,
    /// Pools of runtimes in order: a region uses the first pool with a runtime that fits
    /// (own capacity first, then the next); a pool naming a `runtimeProfile` is provisioned
    /// in the region (with `provision: IfNeeded`) only when no earlier pool fits. Empty: every
    /// allowed runtime is one pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub overflow: Vec<OverflowPool>,
}

/// Whether the requested resources must fit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Fit {
    #[default]
    Required,
    Ignore,
}

/// One way to order the runtimes that fit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Preference {
    Pack,
    Spread,
    Cheapest,
}

/// A pool of runtimes in an overflow list: those matching every field given.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.runtimeSelector) || has(self.runtimeProfile) || has(self.provider)").message("an overflow pool names a runtimeSelector, a runtimeProfile or a provider"))]
#[serde(rename_all = "camelCase")]
pub struct OverflowPool {
    /// Runtimes whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_selector: Option<LabelSelector>,
    /// Runtimes provisioned from this KubernetesRuntimeProfile (and the profile QleetOS
    /// provisions from when the pool is reached and nothing in it fits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub runtime_profile: Option<String>,
    /// Runtimes of this provider (`spec.provider`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub provider: Option<String>,
}
