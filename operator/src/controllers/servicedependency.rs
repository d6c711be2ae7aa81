//! WorkloadServiceDependency Qleet: reports, from the live objects, which of the named
//! workloads exist and where each placement's service stands. The services themselves are
//! installed by the dependency engine when a placement needs them (see
//! [`crate::dependencies::services`]); deleting a dependency needs no cleanup of its own:
//! its placements drop the injection, and then nothing uses the service.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use qleetos_crds::Reason;
use qleetos_crds::{
    Condition, DependencyState, ServiceBinding, ServiceProfile, Workload, WorkloadInstance,
    WorkloadServiceDependency, WorkloadServiceDependencyStatus,
};

use super::{apply_status, name_of, namespace_of};
use crate::context::{Context, Next};
use crate::dependencies::services::workload_of;
use crate::error::Result;
use crate::queue::triggers::{Change, Target, Triggers};
use crate::queue::worker::Qleet;

#[cfg(test)]
#[path = "servicedependency_tests.rs"]
mod tests;

/// The WorkloadServiceDependency Qleet.
pub fn qleet() -> Qleet<WorkloadServiceDependency> {
    Qleet {
        api: |client, namespace| Api::namespaced(client, namespace.unwrap_or_default()),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes; its profile's; a named Workload appearing or going; any change of an
/// instance of a named workload (its status says where the service stands).
pub fn notified_by() -> Triggers {
    Triggers::of::<WorkloadServiceDependency>()
        .watches::<ServiceProfile>(|ctx, change| {
            let profile = change.after.metadata.name.clone().unwrap_or_default();
            Target::all(ctx.caches.service_dependencies.state(), |d| {
                d.spec.profile_ref.name == profile
            })
        })
        .watches::<Workload>(|ctx, change: &Change<'_, Workload>| {
            if change.before.is_some() && !change.deleted {
                return Vec::new();
            }
            naming(
                ctx,
                change.after.metadata.namespace.as_deref(),
                change.after.metadata.name.as_deref().unwrap_or_default(),
            )
        })
        .watches::<WorkloadInstance>(|ctx, change| {
            naming(
                ctx,
                change.after.metadata.namespace.as_deref(),
                &workload_of(change.after),
            )
        })
}

fn naming(ctx: &Context, namespace: Option<&str>, workload: &str) -> Vec<Target> {
    Target::all(ctx.caches.service_dependencies.state(), |d| {
        d.metadata.namespace.as_deref() == namespace
            && d.spec.workloads.iter().any(|w| w == workload)
    })
}

pub async fn reconcile(
    dependency: Arc<WorkloadServiceDependency>,
    ctx: Arc<Context>,
) -> Result<Next> {
    ctx.caches.ready().await?;
    if dependency.metadata.deletion_timestamp.is_some() {
        return Ok(Next::Done);
    }
    let namespace = namespace_of(&*dependency)?;
    let bound_workloads: Vec<String> = dependency
        .spec
        .workloads
        .iter()
        .filter(|w| {
            ctx.caches
                .workloads
                .get(&ObjectRef::new(w).within(&namespace))
                .is_some()
        })
        .cloned()
        .collect();
    let services = bindings(&dependency, &ctx, &namespace);
    let ready = judge(&dependency, &ctx, &bound_workloads, &services);
    write(&dependency, &ctx, bound_workloads, services, ready).await?;
    Ok(Next::Done)
}

/// One entry per instance of a named workload: the service its status lists for this
/// dependency, or `Pending` before its first pass.
fn bindings(
    dependency: &WorkloadServiceDependency,
    ctx: &Context,
    namespace: &str,
) -> Vec<ServiceBinding> {
    let name = dependency.metadata.name.as_deref().unwrap_or_default();
    let mut services: Vec<ServiceBinding> = ctx
        .caches
        .instances
        .state()
        .iter()
        .filter(|i| i.metadata.namespace.as_deref() == Some(namespace))
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| dependency.spec.workloads.contains(&workload_of(i)))
        .map(|instance| {
            let listed = instance
                .status
                .iter()
                .flat_map(|s| &s.dependencies)
                .filter(|d| d.dependency.as_deref() == Some(name))
                .find(|d| d.capability == dependency.spec.profile_ref.name);
            ServiceBinding {
                workload: workload_of(instance),
                runtime: instance.spec.runtime_ref.name.clone(),
                support_service: listed.map(|d| d.name.clone()).unwrap_or_default(),
                state: listed.map_or(DependencyState::Pending, |d| d.state),
                message: listed.map_or_else(
                    || "the placement has not asked for it yet".to_owned(),
                    |d| d.message.clone(),
                ),
            }
        })
        .collect();
    services.sort_by(|a, b| (&a.workload, &a.runtime).cmp(&(&b.workload, &b.runtime)));
    services
}

fn judge(
    dependency: &WorkloadServiceDependency,
    ctx: &Context,
    bound_workloads: &[String],
    services: &[ServiceBinding],
) -> Condition {
    let profile_name = &dependency.spec.profile_ref.name;
    let Some(profile) = ctx
        .caches
        .service_profiles
        .get(&ObjectRef::new(profile_name))
    else {
        return Condition::ready(
            false,
            Reason::ProfileNotFound,
            format!("ServiceProfile {profile_name} does not exist"),
        );
    };
    if let Err(problems) = profile.spec.resolve_parameters(&dependency.spec.parameters) {
        return Condition::ready(false, Reason::InvalidParameters, problems);
    }
    if bound_workloads.is_empty() {
        return Condition::ready(
            false,
            Reason::NoBoundWorkload,
            format!(
                "none of the named workloads ({}) exists",
                dependency.spec.workloads.join(", ")
            ),
        );
    }
    if let Some(waiting) = services.iter().find(|s| s.state != DependencyState::Ready) {
        return Condition::ready(
            false,
            Reason::Waiting,
            format!(
                "{} on {}: {} ({})",
                waiting.workload, waiting.runtime, waiting.state, waiting.message
            ),
        );
    }
    Condition::ready(
        true,
        Reason::Bound,
        format!(
            "{} placement(s) of {} use it",
            services.len(),
            bound_workloads.join(", ")
        ),
    )
}

async fn write(
    dependency: &WorkloadServiceDependency,
    ctx: &Context,
    bound_workloads: Vec<String>,
    services: Vec<ServiceBinding>,
    ready: Condition,
) -> Result<()> {
    let previous = dependency.status.clone().unwrap_or_default();
    let status = WorkloadServiceDependencyStatus {
        conditions: qleetos_crds::merged(
            &previous.conditions,
            vec![ready.with_generation(dependency.metadata.generation)],
        ),
        observed_generation: dependency.metadata.generation,
        bound_workloads,
        services,
    };
    if status == previous {
        return Ok(());
    }
    let api: Api<WorkloadServiceDependency> =
        Api::namespaced(ctx.client.clone(), &namespace_of(dependency)?);
    apply_status(&api, &name_of(dependency)?, &status).await
}
