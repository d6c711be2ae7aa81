//! A rebalance asked for with the `qleetos.io/rebalance` annotation: the Workload is placed
//! anew under its placement preferences, make-before-break. The runtimes chosen are recorded
//! in the status (`to`); the placements on runtimes it leaves (`from`) stay until every new
//! one is Ready at the current generation, then go like any unselected placement. Pure: no
//! client, no I/O.

use std::collections::BTreeSet;

use kube::ResourceExt;
use qleetos_crds::{
    KubernetesRuntime, REBALANCE_ANNOTATION, RebalanceState, RebalanceStatus, Workload,
};

use crate::failover::Assignment;
use crate::placement::{Selected, name_of, selected_of};

/// What this pass does about a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// None asked for, or the last one is over.
    Idle,
    /// A new request (the annotation's value): place anew, then move.
    Start(String),
    /// Moving to the recorded runtimes.
    Moving(RebalanceStatus),
}

pub(super) fn step(workload: &Workload) -> Step {
    let Some(requested) = workload.annotations().get(REBALANCE_ANNOTATION) else {
        return Step::Idle;
    };
    let last = workload.status.as_ref().and_then(|s| s.rebalance.as_ref());
    match last {
        Some(status) if status.requested == *requested => match status.state {
            RebalanceState::Moving => Step::Moving(status.clone()),
            RebalanceState::Done | RebalanceState::Failed => Step::Idle,
        },
        _ => Step::Start(requested.clone()),
    }
}

/// The rebalance a request starts: `anew` is where a new placement would go.
pub(super) fn start(
    requested: &str,
    anew: &[Selected],
    existing: &[Assignment],
) -> RebalanceStatus {
    let to: Vec<String> = anew.iter().map(|s| s.runtime.clone()).collect();
    if to.is_empty() {
        return RebalanceStatus {
            requested: requested.to_owned(),
            state: RebalanceState::Failed,
            message: Some(
                "placed anew it would run nowhere (no runtime would take it now): nothing moved"
                    .to_owned(),
            ),
            ..RebalanceStatus::default()
        };
    }
    let from: Vec<String> = staying(existing)
        .into_iter()
        .filter(|runtime| !to.contains(runtime))
        .collect();
    if from.is_empty() {
        return RebalanceStatus {
            requested: requested.to_owned(),
            state: RebalanceState::Done,
            from,
            to,
            message: Some("nothing to move: placed anew, it would run where it runs".to_owned()),
        };
    }
    RebalanceStatus {
        requested: requested.to_owned(),
        state: RebalanceState::Moving,
        message: Some(format!(
            "moving from {} to {}; the placements it leaves stay until the new ones are Ready",
            from.join(", "),
            to.join(", ")
        )),
        from,
        to,
    }
}

/// This pass's placements while moving, and the rebalance's new status: the runtimes moved
/// to, plus those left while one of them is not Ready yet. `None` (and `Failed`) when a
/// runtime moved to is no longer among `allowed`: the Workload is then placed as usual.
pub(super) fn advance(
    status: &RebalanceStatus,
    allowed: &[KubernetesRuntime],
    existing: &[Assignment],
) -> (Option<Vec<Selected>>, RebalanceStatus) {
    let find = |name: &str| allowed.iter().find(|r| name_of(r) == name);
    let mut targets = Vec::new();
    for runtime in &status.to {
        match find(runtime) {
            Some(found) => targets.push(selected_of(found)),
            None => {
                let failed = RebalanceStatus {
                    state: RebalanceState::Failed,
                    message: Some(format!(
                        "runtime {runtime} is gone or no longer allowed: the Workload stays placed as before"
                    )),
                    ..status.clone()
                };
                return (None, failed);
            }
        }
    }
    let waiting: Vec<&str> = status
        .to
        .iter()
        .filter(|runtime| !ready_on(existing, runtime))
        .map(String::as_str)
        .collect();
    if waiting.is_empty() {
        let done = RebalanceStatus {
            state: RebalanceState::Done,
            message: Some(format!(
                "moved from {} to {}",
                status.from.join(", "),
                status.to.join(", ")
            )),
            ..status.clone()
        };
        return (Some(targets), done);
    }
    let left = status.from.iter().filter_map(|runtime| find(runtime));
    targets.extend(left.map(selected_of));
    targets.sort();
    targets.dedup();
    let moving = RebalanceStatus {
        message: Some(format!(
            "moving from {} to {}: waiting for {} to be Ready",
            status.from.join(", "),
            status.to.join(", "),
            waiting.join(", ")
        )),
        ..status.clone()
    };
    (Some(targets), moving)
}

/// The runtimes of the instances not being deleted.
fn staying(existing: &[Assignment]) -> BTreeSet<String> {
    existing
        .iter()
        .filter(|a| !a.terminating)
        .map(|a| a.runtime.clone())
        .collect()
}

fn ready_on(existing: &[Assignment], runtime: &str) -> bool {
    existing
        .iter()
        .any(|a| a.runtime == runtime && a.ready && !a.terminating)
}

#[cfg(test)]
mod tests;
