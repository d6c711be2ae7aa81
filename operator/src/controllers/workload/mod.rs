//! Workload Qleet: places a Workload on runtimes, keeps one WorkloadInstance per placement,
//! and sums their health up in the Workload's status.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams, VersionMatch};
use kube::core::PartialObjectMeta;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use qleetos_crds::TenantPolicy;
use qleetos_crds::{Class, Reason, class_of};
use qleetos_crds::{
    Condition, DeletionPolicy, FIELD_MANAGER, KubernetesRuntime, PlacementStatus, RuntimeRef,
    Workload, WorkloadInstance, WorkloadInstanceSpec, WorkloadRef, WorkloadStatus,
    describe_unmatched_image_keys, unmatched_image_keys,
};

use super::instance::FINALIZER as INSTANCE_FINALIZER;
use super::{apply_status_if_changed, name_of, namespace_of, same_json};
use crate::context::{Context, Next, key_of};
use crate::engine::writes::delete_if_present;
use crate::error::{Error, Result};
use crate::failover;
use crate::finalizer::{self, Phase};
use crate::names::{instance_name, label_value};
use crate::placement::Selected;
use crate::provisioning::demand;
use crate::queue::triggers::{Target, Triggers};
use crate::queue::worker::Qleet;
use crate::tenancy::Fence;

mod failover_status;
#[cfg(test)]
mod reconcile_tests;

use failover_status::{FAILED_OVER, REPLACES_ANNOTATION, Step};

pub const CONTROLLER: &str = "workload";
/// Held until every WorkloadInstance of the Workload is gone.
pub const FINALIZER: &str = "qleetos.io/instances";
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
/// details, dependencies) does not notify it.
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
    let plan = match plan_placement(workload, ctx, &fence, allowed, &assignments).await {
        Ok(plan) => plan,
        Err(error) => {
            write_status(
                workload,
                ctx,
                Vec::new(),
                Condition::ready(false, error.reason(), error.to_string()),
            )
            .await?;
            return Err(error);
        }
    };
    let selected = plan.selected;
    let next = plan.recheck_in.map_or(Next::Done, Next::After);
    let mut placements = Vec::new();
    let mut none_reported = !selected.is_empty();
    for placement in &selected {
        let current = existing
            .iter()
            .find(|i| i.spec.runtime_ref.name == placement.runtime);
        let name = current.map_or_else(
            || instance_name(&workload.name_any(), &placement.runtime),
            ResourceExt::name_any,
        );
        let wanted = desired_instance(workload, placement, &name);
        let instance = match current {
            // Nothing to write; a terminating instance takes no new spec (or finalizer).
            Some(current)
                if current.metadata.deletion_timestamp.is_some()
                    || is_up_to_date(current, &wanted) =>
            {
                ctx.metrics.write_skipped(CONTROLLER, "instance");
                current.clone()
            }
            _ => apply_instance(&instances, &wanted).await?,
        };
        none_reported &= ready_of(&instance).is_none();
        placements.push(placement_status(workload, placement, &instance));
    }
    let leaving = remove_unselected(ctx, &instances, existing, &selected, &placements).await?;
    // A new Workload whose placements have not reported yet would only say `Pending`: its
    // first status waits for them (their first `Ready` condition notifies it), one write less.
    if workload.status.is_none() && none_reported && leaving.is_empty() {
        ctx.metrics.write_skipped(CONTROLLER, "status");
        return Ok(next);
    }
    placements.extend(leaving);
    failover_status::mark_homes(&mut placements, |name| ctx.caches.runtime(name));
    let ready = ready_condition(&placements, fenced_out.len());
    write_status(workload, ctx, placements, ready).await?;
    Ok(next)
}

/// Where the Workload runs: the runtimes it selects, with the ones provisioned for regions
/// nothing serves, and failover applied; a stand-in runtime is provisioned for each lost
/// home nothing else can replace (both only when the placement allows provisioning).
async fn plan_placement(
    workload: &Workload,
    ctx: &Context,
    fence: &Fence,
    mut allowed: Vec<KubernetesRuntime>,
    assignments: &[failover::Assignment],
) -> Result<failover::Plan> {
    let placement = &workload.spec.placement;
    let provisioned = demand::provision_unserved(ctx, placement, fence, &allowed).await?;
    allowed.extend(provisioned);
    let (now, after) = (chrono::Utc::now(), ctx.settings.failover_after);
    let plan = failover::plan(placement, &allowed, assignments, now, after)?;
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
    Ok(plan)
}

fn ready_of(instance: &WorkloadInstance) -> Option<&Condition> {
    let status = instance.status.as_ref()?;
    qleetos_crds::Conditions::condition(status, qleetos_crds::READY)
}

