//! What the Workloads of one management namespace may do in the compute space: the grants of
//! the TenantPolicies selecting the namespace, or the safe default when none does. Pure: no
//! client, no I/O. The instance Qleet checks every rendered object here before applying any.

use std::collections::BTreeMap;
use std::fmt;

use kube::core::{Selector, SelectorExt};
use qleetos_crds::{
    KindRule, KubernetesRuntime, PlacementPreferences, PodSecurityLevel, TenantLimits,
    TenantPolicy, TenantPolicySpec,
};

/// Runtime namespaces a tenant may only use when a policy names them exactly.
pub const PROTECTED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// Stands for the runtime namespace named like the management namespace.
pub const OWN_NAMESPACE: &str = "$(namespace)";
/// ClusterRole bound to the tenant identity in its runtime namespaces by default.
pub const DEFAULT_TENANT_ROLE: &str = "admin";
/// Group of every tenant identity in the runtimes.
pub const TENANT_GROUP: &str = "qleetos:tenants";
/// Name of the RoleBinding QleetOS keeps for the tenant identity in each runtime namespace.
pub const TENANT_BINDING: &str = "qleetos-tenant";

/// One object a tenant asks QleetOS to apply, as the runtime's discovery resolved it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<&'a str>,
    pub name: &'a str,
}

/// Why an object or a runtime is outside what the namespace may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken: `ClusterScopedKind`, `NamespacedKind`, `TargetNamespace`, `Runtime`
    /// or `Capability`.
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.rule)
    }
}

/// The grants that apply to one management namespace.
#[derive(Debug, Clone)]
pub struct Fence {
    namespace: String,
    system_namespace: String,
    /// Runtime namespaces QleetOS installs support services into: never a tenant's.
    reserved: Vec<String>,
    grants: Vec<Grant>,
}

#[derive(Debug, Clone)]
struct Grant {
    /// The policy's name; `None` for the built-in default.
    policy: Option<String>,
    spec: TenantPolicySpec,
}

impl Fence {
    /// The fence of `namespace` (with its management labels): every policy selecting it adds
    /// a grant; with none, the default grant (namespaced kinds, own namespace, any runtime).
    pub fn for_namespace(
        policies: &[TenantPolicy],
        namespace: &str,
        labels: &BTreeMap<String, String>,
        system_namespace: &str,
    ) -> Self {
        let mut grants: Vec<Grant> = policies
            .iter()
            .filter(|p| selects(&p.spec, namespace, labels))
            .map(|p| Grant {
                policy: p.metadata.name.clone(),
                spec: p.spec.clone(),
            })
            .collect();
        grants.sort_by(|a, b| a.policy.cmp(&b.policy));
        if grants.is_empty() {
            grants.push(Grant {
                policy: None,
                spec: default_grant(),
            });
        }
        Self {
            namespace: namespace.to_owned(),
            system_namespace: system_namespace.to_owned(),
            reserved: Vec::new(),
            grants,
        }
    }

    /// The same fence, with `namespaces` (where support services are installed) out of any
    /// tenant's reach, whatever a policy lists.
    pub fn with_reserved_namespaces(mut self, namespaces: Vec<String>) -> Self {
        self.reserved = namespaces;
        self
    }

    /// The management namespace this fence is for.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The identity tenant manifests are applied as in a runtime (impersonated).
    pub fn identity(&self) -> String {
        tenant_identity(&self.namespace)
    }

    /// Whether some grant lets the namespace place Workloads on `runtime`. A runtime QleetOS
    /// provisioned is only for namespaces that may provision from its profile (they are who
    /// it is paid for), so nobody else can use, or keep alive, a cluster made for others.
    pub fn allows_runtime(&self, runtime: &KubernetesRuntime) -> bool {
        let provisioned_for_us = runtime
            .profile()
            .is_none_or(|profile| self.check_runtime_profile(profile).is_ok());
        provisioned_for_us && self.grants.iter().any(|g| grant_allows_runtime(g, runtime))
    }

