//! Workload Qleet: places a Workload on runtimes, keeps one WorkloadInstance per placement,
//! and sums their health up in the Workload's status.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use qleetos_crds::Reason;
use qleetos_crds::TenantPolicy;
use qleetos_crds::staged::RolloutPhase;
use qleetos_crds::{Condition, KubernetesRuntime, Workload, WorkloadInstance};

use super::namespace_of;
use crate::capacity::Shortfall;
use crate::context::{Context, Next};
use crate::error::Result;
use crate::failover;
use crate::finalizer::{self, Phase};
use crate::names::instance_name;
use crate::queue::triggers::{Target, Triggers};
use crate::queue::worker::Qleet;

mod approval;
mod events;
mod failover_status;
pub(crate) mod fitting;
mod instances;
mod placing;
pub(crate) mod plan;
mod rebalance;
#[cfg(test)]
mod reconcile_tests;
pub mod revisions;
pub mod rollout;
mod status;

use instances::{
    Carried, apply_instance, cached_instances, delete_instance, desired_instance, is_up_to_date,
    last_look, remove_unselected,
};
use status::{History, placement_status, ready_condition, write_status};

pub const CONTROLLER: &str = "workload";
/// Held until every WorkloadInstance of the Workload is gone; set at creation by QleetOS's
/// MutatingAdmissionPolicy where it is installed, else by this Qleet's first pass.
pub const FINALIZER: &str = qleetos_crds::admission::WORKLOAD_FINALIZER;
/// Label on a WorkloadInstance naming its Workload.
pub const WORKLOAD_LABEL: &str = "qleetos.io/workload";

