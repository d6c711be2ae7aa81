//! What one SupportService installs, from either kind of profile: a SupportServiceProfile
//! (a support service in its own namespace) or a ServiceProfile (a back-end service in the
//! namespace of the workloads it serves). The SupportService Qleet installs, judges and
//! removes both the same way; this is where they differ.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use qleetos_crds::template::{TENANT_VARIABLE_PREFIX, Variables};
use qleetos_crds::{
    ChartStatus, HealthCheck, KubernetesRuntime, Manifest, RemovalPolicy, ServiceProfile,
    ServiceTarget, ServiceUnit, SupportService, SupportServiceProfile,
};
use serde_json::{Value, json};

use super::services::variables;
use crate::chart::{Request, credentials_for};
use crate::context::Context;
use crate::controllers::profile::revisions;
use crate::engine::Retention;
use crate::error::{Error, Result};
use crate::runtime_client::RuntimeClient;

/// The profile of a SupportService, with the unit it installs for a back-end service.
#[derive(Debug, Clone)]
pub enum Source {
    Support(Arc<SupportServiceProfile>),
    Service(Arc<ServiceProfile>, ServiceUnit),
}

impl Source {
    /// The service's profile from the cache; `None` when it does not exist.
    pub fn of(service: &SupportService, ctx: &Context) -> Option<Self> {
        let name = &service.spec.profile_ref.name;
        match &service.spec.service {
            None => ctx
                .caches
                .profiles
                .get(&ObjectRef::new(name))
                .map(Source::Support),
            Some(unit) => ctx
                .caches
                .service_profiles
                .get(&ObjectRef::new(name))
                .map(|profile| Source::Service(profile, unit.clone())),
        }
    }

    /// The service's profile at the revision its spec names (from its ControllerRevision when
    /// that is not the profile's current spec), and the revision installed; `None` when the
    /// profile does not exist.
    pub async fn at_revision(
        service: &SupportService,
        ctx: &Context,
    ) -> Result<Option<(Self, Option<i64>)>> {
        let Some(source) = Self::of(service, ctx) else {
            return Ok(None);
        };
        let Source::Support(profile) = &source else {
            return Ok(Some((source, None)));
        };
        let status = profile.status.clone().unwrap_or_default();
        let hash = revisions::spec_hash(&profile.spec);
        let current = status
            .revision
            .filter(|_| status.revision_hash.as_deref() == Some(hash.as_str()));
        let wanted = match service.spec.revision {
            Some(wanted) if Some(wanted) != current => wanted,
            _ => return Ok(Some((source, current))),
        };
        let Some(spec) = revisions::spec_of(profile, wanted, ctx).await? else {
            return Err(Error::RevisionNotFound {
                kind: "SupportServiceProfile",
                name: service.spec.profile_ref.name.clone(),
                revision: wanted,
            });
        };
        let earlier = SupportServiceProfile {
            spec,
            ..(**profile).clone()
        };
        Ok(Some((Source::Support(Arc::new(earlier)), Some(wanted))))
    }

