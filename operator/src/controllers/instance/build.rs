//! The build step of a pass: the generated objects (route, certificate, DNS), the rendered
//! manifests with the service connections injected, each resolved against the runtime's
//! API and checked against the fence; the generated objects go first.

use qleetos_crds::{
    AppliedObject, ChartStatus, DependencyStatus, Manifest, Reason, WorkloadInstance,
};

use super::dereference::Plan;
use super::status::previous_inventory;
use super::stop::{Hold, Stop};
use crate::applier::{self, Desired};
use crate::controllers::namespace_of;
use crate::dependencies::connection::{self, Connection};
use crate::dependencies::generated::{self, Generated};
use crate::dependencies::{Needs, services};
use crate::error::{Error, Result};
use crate::render::{Owner, render};
use crate::runtime_client::RuntimeClient;
use crate::tenancy::{Fence, Target};

/// What a pass applies.
pub(super) struct Built {
    pub(super) desired: Vec<Desired>,
    /// Manifests whose kind the runtime does not serve (yet).
    pub(super) unresolved: Vec<Manifest>,
    pub(super) resolve_failure: Option<Error>,
    pub(super) generated: Generated,
    pub(super) previous: Vec<AppliedObject>,
    /// The chart rendered, when the instance's source is a chart.
    pub(super) chart: Option<ChartStatus>,
}

/// The instance's `expose` must be consistent with its manifests before anything else.
pub(super) fn validate_expose(instance: &WorkloadInstance) -> Result<(), Box<Hold>> {
    let Some(expose) = &instance.spec.expose else {
        return Ok(());
    };
    generated::validate(expose, &instance.spec.manifests)
        .map_err(|error| Hold::refused(error.reason(), error.to_string()))
}

/// Everything the pass applies, or why it holds.
pub(super) async fn build(
    instance: &WorkloadInstance,
    plan: &Plan,
    needs: &Needs,
    connections: &[Connection],
    statuses: &[DependencyStatus],
) -> Result<Built, Stop> {
    let mut built = build_all(instance, plan, needs, connections, statuses).await?;
    built.desired = generated_first(
        &plan.operator,
        built.desired,
        &built.generated,
        &built.previous,
    )
    .await?;
    Ok(built)
}

/// Every object of the instance, the workload's own even while the generated ones are not
/// ready yet (a plan shows them all).
pub(super) async fn build_all(
    instance: &WorkloadInstance,
    plan: &Plan,
    needs: &Needs,
    connections: &[Connection],
    statuses: &[DependencyStatus],
) -> Result<Built, Stop> {
    let generated = generate_objects(instance, needs).map_err(|error| {
        Hold::refused(error.reason(), error.to_string()).with_dependencies(statuses.to_vec())
    })?;
    let namespace = namespace_of(instance)?;
    let mut manifests = instance.spec.manifests.clone();
    connection::inject(&mut manifests, connections);
    manifests.extend(generated.manifests.iter().cloned());
    manifests.extend(
        connections
            .iter()
            .map(|c| connection::secret_manifest(c, &namespace)),
    );
    let rendered = render(&manifests, &instance.spec.images, &owner(instance))
        .map_err(|error| Hold::refused(error.reason(), error.to_string()))?;
    let (desired, unresolved, resolve_failure) =
        applier::resolve(&plan.operator, rendered, &namespace).await?;
    check_fence(&plan.fence, &desired)?;
    let previous = previous_inventory(instance);
    Ok(Built {
        desired,
        unresolved,
        resolve_failure,
        generated,
        previous,
        chart: None,
    })
}

/// The generated objects (route, certificate) come before the workload's own: while their
/// checks do not pass (the certificate is not issued yet), only they and what was applied
/// before are converged, and the workload's new objects wait for the next pass.
async fn generated_first(
    client: &RuntimeClient,
    desired: Vec<Desired>,
    generated: &Generated,
    previous: &[AppliedObject],
) -> Result<Vec<Desired>> {
    if generated.checks.is_empty() {
        return Ok(desired);
    }
    let checks = applier::read_checks(client, &generated.checks).await?;
    if checks.iter().all(|check| check.healthy) {
        return Ok(desired);
    }
    let is_generated = |wanted: &Desired| {
        generated
            .manifests
            .iter()
            .any(|m| m.kind() == wanted.manifest.kind() && m.name() == wanted.manifest.name())
    };
    Ok(desired
        .into_iter()
        .filter(|wanted| {
            is_generated(wanted)
                || applier::inventory::find(previous, &wanted.resolved.object).is_some()
        })
        .collect())
}

/// The route, certificate and DNS objects of the instance's `expose`, named after its
/// Workload.
fn generate_objects(instance: &WorkloadInstance, needs: &Needs) -> Result<Generated> {
    let Some(expose) = &instance.spec.expose else {
        return Ok(Generated::default());
    };
    let name = services::workload_of(instance);
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    generated::generate(
        &name,
        expose,
        &instance.spec.manifests,
        &needs.contributions,
        namespace,
    )
}

fn owner(instance: &WorkloadInstance) -> Owner<'_> {
    Owner {
        namespace: instance.metadata.namespace.as_deref().unwrap_or_default(),
        name: instance.metadata.name.as_deref().unwrap_or_default(),
        uid: instance.metadata.uid.as_deref().unwrap_or_default(),
    }
}

/// Every desired object must be within the fence; one that is not stops the whole pass, so
/// a Workload is never half-applied.
fn check_fence(fence: &Fence, desired: &[Desired]) -> Result<(), Box<Hold>> {
    let violations: Vec<String> = desired
        .iter()
        .enumerate()
        .filter_map(|(index, d)| {
            let object = &d.resolved.object;
            let target = Target {
                group: object.group(),
                kind: &object.kind,
                namespace: object.namespace.as_deref(),
                name: &object.name,
            };
            fence
                .check(&target)
                .err()
                .map(|v| format!("manifest #{index}: {v}"))
        })
        .collect();
    if violations.is_empty() {
        return Ok(());
    }
    Err(Hold::refused(
        Reason::TenancyViolation,
        format!("nothing applied: {}", violations.join("; ")),
    ))
}
