//! The parts of a runtime a tenant lives in: namespaces QleetOS created for one management
//! namespace (labelled so, under a Pod Security level), and the admission policy refusing
//! the node and network escapes Pod Security does not cover.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use qleetos_crds::{FIELD_MANAGER, PodSecurityLevel};
use serde_json::json;

use super::RuntimeClient;
use crate::error::{Error, Result};
use crate::render::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::tenancy::TENANT_GROUP;

/// Label naming the management namespace a runtime namespace was created for.
pub const TENANT_LABEL: &str = "qleetos.io/tenant";
/// Name of the admission policy (and its binding) guarding every runtime from tenants.
pub const TENANT_GUARD: &str = "qleetos-tenant-guard";
const POD_SECURITY_MODES: [&str; 3] = ["enforce", "warn", "audit"];
/// How often, and how many times, a pass checks that a new guard is enforced.
const GUARD_CHECK_INTERVAL: Duration = Duration::from_millis(250);
const GUARD_CHECKS: usize = 20;
/// How long after its creation a guard found as QleetOS writes it is trusted without a probe
/// (the API server loads a new policy within a second or two).
const GUARD_SETTLED: i64 = 30;
/// Annotation carrying the digest of the guard as QleetOS writes it.
const GUARD_DIGEST: &str = "qleetos.io/guard-digest";

/// Who a runtime namespace is for, and how it is kept.
#[derive(Debug, Clone, Copy)]
pub struct TenantNamespace<'a> {
    /// The management namespace.
    pub tenant: &'a str,
    pub pod_security: PodSecurityLevel,
    /// Whether a namespace QleetOS did not create may become the tenant's (a policy names
    /// it exactly and allows adoption).
    pub adopt: bool,
}

impl TenantNamespace<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        let level = self.pod_security.as_str();
        let mut labels: BTreeMap<String, String> = POD_SECURITY_MODES
            .iter()
            .map(|mode| {
                (
                    format!("pod-security.kubernetes.io/{mode}"),
                    level.to_owned(),
                )
            })
            .collect();
        labels.insert(
            "pod-security.kubernetes.io/enforce-version".to_owned(),
            "latest".to_owned(),
        );
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned());
        labels.insert(TENANT_LABEL.to_owned(), self.tenant.to_owned());
        labels
    }
}

impl RuntimeClient {
    /// Creates runtime namespace `name` for `tenant`, or checks that the existing one was
    /// created for it (and keeps its Pod Security labels current). A namespace QleetOS did
    /// not create for this tenant is refused unless `tenant.adopt`.
    pub async fn ensure_tenant_namespace(
        &self,
        name: &str,
        tenant: &TenantNamespace<'_>,
    ) -> Result<()> {
        let key = format!(
            "tenant-namespace/{name}/{}/{}",
            tenant.tenant,
            tenant.pod_security.as_str()
        );
        if self.is_ensured(&key) {
            return Ok(());
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let live = namespaces
            .get_opt(name)
            .await
            .map_err(|e| self.unreachable(e))?;
        let wanted = tenant.labels();
        match live {
            None => {
                let mut namespace = Namespace::default();
                namespace.metadata.name = Some(name.to_owned());
                namespace.metadata.labels = Some(wanted);
                match namespaces.create(&PostParams::default(), &namespace).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        return Err(Error::ApplyFailed(format!(
                            "runtime namespace {name} was created meanwhile on runtime {}; whose it is is checked again on the next pass",
                            self.name
                        )));
                    }
                    Err(e) => return Err(self.unreachable(e)),
                }
            }
            Some(live) => {
                let labels = live.metadata.labels.unwrap_or_default();
                let owner = labels.get(TENANT_LABEL).map(String::as_str);
                if owner != Some(tenant.tenant) && (owner.is_some() || !tenant.adopt) {
                    return Err(not_the_tenants(name, tenant.tenant));
                }
                if wanted.iter().any(|(k, v)| labels.get(k) != Some(v)) {
                    let patch = json!({"metadata": {"labels": wanted}});
                    namespaces
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| self.unreachable(e))?;
                }
            }
        }
        self.remember_ensured(key);
        Ok(())
    }

    /// Installs (once per connection) the admission policy refusing, for requests of the
    /// tenant group, what Pod Security levels do not cover: Services with `externalIPs`
    /// (CVE-2020-8554, traffic for any address intercepted). A guard found as QleetOS would
    /// write it, for longer than the API server takes to load one, is trusted as it is (a
    /// restarted operator writes nothing); otherwise it is applied and in place only once a
    /// dry-run Service with `externalIPs`, sent as `tenant` into `namespace`, is refused.
    pub async fn ensure_tenant_guard(&self, tenant: &RuntimeClient, namespace: &str) -> Result<()> {
        let key = "tenant-guard".to_owned();
        if self.is_ensured(&key) {
            return Ok(());
        }
        let (policy, binding) = tenant_guard()?;
        if self.guard_settled(&policy).await? {
            self.remember_ensured(key);
            return Ok(());
        }
        self.apply_guard(&policy, &binding).await?;
        for _ in 0..GUARD_CHECKS {
            match tenant.probe_guard(namespace).await? {
                Probe::Refused => {
                    self.remember_ensured(key);
                    return Ok(());
                }
                // Nothing to guard yet; the next pass probes again.
                Probe::TenantMayNotCreate => return Ok(()),
                Probe::Admitted => tokio::time::sleep(GUARD_CHECK_INTERVAL).await,
            }
        }
        Err(Error::ApplyFailed(format!(
            "admission policy {TENANT_GUARD} is not enforced yet on runtime {}; nothing is applied until it is",
            self.name
        )))
    }

    /// Whether the live guard and its binding carry the digest of `wanted` and the policy
    /// is older than [`GUARD_SETTLED`].
    async fn guard_settled(&self, wanted: &ValidatingAdmissionPolicy) -> Result<bool> {
        let policies = Api::<ValidatingAdmissionPolicy>::all(self.client.clone());
        let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone());
        let unreachable = |e| self.unreachable(e);
        let Some(live) = policies.get_opt(TENANT_GUARD).await.map_err(unreachable)? else {
            return Ok(false);
        };
        let Some(live_binding) = bindings.get_opt(TENANT_GUARD).await.map_err(unreachable)? else {
            return Ok(false);
        };
        let digest = wanted.annotations().get(GUARD_DIGEST);
        let settled = live
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|created| {
                chrono::Utc::now().timestamp() - created.0.as_second() >= GUARD_SETTLED
            });
        Ok(settled
            && live.annotations().get(GUARD_DIGEST) == digest
            && live_binding.annotations().get(GUARD_DIGEST) == digest)
    }

    async fn apply_guard(
        &self,
        policy: &ValidatingAdmissionPolicy,
        binding: &ValidatingAdmissionPolicyBinding,
    ) -> Result<()> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let failed = |e: kube::Error| match e {
            kube::Error::Api(status) => Error::ApplyFailed(format!(
                "installing admission policy {TENANT_GUARD} on runtime {}: {}",
                self.name, status.message
            )),
            other => self.unreachable(other),
        };
        Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .patch(TENANT_GUARD, &params, &Patch::Apply(policy))
            .await
            .map_err(failed)?;
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .patch(TENANT_GUARD, &params, &Patch::Apply(binding))
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// What a dry-run Service with `externalIPs` meets (nothing is stored).
    async fn probe_guard(&self, namespace: &str) -> Result<Probe> {
        let probe: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "qleetos-guard-probe"},
            "spec": {"ports": [{"port": 80}], "externalIPs": ["192.0.2.1"]},
        }))
        .map_err(|e| Error::ApplyFailed(format!("guard probe: {e}")))?;
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        match Api::<Service>::namespaced(self.client.clone(), namespace)
            .create(&dry_run, &probe)
            .await
        {
            Ok(_) => Ok(Probe::Admitted),
            Err(kube::Error::Api(status)) if status.message.contains(TENANT_GUARD) => {
                Ok(Probe::Refused)
            }
            // Admission passed; only the name was taken.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Probe::Admitted),
            Err(kube::Error::Api(status)) if status.code == 403 => Ok(Probe::TenantMayNotCreate),
            Err(kube::Error::Api(status)) => Err(Error::ApplyFailed(format!(
                "checking admission policy {TENANT_GUARD} on runtime {}: {}",
                self.name, status.message
            ))),
            Err(other) => Err(self.unreachable(other)),
        }
    }
}

