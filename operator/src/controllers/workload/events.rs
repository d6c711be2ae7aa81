//! The Events a Workload's placements are worth: a placement failing or recovering, and
//! each step of a failover.

use kube::runtime::events::EventType;
use qleetos_crds::{Condition, PlacementStatus, Reason, Workload};

use super::failover_status;
use super::failover_status::Step;
use super::status::is_failure;
use crate::context::Context;

/// A placement that started or stopped failing since the last status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PlacementChange<'a> {
    Failed(&'a PlacementStatus),
    Recovered(&'a PlacementStatus),
}

pub(super) fn is_failing(placement: &PlacementStatus) -> bool {
    !placement.ready && is_failure(&placement.reason)
}

/// The placements whose failure started (or changed reason) or ended between `previous` and
/// `current`, so each transition is told once, not on every reconcile.
pub(super) fn placement_changes<'a>(
    previous: &[PlacementStatus],
    current: &'a [PlacementStatus],
) -> Vec<PlacementChange<'a>> {
    current
        .iter()
        .filter_map(|now| {
            let before = previous.iter().find(|p| p.runtime == now.runtime);
            let failed_before = before.filter(|p| is_failing(p));
            match (failed_before, is_failing(now)) {
                (Some(before), true) if before.reason == now.reason => None,
                (_, true) => Some(PlacementChange::Failed(now)),
                // Told as a failover step instead.
                (Some(_), false)
                    if matches!(
                        Reason::parse(&now.reason),
                        Some(Reason::FailedOver | Reason::FailingOver)
                    ) =>
                {
                    None
                }
                (Some(_), false) => Some(PlacementChange::Recovered(now)),
                (None, false) => None,
            }
        })
        .collect()
}

/// Events on the Workload for what changed since its last status: placements that fail or
/// recover, and an image key turning unknown.
pub(super) async fn emit_events(
    workload: &Workload,
    ctx: &Context,
    placements: &[PlacementStatus],
    ready: &Condition,
) {
    let previous = workload.status.clone().unwrap_or_default();
    for change in placement_changes(&previous.placements, placements) {
        let (type_, reason, note) = match change {
            PlacementChange::Failed(p) => (
                EventType::Warning,
                Reason::PlacementFailed,
                format!("runtime {}: {}: {}", p.runtime, p.reason, p.message),
            ),
            PlacementChange::Recovered(p) => (
                EventType::Normal,
                Reason::PlacementRecovered,
                format!("runtime {}: no longer failing ({})", p.runtime, p.reason),
            ),
        };
        ctx.event(workload, type_, reason, event_note(note)).await;
    }
    for step in failover_status::steps(&previous.placements, placements) {
        tell_failover_step(workload, ctx, step).await;
    }
    let was_unknown_image = qleetos_crds::Conditions::condition(&previous, qleetos_crds::READY)
        .is_some_and(|c| c.reason == Reason::UnknownImageContainer);
    if ready.reason == Reason::UnknownImageContainer && !was_unknown_image {
        let note = event_note(ready.message.clone());
        ctx.event(
            workload,
            EventType::Warning,
            Reason::UnknownImageContainer,
            note,
        )
        .await;
    }
}

/// One Event and one count per failover step.
pub(super) async fn tell_failover_step(workload: &Workload, ctx: &Context, step: Step) {
    let (type_, reason, outcome, note) = match step {
        Step::Moved { home, to, region } => {
            let runtime = ctx.caches.runtime(&home);
            let home_region = runtime
                .as_ref()
                .map_or(home.clone(), |r| r.spec.region.clone());
            let down_for = failover_status::unreachable_for(runtime.as_deref(), chrono::Utc::now());
            let note = format!(
                "{home_region} unreachable for {down_for} (runtime {home}); now on {region} (runtime {to})"
            );
            (EventType::Warning, Reason::FailedOver, "moved", note)
        }
        Step::Returned { home, from } => {
            let note = format!(
                "runtime {home} is reachable again: the workload is back on it and is removed from {from}"
            );
            (EventType::Normal, Reason::FailedBack, "returned", note)
        }
        Step::Stayed { home, on } => {
            let note = format!(
                "runtime {home} is reachable again: the workload stays on {on} (failover.onRecovery: Stay) and is removed from {home}"
            );
            (
                EventType::Normal,
                Reason::StayedAfterFailover,
                "stayed",
                note,
            )
        }
    };
    ctx.metrics.failover(outcome);
    ctx.event(workload, type_, reason, event_note(note)).await;
}

/// Event notes are limited to 1 kB by the API server.
pub(super) fn event_note(mut note: String) -> String {
    const MAX: usize = 1000;
    if note.len() > MAX {
        let mut end = MAX - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}
