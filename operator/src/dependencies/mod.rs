//! The dependency engine: for one placement, what its runtime must provide before the
//! workload's objects are applied, the SupportServices providing it (created on first
//! need), how far each is, and what each contributes to the generated objects.
//!
//! Order of a placement: runtime Ready → every needed support service (and, through each
//! service's own `requires`, theirs) Ready → generated route/certificate/DNS objects and the
//! workload's manifests applied → health, including the generated objects' conditions.

pub mod connection;
pub mod generated;
pub mod planned;
pub mod providers;
pub mod services;
pub mod source;

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use qleetos_crds::Reason;
use qleetos_crds::template::Variables;
use qleetos_crds::{
    Conditions, DependencyState, DependencyStatus, KubernetesRuntime, NameRef, SupportService,
    SupportServiceProfile, SupportServiceSpec,
};

use crate::context::Context;
use crate::engine::writes::create_or_get;
use crate::error::Result;
use generated::Contributions;
pub use providers::{provider_of, required_by, support_service_name};

/// Where one owner's dependencies stand.
#[derive(Debug, Default)]
pub struct Needs {
    pub statuses: Vec<DependencyStatus>,
    pub contributions: Contributions,
}

impl Needs {
    /// `None` when every dependency is Ready; else the first one not Ready: the reason
    /// (`WaitingForSupportService` or `WaitingForService`) and what it waits on.
    pub fn waiting_on(&self, runtime: &str) -> Option<(Reason, String)> {
        self.statuses
            .iter()
            .find(|s| s.state != DependencyState::Ready)
            .map(|s| describe_wait(s, runtime))
    }
}

fn describe_wait(status: &DependencyStatus, runtime: &str) -> (Reason, String) {
    if let Some(dependency) = &status.dependency {
        let message = format!(
            "{dependency} ({}) on {runtime} is {} ({})",
            status.capability, status.state, status.message
        );
        return (Reason::WaitingForService, message);
    }
    let profile = status
        .name
        .strip_suffix(&format!(".{runtime}"))
        .unwrap_or(&status.name);
    let message = format!(
        "{profile} ({}) on {runtime} is {} ({})",
        status.capability, status.state, status.message
    );
    (Reason::WaitingForSupportService, message)
}

/// Makes sure a SupportService exists on `runtime` for each capability, and reports each.
/// `Err` for a capability no profile (or no single default profile) provides.
pub async fn ensure(ctx: &Context, capabilities: &[String], runtime: &str) -> Result<Needs> {
    let profiles = ctx.caches.profiles.state();
    let mut needs = Needs::default();
    for capability in capabilities {
        let profile = provider_of(capability, &profiles)?;
        let service = ensure_support_service(ctx, &profile, runtime).await?;
        needs.statuses.push(status_of(capability, &service));
        needs
            .contributions
            .insert(capability.clone(), profile.spec.workload_objects.clone());
    }
    Ok(needs)
}

/// A dependency's status as read from its SupportService.
pub fn status_of(capability: &str, service: &SupportService) -> DependencyStatus {
    let deleting = service.metadata.deletion_timestamp.is_some();
    DependencyStatus {
        capability: capability.to_owned(),
        kind: "SupportService".to_owned(),
        name: service.metadata.name.clone().unwrap_or_default(),
        state: if deleting {
            DependencyState::Removing
        } else {
            service.state()
        },
        message: if deleting {
            "being removed; it is installed again once the removal is done".to_owned()
        } else {
            service.message()
        },
        dependency: None,
        since: service
            .status
            .as_ref()
            .and_then(|s| s.condition(qleetos_crds::READY))
            .map(|c| c.last_transition_time.clone()),
    }
}

