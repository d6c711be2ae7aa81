//! KubernetesRuntimeProfile Qleet: reports whether a profile is consistent (one default per
//! region) and which runtimes are made from it; on deletion, waits while any is left (they
//! go when idle, or when deleted by hand), so no runtime loses the profile it is torn down by.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use qleetos_crds::Reason;
use qleetos_crds::{
    Condition, KubernetesRuntime, KubernetesRuntimeProfile, KubernetesRuntimeProfileStatus,
};

use super::apply_status;
use crate::context::{Context, Next};
use crate::error::Result;
use crate::finalizer::{self, Phase};
use crate::queue::triggers::{Target, Triggers};
use crate::queue::worker::Qleet;

#[cfg(test)]
#[path = "runtimeprofile_tests.rs"]
mod tests;

/// Held while any KubernetesRuntime is made from the profile.
pub const FINALIZER: &str = "qleetos.io/provisioned-runtimes";

/// The KubernetesRuntimeProfile Qleet.
pub fn qleet() -> Qleet<KubernetesRuntimeProfile> {
    Qleet {
        api: |client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes, another profile's (defaults may clash), and its runtimes' (counted).
pub fn notified_by() -> Triggers {
    Triggers::of::<KubernetesRuntimeProfile>()
        .watches::<KubernetesRuntimeProfile>(|ctx, change| {
            let uid = &change.after.metadata.uid;
            Target::all(ctx.caches.runtime_profiles.state(), |other| {
                &other.metadata.uid != uid
            })
        })
        .watches::<KubernetesRuntime>(|ctx, change| {
            let Some(profile) = change.after.profile() else {
                return Vec::new();
            };
            ctx.caches
                .runtime_profiles
                .get(&ObjectRef::new(profile))
                .map(|profile| vec![Target::of(&*profile)])
                .unwrap_or_default()
        })
}

pub async fn reconcile(profile: Arc<KubernetesRuntimeProfile>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<KubernetesRuntimeProfile> = Api::all(ctx.client.clone());
    ctx.caches.ready().await?;
    match finalizer::phase(&api, FINALIZER, profile).await? {
        Phase::Apply(profile) => {
            let runtimes = runtimes_of(&profile, &ctx);
            let others = ctx.caches.runtime_profiles.state();
            let ready = match problems(&profile, &others, &ctx) {
                None => Condition::ready(
                    true,
                    Reason::Valid,
                    format!(
                        "serves {}; {} runtime(s) made from it",
                        profile.spec.regions.join(", "),
                        runtimes.len()
                    ),
                ),
                Some(problems) => Condition::ready(false, Reason::InvalidRuntimeProfile, problems),
            };
            write(&profile, &ctx, ready, runtimes).await?;
            Ok(Next::Done)
        }
        Phase::Cleanup(profile) => {
            let runtimes = runtimes_of(&profile, &ctx);
            if runtimes.is_empty() {
                finalizer::release(&api, FINALIZER, &*profile).await?;
                return Ok(Next::Done);
            }
            let message = format!(
                "being deleted; waits for runtimes {} made from it (removed once idle, or delete them)",
                runtimes.join(", ")
            );
            let waiting = Condition::ready(false, Reason::InUse, message);
            write(&profile, &ctx, waiting, runtimes).await?;
            Ok(Next::After(ctx.settings.probe_interval))
        }
        Phase::Gone => Ok(Next::Done),
    }
}

fn runtimes_of(profile: &KubernetesRuntimeProfile, ctx: &Context) -> Vec<String> {
    let name = profile.metadata.name.as_deref();
    let mut runtimes: Vec<String> = ctx
        .caches
        .runtimes
        .state()
        .iter()
        .filter(|r| r.profile() == name)
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    runtimes.sort();
    runtimes
}

/// What would make the profile fail when used: another default profile for one of its
/// regions, or a provider this operator does not run.
pub fn problems(
    profile: &KubernetesRuntimeProfile,
    others: &[Arc<KubernetesRuntimeProfile>],
    ctx: &Context,
) -> Option<String> {
    let mut problems = Vec::new();
    if profile.spec.default {
        for other in others {
            if other.metadata.uid == profile.metadata.uid
                || !other.spec.default
                || other.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let shared: Vec<&str> = profile
                .spec
                .regions
                .iter()
                .filter(|r| other.spec.regions.contains(r))
                .map(String::as_str)
                .collect();
            if !shared.is_empty() {
                problems.push(format!(
                    "KubernetesRuntimeProfile {} is also the default for {}: keep one default per region",
                    other.metadata.name.as_deref().unwrap_or_default(),
                    shared.join(", ")
                ));
            }
        }
    }
    if profile.spec.provider == qleetos_crds::ProvisioningProvider::Local
        && ctx.settings.local_clusters.is_none()
    {
        problems.push(
            "the Local provider is not enabled on this operator (--local-clusters-bin-dir)"
                .to_owned(),
        );
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

async fn write(
    profile: &KubernetesRuntimeProfile,
    ctx: &Context,
    ready: Condition,
    runtimes: Vec<String>,
) -> Result<()> {
    let previous = profile.status.clone().unwrap_or_default();
    let status = KubernetesRuntimeProfileStatus {
        conditions: qleetos_crds::merged(
            &previous.conditions,
            vec![ready.with_generation(profile.metadata.generation)],
        ),
        observed_generation: profile.metadata.generation,
        runtime_count: i64::try_from(runtimes.len()).unwrap_or(i64::MAX),
        runtimes,
    };
    if status == previous {
        return Ok(());
    }
    let api: Api<KubernetesRuntimeProfile> = Api::all(ctx.client.clone());
    apply_status(
        &api,
        profile.metadata.name.as_deref().unwrap_or_default(),
        &status,
    )
    .await
}
