//! The last step of a pass: the instance's status (its Ready condition, inventory, health
//! and dependencies) and the Events that tell the user what to fix.

use kube::api::Api;
use kube::runtime::events::EventType;
use qleetos_crds::{
    AppliedObject, ChartStatus, Condition, Conditions, DependencyStatus, Expose, Reason,
    ResourceHealth, WorkloadInstance, WorkloadInstanceStatus,
};

use super::CONTROLLER;
use super::stop::Hold;
use crate::applier::Outcome;
use crate::context::{Context, Next, key_of};
use crate::controllers::{apply_status_if_changed, name_of, namespace_of};
use crate::error::{Error, Result};
use crate::health::{describe_failures, describe_unhealthy};

pub(super) fn previous_outcome(previous: Vec<AppliedObject>, error: Error) -> Outcome {
    Outcome {
        inventory: previous,
        applied: Vec::new(),
        failure: Some(error),
        waiting: None,
    }
}

pub(super) async fn finish(
    instance: &WorkloadInstance,
    ctx: &Context,
    outcome: Outcome,
    health: Vec<ResourceHealth>,
    dependencies: Vec<DependencyStatus>,
    chart: Option<ChartStatus>,
) -> Result<Next> {
    let healthy = health.iter().all(|h| h.healthy) && outcome.waiting.is_none();
    let ready = ready_condition(instance, &outcome, &health, healthy);
    let report = Report {
        inventory: outcome.inventory,
        health,
        dependencies,
        chart,
    };
    write_status(instance, ctx, report, ready).await?;
    if let Some(error) = outcome.failure {
        return Err(error);
    }
    Ok(if healthy {
        Next::Done
    } else {
        Next::After(ctx.settings.progress_poll)
    })
}

/// Writes the hold's condition, keeping the inventory, and says so in an Event when the
/// user must act (once per change of the message).
pub(super) async fn hold_pass(
    instance: &WorkloadInstance,
    ctx: &Context,
    hold: Box<Hold>,
) -> Result<Next> {
    let changed = current_ready(instance)
        .is_none_or(|c| c.reason != hold.condition.reason || c.message != hold.condition.message);
    if hold.warn && changed {
        tracing::warn!(instance = %key_of(instance), reason = %hold.condition.reason, message = %hold.condition.message, "not applied");
        ctx.event(
            instance,
            EventType::Warning,
            hold.reason,
            hold.condition.message.clone(),
        )
        .await;
    }
    let condition = hold.condition.with_generation(instance.metadata.generation);
    // During a wait what was applied stays, and so do the dependencies it uses; a refused
    // instance is nobody's user.
    let dependencies = if hold.dependencies.is_empty() && !hold.warn {
        previous_dependencies(instance)
    } else {
        hold.dependencies
    };
    let report = Report {
        inventory: previous_inventory(instance),
        health: previous_health(instance),
        dependencies,
        chart: previous_chart(instance),
    };
    write_status(instance, ctx, report, condition).await?;
    Ok(hold.next)
}

pub(super) async fn record_inventory(
    instance: &WorkloadInstance,
    ctx: &Context,
    inventory: Vec<AppliedObject>,
) -> Result<()> {
    let conditions = current_conditions(instance).to_vec();
    let previous = instance.status.clone().unwrap_or_default();
    let status = WorkloadInstanceStatus {
        conditions,
        applied_count: count(&inventory),
        applied_objects: inventory,
        ..previous
    };
    write_if_changed(instance, ctx, &status).await
}

/// What a pass writes besides its Ready condition.
pub(super) struct Report {
    pub(super) inventory: Vec<AppliedObject>,
    pub(super) health: Vec<ResourceHealth>,
    pub(super) dependencies: Vec<DependencyStatus>,
    pub(super) chart: Option<ChartStatus>,
}

