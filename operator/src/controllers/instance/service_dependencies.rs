//! The service dependencies of one instance: the services its WorkloadServiceDependencies
//! ask for on its runtime, within what its namespace may use, and their connection details.

use qleetos_crds::Reason;
use qleetos_crds::{DependencyStatus, ServiceTarget, WorkloadInstance};

use super::DEPENDENCY_WAIT;
use super::dereference::Plan;
use super::status::previous_dependencies;
use super::stop::{Hold, Stop};
use crate::context::{Context, Next};
use crate::dependencies::connection::{self, Connection};
use crate::dependencies::{Needs, services};
use crate::error::{Error, Result};

/// The back-end services the instance's WorkloadServiceDependencies ask for on its runtime
/// (created on first need) and their connection details, with every dependency's status;
/// or the hold while one is not Ready or has not written its connection Secret yet.
pub(super) async fn services_ready(
    instance: &WorkloadInstance,
    ctx: &Context,
    plan: &Plan,
    needs: &Needs,
) -> Result<(Vec<DependencyStatus>, Vec<Connection>), Stop> {
    let runtime = &instance.spec.runtime_ref.name;
    let mut statuses = needs.statuses.clone();
    for dependency in services::dependencies_of(ctx, instance) {
        if let Err(violation) = plan
            .fence
            .check_service_profile(&dependency.spec.profile_ref.name)
        {
            let name = dependency.metadata.name.as_deref().unwrap_or_default();
            let message = format!("nothing applied: WorkloadServiceDependency {name}: {violation}");
            return Err(Stop::from(Hold::refused(Reason::TenancyViolation, message)));
        }
    }
    let (bound, missing) = match services::ensure(ctx, instance, runtime).await {
        Ok(found) => found,
        Err(error @ Error::Management(_)) => return Err(error.into()),
        Err(error) => {
            let hold = Hold::refused(error.reason(), error.to_string());
            return Err(Stop::from(
                hold.with_dependencies(moving(instance, statuses)),
            ));
        }
    };
    for service in &bound {
        if let Err(violation) = plan
            .fence
            .check_capabilities(&service.profile.spec.requires)
        {
            let message = format!("nothing applied: {violation}");
            return Err(Stop::from(Hold::refused(Reason::TenancyViolation, message)));
        }
    }
    let services = Needs {
        statuses: bound
            .iter()
            .map(|b| b.status.clone())
            .chain(missing)
            .collect(),
        ..Default::default()
    };
    statuses.extend(services.statuses.iter().cloned());
    if let Some((reason, waiting)) = services.waiting_on(runtime) {
        let mut hold = Hold::waiting(reason, waiting);
        hold.next = Next::After(DEPENDENCY_WAIT);
        return Err(Stop::from(
            hold.with_dependencies(moving(instance, statuses)),
        ));
    }
    let mut connections = Vec::with_capacity(bound.len());
    for service in &bound {
        let client = if service.profile.spec.target == ServiceTarget::Management {
            &ctx.management
        } else {
            &plan.operator
        };
        match connection::read(client, service, &plan.runtime).await? {
            Ok(details) => connections.push(details),
            Err(waiting) => {
                let dependency = service.status.dependency.clone().unwrap_or_default();
                let message = format!(
                    "{dependency} ({}) on {runtime} is Ready but {waiting}",
                    service.status.capability
                );
                let mut hold = Hold::waiting(Reason::WaitingForService, message);
                hold.next = Next::After(ctx.settings.progress_poll);
                return Err(Stop::from(
                    hold.with_dependencies(moving(instance, statuses)),
                ));
            }
        }
    }
    Ok((statuses, connections))
}

/// `statuses` plus the services the instance listed before and no longer needs: the
/// workload still uses them until a pass applies it without them, so they stay its users.
fn moving(
    instance: &WorkloadInstance,
    mut statuses: Vec<DependencyStatus>,
) -> Vec<DependencyStatus> {
    for previous in previous_dependencies(instance) {
        let listed = previous.dependency.is_some() && !previous.name.is_empty();
        if listed && !statuses.iter().any(|s| s.name == previous.name) {
            statuses.push(previous);
        }
    }
    statuses
}
