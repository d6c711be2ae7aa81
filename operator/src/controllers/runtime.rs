//! KubernetesRuntime Qleet: connects to each workload cluster, reports whether it is
//! reachable, its version and node count, and protects runtimes still in use from deletion.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::events::EventType;
use qleetos_crds::{Condition, KubernetesRuntime, KubernetesRuntimeStatus, WorkloadInstance};

use super::{apply_status, name_of};
use crate::context::{Context, Next, key_of};
use crate::error::{Error, Result};
use crate::finalizer::{self, Phase};

pub const CONTROLLER: &str = "kubernetesruntime";
/// Held while any WorkloadInstance still targets the runtime.
pub const FINALIZER: &str = "qleetos.io/runtime-in-use";

/// Probes one runtime, or lets it go once nothing uses it when it is being deleted.
pub async fn reconcile(runtime: Arc<KubernetesRuntime>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<KubernetesRuntime> = Api::all(ctx.client.clone());
    match finalizer::phase(&api, FINALIZER, runtime).await? {
        Phase::Apply(runtime) => probe(&runtime, &ctx).await,
        Phase::Cleanup(runtime) => {
            release(&runtime, &ctx).await?;
            finalizer::release(&api, FINALIZER, &*runtime).await?;
            Ok(Next::Done)
        }
        Phase::Gone => Ok(Next::Done),
    }
}

struct Observation {
    server_version: String,
    node_count: i64,
}

async fn probe(runtime: &KubernetesRuntime, ctx: &Context) -> Result<Next> {
    let name = name_of(runtime)?;
    let observed = observe(runtime, ctx).await;
    let was_ready = runtime.is_ready();
    let had_status = runtime.status.is_some();
    let previous = runtime.status.clone().unwrap_or_default();
    let status = match &observed {
        Ok(o) => KubernetesRuntimeStatus {
            server_version: Some(o.server_version.clone()),
            node_count: Some(o.node_count),
            message: None,
            ..status_base(
                runtime,
                &previous,
                Condition::ready(
                    true,
                    "Reachable",
                    format!("API server {} answers", o.server_version),
                ),
            )
        },
        Err(error) => KubernetesRuntimeStatus {
            message: Some(error.to_string()),
            ..status_base(
                runtime,
                &previous,
                Condition::ready(false, error.reason(), error.to_string()),
            )
        },
    };
    apply_status(
        &Api::<KubernetesRuntime>::all(ctx.client.clone()),
        &name,
        &status,
    )
    .await?;
    match &observed {
        Ok(_) if had_status && !was_ready => {
            let note = format!("runtime {name} is reachable again");
            ctx.event(runtime, EventType::Normal, "Recovered", note)
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

fn status_base(
    runtime: &KubernetesRuntime,
    previous: &KubernetesRuntimeStatus,
    ready: Condition,
) -> KubernetesRuntimeStatus {
    KubernetesRuntimeStatus {
        conditions: qleetos_crds::merged(
            &previous.conditions,
            vec![ready.with_generation(runtime.metadata.generation)],
        ),
        observed_generation: runtime.metadata.generation,
        last_probe_time: Some(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        server_version: previous.server_version.clone(),
        node_count: previous.node_count,
        message: None,
    }
}

async fn observe(runtime: &KubernetesRuntime, ctx: &Context) -> Result<Observation> {
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
        .list_metadata(&ListParams::default())
        .await
        .map_err(unreachable)?;
    Ok(Observation {
        server_version: version.git_version,
        node_count: i64::try_from(nodes.items.len()).unwrap_or(i64::MAX),
    })
}

/// Lets a runtime go only when no WorkloadInstance targets it any more.
async fn release(runtime: &KubernetesRuntime, ctx: &Context) -> Result<()> {
    let name = name_of(runtime)?;
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
        return Ok(());
    }
    let message = format!(
        "runtime {name} is still used by WorkloadInstances {}; move or delete those Workloads first",
        users.join(", ")
    );
    ctx.event(runtime, EventType::Warning, "RuntimeInUse", message.clone())
        .await;
    Err(Error::CleanupPending(message))
}