    /// The error for a runtime the namespace may not use.
    pub fn runtime_violation(&self, runtime: &str) -> Violation {
        let allowed: Vec<String> = self.grants.iter().map(describe_runtimes).collect();
        Violation {
            rule: "Runtime",
            message: format!(
                "namespace {} may not place Workloads on runtime {runtime}; allowed: {} ({})",
                self.namespace,
                allowed.join(" or "),
                self.policies()
            ),
        }
    }

    /// Whether `target` may be applied: some single grant must allow its kind and namespace.
    pub fn check(&self, target: &Target<'_>) -> Result<(), Violation> {
        if self.grants.iter().any(|g| self.grant_allows(g, target)) {
            return Ok(());
        }
        Err(self.violation(target))
    }

    /// Whether some grant lets the namespace's Workloads need every one of `capabilities`.
    pub fn check_capabilities(&self, capabilities: &[String]) -> Result<(), Violation> {
        self.check_listed(
            capabilities,
            |g| g.capabilities.as_deref(),
            "Capability",
            "need",
        )
    }

    /// Whether some grant lets the namespace's dependencies use ServiceProfile `profile`.
    pub fn check_service_profile(&self, profile: &str) -> Result<(), Violation> {
        let wanted = [profile.to_owned()];
        self.check_listed(
            &wanted,
            |g| g.service_profiles.as_deref(),
            "ServiceProfile",
            "use ServiceProfile",
        )
    }

    /// Whether some grant lets the namespace's Workloads provision clusters from `profile`.
    pub fn check_runtime_profile(&self, profile: &str) -> Result<(), Violation> {
        let wanted = [profile.to_owned()];
        self.check_listed(
            &wanted,
            |g| g.runtime_profiles.as_deref(),
            "KubernetesRuntimeProfile",
            "provision clusters from KubernetesRuntimeProfile",
        )
    }

    /// Every one of `wanted` must be in some grant's list (`listed`; absent allows anything).
    fn check_listed(
        &self,
        wanted: &[String],
        listed: fn(&TenantPolicySpec) -> Option<&[String]>,
        rule: &'static str,
        verb: &str,
    ) -> Result<(), Violation> {
        let allows = |grant: &Grant, item: &str| {
            listed(&grant.spec).is_none_or(|allowed| allowed.iter().any(|a| a == item))
        };
        let refused: Vec<&str> = wanted
            .iter()
            .filter(|item| !self.grants.iter().any(|g| allows(g, item)))
            .map(String::as_str)
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let allowed = sorted_list(
            self.grants
                .iter()
                .filter_map(|g| listed(&g.spec))
                .flatten()
                .cloned()
                .collect(),
            "none",
        );
        Err(Violation {
            rule,
            message: format!(
                "namespace {} may not {verb} {}; allowed: {allowed} ({})",
                self.namespace,
                refused.join(", "),
                self.policies()
            ),
        })
    }

    /// Whether some grant lets the namespace use `host` (normalized): a name a pattern
    /// covers. A wildcard host needs a wildcard pattern covering it.
    pub fn check_host(&self, host: &str) -> Result<(), Violation> {
        let patterns = || {
            self.grants
                .iter()
                .flat_map(|g| g.spec.hosts.iter().flatten())
        };
        if patterns().any(|p| crate::hosts::pattern_covers(p, host)) {
            return Ok(());
        }
        let granted = sorted_list(patterns().cloned().collect(), "none");
        Err(Violation {
            rule: "Host",
            message: format!(
                "namespace {} may not use host {host}; granted hosts: {granted} ({})",
                self.namespace,
                self.policies()
            ),
        })
    }

    /// Whether some grant lets the namespace's Workloads render charts from `repository`.
    pub fn check_chart_repository(&self, repository: &str) -> Result<(), Violation> {
        let allowed = || {
            self.grants
                .iter()
                .flat_map(|g| g.spec.chart_repositories.iter().flatten())
        };
        if allowed().any(|a| crate::chart::repository_within(a, repository)) {
            return Ok(());
        }
        let granted = sorted_list(allowed().cloned().collect(), "none");
        Err(Violation {
            rule: "ChartRepository",
            message: format!(
                "namespace {} may not render charts from {repository}; allowed chart repositories: {granted} ({})",
                self.namespace,
                self.policies()
            ),
        })
    }

