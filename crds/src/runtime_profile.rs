use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::{Condition, Conditions};

/// How operations provision clusters on demand: the provider, the regions it serves, the
/// Kubernetes version, node pools, what every cluster gets at creation, and when an unused
/// cluster goes away. Workloads whose placement allows provisioning get a KubernetesRuntime
/// made from it when no runtime serves their region.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "KubernetesRuntimeProfile",
    doc = "How QleetOS provisions a workload cluster on demand: provider, regions, Kubernetes version, node pools, the support services every cluster gets, and when an unused cluster is removed.",
    plural = "kubernetesruntimeprofiles",
    shortname = "krp",
    category = "qleetos",
    status = "KubernetesRuntimeProfileStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.kubernetesVersion"
    ),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "Runtimes",
        type_ = "integer",
        json_path = ".status.runtimeCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.provider != 'ClusterAPI' || has(self.clusterAPI)").message("provider ClusterAPI needs spec.clusterAPI (the ClusterClass and namespace)"))]
#[serde(rename_all = "camelCase")]
pub struct KubernetesRuntimeProfileSpec {
    /// What creates the clusters: `Local` (real clusters on the operator's machine, for local
    /// environments and tests) or `ClusterAPI` (a Cluster API `Cluster` from a ClusterClass,
    /// for any infrastructure provider Cluster API supports).
    pub provider: ProvisioningProvider,
    /// Regions this profile may create clusters in.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(inner(length(min = 1, max = 63)))]
    pub regions: Vec<String>,
    /// Whether this profile is used for its regions when a Workload names no profile. At most
    /// one default per region.
    #[serde(default)]
    pub default: bool,
    /// Kubernetes version of the clusters, e.g. `v1.36.2`.
    #[schemars(regex(pattern = r"^v[0-9]+\.[0-9]+\.[0-9]+$"))]
    pub kubernetes_version: String,
    /// Worker node pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub node_pools: Vec<NodePool>,
    /// Capabilities (provided by SupportServiceProfiles) every cluster of this profile gets at
    /// creation, before any workload is deployed to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(inner(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ))]
    pub support_services: Vec<String>,
    /// What happens to a cluster of this profile once nothing uses it.
    #[serde(default)]
    pub idle: IdlePolicy,
    /// Labels given to the KubernetesRuntimes made from this profile (for runtimeSelectors and
    /// TenantPolicy runtime rules), next to `qleetos.io/runtime-profile: <profile>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime_labels: BTreeMap<String, String>,
    /// What each cluster of this profile costs (its runtimes report it and `Cheapest`
    /// placement compares it), unless the runtime sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::Cost>,
    /// Settings of the `ClusterAPI` provider.
    #[serde(
        default,
        rename = "clusterAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_api: Option<ClusterApiSettings>,
}

/// What creates a profile's clusters.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProvisioningProvider {
    Local,
    ClusterAPI,
}

impl ProvisioningProvider {
    /// The `spec.provider` label of the runtimes it creates.
    pub fn label(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::ClusterAPI => "cluster-api",
        }
    }
}

/// One pool of worker nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.autoscaling) || (self.autoscaling.min <= self.count && self.count <= self.autoscaling.max)").message("count must lie between autoscaling.min and autoscaling.max"))]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    /// Name of the pool (the MachineDeployment's name with Cluster API).
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Nodes at creation.
    #[schemars(range(min = 0, max = 1000))]
    pub count: i32,
    /// Machine size (instance type, VM size), passed to the provider as the
    /// `nodeSize` topology variable; informational for `Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Bounds for the cluster-autoscaler; with Cluster API they become the node group
    /// min/max annotations and the pool's replica count is left to the autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

/// Node count bounds of an autoscaled pool.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("autoscaling.min must not exceed autoscaling.max"))]
pub struct Autoscaling {
    /// Fewest nodes.
    #[schemars(range(min = 0, max = 1000))]
    pub min: i32,
    /// Most nodes.
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
}

/// What happens to an unused cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdlePolicy {
    /// `Delete` (default): the runtime and its cluster are removed once nothing has used it
    /// for `afterSeconds`. `Keep`: it stays until deleted by hand.
    #[serde(default)]
    pub policy: IdleAction,
    /// How long a cluster stays unused before it is removed (default 600).
    #[serde(default = "default_idle_seconds")]
    #[schemars(range(min = 0, max = 2_592_000))]
    pub after_seconds: i64,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        Self {
            policy: IdleAction::default(),
            after_seconds: default_idle_seconds(),
        }
    }
}

fn default_idle_seconds() -> i64 {
    600
}

/// Whether an unused cluster is removed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum IdleAction {
    #[default]
    Delete,
    Keep,
}

/// Where and from what the `ClusterAPI` provider creates a `Cluster`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterApiSettings {
    /// The ClusterClass of the `Cluster` topology (in `namespace`).
    #[schemars(length(min = 1, max = 253))]
    pub cluster_class: String,
    /// Management-cluster namespace of the `Cluster` objects and their kubeconfig Secrets.
    #[serde(default = "default_cluster_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Control plane machines.
    #[serde(default = "default_control_plane_replicas")]
    #[schemars(range(min = 1, max = 7))]
    pub control_plane_replicas: i32,
    /// The ClusterClass's machine deployment class every node pool uses.
    #[serde(default = "default_worker_class")]
    #[schemars(length(min = 1, max = 253))]
    pub worker_class: String,
    /// The infrastructure behind the ClusterClass (`aws`, `azure`, `hetzner`...): the
    /// `spec.provider` of the runtimes (default `cluster-api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<String>,
    /// Topology variables passed as they are (`$(runtime.region)` is replaced by the region).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub variables: Vec<TopologyVariable>,
}

fn default_cluster_namespace() -> String {
    "qleetos-clusters".to_owned()
}

fn default_control_plane_replicas() -> i32 {
    1
}

fn default_worker_class() -> String {
    "default-worker".to_owned()
}

/// One Cluster API topology variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TopologyVariable {
    /// Name of the variable the ClusterClass declares.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Its value, any JSON.
    #[schemars(schema_with = "any_value_schema")]
    pub value: serde_json::Value,
}

fn any_value_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Its value, any JSON.",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// What QleetOS observed of the profile.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesRuntimeProfileStatus {
    /// `Ready` is True when the profile is consistent (e.g. no other default profile for
    /// its regions); False says what to fix.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The KubernetesRuntimes made from this profile.
    #[serde(default)]
    pub runtimes: Vec<String>,
    /// How many there are.
    #[serde(default)]
    pub runtime_count: i64,
}

impl Conditions for KubernetesRuntimeProfileStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl KubernetesRuntimeProfile {
    /// The worker nodes a new cluster starts with.
    pub fn desired_workers(&self) -> i64 {
        self.spec
            .node_pools
            .iter()
            .map(|p| i64::from(p.count))
            .sum()
    }
}
