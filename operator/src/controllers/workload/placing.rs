//! Where the Workload runs this pass: the runtimes its placement selects (with failover,
//! capacity preferences and clusters provisioned on demand), or a rebalance's placements
//! while one is asked for or under way.

use std::collections::BTreeSet;
use std::time::Duration;

use kube::runtime::events::EventType;
use qleetos_crds::{KubernetesRuntime, Reason, RebalanceState, RebalanceStatus, Workload};

use super::{fitting, rebalance};
use crate::capacity::Shortfall;
use crate::context::Context;
use crate::error::Result;
use crate::failover;
use crate::provisioning::demand;
use crate::tenancy::Fence;

/// How soon a pass that lost the room it chose to another pass looks again.
const RESERVATION_RETRY: Duration = Duration::from_secs(1);

/// [`plan_placement`], or a rebalance's placements while one is asked for or under way (with
/// its new status). A rebalance places the Workload anew, as if it had no placement yet.
pub(super) async fn plan_with_rebalance(
    workload: &Workload,
    ctx: &Context,
    fence: &Fence,
    allowed: Vec<KubernetesRuntime>,
    assignments: &[failover::Assignment],
) -> Result<(failover::Plan, Vec<Shortfall>, Option<RebalanceStatus>)> {
    let status = match rebalance::step(workload) {
        rebalance::Step::Idle => None,
        rebalance::Step::Start(requested) => {
            let (anew, _) = plan_placement(workload, ctx, fence, allowed.clone(), &[]).await?;
            let started = rebalance::start(&requested, &anew.selected, assignments);
            tell_rebalance(workload, ctx, &started).await;
            Some(started)
        }
        rebalance::Step::Moving(status) => Some(status),
    };
    let status = match status {
        Some(status) if status.state == RebalanceState::Moving => status,
        // None under way; one asked for now may have ended at once (nothing to move).
        ended => {
            let (plan, short) = plan_placement(workload, ctx, fence, allowed, assignments).await?;
            return Ok((plan, short, ended));
        }
    };
    let (selected, status) = rebalance::advance(&status, &allowed, assignments);
    let Some(selected) = selected else {
        tell_rebalance(workload, ctx, &status).await;
        let (plan, short) = plan_placement(workload, ctx, fence, allowed, assignments).await?;
        return Ok((plan, short, Some(status)));
    };
    if status.state == RebalanceState::Done {
        tell_rebalance(workload, ctx, &status).await;
    }
    let plan = failover::Plan {
        selected,
        ..failover::Plan::default()
    };
    Ok((plan, Vec::new(), Some(status)))
}

/// An Event for a rebalance that starts, ends or fails.
async fn tell_rebalance(workload: &Workload, ctx: &Context, status: &RebalanceStatus) {
    let (kind, reason) = match status.state {
        RebalanceState::Moving => (EventType::Normal, Reason::Rebalancing),
        RebalanceState::Done => (EventType::Normal, Reason::Rebalanced),
        RebalanceState::Failed => (EventType::Warning, Reason::Rebalancing),
    };
    let note = status.message.clone().unwrap_or_default();
    ctx.event(workload, kind, reason, note).await;
}

/// Where the Workload runs: the runtimes it selects, with the ones provisioned for regions
/// nothing serves, and failover applied; a stand-in runtime is provisioned for each lost
/// home nothing else can replace (both only when the placement allows provisioning).
async fn plan_placement(
    workload: &Workload,
    ctx: &Context,
    fence: &Fence,
    allowed: Vec<KubernetesRuntime>,
    assignments: &[failover::Assignment],
) -> Result<(failover::Plan, Vec<Shortfall>)> {
    let placement = &workload.spec.placement;
    let provisioned = demand::provision_unserved(ctx, placement, fence, &allowed).await?;
    let current: BTreeSet<String> = assignments.iter().map(|a| a.runtime.clone()).collect();
    let mut fitted = fitting::fit(workload, ctx, fence, allowed, &current);
    fitting::overflow(workload, ctx, fence, &mut fitted).await?;
    fitted.allowed.extend(provisioned);
    let (now, after) = (chrono::Utc::now(), ctx.settings.failover_after);
    let mut plan = failover::plan(
        placement,
        &fitted.allowed,
        assignments,
        now,
        after,
        &fitted.rank,
    )?;
    if !fitting::reserve(workload, ctx, &fitted, &plan.selected, &current) {
        // Another pass took the room first: place nothing new now, look again shortly.
        plan.selected.retain(|s| current.contains(&s.runtime));
        plan.recheck_in = Some(RESERVATION_RETRY);
    }
    for stand_in in demand::provision_stand_ins(ctx, placement, fence, &plan.stranded).await? {
        if stand_in.created {
            let note = format!(
                "runtime {} is lost and no runtime can stand in for it: provisioning runtime {} in {}",
                stand_in.home, stand_in.runtime, stand_in.region
            );
            ctx.event(workload, EventType::Warning, Reason::FailingOver, note)
                .await;
        }
    }
    Ok((plan, fitted.short))
}
