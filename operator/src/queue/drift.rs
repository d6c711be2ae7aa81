//! Watches the objects QleetOS applied in every runtime and notifies the owning
//! WorkloadInstance when one changes or disappears, so drift is corrected without any
//! change to the Workload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use qleetos_crds::notification::{Cause, Notification, QleetKind};
use qleetos_crds::{AppliedObject, KubernetesRuntime, WorkloadInstance};
use tokio::task::JoinHandle;

use super::notifier::Publisher;
use crate::applier::live::{self, LiveObjects, OwnedIndex};
use crate::context::Context;
use crate::metrics::Metrics;
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
/// Drift is checked against the instance cache, so it starts once that cache is filled.
pub async fn run(publisher: Publisher, ctx: Arc<Context>) {
    if let Err(error) = ctx.caches.ready().await {
        ctx.live.mark_supervised();
        tracing::error!(%error, "drift watches cannot start without the instance cache");
        return;
    }
    tracing::info!("drift watches: instance cache ready; supervising the runtimes' watches");
    let mut watching: HashMap<String, Watching> = HashMap::new();
    loop {
        let runtimes = Api::<KubernetesRuntime>::all(ctx.client.clone())
            .list(&Default::default())
            .await;
        match runtimes {
            Ok(list) => supervise(&publisher, &ctx, list.items, &mut watching).await,
            Err(error) => tracing::warn!(%error, "listing runtimes for drift watches"),
        }
        ctx.live.mark_supervised();
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
    ctx.live.retain(|name| names.iter().any(|n| n == name));
    for runtime in runtimes.iter() {
        let name = runtime.name_any();
        if !runtime.is_ready() {
            tracing::debug!(runtime = %name, "no drift watches while the runtime is not Ready");
            continue;
        }
        let client = match ctx.pool.client_for(runtime).await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(runtime = %name, %error, "no drift watches without a client");
                continue;
            }
        };
        if watching
            .get(&name)
            .is_some_and(|w| w.client.same_as(&client))
        {
            continue;
        }
        tracing::info!(runtime = %name, "watching managed objects for drift");
        let (tasks, live) = watch_runtime(&DriftSink::new(publisher, ctx, &name), client.client());
        ctx.live.insert(&name, live);
        watching.insert(name, Watching { client, tasks });
    }
}

/// Where one runtime's drift goes: the publisher, for instances that really live there.
#[derive(Clone)]
struct DriftSink {
    publisher: Publisher,
    instances: Store<WorkloadInstance>,
    metrics: Arc<Metrics>,
    runtime: String,
}

impl DriftSink {
    fn new(publisher: &Publisher, ctx: &Context, runtime: &str) -> Self {
        Self {
            publisher: publisher.clone(),
            instances: ctx.caches.instances.clone(),
            metrics: ctx.metrics.clone(),
            runtime: runtime.to_owned(),
        }
    }

    /// Publishes `notification` for a change of `seen` (at resourceVersion `version`; `None`
    /// for a deletion), unless it names no instance on this runtime or shows the object
    /// exactly as that instance recorded it after applying it (its own write coming back).
    async fn send(&self, notification: Notification, seen: Option<(AppliedObject, &str)>) {
        let Some(instance) = instance_on(&self.instances, &notification, &self.runtime) else {
            self.metrics.drift_rejected();
            tracing::debug!(runtime = %self.runtime, instance = %notification.subject(), "ignoring drift that names no instance placed on this runtime");
            return;
        };
        let inventory = instance
            .status
            .as_ref()
            .map(|s| s.applied_objects.as_slice())
            .unwrap_or_default();
        let own_write =
            seen.is_some_and(|(object, version)| live::is_recorded(inventory, &object, version));
        if !own_write {
            self.publisher.send(notification).await;
        }
    }
}

/// The instance `notification` names, when it really is placed on `runtime`. The
/// notification is read from labels and annotations anyone who may write to the runtime can
/// set: only an instance in the cache with that uid and `runtimeRef` `runtime` counts, or
/// drift could be aimed at another tenant's instance.
fn instance_on(
    instances: &Store<WorkloadInstance>,
    notification: &Notification,
    runtime: &str,
) -> Option<Arc<WorkloadInstance>> {
    let namespace = notification.namespace.as_deref()?;
    let reference = ObjectRef::new(&notification.name).within(namespace);
    instances.get(&reference).filter(|instance| {
        instance.metadata.uid.as_deref() == Some(notification.uid.as_str())
            && instance.spec.runtime_ref.name == runtime
    })
}

/// The drift watches of one runtime, and the caches they fill.
fn watch_runtime(sink: &DriftSink, client: &Client) -> (Vec<JoinHandle<()>>, LiveObjects) {
    let owned = OwnedIndex::default();
    let (deployments_task, deployments) = spawn_watch::<Deployment>(sink, client, &owned);
    let (stateful_sets_task, stateful_sets) = spawn_watch::<StatefulSet>(sink, client, &owned);
    let (daemon_sets_task, daemon_sets) = spawn_watch::<DaemonSet>(sink, client, &owned);
    let (services_task, services) = spawn_watch::<Service>(sink, client, &owned);
    let (config_maps_task, config_maps) = spawn_watch::<ConfigMap>(sink, client, &owned);
    let tasks = vec![
        deployments_task,
        stateful_sets_task,
        daemon_sets_task,
        services_task,
        config_maps_task,
    ];
    let live = LiveObjects {
        deployments,
        stateful_sets,
        daemon_sets,
        services,
        config_maps,
        owned,
        started: tokio::time::Instant::now(),
        listed: Arc::default(),
    };
    (tasks, live)
}