    /// `SupportServiceProfile` or `ServiceProfile`.
    pub fn profile_kind(service: &SupportService) -> &'static str {
        if service.spec.service.is_some() {
            "ServiceProfile"
        } else {
            "SupportServiceProfile"
        }
    }

    pub fn requires(&self) -> &[String] {
        match self {
            Source::Support(profile) => &profile.spec.requires,
            Source::Service(profile, _) => &profile.spec.requires,
        }
    }

    /// The profiles of what it requires, in order, checking their chains for cycles and
    /// missing providers.
    pub fn required(
        &self,
        profiles: &[Arc<SupportServiceProfile>],
    ) -> Result<Vec<Arc<SupportServiceProfile>>> {
        match self {
            Source::Support(profile) => super::required_by(profile, profiles),
            Source::Service(profile, _) => profile
                .spec
                .requires
                .iter()
                .map(|capability| {
                    let provider = super::provider_of(capability, profiles)?;
                    super::required_by(&provider, profiles)?;
                    Ok(provider)
                })
                .collect(),
        }
    }

    /// What becomes of the service once nobody uses it.
    pub fn retention(&self) -> Retention {
        let (policy, grace) = match self {
            Source::Support(p) => (p.spec.removal_policy, p.spec.grace_period_seconds),
            Source::Service(p, _) => (RemovalPolicy::WhenUnused, p.spec.grace_period_seconds),
        };
        match policy {
            RemovalPolicy::Retain => Retention::Keep,
            RemovalPolicy::WhenUnused => {
                Retention::RemoveAfter(Duration::from_secs(u64::from(grace)))
            }
        }
    }

    pub fn generation(&self) -> Option<i64> {
        match self {
            Source::Support(p) => p.metadata.generation,
            Source::Service(p, _) => p.metadata.generation,
        }
    }

    /// Whether its objects go to the management cluster (a ServiceProfile with
    /// `target: Management`) rather than the runtime.
    pub fn in_management(&self) -> bool {
        matches!(self, Source::Service(p, _) if p.spec.target == ServiceTarget::Management)
    }

    /// The runtime namespace namespaced objects go to.
    pub fn namespace(&self) -> &str {
        match self {
            Source::Support(p) => &p.spec.namespace,
            Source::Service(_, unit) => &unit.namespace,
        }
    }

    /// For a back-end service, the only namespace its objects may be in (the workloads'
    /// namespace is theirs, not the service's: it is neither created in the inventory nor
    /// removed with it).
    pub fn confined_to(&self) -> Option<&str> {
        match self {
            Source::Support(_) => None,
            Source::Service(_, unit) => Some(&unit.namespace),
        }
    }

    /// The profile's variables for `runtime`.
    pub fn variables(&self, runtime: &KubernetesRuntime) -> Variables {
        match self {
            Source::Support(_) => super::runtime_variables(runtime),
            Source::Service(_, unit) => variables(unit, runtime),
        }
    }

    /// The variables that may name what the operator itself reads (a Secret, a health
    /// check's object): without a tenant's `parameters.*`, which may only fill values.
    fn operator_variables(&self, runtime: &KubernetesRuntime) -> Variables {
        self.variables(runtime)
            .without_prefix(TENANT_VARIABLE_PREFIX)
    }

    /// The objects to apply, variables replaced; a support service's namespace first, so it
    /// is created first, recorded in the inventory and removed last.
    pub fn manifests(&self, runtime: &KubernetesRuntime) -> Vec<Manifest> {
        let vars = self.variables(runtime);
        let manifests = match self {
            Source::Support(p) => with_namespace_first(&p.spec.namespace, &p.spec.manifests),
            Source::Service(p, _) => p.spec.manifests.clone(),
        };
        manifests
            .into_iter()
            .map(|manifest| {
                let mut value = Value::Object(manifest.0);
                vars.substitute(&mut value);
                match value {
                    Value::Object(map) => Manifest(map),
                    _ => Manifest::default(),
                }
            })
            .collect()
    }

    /// The objects to apply: [`Self::manifests`], or the profile's chart rendered for the
    /// runtime `client` reaches (its string values with the variables replaced), with a
    /// support service's namespace first; and what was rendered.
    pub async fn objects(
        &self,
        runtime: &KubernetesRuntime,
        ctx: &Context,
        client: &RuntimeClient,
    ) -> Result<(Vec<Manifest>, Option<ChartStatus>)> {
        let (chart, release) = match self {
            Source::Support(p) => (
                p.spec.chart.as_ref(),
                p.metadata.name.clone().unwrap_or_default(),
            ),
            Source::Service(p, unit) => (p.spec.chart.as_ref(), unit.name.clone()),
        };
        let Some(chart) = chart else {
            return Ok((self.manifests(runtime), None));
        };
        let charts = ctx.charts()?;
        let mut values = chart.values.clone().unwrap_or_default();
        self.variables(runtime).substitute_values(&mut values);
        let credentials =
            credentials_for(&ctx.client, &ctx.settings.system_namespace, chart, None).await?;
        let request = Request {
            chart,
            values,
            release: chart.release_name.as_deref().unwrap_or(&release),
            namespace: self.namespace(),
            credentials,
        };
        let rendered = charts.render(&request, client).await?;
        let manifests = match self {
            Source::Support(p) => with_namespace_first(&p.spec.namespace, &rendered.manifests),
            Source::Service(..) => rendered.manifests,
        };
        Ok((manifests, Some(rendered.status)))
    }

    /// The health checks, variables replaced; a service's default to its namespace.
    pub fn health_checks(&self, runtime: &KubernetesRuntime) -> Vec<HealthCheck> {
        match self {
            Source::Support(p) => p.spec.health_checks.clone(),
            Source::Service(p, unit) => {
                let vars = self.operator_variables(runtime);
                p.spec
                    .health_checks
                    .iter()
                    .map(|check| HealthCheck {
                        name: vars.expand_text(&check.name),
                        namespace: Some(
                            check
                                .namespace
                                .as_deref()
                                .map_or_else(|| unit.namespace.clone(), |n| vars.expand_text(n)),
                        ),
                        ..check.clone()
                    })
                    .collect()
            }
        }
    }

    /// The Secret a back-end service must have written before it is Ready, with the keys.
    pub fn exported_secret(&self, runtime: &KubernetesRuntime) -> Option<(String, Vec<String>)> {
        let Source::Service(profile, _) = self else {
            return None;
        };
        let export = profile.spec.connection.from_secret.as_ref()?;
        let name = self.operator_variables(runtime).expand_text(&export.name);
        Some((name, export.keys.clone()))
    }
}

