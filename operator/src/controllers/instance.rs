//! WorkloadInstance Qleet: applies one Workload's objects to one runtime, prunes what is no
//! longer wanted, reads rollout health back, and removes everything on deletion.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::events::EventType;
use qleetos_crds::{
    AppliedObject, Condition, KubernetesRuntime, ResourceHealth, WorkloadInstance,
    WorkloadInstanceStatus,
};

use super::{apply_status, name_of, namespace_of};
use crate::context::{Context, Next, key_of};
use crate::error::{Error, Result};
use crate::finalizer::{self, Phase};
use crate::health::{
    ROLLOUT_FAILED, WATCHED_KINDS, add_pod_failure, describe_failures, describe_unhealthy,
    health_of,
};
use crate::render::{Owner, render};
use crate::runtime_client::{RuntimeClient, describe};

pub const CONTROLLER: &str = "workloadinstance";
/// Held until every object the instance applied is gone from its runtime.
pub const FINALIZER: &str = "qleetos.io/runtime-objects";

/// Converges one WorkloadInstance, or removes its objects when it is being deleted.
pub async fn reconcile(instance: Arc<WorkloadInstance>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<WorkloadInstance> =
        Api::namespaced(ctx.client.clone(), &namespace_of(&*instance)?);
    match finalizer::phase(&api, FINALIZER, instance).await? {
        Phase::Apply(instance) => deploy(&instance, &ctx).await,
        Phase::Cleanup(instance) => {
            cleanup(&instance, &ctx).await?;
            finalizer::release(&api, FINALIZER, &*instance).await?;
            Ok(Next::Done)
        }
        Phase::Gone => Ok(Next::Done),
    }
}

/// What one pass of applying produced, whether or not it fully succeeded.
struct Outcome {
    inventory: Vec<AppliedObject>,
    health: Vec<ResourceHealth>,
    failure: Option<Error>,
}

async fn deploy(instance: &WorkloadInstance, ctx: &Context) -> Result<Next> {
    let previous = previous_inventory(instance);
    let outcome = match runtime_client(instance, ctx).await {
        Ok(client) => converge(instance, &client, previous).await,
        Err(error) => Outcome {
            inventory: previous,
            health: Vec::new(),
            failure: Some(error),
        },
    };
    let healthy = outcome.health.iter().all(|h| h.healthy);
    let ready = ready_condition(instance, &outcome, healthy);
    let status = WorkloadInstanceStatus {
        conditions: qleetos_crds::merged(current_conditions(instance), vec![ready]),
        observed_generation: instance.metadata.generation,
        applied_count: i64::try_from(outcome.inventory.len()).unwrap_or(i64::MAX),
        applied_objects: outcome.inventory,
        health: outcome.health,
    };
    let api: Api<WorkloadInstance> = Api::namespaced(ctx.client.clone(), &namespace_of(instance)?);
    apply_status(&api, &name_of(instance)?, &status).await?;
    if let Some(error) = outcome.failure {
        return Err(error);
    }
    Ok(if healthy {
        Next::Done
    } else {
        Next::After(ctx.settings.progress_poll)
    })
}

async fn runtime_client(instance: &WorkloadInstance, ctx: &Context) -> Result<RuntimeClient> {
    let runtime_name = &instance.spec.runtime_ref.name;
    let runtimes: Api<KubernetesRuntime> = Api::all(ctx.client.clone());
    let runtime = runtimes
        .get_opt(runtime_name)
        .await
        .map_err(Error::Management)?
        .ok_or_else(|| Error::RuntimeNotFound(runtime_name.clone()))?;
    ctx.pool.client_for(&runtime).await
}

