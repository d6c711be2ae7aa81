//! SupportService Qleet: installs one SupportServiceProfile into one runtime with the
//! operator's own identity, once what the profile requires there is Ready; judges its
//! health; derives its users from the live objects needing it on every pass; removes it
//! after the grace period once nobody needs it, and never while anybody does.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::api::Api;
use qleetos_crds::Reason;
use qleetos_crds::{
    AppliedObject, ChartStatus, Condition, DependencyState, KubernetesRuntime, ResourceHealth,
    SupportService, SupportServiceProfile, SupportServiceStatus,
};
use qleetos_crds::{ServiceProfile, WorkloadInstance};

use super::apply_status;
use crate::applier::{self, Applier, Desired};
use crate::context::{Context, Next, key_of};
use crate::dependencies;
use crate::dependencies::connection;
use crate::dependencies::source::Source;
use crate::engine::lifecycle::{self, Dependency, Teardown, Verdict};
use crate::error::{Error, Result};
use crate::finalizer::{self, Phase};
use crate::health::{describe_failures, describe_unhealthy, summarize};
use crate::queue::triggers::{Target, Triggers};
use crate::queue::worker::Qleet;
use crate::render::{Owner, field_manager, render};
use crate::runtime_client::TenantNamespace;

mod dependency;
#[cfg(test)]
mod tests;

pub use dependency::users_of;

pub const CONTROLLER: &str = "supportservice";
/// Held until every object the service applied is gone from its runtime.
pub const FINALIZER: &str = "qleetos.io/support-objects";
/// How often a service waiting for something (its runtime, what it requires) looks again;
/// the change it waits for notifies it sooner.
const WAIT_POLL: Duration = Duration::from_secs(30);

