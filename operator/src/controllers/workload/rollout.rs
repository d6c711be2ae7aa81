//! A Workload's staged rollout (`spec.rollout`): which wave each placement is in, how its
//! instance is doing at the revision it carries, the revision each should run, and an Event at
//! each transition. The decisions are the engine's ([`crate::engine::waves`]), the same as a
//! SupportServiceProfile's.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use qleetos_crds::staged::{OnFailure, StagedRolloutStatus};
use qleetos_crds::{Workload, WorkloadInstance};

use crate::context::Context;
use crate::engine::waves::{self, Gates, Health, Member};
use crate::placement::Selected;

/// Annotation on a WorkloadInstance: the Workload revision its spec holds (with a rollout).
pub const REVISION_ANNOTATION: &str = "qleetos.io/revision";

/// What the rollout decided for this pass.
#[derive(Debug, Default)]
pub struct Staged {
    pub status: Option<StagedRolloutStatus>,
    /// Runtime → the revision its placement should run.
    pub assigned: BTreeMap<String, i64>,
    /// Runtime → its wave, from 1.
    pub waves: BTreeMap<String, u32>,
    pub next: Option<Duration>,
}

/// One pass of the rollout of revision `latest` over the `selected` placements.
pub async fn drive(
    workload: &Workload,
    latest: i64,
    selected: &[Selected],
    existing: &[WorkloadInstance],
    ctx: &Context,
) -> Staged {
    let Some(rollout) = &workload.spec.rollout else {
        return Staged::default();
    };
    let mut members: Vec<Member> = selected
        .iter()
        .map(|placement| {
            let instance = existing
                .iter()
                .find(|i| i.spec.runtime_ref.name == placement.runtime);
            member(&rollout.waves, placement, instance, ctx)
        })
        .collect();
    waves::fill_percent_waves(&mut members, &rollout.waves);
    let mut gates = Gates::new(
        rollout.waves.len(),
        &members,
        rollout.bake_seconds,
        rollout.progress_deadline_seconds,
        rollout.on_failure == OnFailure::Rollback,
    );
    gates.max_unavailable = rollout.max_unavailable.map(|n| n as usize);
    let previous = workload.status.as_ref().and_then(|s| s.rollout.as_ref());
    let controls = waves::Controls::of(workload.annotations());
    let step = waves::step(previous, latest, &members, gates, controls, Utc::now());
    if let Some((reason, note)) = step.event {
        ctx.event_for(workload, reason, note).await;
    }
    Staged {
        status: Some(step.status),
        assigned: step.assigned,
        waves: members
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    u32::try_from(m.wave + 1).unwrap_or(u32::MAX),
                )
            })
            .collect(),
        next: step.next,
    }
}

/// A placement's wave (the first matching, else the last) and how its instance is doing at
/// the revision it carries.
fn member(
    waves: &[qleetos_crds::staged::RuntimeSelection],
    placement: &Selected,
    instance: Option<&WorkloadInstance>,
    ctx: &Context,
) -> Member {
    let labels = ctx
        .caches
        .runtime(&placement.runtime)
        .map(|r| r.labels().clone())
        .unwrap_or_default();
    let wave = waves
        .iter()
        .position(|w| w.matches(&placement.runtime, &placement.region, &labels))
        .unwrap_or(waves.len());
    let (installed, health) = instance.map_or_else(
        || (None, Health::Progressing("not created yet".to_owned())),
        judge,
    );
    Member {
        name: placement.runtime.clone(),
        wave,
        pinned: None,
        installed,
        health,
    }
}

/// The revision an instance reports (once its status is of its current spec) and its health.
fn judge(instance: &WorkloadInstance) -> (Option<i64>, Health) {
    let status = instance.status.clone().unwrap_or_default();
    let current = status.observed_generation == instance.metadata.generation;
    let installed = instance
        .annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .filter(|_| current);
    let ready = qleetos_crds::Conditions::condition(&status, qleetos_crds::READY);
    let health = match ready {
        Some(c) if c.is_true() => Health::Healthy,
        Some(c) if qleetos_crds::class_of(&c.reason) == qleetos_crds::Class::Failed => {
            Health::Failed(format!("{}: {}", c.reason, c.message))
        }
        Some(c) => Health::Progressing(c.message.clone()),
        None => Health::Progressing("not reconciled yet".to_owned()),
    };
    (installed, health)
}
