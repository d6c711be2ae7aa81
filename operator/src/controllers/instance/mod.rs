//! WorkloadInstance Qleet: applies one Workload's objects to one runtime, within what the
//! instance's namespace may do there (its tenancy fence) and as the tenant's identity; prunes
//! what is no longer wanted, reads rollout health back, and removes everything on deletion.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::EventType;
use qleetos_crds::Reason;
use qleetos_crds::{
    AppliedObject, Condition, Conditions, DependencyStatus, Expose, KubernetesRuntime,
    ResourceHealth, WorkloadInstance, WorkloadInstanceStatus,
};
use qleetos_crds::{
    ServiceProfile, SupportService, SupportServiceProfile, TenantPolicy, WorkloadServiceDependency,
};

mod admission;
mod cleanup;
mod service_dependencies;
#[cfg(test)]
mod tests;

use super::{apply_status_if_changed, name_of, namespace_of};
use crate::applier::live::LiveObjects;
use crate::applier::{self, Applier, Desired, Outcome};
use crate::context::{Context, Next, key_of};
use crate::dependencies::connection;
use crate::dependencies::generated::{self, Generated};
use crate::dependencies::{self, Needs, services};
use crate::error::{Error, Result};
use crate::finalizer::{self, Phase};
use crate::health::{describe_failures, describe_unhealthy};
use crate::queue::triggers::{self, Triggers};
use crate::queue::worker::Qleet;
use crate::render::{Owner, field_manager, render};
use crate::runtime_client::{RuntimeClient, TenantNamespace};
use crate::tenancy::{Fence, Target};

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
        Phase::Cleanup(instance) => match cleanup::cleanup(&instance, &ctx).await? {
            Some(waiting) => {
                write_condition(&instance, &ctx, waiting).await?;
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

/// Why a pass cannot apply anything now, and what to do meanwhile.
struct Hold {
    reason: Reason,
    condition: Condition,
    next: Next,
    /// A problem the user must fix (an Event says so), not a normal wait.
    warn: bool,
    /// Where the dependencies stand, when the pass got that far.
    dependencies: Vec<DependencyStatus>,
}

impl Hold {
    fn waiting(reason: Reason, message: String) -> Box<Self> {
        Box::new(Self {
            reason,
            condition: Condition::ready(false, reason, message),
            next: Next::After(RUNTIME_WAIT),
            warn: false,
            dependencies: Vec::new(),
        })
    }

    fn refused(reason: Reason, message: String) -> Box<Self> {
        Box::new(Self {
            reason,
            condition: Condition::ready(false, reason, message),
            next: Next::Done,
            warn: true,
            dependencies: Vec::new(),
        })
    }

    fn with_dependencies(mut self: Box<Self>, dependencies: Vec<DependencyStatus>) -> Box<Self> {
        self.dependencies = dependencies;
        self
    }
}

/// Everything a pass needs once the runtime is usable and the fence allows the runtime.
struct Plan {
    runtime: KubernetesRuntime,
    fence: Fence,
    operator: RuntimeClient,
    tenant: RuntimeClient,
}

/// Converges the instance's objects; `live` are its runtime's drift caches, when running.
async fn deploy(
    instance: &WorkloadInstance,
    ctx: &Context,
    live: Option<&LiveObjects>,
) -> Result<Next> {
    let plan = match plan(instance, ctx).await {
        Ok(plan) => plan,
        Err(hold) => return hold_pass(instance, ctx, hold).await,
    };
    if let Err(hold) = admission::admit(instance, ctx, &plan.fence) {
        return hold_pass(instance, ctx, hold).await;
    }
    if let Some(expose) = &instance.spec.expose
        && let Err(error) = generated::validate(expose, &instance.spec.manifests)
    {
        let hold = Hold::refused(error.reason(), error.to_string());
        return hold_pass(instance, ctx, hold).await;
    }
    let needs = match dependencies_ready(instance, ctx, &plan.fence).await? {
        Ok(needs) => needs,
        Err(hold) => return hold_pass(instance, ctx, hold).await,
    };
    let (statuses, connections) =
        match service_dependencies::services_ready(instance, ctx, &plan, &needs).await? {
            Ok(ready) => ready,
            Err(hold) => return hold_pass(instance, ctx, hold).await,
        };
    let generated = match generate_objects(instance, &needs) {
        Ok(generated) => generated,
        Err(error) => {
            let hold = Hold::refused(error.reason(), error.to_string());
            return hold_pass(instance, ctx, hold.with_dependencies(statuses)).await;
        }
    };
    let namespace = namespace_of(instance)?;
    let mut manifests = instance.spec.manifests.clone();
    connection::inject(&mut manifests, &connections);
    manifests.extend(generated.manifests.iter().cloned());
    manifests.extend(
        connections
            .iter()
            .map(|c| connection::secret_manifest(c, &namespace)),
    );
    let rendered = match render(&manifests, &instance.spec.images, &owner(instance)) {
        Ok(rendered) => rendered,
        Err(error) => {
            return hold_pass(
                instance,
                ctx,
                Hold::refused(error.reason(), error.to_string()),
            )
            .await;
        }
    };
    let (desired, unresolved, resolve_failure) =
        applier::resolve(&plan.operator, rendered, &namespace).await?;
    if let Err(hold) = check_fence(&plan.fence, &desired) {
        return hold_pass(instance, ctx, hold).await;
    }
    let previous = previous_inventory(instance);
    let desired = generated_first(&plan.operator, desired, &generated, &previous).await?;
    if let Err(error) = prepare_namespaces(&plan, &desired).await {
        let outcome = previous_outcome(previous, error);
        return finish(instance, ctx, outcome, Vec::new(), statuses).await;
    }
    if let Some(pending) = applier::with_pending(&previous, &desired) {
        record_inventory(instance, ctx, pending).await?;
    }
    let uid = instance.metadata.uid.clone().unwrap_or_default();
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
    finish(instance, ctx, outcome, health, statuses).await
}

/// The generated objects (route, certificate) come before the workload's own: while their
/// checks do not pass (the certificate is not issued yet), only they and what was applied
/// before are converged, and the workload's new objects wait for the next pass.
async fn generated_first(
    client: &RuntimeClient,
    desired: Vec<Desired>,
    generated: &Generated,
    previous: &[AppliedObject],
) -> Result<Vec<Desired>> {
    if generated.checks.is_empty() {
        return Ok(desired);
    }
    let checks = applier::read_checks(client, &generated.checks).await?;
    if checks.iter().all(|check| check.healthy) {
        return Ok(desired);
    }
    let is_generated = |wanted: &Desired| {
        generated
            .manifests
            .iter()
            .any(|m| m.kind() == wanted.manifest.kind() && m.name() == wanted.manifest.name())
    };
    Ok(desired
        .into_iter()
        .filter(|wanted| {
            is_generated(wanted)
                || applier::inventory::find(previous, &wanted.resolved.object).is_some()
        })
        .collect())
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
) -> Result<Result<Needs, Box<Hold>>> {
    let capabilities = instance.spec.capabilities();
    if capabilities.is_empty() {
        return Ok(Ok(Needs::default()));
    }
    if let Err(violation) = fence.check_capabilities(&capabilities) {
        let message = format!("nothing applied: {violation}");
        return Ok(Err(Hold::refused(Reason::TenancyViolation, message)));
    }
    ctx.caches.ready().await?;
    let runtime = &instance.spec.runtime_ref.name;
    let needs = match dependencies::ensure(ctx, &capabilities, runtime).await {
        Ok(needs) => needs,
        Err(error @ Error::Management(_)) => return Err(error),
        Err(error) => return Ok(Err(Hold::refused(error.reason(), error.to_string()))),
    };
    match needs.waiting_on(runtime) {
        None => Ok(Ok(needs)),
        Some((reason, waiting)) => {
            let mut hold = Hold::waiting(reason, waiting);
            hold.next = Next::After(DEPENDENCY_WAIT);
            Ok(Err(hold.with_dependencies(needs.statuses)))
        }
    }
}

/// The route, certificate and DNS objects of the instance's `expose`, named after its
/// Workload.
fn generate_objects(instance: &WorkloadInstance, needs: &Needs) -> Result<Generated> {
    let Some(expose) = &instance.spec.expose else {
        return Ok(Generated::default());
    };
    let name = services::workload_of(instance);
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    generated::generate(
        &name,
        expose,
        &instance.spec.manifests,
        &needs.contributions,
        namespace,
    )
}

/// The runtime, the fence and the clients, or why the pass must hold.
async fn plan(instance: &WorkloadInstance, ctx: &Context) -> Result<Plan, Box<Hold>> {
    let runtime_name = &instance.spec.runtime_ref.name;
    let Some(runtime) = find_runtime(ctx, runtime_name).await else {
        return Err(Hold::waiting(
            Reason::RuntimeNotFound,
            format!(
                "KubernetesRuntime {runtime_name} does not exist; create it or change the placement"
            ),
        ));
    };
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    let fence = ctx.caches.fence(namespace, &ctx.settings.system_namespace);
    if !fence.allows_runtime(&runtime) {
        let violation = fence.runtime_violation(runtime_name);
        return Err(Hold::refused(
            Reason::TenancyViolation,
            violation.to_string(),
        ));
    }
    if !runtime.is_ready() {
        return Err(Hold::waiting(
            runtime_wait_reason(&runtime),
            runtime_not_ready(&runtime),
        ));
    }
    let operator = ctx
        .pool
        .client_for(&runtime)
        .await
        .map_err(|e| Hold::waiting(e.reason(), e.to_string()))?;
    let tenant = operator
        .as_tenant(&fence.identity())
        .map_err(|e| Hold::waiting(e.reason(), e.to_string()))?;
    Ok(Plan {
        runtime,
        fence,
        operator,
        tenant,
    })
}

async fn find_runtime(ctx: &Context, name: &str) -> Option<KubernetesRuntime> {
    if let Some(runtime) = ctx.caches.runtime(name) {
        return Some((*runtime).clone());
    }
    Api::<KubernetesRuntime>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// The runtime's own failure reason (e.g. `RuntimeUnreachable`, which the Workload reports
/// as a failed placement); `RuntimeDeleting` or `WaitingForRuntime` for normal waits. A
/// reason this operator does not know (another version wrote it) becomes `RuntimeNotReady`,
/// a failure, as an unknown reason always was; the message still names it.
fn runtime_wait_reason(runtime: &KubernetesRuntime) -> Reason {
    if runtime.metadata.deletion_timestamp.is_some() {
        return Reason::RuntimeDeleting;
    }
    match runtime
        .status
        .as_ref()
        .and_then(|s| s.condition(qleetos_crds::READY))
    {
        None => Reason::WaitingForRuntime,
        Some(c) => match Reason::parse(&c.reason) {
            Some(Reason::Provisioning) => Reason::WaitingForRuntime,
            Some(reason) => reason,
            None => Reason::RuntimeNotReady,
        },
    }
}

/// Why the runtime is not Ready; a runtime being provisioned says how far it is
/// (`provisioning eu-1 from profile standard (control plane ready, 0/2 workers)`).
fn runtime_not_ready(runtime: &KubernetesRuntime) -> String {
    let name = runtime.metadata.name.as_deref().unwrap_or_default();
    let ready = runtime
        .status
        .as_ref()
        .and_then(|s| s.condition(qleetos_crds::READY));
    if let Some(condition) = ready.filter(|c| c.reason == Reason::Provisioning) {
        return format!("runtime {name}: {}", condition.message);
    }
    if runtime.status.is_none() && runtime.profile().is_some() {
        return format!(
            "runtime {name}: provisioning {} from profile {}",
            runtime.spec.region,
            runtime.profile().unwrap_or_default()
        );
    }
    let why = ready
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "not probed yet".to_owned());
    format!("runtime {name} is not Ready ({why}); nothing is applied until it is")
}

fn owner(instance: &WorkloadInstance) -> Owner<'_> {
    Owner {
        namespace: instance.metadata.namespace.as_deref().unwrap_or_default(),
        name: instance.metadata.name.as_deref().unwrap_or_default(),
        uid: instance.metadata.uid.as_deref().unwrap_or_default(),
    }
}

/// Every desired object must be within the fence; one that is not stops the whole pass, so
/// a Workload is never half-applied.
fn check_fence(fence: &Fence, desired: &[Desired]) -> Result<(), Box<Hold>> {
    let violations: Vec<String> = desired
        .iter()
        .enumerate()
        .filter_map(|(index, d)| {
            let object = &d.resolved.object;
            let target = Target {
                group: object.group(),
                kind: &object.kind,
                namespace: object.namespace.as_deref(),
                name: &object.name,
            };
            fence
                .check(&target)
                .err()
                .map(|v| format!("manifest #{index}: {v}"))
        })
        .collect();
    if violations.is_empty() {
        return Ok(());
    }
    Err(Hold::refused(
        Reason::TenancyViolation,
        format!("nothing applied: {}", violations.join("; ")),
    ))
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

fn previous_outcome(previous: Vec<AppliedObject>, error: Error) -> Outcome {
    Outcome {
        inventory: previous,
        applied: Vec::new(),
        failure: Some(error),
    }
}

async fn finish(
    instance: &WorkloadInstance,
    ctx: &Context,
    outcome: Outcome,
    health: Vec<ResourceHealth>,
    dependencies: Vec<DependencyStatus>,
) -> Result<Next> {
    let healthy = health.iter().all(|h| h.healthy);
    let ready = ready_condition(instance, &outcome, &health, healthy);
    let report = Report {
        inventory: outcome.inventory,
        health,
        dependencies,
    };
    write_status(instance, ctx, report, ready).await?;
    if let Some(error) = outcome.failure {
        return Err(error);
    }
    Ok(if healthy {
        Next::Done
    } else {
        Next::After(ctx.settings.progress_poll)
    })
}

/// Writes the hold's condition, keeping the inventory, and says so in an Event when the
/// user must act (once per change of the message).
async fn hold_pass(instance: &WorkloadInstance, ctx: &Context, hold: Box<Hold>) -> Result<Next> {
    let changed = current_ready(instance)
        .is_none_or(|c| c.reason != hold.condition.reason || c.message != hold.condition.message);
    if hold.warn && changed {
        tracing::warn!(instance = %key_of(instance), reason = %hold.condition.reason, message = %hold.condition.message, "not applied");
        ctx.event(
            instance,
            EventType::Warning,
            hold.reason,
            hold.condition.message.clone(),
        )
        .await;
    }
    let condition = hold.condition.with_generation(instance.metadata.generation);
    // During a wait what was applied stays, and so do the dependencies it uses; a refused
    // instance is nobody's user.
    let dependencies = if hold.dependencies.is_empty() && !hold.warn {
        previous_dependencies(instance)
    } else {
        hold.dependencies
    };
    let report = Report {
        inventory: previous_inventory(instance),
        health: previous_health(instance),
        dependencies,
    };
    write_status(instance, ctx, report, condition).await?;
    Ok(hold.next)
}

async fn record_inventory(
    instance: &WorkloadInstance,
    ctx: &Context,
    inventory: Vec<AppliedObject>,
) -> Result<()> {
    let conditions = current_conditions(instance).to_vec();
    let previous = instance.status.clone().unwrap_or_default();
    let status = WorkloadInstanceStatus {
        conditions,
        applied_count: count(&inventory),
        applied_objects: inventory,
        ..previous
    };
    write_if_changed(instance, ctx, &status).await
}

/// What a pass writes besides its Ready condition.
struct Report {
    inventory: Vec<AppliedObject>,
    health: Vec<ResourceHealth>,
    dependencies: Vec<DependencyStatus>,
}

async fn write_status(
    instance: &WorkloadInstance,
    ctx: &Context,
    report: Report,
    ready: Condition,
) -> Result<()> {
    let status = WorkloadInstanceStatus {
        conditions: qleetos_crds::merged(current_conditions(instance), vec![ready]),
        observed_generation: instance.metadata.generation,
        applied_count: count(&report.inventory),
        applied_objects: report.inventory,
        health: report.health,
        dependencies: report.dependencies,
        urls: instance
            .spec
            .expose
            .as_ref()
            .map(Expose::urls)
            .unwrap_or_default(),
    };
    write_if_changed(instance, ctx, &status).await
}

async fn write_if_changed(
    instance: &WorkloadInstance,
    ctx: &Context,
    status: &WorkloadInstanceStatus,
) -> Result<()> {
    let api = instance_api(instance, ctx)?;
    let metrics = (&*ctx.metrics, CONTROLLER);
    let current = instance.status.as_ref();
    apply_status_if_changed(&api, &name_of(instance)?, current, status, metrics).await
}

async fn write_condition(
    instance: &WorkloadInstance,
    ctx: &Context,
    ready: Condition,
) -> Result<()> {
    if current_ready(instance)
        .is_some_and(|c| c.reason == ready.reason && c.message == ready.message)
    {
        return Ok(());
    }
    let report = Report {
        inventory: previous_inventory(instance),
        health: previous_health(instance),
        dependencies: previous_dependencies(instance),
    };
    let ready = ready.with_generation(instance.metadata.generation);
    write_status(instance, ctx, report, ready).await
}

fn instance_api(instance: &WorkloadInstance, ctx: &Context) -> Result<Api<WorkloadInstance>> {
    Ok(Api::namespaced(
        ctx.client.clone(),
        &namespace_of(instance)?,
    ))
}

fn count(inventory: &[AppliedObject]) -> i64 {
    i64::try_from(inventory.len()).unwrap_or(i64::MAX)
}

fn ready_condition(
    instance: &WorkloadInstance,
    outcome: &Outcome,
    health: &[ResourceHealth],
    healthy: bool,
) -> Condition {
    let runtime = &instance.spec.runtime_ref.name;
    let condition = match &outcome.failure {
        Some(error) => Condition::ready(false, error.reason(), error.to_string()),
        None if healthy => Condition::ready(
            true,
            Reason::RolledOut,
            format!(
                "{} objects applied to runtime {runtime}; every workload is available",
                outcome.inventory.len()
            ),
        ),
        None => match describe_failures(health) {
            Some(failures) => Condition::ready(false, Reason::RolloutFailed, failures),
            None => Condition::ready(false, Reason::Progressing, describe_unhealthy(health)),
        },
    };
    condition.with_generation(instance.metadata.generation)
}

fn previous_inventory(instance: &WorkloadInstance) -> Vec<AppliedObject> {
    instance
        .status
        .as_ref()
        .map(|s| s.applied_objects.clone())
        .unwrap_or_default()
}

fn previous_dependencies(instance: &WorkloadInstance) -> Vec<DependencyStatus> {
    instance
        .status
        .as_ref()
        .map(|s| s.dependencies.clone())
        .unwrap_or_default()
}

fn previous_health(instance: &WorkloadInstance) -> Vec<ResourceHealth> {
    instance
        .status
        .as_ref()
        .map(|s| s.health.clone())
        .unwrap_or_default()
}

fn current_conditions(instance: &WorkloadInstance) -> &[Condition] {
    instance
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

fn current_ready(instance: &WorkloadInstance) -> Option<&Condition> {
    instance
        .status
        .as_ref()
        .and_then(|s| s.condition(qleetos_crds::READY))
}
