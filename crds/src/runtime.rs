use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::{Condition, Conditions};

/// A workload cluster QleetOS deploys to. Its labels, `region` and `provider` drive placement.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "KubernetesRuntime",
    doc = "A workload cluster QleetOS deploys to, reached through a kubeconfig Secret. Its labels, region and provider drive Workload placement.",
    plural = "kubernetesruntimes",
    shortname = "kr",
    shortname = "runtime",
    category = "qleetos",
    status = "KubernetesRuntimeStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.provisioning.phase"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.serverVersion"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodeCount"),
    printcolumn(
        name = "Cost/h",
        type_ = "string",
        json_path = ".status.capacity.costPerHour",
        priority = "1"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.provisioning) == has(oldSelf.provisioning) && (!has(self.provisioning) || self.provisioning == oldSelf.provisioning)").message("spec.provisioning cannot be added, changed or removed"))]
#[serde(rename_all = "camelCase")]
pub struct KubernetesRuntimeSpec {
    /// Infrastructure provider of the cluster, a free-form label such as `aws`, `gcp` or `local`.
    #[schemars(length(min = 1, max = 63))]
    pub provider: String,
    /// Region the cluster runs in (e.g. `eu-west-1`). Workloads select runtimes by region.
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// Finer location inside the region (zone, data centre), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// How QleetOS reaches the cluster's Kubernetes API.
    pub connection: RuntimeConnection,
    /// Set when QleetOS provisions the cluster from a KubernetesRuntimeProfile (it then also
    /// names the Secret the provider writes as `connection`); absent for a registered cluster,
    /// which QleetOS never creates nor deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<RuntimeProvisioning>,
    /// What deleting this runtime does to the workloads on it. `Wait` (default): they are
    /// re-placed onto other matching runtimes first, and the deletion waits while any
    /// remains. `Abandon`: the cluster is gone for good; the runtime is released at once and
    /// its placements let go without removing their objects.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// What the cluster costs, for placement (`Cheapest`) and reports. A provisioned runtime
    /// without one uses its profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::Cost>,
}

/// Condition type: the cluster's API answers with QleetOS's credentials.
pub const REACHABLE: &str = "Reachable";

/// Where a provisioned runtime comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeProvisioning {
    /// The KubernetesRuntimeProfile the cluster is made from.
    pub profile_ref: crate::support::NameRef,
}

/// How far the provisioning of a cluster is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ProvisioningPhase {
    #[default]
    Pending,
    Provisioning,
    Provisioned,
    Failed,
    Deprovisioning,
}

impl std::fmt::Display for ProvisioningPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What QleetOS last observed of a provisioned cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningStatus {
    /// `Pending`, `Provisioning`, `Provisioned`, `Failed` (see `message`; retried with
    /// backoff) or `Deprovisioning`.
    pub phase: ProvisioningPhase,
    /// Progress or the provider's error, e.g. `control plane ready, 0/2 workers`.
    #[serde(default)]
    pub message: String,
    /// The provider's object for the cluster, e.g. `Cluster qleetos-clusters/standard-eu-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// When the last user went away (RFC 3339); the runtime is removed once the profile's
    /// idle period has passed since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_since: Option<String>,
    /// Users (WorkloadInstances) at the last pass.
    #[serde(default)]
    pub user_count: i64,
}

/// What deleting a runtime does to the workloads placed on it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Wait,
    Abandon,
}

/// How to reach an existing cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConnection {
    /// Secret in the management cluster holding a kubeconfig for the cluster. The controller
    /// reconnects whenever the Secret changes.
    pub kubeconfig_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the management cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data holding the kubeconfig; defaults to `kubeconfig`.
    #[serde(default = "default_kubeconfig_key")]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    "kubeconfig".to_owned()
}

/// What QleetOS last observed of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesRuntimeStatus {
    /// `Ready` is True when the cluster's API answers and accepts QleetOS's credentials.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Kubernetes version the cluster's API server reports (e.g. `v1.36.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Number of nodes registered in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<i64>,
    /// Allocatable and requested CPU and memory, and the cost per hour, at the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<crate::RuntimeCapacity>,
    /// When the cluster was last probed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    /// Why the last probe failed, empty when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Provisioned runtimes only: the provisioning phase and progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningStatus>,
    /// Provisioned runtimes only: the support services its profile gives every cluster,
    /// installed before the runtime is Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub support_services: Vec<crate::DependencyStatus>,
}

impl Conditions for KubernetesRuntimeStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl KubernetesRuntime {
    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(Conditions::is_ready)
    }

    /// Whether the cluster's API answers QleetOS (condition `Reachable`; runtimes probed
    /// before it existed only have `Ready`). Support services install once it does; Workloads
    /// wait for `Ready`, which a provisioned runtime only gets once its profile's support
    /// services are Ready too.
    pub fn is_reachable(&self) -> bool {
        let Some(status) = self.status.as_ref() else {
            return false;
        };
        match status.condition(REACHABLE) {
            Some(condition) => condition.status == crate::ConditionStatus::True,
            None => status.is_ready(),
        }
    }

    /// Since when the cluster's API has not answered (the `Reachable` condition's last
    /// transition to False); `None` while it answers or before its first probe.
    pub fn unreachable_since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let condition = self.status.as_ref()?.condition(REACHABLE)?;
        if condition.status != crate::ConditionStatus::False {
            return None;
        }
        chrono::DateTime::parse_from_rfc3339(&condition.last_transition_time)
            .ok()
            .map(|time| time.with_timezone(&chrono::Utc))
    }

    /// The profile a provisioned runtime is made from; `None` for a registered one.
    pub fn profile(&self) -> Option<&str> {
        self.spec
            .provisioning
            .as_ref()
            .map(|p| p.profile_ref.name.as_str())
    }

    /// Whether the provider has not finished creating the cluster yet.
    pub fn is_provisioning(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.provisioning.as_ref())
            .is_none_or(|p| {
                matches!(
                    p.phase,
                    ProvisioningPhase::Pending | ProvisioningPhase::Provisioning
                )
            })
            && self.spec.provisioning.is_some()
    }
}
