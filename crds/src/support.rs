//! Supporting services: what operations define (`SupportServiceProfile`) and what QleetOS
//! installs from it into one runtime when a workload there needs it (`SupportService`).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::chart::{Chart, ChartStatus};
use crate::condition::{Condition, Conditions};
use crate::instance::{AppliedObject, ResourceHealth};
use crate::manifest::Manifest;
use crate::staged::{ProfileRollout, RuntimeRevision, StagedRolloutStatus};

/// How to install one supporting service (an ingress controller, cert-manager, external-dns,
/// anything operations choose) into a runtime, what it provides, and when to remove it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "SupportServiceProfile",
    doc = "How to install a supporting service into a runtime (its manifests, health, what it needs first) and the capabilities it provides to workloads. Defined by operations; installed with QleetOS's own identity when a workload needs one of its capabilities.",
    plural = "supportserviceprofiles",
    shortname = "ssp",
    category = "qleetos",
    status = "SupportServiceProfileStatus",
    printcolumn(name = "Provides", type_ = "string", json_path = ".spec.provides"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Installed",
        type_ = "integer",
        json_path = ".status.installedCount"
    ),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision"),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.rollout.phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(crate::chart::ONE_SOURCE_RULE).message(crate::chart::ONE_SOURCE_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct SupportServiceProfileSpec {
    /// Capabilities this service provides to workloads, e.g. `ingress`, `tls`, `dns`.
    #[schemars(length(min = 1, max = 16))]
    #[schemars(inner(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ))]
    pub provides: Vec<String>,
    /// Chosen when several profiles provide the same capability. At most one profile per
    /// capability should be the default; two defaults are reported as ambiguous.
    #[serde(default)]
    pub default: bool,
    /// Capabilities that must be installed and Ready in the runtime first (e.g. an ingress
    /// controller whose certificates need `tls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(inner(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ))]
    pub requires: Vec<String>,
    /// Runtime namespace of the service; namespaced manifests without a namespace go there.
    /// QleetOS creates it and removes it with the service.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// The service's Kubernetes objects (CRDs, RBAC, Deployments, issuers...). String values
    /// may use `$(runtime.name)`, `$(runtime.region)`, `$(runtime.provider)` and
    /// `$(runtime.labels.<key>)`, replaced per runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::manifest::manifest_list_schema")]
    pub manifests: Vec<Manifest>,
    /// A Helm chart instead of `manifests`, rendered for each runtime into `namespace`; its
    /// string values may use the same variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<Chart>,
    /// How health is judged beyond rollouts (every Deployment, StatefulSet and DaemonSet
    /// among the manifests must be available).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub health_checks: Vec<HealthCheck>,
    /// What deleting the last user does. `WhenUnused` (default): the service is removed from
    /// the runtime once no workload has needed it for `gracePeriodSeconds`. `Retain`: it
    /// stays until the profile is deleted.
    #[serde(default)]
    pub removal_policy: RemovalPolicy,
    /// How long an unused service stays installed (default 300 s), so a redeploy does not
    /// reinstall it.
    #[serde(default = "default_grace_period")]
    #[schemars(range(min = 0, max = 604800))]
    pub grace_period_seconds: u32,
    /// What a workload's generated objects get from this service.
    #[serde(default)]
    pub workload_objects: WorkloadObjects,
    /// How a change of this profile (a new revision) reaches the runtimes: in waves gated on
    /// health, with pinned runtimes. Absent: every runtime gets it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<ProfileRollout>,
}

fn default_grace_period() -> u32 {
    300
}

/// What removing the last user of a supporting service does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RemovalPolicy {
    #[default]
    WhenUnused,
    Retain,
}

/// A condition an object of the service must report as `True` for the service to be Ready,
/// e.g. a ClusterIssuer's `Ready`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// apiVersion of the object, e.g. `cert-manager.io/v1`.
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    /// Kind of the object, e.g. `ClusterIssuer`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the object; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// The condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 63))]
    pub type_: String,
}

/// How the objects QleetOS generates for a workload (its route, certificate, DNS record) use
/// this service. Only the part matching the capability the workload needs is used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadObjects {
    /// `ingressClassName` of the generated Ingress (for an `ingress` provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub ingress_class_name: Option<String>,
    /// Annotations added to the generated Ingress; `$(hosts)` is replaced by the
    /// comma-separated hosts (e.g. external-dns's hostname annotation for `dns`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ingress_annotations: BTreeMap<String, String>,
    /// For a `tls` provider: the cert-manager issuer of a generated `Certificate` whose
    /// Secret the Ingress serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_issuer: Option<IssuerRef>,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// `ClusterIssuer` (default) or `Issuer`.
    #[serde(default = "default_issuer_kind")]
    #[schemars(regex(pattern = r"^(ClusterIssuer|Issuer)$"))]
    pub kind: String,
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn default_issuer_kind() -> String {
    "ClusterIssuer".to_owned()
}

