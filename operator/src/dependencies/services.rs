//! Back-end services in the dependency engine: the WorkloadServiceDependencies a placement
//! needs, the SupportService installing each into the placement's runtime namespace (created
//! on first need, one per runtime, namespace, profile and parameters when shared), and how
//! far each is.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;
use qleetos_crds::template::Variables;
use qleetos_crds::{
    DependencyState, DependencyStatus, KubernetesRuntime, NameRef, ServiceProfile, ServiceUnit,
    Sharing, SupportService, SupportServiceSpec, WorkloadInstance, WorkloadServiceDependency,
};
use serde_json::Value;

use super::{create_service_object, status_of};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::names;

/// One service a placement needs: the dependency asking, its profile, the SupportService
/// installing it, and where it stands.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The workload served.
    pub workload: String,
    pub dependency: Arc<WorkloadServiceDependency>,
    pub profile: Arc<ServiceProfile>,
    pub service: SupportService,
    pub status: DependencyStatus,
}

impl Bound {
    fn new(
        workload: &str,
        dependency: Arc<WorkloadServiceDependency>,
        profile: Arc<ServiceProfile>,
        service: SupportService,
    ) -> Self {
        let mut status = status_of(&dependency.spec.profile_ref.name, &service);
        status.dependency = dependency.metadata.name.clone();
        Bound {
            workload: workload.to_owned(),
            dependency,
            profile,
            service,
            status,
        }
    }

    /// The unit the SupportService installs.
    pub fn unit(&self) -> Option<&ServiceUnit> {
        self.service.spec.service.as_ref()
    }
}

/// The name of the Workload an instance carries (its own name when created directly).
pub fn workload_of(instance: &WorkloadInstance) -> String {
    instance
        .spec
        .workload_ref
        .as_ref()
        .map(|w| w.name.clone())
        .or_else(|| instance.metadata.name.clone())
        .unwrap_or_default()
}

/// The live WorkloadServiceDependencies of the instance's namespace naming its workload, by
/// name.
pub fn dependencies_of(
    ctx: &Context,
    instance: &WorkloadInstance,
) -> Vec<Arc<WorkloadServiceDependency>> {
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    dependencies_with(ctx, namespace, &workload_of(instance), &[])
}

/// The WorkloadServiceDependencies of `namespace` naming `workload` once `planned` are
/// applied (each replaces the live one of its name), by name.
pub fn dependencies_with(
    ctx: &Context,
    namespace: &str,
    workload: &str,
    planned: &[Arc<WorkloadServiceDependency>],
) -> Vec<Arc<WorkloadServiceDependency>> {
    let mut found: Vec<_> = ctx
        .caches
        .service_dependencies
        .state()
        .into_iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(namespace))
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter(|d| !planned.iter().any(|p| p.metadata.name == d.metadata.name))
        .chain(planned.iter().cloned())
        .filter(|d| d.spec.workloads.iter().any(|w| w == workload))
        .collect();
    found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    found
}

/// What `dependency` asks to install for `workload` in `namespace`: parameters checked and
/// completed with the profile's defaults.
pub fn unit_for(
    dependency: &WorkloadServiceDependency,
    profile: &ServiceProfile,
    namespace: &str,
    workload: &str,
) -> Result<ServiceUnit> {
    let parameters = profile
        .spec
        .resolve_parameters(&dependency.spec.parameters)
        .map_err(|problem| Error::InvalidServiceDependency {
            dependency: dependency.metadata.name.clone().unwrap_or_default(),
            problem,
        })?;
    let profile_name = profile.metadata.name.clone().unwrap_or_default();
    let dedicated_to = (dependency.spec.sharing == Sharing::Dedicated).then(|| workload.to_owned());
    let name = service_name(
        &profile_name,
        namespace,
        &parameters,
        dedicated_to.as_deref(),
    );
    Ok(ServiceUnit {
        namespace: namespace.to_owned(),
        name,
        parameters,
        dedicated_to,
    })
}