/// The SupportService installing `profile` into `runtime`, created when missing.
pub async fn ensure_support_service(
    ctx: &Context,
    profile: &SupportServiceProfile,
    runtime: &str,
) -> Result<SupportService> {
    let profile_name = profile.metadata.name.clone().unwrap_or_default();
    let name = support_service_name(&profile_name, runtime);
    if let Some(found) = ctx.caches.support_services.get(&ObjectRef::new(&name)) {
        return Ok((*found).clone());
    }
    let spec = SupportServiceSpec {
        profile_ref: NameRef { name: profile_name },
        runtime_ref: NameRef {
            name: runtime.to_owned(),
        },
        service: None,
        revision: crate::controllers::profile::rollout::initial_revision(profile, runtime, ctx),
    };
    create_service_object(ctx, &name, spec).await
}

/// Creates SupportService `name`, labelled with its profile and runtime; the existing one
/// when another replica created it first.
async fn create_service_object(
    ctx: &Context,
    name: &str,
    spec: SupportServiceSpec,
) -> Result<SupportService> {
    let api: Api<SupportService> = Api::all(ctx.client.clone());
    let mut wanted = SupportService::new(name, spec);
    wanted.metadata.labels = Some(
        [
            (
                PROFILE_LABEL.to_owned(),
                crate::names::label_value(&wanted.spec.profile_ref.name),
            ),
            (
                RUNTIME_LABEL.to_owned(),
                crate::names::label_value(&wanted.spec.runtime_ref.name),
            ),
        ]
        .into(),
    );
    let ensured = create_or_get(&api, &wanted).await?;
    if ensured.created {
        tracing::info!(support_service = %name, "created: first need on this runtime");
    }
    Ok(ensured.object)
}

/// `$(runtime.name)`, `$(runtime.region)`, `$(runtime.provider)`, `$(runtime.labels.<k>)`.
pub fn runtime_variables(runtime: &KubernetesRuntime) -> Variables {
    let mut vars = Variables::default();
    vars.insert(
        "runtime.name",
        runtime.metadata.name.clone().unwrap_or_default(),
    );
    vars.insert("runtime.region", runtime.spec.region.clone());
    vars.insert("runtime.provider", runtime.spec.provider.clone());
    for (key, value) in runtime.metadata.labels.iter().flatten() {
        vars.insert(format!("runtime.labels.{key}"), value.clone());
    }
    vars
}

/// Label on SupportServices naming their profile.
pub const PROFILE_LABEL: &str = "qleetos.io/profile";
/// Label on SupportServices naming their runtime.
pub const RUNTIME_LABEL: &str = "qleetos.io/runtime";

/// Every SupportService of `runtime` in the cache.
pub fn services_on(ctx: &Context, runtime: &str) -> Vec<Arc<SupportService>> {
    ctx.caches
        .support_services
        .state()
        .into_iter()
        .filter(|s| s.spec.runtime_ref.name == runtime)
        .collect()
}

/// Whether `instance` needs a support service, or did on its last pass (its users' services
/// must hear that it stopped).
pub fn depends(instance: &qleetos_crds::WorkloadInstance) -> bool {
    !instance.spec.capabilities().is_empty()
        || instance
            .status
            .as_ref()
            .is_some_and(|status| !status.dependencies.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn runtime_parameters_are_replaced_in_every_string() {
        let runtime: KubernetesRuntime = serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntime",
            "metadata": { "name": "eu-west", "labels": { "tier": "gold" } },
            "spec": { "provider": "local", "region": "eu-west-1",
                      "connection": { "kubeconfigSecretRef": { "namespace": "qleetos-system", "name": "k", "key": "kubeconfig" } } },
        }))
        .expect("runtime");
        let mut value = json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "id" },
            "data": { "where": "$(runtime.name) in $(runtime.region) on $(runtime.provider)", "tier": "$(runtime.labels.tier)" },
        });
        runtime_variables(&runtime).substitute(&mut value);
        assert_eq!(value["data"]["where"], "eu-west in eu-west-1 on local");
        assert_eq!(value["data"]["tier"], "gold");
    }
}
