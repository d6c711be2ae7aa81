//! KubernetesRuntime Qleet: connects to each workload cluster, reports whether it is
//! reachable, its version and node count, and protects runtimes still in use from deletion.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use qleetos_crds::{Condition, KubernetesRuntime, KubernetesRuntimeStatus, WorkloadInstance};

use super::{apply_status, name_of};
use crate::context::{Context, key_of};
use crate::error::{Error, Result};

pub const CONTROLLER: &str = "kubernetesruntime";
/// Held while any WorkloadInstance still targets the runtime.
pub const FINALIZER: &str = "qleetos.io/runtime-in-use";

/// Runs the KubernetesRuntime Qleet until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let runtimes: Api<KubernetesRuntime> = Api::all(ctx.client.clone());
    let (reader, writer) = reflector::store();
    // Status writes (probe times) must not retrigger the probe: only spec, labels,
    // finalizers and deletion do; the periodic requeue does the rest.
    let triggers = watcher(runtimes, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_change, Default::default());
    let secrets_reader = reader.clone();
    let secrets = watcher(
        Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    Controller::for_stream(triggers, reader)
        .watches_stream(secrets, move |secret| {
            let (namespace, name) = (secret.namespace(), secret.name_any());
            secrets_reader
                .state()
                .into_iter()
                .filter(|r| {
                    let reference = &r.spec.connection.kubeconfig_secret_ref;
                    Some(&reference.namespace) == namespace.as_ref() && reference.name == name
                })
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn spec_change(runtime: &KubernetesRuntime) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    runtime.metadata.generation.hash(&mut hasher);
    runtime.metadata.labels.hash(&mut hasher);
    runtime.metadata.finalizers.hash(&mut hasher);
    runtime
        .metadata
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    Some(hasher.finish())
}

pub async fn reconcile(runtime: Arc<KubernetesRuntime>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let api: Api<KubernetesRuntime> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, runtime, |event| async {
        match event {
            Finalizer::Apply(runtime) => probe(&runtime, &ctx).await,
            Finalizer::Cleanup(runtime) => release(&runtime, &ctx).await,
        }
    })
    .await
    .map_err(Error::from);
    ctx.metrics.observe(CONTROLLER, started, &result);
    result
}

pub fn error_policy(runtime: Arc<KubernetesRuntime>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(&key_of(&*runtime), error)
}

struct Observation {
    server_version: String,
    node_count: i64,
}

async fn probe(runtime: &KubernetesRuntime, ctx: &Context) -> Result<Action> {
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
    Ok(Action::requeue(ctx.settings.probe_interval))
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
async fn release(runtime: &KubernetesRuntime, ctx: &Context) -> Result<Action> {
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
        return Ok(Action::await_change());
    }
    let message = format!(
        "runtime {name} is still used by WorkloadInstances {}; move or delete those Workloads first",
        users.join(", ")
    );
    ctx.event(runtime, EventType::Warning, "RuntimeInUse", message.clone())
        .await;
    Err(Error::CleanupPending(message))
}
