//! Runtimes made from a KubernetesRuntimeProfile: the provider creates the cluster, then it
//! gets its profile's support services, and only then is it Ready for Workloads. Once no
//! WorkloadInstance has used it for the profile's idle period it deletes itself; its
//! deletion removes what QleetOS installed on it, then the cluster.

use std::time::Duration;

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::events::EventType;
use qleetos_crds::Reason;
use qleetos_crds::{
    Condition, ConditionStatus, Conditions, DependencyStatus, IdleAction, KubernetesRuntime,
    KubernetesRuntimeProfile, KubernetesRuntimeStatus, ProvisioningPhase, ProvisioningStatus,
    REACHABLE, SupportService,
};

use super::{Observation, observe, observed_status, reachable_condition, status_base};
use crate::context::{Context, Next, key_of};
use crate::controllers::{apply_status, name_of};
use crate::dependencies;
use crate::engine::lifecycle::{self, Dependency, Retention, Teardown, Use};
use crate::error::{Error, Result};
use crate::provisioning::{self, Progress};

/// One pass's verdict on a provisioned runtime.
struct Verdict {
    phase: ProvisioningPhase,
    ready: Condition,
    reachable: Option<Condition>,
    cluster: Option<String>,
    support_services: Vec<DependencyStatus>,
}