/// `manifests` with Namespace `namespace` first, unless they declare it.
fn with_namespace_first(namespace: &str, manifests: &[Manifest]) -> Vec<Manifest> {
    let declared = manifests
        .iter()
        .any(|m| m.kind() == Some("Namespace") && m.name() == Some(namespace));
    let mut all = Vec::with_capacity(manifests.len() + 1);
    if !declared
        && let Value::Object(map) = json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace },
        })
    {
        all.push(Manifest(map));
    }
    all.extend(manifests.iter().cloned());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(parameters: Value) -> (Source, KubernetesRuntime) {
        let spec = serde_json::from_value(json!({
            "parameters": [{ "name": "db", "type": "string", "default": "x" }],
            "manifests": [],
            "healthChecks": [{ "apiVersion": "v1", "kind": "Pod", "name": "$(parameters.db)-$(service.name)",
                               "namespace": "$(parameters.db)", "type": "Ready" }],
            "connection": { "fromSecret": { "name": "$(parameters.db)-$(runtime.name)", "keys": ["URL"] } },
        }))
        .expect("spec");
        let unit = serde_json::from_value(json!({
            "namespace": "team-a", "name": "db-1", "parameters": parameters,
        }))
        .expect("unit");
        let runtime = serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntime",
            "metadata": { "name": "lab-1" },
            "spec": { "provider": "local", "region": "eu",
                      "connection": { "kubeconfigSecretRef": { "namespace": "qleetos-system", "name": "lab-1" } } },
        }))
        .expect("runtime");
        let profile = Arc::new(ServiceProfile::new("postgres", spec));
        (Source::Service(profile, unit), runtime)
    }

    #[test]
    fn a_tenant_parameter_does_not_name_the_secret_or_the_checked_object() {
        let (source, runtime) = source(json!({ "db": "admin-credentials" }));
        let (secret, keys) = source.exported_secret(&runtime).expect("secret");
        assert_eq!(secret, "$(parameters.db)-lab-1");
        assert_eq!(keys, vec!["URL"]);
        let check = &source.health_checks(&runtime)[0];
        assert_eq!(check.name, "$(parameters.db)-db-1");
        assert_eq!(check.namespace.as_deref(), Some("$(parameters.db)"));
    }

    #[test]
    fn the_namespace_comes_first_unless_declared() {
        let all = with_namespace_first("cert-manager", &[]);
        assert_eq!(all[0].kind(), Some("Namespace"));
        assert_eq!(with_namespace_first("cert-manager", &all).len(), 1);
    }
}
