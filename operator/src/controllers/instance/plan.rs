//! An instance's pass for a plan: the same steps as [`super::converge`] (runtime and fence,
//! chart, admission, dependencies, build) with every write left out, then each object applied
//! as the tenant with a server-side dry run and compared with the live object.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use std::sync::Arc;

use qleetos_crds::{
    AppliedObject, Manifest, PlanAction, PlannedObject, PlannedPlacement, WorkloadInstance,
    WorkloadServiceDependency,
};
use serde_json::Value;

use super::build::{self, Built};
use super::dereference::{self, Plan};
use super::stop::{Hold, Stop};
use super::{admission, chart, planned_services};
use crate::applier::{Desired, inventory};
use crate::context::Context;
use crate::dependencies::{Needs, planned};
use crate::diff;
use crate::error::{Error, Result};
use crate::render::{Owner, field_manager, render};
use crate::runtime_client::Ownership;
use crate::tenancy::Fence;

/// Fills `placement` with what a pass of `instance` would do; `Err` only when the management
/// API fails (the plan is retried).
pub(crate) async fn plan_instance(
    instance: &WorkloadInstance,
    ctx: &Context,
    dependencies: &[Arc<WorkloadServiceDependency>],
    placement: &mut PlannedPlacement,
) -> Result<()> {
    match planned_pass(instance, ctx, dependencies, placement).await {
        Ok(()) => Ok(()),
        Err(Stop::Failed(error @ Error::Management(_))) => Err(error),
        Err(Stop::Failed(error)) => {
            unchecked(instance, placement, PlanAction::Create, error.to_string());
            Ok(())
        }
        Err(Stop::Hold(hold)) => {
            unchecked_for(&hold, instance, placement);
            Ok(())
        }
    }
}

/// A runtime that does not exist yet: the support and back-end services to install on it,
/// and its objects all created. `Err` only when the management API fails.
pub(crate) fn plan_unprovisioned(
    instance: &WorkloadInstance,
    ctx: &Context,
    fence: &Fence,
    dependencies: &[Arc<WorkloadServiceDependency>],
    placement: &mut PlannedPlacement,
) -> Result<()> {
    let capabilities = instance.spec.capabilities();
    let runtime = &instance.spec.runtime_ref.name;
    placement.support_services = planned::services(ctx, &capabilities, runtime)?.0;
    match planned_services::record(instance, ctx, fence, dependencies, placement) {
        Ok(_) => {
            let message = "cluster not yet provisioned: objects will be created".to_owned();
            unchecked(instance, placement, PlanAction::Create, message);
            Ok(())
        }
        Err(Stop::Failed(error)) => Err(error),
        Err(Stop::Hold(hold)) => {
            unchecked_for(&hold, instance, placement);
            Ok(())
        }
    }
}

/// Every object refused when the hold is a refusal, else created, with the hold's message.
fn unchecked_for(hold: &Hold, instance: &WorkloadInstance, placement: &mut PlannedPlacement) {
    let action = if hold.warn {
        PlanAction::Refused
    } else {
        PlanAction::Create
    };
    unchecked(instance, placement, action, held(hold));
}

fn held(hold: &Hold) -> String {
    format!("{}: {}", hold.reason.as_str(), hold.condition.message)
}

async fn planned_pass(
    instance: &WorkloadInstance,
    ctx: &Context,
    dependencies: &[Arc<WorkloadServiceDependency>],
    placement: &mut PlannedPlacement,
) -> Result<(), Stop> {
    let plan = dereference::plan(instance, ctx).await?;
    let (instance, _) = chart::materialize(instance, ctx, &plan).await?;
    let instance = instance.as_ref();
    admission::admit(instance, ctx, &plan.fence)?;
    build::validate_expose(instance)?;
    let needs = planned_needs(instance, ctx, &plan, placement)?;
    let bound = planned_services::record(instance, ctx, &plan.fence, dependencies, placement)?;
    let connections = planned_services::connections(&bound, ctx, &plan, placement).await?;
    let built = build::build_all(instance, &plan, &needs, &connections, &[]).await?;
    placement.objects = dry_run_all(instance, &plan, built).await?;
    Ok(())
}

/// The support services the placement needs, recorded in the plan; nothing is created.
fn planned_needs(
    instance: &WorkloadInstance,
    ctx: &Context,
    plan: &Plan,
    placement: &mut PlannedPlacement,
) -> Result<Needs, Stop> {
    let capabilities = instance.spec.capabilities();
    if capabilities.is_empty() {
        return Ok(Needs::default());
    }
    if let Err(violation) = plan.fence.check_capabilities(&capabilities) {
        let message = format!("nothing applied: {violation}");
        return Err(Hold::refused(qleetos_crds::Reason::TenancyViolation, message).into());
    }
    let runtime = &instance.spec.runtime_ref.name;
    let (services, contributions) = planned::services(ctx, &capabilities, runtime)
        .map_err(|e| Hold::refused(e.reason(), e.to_string()))?;
    placement.support_services = services;
    Ok(Needs {
        statuses: Vec::new(),
        contributions,
    })
}