/// `<profile>-<hash>`, a DNS label: the hash of the namespace, the parameters and the
/// dedicated workload tells services of one profile apart, so a parameter change is a new
/// service the workload moves to.
fn service_name(
    profile: &str,
    namespace: &str,
    parameters: &BTreeMap<String, Value>,
    dedicated_to: Option<&str>,
) -> String {
    let identity = serde_json::json!([profile, namespace, parameters, dedicated_to]).to_string();
    let hash = names::short_hash(&identity);
    let mut prefix: String = profile
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(63 - hash.len() - 1)
        .collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    if !prefix.starts_with(|c: char| c.is_ascii_lowercase()) {
        prefix.insert_str(0, "svc-");
        prefix.truncate(63 - hash.len() - 1);
    }
    format!("{prefix}-{hash}")
}

/// The SupportService name of a unit on a runtime: `<service>.<namespace>.<runtime>`.
pub fn support_service_name(unit: &ServiceUnit, runtime: &str) -> String {
    names::cut_with_hash(&format!("{}.{}.{runtime}", unit.name, unit.namespace), 253)
}

/// The variables of a unit's manifests and connection values.
pub fn variables(unit: &ServiceUnit, runtime: &KubernetesRuntime) -> Variables {
    let mut vars = super::runtime_variables(runtime);
    vars.insert("service.name", unit.name.clone());
    vars.insert("service.namespace", unit.namespace.clone());
    for (name, value) in &unit.parameters {
        vars.insert(format!("parameters.{name}"), value.clone());
    }
    vars
}

/// Makes sure a SupportService exists on `runtime` for each dependency of the instance, and
/// reports each; with the `Pending` statuses of dependencies whose profile does not exist
/// (yet). `Err` for a dependency whose parameters its profile refuses.
pub async fn ensure(
    ctx: &Context,
    instance: &WorkloadInstance,
    runtime: &str,
) -> Result<(Vec<Bound>, Vec<DependencyStatus>)> {
    let namespace = instance.metadata.namespace.clone().unwrap_or_default();
    let workload = workload_of(instance);
    let (mut bound, mut missing) = (Vec::new(), Vec::new());
    for dependency in dependencies_of(ctx, instance) {
        match resolve(ctx, &dependency, &namespace, &workload)? {
            Ok((profile, unit)) => {
                let profile_name = &dependency.spec.profile_ref.name;
                let service = ensure_service(ctx, profile_name, &unit, runtime).await?;
                bound.push(Bound::new(&workload, dependency, profile, service));
            }
            Err(pending) => missing.push(pending),
        }
    }
    Ok((bound, missing))
}

/// What [`ensure`] would bind for a plan, creating nothing: for `dependencies`, the
/// SupportService on `runtime` when it exists, else the one that would be created (no uid,
/// no status).
pub fn bind_planned(
    ctx: &Context,
    instance: &WorkloadInstance,
    dependencies: Vec<Arc<WorkloadServiceDependency>>,
    runtime: &str,
) -> Result<(Vec<Bound>, Vec<DependencyStatus>)> {
    let namespace = instance.metadata.namespace.clone().unwrap_or_default();
    let workload = workload_of(instance);
    let (mut bound, mut missing) = (Vec::new(), Vec::new());
    for dependency in dependencies {
        match resolve(ctx, &dependency, &namespace, &workload)? {
            Ok((profile, unit)) => {
                let name = support_service_name(&unit, runtime);
                let service = match ctx.caches.support_services.get(&ObjectRef::new(&name)) {
                    Some(found) => (*found).clone(),
                    None => {
                        let profile_name = &dependency.spec.profile_ref.name;
                        SupportService::new(&name, service_spec(profile_name, &unit, runtime))
                    }
                };
                bound.push(Bound::new(&workload, dependency, profile, service));
            }
            Err(pending) => missing.push(pending),
        }
    }
    Ok((bound, missing))
}

