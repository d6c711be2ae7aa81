//! Removing an instance: every object it applied, in teardown order, unless its runtime is
//! gone or abandoned.

use kube::runtime::events::EventType;
use qleetos_crds::Reason;
use qleetos_crds::{Condition, DeletionPolicy, WorkloadInstance};

use super::dereference::find_runtime;
use super::observed::with_observed;
use super::status::previous_inventory;
use crate::applier::Applier;
use crate::applier::live::LiveObjects;
use crate::context::{Context, key_of};
use crate::error::{Error, Result};
use crate::render::field_manager;
use crate::runtime_client::describe;

/// Removes every object the instance applied, in teardown order. `Some(condition)` while
/// objects remain (a normal wait, not a failure); `None` once all are gone or can no longer
/// be removed by QleetOS (the runtime was deleted or abandoned).
pub(super) async fn cleanup(
    instance: &WorkloadInstance,
    ctx: &Context,
    live: Option<&LiveObjects>,
) -> Result<Option<Condition>> {
    let runtime_name = instance.spec.runtime_ref.name.clone();
    let Some(runtime) = find_runtime(ctx, &runtime_name).await else {
        let note = format!(
            "runtime {runtime_name} no longer exists; its objects cannot be removed by QleetOS"
        );
        ctx.event(instance, EventType::Warning, Reason::RuntimeGone, note)
            .await;
        return Ok(None);
    };
    if runtime.metadata.deletion_timestamp.is_some()
        && runtime.spec.deletion_policy == DeletionPolicy::Abandon
    {
        let note = format!(
            "runtime {runtime_name} is abandoned (deletionPolicy Abandon); its objects are left in place"
        );
        ctx.event(instance, EventType::Warning, Reason::RuntimeAbandoned, note)
            .await;
        return Ok(None);
    }
    let inventory = with_observed(previous_inventory(instance), live, instance);
    if inventory.is_empty() {
        // Nothing was applied (e.g. its runtime never became Ready): nothing to remove.
        return Ok(None);
    }
    let client = match ctx.pool.client_for(&runtime).await {
        Ok(client) => client,
        Err(error) => {
            return Ok(Some(Condition::ready(
                false,
                Reason::Deleting,
                format!("waiting to remove the applied objects: {error}"),
            )));
        }
    };
    let uid = instance.metadata.uid.clone().unwrap_or_default();
    let applier = Applier {
        client: &client,
        owner_uid: &uid,
        field_manager: field_manager(&uid),
        adopt: false,
        live: None,
    };
    let remaining = match applier.remove(&inventory).await {
        Ok(remaining) => remaining,
        Err(error @ Error::RuntimeUnreachable { .. }) => {
            return Ok(Some(Condition::ready(
                false,
                Reason::Deleting,
                format!("waiting to remove the applied objects: {error}"),
            )));
        }
        Err(error) => return Err(error),
    };
    if remaining.is_empty() {
        tracing::info!(instance = %key_of(instance), "removed every applied object");
        return Ok(None);
    }
    let names: Vec<String> = remaining.iter().map(describe).collect();
    Ok(Some(Condition::ready(
        false,
        Reason::Deleting,
        format!(
            "removing {} object(s) in teardown order: {}",
            names.len(),
            names.join(", ")
        ),
    )))
}