/// The Workload's instances, from the watch cache (the hot path: no API list per reconcile).
fn cached_instances(ctx: &Context, workload: &Workload) -> Vec<WorkloadInstance> {
    let Some(uid) = workload.metadata.uid.as_deref() else {
        return Vec::new();
    };
    ctx.caches
        .instances_by_owner
        .owned_by(uid, &ctx.caches.instances)
        .into_iter()
        .filter(|i| i.metadata.namespace == workload.metadata.namespace)
        .map(|i| (*i).clone())
        .collect()
}

fn is_owned_by(instance: &WorkloadInstance, workload: &Workload) -> bool {
    let uid = workload.metadata.uid.as_deref();
    instance
        .owner_references()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid)
}

/// The Workload's instances, listed from the API (deletion must not act on a stale cache).
async fn owned_instances(
    instances: &Api<WorkloadInstance>,
    workload: &Workload,
) -> Result<Vec<WorkloadInstance>> {
    let selector = format!("{WORKLOAD_LABEL}={}", label_value(&workload.name_any()));
    let params = ListParams::default().labels(&selector);
    // Every instance made before the Workload was deleted is at least as old as the Workload
    // this reconcile reads: a list not older than it (served from the API server's cache
    // instead of a quorum read of every instance) misses none. When that cache lags too far
    // behind (504 "Too large resource version"), a quorum read it is.
    let from_cache = match workload.resource_version() {
        Some(version) => {
            let at_least = params
                .clone()
                .at(&version)
                .matching(VersionMatch::NotOlderThan);
            instances.list(&at_least).await
        }
        None => instances.list(&params).await,
    };
    let listed = match from_cache {
        Err(kube::Error::Api(status)) if status.code == 504 => instances.list(&params).await,
        other => other,
    }
    .map_err(Error::Management)?;
    Ok(listed
        .items
        .into_iter()
        .filter(|i| is_owned_by(i, workload))
        .collect())
}

/// The instance carrying `workload` to one runtime, created with the instance Qleet's
/// finalizer so that Qleet need not add it in a write of its own.
fn desired_instance(workload: &Workload, placement: &Selected, name: &str) -> WorkloadInstance {
    let mut instance = WorkloadInstance::new(
        name,
        WorkloadInstanceSpec {
            workload_ref: Some(WorkloadRef {
                name: workload.name_any(),
                generation: workload.metadata.generation,
            }),
            runtime_ref: RuntimeRef {
                name: placement.runtime.clone(),
            },
            manifests: workload.spec.manifests.clone(),
            images: workload.spec.images.clone(),
            expose: workload.spec.expose.clone(),
            needs: workload.spec.needs.clone(),
        },
    );
    instance.metadata.labels =
        Some([(WORKLOAD_LABEL.to_owned(), label_value(&workload.name_any()))].into());
    instance.metadata.owner_references = workload.controller_owner_ref(&()).map(|o| vec![o]);
    instance.metadata.annotations = placement
        .replaces
        .as_ref()
        .map(|home| [(REPLACES_ANNOTATION.to_owned(), home.clone())].into());
    instance.metadata.finalizers = Some(vec![INSTANCE_FINALIZER.to_owned()]);
    instance
}

/// Whether `current` already has everything `wanted` sets: its spec, label, owner and
/// finalizer.
fn is_up_to_date(current: &WorkloadInstance, wanted: &WorkloadInstance) -> bool {
    let contains = |have: &[String], want: &Option<Vec<String>>| {
        want.iter().flatten().all(|w| have.contains(w))
    };
    let labels = current.labels();
    let owners = current.owner_references();
    same_json(&current.spec, &wanted.spec)
        && failover_status::replaces_of(current) == failover_status::replaces_of(wanted)
        && wanted
            .labels()
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
        && wanted.owner_references().iter().all(|o| owners.contains(o))
        && contains(current.finalizers(), &wanted.metadata.finalizers)
}

async fn apply_instance(
    instances: &Api<WorkloadInstance>,
    wanted: &WorkloadInstance,
) -> Result<WorkloadInstance> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    instances
        .patch(&wanted.name_any(), &params, &Patch::Apply(wanted))
        .await
        .map_err(Error::Management)
}

