//! A Workload's placements for a plan: the runtimes its placement selects (with the ones it
//! would provision for regions nothing serves), each instance as the Workload Qleet would
//! write it, and each placement it would leave; nothing is created or deleted.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use qleetos_crds::{
    KubernetesRuntime, PlanAction, PlannedObject, PlannedPlacement, Workload, WorkloadInstance,
    WorkloadServiceDependency,
};

use super::fitting;
use super::instances::{Carried, cached_instances, desired_instance};
use crate::capacity::Shortfall;
use crate::context::Context;
use crate::controllers::instance::plan::{plan_instance, plan_unprovisioned};
use crate::controllers::namespace_of;
use crate::dependencies::services;
use crate::error::Result;
use crate::names::instance_name;
use crate::placement::{self, Selected};
use crate::provisioning::demand;

/// Every placement of `workload` as applying it would leave them. `workload` carries the
/// planned spec; its uid is the live Workload's, when there is one, so its instances count.
/// With `rebalance`, it is placed anew: its current placements are not kept.
pub(crate) async fn plan_workload(
    workload: &Workload,
    planned_dependencies: &[Arc<WorkloadServiceDependency>],
    ctx: &Context,
    rebalance: bool,
) -> Result<Vec<PlannedPlacement>> {
    ctx.caches.ready().await?;
    let mut workload = workload.clone();
    workload.metadata.uid = live_uid(&workload, ctx);
    let existing = cached_instances(ctx, &workload);
    let namespace = namespace_of(&workload)?;
    let fence = ctx.caches.fence(&namespace, &ctx.settings.system_namespace);
    let dependencies =
        services::dependencies_with(ctx, &namespace, &workload.name_any(), planned_dependencies);
    let candidates: Vec<KubernetesRuntime> = ctx
        .caches
        .runtimes
        .state()
        .iter()
        .filter(|r| fence.allows_runtime(r))
        .map(|r| (**r).clone())
        .collect();
    let spec_placement = &workload.spec.placement;
    let mut provisioned = demand::wanted_for_unserved(ctx, spec_placement, &fence, &candidates)?;
    let current: BTreeSet<String> = existing
        .iter()
        .filter(|_| !rebalance)
        .map(|i| i.spec.runtime_ref.name.clone())
        .collect();
    let mut fitted = fitting::fit(&workload, ctx, &fence, candidates, &current);
    provisioned.extend(fitting::planned_overflow(
        &workload,
        ctx,
        &fence,
        &mut fitted,
    )?);
    let mut candidates = fitted.allowed;
    candidates.extend(provisioned.iter().cloned());
    let selected = placement::select(spec_placement, &candidates, &current, &fitted.rank)?;
    let mut planned: Vec<PlannedPlacement> = fitted.short.iter().map(short_of_room).collect();
    for chosen in &selected {
        let new_runtime = provisioned
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(chosen.runtime.as_str()));
        let live = existing
            .iter()
            .find(|i| i.spec.runtime_ref.name == chosen.runtime);
        let instance = planned_instance(&workload, chosen, live);
        let mut placement = PlannedPlacement {
            runtime: chosen.runtime.clone(),
            region: chosen.region.clone(),
            ..Default::default()
        };
        match new_runtime {
            Some(runtime) => {
                placement.action = PlanAction::Provision;
                placement.profile = runtime.profile().map(str::to_owned);
                plan_unprovisioned(&instance, ctx, &fence, &dependencies, &mut placement)?;
            }
            None => plan_instance(&instance, ctx, &dependencies, &mut placement).await?,
        }
        planned.push(placement);
    }
    planned.extend(
        existing
            .iter()
            .filter(|i| {
                !selected
                    .iter()
                    .any(|s| s.runtime == i.spec.runtime_ref.name)
            })
            .map(|instance| {
                leaving(
                    instance,
                    rebalance.then(|| left_behind(&workload, instance, ctx)),
                )
            }),
    );
    Ok(planned)
}