/// The dependency's profile and unit, or its `Pending` status while the profile does not
/// exist; `Err` when the profile is being deleted or refuses the parameters.
fn resolve(
    ctx: &Context,
    dependency: &WorkloadServiceDependency,
    namespace: &str,
    workload: &str,
) -> Result<Result<(Arc<ServiceProfile>, ServiceUnit), DependencyStatus>> {
    let profile_name = &dependency.spec.profile_ref.name;
    let dependency_name = dependency.metadata.name.clone().unwrap_or_default();
    let Some(profile) = ctx
        .caches
        .service_profiles
        .get(&ObjectRef::new(profile_name))
    else {
        return Ok(Err(DependencyStatus {
            capability: profile_name.clone(),
            kind: "ServiceProfile".to_owned(),
            name: String::new(),
            state: DependencyState::Pending,
            message: format!("ServiceProfile {profile_name} does not exist yet"),
            dependency: Some(dependency_name),
            since: None,
        }));
    };
    if profile.metadata.deletion_timestamp.is_some() {
        return Err(Error::InvalidServiceDependency {
            dependency: dependency_name,
            problem: format!("ServiceProfile {profile_name} is being deleted"),
        });
    }
    let unit = unit_for(dependency, &profile, namespace, workload)?;
    Ok(Ok((profile, unit)))
}

async fn ensure_service(
    ctx: &Context,
    profile: &str,
    unit: &ServiceUnit,
    runtime: &str,
) -> Result<SupportService> {
    let name = support_service_name(unit, runtime);
    if let Some(found) = ctx.caches.support_services.get(&ObjectRef::new(&name)) {
        return Ok((*found).clone());
    }
    create_service_object(ctx, &name, service_spec(profile, unit, runtime)).await
}

fn service_spec(profile: &str, unit: &ServiceUnit, runtime: &str) -> SupportServiceSpec {
    SupportServiceSpec {
        profile_ref: NameRef {
            name: profile.to_owned(),
        },
        runtime_ref: NameRef {
            name: runtime.to_owned(),
        },
        service: Some(unit.clone()),
        revision: None,
    }
}

/// Whether `service` (installed from a ServiceProfile) is what `instance` needs now.
pub fn needed_by(ctx: &Context, instance: &WorkloadInstance, service: &SupportService) -> bool {
    let Some(unit) = &service.spec.service else {
        return false;
    };
    if instance.metadata.namespace.as_deref() != Some(unit.namespace.as_str()) {
        return false;
    }
    let namespace = unit.namespace.as_str();
    let workload = workload_of(instance);
    dependencies_of(ctx, instance).iter().any(|dependency| {
        dependency.spec.profile_ref.name == service.spec.profile_ref.name
            && ctx
                .caches
                .service_profiles
                .get(&ObjectRef::new(&dependency.spec.profile_ref.name))
                .and_then(|profile| unit_for(dependency, &profile, namespace, &workload).ok())
                .is_some_and(|wanted| wanted.name == unit.name)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn service_names_are_dns_labels_that_change_with_parameters() {
        let one = BTreeMap::from([("chainId".to_owned(), json!(1))]);
        let two = BTreeMap::from([("chainId".to_owned(), json!(2))]);
        let a = service_name("ethereum-rpc", "shop", &one, None);
        assert!(a.starts_with("ethereum-rpc-") && a.len() <= 63, "{a}");
        assert_ne!(a, service_name("ethereum-rpc", "shop", &two, None));
        assert_ne!(a, service_name("ethereum-rpc", "shop", &one, Some("web")));
        assert_eq!(a, service_name("ethereum-rpc", "shop", &one, None));
        let odd = service_name(&format!("1.{}", "p".repeat(80)), "ns", &one, None);
        assert!(odd.starts_with("svc-1-") && odd.len() <= 63, "{odd}");
    }
}