    /// Whether `Secret` manifests may be carried inline in the namespace's Workloads.
    /// Whether a policy of the namespace requires changes to wait for an approved plan (one
    /// that does is enough).
    pub fn requires_plan_approval(&self) -> bool {
        self.grants.iter().any(|g| g.spec.require_plan_approval)
    }

    /// The placement preferences of the first policy of the namespace that sets them.
    pub fn placement_preferences(&self) -> Option<&PlacementPreferences> {
        self.grants
            .iter()
            .find_map(|g| g.spec.placement_preferences.as_ref())
    }

    pub fn allows_inline_secrets(&self) -> bool {
        self.grants.iter().any(|g| g.spec.allow_inline_secrets)
    }

    /// The Pod Security level of runtime namespace `target`, from the first grant allowing
    /// it (as for the tenant role); `baseline` unless that grant says otherwise.
    pub fn pod_security(&self, target: &str) -> PodSecurityLevel {
        self.grants
            .iter()
            .find(|g| self.namespace_allowed(g, target))
            .and_then(|g| g.spec.pod_security)
            .unwrap_or(PodSecurityLevel::Baseline)
    }

    /// Whether a policy names runtime namespace `target` exactly and allows adoption, so a
    /// namespace QleetOS did not create may become the tenant's.
    pub fn adopts_namespace(&self, target: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.spec.allow_adoption && g.spec.target_namespaces.iter().any(|t| t == target))
    }

    /// The caps in force: the smallest each selecting policy sets (limits restrict, so
    /// they do not add up like grants).
    pub fn limits(&self) -> TenantLimits {
        let smallest = |cap: fn(&TenantLimits) -> Option<i32>| {
            self.grants
                .iter()
                .filter_map(|g| g.spec.limits.as_ref().and_then(cap))
                .min()
        };
        TenantLimits {
            max_placements: smallest(|l| l.max_placements),
            max_manifests: smallest(|l| l.max_manifests),
        }
    }

    /// Whether a manifest annotated for adoption may take over an object it did not create.
    pub fn allows_adoption(&self) -> bool {
        self.grants.iter().any(|g| g.spec.allow_adoption)
    }

    /// The ClusterRole to bind to the tenant identity in runtime namespace `target`, from the
    /// first grant allowing that namespace; `None` when operations manage bindings themselves.
    pub fn tenant_role(&self, target: &str) -> Option<String> {
        let grant = self
            .grants
            .iter()
            .find(|g| self.namespace_allowed(g, target))?;
        let role = grant
            .spec
            .tenant_role
            .clone()
            .unwrap_or_else(|| DEFAULT_TENANT_ROLE.to_owned());
        (!role.is_empty()).then_some(role)
    }

    fn grant_allows(&self, grant: &Grant, target: &Target<'_>) -> bool {
        match target.namespace {
            None => kind_listed(&grant.spec.cluster_kinds, target),
            Some(namespace) => {
                self.namespace_allowed(grant, namespace)
                    && (grant.spec.namespaced_kinds.is_empty()
                        || kind_listed(&grant.spec.namespaced_kinds, target))
            }
        }
    }

    fn namespace_allowed(&self, grant: &Grant, namespace: &str) -> bool {
        let own = [OWN_NAMESPACE.to_owned()];
        let entries = if grant.spec.target_namespaces.is_empty() {
            &own[..]
        } else {
            &grant.spec.target_namespaces[..]
        };
        if self.reserved.iter().any(|r| r == namespace) {
            return false;
        }
        if self.is_protected(namespace) {
            return entries.iter().any(|e| e == namespace);
        }
        entries.iter().any(|entry| match entry.as_str() {
            OWN_NAMESPACE => namespace == self.namespace,
            pattern => match pattern.strip_suffix('*') {
                Some(prefix) => namespace.starts_with(prefix),
                None => namespace == pattern,
            },
        })
    }

    fn is_protected(&self, namespace: &str) -> bool {
        PROTECTED_NAMESPACES.contains(&namespace) || namespace == self.system_namespace
    }

    fn violation(&self, target: &Target<'_>) -> Violation {
        let kind = kind_of(target);
        let policies = self.policies();
        match target.namespace {
            None => Violation {
                rule: "ClusterScopedKind",
                message: format!(
                    "{kind} {} is cluster-scoped and namespace {} may not create cluster-scoped objects of that kind; allowed cluster-scoped kinds: {} ({policies})",
                    target.name,
                    self.namespace,
                    self.listed(|s| &s.cluster_kinds, "none"),
                ),
            },
            Some(namespace) if self.reserved.iter().any(|r| r == namespace) => Violation {
                rule: "TargetNamespace",
                message: format!(
                    "{kind} {namespace}/{} targets runtime namespace {namespace}, where QleetOS installs a support service; no tenant may write there",
                    target.name,
                ),
            },
            Some(namespace)
                if !self
                    .grants
                    .iter()
                    .any(|g| self.namespace_allowed(g, namespace)) =>
            {
                Violation {
                    rule: "TargetNamespace",
                    message: format!(
                        "{kind} {namespace}/{} targets runtime namespace {namespace}, which namespace {} may not write to; allowed runtime namespaces: {} ({policies})",
                        target.name,
                        self.namespace,
                        self.allowed_namespaces(),
                    ),
                }
            }
            Some(namespace) => Violation {
                rule: "NamespacedKind",
                message: format!(
                    "{kind} {namespace}/{} is a kind namespace {} may not create; allowed kinds: {} ({policies})",
                    target.name,
                    self.namespace,
                    self.listed(|s| &s.namespaced_kinds, "any"),
                ),
            },
        }
    }

    fn allowed_namespaces(&self) -> String {
        let mut names: Vec<String> = self
            .grants
            .iter()
            .flat_map(|g| {
                if g.spec.target_namespaces.is_empty() {
                    vec![self.namespace.clone()]
                } else {
                    g.spec
                        .target_namespaces
                        .iter()
                        .map(|e| {
                            if e == OWN_NAMESPACE {
                                self.namespace.clone()
                            } else {
                                e.clone()
                            }
                        })
                        .collect()
                }
            })
            .collect();
        names.sort();
        names.dedup();
        names.join(", ")
    }

    fn listed(&self, rules: fn(&TenantPolicySpec) -> &Vec<KindRule>, empty: &str) -> String {
        let kinds = self
            .grants
            .iter()
            .flat_map(|g| rules(&g.spec).iter().map(describe_kind_rule))
            .collect();
        sorted_list(kinds, empty)
    }

    fn policies(&self) -> String {
        let names: Vec<&str> = self
            .grants
            .iter()
            .filter_map(|g| g.policy.as_deref())
            .collect();
        if names.is_empty() {
            "the default: no TenantPolicy selects this namespace".to_owned()
        } else {
            format!("TenantPolicy {}", names.join(", "))
        }
    }
}