fn spawn_watch<K>(
    sink: &DriftSink,
    client: &Client,
    owned: &OwnedIndex,
) -> (JoinHandle<()>, Store<PartialObjectMeta<K>>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (sink, owned) = (sink.clone(), owned.clone());
    let config =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let (store, writer) = reflector::store();
    let events = watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config)
        .default_backoff()
        .modify(super::notifier::forget_managed_fields)
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let objects = match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    vec![(object, false)]
                }
                Ok(watcher::Event::Delete(object)) => vec![(object, true)],
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!(runtime = %sink.runtime, %error, "drift watch error; retrying");
                    continue;
                }
            };
            for (object, deleted) in objects {
                let applied = seen_as_applied::<K>(&object.metadata);
                index_owner(&owned, &object.metadata, &applied, deleted);
                if let Some(notification) = drift_notification(&sink.runtime, &object, deleted) {
                    let version = object.metadata.resource_version.clone().unwrap_or_default();
                    let seen = (!deleted).then_some((applied, version.as_str()));
                    sink.send(notification, seen).await;
                }
            }
        }
    });
    (task, store)
}

/// Keeps `owned` up to date with one watch event of `object` (its `meta`).
fn index_owner(owned: &OwnedIndex, meta: &ObjectMeta, object: &AppliedObject, deleted: bool) {
    let Some(uid) = meta.labels.as_ref().and_then(|l| l.get(INSTANCE_UID_LABEL)) else {
        return;
    };
    if deleted {
        owned.forget(uid, object);
    } else {
        owned.record(uid, object.clone());
    }
}

/// The inventory identity of a watched object.
fn seen_as_applied<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> AppliedObject {
    AppliedObject {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone(),
        applied: None,
    }
}

/// The notification for the instance that applied `object`, read from its label and
/// annotation; `None` for objects without them. Not yet trusted: see
/// [`names_an_instance_on`].
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
    use kube::runtime::reflector;
    use qleetos_crds::{RuntimeRef, WorkloadInstanceSpec};

    use super::*;

    fn names_an_instance_on(
        instances: &Store<WorkloadInstance>,
        notification: &Notification,
        runtime: &str,
    ) -> bool {
        instance_on(instances, notification, runtime).is_some()
    }

    fn instance(namespace: &str, name: &str, uid: &str, runtime: &str) -> WorkloadInstance {
        let mut instance = WorkloadInstance::new(
            name,
            WorkloadInstanceSpec {
                workload_ref: None,
                runtime_ref: RuntimeRef {
                    name: runtime.into(),
                },
                manifests: Vec::new(),
                chart: None,
                images: Default::default(),
                expose: None,
                needs: Vec::new(),
            },
        );
        instance.metadata.namespace = Some(namespace.into());
        instance.metadata.uid = Some(uid.into());
        instance
    }

    fn store_of(instances: Vec<WorkloadInstance>) -> Store<WorkloadInstance> {
        let (store, mut writer) = reflector::store();
        for instance in instances {
            writer.apply_watcher_event(&watcher::Event::Apply(instance));
        }
        store
    }

    fn drift_naming(namespace: &str, name: &str, uid: &str) -> Notification {
        let mut deployment = Deployment::default();
        deployment.metadata.labels = Some([(INSTANCE_UID_LABEL.into(), uid.into())].into());
        deployment.metadata.annotations =
            Some([(INSTANCE_ANNOTATION.into(), format!("{namespace}/{name}"))].into());
        drift_notification("eu", &deployment, false).expect("managed object")
    }

    #[test]
    fn drift_reaches_the_instance_placed_on_that_runtime() {
        let store = store_of(vec![instance("team-a", "web-eu", "i1", "eu")]);
        assert!(names_an_instance_on(
            &store,
            &drift_naming("team-a", "web-eu", "i1"),
            "eu"
        ));
    }

    #[test]
    fn forged_drift_is_refused() {
        let store = store_of(vec![
            instance("team-a", "web-eu", "i1", "eu"),
            instance("team-b", "db-us", "i2", "us"),
        ]);
        // An object in runtime eu labelled as if team-b's instance on us had applied it.
        let aimed_elsewhere = drift_naming("team-b", "db-us", "i2");
        assert!(!names_an_instance_on(&store, &aimed_elsewhere, "eu"));
        // The right name with a made-up uid, or an instance that does not exist.
        assert!(!names_an_instance_on(
            &store,
            &drift_naming("team-a", "web-eu", "forged"),
            "eu"
        ));
        assert!(!names_an_instance_on(
            &store,
            &drift_naming("team-a", "nothing", "i1"),
            "eu"
        ));
    }

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
