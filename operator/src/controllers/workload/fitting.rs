//! A Workload's placement preferences (its own, or its namespace's TenantPolicy default)
//! applied to the runtimes it may use: those with room for what it requests, of the first
//! overflow pool with room, in order of preference; the runtime an overflow pool provisions
//! where nothing has room; and the room each new placement takes, reserved until its
//! instance is in the caches.

use std::collections::BTreeSet;

use kube::runtime::events::EventType;
use qleetos_crds::{
    KubernetesRuntime, Placement, PlacementPreferences, Provisioning, Reason, Resources, Workload,
};

use crate::capacity::{self, Commitments, Shortfall};
use crate::context::Context;
use crate::error::Result;
use crate::placement::{Rank, Selected, name_of};
use crate::provisioning::demand;
use crate::tenancy::Fence;

/// The runtimes left to the placement and what it lacks.
#[derive(Debug, Default)]
pub(crate) struct Fitted {
    pub(crate) allowed: Vec<KubernetesRuntime>,
    pub(crate) rank: Rank,
    /// Regions where nothing has room (and no overflow runtime is provisioned).
    pub(crate) short: Vec<Shortfall>,
    preferences: Option<PlacementPreferences>,
    request: Resources,
}

/// `allowed` under the Workload's preferences; as it is when there are none.
pub(crate) fn fit(
    workload: &Workload,
    ctx: &Context,
    fence: &Fence,
    allowed: Vec<KubernetesRuntime>,
    current: &BTreeSet<String>,
) -> Fitted {
    let Some(preferences) = workload
        .spec
        .placement
        .preferences
        .as_ref()
        .or_else(|| fence.placement_preferences())
        .cloned()
    else {
        return Fitted {
            allowed,
            ..Fitted::default()
        };
    };
    let request = capacity::request_of(&workload.spec.manifests);
    let commitments = commitments(workload, ctx);
    let placement = &workload.spec.placement;
    let shaped = capacity::shape(
        placement,
        &preferences,
        request,
        allowed,
        current,
        &commitments,
    );
    Fitted {
        allowed: shaped.allowed,
        rank: shaped.rank,
        short: shaped.short,
        preferences: Some(preferences),
        request,
    }
}

fn commitments(workload: &Workload, ctx: &Context) -> Commitments {
    let instances = ctx.caches.instances.state();
    let uid = workload.metadata.uid.as_deref().unwrap_or_default();
    Commitments::of(instances.iter().map(|i| &**i), &ctx.reservations, uid)
}

/// Provisions the overflow runtime of each short region (when the placement may provision),
/// saying so in a Normal Event when it is created; it joins the runtimes allowed while its
/// capacity is unknown or has room.
pub(crate) async fn overflow(
    workload: &Workload,
    ctx: &Context,
    fence: &Fence,
    fitted: &mut Fitted,
) -> Result<()> {
    let placement = &workload.spec.placement;
    for short in std::mem::take(&mut fitted.short) {
        let Some(profile) = overflow_profile(placement, &short) else {
            fitted.short.push(short);
            continue;
        };
        let found =
            demand::provision_overflow(ctx, placement, fence, &short.region, profile).await?;
        let Some((runtime, created)) = found else {
            fitted.short.push(short);
            continue;
        };
        if created {
            let note = format!(
                "{}: provisioning runtime {} from KubernetesRuntimeProfile {profile}",
                short.message,
                name_of(&runtime)
            );
            ctx.event(workload, EventType::Normal, Reason::Overflow, note)
                .await;
        }
        admit(fitted, runtime, short, ctx, workload);
    }
    Ok(())
}

/// The overflow runtimes a pass would provision, created nowhere (for a plan).
pub(crate) fn planned_overflow(
    workload: &Workload,
    ctx: &Context,
    fence: &Fence,
    fitted: &mut Fitted,
) -> Result<Vec<KubernetesRuntime>> {
    let placement = &workload.spec.placement;
    let mut provisioned = Vec::new();
    for short in std::mem::take(&mut fitted.short) {
        let Some(profile) = overflow_profile(placement, &short) else {
            fitted.short.push(short);
            continue;
        };
        let runtime = demand::wanted_overflow(ctx, placement, fence, &short.region, profile)?;
        match ctx.caches.runtime(name_of(&runtime)) {
            Some(existing) => admit(fitted, (*existing).clone(), short, ctx, workload),
            None => {
                fitted.allowed.push(runtime.clone());
                provisioned.push(runtime);
            }
        }
    }
    Ok(provisioned)
}

fn overflow_profile<'a>(placement: &Placement, short: &'a Shortfall) -> Option<&'a str> {
    (placement.provision == Provisioning::IfNeeded)
        .then_some(short.overflow_profile.as_deref())
        .flatten()
}

/// `runtime` joins the allowed ones unless its measured capacity has no room.
fn admit(
    fitted: &mut Fitted,
    runtime: KubernetesRuntime,
    short: Shortfall,
    ctx: &Context,
    workload: &Workload,
) {
    let free = capacity::free_on(&runtime, &commitments(workload, ctx));
    if free.is_none_or(|f| f.holds(fitted.request)) {
        fitted.allowed.push(runtime);
    } else {
        fitted.short.push(short);
    }
}

/// Reserves the room of each newly selected runtime; false (nothing reserved) when another
/// pass took it since [`fit`] looked.
pub(crate) fn reserve(
    workload: &Workload,
    ctx: &Context,
    fitted: &Fitted,
    selected: &[Selected],
    current: &BTreeSet<String>,
) -> bool {
    let Some(preferences) = &fitted.preferences else {
        return true;
    };
    let uid = workload.metadata.uid.clone().unwrap_or_default();
    let new: Vec<String> = selected
        .iter()
        .map(|s| s.runtime.clone())
        .filter(|r| !current.contains(r))
        .collect();
    let request = fitted.request;
    ctx.reservations
        .reserve_if(&uid, &new, request, |reservations| {
            if preferences.fit == qleetos_crds::Fit::Ignore {
                return true;
            }
            let instances = ctx.caches.instances.state();
            let commitments = Commitments::of(instances.iter().map(|i| &**i), reservations, &uid);
            new.iter().all(|name| {
                ctx.caches.runtime(name).is_none_or(|runtime| {
                    capacity::free_on(&runtime, &commitments).is_none_or(|f| f.holds(request))
                })
            })
        })
}