/// Provisions (or keeps) the cluster, installs the profile's support services, and retires
/// the runtime once it has been idle long enough.
pub async fn converge(runtime: &KubernetesRuntime, ctx: &Context) -> Result<Next> {
    let profile_name = runtime.profile().unwrap_or_default().to_owned();
    let profile = Api::<KubernetesRuntimeProfile>::all(ctx.client.clone())
        .get_opt(&profile_name)
        .await
        .map_err(Error::Management)?;
    let retention = profile.as_ref().map_or(Retention::Keep, retention_of);
    let tracked = lifecycle::track_use(runtime, ctx, retention);
    let Some(profile) = profile else {
        let message = format!(
            "KubernetesRuntimeProfile {profile_name} does not exist; create it again, or delete this runtime"
        );
        let verdict = Verdict::failed(Reason::ProfileNotFound, message, None);
        write(runtime, ctx, verdict, &tracked, None).await?;
        return Ok(Next::After(ctx.settings.probe_interval));
    };
    if tracked.verdict == lifecycle::Verdict::Retire {
        let why = format!(
            "runtime {} has been unused for {}s (idle policy of profile {profile_name}); removing it and its cluster",
            name_of(runtime)?,
            profile.spec.idle.after_seconds,
        );
        return lifecycle::retire(runtime, ctx, why).await;
    }
    let progress = match provisioning::ensure(ctx, runtime, &profile).await {
        Ok(progress) => progress,
        Err(error @ Error::Provisioning { .. }) => {
            let verdict = Verdict::failed(error.reason(), error.to_string(), None);
            write(runtime, ctx, verdict, &tracked, None).await?;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    let (verdict, observed) = if progress.phase == ProvisioningPhase::Provisioned {
        let observed = observe(runtime, ctx).await;
        let verdict = judge(runtime, ctx, &profile, progress, &observed).await?;
        (verdict, Some(observed))
    } else {
        let waiting = waiting(runtime, &profile, &progress.message);
        (Verdict::provisioning(waiting, progress.cluster), None)
    };
    let ready = verdict.ready.is_true();
    write(runtime, ctx, verdict, &tracked, observed.as_ref()).await?;
    let next = if ready {
        ctx.settings.probe_interval
    } else {
        ctx.settings.progress_poll
    };
    Ok(tracked.next(Next::After(next)))
}

/// What the profile's idle policy makes of an unused runtime.
fn retention_of(profile: &KubernetesRuntimeProfile) -> Retention {
    match profile.spec.idle.policy {
        IdleAction::Keep => Retention::Keep,
        _ => {
            let after = u64::try_from(profile.spec.idle.after_seconds).unwrap_or(0);
            Retention::RemoveAfter(Duration::from_secs(after))
        }
    }
}

impl Verdict {
    fn failed(reason: Reason, message: String, cluster: Option<String>) -> Self {
        Self {
            phase: ProvisioningPhase::Failed,
            ready: Condition::ready(false, reason, message),
            reachable: None,
            cluster,
            support_services: Vec::new(),
        }
    }

    fn provisioning(message: String, cluster: Option<String>) -> Self {
        Self {
            phase: ProvisioningPhase::Provisioning,
            ready: Condition::ready(false, Reason::Provisioning, message),
            reachable: None,
            cluster,
            support_services: Vec::new(),
        }
    }
}

/// `provisioning <region> from profile <profile> (<detail>)`: what Workloads waiting on the
/// runtime show.
fn waiting(
    runtime: &KubernetesRuntime,
    profile: &KubernetesRuntimeProfile,
    detail: &str,
) -> String {
    format!(
        "provisioning {} from profile {} ({detail})",
        runtime.spec.region,
        profile.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A created cluster is Ready once its API answers, its workers are registered and its
/// profile's support services are Ready.
async fn judge(
    runtime: &KubernetesRuntime,
    ctx: &Context,
    profile: &KubernetesRuntimeProfile,
    progress: Progress,
    observed: &Result<Observation>,
) -> Result<Verdict> {
    let mut verdict = Verdict::provisioning(String::new(), progress.cluster);
    verdict.phase = ProvisioningPhase::Provisioned;
    verdict.reachable = Some(reachable_condition(observed));
    let observation = match observed {
        Ok(observation) => observation,
        Err(error) => {
            let detail = format!("cluster created, its API does not answer yet: {error}");
            verdict.ready.message = waiting(runtime, profile, &detail);
            return Ok(verdict);
        }
    };
    let desired = profile.desired_workers();
    if observation.node_count < desired {
        let detail = format!(
            "control plane ready, {}/{desired} workers",
            observation.node_count
        );
        verdict.ready.message = waiting(runtime, profile, &detail);
        return Ok(verdict);
    }
    let name = name_of(runtime)?;
    let needs = match dependencies::ensure(ctx, &profile.spec.support_services, &name).await {
        Ok(needs) => needs,
        Err(error @ Error::Management(_)) => return Err(error),
        Err(error) => {
            verdict.ready = Condition::ready(false, error.reason(), error.to_string());
            return Ok(verdict);
        }
    };
    verdict.support_services = needs.statuses.clone();
    if let Some((_, message)) = needs.waiting_on(&name) {
        let detail = format!("installing support services: {message}");
        verdict.ready.message = waiting(runtime, profile, &detail);
        return Ok(verdict);
    }
    verdict.ready = Condition::ready(
        true,
        Reason::Provisioned,
        format!(
            "cluster from profile {} answers (API server {}, {} nodes)",
            profile.metadata.name.as_deref().unwrap_or_default(),
            observation.server_version,
            observation.node_count
        ),
    );
    Ok(verdict)
}

async fn write(
    runtime: &KubernetesRuntime,
    ctx: &Context,
    verdict: Verdict,
    tracked: &Use,
    observed: Option<&Result<Observation>>,
) -> Result<()> {
    let name = name_of(runtime)?;
    let previous = runtime.status.clone().unwrap_or_default();
    let was = previous.provisioning.clone().unwrap_or_default();
    let message = verdict.ready.message.clone();
    let provisioning = ProvisioningStatus {
        phase: verdict.phase,
        message: message.clone(),
        cluster: verdict.cluster.or(was.cluster.clone()),
        unused_since: tracked.unused_since.clone(),
        user_count: i64::try_from(tracked.users.len()).unwrap_or(i64::MAX),
    };
    let mut conditions = vec![verdict.ready.clone()];
    conditions.extend(verdict.reachable);
    let mut status = match observed {
        Some(observed) => observed_status(runtime, &previous, observed, conditions),
        None => status_base(runtime, &previous, conditions),
    };
    status.provisioning = Some(provisioning);
    status.support_services = verdict.support_services;
    announce(runtime, ctx, &previous, &status).await;
    apply_status(
        &Api::<KubernetesRuntime>::all(ctx.client.clone()),
        &name,
        &status,
    )
    .await
}

/// Events for the transitions operators care about: a provider failure (each new message),
/// and the cluster becoming Ready the first time.
async fn announce(
    runtime: &KubernetesRuntime,
    ctx: &Context,
    previous: &KubernetesRuntimeStatus,
    next: &KubernetesRuntimeStatus,
) {
    let was = previous.provisioning.clone().unwrap_or_default();
    let now = next.provisioning.clone().unwrap_or_default();
    if now.phase == ProvisioningPhase::Failed
        && (was.phase != ProvisioningPhase::Failed || was.message != now.message)
    {
        tracing::warn!(runtime = ?runtime.metadata.name, message = %now.message, "provisioning failed");
        ctx.event(
            runtime,
            EventType::Warning,
            Reason::ProvisioningFailed,
            now.message,
        )
        .await;
        return;
    }
    if next.is_ready() && !previous.is_ready() {
        let note = next
            .condition(qleetos_crds::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(runtime, EventType::Normal, Reason::Provisioned, note)
            .await;
    }
}

/// Its users, from the caches: the WorkloadInstances on it, and the Workloads that may
/// provision in its region from its profile (they count before their instance exists, so a
/// new runtime is not retired in the moment between its creation and its first instance).
fn users_of(runtime: &KubernetesRuntime, ctx: &Context) -> Vec<String> {
    let name = runtime.metadata.name.as_deref().unwrap_or_default();
    let allowed = std::cell::RefCell::new(std::collections::HashMap::new());
    // One fence per namespace, however many of its objects use the runtime.
    let usable = |ctx: &Context, namespace: Option<&str>, runtime: &KubernetesRuntime| {
        let namespace = namespace.unwrap_or_default().to_owned();
        *allowed
            .borrow_mut()
            .entry(namespace)
            .or_insert_with_key(|ns| may_use(ctx, Some(ns), runtime))
    };
    let mut users: Vec<String> = ctx
        .caches
        .instances
        .state()
        .iter()
        .filter(|i| i.spec.runtime_ref.name == name)
        .filter(|i| usable(ctx, i.metadata.namespace.as_deref(), runtime))
        .map(|i| format!("WorkloadInstance/{}", key_of(&**i)))
        .collect();
    let wants_it = |workload: &qleetos_crds::Workload| {
        let placement = &workload.spec.placement;
        workload.metadata.deletion_timestamp.is_none()
            && usable(ctx, workload.metadata.namespace.as_deref(), runtime)
            && placement.provision == qleetos_crds::Provisioning::IfNeeded
            && placement.regions.contains(&runtime.spec.region)
            && placement
                .runtime_profile
                .as_deref()
                .is_none_or(|p| Some(p) == runtime.profile())
            && !served_elsewhere(ctx, workload, runtime)
    };
    users.extend(
        ctx.caches
            .workloads
            .state()
            .iter()
            .filter(|w| wants_it(w))
            .map(|w| format!("Workload/{}", key_of(&**w))),
    );
    users.sort();
    users
}

/// Whether the fence of management namespace `namespace` lets it use `runtime` (a
/// provisioned runtime: only if it may provision from its profile): a refused Workload or
/// instance is nobody's user, so it keeps no cluster alive.
fn may_use(ctx: &Context, namespace: Option<&str>, runtime: &KubernetesRuntime) -> bool {
    ctx.caches
        .fence(
            namespace.unwrap_or_default(),
            &ctx.settings.system_namespace,
        )
        .allows_runtime(runtime)
}

/// Whether `workload` already runs Ready in `runtime`'s region on another runtime that is
/// Ready: then it does not need this one (e.g. a failover stand-in once the workload is
/// back home), though its placement would allow provisioning it.
fn served_elsewhere(
    ctx: &Context,
    workload: &qleetos_crds::Workload,
    runtime: &KubernetesRuntime,
) -> bool {
    let name = runtime.metadata.name.as_deref().unwrap_or_default();
    ctx.caches.instances.state().iter().any(|instance| {
        let other = &instance.spec.runtime_ref.name;
        instance.metadata.namespace == workload.metadata.namespace
            && instance.spec.workload_ref.as_ref().map(|w| &w.name)
                == workload.metadata.name.as_ref()
            && other != name
            && instance.is_ready_at_current_generation()
            && ctx
                .caches
                .runtime(other)
                .is_some_and(|r| r.spec.region == runtime.spec.region && r.is_ready())
    })
}

impl Dependency for KubernetesRuntime {
    const NOUN: &'static str = "cluster";

    fn users(&self, ctx: &Context) -> Vec<String> {
        users_of(self, ctx)
    }

    /// None: the Qleet's release step has waited for every WorkloadInstance on it to move
    /// (with its own condition and Event) before the teardown; a Workload that would
    /// provision in its region does not hold a runtime being deleted.
    fn removal_blocked_by(&self, _ctx: &Context) -> Vec<String> {
        Vec::new()
    }

    fn unused_since(&self) -> Option<&str> {
        self.status
            .as_ref()?
            .provisioning
            .as_ref()?
            .unused_since
            .as_deref()
    }

    fn installed_on_it(&self, ctx: &Context) -> Vec<Arc<SupportService>> {
        dependencies::services_on(ctx, self.metadata.name.as_deref().unwrap_or_default())
    }

    /// Removes the cluster with the provider that made it.
    async fn remove_own(&self, ctx: &Context) -> Result<Option<String>> {
        let name = name_of(self)?;
        let profile = Api::<KubernetesRuntimeProfile>::all(ctx.client.clone())
            .get_opt(self.profile().unwrap_or_default())
            .await
            .map_err(Error::Management)?;
        let waiting = provisioning::remove(ctx, self, profile.as_ref()).await?;
        if waiting.is_none() {
            let note = format!("runtime {name}: its cluster is removed");
            ctx.event(self, EventType::Normal, Reason::Deprovisioned, note)
                .await;
            ctx.pool.forget(&name);
        }
        Ok(waiting)
    }
}

/// Removes what QleetOS installed on the cluster, then the cluster: `true` once both are gone.
pub async fn teardown(runtime: &KubernetesRuntime, ctx: &Context) -> Result<bool> {
    match lifecycle::teardown(runtime, ctx).await? {
        Teardown::Done => Ok(true),
        Teardown::Removing(waiting) => {
            write_deprovisioning(runtime, ctx, waiting).await?;
            Ok(false)
        }
        Teardown::InUse(users) => {
            let waiting = format!("waiting for {} to let go of it", users.join(", "));
            write_deprovisioning(runtime, ctx, waiting).await?;
            Ok(false)
        }
    }
}

async fn write_deprovisioning(
    runtime: &KubernetesRuntime,
    ctx: &Context,
    message: String,
) -> Result<()> {
    let previous = runtime.status.clone().unwrap_or_default();
    let unchanged = previous
        .provisioning
        .as_ref()
        .is_some_and(|p| p.phase == ProvisioningPhase::Deprovisioning && p.message == message);
    if unchanged {
        return Ok(());
    }
    let mut status = status_base(
        runtime,
        &previous,
        vec![
            Condition::ready(false, Reason::Deprovisioning, message.clone()),
            Condition::new(
                REACHABLE,
                ConditionStatus::Unknown,
                Reason::Deprovisioning,
                "",
            ),
        ],
    );
    status.provisioning = Some(ProvisioningStatus {
        phase: ProvisioningPhase::Deprovisioning,
        message,
        ..previous.provisioning.clone().unwrap_or_default()
    });
    let name = name_of(runtime)?;
    apply_status(
        &Api::<KubernetesRuntime>::all(ctx.client.clone()),
        &name,
        &status,
    )
    .await
}
