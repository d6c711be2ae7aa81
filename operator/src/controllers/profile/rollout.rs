//! Drives a profile's rollout (`spec.rollout`): which wave each runtime is in, how its
//! SupportService is doing, the revision each should run (written into its spec, which the
//! SupportService Qleet installs), and an Event at each transition. The decisions are the
//! engine's ([`crate::engine::waves`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use qleetos_crds::staged::{ProfileRollout, RuntimeRevision, StagedRolloutStatus};
use qleetos_crds::{DependencyState, SupportService, SupportServiceProfile};
use serde_json::json;

use crate::context::Context;
use crate::engine::waves::{self, Gates, Health, Member};
use crate::error::{Error, Result};

/// What the rollout says for the profile's status.
#[derive(Debug, Default)]
pub struct Driven {
    pub rollout: Option<StagedRolloutStatus>,
    pub runtimes: Vec<RuntimeRevision>,
    /// When to look again without being notified.
    pub next: Option<Duration>,
}

/// One pass of the rollout of revision `latest` over the profile's `services`.
pub async fn drive(
    profile: &SupportServiceProfile,
    latest: i64,
    services: &[Arc<SupportService>],
    ctx: &Context,
) -> Result<Driven> {
    let Some(rollout) = &profile.spec.rollout else {
        follow_the_profile(services, ctx).await?;
        return Ok(Driven::default());
    };
    let mut members: Vec<Member> = services
        .iter()
        .map(|service| member(rollout, service, ctx))
        .collect();
    waves::fill_percent_waves(&mut members, &rollout.waves);
    let gates = Gates::new(
        rollout.waves.len(),
        &members,
        rollout.bake_seconds,
        rollout.progress_deadline_seconds,
        false,
    );
    let previous = profile.status.as_ref().and_then(|s| s.rollout.as_ref());
    let controls = waves::Controls::of(profile.annotations());
    let step = waves::step(previous, latest, &members, gates, controls, Utc::now());
    for service in services {
        if let Some(revision) = step.assigned.get(&service.spec.runtime_ref.name) {
            assign(service, Some(*revision), ctx).await?;
        }
    }
    if let Some((reason, note)) = step.event {
        ctx.event_for(profile, reason, note).await;
    }
    let runtimes = members
        .iter()
        .zip(services)
        .map(|(member, service)| RuntimeRevision {
            runtime: member.name.clone(),
            wave: member
                .pinned
                .is_none()
                .then(|| u32::try_from(member.wave + 1).unwrap_or(u32::MAX)),
            pinned: member.pinned.is_some(),
            revision: step.assigned.get(&member.name).copied().unwrap_or(latest),
            installed_revision: service.status.as_ref().and_then(|s| s.revision),
            state: service.state().to_string(),
        })
        .collect();
    Ok(Driven {
        rollout: Some(step.status),
        runtimes,
        next: step.next,
    })
}

/// A runtime's place: its wave (the first matching, else the last), its pin, and what its
/// SupportService reports for the revision in its spec.
fn member(rollout: &ProfileRollout, service: &SupportService, ctx: &Context) -> Member {
    let name = service.spec.runtime_ref.name.clone();
    let runtime = ctx.caches.runtime(&name);
    let (region, labels) = runtime
        .as_ref()
        .map(|r| (r.spec.region.clone(), r.labels().clone()))
        .unwrap_or_default();
    let matches = |selection: &qleetos_crds::staged::RuntimeSelection| {
        selection.matches(&name, &region, &labels)
    };
    let wave = rollout
        .waves
        .iter()
        .position(&matches)
        .unwrap_or(rollout.waves.len());
    let pinned = rollout
        .pinned
        .iter()
        .find(|pin| matches(&pin.runtimes))
        .map(|pin| pin.revision);
    let status = service.status.clone().unwrap_or_default();
    let current = status.observed_generation == service.metadata.generation;
    let health = match status.state {
        DependencyState::Ready => Health::Healthy,
        DependencyState::Failed => Health::Failed(service.message()),
        _ => Health::Progressing(service.message()),
    };
    Member {
        name,
        wave,
        pinned,
        installed: status.revision.filter(|_| current),
        health,
    }
}

/// Without a rollout every service installs the profile as it is.
async fn follow_the_profile(services: &[Arc<SupportService>], ctx: &Context) -> Result<()> {
    for service in services {
        assign(service, None, ctx).await?;
    }
    Ok(())
}

async fn assign(service: &SupportService, revision: Option<i64>, ctx: &Context) -> Result<()> {
    if service.spec.revision == revision || service.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let api: Api<SupportService> = Api::all(ctx.client.clone());
    let patch = json!({"spec": {"revision": revision}});
    api.patch(
        &service.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Management)?;
    Ok(())
}

/// The revision a SupportService created now starts on: a pin's, else the stable one (a
/// runtime joining mid-rollout gets what has proven itself); `None` without a rollout.
pub fn initial_revision(
    profile: &SupportServiceProfile,
    runtime: &str,
    ctx: &Context,
) -> Option<i64> {
    let rollout = profile.spec.rollout.as_ref()?;
    let status = profile.status.as_ref()?;
    if let Some(found) = ctx.caches.runtime(runtime) {
        let pin = rollout.pinned.iter().find(|pin| {
            pin.runtimes
                .matches(runtime, &found.spec.region, found.labels())
        });
        if let Some(pin) = pin {
            return Some(pin.revision);
        }
    }
    status
        .rollout
        .as_ref()
        .map(|r| r.stable_revision)
        .or(status.revision)
}
