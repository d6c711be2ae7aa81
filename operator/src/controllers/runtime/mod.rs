//! KubernetesRuntime Qleet: connects to each workload cluster, reports whether it is
//! reachable, its version and node count, and protects runtimes still in use from deletion.
//! Provisioned runtimes are created, completed and removed by `provisioned`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use qleetos_crds::Reason;
use qleetos_crds::{
    Condition, ConditionStatus, Conditions, Cost, DeletionPolicy, KubernetesRuntime,
    KubernetesRuntimeStatus, REACHABLE, RuntimeCapacity, WorkloadInstance,
};

use super::{apply_status, name_of};
use crate::capacity;
use crate::context::{Context, Next, key_of};
use crate::error::{Error, Result};
use crate::finalizer::{self, Phase};
use crate::queue::triggers::{Target, Triggers};
use crate::queue::worker::Qleet;

mod provisioned;
#[cfg(test)]
mod tests;

pub const CONTROLLER: &str = "kubernetesruntime";
/// Held while any WorkloadInstance still targets the runtime.
pub const FINALIZER: &str = "qleetos.io/runtime-in-use";

/// The KubernetesRuntime Qleet.
pub fn qleet() -> Qleet<KubernetesRuntime> {
    Qleet {
        api: |client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes, each probe interval, and a change of the kubeconfig Secret it uses.
pub fn notified_by() -> Triggers {
    Triggers::of::<KubernetesRuntime>()
        .every(|settings| settings.probe_interval)
        .watches::<PartialObjectMeta<Secret>>(|ctx, change| {
            let secret = change.after;
            Target::all(ctx.caches.runtimes.state(), |runtime| {
                let reference = &runtime.spec.connection.kubeconfig_secret_ref;
                Some(&reference.namespace) == secret.metadata.namespace.as_ref()
                    && Some(&reference.name) == secret.metadata.name.as_ref()
            })
        })
}

/// Probes one runtime, or lets it go once nothing uses it when it is being deleted.
pub async fn reconcile(runtime: Arc<KubernetesRuntime>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<KubernetesRuntime> = Api::all(ctx.client.clone());
    match finalizer::phase(&api, FINALIZER, runtime).await? {
        Phase::Apply(runtime) if runtime.profile().is_some() => {
            provisioned::converge(&runtime, &ctx).await
        }
        Phase::Apply(runtime) => probe(&runtime, &ctx).await,
        Phase::Cleanup(runtime) => {
            if !release(&runtime, &ctx).await? {
                return Ok(Next::After(ctx.settings.progress_poll));
            }
            if runtime.profile().is_some() && !provisioned::teardown(&runtime, &ctx).await? {
                return Ok(Next::After(ctx.settings.progress_poll));
            }
            finalizer::release(&api, FINALIZER, &*runtime).await?;
            Ok(Next::Done)
        }
        Phase::Gone => Ok(Next::Done),
    }
}

pub(crate) struct Observation {
    pub server_version: String,
    pub node_count: i64,
    pub capacity: RuntimeCapacity,
}

async fn probe(runtime: &KubernetesRuntime, ctx: &Context) -> Result<Next> {
    let name = name_of(runtime)?;
    let observed = observe(runtime, ctx).await;
    let was_ready = runtime.is_ready();
    let had_status = runtime.status.is_some();
    let previous = runtime.status.clone().unwrap_or_default();
    let reachable = reachable_condition(&observed);
    let ready = Condition {
        type_: qleetos_crds::READY.to_owned(),
        ..reachable.clone()
    };
    let status = observed_status(runtime, &previous, &observed, vec![reachable, ready]);
    apply_status(
        &Api::<KubernetesRuntime>::all(ctx.client.clone()),
        &name,
        &status,
    )
    .await?;
    match &observed {
        Ok(_) if had_status && !was_ready => {
            let note = format!("runtime {name} is reachable again");
            ctx.event(runtime, EventType::Normal, Reason::Recovered, note)
                .await;
        }
        Err(error) if was_ready || !had_status => {
            tracing::warn!(runtime = %name, %error, "runtime probe failed");
            ctx.event(
                runtime,
                EventType::Warning,
                error.reason(),
                error.to_string(),
            )
            .await;
        }
        _ => {}
    }
    Ok(Next::Done)
}

/// `Reachable`: whether the API answered the probe, and why not.
pub(crate) fn reachable_condition(observed: &Result<Observation>) -> Condition {
    match observed {
        Ok(o) => Condition::new(
            REACHABLE,
            ConditionStatus::True,
            Reason::Reachable,
            format!("API server {} answers", o.server_version),
        ),
        Err(error) => Condition::new(
            REACHABLE,
            ConditionStatus::False,
            error.reason(),
            error.to_string(),
        ),
    }
}

/// The status after a probe: what it observed, and `conditions`.
pub(crate) fn observed_status(
    runtime: &KubernetesRuntime,
    previous: &KubernetesRuntimeStatus,
    observed: &Result<Observation>,
    conditions: Vec<Condition>,
) -> KubernetesRuntimeStatus {
    let base = status_base(runtime, previous, conditions);
    match observed {
        Ok(o) => KubernetesRuntimeStatus {
            server_version: Some(o.server_version.clone()),
            node_count: Some(o.node_count),
            capacity: Some(o.capacity.clone()),
            message: None,
            ..base
        },
        Err(error) => KubernetesRuntimeStatus {
            message: Some(error.to_string()),
            ..base
        },
    }
}

pub(crate) fn status_base(
    runtime: &KubernetesRuntime,
    previous: &KubernetesRuntimeStatus,
    conditions: Vec<Condition>,
) -> KubernetesRuntimeStatus {
    let generation = runtime.metadata.generation;
    KubernetesRuntimeStatus {
        conditions: qleetos_crds::merged(
            &previous.conditions,
            conditions
                .into_iter()
                .map(|c| c.with_generation(generation))
                .collect(),
        ),
        observed_generation: runtime.metadata.generation,
        last_probe_time: Some(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        server_version: previous.server_version.clone(),
        node_count: previous.node_count,
        capacity: previous.capacity.clone(),
        message: None,
        provisioning: previous.provisioning.clone(),
        support_services: previous.support_services.clone(),
    }
}

pub(crate) async fn observe(runtime: &KubernetesRuntime, ctx: &Context) -> Result<Observation> {
    let client = ctx.pool.client_for(runtime).await?;
    let runtime_name = runtime.name_any();
    let unreachable = |source| Error::RuntimeUnreachable {
        runtime: runtime_name.clone(),
        source,
    };
    let version = client
        .client()
        .apiserver_version()
        .await
        .map_err(unreachable)?;
    let nodes = Api::<Node>::all(client.client().clone())
        .list(&ListParams::default())
        .await
        .map_err(unreachable)?;
    let unfinished = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let pods = Api::<Pod>::all(client.client().clone())
        .list(&unfinished)
        .await
        .map_err(unreachable)?;
    let node_count = i64::try_from(nodes.items.len()).unwrap_or(i64::MAX);
    let cost = cost_of(runtime, ctx);
    let price = |p: f64| format!("{p:.4}");
    let capacity = RuntimeCapacity {
        allocatable: capacity::allocatable(&nodes.items),
        requested: capacity::requested(&pods.items),
        cost_per_hour: cost
            .as_ref()
            .and_then(|c| c.per_hour(node_count))
            .map(price),
        cost_per_node_hour: cost.as_ref().and_then(|c| c.per_node_hour.clone()),
    };
    ctx.metrics
        .set_runtime_capacity(&runtime_name, Some(&capacity));
    Ok(Observation {
        server_version: version.git_version,
        node_count,
        capacity,
    })
}

/// The runtime's own cost, else its profile's.
fn cost_of(runtime: &KubernetesRuntime, ctx: &Context) -> Option<Cost> {
    runtime.spec.cost.clone().or_else(|| {
        let profile = ctx
            .caches
            .runtime_profiles
            .get(&ObjectRef::new(runtime.profile()?))?;
        profile.spec.cost.clone()
    })
}

/// Whether a runtime being deleted may go: with `Abandon` at once, with `Wait` only when no
/// WorkloadInstance targets it any more (the Workloads re-place theirs onto other runtimes
/// first). Waiting shows as the runtime's Ready condition and one Normal Event.
async fn release(runtime: &KubernetesRuntime, ctx: &Context) -> Result<bool> {
    let name = name_of(runtime)?;
    if runtime.spec.deletion_policy == DeletionPolicy::Abandon {
        let note = format!(
            "runtime {name} is abandoned: its placements are released without removing their objects"
        );
        ctx.event(runtime, EventType::Warning, Reason::RuntimeAbandoned, note)
            .await;
        ctx.pool.forget(&name);
        ctx.metrics.set_runtime_capacity(&name, None);
        return Ok(true);
    }
    let instances = Api::<WorkloadInstance>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::Management)?;
    let users: Vec<String> = instances
        .items
        .iter()
        .filter(|i| i.spec.runtime_ref.name == name)
        .map(key_of)
        .collect();
    if users.is_empty() {
        ctx.pool.forget(&name);
        ctx.metrics.set_runtime_capacity(&name, None);
        return Ok(true);
    }
    let message = format!(
        "runtime {name} is being deleted and waits for WorkloadInstances {} to move to other runtimes (a Workload moves once a replacement in the same region is Ready; add a matching runtime, change the placements, or set spec.deletionPolicy: Abandon if the cluster is gone for good)",
        users.join(", ")
    );
    let previous = runtime.status.clone().unwrap_or_default();
    let unchanged = previous
        .condition(qleetos_crds::READY)
        .is_some_and(|c| c.reason == Reason::WaitingForWorkloads && c.message == message);
    if !unchanged {
        ctx.event(
            runtime,
            EventType::Normal,
            Reason::WaitingForWorkloads,
            message.clone(),
        )
        .await;
        let status = status_base(
            runtime,
            &previous,
            vec![Condition::ready(
                false,
                Reason::WaitingForWorkloads,
                message,
            )],
        );
        apply_status(
            &Api::<KubernetesRuntime>::all(ctx.client.clone()),
            &name,
            &status,
        )
        .await?;
    }
    Ok(false)
}
