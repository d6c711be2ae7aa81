//! Keeps the tenancy caches (TenantPolicies, management Namespace labels) current, writes
//! each policy's status (the namespaces it selects, or why its selector is invalid), and
//! notifies every Workload and WorkloadInstance when a policy changes, since what their
//! namespaces may do changed. A namespace's label change reaches them with the next resync.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use qleetos_crds::notification::{Cause, QleetKind};
use qleetos_crds::{Condition, TenantPolicy, TenantPolicyStatus, Workload};
use tokio::sync::Notify;

use super::notifier::{Publisher, notification_for};
use crate::context::Context;
use crate::controllers::apply_status;
use crate::tenancy::selected_namespaces;

/// Shortest pause between two rounds of policy status writes.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Runs both watches until the process stops.
pub async fn run(
    publisher: Publisher,
    ctx: Arc<Context>,
    policies: Writer<TenantPolicy>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
) {
    let changed = Arc::new(Notify::new());
    let namespace_watch = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(namespaces)
    .for_each(|event| {
        let changed = changed.clone();
        async move {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    tracing::warn!(%error, "namespace watch error; retrying with backoff")
                }
            }
        }
    });
    let policy_watch = watcher(
        Api::<TenantPolicy>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(policies)
    .for_each(|event| {
        let (publisher, ctx, changed) = (publisher.clone(), ctx.clone(), changed.clone());
        async move {
            match event {
                Ok(watcher::Event::Apply(policy) | watcher::Event::Delete(policy)) => {
                    changed.notify_one();
                    notify_everyone(&publisher, &ctx, &policy).await;
                }
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    tracing::warn!(%error, "TenantPolicy watch error; retrying with backoff")
                }
            }
        }
    });
    tokio::join!(
        namespace_watch,
        policy_watch,
        write_statuses(&ctx, &changed)
    );
}

/// Writes the status of every policy whose selection or validity changed, after each change
/// of a policy or a namespace (SSA of the same content from several replicas is harmless).
async fn write_statuses(ctx: &Context, changed: &Notify) {
    loop {
        changed.notified().await;
        if ctx.caches.ready().await.is_err() {
            return;
        }
        let namespaces = ctx.caches.namespaces.state();
        let labelled: Vec<(String, BTreeMap<String, String>)> = namespaces
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                (name, n.metadata.labels.clone().unwrap_or_default())
            })
            .collect();
        for policy in ctx.caches.policies.state() {
            let status = status_of(&policy, &labelled);
            if policy.status.as_ref() != Some(&status) {
                let api: Api<TenantPolicy> = Api::all(ctx.client.clone());
                let name = policy.metadata.name.clone().unwrap_or_default();
                if let Err(error) = apply_status(&api, &name, &status).await {
                    tracing::warn!(%error, policy = %name, "writing TenantPolicy status");
                }
            }
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
}

fn status_of(
    policy: &TenantPolicy,
    namespaces: &[(String, BTreeMap<String, String>)],
) -> TenantPolicyStatus {
    let generation = policy.metadata.generation;
    let previous = policy.status.clone().unwrap_or_default();
    let pairs = namespaces
        .iter()
        .map(|(name, labels)| (name.as_str(), labels));
    let (ready, selected) = match selected_namespaces(&policy.spec, pairs) {
        Ok(selected) => (
            Condition::ready(
                true,
                "Accepted",
                format!("in force for {} management namespace(s)", selected.len()),
            ),
            selected,
        ),
        Err(message) => (
            Condition::ready(false, "InvalidSelector", message),
            Vec::new(),
        ),
    };
    TenantPolicyStatus {
        conditions: qleetos_crds::merged(
            &previous.conditions,
            vec![ready.with_generation(generation)],
        ),
        observed_generation: generation,
        selected_namespaces: selected,
    }
}

async fn notify_everyone(publisher: &Publisher, ctx: &Context, policy: &TenantPolicy) {
    let meta = policy.meta();
    let cause = || Cause::Related {
        object: format!(
            "TenantPolicy/{}:{}",
            meta.uid.as_deref().unwrap_or_default(),
            meta.resource_version.as_deref().unwrap_or_default()
        ),
    };
    tracing::info!(policy = ?meta.name, "TenantPolicy changed; re-checking every Workload");
    match Api::<Workload>::all(ctx.client.clone())
        .list(&Default::default())
        .await
    {
        Ok(workloads) => {
            for workload in &workloads.items {
                publisher
                    .send(notification_for(QleetKind::Workload, workload, cause()))
                    .await;
            }
        }
        Err(error) => tracing::warn!(%error, "listing Workloads after a TenantPolicy change"),
    }
    for instance in ctx.caches.instances.state() {
        publisher
            .send(notification_for(
                QleetKind::WorkloadInstance,
                &*instance,
                cause(),
            ))
            .await;
    }
}