/// What the guard's probe met.
enum Probe {
    /// The guard refused it: enforced.
    Refused,
    /// Admitted: the guard is not enforced yet.
    Admitted,
    /// RBAC refused the tenant any Service there (for now): nothing to guard.
    TenantMayNotCreate,
}

fn not_the_tenants(name: &str, tenant: &str) -> Error {
    Error::TenancyViolation(format!(
        "nothing applied: runtime namespace {name} exists and was not created by QleetOS for namespace {tenant}; target another namespace, or ask operations for a TenantPolicy naming {name} exactly in targetNamespaces with allowAdoption (NamespaceOwner)"
    ))
}

fn tenant_guard() -> Result<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)> {
    let labels = json!({ MANAGED_BY_LABEL: MANAGED_BY_VALUE });
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": TENANT_GUARD, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["services"]
            }]},
            "matchConditions": [{
                "name": "tenant-requests",
                "expression": format!("request.userInfo.groups.exists(g, g == '{TENANT_GROUP}')"),
            }],
            "validations": [{
                "expression": "!has(object.spec.externalIPs) || size(object.spec.externalIPs) == 0",
                "message": "spec.externalIPs is not allowed for QleetOS tenants (CVE-2020-8554: it intercepts traffic for any address)",
                "reason": "Forbidden",
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": TENANT_GUARD, "labels": labels},
        "spec": {"policyName": TENANT_GUARD, "validationActions": ["Deny"]},
    });
    let digest = super::digest_of(&serde_json::Map::from_iter([(
        "guard".to_owned(),
        json!([&policy, &binding]),
    )]));
    let (mut policy, mut binding) = (policy, binding);
    policy["metadata"]["annotations"] = json!({ GUARD_DIGEST: digest });
    binding["metadata"]["annotations"] = json!({ GUARD_DIGEST: digest });
    let malformed = |e: serde_json::Error| Error::ApplyFailed(format!("{TENANT_GUARD}: {e}"));
    Ok((
        serde_json::from_value(policy).map_err(malformed)?,
        serde_json::from_value(binding).map_err(malformed)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_namespaces_carry_their_tenant_and_pod_security_level() {
        let labels = TenantNamespace {
            tenant: "team-a",
            pod_security: PodSecurityLevel::Baseline,
            adopt: false,
        }
        .labels();
        assert_eq!(labels[TENANT_LABEL], "team-a");
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "baseline");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    }

    #[test]
    fn the_guard_is_scoped_to_tenant_requests() {
        let (policy, binding) = tenant_guard().expect("valid objects");
        let spec = policy.spec.expect("spec");
        let condition = &spec.match_conditions.expect("conditions")[0];
        assert!(condition.expression.contains(TENANT_GROUP));
        assert_eq!(binding.spec.policy_name, TENANT_GUARD);
    }
}
