//! Watches the objects QleetOS applied in every runtime and notifies the owning
//! WorkloadInstance when one changes or disappears, so drift is corrected without any
//! change to the Workload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use qleetos_crds::KubernetesRuntime;
use qleetos_crds::notification::{Cause, Notification, QleetKind};
use tokio::task::JoinHandle;

use super::notifier::Publisher;
use crate::context::Context;
use crate::render::{INSTANCE_ANNOTATION, INSTANCE_UID_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::runtime_client::RuntimeClient;

const SUPERVISE_EVERY: Duration = Duration::from_secs(5);

struct Watching {
    client: RuntimeClient,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Keeps one set of watches per reachable runtime, restarted when its client changes.
pub async fn run(publisher: Publisher, ctx: Arc<Context>) {
    let mut watching: HashMap<String, Watching> = HashMap::new();
    loop {
        let runtimes = Api::<KubernetesRuntime>::all(ctx.client.clone())
            .list(&Default::default())
            .await;
        match runtimes {
            Ok(list) => supervise(&publisher, &ctx, list.items, &mut watching).await,
            Err(error) => tracing::warn!(%error, "listing runtimes for drift watches"),
        }
        tokio::time::sleep(SUPERVISE_EVERY).await;
    }
}

async fn supervise(
    publisher: &Publisher,
    ctx: &Context,
    runtimes: Vec<KubernetesRuntime>,
    watching: &mut HashMap<String, Watching>,
) {
    let names: Vec<String> = runtimes.iter().map(ResourceExt::name_any).collect();
    watching.retain(|name, _| names.contains(name));
    for runtime in runtimes.iter().filter(|r| r.is_ready()) {
        let Ok(client) = ctx.pool.client_for(runtime).await else {
            continue;
        };
        let name = runtime.name_any();
        if watching
            .get(&name)
            .is_some_and(|w| w.client.same_as(&client))
        {
            continue;
        }
        tracing::info!(runtime = %name, "watching managed objects for drift");
        let tasks = watch_runtime(publisher, &name, client.client());
        watching.insert(name, Watching { client, tasks });
    }
}

fn watch_runtime(publisher: &Publisher, runtime: &str, client: &Client) -> Vec<JoinHandle<()>> {
    vec![
        spawn_watch::<Deployment>(publisher, runtime, client),
        spawn_watch::<StatefulSet>(publisher, runtime, client),
        spawn_watch::<DaemonSet>(publisher, runtime, client),
        spawn_watch::<Service>(publisher, runtime, client),
        spawn_watch::<ConfigMap>(publisher, runtime, client),
    ]
}

fn spawn_watch<K>(publisher: &Publisher, runtime: &str, client: &Client) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (publisher, runtime) = (publisher.clone(), runtime.to_owned());
    let config =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let events =
        watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config).default_backoff();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let objects = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    vec![(object, false)]
                }
                Ok(watcher::Event::Delete(object)) => vec![(object, true)],
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!(%runtime, %error, "drift watch error; retrying");
                    continue;
                }
            };
            for (object, deleted) in objects {
                if let Some(notification) = drift_notification(&runtime, &object, deleted) {
                    publisher.send(notification).await;
                }
            }
        }
    })
}

/// The notification for the instance that applied `object`, read from its label and
/// annotation; `None` for objects without them.
pub fn drift_notification<K: Resource>(
    runtime: &str,
    object: &K,
    deleted: bool,
) -> Option<Notification> {
    let meta = object.meta();
    let uid = meta.labels.as_ref()?.get(INSTANCE_UID_LABEL)?.clone();
    let (namespace, name) = meta
        .annotations
        .as_ref()?
        .get(INSTANCE_ANNOTATION)?
        .split_once('/')?;
    let version = meta.resource_version.as_deref().unwrap_or_default();
    let suffix = if deleted { ":deleted" } else { "" };
    Some(Notification {
        kind: QleetKind::WorkloadInstance,
        namespace: Some(namespace.to_owned()),
        name: name.to_owned(),
        uid,
        resource_version: String::new(),
        cause: Cause::Drift {
            runtime: runtime.to_owned(),
            object: format!(
                "{}:{version}{suffix}",
                meta.uid.as_deref().unwrap_or_default()
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;

    use super::*;

    #[test]
    fn drift_points_at_the_owning_instance() {
        let mut deployment = Deployment::default();
        deployment.metadata.uid = Some("d1".into());
        deployment.metadata.resource_version = Some("7".into());
        deployment.metadata.labels = Some([(INSTANCE_UID_LABEL.into(), "i1".into())].into());
        deployment.metadata.annotations =
            Some([(INSTANCE_ANNOTATION.into(), "team/web-eu".into())].into());
        let n = drift_notification("eu", &deployment, true).expect("managed object");
        assert_eq!(
            (n.namespace.as_deref(), n.name.as_str(), n.uid.as_str()),
            (Some("team"), "web-eu", "i1")
        );
        assert_eq!(n.message_id(), "i1:drift:eu:d1:7:deleted");
    }

    #[test]
    fn unmanaged_objects_are_ignored() {
        assert!(drift_notification("eu", &Deployment::default(), false).is_none());
    }
}