/// Each desired object dry-run applied as the tenant; each object of the previous pass no
/// longer desired deleted.
async fn dry_run_all(
    instance: &WorkloadInstance,
    plan: &Plan,
    built: Built,
) -> Result<Vec<PlannedObject>, Stop> {
    let uid = instance.metadata.uid.clone().unwrap_or_default();
    let manager = field_manager(&uid);
    let mut objects = Vec::new();
    let mut missing_namespaces = Vec::new();
    for wanted in &built.desired {
        let object = &wanted.resolved.object;
        let known = inventory::is_known(&built.previous, object);
        let ownership = Ownership {
            owner_uid: &uid,
            field_manager: &manager,
            known,
            adopt: plan.fence.allows_adoption(),
        };
        let namespace_missing = match object.namespace.as_deref() {
            Some(ns) => !namespace_exists(plan, ns, &mut missing_namespaces).await?,
            None => false,
        };
        objects.push(if namespace_missing {
            let ns = object.namespace.as_deref().unwrap_or_default();
            let why = format!("namespace {ns} does not exist yet: QleetOS creates it first, so the runtime could not check this object");
            planned_object(object, PlanAction::Create, Vec::new(), Some(why))
        } else {
            dry_run_one(plan, wanted, &ownership).await?
        });
    }
    for manifest in &built.unresolved {
        let why = "its kind is not served by the runtime yet (a support service may install it)";
        objects.push(from_manifest(
            manifest,
            PlanAction::Create,
            Some(why.to_owned()),
        ));
    }
    for gone in built.previous.iter().filter(|p| p.uid.is_some()) {
        if !built
            .desired
            .iter()
            .any(|d| d.resolved.object.same_object(gone))
        {
            objects.push(planned_object(gone, PlanAction::Delete, Vec::new(), None));
        }
    }
    Ok(objects)
}

async fn namespace_exists(plan: &Plan, namespace: &str, missing: &mut Vec<String>) -> Result<bool> {
    if missing.iter().any(|m| m == namespace) {
        return Ok(false);
    }
    let api: Api<Namespace> = Api::all(plan.operator.client().clone());
    let found = api
        .get_opt(namespace)
        .await
        .map_err(|e| Error::RuntimeUnreachable {
            runtime: plan.runtime.metadata.name.clone().unwrap_or_default(),
            source: e,
        })?
        .is_some();
    if !found {
        missing.push(namespace.to_owned());
    }
    Ok(found)
}

/// The dry run's verdict on one object: created, updated with its field changes, unchanged,
/// or refused with the runtime's (or the takeover check's) own message.
async fn dry_run_one(
    plan: &Plan,
    wanted: &Desired,
    ownership: &Ownership<'_>,
) -> Result<PlannedObject> {
    let object = &wanted.resolved.object;
    match plan
        .tenant
        .dry_run_owned(&wanted.resolved, &wanted.manifest, ownership)
        .await
    {
        Ok(dry_run) => {
            if let Some(refusal) = plan.tenant.dry_run_pod_of(&dry_run.result).await? {
                let action = PlanAction::Refused;
                return Ok(planned_object(object, action, Vec::new(), Some(refusal)));
            }
            let Some(live) = dry_run.live else {
                return Ok(planned_object(object, PlanAction::Create, Vec::new(), None));
            };
            let before = serde_json::to_value(&live).unwrap_or(Value::Null);
            let after = serde_json::to_value(&dry_run.result).unwrap_or(Value::Null);
            let changes = diff::changes(&before, &after);
            let action = if changes.is_empty() {
                PlanAction::Unchanged
            } else {
                PlanAction::Update
            };
            Ok(planned_object(object, action, changes, None))
        }
        Err(error @ Error::RuntimeUnreachable { .. }) => Err(error),
        Err(error) => Ok(planned_object(
            object,
            PlanAction::Refused,
            Vec::new(),
            Some(error.to_string()),
        )),
    }
}

/// Every manifest of the instance with one action and why nothing more is known.
fn unchecked(
    instance: &WorkloadInstance,
    placement: &mut PlannedPlacement,
    action: PlanAction,
    message: String,
) {
    let owner = Owner {
        namespace: instance.metadata.namespace.as_deref().unwrap_or_default(),
        name: instance.metadata.name.as_deref().unwrap_or_default(),
        uid: instance.metadata.uid.as_deref().unwrap_or_default(),
    };
    let rendered = render(&instance.spec.manifests, &instance.spec.images, &owner)
        .unwrap_or_else(|_| instance.spec.manifests.clone());
    placement.objects = rendered
        .iter()
        .map(|m| from_manifest(m, action, None))
        .collect();
    placement.message = Some(message);
}

fn from_manifest(
    manifest: &Manifest,
    action: PlanAction,
    message: Option<String>,
) -> PlannedObject {
    PlannedObject {
        api_version: manifest.api_version().unwrap_or_default().to_owned(),
        kind: manifest.kind().unwrap_or_default().to_owned(),
        namespace: manifest.namespace().map(str::to_owned),
        name: manifest.name().unwrap_or_default().to_owned(),
        action,
        changes: Vec::new(),
        message,
    }
}

fn planned_object(
    object: &AppliedObject,
    action: PlanAction,
    changes: Vec<qleetos_crds::FieldChange>,
    message: Option<String>,
) -> PlannedObject {
    PlannedObject {
        api_version: object.api_version.clone(),
        kind: object.kind.clone(),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        action,
        changes,
        message,
    }
}