/// `items` sorted, without repeats, comma-separated; `empty` when there are none.
fn sorted_list(mut items: Vec<String>, empty: &str) -> String {
    items.sort();
    items.dedup();
    if items.is_empty() {
        empty.to_owned()
    } else {
        items.join(", ")
    }
}

/// `qleetos:tenant:<management namespace>`.
pub fn tenant_identity(namespace: &str) -> String {
    format!("qleetos:tenant:{namespace}")
}

fn default_grant() -> TenantPolicySpec {
    TenantPolicySpec {
        namespaces: Vec::new(),
        namespace_selector: None,
        runtimes: None,
        target_namespaces: vec![OWN_NAMESPACE.to_owned()],
        namespaced_kinds: Vec::new(),
        cluster_kinds: Vec::new(),
        allow_adoption: false,
        tenant_role: None,
        capabilities: None,
        service_profiles: None,
        runtime_profiles: Some(Vec::new()),
        hosts: None,
        chart_repositories: None,
        pod_security: None,
        allow_inline_secrets: false,
        require_plan_approval: false,
        placement_preferences: None,
        limits: None,
    }
}

/// The management namespaces `spec` selects among `namespaces` (name, labels), sorted; an
/// invalid `namespaceSelector` is an error saying why (the policy then selects by name only).
pub fn selected_namespaces<'a>(
    spec: &TenantPolicySpec,
    namespaces: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> Result<Vec<String>, String> {
    let selector = spec
        .namespace_selector
        .clone()
        .map(Selector::try_from)
        .transpose()
        .map_err(|e| format!("spec.namespaceSelector is invalid: {e}"))?;
    let mut selected: Vec<String> = namespaces
        .into_iter()
        .filter(|(name, labels)| {
            spec.namespaces.iter().any(|n| n == name)
                || selector.as_ref().is_some_and(|s| s.matches(labels))
        })
        .map(|(name, _)| name.to_owned())
        .collect();
    selected.sort();
    Ok(selected)
}