/// The Workload Qleet.
pub fn qleet() -> Qleet<Workload> {
    Qleet {
        api: |client, namespace| Api::namespaced(client, namespace.unwrap_or_default()),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes; a change of what it reads of its instances (it sums their health up); a
/// runtime change
/// that can move placements; a TenantPolicy change, or a namespace's labels (which runtimes
/// a namespace may use).
pub fn notified_by() -> Triggers {
    Triggers::of::<Workload>()
        .owns_changes_of::<WorkloadInstance, _>(placement_view)
        .watches::<KubernetesRuntime>(|ctx, change| {
            if !change.differs(placement_relevant) {
                return Vec::new();
            }
            Target::all(ctx.caches.workloads.state(), |_| true)
        })
        .watches::<TenantPolicy>(|ctx, _| Target::all(ctx.caches.workloads.state(), |_| true))
        .watches::<PartialObjectMeta<Namespace>>(|ctx, change| {
            if !change.differs(|namespace| namespace.metadata.labels.clone()) {
                return Vec::new();
            }
            let namespace = change.after.metadata.name.clone();
            Target::all(ctx.caches.workloads.state(), |workload| {
                workload.metadata.namespace == namespace
            })
        })
}

/// Places one Workload, or removes its instances when it is being deleted.
pub async fn reconcile(workload: Arc<Workload>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<Workload> = Api::namespaced(ctx.client.clone(), &namespace_of(&*workload)?);
    match finalizer::phase(&api, FINALIZER, workload).await? {
        Phase::Apply(workload) => place(&workload, &ctx).await,
        Phase::Cleanup(workload) => {
            if !cleanup(&workload, &ctx).await? {
                return Ok(Next::After(ctx.settings.progress_poll));
            }
            finalizer::release(&api, FINALIZER, &*workload).await?;
            Ok(Next::Done)
        }
        Phase::Gone => Ok(Next::Done),
    }
}

/// What the Workload reads of an instance: a change of anything else (its inventory, health
/// details other than the replica counts, dependencies) does not notify it.
fn placement_view(instance: &WorkloadInstance) -> u64 {
    let mut hasher = DefaultHasher::new();
    instance.spec.runtime_ref.name.hash(&mut hasher);
    instance.metadata.generation.hash(&mut hasher);
    instance
        .spec
        .workload_ref
        .as_ref()
        .map(|r| r.generation)
        .hash(&mut hasher);
    instance
        .metadata
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    let status = instance.status.as_ref();
    status.and_then(|s| s.observed_generation).hash(&mut hasher);
    status
        .map(|s| s.urls.clone())
        .unwrap_or_default()
        .hash(&mut hasher);
    let ready = ready_of(instance).map(|c| serde_json::to_string(c).unwrap_or_default());
    ready.hash(&mut hasher);
    // Reported in the placement's status: an autoscaler's decisions show there.
    status::replicas_of(instance)
        .map(|r| (r.desired, r.available))
        .hash(&mut hasher);
    hasher.finish()
}

/// Runtime changes that can move placements: spec, labels, readiness and deletion, not the
/// periodic probe times.
pub fn placement_relevant(runtime: &KubernetesRuntime) -> u64 {
    let mut hasher = DefaultHasher::new();
    runtime.metadata.generation.hash(&mut hasher);
    runtime.metadata.labels.hash(&mut hasher);
    runtime.is_ready().hash(&mut hasher);
    runtime
        .metadata
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    hasher.finish()
}

async fn place(workload: &Workload, ctx: &Context) -> Result<Next> {
    let namespace = namespace_of(workload)?;
    let instances: Api<WorkloadInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.caches.ready().await?;
    let existing = cached_instances(ctx, workload);
    let assignments: Vec<failover::Assignment> = existing
        .iter()
        .map(|i| failover_status::assignment(i, workload.metadata.generation))
        .collect();
    let fence = ctx.caches.fence(&namespace, &ctx.settings.system_namespace);
    let all_runtimes: Vec<KubernetesRuntime> = ctx
        .caches
        .runtimes
        .state()
        .iter()
        .map(|r| (**r).clone())
        .collect();
    let (allowed, fenced_out): (Vec<KubernetesRuntime>, Vec<KubernetesRuntime>) = all_runtimes
        .into_iter()
        .partition(|r| fence.allows_runtime(r));
    let planned = placing::plan_with_rebalance(workload, ctx, &fence, allowed, &assignments).await;
    let (plan, short, rebalanced) = match planned {
        Ok(planned) => planned,
        Err(error) => {
            write_status(
                workload,
                ctx,
                Vec::new(),
                Condition::ready(false, error.reason(), error.to_string()),
                History::previous(workload),
            )
            .await?;
            return Err(error);
        }
    };
    let selected = plan.selected;
    let approval_required = workload.spec.approval == qleetos_crds::Approval::Required
        || fence.requires_plan_approval();
    let revision = revisions::record(workload, &existing, approval_required, ctx).await?;
    let gate = approval::gate(workload, &fence, revision.number, &existing, ctx).await?;
    let staged = if gate.holding {
        rollout::Staged {
            status: workload.status.as_ref().and_then(|s| s.rollout.clone()),
            ..rollout::Staged::default()
        }
    } else {
        rollout::drive(workload, revision.number, &selected, &existing, ctx).await
    };
    // Held: the placements stay where they are (moving them is part of the change).
    let selected = if gate.holding {
        approval::held_placements(&existing, ctx)
    } else {
        selected
    };
    // Room may free up without any change notifying the Workload: look again.
    let probe = ctx.settings.probe_interval;
    let recheck_in = if short.is_empty() {
        plan.recheck_in
    } else {
        Some(plan.recheck_in.map_or(probe, |r| r.min(probe)))
    };
    let next = match (recheck_in, staged.next) {
        (Some(a), Some(b)) => Next::After(a.min(b)),
        (a, b) => a.or(b).map_or(Next::Done, Next::After),
    };
    let mut templates = revisions::Templates::new(workload, revision.number);
    let mut placements = Vec::new();
    let mut none_reported = !selected.is_empty();
    for placement in &selected {
        let current = existing
            .iter()
            .find(|i| i.spec.runtime_ref.name == placement.runtime);
        if gate.holding && gate.held_revision().is_none() {
            // Nothing approved yet: what runs stays as it is, nothing new is placed.
            if let Some(current) = current {
                placements.push(placement_status(workload, placement, current));
            }
            continue;
        }
        let assigned = gate
            .held_revision()
            .or_else(|| staged.assigned.get(&placement.runtime).copied());
        let carried = carried(
            workload,
            assigned,
            revision.number,
            current,
            &mut templates,
            ctx,
        );
        let instance = ensure_instance(workload, placement, current, carried.await?, ctx).await?;
        none_reported &= ready_of(&instance).is_none();
        let mut status = placement_status(workload, placement, &instance);
        status.revision = assigned;
        status.wave = staged.waves.get(&placement.runtime).copied();
        placements.push(status);
    }
    let leaving = remove_unselected(ctx, &instances, existing, &selected, &placements).await?;
    let in_use = staged
        .status
        .iter()
        .flat_map(|s| [s.revision, s.stable_revision])
        .chain(staged.assigned.values().copied())
        .chain(gate.status.as_ref().and_then(|s| s.approved_revision))
        .collect();
    revisions::revisioned(workload, ctx)
        .prune(&revision, &in_use)
        .await?;
    // A new Workload whose placements have not reported yet would only say `Pending`: its
    // first status waits for them (their first `Ready` condition notifies it), one write less.
    if workload.status.is_none() && none_reported && leaving.is_empty() && !gate.holding {
        ctx.metrics.write_skipped(CONTROLLER, "status");
        return Ok(next);
    }
    placements.extend(leaving);
    failover_status::mark_homes(&mut placements, |name| ctx.caches.runtime(name));
    let ready = match gate.status.as_ref().filter(|_| gate.holding) {
        Some(pending) => Condition::ready(
            false,
            Reason::PlanPendingApproval,
            pending.message.clone().unwrap_or_default(),
        ),
        None if !short.is_empty() => short_of_room(&short, &placements),
        None => readiness(&staged, &placements, fenced_out.len()),
    };
    let history = History {
        revision: Some(revision.number),
        revision_hash: Some(revision.hash),
        rollout: staged.status,
        approval: gate.status,
        rebalance: rebalanced.or_else(|| workload.status.as_ref()?.rebalance.clone()),
    };
    write_status(workload, ctx, placements, ready, history).await?;
    Ok(next)
}

/// The placement's instance as `carried` wants it: applied when it differs, else as it is.
async fn ensure_instance(
    workload: &Workload,
    placement: &crate::placement::Selected,
    current: Option<&WorkloadInstance>,
    carried: Carried,
    ctx: &Context,
) -> Result<WorkloadInstance> {
    let name = current.map_or_else(
        || instance_name(&workload.name_any(), &placement.runtime),
        ResourceExt::name_any,
    );
    let wanted = desired_instance(workload, carried, placement, &name);
    match current {
        // Nothing to write; a terminating instance takes no new spec (or finalizer).
        Some(current)
            if current.metadata.deletion_timestamp.is_some() || is_up_to_date(current, &wanted) =>
        {
            ctx.metrics.write_skipped(CONTROLLER, "instance");
            Ok(current.clone())
        }
        _ => {
            let instances: Api<WorkloadInstance> =
                Api::namespaced(ctx.client.clone(), &namespace_of(workload)?);
            apply_instance(&instances, &wanted).await
        }
    }
}

/// Ready is False while a region the placement asks for has no runtime with room.
fn short_of_room(short: &[Shortfall], placements: &[qleetos_crds::PlacementStatus]) -> Condition {
    let messages: Vec<&str> = short.iter().map(|s| s.message.as_str()).collect();
    Condition::ready(
        false,
        Reason::InsufficientCapacity,
        format!(
            "placed on {} runtime(s); {} (free room, a runtime with more nodes, or an overflow pool with a runtimeProfile in spec.placement.preferences places it)",
            placements.len(),
            messages.join("; ")
        ),
    )
}

/// Ready says why a staged rollout halted, else sums the placements up.
fn readiness(
    staged: &rollout::Staged,
    placements: &[qleetos_crds::PlacementStatus],
    fenced_out: usize,
) -> Condition {
    match &staged.status {
        Some(rollout)
            if matches!(
                rollout.phase,
                RolloutPhase::Halted | RolloutPhase::RolledBack
            ) =>
        {
            Condition::ready(false, Reason::RolloutHalted, rollout.message.clone())
        }
        _ => ready_condition(placements, fenced_out),
    }
}

/// What a placement's instance carries: the spec's template at the Workload's generation, or
/// the earlier revision its wave still runs (at the generation the instance already has; read
/// from its record only when the instance does not carry it already).
async fn carried(
    workload: &Workload,
    assigned: Option<i64>,
    latest: i64,
    current: Option<&WorkloadInstance>,
    templates: &mut revisions::Templates<'_>,
    ctx: &Context,
) -> Result<Carried> {
    let Some(number) = assigned.filter(|n| *n != latest) else {
        return Ok(Carried {
            template: workload.spec.template(),
            generation: workload.metadata.generation,
            revision: assigned,
        });
    };
    let generation = current
        .and_then(|c| c.spec.workload_ref.as_ref())
        .and_then(|r| r.generation);
    let carries_it = current
        .filter(|c| c.annotations().get(rollout::REVISION_ANNOTATION) == Some(&number.to_string()));
    let template = match carries_it {
        Some(instance) => revisions::template_of(instance),
        None => templates.get(number, ctx).await?,
    };
    Ok(Carried {
        template,
        generation,
        revision: Some(number),
    })
}

fn ready_of(instance: &WorkloadInstance) -> Option<&Condition> {
    let status = instance.status.as_ref()?;
    qleetos_crds::Conditions::condition(status, qleetos_crds::READY)
}

/// Deletes every instance; true once they are gone (their own finalizers remove the objects
/// from the runtimes first). Waiting for them is normal, not a failure. While the watch cache
/// still shows instances they are deleted from it; only the last look, before the Workload is
/// let go, makes sure the cache is not stale ([`last_look`]).
async fn cleanup(workload: &Workload, ctx: &Context) -> Result<bool> {
    let instances: Api<WorkloadInstance> =
        Api::namespaced(ctx.client.clone(), &namespace_of(workload)?);
    let cached = cached_instances(ctx, workload);
    let remaining = if cached.is_empty() {
        last_look(ctx, &instances, workload).await?
    } else {
        cached
    };
    for instance in remaining
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
    {
        delete_instance(&instances, &instance.name_any()).await?;
    }
    Ok(remaining.is_empty())
}

#[cfg(test)]
mod tests {
    use qleetos_crds::PlacementStatus;

    use super::events::{PlacementChange, event_note, is_failing, placement_changes};
    use super::status::{is_failure, with_image_check};
    use super::*;

    fn placement(runtime: &str, ready: bool, reason: &str) -> PlacementStatus {
        PlacementStatus {
            runtime: runtime.into(),
            ready,
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn ready_only_when_every_placement_is_ready() {
        assert!(
            ready_condition(
                &[
                    placement("a", true, "RolledOut"),
                    placement("b", true, "RolledOut")
                ],
                0
            )
            .is_true()
        );
        let partial = ready_condition(
            &[
                placement("a", true, "RolledOut"),
                placement("b", false, "Progressing"),
            ],
            0,
        );
        assert!(!partial.is_true());
        assert_eq!(partial.reason, "Progressing");
    }

    #[test]
    fn waiting_for_a_support_service_is_not_a_failure_and_names_the_wait() {
        let mut waiting = placement("eu", false, "WaitingForSupportService");
        waiting.message =
            "cert-manager (tls) on eu is Installing (0/1 ClusterIssuers ready)".into();
        let ready = ready_condition(&[waiting, placement("us", true, "RolledOut")], 0);
        assert_eq!(ready.reason, "WaitingForSupportService");
        assert_eq!(
            ready.message,
            "eu: WaitingForSupportService: cert-manager (tls) on eu is Installing (0/1 ClusterIssuers ready)"
        );
    }

    #[test]
    fn waits_and_done_reasons_are_not_failures_and_the_rest_are() {
        // Exactly the reasons the string list of `is_failure` allowed before `Reason`.
        for allowed in [
            "Progressing",
            "Pending",
            "RolledOut",
            "WaitingForRuntime",
            "WaitingForSupportService",
            "WaitingForService",
            "RuntimeDeleting",
            "Provisioning",
            "Deleting",
            "FailedOver",
            "FailingOver",
        ] {
            assert!(!is_failure(allowed), "{allowed}");
        }
        for failure in [
            "RuntimeNotFound",
            "HostConflict",
            "TenancyViolation",
            "RuntimeUnreachable",
            "ApplyFailed",
            "RolloutFailed",
            "LimitExceeded",
            "ProfileNotFound",
            "ProvisioningFailed",
            "CleanupPending",
            "CacheNotReady",
            "RuntimeNotReady",
            "NotAReasonQleetOsWrites",
        ] {
            assert!(is_failure(failure), "{failure}");
        }
    }

    #[test]
    fn a_placement_waiting_on_a_declared_wait_is_no_failure() {
        let waiting = failing("a", "WaitingForService");
        assert!(!is_failing(&waiting));
        let ready = ready_condition(&[waiting], 0);
        assert_eq!(ready.reason, "WaitingForService");
    }

    #[test]
    fn failing_placement_is_reported_as_failure() {
        let failed = ready_condition(&[placement("a", false, "ApplyFailed")], 0);
        assert_eq!(failed.reason, "PlacementFailed");
        assert!(failed.message.contains("a: ApplyFailed"));
    }

    fn failing(runtime: &str, reason: &str) -> PlacementStatus {
        PlacementStatus {
            message: "why".into(),
            ..placement(runtime, false, reason)
        }
    }

    #[test]
    fn placement_failures_are_told_once_per_transition() {
        let progressing = [placement("a", false, "Progressing")];
        let failed = [failing("a", "RolloutFailed")];
        assert_eq!(
            placement_changes(&progressing, &failed),
            [PlacementChange::Failed(&failed[0])]
        );
        assert_eq!(placement_changes(&failed, &failed), []);
        let other_failure = [failing("a", "ApplyFailed")];
        assert_eq!(
            placement_changes(&failed, &other_failure),
            [PlacementChange::Failed(&other_failure[0])]
        );
        let recovered = [placement("a", true, "RolledOut")];
        assert_eq!(
            placement_changes(&failed, &recovered),
            [PlacementChange::Recovered(&recovered[0])]
        );
        assert_eq!(placement_changes(&progressing, &recovered), []);
        let new_failing = [failing("b", "RuntimeUnreachable")];
        assert_eq!(
            placement_changes(&[], &new_failing),
            [PlacementChange::Failed(&new_failing[0])]
        );
    }

    fn workload_with_images(images: &[(&str, &str)]) -> Workload {
        let spec = serde_json::json!({
            "manifests": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
            }],
            "images": images.iter().copied().collect::<std::collections::BTreeMap<_, _>>(),
            "placement": {"regions": ["eu"]}
        });
        Workload::new("web", serde_json::from_value(spec).expect("spec"))
    }

    #[test]
    fn unknown_image_keys_make_the_workload_not_ready() {
        let ready = Condition::ready(true, Reason::AllPlacementsReady, "ready on 1 runtime(s)");
        let checked = with_image_check(&workload_with_images(&[("wbe", "nginx:2")]), ready.clone());
        assert!(!checked.is_true());
        assert_eq!(checked.reason, Reason::UnknownImageContainer);
        assert!(
            checked.message.contains("pod template: wbe;"),
            "{}",
            checked.message
        );
        assert!(
            checked.message.contains("containers are: web"),
            "{}",
            checked.message
        );
        let fine = with_image_check(&workload_with_images(&[("web", "nginx:2")]), ready);
        assert!(fine.is_true());
        let failing = Condition::ready(false, Reason::PlacementFailed, "a: ApplyFailed x");
        let both = with_image_check(&workload_with_images(&[("db", "pg")]), failing);
        assert!(
            both.message
                .ends_with("placements: PlacementFailed: a: ApplyFailed x")
        );
    }

    #[test]
    fn long_event_notes_are_cut_on_a_character_boundary() {
        let note = event_note("é".repeat(600));
        assert!(
            note.len() <= 1000 && note.ends_with("..."),
            "{}",
            note.len()
        );
        assert_eq!(event_note("short".into()), "short");
    }

    #[test]
    fn no_placement_is_not_ready() {
        assert_eq!(ready_condition(&[], 0).reason, "NoMatchingRuntime");
    }
}