/// Where the profile is installed and whether it is usable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupportServiceProfileStatus {
    /// `Ready` is True when the profile is valid; while it is being deleted it says which
    /// workloads still use it.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Runtimes the service is installed in (its SupportService objects).
    #[serde(default)]
    pub installed_in: Vec<String>,
    /// Number of runtimes it is installed in.
    #[serde(default)]
    pub installed_count: i64,
    /// The latest revision of the spec (a ControllerRevision in QleetOS's namespace holds
    /// each); a change of anything but `rollout` makes a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Hash of the spec the latest revision holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_hash: Option<String>,
    /// The rollout of the latest revision, with `spec.rollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<StagedRolloutStatus>,
    /// Each runtime's wave and revision, with `spec.rollout`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<RuntimeRevision>,
}

impl Conditions for SupportServiceProfileStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// One supporting service installed in one runtime. Created by QleetOS when a workload
/// placed there needs it; removed when the last one stops needing it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "SupportService",
    doc = "A supporting service installed by QleetOS into one runtime from a SupportServiceProfile, because workloads placed there need it. Its users are derived from the live WorkloadInstances (and other SupportServices) that need it.",
    plural = "supportservices",
    shortname = "ss",
    category = "qleetos",
    status = "SupportServiceStatus",
    printcolumn(
        name = "Profile",
        type_ = "string",
        json_path = ".spec.profileRef.name"
    ),
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
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Users", type_ = "integer", json_path = ".status.userCount"),
    printcolumn(name = "Chart", type_ = "string", json_path = ".status.chart.name"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.chart.version"
    ),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision"),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SupportServiceSpec {
    /// The profile it is installed from.
    #[x_kube(validation = Rule::new("self == oldSelf").message("profileRef is immutable"))]
    pub profile_ref: NameRef,
    /// The KubernetesRuntime it is installed in.
    #[x_kube(validation = Rule::new("self == oldSelf").message("runtimeRef is immutable"))]
    pub runtime_ref: NameRef,
    /// Set when installed from a ServiceProfile (`profileRef` names it) for the workloads of
    /// one namespace; absent for a support service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("service is immutable"))]
    pub service: Option<crate::service::ServiceUnit>,
    /// The profile revision to install, set by the profile's rollout; absent: the profile as
    /// it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub revision: Option<i64>,
}

/// A reference by name to a cluster-scoped object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct NameRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Progress of a dependency, the same words for every kind of dependency.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DependencyState {
    #[default]
    Pending,
    Installing,
    Ready,
    Failed,
    Removing,
}

impl std::fmt::Display for DependencyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self {
            Self::Pending => "Pending",
            Self::Installing => "Installing",
            Self::Ready => "Ready",
            Self::Failed => "Failed",
            Self::Removing => "Removing",
        };
        f.write_str(word)
    }
}

/// What QleetOS installed and observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupportServiceStatus {
    /// `Ready` is True when every object is applied and healthy; its message says what is
    /// still installing, or the runtime's error.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Installing`, `Ready`, `Failed` or `Removing`.
    #[serde(default)]
    pub state: DependencyState,
    /// The profile generation installed (a newer profile is rolled out to every runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_generation: Option<i64>,
    /// The profile revision installed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Who needs it now, derived from live objects on every pass: `namespace/instance` of
    /// WorkloadInstances and `SupportService/<name>` of services requiring it.
    #[serde(default)]
    pub users: Vec<String>,
    /// Number of users.
    #[serde(default)]
    pub user_count: i64,
    /// When the last user went away (RFC 3339); removal follows after the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_since: Option<String>,
    /// Every object applied to the runtime, for pruning and removal.
    #[serde(default)]
    pub applied_objects: Vec<AppliedObject>,
    /// Health of its workload controllers and of its health checks.
    #[serde(default)]
    pub health: Vec<ResourceHealth>,
    /// The chart rendered, when the profile's source is a chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartStatus>,
}

impl Conditions for SupportServiceStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl SupportService {
    /// The state QleetOS last reported, `Pending` before the first pass.
    pub fn state(&self) -> DependencyState {
        self.status.as_ref().map(|s| s.state).unwrap_or_default()
    }

    /// The Ready message QleetOS last reported.
    pub fn message(&self) -> String {
        self.status
            .as_ref()
            .and_then(|s| s.condition(crate::READY))
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "not reconciled yet".to_owned())
    }
}
