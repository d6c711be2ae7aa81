//! Publishes a notification for every change to a QleetOS object, whoever made it, and for
//! the objects that must react to it; plus periodic resyncs and runtime probes. Every
//! replica runs it: message ids make one change one message.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use qleetos_crds::notification::{Cause, Notification, QleetKind};
use qleetos_crds::{KubernetesRuntime, Workload, WorkloadInstance};

use super::Broker;
use crate::context::{CacheWriters, Context};
use crate::controllers::workload::placement_relevant;

/// Publishes notifications and remembers when some could not be sent.
#[derive(Debug, Clone)]
pub struct Publisher {
    broker: Broker,
    missed: Arc<AtomicBool>,
}

impl Publisher {
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            missed: Arc::default(),
        }
    }

    pub async fn send(&self, notification: Notification) {
        if let Err(error) = self.broker.publish(&notification).await {
            tracing::warn!(subject = %notification.subject(), %error, "could not publish; will resync once NATS is back");
            self.missed.store(true, Ordering::Relaxed);
        }
    }

    fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::Relaxed)
    }
}

/// The notification pointing at `object` for its own Qleet.
pub fn notification_for<K: Resource>(kind: QleetKind, object: &K, cause: Cause) -> Notification {
    let meta = object.meta();
    Notification {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        cause,
    }
}

/// Changes a Qleet acts on: spec, labels, annotations, finalizers, deletion. Status writes
/// (a Qleet's own output) do not notify the object's own Qleet.
pub(super) fn intent<K: Resource>(object: &K) -> Option<u64> {
    let meta = object.meta();
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

pub(super) fn related_object<K: Resource<DynamicType = ()>>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}:{}",
        K::kind(&()),
        meta.uid.as_deref().unwrap_or_default(),
        meta.resource_version.as_deref().unwrap_or_default()
    )
}

/// Runs every watch and ticker until the process stops.
pub async fn run(publisher: Publisher, ctx: Arc<Context>, writers: CacheWriters) {
    let (workloads, workload_writer) = reflector::store::<Workload>();
    let (instances, instance_writer) = (ctx.caches.instances.clone(), writers.instances);
    let (runtimes, runtime_writer) = (ctx.caches.runtimes.clone(), writers.runtimes);
    let client = ctx.client.clone();
    let workload_changes = watched(Api::<Workload>::all(client.clone()), workload_writer)
        .predicate_filter(intent, Default::default());
    let instance_changes = watched(
        Api::<WorkloadInstance>::all(client.clone()),
        instance_writer,
    );
    let runtime_changes = watched(
        Api::<KubernetesRuntime>::all(client.clone()),
        runtime_writer,
    );
    tokio::join!(
        super::dependents::run(&publisher, &ctx, writers.profiles, writers.support_services),
        for_each(workload_changes, |w| notify_own(
            &publisher,
            QleetKind::Workload,
            w
        )),
        notify_instances(&publisher, &ctx, instance_changes),
        notify_runtimes(&publisher, runtime_changes, &workloads),
        notify_secret_owners(&publisher, &ctx, &runtimes),
        resync(&publisher, &ctx, &workloads, &instances, &runtimes),
        probe_ticks(&publisher, &ctx, &runtimes),
    );
}

/// The objects of `api` as they change, deletions included (the last finalizer's removal
/// deletes an object without a final update), reflected into `writer` first.
pub(super) fn watched<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
) -> impl Stream<Item = Result<K, watcher::Error>>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
}

pub(super) async fn for_each<K, F, Fut>(
    stream: impl Stream<Item = Result<K, watcher::Error>>,
    mut act: F,
) where
    F: FnMut(K) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(object) => act(object).await,
            Err(error) => tracing::warn!(%error, "watch error; retrying with backoff"),
        }
    }
}

pub(super) async fn notify_own<K: Resource>(publisher: &Publisher, kind: QleetKind, object: K) {
    publisher
        .send(notification_for(kind, &object, Cause::Change))
        .await;
}

/// An instance's own changes notify the instance Qleet; any change, status included,
/// notifies its Workload, which sums instance health up.
async fn notify_instances(
    publisher: &Publisher,
    ctx: &Context,
    stream: impl Stream<Item = Result<WorkloadInstance, watcher::Error>>,
) {
    let mut seen = std::collections::HashMap::new();
    for_each(stream, |instance| {
        let own_change = intent(&instance)
            != seen
                .insert(instance.uid().unwrap_or_default(), intent(&instance))
                .flatten();
        async move {
            if own_change {
                notify_own(publisher, QleetKind::WorkloadInstance, instance.clone()).await;
            }
            let owner = instance
                .owner_references()
                .iter()
                .find(|o| o.kind == "Workload")
                .cloned();
            super::dependents::instance_changed(publisher, ctx, &instance).await;
            if let Some(owner) = owner {
                publisher
                    .send(Notification {
                        kind: QleetKind::Workload,
                        namespace: instance.namespace(),
                        name: owner.name,
                        uid: owner.uid,
                        resource_version: String::new(),
                        cause: Cause::Related {
                            object: related_object(&instance),
                        },
                    })
                    .await;
            }
        }
    })
    .await;
}

