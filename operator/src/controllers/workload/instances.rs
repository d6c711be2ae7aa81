//! The Workload's instances: one WorkloadInstance per placement, applied when it differs
//! from what is wanted, and removed once its placement is no longer selected.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use qleetos_crds::{
    DeletionPolicy, FIELD_MANAGER, PlacementStatus, Reason, RuntimeRef, Workload, WorkloadInstance,
    WorkloadInstanceSpec, WorkloadRef, WorkloadTemplate,
};

use super::WORKLOAD_LABEL;
use super::failover_status;
use super::failover_status::REPLACES_ANNOTATION;
use super::rollout::REVISION_ANNOTATION;
use super::status::urls_of;
use crate::context::{Context, key_of};
use crate::controllers::instance::FINALIZER as INSTANCE_FINALIZER;
use crate::controllers::same_json;
use crate::engine::writes::delete_if_present;
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::names::label_value;
use crate::placement::Selected;

/// The Workload's instances, from the watch cache (the hot path: no API list per reconcile).
pub(super) fn cached_instances(ctx: &Context, workload: &Workload) -> Vec<WorkloadInstance> {
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

pub(super) fn is_owned_by(instance: &WorkloadInstance, workload: &Workload) -> bool {
    let uid = workload.metadata.uid.as_deref();
    instance
        .owner_references()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid)
}

/// How long the last look before a Workload is let go waits for the instance cache to catch
/// up with the API server, before it lists from the API instead.
const CACHE_CATCH_UP: Duration = Duration::from_secs(1);

/// The Workload's instances for the last look before it is let go. Deletion must not act on a
/// stale cache, so the cache is trusted only once its watch has delivered an event at or past
/// the API server's current revision (read with a one-item list): every instance that exists
/// then is in it. Otherwise (a quiet cluster, where no instance event comes) they are listed
/// from the API, a quorum read that costs as much as the namespace holds instances.
pub(super) async fn last_look(
    ctx: &Context,
    instances: &Api<WorkloadInstance>,
    workload: &Workload,
) -> Result<Vec<WorkloadInstance>> {
    let current = instances
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(Error::Management)?
        .metadata
        .resource_version;
    let kind = WorkloadInstance::kind(&());
    let fence = current
        .as_deref()
        .and_then(|version| Fence::at(&kind, version));
    match fence {
        Some(fence) if ctx.fences.reached(&fence, CACHE_CATCH_UP).await => {
            Ok(cached_instances(ctx, workload))
        }
        _ => owned_instances(instances, workload).await,
    }
}

/// The Workload's instances, listed from the API (deletion must not act on a stale cache).
pub(super) async fn owned_instances(
    instances: &Api<WorkloadInstance>,
    workload: &Workload,
) -> Result<Vec<WorkloadInstance>> {
    let selector = format!("{WORKLOAD_LABEL}={}", label_value(&workload.name_any()));
    // A quorum read, not a list "not older than" the Workload from the API server's cache:
    // in a quiet cluster that cache may not catch up for a long time, and the client retries
    // its 504 "Too large resource version" for a minute before giving up.
    let listed = instances
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Management)?;
    Ok(listed
        .items
        .into_iter()
        .filter(|i| is_owned_by(i, workload))
        .collect())
}

/// What one placement's instance carries: a revision's template, the Workload generation it
/// belongs to, and (with a rollout) the revision's number.
pub(super) struct Carried {
    pub template: WorkloadTemplate,
    pub generation: Option<i64>,
    pub revision: Option<i64>,
}

/// The instance carrying `workload` to one runtime, created with the instance Qleet's
/// finalizer so that Qleet need not add it in a write of its own.
pub(super) fn desired_instance(
    workload: &Workload,
    carried: Carried,
    placement: &Selected,
    name: &str,
) -> WorkloadInstance {
    let template = carried.template;
    let mut instance = WorkloadInstance::new(
        name,
        WorkloadInstanceSpec {
            workload_ref: Some(WorkloadRef {
                name: workload.name_any(),
                generation: carried.generation,
            }),
            runtime_ref: RuntimeRef {
                name: placement.runtime.clone(),
            },
            manifests: template.manifests,
            chart: template.chart,
            images: template.images,
            expose: template.expose,
            needs: template.needs,
        },
    );
    instance.metadata.labels =
        Some([(WORKLOAD_LABEL.to_owned(), label_value(&workload.name_any()))].into());
    instance.metadata.owner_references = workload.controller_owner_ref(&()).map(|o| vec![o]);
    let annotations: BTreeMap<String, String> = placement
        .replaces
        .iter()
        .map(|home| (REPLACES_ANNOTATION.to_owned(), home.clone()))
        .chain(
            carried
                .revision
                .map(|r| (REVISION_ANNOTATION.to_owned(), r.to_string())),
        )
        .collect();
    instance.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    instance.metadata.finalizers = Some(vec![INSTANCE_FINALIZER.to_owned()]);
    instance
}

/// Whether `current` already has everything `wanted` sets: its spec, label, owner and
/// finalizer.
pub(super) fn is_up_to_date(current: &WorkloadInstance, wanted: &WorkloadInstance) -> bool {
    let contains = |have: &[String], want: &Option<Vec<String>>| {
        want.iter().flatten().all(|w| have.contains(w))
    };
    let labels = current.labels();
    let owners = current.owner_references();
    let revision = |i: &WorkloadInstance| i.annotations().get(REVISION_ANNOTATION).cloned();
    same_json(&current.spec, &wanted.spec)
        && failover_status::replaces_of(current) == failover_status::replaces_of(wanted)
        && (revision(wanted).is_none() || revision(current) == revision(wanted))
        && wanted
            .labels()
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
        && wanted.owner_references().iter().all(|o| owners.contains(o))
        && contains(current.finalizers(), &wanted.metadata.finalizers)
}

pub(super) async fn apply_instance(
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
pub(super) async fn remove_unselected(
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

pub(super) fn leaving_placement(instance: &WorkloadInstance, region: String) -> PlacementStatus {
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
        ..Default::default()
    }
}

pub(super) async fn delete_instance(instances: &Api<WorkloadInstance>, name: &str) -> Result<()> {
    delete_if_present(instances, name).await.map(drop)
}
