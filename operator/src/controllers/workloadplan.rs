//! WorkloadPlan Qleet: computes a plan once per generation of the WorkloadPlan (what applying
//! its Workload spec would do, see `workload::plan`), writes it into the status, and deletes
//! the plan `ttlSecondsAfterComputed` later.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, ObjectMeta};
use qleetos_crds::{
    Condition, Reason, Workload, WorkloadPlan, WorkloadPlanStatus, WorkloadServiceDependency,
};

use super::workload::plan::plan_workload;
use super::{apply_status_if_changed, name_of, namespace_of};
use crate::context::{Context, Next};
use crate::error::{Error, Result};
use crate::queue::triggers::Triggers;
use crate::queue::worker::Qleet;

#[cfg(test)]
#[path = "workloadplan_tests.rs"]
mod tests;

pub const CONTROLLER: &str = "workloadplan";

/// The WorkloadPlan Qleet.
pub fn qleet() -> Qleet<WorkloadPlan> {
    Qleet {
        api: |client, namespace| Api::namespaced(client, namespace.unwrap_or_default()),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes only: a plan is a snapshot of the moment it was computed.
pub fn notified_by() -> Triggers {
    Triggers::of::<WorkloadPlan>()
}

/// Computes the plan of a new generation, else deletes the plan once its time is up.
pub async fn reconcile(plan: Arc<WorkloadPlan>, ctx: Arc<Context>) -> Result<Next> {
    if plan.metadata.deletion_timestamp.is_some() {
        return Ok(Next::Done);
    }
    let (namespace, name) = (namespace_of(&*plan)?, name_of(&*plan)?);
    let api: Api<WorkloadPlan> = Api::namespaced(ctx.client.clone(), &namespace);
    let ttl = Duration::from_secs(plan.spec.ttl_seconds_after_computed.into());
    if let Some(age) = computed_age(&plan) {
        if age < ttl {
            return Ok(Next::After(ttl - age));
        }
        return match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(Next::Done),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Next::Done),
            Err(error) => Err(Error::Management(error)),
        };
    }
    let workload = Workload {
        metadata: ObjectMeta {
            name: Some(plan.spec.workload_name.clone()),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        spec: plan.spec.workload.clone(),
        status: None,
    };
    let dependencies = planned_dependencies(&plan, &namespace);
    let (ready, placements) =
        match plan_workload(&workload, &dependencies, &ctx, plan.spec.rebalance).await {
            Ok(placements) => {
                let summary = WorkloadPlanStatus::summarize(&placements);
                let message = format!("computed without changing anything: {summary}");
                (
                    Condition::ready(true, Reason::PlanComputed, message),
                    placements,
                )
            }
            Err(error @ Error::Management(_)) => return Err(error),
            Err(error) => {
                let message = format!("the plan could not be computed: {error}");
                (
                    Condition::ready(false, Reason::PlanFailed, message),
                    Vec::new(),
                )
            }
        };
    let status = WorkloadPlanStatus {
        conditions: vec![ready.with_generation(plan.metadata.generation)],
        observed_generation: plan.metadata.generation,
        computed_at: Some(chrono::Utc::now().to_rfc3339()),
        summary: Some(WorkloadPlanStatus::summarize(&placements)),
        placements,
    };
    let metrics = (&*ctx.metrics, CONTROLLER);
    apply_status_if_changed(&api, &name, plan.status.as_ref(), &status, metrics).await?;
    Ok(Next::After(ttl))
}

/// The plan's WorkloadServiceDependencies, as objects of its namespace.
fn planned_dependencies(
    plan: &WorkloadPlan,
    namespace: &str,
) -> Vec<Arc<WorkloadServiceDependency>> {
    plan.spec
        .service_dependencies
        .iter()
        .map(|planned| {
            let mut dependency =
                WorkloadServiceDependency::new(&planned.name, planned.spec.clone());
            dependency.metadata.namespace = Some(namespace.to_owned());
            Arc::new(dependency)
        })
        .collect()
}

/// How long ago the plan of the current generation was computed; `None` when it was not.
fn computed_age(plan: &WorkloadPlan) -> Option<Duration> {
    let status = plan.status.as_ref()?;
    if status.observed_generation != plan.metadata.generation {
        return None;
    }
    let at = chrono::DateTime::parse_from_rfc3339(status.computed_at.as_deref()?).ok()?;
    Some(
        (chrono::Utc::now() - at.to_utc())
            .to_std()
            .unwrap_or_default(),
    )
}
