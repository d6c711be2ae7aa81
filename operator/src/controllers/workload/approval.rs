//! Required approval of a Workload's changes: each new generation is planned (the plan is
//! recorded in the status with its generation) and held until annotation
//! `qleetos.io/approve-plan` names that generation; placements run the approved revision
//! meanwhile (a new Workload is not placed at all). An approval naming any other generation is
//! stale: refused, saying which plan to review.

use kube::ResourceExt;
use qleetos_crds::plan::APPROVE_ANNOTATION;
use qleetos_crds::{
    Approval, ApprovalState, ApprovalStatus, Reason, Workload, WorkloadInstance, WorkloadPlanStatus,
};

use super::failover_status::REPLACES_ANNOTATION;
use super::plan::plan_workload;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::placement::Selected;
use crate::tenancy::Fence;

/// What approval decides for this pass.
#[derive(Debug, Default)]
pub struct Gate {
    pub status: Option<ApprovalStatus>,
    /// The current generation waits for approval.
    pub holding: bool,
}

impl Gate {
    /// The revision every placement runs while holding (none: nothing is placed).
    pub fn held_revision(&self) -> Option<i64> {
        self.status
            .as_ref()
            .filter(|_| self.holding)
            .and_then(|s| s.approved_revision)
    }
}

/// Holds the current generation until its plan is approved, when the Workload or its
/// namespace's policy requires approval; `latest` is the revision the spec is.
pub async fn gate(
    workload: &Workload,
    fence: &Fence,
    latest: i64,
    existing: &[WorkloadInstance],
    ctx: &Context,
) -> Result<Gate> {
    if workload.spec.approval == Approval::Auto && !fence.requires_plan_approval() {
        return Ok(Gate::default());
    }
    let generation = workload.metadata.generation.unwrap_or_default();
    let previous = workload.status.as_ref().and_then(|s| s.approval.clone());
    let mut status = previous
        .clone()
        .unwrap_or_else(|| first_status(workload, existing));
    if status.approved_generation == Some(generation) {
        return Ok(Gate {
            status: Some(status),
            holding: false,
        });
    }
    let approves = workload
        .annotations()
        .get(APPROVE_ANNOTATION)
        .and_then(|a| a.trim().parse::<i64>().ok());
    let planned = status.state == ApprovalState::Pending && status.generation == generation;
    if planned && approves == Some(generation) {
        approve(&mut status, latest);
        let note = format!("the plan of generation {generation} was approved; applying it");
        ctx.event_for(workload, Reason::PlanApproved, note).await;
        return Ok(Gate {
            status: Some(status),
            holding: false,
        });
    }
    if !planned {
        plan_generation(workload, ctx, &mut status).await?;
    }
    if let Some(stale) =
        approves.filter(|a| *a != generation && Some(*a) != status.approved_generation)
    {
        let message = format!(
            "the approval of generation {stale} is stale: the Workload is at generation {generation}; review its plan (status.approval) and approve generation {generation}"
        );
        if status.message.as_deref() != Some(message.as_str()) {
            ctx.event_for(workload, Reason::PlanStale, message.clone())
                .await;
            status.message = Some(message);
        }
    }
    Ok(Gate {
        status: Some(status),
        holding: true,
    })
}

/// While a plan waits: the placements the Workload has, as they are.
pub fn held_placements(existing: &[WorkloadInstance], ctx: &Context) -> Vec<Selected> {
    existing
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|instance| {
            let runtime = instance.spec.runtime_ref.name.clone();
            Selected {
                region: ctx
                    .caches
                    .runtime(&runtime)
                    .map(|r| r.spec.region.clone())
                    .unwrap_or_default(),
                replaces: instance.annotations().get(REPLACES_ANNOTATION).cloned(),
                runtime,
            }
        })
        .collect()
}

/// Before any approval: a Workload already placed runs the revision it was placed with.
fn first_status(workload: &Workload, existing: &[WorkloadInstance]) -> ApprovalStatus {
    let placed = workload.status.as_ref().and_then(|s| s.revision);
    ApprovalStatus {
        approved_revision: placed.filter(|_| !existing.is_empty()),
        ..ApprovalStatus::default()
    }
}

fn approve(status: &mut ApprovalStatus, latest: i64) {
    status.state = ApprovalState::Approved;
    status.approved_generation = Some(status.generation);
    status.approved_revision = Some(latest);
    status.placements.clear();
    status.message = None;
}

/// Plans the current generation into `status`, pending; a plan that cannot be computed says
/// why and is computed again at the next generation.
async fn plan_generation(
    workload: &Workload,
    ctx: &Context,
    status: &mut ApprovalStatus,
) -> Result<()> {
    let generation = workload.metadata.generation.unwrap_or_default();
    let name = workload.name_any();
    let (placements, problem) = match plan_workload(workload, &[], ctx, false).await {
        Ok(placements) => (placements, None),
        Err(error @ Error::Management(_)) => return Err(error),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    let summary = WorkloadPlanStatus::summarize(&placements);
    status.state = ApprovalState::Pending;
    status.generation = generation;
    status.message = Some(match problem {
        Some(problem) => {
            format!("the plan of generation {generation} could not be computed: {problem}")
        }
        None => format!(
            "the plan of generation {generation} waits for approval ({summary}): `qleetctl approve {name}`, or annotate {APPROVE_ANNOTATION}: \"{generation}\""
        ),
    });
    status.summary = Some(summary);
    status.placements = placements;
    let note = status.message.clone().unwrap_or_default();
    ctx.event_for(workload, Reason::PlanPendingApproval, note)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approving_records_the_generation_and_revision_and_drops_the_plan() {
        let mut status = ApprovalStatus {
            generation: 4,
            placements: vec![Default::default()],
            approved_generation: Some(2),
            approved_revision: Some(2),
            ..ApprovalStatus::default()
        };
        approve(&mut status, 3);
        assert_eq!(status.state, ApprovalState::Approved);
        assert_eq!(
            (status.approved_generation, status.approved_revision),
            (Some(4), Some(3))
        );
        assert!(status.placements.is_empty());
    }

    #[test]
    fn only_a_holding_gate_pins_the_approved_revision() {
        let status = ApprovalStatus {
            approved_revision: Some(2),
            ..ApprovalStatus::default()
        };
        let holding = Gate {
            status: Some(status.clone()),
            holding: true,
        };
        assert_eq!(holding.held_revision(), Some(2));
        let open = Gate {
            status: Some(status),
            holding: false,
        };
        assert_eq!(open.held_revision(), None);
    }
}