/// The SupportService Qleet.
pub fn qleet() -> Qleet<SupportService> {
    Qleet {
        api: |client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes; its profile's (a changed profile rolls out to every runtime, a newly
/// recorded revision is reported); another
/// service on its runtime (it may require it); any change of an instance on its runtime
/// that needs something (its users are derived from them).
pub fn notified_by() -> Triggers {
    Triggers::of::<SupportService>()
        .watches::<SupportServiceProfile>(|ctx, change| {
            let revision = |p: &SupportServiceProfile| p.status.as_ref().and_then(|s| s.revision);
            let recorded = change.before.map(revision) != Some(revision(change.after));
            if !change.intent_changed() && !recorded {
                return Vec::new();
            }
            let profile = change.after.metadata.name.as_deref().unwrap_or_default();
            Target::all(ctx.caches.support_services.state(), |service| {
                service.spec.service.is_none() && service.spec.profile_ref.name == profile
            })
        })
        .watches::<ServiceProfile>(|ctx, change| {
            if !change.intent_changed() {
                return Vec::new();
            }
            let profile = change.after.metadata.name.as_deref().unwrap_or_default();
            Target::all(ctx.caches.support_services.state(), |service| {
                service.spec.service.is_some() && service.spec.profile_ref.name == profile
            })
        })
        .watches::<SupportService>(|ctx, change| {
            let (runtime, uid) = (
                &change.after.spec.runtime_ref.name,
                &change.after.metadata.uid,
            );
            Target::all(dependencies::services_on(ctx, runtime), |other| {
                &other.metadata.uid != uid
            })
        })
        .watches::<WorkloadInstance>(|ctx, change| {
            let depended = change.before.is_some_and(dependencies::depends);
            if !dependencies::depends(change.after) && !depended {
                return Vec::new();
            }
            let runtime = &change.after.spec.runtime_ref.name;
            Target::all(dependencies::services_on(ctx, runtime), |_| true)
        })
}

pub async fn reconcile(service: Arc<SupportService>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<SupportService> = Api::all(ctx.client.clone());
    ctx.caches.ready().await?;
    match finalizer::phase(&api, FINALIZER, service).await? {
        Phase::Apply(service) => install(&service, &ctx).await,
        Phase::Cleanup(service) => match remove(&service, &ctx).await? {
            Some(waiting) => {
                // Users going away notify it; removals in progress are polled.
                let poll = if waiting.reason == Reason::InUse {
                    WAIT_POLL
                } else {
                    ctx.settings.progress_poll
                };
                write(&service, &ctx, waiting).await?;
                Ok(Next::After(poll))
            }
            None => {
                finalizer::release(&api, FINALIZER, &*service).await?;
                Ok(Next::Done)
            }
        },
        Phase::Gone => Ok(Next::Done),
    }
}

/// One pass's findings, written as the status.
struct Report {
    state: DependencyState,
    reason: Reason,
    message: String,
    users: Vec<String>,
    unused_since: Option<String>,
    inventory: Vec<AppliedObject>,
    health: Vec<ResourceHealth>,
    profile_generation: Option<i64>,
    /// The profile revision this pass installs.
    revision: Option<i64>,
    chart: Option<ChartStatus>,
}

impl Report {
    fn from_previous(service: &SupportService, users: Vec<String>) -> Self {
        let status = service.status.clone().unwrap_or_default();
        Self {
            state: DependencyState::Pending,
            reason: Reason::Pending,
            message: String::new(),
            users,
            unused_since: status.unused_since,
            inventory: status.applied_objects,
            health: status.health,
            profile_generation: status.profile_generation,
            revision: status.revision,
            chart: status.chart,
        }
    }

    fn waiting(mut self, reason: Reason, message: String) -> Self {
        self.state = DependencyState::Pending;
        self.reason = reason;
        self.message = message;
        self
    }

    fn failed(mut self, error: &Error) -> Self {
        self.state = DependencyState::Failed;
        self.reason = error.reason();
        self.message = error.to_string();
        self
    }
}

async fn install(service: &SupportService, ctx: &Context) -> Result<Next> {
    let users = service.users(ctx);
    let report = Report::from_previous(service, users.clone());
    let profile_name = &service.spec.profile_ref.name;
    let (source, revision) = match Source::at_revision(service, ctx).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            let kind = Source::profile_kind(service);
            let message = format!("{kind} {profile_name} does not exist");
            let report = report.waiting(Reason::ProfileNotFound, message);
            write(service, ctx, report).await?;
            return Ok(Next::After(WAIT_POLL));
        }
        Err(error @ Error::Management(_)) => return Err(error),
        Err(error) => {
            let report = Report {
                revision: service.spec.revision,
                ..report
            };
            write(service, ctx, report.failed(&error)).await?;
            return Ok(Next::After(WAIT_POLL));
        }
    };
    let report = Report { revision, ..report };
    let tracked = lifecycle::track(
        users,
        service.unused_since(),
        source.retention(),
        Utc::now(),
    );
    if tracked.verdict == Verdict::Retire {
        let why = format!(
            "{} has been unused for its grace period; removing it",
            key_of(service)
        );
        return lifecycle::retire(service, ctx, why).await;
    }
    let report = Report {
        unused_since: tracked.unused_since.clone(),
        ..report
    };
    let runtime_name = &service.spec.runtime_ref.name;
    let runtime = match ctx.caches.runtime(runtime_name) {
        Some(runtime) if runtime.is_reachable() => runtime,
        _ => {
            let message = format!("runtime {runtime_name} is not reachable; installing once it is");
            write(
                service,
                ctx,
                report.waiting(Reason::WaitingForRuntime, message),
            )
            .await?;
            return Ok(Next::After(WAIT_POLL));
        }
    };
    let report = match requirements_ready(service, &source, ctx).await {
        Ok(None) => report,
        Ok(Some(waiting)) => {
            write(
                service,
                ctx,
                report.waiting(Reason::WaitingForSupportService, waiting),
            )
            .await?;
            return Ok(Next::After(WAIT_POLL));
        }
        Err(error) => {
            write(service, ctx, report.failed(&error)).await?;
            return Ok(Next::After(WAIT_POLL));
        }
    };
    let report = converge(service, &source, &runtime, ctx, report).await?;
    let next = if report.state == DependencyState::Ready {
        Next::Done
    } else {
        Next::After(ctx.settings.progress_poll)
    };
    write(service, ctx, report).await?;
    Ok(tracked.next(next))
}

/// `None` once every capability the source requires is Ready on the same runtime (creating the
/// missing services), else what it waits on.
async fn requirements_ready(
    service: &SupportService,
    source: &Source,
    ctx: &Context,
) -> Result<Option<String>> {
    let runtime = &service.spec.runtime_ref.name;
    let profiles = ctx.caches.profiles.state();
    for (capability, required) in source.requires().iter().zip(source.required(&profiles)?) {
        let needed = dependencies::ensure_support_service(ctx, &required, runtime).await?;
        let status = dependencies::status_of(capability, &needed);
        if status.state != DependencyState::Ready {
            let needs = dependencies::Needs {
                statuses: vec![status],
                ..Default::default()
            };
            return Ok(needs.waiting_on(runtime).map(|(_, message)| message));
        }
    }
    Ok(None)
}

