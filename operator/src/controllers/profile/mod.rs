//! SupportServiceProfile Qleet: reports where a profile is installed and, when it is
//! deleted, removes its unused SupportServices and waits, naming the users, while any is
//! still needed.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use qleetos_crds::Reason;
use qleetos_crds::staged::RolloutPhase;
use qleetos_crds::{Condition, SupportService, SupportServiceProfile, SupportServiceProfileStatus};

use super::apply_status;
use super::support::users_of;
use crate::context::{Context, Next};
use crate::engine::writes::delete_if_present;
use crate::error::Result;
use crate::finalizer::{self, Phase};
use crate::queue::triggers::{Target, Triggers};
use crate::queue::worker::Qleet;

pub mod revisions;
pub mod rollout;
#[cfg(test)]
mod tests;

use crate::engine::revisions::Revision;
use rollout::Driven;

pub const CONTROLLER: &str = "supportserviceprofile";
/// Held until no SupportService of the profile is left.
pub const FINALIZER: &str = "qleetos.io/support-services";
/// How often a deletion waiting on users looks again.
const IN_USE_POLL: std::time::Duration = std::time::Duration::from_secs(30);

/// The SupportServiceProfile Qleet.
pub fn qleet() -> Qleet<SupportServiceProfile> {
    Qleet {
        api: |client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes, and any change of a service installed from it (its status lists them).
pub fn notified_by() -> Triggers {
    Triggers::of::<SupportServiceProfile>().watches::<SupportService>(|ctx, change| {
        let profile = ObjectRef::new(&change.after.spec.profile_ref.name);
        ctx.caches
            .profiles
            .get(&profile)
            .map(|profile| vec![Target::of(&*profile)])
            .unwrap_or_default()
    })
}

pub async fn reconcile(profile: Arc<SupportServiceProfile>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<SupportServiceProfile> = Api::all(ctx.client.clone());
    ctx.caches.ready().await?;
    match finalizer::phase(&api, FINALIZER, profile).await? {
        Phase::Apply(profile) => {
            let services = installed(&profile, &ctx);
            let revision = revisions::record(&profile, &ctx).await?;
            let driven = rollout::drive(&profile, revision.number, &services, &ctx).await?;
            revisions::revisioned(&profile, &ctx)
                .prune(&revision, &in_use(&profile, &services, &driven))
                .await?;
            let ready = readiness(&profile, services.len(), &driven);
            let next = driven.next.map_or(Next::Done, Next::After);
            let status = Written {
                ready,
                revision: Some(revision),
                driven,
            };
            write(&profile, &ctx, &services, status).await?;
            Ok(next)
        }
        Phase::Cleanup(profile) => {
            let services = installed(&profile, &ctx);
            if services.is_empty() {
                revisions::revisioned(&profile, &ctx).remove_all().await?;
                finalizer::release(&api, FINALIZER, &*profile).await?;
                return Ok(Next::Done);
            }
            let waiting = retire_unused(&services, &ctx).await?;
            // Its services' changes (and removals) notify it; the poll is a safety net.
            let poll = if waiting.reason == Reason::InUse {
                IN_USE_POLL
            } else {
                ctx.settings.progress_poll
            };
            let status = Written {
                ready: waiting,
                revision: None,
                driven: Driven::default(),
            };
            write(&profile, &ctx, &services, status).await?;
            Ok(Next::After(poll))
        }
        Phase::Gone => Ok(Next::Done),
    }
}

fn installed(profile: &SupportServiceProfile, ctx: &Context) -> Vec<Arc<SupportService>> {
    installed_from(
        profile.metadata.name.as_deref().unwrap_or_default(),
        false,
        ctx,
    )
}

/// The SupportServices installed from profile `name` (a ServiceProfile when `service`).
pub(super) fn installed_from(name: &str, service: bool, ctx: &Context) -> Vec<Arc<SupportService>> {
    let mut services: Vec<Arc<SupportService>> = ctx
        .caches
        .support_services
        .state()
        .into_iter()
        .filter(|s| s.spec.profile_ref.name == name && s.spec.service.is_some() == service)
        .collect();
    services.sort_by(|a, b| a.spec.runtime_ref.name.cmp(&b.spec.runtime_ref.name));
    services
}

/// Deletes the services nobody uses; the condition names who uses the others.
pub(super) async fn retire_unused(
    services: &[Arc<SupportService>],
    ctx: &Context,
) -> Result<Condition> {
    let api: Api<SupportService> = Api::all(ctx.client.clone());
    let mut in_use = Vec::new();
    for service in services {
        let users = users_of(service, ctx);
        let name = service.metadata.name.clone().unwrap_or_default();
        if users.is_empty() {
            if service.metadata.deletion_timestamp.is_none() {
                delete_if_present(&api, &name).await?;
            }
        } else {
            in_use.push(format!(
                "{} (used by {})",
                service.spec.runtime_ref.name,
                users.join(", ")
            ));
        }
    }
    Ok(if in_use.is_empty() {
        Condition::ready(
            false,
            Reason::Deleting,
            format!("removing it from {} runtime(s)", services.len()),
        )
    } else {
        Condition::ready(
            false,
            Reason::InUse,
            format!(
                "deletion waits: still in use on {}; remove those needs first",
                in_use.join("; ")
            ),
        )
    })
}

/// What one pass writes into the status.
struct Written {
    ready: Condition,
    /// The latest revision; `None` keeps the recorded one.
    revision: Option<Revision>,
    driven: Driven,
}

/// Ready says whether the profile is usable and, with a rollout, where it is; a halted
/// rollout makes it not Ready until resumed or rolled back.
fn readiness(profile: &SupportServiceProfile, installed: usize, driven: &Driven) -> Condition {
    let message = format!(
        "provides {}; installed in {installed} runtime(s)",
        profile.spec.provides.join(", ")
    );
    match &driven.rollout {
        Some(rollout) if rollout.phase == RolloutPhase::Halted => {
            Condition::ready(false, Reason::RolloutHalted, rollout.message.clone())
        }
        Some(rollout) if rollout.phase != RolloutPhase::Complete => Condition::ready(
            true,
            Reason::Progressing,
            format!(
                "{message}; rolling out revision {}: {}",
                rollout.revision, rollout.message
            ),
        ),
        _ => Condition::ready(true, Reason::Valid, message),
    }
}

/// Revisions that must not be pruned: the latest, the stable one, pinned ones and any a
/// service is told to run.
fn in_use(
    profile: &SupportServiceProfile,
    services: &[Arc<SupportService>],
    driven: &Driven,
) -> BTreeSet<i64> {
    let rollout = driven
        .rollout
        .iter()
        .flat_map(|r| [r.revision, r.stable_revision]);
    let pinned = profile
        .spec
        .rollout
        .iter()
        .flat_map(|r| r.pinned.iter().map(|p| p.revision));
    let assigned = services.iter().filter_map(|s| s.spec.revision);
    rollout.chain(pinned).chain(assigned).collect()
}

async fn write(
    profile: &SupportServiceProfile,
    ctx: &Context,
    services: &[Arc<SupportService>],
    written: Written,
) -> Result<()> {
    let previous = profile.status.clone().unwrap_or_default();
    let installed_in: Vec<String> = services
        .iter()
        .map(|s| s.spec.runtime_ref.name.clone())
        .collect();
    let (revision, revision_hash) = match written.revision {
        Some(revision) => (Some(revision.number), Some(revision.hash)),
        None => (previous.revision, previous.revision_hash.clone()),
    };
    let status = SupportServiceProfileStatus {
        conditions: qleetos_crds::merged(
            &previous.conditions,
            vec![written.ready.with_generation(profile.metadata.generation)],
        ),
        observed_generation: profile.metadata.generation,
        installed_count: i64::try_from(installed_in.len()).unwrap_or(i64::MAX),
        installed_in,
        revision,
        revision_hash,
        rollout: written
            .driven
            .rollout
            .or(previous.rollout.clone())
            .filter(|_| profile.spec.rollout.is_some()),
        runtimes: written.driven.runtimes,
    };
    if status == previous {
        return Ok(());
    }
    let api: Api<SupportServiceProfile> = Api::all(ctx.client.clone());
    apply_status(
        &api,
        profile.metadata.name.as_deref().unwrap_or_default(),
        &status,
    )
    .await
}