/// A runtime's own changes notify the runtime Qleet; changes that can move placements
/// notify every Workload.
async fn notify_runtimes(
    publisher: &Publisher,
    stream: impl Stream<Item = Result<KubernetesRuntime, watcher::Error>>,
    workloads: &Store<Workload>,
) {
    let mut seen_intent = std::collections::HashMap::new();
    let mut seen_placement = std::collections::HashMap::new();
    for_each(stream, |runtime| {
        let uid = runtime.uid().unwrap_or_default();
        let own_change =
            seen_intent.insert(uid.clone(), intent(&runtime)) != Some(intent(&runtime));
        let placement = placement_relevant(&runtime);
        let moves = seen_placement.insert(uid, placement) != Some(placement);
        async move {
            if own_change {
                notify_own(publisher, QleetKind::KubernetesRuntime, runtime.clone()).await;
            }
            if moves {
                let cause = Cause::Related {
                    object: format!("KubernetesRuntime/{}:{placement:x}", runtime.name_any()),
                };
                for workload in workloads.state() {
                    publisher
                        .send(notification_for(
                            QleetKind::Workload,
                            &*workload,
                            cause.clone(),
                        ))
                        .await;
                }
            }
        }
    })
    .await;
}

/// A changed kubeconfig Secret notifies the runtimes using it. Only QleetOS's own namespace
/// is watched: kubeconfig Secrets elsewhere are never read.
async fn notify_secret_owners(
    publisher: &Publisher,
    ctx: &Context,
    runtimes: &Store<KubernetesRuntime>,
) {
    let secrets = watcher(
        Api::<PartialObjectMeta<Secret>>::namespaced(
            ctx.client.clone(),
            &ctx.settings.system_namespace,
        ),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(predicates::resource_version, Default::default());
    for_each(secrets, |secret| async move {
        for runtime in runtimes.state() {
            let reference = &runtime.spec.connection.kubeconfig_secret_ref;
            if Some(&reference.namespace) == secret.namespace().as_ref()
                && reference.name == secret.name_any()
            {
                let cause = Cause::Related {
                    object: related_object(&secret),
                };
                publisher
                    .send(notification_for(
                        QleetKind::KubernetesRuntime,
                        &*runtime,
                        cause,
                    ))
                    .await;
            }
        }
    })
    .await;
}

fn period(interval: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() / interval.as_secs().max(1)
}

/// Re-notifies every object each resync interval, and at once after publishes were missed
/// (NATS was down), so nothing that changed meanwhile is left behind.
async fn resync(
    publisher: &Publisher,
    ctx: &Context,
    workloads: &Store<Workload>,
    instances: &Store<WorkloadInstance>,
    runtimes: &Store<KubernetesRuntime>,
) {
    let interval = ctx.settings.resync;
    let mut next_resync = tokio::time::Instant::now() + interval;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let catch_up = publisher.broker.is_connected() && publisher.take_missed();
        if !catch_up && tokio::time::Instant::now() < next_resync {
            continue;
        }
        next_resync = tokio::time::Instant::now() + interval;
        let cause = if catch_up {
            Cause::Resync {
                period: period(Duration::from_secs(1)),
            }
        } else {
            Cause::Resync {
                period: period(interval),
            }
        };
        tracing::info!(catch_up, "resync: notifying every object");
        for object in runtimes.state() {
            publisher
                .send(notification_for(
                    QleetKind::KubernetesRuntime,
                    &*object,
                    cause.clone(),
                ))
                .await;
        }
        for object in workloads.state() {
            publisher
                .send(notification_for(
                    QleetKind::Workload,
                    &*object,
                    cause.clone(),
                ))
                .await;
        }
        for object in instances.state() {
            publisher
                .send(notification_for(
                    QleetKind::WorkloadInstance,
                    &*object,
                    cause.clone(),
                ))
                .await;
        }
        super::dependents::resync(publisher, ctx, &cause).await;
    }
}

/// Notifies every runtime each probe interval.
async fn probe_ticks(publisher: &Publisher, ctx: &Context, runtimes: &Store<KubernetesRuntime>) {
    let interval = ctx.settings.probe_interval;
    loop {
        tokio::time::sleep(interval).await;
        let cause = Cause::Probe {
            period: period(interval),
        };
        for runtime in runtimes.state() {
            publisher
                .send(notification_for(
                    QleetKind::KubernetesRuntime,
                    &*runtime,
                    cause.clone(),
                ))
                .await;
        }
    }
}