fn selects(spec: &TenantPolicySpec, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
    let by_name = spec.namespaces.iter().any(|n| n == namespace);
    by_name || selected_namespaces(spec, [(namespace, labels)]).is_ok_and(|s| !s.is_empty())
}

fn grant_allows_runtime(grant: &Grant, runtime: &KubernetesRuntime) -> bool {
    let Some(rule) = &grant.spec.runtimes else {
        return true;
    };
    if !rule.regions.is_empty() && !rule.regions.contains(&runtime.spec.region) {
        return false;
    }
    let Some(selector) = &rule.runtime_selector else {
        return true;
    };
    let labels = runtime.metadata.labels.clone().unwrap_or_default();
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(&labels))
}

fn describe_runtimes(grant: &Grant) -> String {
    let Some(rule) = &grant.spec.runtimes else {
        return "any runtime".to_owned();
    };
    let mut parts = Vec::new();
    if !rule.regions.is_empty() {
        parts.push(format!("regions {}", rule.regions.join(", ")));
    }
    if let Some(selector) = &rule.runtime_selector {
        let labels = selector.match_labels.clone().unwrap_or_default();
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("runtimes labelled {}", labels.join(",")));
    }
    if parts.is_empty() {
        "any runtime".to_owned()
    } else {
        parts.join(" and ")
    }
}

fn kind_listed(rules: &[KindRule], target: &Target<'_>) -> bool {
    rules.iter().any(|r| r.matches(target.group, target.kind))
}

fn kind_of(target: &Target<'_>) -> String {
    if target.group.is_empty() {
        target.kind.to_owned()
    } else {
        format!("{}.{}", target.kind, target.group)
    }
}