/// Applies the profile's objects with the operator's identity and judges their health.
async fn converge(
    service: &SupportService,
    source: &Source,
    runtime: &KubernetesRuntime,
    ctx: &Context,
    mut report: Report,
) -> Result<Report> {
    let client = if source.in_management() {
        ctx.management.clone()
    } else {
        match ctx.pool.client_for(runtime).await {
            Ok(client) => client,
            Err(error) => return Ok(report.failed(&error)),
        }
    };
    let uid = service.metadata.uid.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = source.namespace();
    let owner = Owner {
        namespace: "SupportService",
        name: &name,
        uid: &uid,
    };
    let manifests = match source.objects(runtime, ctx, &client).await {
        Ok((manifests, chart)) => {
            report.chart = chart;
            manifests
        }
        Err(error @ Error::Management(_)) => return Err(error),
        Err(error) => return Ok(report.failed(&error)),
    };
    let rendered = match render(&manifests, &Default::default(), &owner) {
        Ok(rendered) => rendered,
        Err(error) => return Ok(report.failed(&error)),
    };
    let (desired, unresolved, waiting_for_kind) =
        applier::resolve(&client, rendered, namespace).await?;
    if let Some(allowed) = source.confined_to() {
        if let Err(error) = confined(service, &desired, allowed) {
            return Ok(report.failed(&error));
        }
        // A back-end service lives in its tenant's runtime namespace: created as the
        // tenant's (the runtime namespace is named like the management one), so the tenant's
        // own objects may go there too. In the management cluster it is the namespace of the
        // dependency itself, which exists.
        if !source.in_management() {
            let fence = ctx.caches.fence(allowed, &ctx.settings.system_namespace);
            let tenant = TenantNamespace {
                tenant: allowed,
                pod_security: fence.pod_security(allowed),
                adopt: fence.adopts_namespace(allowed),
            };
            if let Err(error) = client.ensure_tenant_namespace(allowed, &tenant).await {
                return Ok(report.failed(&error));
            }
        }
    }
    if let Some(pending) = applier::with_pending(&report.inventory, &desired, |_| false) {
        report.inventory = pending;
        write_inventory(service, ctx, &report.inventory).await?;
    }
    let applier = applier_for(&client, &uid);
    let outcome = applier
        .converge(&desired, &unresolved, &report.inventory)
        .await;
    report.inventory = outcome.inventory;
    report.profile_generation = source.generation();
    if let Some(error) = outcome.failure {
        return Ok(report.failed(&error));
    }
    let mut health = applier::read_health(&client, &outcome.applied).await?;
    health.extend(applier::read_checks(&client, &source.health_checks(runtime)).await?);
    if let Some((secret, keys)) = source.exported_secret(runtime) {
        health.push(exported_secret_health(&client, namespace, &secret, &keys).await?);
    }
    report.health = health;
    let mut report = judge(report, waiting_for_kind);
    if let Some(waiting) = outcome.waiting
        && report.state != DependencyState::Failed
    {
        report.state = DependencyState::Installing;
        report.reason = Reason::WaitingForHook;
        report.message = waiting;
    }
    Ok(report)
}

fn judge(mut report: Report, waiting_for_kind: Option<Error>) -> Report {
    if let Some(failures) = describe_failures(&report.health) {
        report.state = DependencyState::Failed;
        report.reason = Reason::InstallFailed;
        report.message = failures;
    } else if let Some(waiting) = waiting_for_kind {
        report.state = DependencyState::Installing;
        report.reason = Reason::Installing;
        report.message = format!("waiting for its CRDs to be served: {waiting}");
    } else if report.health.iter().all(|h| h.healthy) {
        report.state = DependencyState::Ready;
        report.reason = Reason::Installed;
        report.message = format!("installed; {}", summarize(&report.health));
    } else {
        report.state = DependencyState::Installing;
        report.reason = Reason::Installing;
        report.message = format!(
            "{}: {}",
            summarize(&report.health),
            describe_unhealthy(&report.health)
        );
    }
    report
}

