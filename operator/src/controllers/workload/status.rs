//! The Workload's status: one entry per placement and a Ready condition summing them up.

use kube::ResourceExt;
use kube::api::Api;
use qleetos_crds::{
    Class, Condition, PlacementStatus, Reason, Workload, WorkloadInstance, WorkloadStatus, class_of,
};

use super::CONTROLLER;
use super::events::emit_events;
use super::failover_status;
use super::failover_status::FAILED_OVER;
use crate::context::Context;
use crate::controllers::{apply_status_if_changed, name_of, namespace_of};
use crate::error::Result;
use crate::placement::Selected;

pub(super) fn placement_status(
    workload: &Workload,
    placement: &Selected,
    instance: &WorkloadInstance,
) -> PlacementStatus {
    let rendered_from_current = instance
        .spec
        .workload_ref
        .as_ref()
        .is_some_and(|r| r.generation == workload.metadata.generation);
    let ready_condition = instance
        .status
        .as_ref()
        .and_then(|s| qleetos_crds::Conditions::condition(s, qleetos_crds::READY));
    PlacementStatus {
        runtime: placement.runtime.clone(),
        region: placement.region.clone(),
        instance: instance.name_any(),
        ready: rendered_from_current && instance.is_ready_at_current_generation(),
        reason: ready_condition
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| Reason::Pending.into()),
        message: ready_condition
            .map(|c| c.message.clone())
            .unwrap_or_default(),
        urls: urls_of(instance),
        replaces: placement.replaces.clone(),
        replicas: replicas_of(instance),
        ..Default::default()
    }
}

/// The replicas of the instance's workload controllers, summed; `None` when it has none.
pub(super) fn replicas_of(instance: &WorkloadInstance) -> Option<qleetos_crds::ReplicaCount> {
    let health = &instance.status.as_ref()?.health;
    (!health.is_empty()).then(|| qleetos_crds::ReplicaCount {
        desired: health.iter().map(|h| h.desired).sum(),
        available: health.iter().map(|h| h.available).sum(),
    })
}

pub(super) fn urls_of(instance: &WorkloadInstance) -> Vec<String> {
    instance
        .status
        .as_ref()
        .map(|s| s.urls.clone())
        .unwrap_or_default()
}

pub(super) fn ready_condition(placements: &[PlacementStatus], fenced_out: usize) -> Condition {
    if placements.is_empty() {
        let fence_note = if fenced_out > 0 {
            format!(
                " ({fenced_out} runtime(s) are outside what this namespace may use: see its TenantPolicy)"
            )
        } else {
            String::new()
        };
        return Condition::ready(
            false,
            Reason::NoMatchingRuntime,
            format!(
                "no KubernetesRuntime matches spec.placement; check its regions and runtimeSelector against `kubectl get kubernetesruntimes --show-labels`{fence_note}"
            ),
        );
    }
    let placements = counted(placements);
    let waiting: Vec<String> = placements
        .iter()
        .filter(|p| !p.ready)
        .map(|p| {
            format!("{}: {}: {}", p.runtime, p.reason, p.message)
                .trim_end()
                .to_owned()
        })
        .collect();
    if waiting.is_empty() {
        Condition::ready(
            true,
            Reason::AllPlacementsReady,
            format!("ready on {} runtime(s)", placements.len()),
        )
    } else {
        let waits_on = placements
            .iter()
            .filter(|p| !p.ready)
            .filter_map(|p| Reason::parse(&p.reason))
            .find(|r| r.as_str().starts_with("WaitingFor"));
        let reason = if placements.iter().any(|p| is_failure(&p.reason)) {
            Reason::PlacementFailed
        } else {
            waits_on.unwrap_or(Reason::Progressing)
        };
        Condition::ready(false, reason, waiting.join("; "))
    }
}

/// Whether a placement's reason (read back from its instance) is a failure; an unknown one
/// is (see [`class_of`]), so a new wait must be declared as one in [`Reason`].
pub(super) fn is_failure(reason: &str) -> bool {
    class_of(reason) == Class::Failed
}

/// The placements the Workload's readiness counts: not those a Ready failover placement
/// stands in for.
pub(super) fn counted(placements: &[PlacementStatus]) -> Vec<&PlacementStatus> {
    placements
        .iter()
        .filter(|p| !failover_status::is_covered(p, placements))
        .collect()
}

/// Ready=False `UnknownImageContainer` when `spec.images` names a container no pod template
/// has (the override would change nothing), keeping what the placements say in the message.
pub(super) fn with_image_check(workload: &Workload, ready: Condition) -> Condition {
    let spec = &workload.spec;
    let unmatched = spec.unmatched_image_keys(spec.images.keys());
    if unmatched.is_empty() {
        return ready;
    }
    let mut message = spec.describe_unmatched_image_keys(&unmatched);
    if !ready.is_true() {
        message.push_str(&format!(
            "; placements: {}: {}",
            ready.reason, ready.message
        ));
    }
    Condition::ready(false, Reason::UnknownImageContainer, message)
}

/// The revision fields of the status.
#[derive(Debug, Default)]
pub(super) struct History {
    pub revision: Option<i64>,
    pub revision_hash: Option<String>,
    pub rollout: Option<qleetos_crds::staged::StagedRolloutStatus>,
    pub approval: Option<qleetos_crds::ApprovalStatus>,
    pub rebalance: Option<qleetos_crds::RebalanceStatus>,
}

impl History {
    /// What the status says now (a pass that stops before deciding keeps it).
    pub fn previous(workload: &Workload) -> Self {
        let status = workload.status.clone().unwrap_or_default();
        Self {
            revision: status.revision,
            revision_hash: status.revision_hash,
            rollout: status.rollout,
            approval: status.approval,
            rebalance: status.rebalance,
        }
    }
}

pub(super) async fn write_status(
    workload: &Workload,
    ctx: &Context,
    placements: Vec<PlacementStatus>,
    ready: Condition,
    history: History,
) -> Result<()> {
    let ready = with_image_check(workload, ready);
    emit_events(workload, ctx, &placements, &ready).await;
    let counted = counted(&placements);
    let ready_count = counted.iter().filter(|p| p.ready).count();
    let ready_placements = Some(format!("{ready_count}/{}", counted.len()));
    let has_policy = workload.spec.placement.failover.is_some();
    let previous: Vec<Condition> = workload
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .filter(|c| has_policy || c.type_ != FAILED_OVER)
        .cloned()
        .collect();
    let generation = workload.metadata.generation;
    let mut conditions = vec![ready.with_generation(generation)];
    if has_policy {
        conditions.push(failover_status::condition(&placements).with_generation(generation));
    }
    let status = WorkloadStatus {
        conditions: qleetos_crds::merged(&previous, conditions),
        observed_generation: generation,
        ready_placements,
        placements,
        revision: history.revision,
        revision_hash: history.revision_hash,
        rollout: history.rollout,
        approval: history.approval,
        rebalance: history.rebalance,
    };
    let api: Api<Workload> = Api::namespaced(ctx.client.clone(), &namespace_of(workload)?);
    let current = workload.status.as_ref();
    let metrics = (&*ctx.metrics, CONTROLLER);
    apply_status_if_changed(&api, &name_of(workload)?, current, &status, metrics).await
}