/// Deletes the instances no longer selected, except those on a runtime being deleted while
/// their replacement is not Ready yet (make before break): those are kept, and returned as
/// placements so the status shows where the workload still runs.
async fn remove_unselected(
    ctx: &Context,
    instances: &Api<WorkloadInstance>,
    existing: Vec<WorkloadInstance>,
    selected: &[Selected],
    placements: &[PlacementStatus],
) -> Result<Vec<PlacementStatus>> {
    let mut leaving = Vec::new();
    for instance in existing {
        let runtime_name = &instance.spec.runtime_ref.name;
        if selected.iter().any(|s| &s.runtime == runtime_name) {
            continue;
        }
        let runtime = ctx.caches.runtime(runtime_name);
        let deleting = runtime.as_ref().is_some_and(|r| {
            r.metadata.deletion_timestamp.is_some()
                && r.spec.deletion_policy == DeletionPolicy::Wait
        });
        let region = runtime
            .as_ref()
            .map(|r| r.spec.region.clone())
            .unwrap_or_default();
        if deleting && !placements.iter().any(|p| p.ready && p.region == region) {
            leaving.push(leaving_placement(&instance, region));
            continue;
        }
        tracing::info!(instance = %key_of(&instance), "placement moved away; deleting instance");
        delete_instance(instances, &instance.name_any()).await?;
    }
    Ok(leaving)
}

fn leaving_placement(instance: &WorkloadInstance, region: String) -> PlacementStatus {
    let runtime = instance.spec.runtime_ref.name.clone();
    PlacementStatus {
        message: format!(
            "runtime {runtime} is being deleted; the workload stays there until a placement in region {region} is Ready"
        ),
        runtime,
        region,
        instance: instance.name_any(),
        ready: instance.is_ready_at_current_generation(),
        reason: Reason::RuntimeDeleting.into(),
        urls: urls_of(instance),
        replaces: failover_status::replaces_of(instance),
    }
}

async fn delete_instance(instances: &Api<WorkloadInstance>, name: &str) -> Result<()> {
    delete_if_present(instances, name).await.map(drop)
}

fn placement_status(
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
    }
}

fn urls_of(instance: &WorkloadInstance) -> Vec<String> {
    instance
        .status
        .as_ref()
        .map(|s| s.urls.clone())
        .unwrap_or_default()
}

fn ready_condition(placements: &[PlacementStatus], fenced_out: usize) -> Condition {
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
fn is_failure(reason: &str) -> bool {
    class_of(reason) == Class::Failed
}

/// The placements the Workload's readiness counts: not those a Ready failover placement
/// stands in for.
fn counted(placements: &[PlacementStatus]) -> Vec<&PlacementStatus> {
    placements
        .iter()
        .filter(|p| !failover_status::is_covered(p, placements))
        .collect()
}

/// Ready=False `UnknownImageContainer` when `spec.images` names a container no pod template
/// has (the override would change nothing), keeping what the placements say in the message.
fn with_image_check(workload: &Workload, ready: Condition) -> Condition {
    let spec = &workload.spec;
    let unmatched = unmatched_image_keys(&spec.manifests, spec.images.keys());
    if unmatched.is_empty() {
        return ready;
    }
    let mut message = describe_unmatched_image_keys(&spec.manifests, &unmatched);
    if !ready.is_true() {
        message.push_str(&format!(
            "; placements: {}: {}",
            ready.reason, ready.message
        ));
    }
    Condition::ready(false, Reason::UnknownImageContainer, message)
}

/// A placement that started or stopped failing since the last status.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PlacementChange<'a> {
    Failed(&'a PlacementStatus),
    Recovered(&'a PlacementStatus),
}

fn is_failing(placement: &PlacementStatus) -> bool {
    !placement.ready && is_failure(&placement.reason)
}

/// The placements whose failure started (or changed reason) or ended between `previous` and
/// `current`, so each transition is told once, not on every reconcile.
fn placement_changes<'a>(
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
async fn emit_events(
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
async fn tell_failover_step(workload: &Workload, ctx: &Context, step: Step) {
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
fn event_note(mut note: String) -> String {
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

async fn write_status(
    workload: &Workload,
    ctx: &Context,
    placements: Vec<PlacementStatus>,
    ready: Condition,
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
    };
    let api: Api<Workload> = Api::namespaced(ctx.client.clone(), &namespace_of(workload)?);
    let current = workload.status.as_ref();
    let metrics = (&*ctx.metrics, CONTROLLER);
    apply_status_if_changed(&api, &name_of(workload)?, current, &status, metrics).await
}

/// Deletes every instance; true once they are gone (their own finalizers remove the objects
/// from the runtimes first). Waiting for them is normal, not a failure. While the watch cache
/// still shows instances they are deleted from it; only the last look, before the Workload is
/// let go, lists them from the API (deletion must not act on a stale cache), so deleting N
/// Workloads costs N lists, not one per pass.
async fn cleanup(workload: &Workload, ctx: &Context) -> Result<bool> {
    let instances: Api<WorkloadInstance> =
        Api::namespaced(ctx.client.clone(), &namespace_of(workload)?);
    let cached = cached_instances(ctx, workload);
    let remaining = if cached.is_empty() {
        owned_instances(&instances, workload).await?
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
