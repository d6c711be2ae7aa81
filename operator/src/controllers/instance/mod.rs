//! WorkloadInstance Qleet: applies one Workload's objects to one runtime, within what the
//! instance's namespace may do there (its tenancy fence) and as the tenant's identity; prunes
//! what is no longer wanted, reads rollout health back, and removes everything on deletion.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use qleetos_crds::Reason;
use qleetos_crds::{AppliedObject, DependencyStatus, ResourceHealth, WorkloadInstance};
use qleetos_crds::{
    ServiceProfile, SupportService, SupportServiceProfile, TenantPolicy, WorkloadServiceDependency,
};

mod admission;
mod build;
mod chart;
mod cleanup;
mod dereference;
mod observed;
pub(crate) mod plan;
mod planned_services;
mod service_dependencies;
mod status;
mod stop;
#[cfg(test)]
mod tests;

use super::namespace_of;
use build::Built;
use dereference::Plan;
use stop::{Hold, Stop};

use crate::applier::live::LiveObjects;
use crate::applier::{self, Applier, Desired};
use crate::context::{Context, Next};
use crate::dependencies::{self, Needs, services};
use crate::error::{Error, Result};
use crate::finalizer::{self, Phase};
use crate::queue::triggers::{self, Triggers};
use crate::queue::worker::Qleet;
use crate::render::field_manager;
use crate::runtime_client::{RuntimeClient, TenantNamespace};
use crate::tenancy::Fence;

pub const CONTROLLER: &str = "workloadinstance";
/// Held until every object the instance applied is gone from its runtime.
pub const FINALIZER: &str = "qleetos.io/runtime-objects";
/// How soon an instance whose runtime is busy (all its reconcile slots taken) tries again.
const SLOT_RETRY: Duration = Duration::from_millis(100);
/// How often an instance waiting for its runtime looks again.
const RUNTIME_WAIT: Duration = Duration::from_secs(5);
/// How often an instance waiting for a support service looks again; the service's status
/// changes notify it sooner.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(30);

