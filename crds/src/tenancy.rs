use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::{Condition, Conditions};

/// Operations' rules for what Workloads of some management namespaces may do in the compute
/// space. Policies are additive: a namespace gets the union of every policy that selects it.
/// A namespace no policy selects gets the safe default: namespaced kinds only, only into the
/// runtime namespace named like its own, on any runtime.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "TenantPolicy",
    doc = "What the Workloads of some management namespaces may do in the runtimes: which runtimes, which runtime namespaces, which kinds. Policies selecting one namespace add up.",
    plural = "tenantpolicies",
    shortname = "tp",
    category = "qleetos",
    status = "TenantPolicyStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Selected",
        type_ = "string",
        json_path = ".status.selectedNamespaces"
    ),
    printcolumn(
        name = "Targets",
        type_ = "string",
        json_path = ".spec.targetNamespaces"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)").message("a TenantPolicy needs namespaces or a namespaceSelector"))]
#[serde(rename_all = "camelCase")]
pub struct TenantPolicySpec {
    /// Management namespaces this policy applies to, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,
    /// Management namespaces this policy applies to, by label. An empty selector selects
    /// every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Runtimes the selected namespaces may place Workloads on; absent: every runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtimes: Option<RuntimeRule>,
    /// Runtime namespaces the tenant may write to: exact names, `*` suffix patterns such as
    /// `team-a-*`, or `$(namespace)` for the runtime namespace named like the management
    /// namespace. Absent: `$(namespace)` only. `kube-system`, `kube-public`,
    /// `kube-node-lease` and QleetOS's own namespace are only allowed when listed by exact name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(inner(
        length(max = 63),
        regex(
            pattern = r"^(\$\(namespace\)|[a-z0-9]([-a-z0-9]*[a-z0-9])?|[a-z0-9][-a-z0-9]*[*])$"
        )
    ))]
    pub target_namespaces: Vec<String>,
    /// Namespaced kinds the tenant may create; absent: every namespaced kind (the runtime's
    /// RBAC for the tenant identity still applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub namespaced_kinds: Vec<KindRule>,
    /// Cluster-scoped kinds the tenant may create; absent: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub cluster_kinds: Vec<KindRule>,
    /// Whether a manifest annotated `qleetos.io/adopt: "true"` may take over an existing object
    /// QleetOS did not create. Off by default: such objects are reported as conflicts.
    #[serde(default)]
    pub allow_adoption: bool,
    /// ClusterRole bound (RoleBinding `qleetos-tenant`) to the tenant identity in each runtime
    /// namespace it writes to; defaults to `admin`. Empty: operations manage the bindings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_role: Option<String>,
    /// Capabilities the selected namespaces' Workloads may need (in `needs`, or through
    /// `expose`: `ingress`, `tls`, `dns`), which makes QleetOS install the profiles providing
    /// them into the runtime. Absent: any capability a profile provides; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[schemars(inner(length(min = 1, max = 63)))]
    pub capabilities: Option<Vec<String>>,
    /// ServiceProfiles the selected namespaces' WorkloadServiceDependencies may use (their
    /// services are installed with QleetOS's identity). Absent: any; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[schemars(inner(length(min = 1, max = 253)))]
    pub service_profiles: Option<Vec<String>>,
    /// KubernetesRuntimeProfiles the selected namespaces' Workloads may provision clusters
    /// from (`placement.provision: IfNeeded`). Absent: any; empty: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[schemars(inner(length(min = 1, max = 253)))]
    pub runtime_profiles: Option<Vec<String>>,
    /// Hostnames the selected namespaces may use in `expose`, in host-bearing manifests
    /// (Ingress, Gateway API routes, cert-manager Certificates, DNSEndpoints, external-dns
    /// annotations) and so in certificates and DNS records: exact names
    /// (`shop.example.com`) or `*.` patterns (`*.team-a.example.com`: every name below that
    /// domain, the wildcard itself included). A wildcard host needs a pattern covering it.
    /// Absent or empty: no host at all. A granted host still belongs to at most one
    /// management namespace at a time: the first whose Workload claims it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[schemars(inner(
        length(max = 253),
        regex(
            pattern = r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
        )
    ))]
    pub hosts: Option<Vec<String>>,
    /// Chart repositories the selected namespaces' Workloads may render charts from (the
    /// operator fetches them): URL prefixes ending at a path boundary, e.g.
    /// `https://charts.example.com/team-a` covers `.../team-a` and `.../team-a/stable`, not
    /// `.../team-a-other`. Absent or empty: no chart at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[schemars(inner(
        length(min = 1, max = 512),
        regex(pattern = r"^(https?|oci)://[^\s]+$")
    ))]
    pub chart_repositories: Option<Vec<String>>,
    /// Pod Security Standard enforced (`pod-security.kubernetes.io/enforce`) on the runtime
    /// namespaces QleetOS creates for the selected namespaces. Absent: `baseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurityLevel>,
    /// Whether `Secret` manifests may be written inline in a Workload, where anyone who may
    /// read Workloads or WorkloadInstances reads them. Off by default: a Workload refers to
    /// Secrets that exist in its runtime namespace (a service dependency's connection Secret,
    /// or one that operations' secret tooling writes there) instead of carrying them.
    #[serde(default)]
    pub allow_inline_secrets: bool,
    /// Whether the selected namespaces' Workloads apply a change only once its plan is
    /// approved, as `spec.approval: Required` asks.
    #[serde(default)]
    pub require_plan_approval: bool,
    /// Placement preferences for the selected namespaces' Workloads that set none (the
    /// first policy setting them wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_preferences: Option<crate::PlacementPreferences>,
    /// Caps on what the selected namespaces may ask for; absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TenantLimits>,
}

/// A Pod Security Standard level.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    /// No restriction: host namespaces, privileged containers, hostPath.
    Privileged,
    /// Known privilege escalations refused (the default).
    Baseline,
    /// Hardened pods only (non-root, no capabilities, seccomp).
    Restricted,
}

impl PodSecurityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Privileged => "privileged",
            PodSecurityLevel::Baseline => "baseline",
            PodSecurityLevel::Restricted => "restricted",
        }
    }
}

/// Per-namespace caps, so one tenant's flood stays its own problem.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantLimits {
    /// WorkloadInstances (placements) the namespace may have; those created after the cap
    /// is reached are refused (`LimitExceeded`) and apply nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_placements: Option<i32>,
    /// Manifests one Workload of the namespace may carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_manifests: Option<i32>,
}

/// Which runtimes a tenant may use. Both fields must match when both are set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRule {
    /// Label selector over KubernetesRuntime labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_selector: Option<LabelSelector>,
    /// Regions the tenant may use; empty: any region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub regions: Vec<String>,
}

/// A kind by API group and name; `*` matches any.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindRule {
    /// API group, `""` for the core group, `*` for any group.
    #[serde(default)]
    pub group: String,
    /// Kind, e.g. `ClusterRole`; `*` for every kind of the group.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
}

impl KindRule {
    pub fn matches(&self, group: &str, kind: &str) -> bool {
        (self.group == "*" || self.group == group) && (self.kind == "*" || self.kind == kind)
    }
}

/// What QleetOS observed of the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantPolicyStatus {
    /// `Ready` is True when the policy is in force; False when its selector is invalid.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Management namespaces the policy selects now.
    #[serde(default)]
    pub selected_namespaces: Vec<String>,
}

impl Conditions for TenantPolicyStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}