fn describe_kind_rule(rule: &KindRule) -> String {
    if rule.group.is_empty() {
        rule.kind.clone()
    } else {
        format!("{}.{}", rule.kind, rule.group)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use qleetos_crds::RuntimeRule;

    use super::*;

    fn policy(name: &str, spec: TenantPolicySpec) -> TenantPolicy {
        TenantPolicy::new(name, spec)
    }

    fn spec_for(namespaces: &[&str]) -> TenantPolicySpec {
        TenantPolicySpec {
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            ..default_grant()
        }
    }

    fn fence(policies: &[TenantPolicy]) -> Fence {
        Fence::for_namespace(policies, "team-a", &BTreeMap::new(), "qleetos-system")
    }

    fn namespaced<'a>(kind: &'a str, namespace: &'a str) -> Target<'a> {
        Target {
            group: "",
            kind,
            namespace: Some(namespace),
            name: "x",
        }
    }

    fn cluster_role_binding() -> Target<'static> {
        Target {
            group: "rbac.authorization.k8s.io",
            kind: "ClusterRoleBinding",
            namespace: None,
            name: "escalate",
        }
    }

    fn runtime(name: &str, region: &str, labels: &[(&str, &str)]) -> KubernetesRuntime {
        let mut runtime: KubernetesRuntime = serde_json::from_value(serde_json::json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntime",
            "metadata": {"name": name},
            "spec": {"provider": "local", "region": region, "connection": {"kubeconfigSecretRef": {"namespace": "qleetos-system", "name": name}}}
        }))
        .expect("runtime");
        runtime.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        runtime
    }

    #[test]
    fn default_allows_namespaced_kinds_in_the_own_namespace_only() {
        let fence = fence(&[]);
        assert!(fence.check(&namespaced("ConfigMap", "team-a")).is_ok());
        let other = fence
            .check(&namespaced("ConfigMap", "team-b"))
            .expect_err("other tenant");
        assert_eq!(other.rule, "TargetNamespace");
        assert!(
            other.message.contains("allowed runtime namespaces: team-a"),
            "{other}"
        );
        assert!(other.message.contains("no TenantPolicy"), "{other}");
        let cluster = fence.check(&cluster_role_binding()).expect_err("cluster");
        assert_eq!(cluster.rule, "ClusterScopedKind");
        assert!(
            cluster
                .message
                .contains("ClusterRoleBinding.rbac.authorization.k8s.io escalate"),
            "{cluster}"
        );
    }

    #[test]
    fn service_profiles_are_open_by_default_and_limited_by_a_policy_listing_them() {
        assert!(fence(&[]).check_service_profile("ethereum-rpc").is_ok());
        let only_postgres = policy(
            "db-only",
            TenantPolicySpec {
                service_profiles: Some(vec!["postgres".into()]),
                ..spec_for(&["team-a"])
            },
        );
        let fence = fence(&[only_postgres]);
        assert!(fence.check_service_profile("postgres").is_ok());
        let refused = fence
            .check_service_profile("ethereum-rpc")
            .expect_err("not listed");
        assert_eq!(refused.rule, "ServiceProfile");
        assert!(
            refused
                .message
                .contains("may not use ServiceProfile ethereum-rpc; allowed: postgres"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn capabilities_are_open_by_default_and_limited_by_any_policy_listing_them() {
        let needs = ["tls".to_owned(), "dns".to_owned()];
        assert!(fence(&[]).check_capabilities(&needs).is_ok());
        let tls_only = policy(
            "tls-only",
            TenantPolicySpec {
                capabilities: Some(vec!["tls".into(), "ingress".into()]),
                ..spec_for(&["team-a"])
            },
        );
        let refused = fence(std::slice::from_ref(&tls_only))
            .check_capabilities(&needs)
            .expect_err("dns is not listed");
        assert_eq!(refused.rule, "Capability");
        assert!(
            refused
                .message
                .contains("may not need dns; allowed: ingress, tls (TenantPolicy tls-only)"),
            "{refused}"
        );
        let open = policy("open", spec_for(&["team-a"]));
        assert!(fence(&[tls_only, open]).check_capabilities(&needs).is_ok());
        let none = policy(
            "none",
            TenantPolicySpec {
                capabilities: Some(Vec::new()),
                ..spec_for(&["team-a"])
            },
        );
        let refused = fence(&[none])
            .check_capabilities(&needs[..1])
            .expect_err("none allowed");
        assert!(refused.message.contains("allowed: none"), "{refused}");
    }

    #[test]
    fn protected_namespaces_need_an_exact_entry() {
        let wide = policy(
            "wide",
            TenantPolicySpec {
                target_namespaces: vec!["kube-*".into(), "*".into(), "qleetos-*".into()],
                ..spec_for(&["team-a"])
            },
        );
        let fence = fence(&[wide]);
        for protected in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "qleetos-system",
        ] {
            assert!(
                fence.check(&namespaced("ConfigMap", protected)).is_err(),
                "{protected}"
            );
        }
        assert!(fence.check(&namespaced("ConfigMap", "anything")).is_ok());
        let exact = policy(
            "exact",
            TenantPolicySpec {
                target_namespaces: vec!["kube-system".into()],
                ..spec_for(&["team-a"])
            },
        );
        assert!(
            self::fence(&[exact])
                .check(&namespaced("ConfigMap", "kube-system"))
                .is_ok()
        );
    }

    #[test]
    fn a_policy_replaces_the_default_and_policies_add_up() {
        let shared = policy(
            "shared",
            TenantPolicySpec {
                target_namespaces: vec!["shared-*".into()],
                namespaced_kinds: vec![KindRule {
                    group: String::new(),
                    kind: "ConfigMap".into(),
                }],
                ..spec_for(&["team-a"])
            },
        );
        let crb = policy(
            "crb",
            TenantPolicySpec {
                cluster_kinds: vec![KindRule {
                    group: "rbac.authorization.k8s.io".into(),
                    kind: "*".into(),
                }],
                ..spec_for(&["team-a"])
            },
        );
        let fence = fence(&[shared, crb]);
        assert!(fence.check(&namespaced("ConfigMap", "shared-1")).is_ok());
        assert_eq!(
            fence
                .check(&namespaced("Secret", "shared-1"))
                .expect_err("kind")
                .rule,
            "NamespacedKind"
        );
        assert!(
            fence.check(&namespaced("Secret", "team-a")).is_ok(),
            "crb grant allows own namespace"
        );
        assert!(fence.check(&cluster_role_binding()).is_ok());
    }

    #[test]
    fn policies_select_by_name_or_label() {
        let by_label = policy(
            "by-label",
            TenantPolicySpec {
                namespaces: Vec::new(),
                namespace_selector: Some(LabelSelector {
                    match_labels: Some([("tier".to_owned(), "gold".to_owned())].into()),
                    ..Default::default()
                }),
                target_namespaces: vec!["gold-*".into()],
                ..default_grant()
            },
        );
        let gold = BTreeMap::from([("tier".to_owned(), "gold".to_owned())]);
        let selected = Fence::for_namespace(
            std::slice::from_ref(&by_label),
            "team-a",
            &gold,
            "qleetos-system",
        );
        assert!(selected.check(&namespaced("ConfigMap", "gold-1")).is_ok());
        let unselected =
            Fence::for_namespace(&[by_label], "team-a", &BTreeMap::new(), "qleetos-system");
        assert!(
            unselected
                .check(&namespaced("ConfigMap", "gold-1"))
                .is_err()
        );
        assert!(unselected.check(&namespaced("ConfigMap", "team-a")).is_ok());
    }

    #[test]
    fn runtimes_are_limited_by_region_and_labels() {
        let eu_only = policy(
            "eu",
            TenantPolicySpec {
                runtimes: Some(RuntimeRule {
                    regions: vec!["eu-west-1".into()],
                    runtime_selector: Some(LabelSelector {
                        match_labels: Some([("tier".to_owned(), "shared".to_owned())].into()),
                        ..Default::default()
                    }),
                }),
                ..spec_for(&["team-a"])
            },
        );
        let fence = fence(&[eu_only]);
        assert!(fence.allows_runtime(&runtime("eu", "eu-west-1", &[("tier", "shared")])));
        assert!(!fence.allows_runtime(&runtime("eu2", "eu-west-1", &[])));
        assert!(!fence.allows_runtime(&runtime("us", "us-east-1", &[("tier", "shared")])));
        let violation = fence.runtime_violation("us");
        assert!(
            violation
                .message
                .contains("regions eu-west-1 and runtimes labelled tier=shared"),
            "{violation}"
        );
        assert!(self::fence(&[]).allows_runtime(&runtime("us", "us-east-1", &[])));
    }

    #[test]
    fn tenant_role_defaults_to_admin_and_can_be_disabled() {
        assert_eq!(fence(&[]).tenant_role("team-a").as_deref(), Some("admin"));
        assert_eq!(fence(&[]).tenant_role("team-b"), None);
        let none = policy(
            "none",
            TenantPolicySpec {
                tenant_role: Some(String::new()),
                ..spec_for(&["team-a"])
            },
        );
        assert_eq!(self::fence(&[none]).tenant_role("team-a"), None);
        assert_eq!(fence(&[]).identity(), "qleetos:tenant:team-a");
    }

    #[test]
    fn without_a_policy_no_host_and_no_provisioning() {
        let fence = fence(&[]);
        let host = fence.check_host("shop.qleetos.test").expect_err("no host");
        assert_eq!(host.rule, "Host");
        assert!(
            host.message
                .contains("may not use host shop.qleetos.test; granted hosts: none"),
            "{host}"
        );
        assert!(fence.check_runtime_profile("local").is_err());
        let chart = fence
            .check_chart_repository("http://169.254.169.254/latest")
            .expect_err("no chart repository");
        assert_eq!(chart.rule, "ChartRepository");
        assert!(
            chart.message.contains("allowed chart repositories: none"),
            "{chart}"
        );
        assert!(!fence.allows_inline_secrets());
        assert_eq!(fence.pod_security("team-a"), PodSecurityLevel::Baseline);
    }

    #[test]
    fn granted_domains_cover_names_and_wildcards_only_when_granted_so() {
        let grant = |hosts: &[&str]| TenantPolicySpec {
            hosts: Some(hosts.iter().map(|h| (*h).to_owned()).collect()),
            ..spec_for(&["team-a"])
        };
        let fence = fence(&[
            policy("shop", grant(&["shop.example.com"])),
            policy("team", grant(&["*.team-a.example.com"])),
        ]);
        assert!(fence.check_host("shop.example.com").is_ok());
        assert!(fence.check_host("api.team-a.example.com").is_ok());
        assert!(fence.check_host("*.team-a.example.com").is_ok());
        let wildcard = fence.check_host("*.example.com").expect_err("not granted");
        assert!(
            wildcard
                .message
                .contains("granted hosts: *.team-a.example.com, shop.example.com"),
            "{wildcard}"
        );
    }

    #[test]
    fn granted_chart_repositories_cover_what_is_below_them() {
        let granted = TenantPolicySpec {
            chart_repositories: Some(vec!["https://charts.example.com/team-a".into()]),
            ..spec_for(&["team-a"])
        };
        let fence = fence(&[policy("charts", granted)]);
        assert!(
            fence
                .check_chart_repository("https://charts.example.com/team-a/stable")
                .is_ok()
        );
        let other = fence
            .check_chart_repository("https://charts.example.com/team-b")
            .expect_err("not granted");
        assert!(
            other
                .message
                .contains("allowed chart repositories: https://charts.example.com/team-a"),
            "{other}"
        );
    }

    #[test]
    fn support_service_namespaces_are_never_targets_even_when_listed() {
        let listed = policy(
            "c-star",
            TenantPolicySpec {
                target_namespaces: vec!["c*".into(), "cert-manager".into()],
                ..spec_for(&["team-a"])
            },
        );
        let fence = fence(&[listed]).with_reserved_namespaces(vec!["cert-manager".into()]);
        assert!(fence.check(&namespaced("Pod", "cache")).is_ok());
        let refused = fence
            .check(&namespaced("Pod", "cert-manager"))
            .expect_err("reserved");
        assert_eq!(refused.rule, "TargetNamespace");
        assert!(
            refused.message.contains("installs a support service"),
            "{refused}"
        );
        assert_eq!(fence.tenant_role("cert-manager"), None);
    }

    #[test]
    fn levels_and_limits_come_from_the_policies() {
        let privileged = policy(
            "privileged",
            TenantPolicySpec {
                pod_security: Some(PodSecurityLevel::Privileged),
                limits: Some(TenantLimits {
                    max_placements: Some(5),
                    max_manifests: None,
                }),
                ..spec_for(&["team-a"])
            },
        );
        let capped = policy(
            "capped",
            TenantPolicySpec {
                limits: Some(TenantLimits {
                    max_placements: Some(2),
                    max_manifests: Some(10),
                }),
                allow_adoption: true,
                target_namespaces: vec!["legacy".into()],
                ..spec_for(&["team-a"])
            },
        );
        let fence = fence(&[privileged, capped]);
        assert_eq!(fence.pod_security("team-a"), PodSecurityLevel::Privileged);
        assert_eq!(fence.pod_security("legacy"), PodSecurityLevel::Baseline);
        let limits = fence.limits();
        assert_eq!(limits.max_placements, Some(2));
        assert_eq!(limits.max_manifests, Some(10));
        assert!(fence.adopts_namespace("legacy"));
        assert!(!fence.adopts_namespace("team-a"));
    }

    #[test]
    fn a_provisioned_runtime_is_only_for_namespaces_that_may_provision_from_its_profile() {
        let mut provisioned = runtime("local-local-1", "local-1", &[]);
        provisioned.spec.provisioning =
            serde_json::from_value(serde_json::json!({"profileRef": {"name": "local"}}))
                .expect("provisioning");
        assert!(!fence(&[]).allows_runtime(&provisioned));
        let granted = policy(
            "local",
            TenantPolicySpec {
                runtime_profiles: Some(vec!["local".into()]),
                ..spec_for(&["team-a"])
            },
        );
        assert!(fence(&[granted]).allows_runtime(&provisioned));
    }
}