/// A region where nothing has room: no placement there.
fn short_of_room(short: &Shortfall) -> PlannedPlacement {
    PlannedPlacement {
        region: short.region.clone(),
        action: PlanAction::Refused,
        message: Some(short.message.clone()),
        ..Default::default()
    }
}

fn live_uid(workload: &Workload, ctx: &Context) -> Option<String> {
    let namespace = workload.metadata.namespace.as_deref()?;
    let key = ObjectRef::new(&workload.name_any()).within(namespace);
    ctx.caches.workloads.get(&key)?.metadata.uid.clone()
}

/// The instance the Workload Qleet would write for `chosen`, with the live one's identity and
/// status (its inventory says what a pass would delete).
fn planned_instance(
    workload: &Workload,
    chosen: &Selected,
    live: Option<&WorkloadInstance>,
) -> WorkloadInstance {
    let name = live.map_or_else(
        || instance_name(&workload.name_any(), &chosen.runtime),
        ResourceExt::name_any,
    );
    let carried = Carried {
        template: workload.spec.template(),
        generation: workload.metadata.generation,
        revision: None,
    };
    let mut instance = desired_instance(workload, carried, chosen, &name);
    instance.metadata.namespace = workload.metadata.namespace.clone();
    if let Some(live) = live {
        instance.metadata.uid = live.metadata.uid.clone();
        instance.status = live.status.clone();
    }
    instance
}

/// What a rebalance leaves on the runtime of `instance`: nothing of the Workload's, and
/// whether QleetOS would then retire the runtime.
fn left_behind(workload: &Workload, instance: &WorkloadInstance, ctx: &Context) -> String {
    let runtime = &instance.spec.runtime_ref.name;
    let name = workload.name_any();
    let others = ctx.caches.instances.state().iter().any(|other| {
        let same_workload = other.metadata.namespace == workload.metadata.namespace
            && other
                .spec
                .workload_ref
                .as_ref()
                .is_some_and(|r| r.name == name);
        other.spec.runtime_ref.name == *runtime && !same_workload
    });
    let profile = ctx
        .caches
        .runtime(runtime)
        .and_then(|r| r.profile().map(str::to_owned));
    match (others, profile) {
        (true, _) => format!("moved off runtime {runtime}, which other placements still use"),
        (false, Some(profile)) => format!(
            "moved off runtime {runtime}, which is left with no placement: provisioned from \
             KubernetesRuntimeProfile {profile}, it is retired after the profile's idle time"
        ),
        (false, None) => format!(
            "moved off runtime {runtime}, which is left with no placement (QleetOS did not \
             provision it and does not remove it)"
        ),
    }
}

/// A placement the Workload would leave: its instance and every object it applied go.
fn leaving(instance: &WorkloadInstance, note: Option<String>) -> PlannedPlacement {
    let inventory = instance
        .status
        .as_ref()
        .map(|s| s.applied_objects.as_slice())
        .unwrap_or_default();
    PlannedPlacement {
        runtime: instance.spec.runtime_ref.name.clone(),
        region: String::new(),
        action: PlanAction::Delete,
        objects: inventory
            .iter()
            .map(|o| PlannedObject {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                action: PlanAction::Delete,
                ..Default::default()
            })
            .collect(),
        message: Some(note.unwrap_or_else(|| {
            "no longer selected: the placement and its objects are removed".to_owned()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{instance, workload};

    #[test]
    fn the_planned_instance_is_in_the_workloads_namespace_with_the_live_identity() {
        let web = workload("team-a", "web", &["eu-west"]);
        let chosen = Selected {
            runtime: "eu".into(),
            region: "eu-west".into(),
            replaces: None,
        };
        let fresh = planned_instance(&web, &chosen, None);
        // The fence, the rendered namespace and the tenant identity all follow it.
        assert_eq!(fresh.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(fresh.metadata.uid, None);
        let live = instance("team-a", "web", "eu");
        let planned = planned_instance(&web, &chosen, Some(&live));
        assert_eq!(planned.metadata.name, live.metadata.name);
        assert_eq!(planned.metadata.uid, live.metadata.uid);
    }
}
