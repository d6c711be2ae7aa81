//! A plan's back-end services: the services the WorkloadServiceDependencies (as they would
//! be applied) ask for on the placement's runtime, checked against the tenancy fence as a
//! pass checks them, each marked `Install` or `Unchanged`, with the support services their
//! profiles require; and the connection details the workload's objects would carry (the live
//! ones of a running service, else what is known before it runs).

use std::sync::Arc;

use qleetos_crds::{
    DependencyState, PlanAction, PlannedPlacement, PlannedService, Reason, ServiceTarget,
    WorkloadInstance, WorkloadServiceDependency,
};

use super::dereference::Plan;
use super::stop::{Hold, Stop};
use crate::context::Context;
use crate::dependencies::connection::{self, Connection};
use crate::dependencies::planned;
use crate::dependencies::services::{self, Bound};
use crate::error::Error;
use crate::tenancy::Fence;

/// Records the back-end services of the placement (and what their profiles require) in
/// `placement`; refused as a pass would refuse them.
pub(super) fn record(
    instance: &WorkloadInstance,
    ctx: &Context,
    fence: &Fence,
    dependencies: &[Arc<WorkloadServiceDependency>],
    placement: &mut PlannedPlacement,
) -> Result<Vec<Bound>, Stop> {
    for dependency in dependencies {
        if let Err(violation) = fence.check_service_profile(&dependency.spec.profile_ref.name) {
            let name = dependency.metadata.name.as_deref().unwrap_or_default();
            let message = format!("nothing applied: WorkloadServiceDependency {name}: {violation}");
            return Err(Hold::refused(Reason::TenancyViolation, message).into());
        }
    }
    let runtime = &instance.spec.runtime_ref.name;
    let (bound, missing) =
        match services::bind_planned(ctx, instance, dependencies.to_vec(), runtime) {
            Ok(found) => found,
            Err(error @ Error::Management(_)) => return Err(error.into()),
            Err(error) => return Err(Hold::refused(error.reason(), error.to_string()).into()),
        };
    if let Some(pending) = missing.first() {
        let dependency = pending.dependency.as_deref().unwrap_or_default();
        let message = format!("{dependency}: {}", pending.message);
        return Err(Hold::waiting(Reason::WaitingForService, message).into());
    }
    for service in &bound {
        let requires = &service.profile.spec.requires;
        if let Err(violation) = fence.check_capabilities(requires) {
            let message = format!("nothing applied: {violation}");
            return Err(Hold::refused(Reason::TenancyViolation, message).into());
        }
        let (required, _) = planned::services(ctx, requires, runtime)
            .map_err(|e| Hold::refused(e.reason(), e.to_string()))?;
        for support in required {
            if !placement
                .support_services
                .iter()
                .any(|s| s.name == support.name)
            {
                placement.support_services.push(support);
            }
        }
        placement.support_services.push(planned_service(service));
    }
    Ok(bound)
}

fn planned_service(bound: &Bound) -> PlannedService {
    let installed = bound.service.metadata.uid.is_some();
    PlannedService {
        capability: bound.status.capability.clone(),
        profile: bound.dependency.spec.profile_ref.name.clone(),
        dependency: bound.status.dependency.clone(),
        name: bound.status.name.clone(),
        action: if installed {
            PlanAction::Unchanged
        } else {
            PlanAction::Install
        },
    }
}

/// The connection details each service gives the workload: read from a Ready service, else
/// its values known before it runs (the plan's message says which are not known yet).
pub(super) async fn connections(
    bound: &[Bound],
    ctx: &Context,
    plan: &Plan,
    placement: &mut PlannedPlacement,
) -> Result<Vec<Connection>, Stop> {
    let mut connections = Vec::with_capacity(bound.len());
    let mut not_running = Vec::new();
    for service in bound {
        let client = if service.profile.spec.target == ServiceTarget::Management {
            &ctx.management
        } else {
            &plan.operator
        };
        let read = if service.status.state == DependencyState::Ready {
            connection::read(client, service, &plan.runtime).await?.ok()
        } else {
            None
        };
        connections.push(read.unwrap_or_else(|| {
            not_running.push(service.status.dependency.clone().unwrap_or_default());
            connection::not_yet_known(service, &plan.runtime)
        }));
    }
    if !not_running.is_empty() {
        placement.message = Some(format!(
            "back-end services not running yet ({}): the connection details they write are known once they run; the pods that use them roll then",
            not_running.join(", ")
        ));
    }
    Ok(connections)
}