/// Applies every rendered object, prunes the ones applied before and no longer rendered,
/// and reads health back.
async fn converge(
    instance: &WorkloadInstance,
    client: &RuntimeClient,
    previous: Vec<AppliedObject>,
) -> Outcome {
    let namespace = instance.metadata.namespace.clone().unwrap_or_default();
    let owner = Owner {
        namespace: &namespace,
        name: instance.metadata.name.as_deref().unwrap_or_default(),
        uid: instance.metadata.uid.as_deref().unwrap_or_default(),
    };
    let rendered = match render(&instance.spec.manifests, &instance.spec.images, &owner) {
        Ok(rendered) => rendered,
        Err(error) => {
            return Outcome {
                inventory: previous,
                health: Vec::new(),
                failure: Some(error),
            };
        }
    };
    let mut applied = Vec::new();
    let mut failed_names = BTreeSet::new();
    let mut failure = None;
    for manifest in &rendered {
        match client.apply(manifest, &namespace).await {
            Ok(object) => applied.push(object),
            Err(error @ Error::RuntimeUnreachable { .. }) => {
                return Outcome {
                    inventory: previous,
                    health: Vec::new(),
                    failure: Some(error),
                };
            }
            Err(error) => {
                failed_names.insert((
                    manifest.kind().unwrap_or_default().to_owned(),
                    manifest.name().unwrap_or_default().to_owned(),
                ));
                failure.get_or_insert(error);
            }
        }
    }
    let (kept, prune_failure) = prune(client, previous, &applied, &failed_names).await;
    let failure = failure.or(prune_failure);
    let health = read_health(client, &applied).await;
    let inventory = applied
        .into_iter()
        .chain(kept)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    match health {
        Ok(health) => Outcome {
            inventory,
            health,
            failure,
        },
        Err(error) => Outcome {
            inventory,
            health: Vec::new(),
            failure: failure.or(Some(error)),
        },
    }
}

/// Deletes previously applied objects that are no longer rendered. Returns the ones that must
/// stay in the inventory: still wanted but failing to apply, or not yet deleted.
async fn prune(
    client: &RuntimeClient,
    previous: Vec<AppliedObject>,
    applied: &[AppliedObject],
    failed_names: &BTreeSet<(String, String)>,
) -> (Vec<AppliedObject>, Option<Error>) {
    let mut kept = Vec::new();
    let mut failure = None;
    for object in previous {
        if applied.contains(&object) {
            continue;
        }
        if failed_names.contains(&(object.kind.clone(), object.name.clone())) {
            kept.push(object);
            continue;
        }
        match client.delete(&object).await {
            Ok(true) => tracing::info!(object = %describe(&object), "pruned"),
            Ok(false) => kept.push(object),
            Err(error) => {
                kept.push(object);
                failure.get_or_insert(error);
            }
        }
    }
    (kept, failure)
}

async fn read_health(
    client: &RuntimeClient,
    applied: &[AppliedObject],
) -> Result<Vec<ResourceHealth>> {
    let mut health = Vec::new();
    for object in applied
        .iter()
        .filter(|o| WATCHED_KINDS.contains(&o.kind.as_str()))
    {
        if let Some(live) = client.get(object).await? {
            let value = serde_json::to_value(&live).unwrap_or_default();
            if let Some(mut rollout) = health_of(&value) {
                add_pod_failure(client.client(), &value, &mut rollout).await;
                health.push(rollout);
            }
        }
    }
    Ok(health)
}

fn ready_condition(instance: &WorkloadInstance, outcome: &Outcome, healthy: bool) -> Condition {
    let runtime = &instance.spec.runtime_ref.name;
    let condition = match &outcome.failure {
        Some(error) => Condition::ready(false, error.reason(), error.to_string()),
        None if healthy => Condition::ready(
            true,
            "RolledOut",
            format!(
                "{} objects applied to runtime {runtime}; every workload is available",
                outcome.inventory.len()
            ),
        ),
        None => match describe_failures(&outcome.health) {
            Some(failures) => Condition::ready(false, ROLLOUT_FAILED, failures),
            None => Condition::ready(false, "Progressing", describe_unhealthy(&outcome.health)),
        },
    };
    condition.with_generation(instance.metadata.generation)
}

/// Removes every object the instance applied, keeping the finalizer until all are gone.
async fn cleanup(instance: &WorkloadInstance, ctx: &Context) -> Result<()> {
    let client = match runtime_client(instance, ctx).await {
        Ok(client) => client,
        Err(Error::RuntimeNotFound(runtime)) => {
            let note = format!(
                "runtime {runtime} no longer exists; its objects cannot be removed by QleetOS"
            );
            ctx.event(instance, EventType::Warning, "RuntimeGone", note)
                .await;
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    let mut pending = Vec::new();
    for object in previous_inventory(instance).iter().rev() {
        if !client.delete(object).await? {
            pending.push(describe(object));
        }
    }
    if pending.is_empty() {
        tracing::info!(instance = %key_of(instance), "removed every applied object");
        Ok(())
    } else {
        Err(Error::CleanupPending(pending.join(", ")))
    }
}

fn previous_inventory(instance: &WorkloadInstance) -> Vec<AppliedObject> {
    instance
        .status
        .as_ref()
        .map(|s| s.applied_objects.clone())
        .unwrap_or_default()
}

fn current_conditions(instance: &WorkloadInstance) -> &[Condition] {
    instance
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}