pub(super) async fn write_status(
    instance: &WorkloadInstance,
    ctx: &Context,
    report: Report,
    ready: Condition,
) -> Result<()> {
    let status = WorkloadInstanceStatus {
        conditions: qleetos_crds::merged(current_conditions(instance), vec![ready]),
        observed_generation: instance.metadata.generation,
        applied_count: count(&report.inventory),
        applied_objects: report.inventory,
        health: report.health,
        dependencies: report.dependencies,
        urls: instance
            .spec
            .expose
            .as_ref()
            .map(Expose::urls)
            .unwrap_or_default(),
        chart: report.chart,
    };
    write_if_changed(instance, ctx, &status).await
}

pub(super) async fn write_if_changed(
    instance: &WorkloadInstance,
    ctx: &Context,
    status: &WorkloadInstanceStatus,
) -> Result<()> {
    let api = instance_api(instance, ctx)?;
    let metrics = (&*ctx.metrics, CONTROLLER);
    let current = instance.status.as_ref();
    apply_status_if_changed(&api, &name_of(instance)?, current, status, metrics).await
}

pub(super) async fn write_condition(
    instance: &WorkloadInstance,
    ctx: &Context,
    ready: Condition,
) -> Result<()> {
    if current_ready(instance)
        .is_some_and(|c| c.reason == ready.reason && c.message == ready.message)
    {
        return Ok(());
    }
    let report = Report {
        inventory: previous_inventory(instance),
        health: previous_health(instance),
        dependencies: previous_dependencies(instance),
        chart: previous_chart(instance),
    };
    let ready = ready.with_generation(instance.metadata.generation);
    write_status(instance, ctx, report, ready).await
}

pub(super) fn instance_api(
    instance: &WorkloadInstance,
    ctx: &Context,
) -> Result<Api<WorkloadInstance>> {
    Ok(Api::namespaced(
        ctx.client.clone(),
        &namespace_of(instance)?,
    ))
}

pub(super) fn count(inventory: &[AppliedObject]) -> i64 {
    i64::try_from(inventory.len()).unwrap_or(i64::MAX)
}

pub(super) fn ready_condition(
    instance: &WorkloadInstance,
    outcome: &Outcome,
    health: &[ResourceHealth],
    healthy: bool,
) -> Condition {
    let runtime = &instance.spec.runtime_ref.name;
    let condition = match (&outcome.failure, &outcome.waiting) {
        (Some(error), _) => Condition::ready(false, error.reason(), error.to_string()),
        (None, Some(waiting)) => Condition::ready(false, Reason::WaitingForHook, waiting.clone()),
        (None, None) if healthy => Condition::ready(
            true,
            Reason::RolledOut,
            format!(
                "{} objects applied to runtime {runtime}; every workload is available",
                outcome.inventory.len()
            ),
        ),
        (None, None) => match describe_failures(health) {
            Some(failures) => Condition::ready(false, Reason::RolloutFailed, failures),
            None => Condition::ready(false, Reason::Progressing, describe_unhealthy(health)),
        },
    };
    condition.with_generation(instance.metadata.generation)
}

pub(super) fn previous_inventory(instance: &WorkloadInstance) -> Vec<AppliedObject> {
    instance
        .status
        .as_ref()
        .map(|s| s.applied_objects.clone())
        .unwrap_or_default()
}

pub(super) fn previous_dependencies(instance: &WorkloadInstance) -> Vec<DependencyStatus> {
    instance
        .status
        .as_ref()
        .map(|s| s.dependencies.clone())
        .unwrap_or_default()
}

pub(super) fn previous_chart(instance: &WorkloadInstance) -> Option<ChartStatus> {
    instance.status.as_ref().and_then(|s| s.chart.clone())
}

pub(super) fn previous_health(instance: &WorkloadInstance) -> Vec<ResourceHealth> {
    instance
        .status
        .as_ref()
        .map(|s| s.health.clone())
        .unwrap_or_default()
}

pub(super) fn current_conditions(instance: &WorkloadInstance) -> &[Condition] {
    instance
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

pub(super) fn current_ready(instance: &WorkloadInstance) -> Option<&Condition> {
    instance
        .status
        .as_ref()
        .and_then(|s| s.condition(qleetos_crds::READY))
}