/// Every object of a back-end service must be namespaced and in its workloads' namespace:
/// a tenant's dependency never installs anything elsewhere.
fn confined(service: &SupportService, desired: &[Desired], allowed: &str) -> Result<()> {
    for (index, wanted) in desired.iter().enumerate() {
        let object = &wanted.resolved.object;
        if object.namespace.as_deref() != Some(allowed) {
            let place = object.namespace.as_deref().map_or_else(
                || "cluster-scoped".to_owned(),
                |n| format!("in namespace {n}"),
            );
            return Err(Error::InvalidServiceProfile {
                profile: service.spec.profile_ref.name.clone(),
                problem: format!(
                    "manifest #{index} ({} {}) is {place}; a ServiceProfile installs only into its workloads' namespace ({allowed}); put cluster-wide parts in a SupportServiceProfile it requires",
                    object.kind, object.name
                ),
            });
        }
    }
    Ok(())
}

/// Whether the Secret a back-end service exports exists with its keys, as a health entry.
async fn exported_secret_health(
    client: &crate::runtime_client::RuntimeClient,
    namespace: &str,
    name: &str,
    keys: &[String],
) -> Result<ResourceHealth> {
    let live = connection::secret_data(client, namespace, name).await?;
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !live.as_ref().is_some_and(|data| data.contains_key(*k)))
        .collect();
    let healthy = live.is_some() && missing.is_empty();
    let message = match (&live, missing.is_empty()) {
        (None, _) => Some(format!("Secret {name} is not written yet")),
        (Some(_), false) => Some(format!(
            "Secret {name} lacks {}",
            missing
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (Some(_), true) => None,
    };
    Ok(ResourceHealth {
        kind: "Secret".to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        desired: 1,
        updated: i64::from(live.is_some()),
        available: i64::from(healthy),
        healthy,
        reason: message.as_ref().map(|_| "NotWritten".to_owned()),
        message,
    })
}

/// Removes what the service installed, unless something still needs it. `Some` while
/// waiting (users remain, or objects are still going).
async fn remove(service: &SupportService, ctx: &Context) -> Result<Option<Report>> {
    let report = Report::from_previous(service, Vec::new());
    Ok(match lifecycle::teardown(service, ctx).await? {
        Teardown::InUse(users) => {
            let message = format!(
                "not removed while in use by {}; remove those needs first",
                users.join(", ")
            );
            Some(Report { users, ..report }.waiting(Reason::InUse, message))
        }
        Teardown::Removing(message) => Some(Report {
            state: DependencyState::Removing,
            reason: Reason::Removing,
            message,
            ..report
        }),
        Teardown::Done => None,
    })
}

async fn write_inventory(
    service: &SupportService,
    ctx: &Context,
    inventory: &[AppliedObject],
) -> Result<()> {
    let mut status = service.status.clone().unwrap_or_default();
    status.applied_objects = inventory.to_vec();
    put_status(service, ctx, &status).await
}

async fn write(service: &SupportService, ctx: &Context, report: Report) -> Result<()> {
    let previous = service.status.clone().unwrap_or_default();
    let ready = Condition::ready(
        report.state == DependencyState::Ready,
        report.reason,
        report.message,
    )
    .with_generation(service.metadata.generation);
    let status = SupportServiceStatus {
        conditions: qleetos_crds::merged(&previous.conditions, vec![ready]),
        observed_generation: service.metadata.generation,
        state: report.state,
        profile_generation: report.profile_generation,
        revision: report.revision,
        user_count: i64::try_from(report.users.len()).unwrap_or(i64::MAX),
        users: report.users,
        unused_since: report.unused_since,
        applied_objects: report.inventory,
        health: report.health,
        chart: report.chart,
    };
    if status == previous {
        return Ok(());
    }
    put_status(service, ctx, &status).await
}

async fn put_status(
    service: &SupportService,
    ctx: &Context,
    status: &SupportServiceStatus,
) -> Result<()> {
    let api: Api<SupportService> = Api::all(ctx.client.clone());
    let name = service.metadata.name.clone().unwrap_or_default();
    apply_status(&api, &name, status).await
}

/// The applier of one service: the operator's identity, the service's uid as owner.
fn applier_for<'a>(client: &'a crate::runtime_client::RuntimeClient, uid: &'a str) -> Applier<'a> {
    Applier {
        client,
        owner_uid: uid,
        field_manager: field_manager(uid),
        adopt: false,
        live: None,
    }
}
