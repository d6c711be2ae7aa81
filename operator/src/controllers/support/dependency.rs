//! A support or back-end service as a dependency of the engine: who uses it, derived from
//! the live objects on every pass, and how what it installed is removed.

use kube::runtime::reflector::ObjectRef;
use qleetos_crds::{SupportService, WorkloadInstance};

use super::{FINALIZER, applier_for};
use crate::context::{Context, key_of};
use crate::controllers::instance::FINALIZER as INSTANCE_FINALIZER;
use crate::dependencies::source::Source;
use crate::dependencies::{self, provider_of, services};
use crate::engine::lifecycle::Dependency;
use crate::error::{Error, Result};
use crate::runtime_client::describe;

/// Whether the instance's namespace may need `capabilities` (a refused instance is nobody's
/// user).
pub(super) fn may_need(
    instance: &WorkloadInstance,
    capabilities: &[String],
    ctx: &Context,
) -> bool {
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    ctx.caches
        .fence(namespace, &ctx.settings.system_namespace)
        .check_capabilities(capabilities)
        .is_ok()
}

/// Who needs the service now, from the live objects (never from a stored list): the
/// WorkloadInstances on its runtime that list it or need it and are not fully torn down,
/// and, for a support service, the services there whose profile requires what it provides.
pub fn users_of(service: &SupportService, ctx: &Context) -> Vec<String> {
    let mut users = if service.spec.service.is_some() {
        instance_users(service, ctx, |instance| {
            services::needed_by(ctx, instance, service)
        })
    } else {
        support_users(service, ctx)
    };
    users.sort();
    users
}

/// `namespace/name` of the instances on the service's runtime, still there, that list the
/// service among their dependencies or for which `needs` holds.
pub(super) fn instance_users(
    service: &SupportService,
    ctx: &Context,
    needs: impl Fn(&WorkloadInstance) -> bool,
) -> Vec<String> {
    let name = service.metadata.name.clone().unwrap_or_default();
    let runtime = &service.spec.runtime_ref.name;
    ctx.caches
        .instances
        .state()
        .iter()
        .filter(|i| &i.spec.runtime_ref.name == runtime)
        .filter(|i| still_there(&i.metadata, INSTANCE_FINALIZER))
        .filter(|i| {
            let listed = i
                .status
                .iter()
                .flat_map(|s| &s.dependencies)
                .any(|d| d.name == name);
            listed || needs(i)
        })
        .map(|i| key_of(&**i))
        .collect()
}

pub(super) fn support_users(service: &SupportService, ctx: &Context) -> Vec<String> {
    let name = service.metadata.name.clone().unwrap_or_default();
    let runtime = &service.spec.runtime_ref.name;
    let profiles = ctx.caches.profiles.state();
    let own_profile = ctx
        .caches
        .profiles
        .get(&ObjectRef::new(&service.spec.profile_ref.name));
    let provides = |capability: &str| {
        own_profile
            .as_ref()
            .is_some_and(|p| p.spec.provides.iter().any(|c| c == capability))
    };
    // Resolved to this profile; or this profile provides it and nothing else can (it is
    // being deleted, or no single default): its users keep it until they stop needing it.
    let provided_here = |capability: &str| match provider_of(capability, &profiles) {
        Ok(p) => p.metadata.name.as_deref() == Some(&service.spec.profile_ref.name),
        Err(_) => provides(capability),
    };
    let mut users = instance_users(service, ctx, |i| {
        i.spec
            .capabilities()
            .iter()
            .any(|c| provided_here(c) && may_need(i, std::slice::from_ref(c), ctx))
    });
    for other in dependencies::services_on(ctx, runtime) {
        let other_name = other.metadata.name.clone().unwrap_or_default();
        if other_name == name || !still_there(&other.metadata, FINALIZER) {
            continue;
        }
        let requires_it = Source::of(&other, ctx)
            .is_some_and(|source| source.requires().iter().any(|c| provided_here(c)));
        if requires_it {
            users.push(format!("SupportService/{other_name}"));
        }
    }
    users.extend(runtime_user(service, ctx));
    users
}

/// `KubernetesRuntime/<name>` when the service is one its runtime's profile gives every
/// cluster (listed in the runtime's status), until the runtime is deleted.
pub(super) fn runtime_user(service: &SupportService, ctx: &Context) -> Option<String> {
    let runtime = ctx.caches.runtime(&service.spec.runtime_ref.name)?;
    let name = service.metadata.name.as_deref()?;
    let lists_it = runtime
        .status
        .as_ref()
        .is_some_and(|s| s.support_services.iter().any(|d| d.name == name));
    (lists_it && runtime.metadata.deletion_timestamp.is_none())
        .then(|| format!("KubernetesRuntime/{}", service.spec.runtime_ref.name))
}

/// Not deleted, or deleted but still tearing down (holding its finalizer).
pub(super) fn still_there(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    finalizer: &str,
) -> bool {
    meta.deletion_timestamp.is_none() || meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

impl Dependency for SupportService {
    const NOUN: &'static str = "support service";

    fn users(&self, ctx: &Context) -> Vec<String> {
        users_of(self, ctx)
    }

    fn unused_since(&self) -> Option<&str> {
        self.status.as_ref()?.unused_since.as_deref()
    }

    /// Removes the installed objects in teardown order, with the operator's identity.
    async fn remove_own(&self, ctx: &Context) -> Result<Option<String>> {
        let in_management = Source::of(self, ctx).is_some_and(|s| s.in_management());
        let client = if in_management {
            ctx.management.clone()
        } else {
            let runtime_name = &self.spec.runtime_ref.name;
            let Some(runtime) = ctx.caches.runtime(runtime_name) else {
                return Ok(None);
            };
            if runtime.metadata.deletion_timestamp.is_some()
                && runtime.spec.deletion_policy == qleetos_crds::DeletionPolicy::Abandon
            {
                return Ok(None);
            }
            match ctx.pool.client_for(&runtime).await {
                Ok(client) => client,
                Err(error) => {
                    return Ok(Some(format!(
                        "waiting to remove the installed objects: {error}"
                    )));
                }
            }
        };
        let uid = self.metadata.uid.clone().unwrap_or_default();
        let inventory = self
            .status
            .as_ref()
            .map(|s| s.applied_objects.clone())
            .unwrap_or_default();
        let remaining = match applier_for(&client, &uid).remove(&inventory).await {
            Ok(remaining) => remaining,
            Err(error @ Error::RuntimeUnreachable { .. }) => {
                return Ok(Some(format!(
                    "waiting to remove the installed objects: {error}"
                )));
            }
            Err(error) => return Err(error),
        };
        if remaining.is_empty() {
            tracing::info!(support_service = %key_of(self), "removed every installed object");
            return Ok(None);
        }
        let names: Vec<String> = remaining.iter().map(describe).collect();
        Ok(Some(format!(
            "removing {} object(s) in teardown order: {}",
            names.len(),
            names.join(", ")
        )))
    }
}