/// The WorkloadInstance Qleet.
pub fn qleet() -> Qleet<WorkloadInstance> {
    Qleet {
        api: |client, namespace| Api::namespaced(client, namespace.unwrap_or_default()),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes (its applied objects' drift comes from [`crate::queue::drift`]); what its
/// namespace may do (a TenantPolicy, the namespace's labels); a profile that may now provide
/// what it needs; a support service on its runtime it may depend on; a service dependency
/// naming its workload (before or after the change), and that dependency's profile.
pub fn notified_by() -> Triggers {
    Triggers::of::<WorkloadInstance>()
        .watches::<TenantPolicy>(|ctx, _| {
            triggers::Target::all(ctx.caches.instances.state(), |_| true)
        })
        .watches::<PartialObjectMeta<Namespace>>(|ctx, change| {
            if !change.differs(|namespace| namespace.metadata.labels.clone()) {
                return Vec::new();
            }
            let namespace = change.after.metadata.name.clone();
            triggers::Target::all(ctx.caches.instances.state(), |instance| {
                instance.metadata.namespace == namespace
            })
        })
        .watches::<SupportServiceProfile>(|ctx, change| {
            if !change.intent_changed() {
                return Vec::new();
            }
            triggers::Target::all(ctx.caches.instances.state(), dependencies::depends)
        })
        .watches::<SupportService>(|ctx, change| {
            let runtime = &change.after.spec.runtime_ref.name;
            triggers::Target::all(ctx.caches.instances.state(), |instance| {
                &instance.spec.runtime_ref.name == runtime && dependencies::depends(instance)
            })
        })
        .watches::<WorkloadServiceDependency>(|ctx, change| {
            if !change.deleted && !change.intent_changed() {
                return Vec::new();
            }
            let named = |workload: &str| {
                change.after.spec.workloads.iter().any(|w| w == workload)
                    || change
                        .before
                        .is_some_and(|b| b.spec.workloads.iter().any(|w| w == workload))
            };
            triggers::Target::all(ctx.caches.instances.state(), |instance| {
                instance.metadata.namespace == change.after.metadata.namespace
                    && named(&services::workload_of(instance))
            })
        })
        .watches::<ServiceProfile>(|ctx, change| {
            if !change.intent_changed() {
                return Vec::new();
            }
            let profile = change.after.metadata.name.clone().unwrap_or_default();
            let users: Vec<_> = ctx
                .caches
                .service_dependencies
                .state()
                .into_iter()
                .filter(|d| d.spec.profile_ref.name == profile)
                .collect();
            triggers::Target::all(ctx.caches.instances.state(), |instance| {
                let workload = services::workload_of(instance);
                users.iter().any(|d| {
                    d.metadata.namespace == instance.metadata.namespace
                        && d.spec.workloads.contains(&workload)
                })
            })
        })
}

/// Converges one WorkloadInstance, or removes its objects when it is being deleted.
pub async fn reconcile(instance: Arc<WorkloadInstance>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<WorkloadInstance> =
        Api::namespaced(ctx.client.clone(), &namespace_of(&*instance)?);
    let runtime = &instance.spec.runtime_ref.name;
    // Before taking a slot: waiting for the caches must not hold the runtime's slots.
    let live = ctx.live.ready(runtime).await;
    let Some(_slot) = ctx.runtime_slot(runtime) else {
        return Ok(Next::After(SLOT_RETRY));
    };
    match finalizer::phase(&api, FINALIZER, instance).await? {
        Phase::Apply(instance) => deploy(&instance, &ctx, live.as_ref()).await,
        Phase::Cleanup(instance) => match cleanup::cleanup(&instance, &ctx, live.as_ref()).await? {
            Some(waiting) => {
                status::write_condition(&instance, &ctx, waiting).await?;
                Ok(Next::After(ctx.settings.progress_poll))
            }
            None => {
                finalizer::release(&api, FINALIZER, &*instance).await?;
                Ok(Next::Done)
            }
        },
        Phase::Gone => Ok(Next::Done),
    }
}

/// Converges the instance's objects, or writes why it holds; `live` are its runtime's drift
/// caches, when running.
async fn deploy(
    instance: &WorkloadInstance,
    ctx: &Context,
    live: Option<&LiveObjects>,
) -> Result<Next> {
    match converge(instance, ctx, live).await {
        Ok(next) => Ok(next),
        Err(Stop::Hold(hold)) => status::hold_pass(instance, ctx, hold).await,
        Err(Stop::Failed(error)) => Err(error),
    }
}

/// One pass, step by step: dereference (runtime, fence, clients) → a chart rendered into
/// manifests → validate (admission,
/// `expose`) → the dependency graph in order (support services, then back-end services) →
/// build (generated objects first, rendering, the fence over every object) → apply and
/// report. A step that cannot go on stops the pass with `?`.
async fn converge(
    instance: &WorkloadInstance,
    ctx: &Context,
    live: Option<&LiveObjects>,
) -> Result<Next, Stop> {
    let plan = dereference::plan(instance, ctx).await?;
    let (instance, chart) = chart::materialize(instance, ctx, &plan).await?;
    let instance = instance.as_ref();
    admission::admit(instance, ctx, &plan.fence)?;
    build::validate_expose(instance)?;
    let needs = dependencies_ready(instance, ctx, &plan.fence).await?;
    let (statuses, connections) =
        service_dependencies::services_ready(instance, ctx, &plan, &needs).await?;
    let mut built = build::build(instance, &plan, &needs, &connections, &statuses).await?;
    built.chart = chart;
    Ok(apply(instance, ctx, live, &plan, built, statuses).await?)
}

/// Applies what was built as the tenant, after preparing its namespaces, and reports the
/// outcome with the objects' health.
async fn apply(
    instance: &WorkloadInstance,
    ctx: &Context,
    live: Option<&LiveObjects>,
    plan: &Plan,
    built: Built,
    statuses: Vec<DependencyStatus>,
) -> Result<Next> {
    let Built {
        desired,
        unresolved,
        resolve_failure,
        generated,
        previous,
        chart,
    } = built;
    if let Err(error) = prepare_namespaces(plan, &desired).await {
        let outcome = status::previous_outcome(previous, error);
        return status::finish(instance, ctx, outcome, Vec::new(), statuses, chart).await;
    }
    let uid = instance.metadata.uid.clone().unwrap_or_default();
    let previous = observed::with_observed(previous, live, instance);
    let found_again = |object: &AppliedObject| observed::found_again(live, instance, object);
    if let Some(pending) = applier::with_pending(&previous, &desired, found_again) {
        status::record_inventory(instance, ctx, pending).await?;
    }
    let applier = Applier {
        client: &plan.tenant,
        owner_uid: &uid,
        field_manager: field_manager(&uid),
        adopt: plan.fence.allows_adoption(),
        live,
    };
    let mut outcome = applier.converge(&desired, &unresolved, &previous).await;
    if outcome.failure.is_none() {
        outcome.failure = resolve_failure;
    }
    let health = match read_all_health(&plan.operator, &outcome.applied, &generated.checks).await {
        Ok(health) => health,
        Err(error) => {
            outcome.failure.get_or_insert(error);
            Vec::new()
        }
    };
    status::finish(instance, ctx, outcome, health, statuses, chart).await
}

async fn read_all_health(
    client: &RuntimeClient,
    applied: &[AppliedObject],
    checks: &[qleetos_crds::HealthCheck],
) -> Result<Vec<ResourceHealth>> {
    let mut health = applier::read_health(client, applied).await?;
    health.extend(applier::read_checks(client, checks).await?);
    Ok(health)
}

/// The support services the instance needs on its runtime (created on first need), or the
/// hold: waiting while one is not Ready yet (not a failure), refused when no profile can
/// provide a need.
async fn dependencies_ready(
    instance: &WorkloadInstance,
    ctx: &Context,
    fence: &Fence,
) -> Result<Needs, Stop> {
    let capabilities = instance.spec.capabilities();
    if capabilities.is_empty() {
        return Ok(Needs::default());
    }
    if let Err(violation) = fence.check_capabilities(&capabilities) {
        let message = format!("nothing applied: {violation}");
        return Err(Hold::refused(Reason::TenancyViolation, message).into());
    }
    ctx.caches.ready().await?;
    let runtime = &instance.spec.runtime_ref.name;
    let needs = match dependencies::ensure(ctx, &capabilities, runtime).await {
        Ok(needs) => needs,
        Err(error @ Error::Management(_)) => return Err(error.into()),
        Err(error) => return Err(Hold::refused(error.reason(), error.to_string()).into()),
    };
    match needs.waiting_on(runtime) {
        None => Ok(needs),
        Some((reason, waiting)) => {
            let mut hold = Hold::waiting(reason, waiting);
            hold.next = Next::After(DEPENDENCY_WAIT);
            Err(hold.with_dependencies(needs.statuses).into())
        }
    }
}

/// Creates the runtime namespaces the objects go to (or checks they were created for this
/// tenant) and binds the tenant's role there, as the operator (only namespaces the fence
/// allowed reach this point); then makes sure the runtime's tenant admission guard is
/// enforced before anything of the tenant is applied.
async fn prepare_namespaces(plan: &Plan, desired: &[Desired]) -> Result<()> {
    let namespaces: BTreeSet<&str> = desired
        .iter()
        .filter_map(|d| d.resolved.object.namespace.as_deref())
        .collect();
    for namespace in &namespaces {
        let tenant = TenantNamespace {
            tenant: plan.fence.namespace(),
            pod_security: plan.fence.pod_security(namespace),
            adopt: plan.fence.adopts_namespace(namespace),
        };
        plan.operator
            .ensure_tenant_namespace(namespace, &tenant)
            .await?;
        if let Some(role) = plan.fence.tenant_role(namespace) {
            plan.operator
                .ensure_tenant_binding(namespace, &role, &plan.fence.identity())
                .await?;
        }
    }
    if let Some(namespace) = namespaces.first() {
        plan.operator
            .ensure_tenant_guard(&plan.tenant, namespace)
            .await?;
    }
    Ok(())
}
