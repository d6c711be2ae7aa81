use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::chart::{Chart, ChartStatus};
use crate::condition::{Condition, Conditions};
use crate::expose::Expose;
use crate::manifest::Manifest;
use crate::support::DependencyState;

/// One Workload on one runtime: the objects to apply there and the health read back.
/// Created and owned by the Workload controller; may also be created directly.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "WorkloadInstance",
    doc = "One Workload on one runtime: the objects QleetOS applies there and the health it reads back.",
    plural = "workloadinstances",
    namespaced,
    shortname = "wli",
    category = "qleetos",
    status = "WorkloadInstanceStatus",
    printcolumn(
        name = "Runtime",
        type_ = "string",
        json_path = ".spec.runtimeRef.name"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Objects",
        type_ = "integer",
        json_path = ".status.appliedCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(crate::chart::ONE_SOURCE_RULE).message(crate::chart::ONE_SOURCE_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadInstanceSpec {
    /// The Workload this instance belongs to, absent for an instance created directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// The KubernetesRuntime to deploy to.
    #[x_kube(validation = Rule::new("self == oldSelf").message("runtimeRef is immutable: create a new instance to move a workload"))]
    pub runtime_ref: RuntimeRef,
    /// The Kubernetes objects to apply to the runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::manifest::manifest_list_schema")]
    pub manifests: Vec<Manifest>,
    /// A Helm chart instead of `manifests`, rendered for the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<Chart>,
    /// Container name → image overrides applied to every pod template before applying.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// How the workload is reached; QleetOS generates the route, certificate and DNS record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
    /// Further capabilities needed in the runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(inner(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ))]
    pub needs: Vec<String>,
}

impl WorkloadInstanceSpec {
    /// Every capability the instance needs in its runtime, without repeats, in order.
    pub fn capabilities(&self) -> Vec<String> {
        let exposed = self.expose.iter().flat_map(Expose::capabilities);
        let mut all: Vec<String> = Vec::new();
        for capability in exposed.map(str::to_owned).chain(self.needs.iter().cloned()) {
            if !all.contains(&capability) {
                all.push(capability);
            }
        }
        all
    }
}

/// Reference to the owning Workload (same namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Name of the Workload.
    pub name: String,
    /// The Workload's `metadata.generation` this instance was rendered from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// Reference to a KubernetesRuntime.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRef {
    /// Name of the KubernetesRuntime.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What QleetOS applied and observed on the runtime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadInstanceStatus {
    /// `Ready` is True when every object applied and every workload controller
    /// (Deployment, StatefulSet, DaemonSet) has rolled out and is available.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Every object applied to the runtime, the inventory used for pruning and deletion.
    #[serde(default)]
    pub applied_objects: Vec<AppliedObject>,
    /// Number of applied objects.
    #[serde(default)]
    pub applied_count: i64,
    /// Rollout health of the workload controllers among the applied objects.
    #[serde(default)]
    pub health: Vec<ResourceHealth>,
    /// What the instance needs in its runtime before its objects are applied, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<DependencyStatus>,
    /// Where the workload answers on this runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The chart rendered for this runtime, when the source is a chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartStatus>,
}

/// One dependency of an instance and how far it is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyStatus {
    /// The capability needed, e.g. `tls`.
    pub capability: String,
    /// Kind of the object providing it, e.g. `SupportService`.
    pub kind: String,
    /// Name of that object; empty when nothing can provide it.
    #[serde(default)]
    pub name: String,
    /// `Pending`, `Installing`, `Ready`, `Failed` or `Removing`.
    pub state: DependencyState,
    /// What the dependency reports, e.g. `1/2 Deployments ready`.
    #[serde(default)]
    pub message: String,
    /// For a back-end service: the WorkloadServiceDependency asking for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// Since when it is in this state: its Ready condition's last transition (RFC 3339), so a
    /// wait says how long it has lasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl Conditions for WorkloadInstanceStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl WorkloadInstance {
    /// Ready at the current generation, i.e. for what the spec asks now.
    pub fn is_ready_at_current_generation(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.is_ready() && s.observed_generation == self.metadata.generation)
    }
}

/// One object applied to the runtime.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AppliedObject {
    /// apiVersion of the object, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind of the object, e.g. `Deployment`.
    pub kind: String,
    /// Namespace of the object; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the object.
    pub name: String,
    /// uid of the live object QleetOS created or updated; absent while an apply is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// What QleetOS last applied and the live object it got back: a pass that finds the
    /// object still so (no one changed it) and the manifest unchanged writes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AppliedRevision>,
}

/// The revision of an object right after QleetOS applied it.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRevision {
    /// Digest (SHA-256) of the manifest as applied.
    pub digest: String,
    /// resourceVersion of the object the apply returned.
    pub resource_version: String,
    /// metadata.generation of the object the apply returned, for kinds that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

impl AppliedObject {
    /// The API group, `""` for the core group.
    pub fn group(&self) -> &str {
        self.api_version
            .split_once('/')
            .map_or("", |(group, _)| group)
    }

    /// Identity of the object independent of its API version: the same object stays the
    /// same inventory entry when a manifest moves from `policy/v1beta1` to `policy/v1`.
    pub fn identity(&self) -> (&str, &str, Option<&str>, &str) {
        (
            self.group(),
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }

    pub fn same_object(&self, other: &AppliedObject) -> bool {
        self.identity() == other.identity()
    }
}

/// Rollout state of one workload controller on the runtime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceHealth {
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// Replicas wanted.
    pub desired: i64,
    /// Replicas running the current template.
    pub updated: i64,
    /// Replicas available.
    pub available: i64,
    /// Whether the rollout is complete and every replica available.
    pub healthy: bool,
    /// Why the rollout cannot progress, as the runtime reports it: a failure condition
    /// (`ReplicaFailure`, `ProgressDeadlineExceeded`) or a pod-level error (`ImagePullBackOff`,
    /// `CrashLoopBackOff`, ...). Absent while the rollout progresses or is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The runtime's message for `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
