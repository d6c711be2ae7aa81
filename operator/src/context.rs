//! What every reconcile gets: clients, the runtime pool, events, metrics and settings.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::Resource;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use qleetos_crds::Reason;
use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeProfile, ServiceProfile, SupportService,
    SupportServiceProfile, TenantPolicy, Workload, WorkloadInstance, WorkloadPlan,
    WorkloadServiceDependency,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::kubeconfig::KubeconfigPolicy;
use crate::metrics::Metrics;
use crate::pool::RuntimePool;
use crate::tenancy::Fence;

/// Timings of the Qleets.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a converged object is reconciled again (drift correction).
    pub resync: Duration,
    /// How often runtimes are probed.
    pub probe_interval: Duration,
    /// How long a runtime stays unreachable before failover-enabled placements move off it,
    /// unless the Workload says otherwise.
    pub failover_after: Duration,
    /// How soon a rollout in progress is looked at again.
    pub progress_poll: Duration,
    /// First retry delay after a failure; doubles per failure up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest a single reconcile may run.
    pub reconcile_timeout: Duration,
    /// QleetOS's own namespace in the management cluster (kubeconfig Secrets live there) and
    /// the namespace tenants may never write to in a runtime.
    pub system_namespace: String,
    /// Reconciles of one runtime's instances this replica runs at once; the rest of the
    /// concurrency stays free for other runtimes.
    pub per_runtime_concurrency: usize,
    /// Kubeconfig features (exec plugins, file references) operations allow.
    pub kubeconfig: KubeconfigPolicy,
    /// The `Local` provisioning provider's programs and work directory; `None`: disabled.
    pub local_clusters: Option<crate::provisioning::local::LocalClusters>,
}

/// What a reconcile wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Converged; the next change, drift or resync notification brings it back.
    Done,
    /// Look again after this long (e.g. a rollout in progress).
    After(Duration),
}

/// Declares every kind the operator watches, once: the field of its watch cache in
/// [`Caches`] and [`CacheWriters`], its type, and the API its watch lists. The caches, their
/// writers, the readiness wait and the notifier's watches all derive from this table.
macro_rules! watched_kinds {
    ($($field:ident: $kind:ty => $api:expr,)+) => {
        /// Watch caches of the kinds reconciles read many of, filled by the notifier's
        /// watches, so a reconcile does not list them from the API server (which costs
        /// O(objects) per call).
        #[derive(Clone)]
        pub struct Caches {
            $(pub $field: Store<$kind>,)+
            /// The cached instances of each Workload, by its uid.
            pub instances_by_owner: crate::owners::OwnerIndex,
            /// Whether every cache above listed its objects once (see [`Caches::ready`]).
            listed: Arc<tokio::sync::OnceCell<bool>>,
        }

        /// The writing ends of [`Caches`], handed to the watches that fill them.
        pub struct CacheWriters {
            $(pub $field: Writer<$kind>,)+
        }

        /// Empty caches and their writers.
        pub fn caches() -> (Caches, CacheWriters) {
            $(let $field = reflector::store::<$kind>();)+
            (
                Caches {
                    $($field: $field.0,)+
                    instances_by_owner: crate::owners::OwnerIndex::default(),
                    listed: Arc::default(),
                },
                CacheWriters {
                    $($field: $field.1,)+
                },
            )
        }

        impl Caches {
            /// Whether every watch listed its objects once (`false`: a watch stopped before).
            async fn every_list(&self) -> bool {
                $(self.$field.wait_until_ready().await.is_ok() &&)+ true
            }
        }

        $(impl Cached for $kind {
            fn store(caches: &Caches) -> &Store<Self> {
                &caches.$field
            }
        })+

        impl CacheWriters {
            /// Runs `watch` on every kind's API into its cache, until they all stop.
            pub(crate) async fn watch_all<W: WatchInto>(self, watch: &W, ctx: &Context) {
                tokio::join!($(watch.watch(($api)(ctx), self.$field),)+);
            }

            /// Marks every cache as listed (for tests that fill the caches by hand).
            #[cfg(test)]
            pub(crate) fn all_listed(&mut self) {
                $(self.$field.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);)+
            }
        }
    };
}

/// A kind with a watch cache: where in [`Caches`] it is.
pub trait Cached: crate::queue::worker::QleetResource {
    fn store(caches: &Caches) -> &Store<Self>;
}

/// What fills a watch cache: given the API of a kind and its cache's writer, watches it.
pub(crate) trait WatchInto {
    fn watch<K: crate::queue::worker::QleetResource>(
        &self,
        api: Api<K>,
        writer: Writer<K>,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// Every object of the kind, in every namespace.
fn all<K: Resource<DynamicType = ()>>(ctx: &Context) -> Api<K> {
    Api::all(ctx.client.clone())
}

// Adding a kind the operator watches is one line here.
watched_kinds! {
    workloads: Workload => all,
    instances: WorkloadInstance => all,
    runtimes: KubernetesRuntime => all,
    policies: TenantPolicy => all,
    namespaces: PartialObjectMeta<Namespace> => all,
    profiles: SupportServiceProfile => all,
    support_services: SupportService => all,
    service_profiles: ServiceProfile => all,
    service_dependencies: WorkloadServiceDependency => all,
    runtime_profiles: KubernetesRuntimeProfile => all,
    plans: WorkloadPlan => all,
    // Only QleetOS's own namespace: kubeconfig Secrets elsewhere are never read. Their
    // versions tell whether a runtime's cached client is current.
    system_secrets: PartialObjectMeta<Secret> => |ctx: &Context| {
        Api::namespaced(ctx.client.clone(), &ctx.settings.system_namespace)
    },
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CacheWriters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheWriters").finish_non_exhaustive()
    }
}

impl Caches {
    /// Waits until every cache holds a complete list. Only one caller at a time waits on the
    /// stores themselves: a store's own wait wakes just the latest of concurrent waiters, so
    /// the others would sleep forever.
    pub async fn ready(&self) -> crate::error::Result<()> {
        if *self.listed.get_or_init(|| self.every_list()).await {
            Ok(())
        } else {
            Err(crate::error::Error::Cache("the watch cache stopped".into()))
        }
    }

    /// The runtime named `name`, as last seen by the watch.
    pub fn runtime(&self, name: &str) -> Option<Arc<KubernetesRuntime>> {
        self.runtimes.get(&ObjectRef::new(name))
    }

    /// What management namespace `namespace` may do in the compute space.
    pub fn fence(&self, namespace: &str, system_namespace: &str) -> Fence {
        let labels = self
            .namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        let policies: Vec<TenantPolicy> = self
            .policies
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let mut reserved: Vec<String> = self
            .profiles
            .state()
            .iter()
            .map(|p| p.spec.namespace.clone())
            .collect();
        reserved.sort();
        reserved.dedup();
        Fence::for_namespace(&policies, namespace, &labels, system_namespace)
            .with_reserved_namespaces(reserved)
    }
}

/// Shared state of the Qleets.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    /// The management cluster as a target of the applier (ServiceProfiles installing there).
    pub management: crate::runtime_client::RuntimeClient,
    pub pool: RuntimePool,
    pub caches: Caches,
    /// How far each watch cache has caught up, so reconciles can read from it.
    pub fences: crate::fence::Fences,
    /// What the drift watches last saw of the objects applied in each runtime.
    pub live: crate::applier::live::LiveRegistry,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Renders charts; `None` when the operator runs without chart support (unit tests).
    pub charts: Option<Arc<crate::chart::Charts>>,
    /// Placements decided by this operator whose instances the caches may not show yet.
    pub reservations: Arc<crate::capacity::Reservation>,
    recorder: Recorder,
    runtime_slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, caches: Caches) -> Self {
        let reporter = Reporter {
            controller: "qleetos-operator".into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Self {
            pool: RuntimePool::new(
                client.clone(),
                settings.system_namespace.clone(),
                settings.kubeconfig,
            )
            .with_secret_versions(caches.system_secrets.clone()),
            caches,
            fences: crate::fence::Fences::default(),
            live: crate::applier::live::LiveRegistry::default(),
            recorder: Recorder::new(client.clone(), reporter),
            management: crate::runtime_client::RuntimeClient::new("management", client.clone()),
            client,
            metrics,
            settings,
            charts: None,
            reservations: Arc::default(),
            runtime_slots: Arc::default(),
        }
    }

    /// The chart renderer, or the error saying this operator runs without one.
    pub fn charts(&self) -> crate::error::Result<&crate::chart::Charts> {
        self.charts
            .as_deref()
            .ok_or_else(|| crate::error::Error::ChartRender {
                chart: "(any)".into(),
                problem: "this operator runs without chart support (start it with --helm)".into(),
            })
    }

    /// The same context rendering charts with `charts`.
    pub fn with_charts(mut self, charts: crate::chart::Charts) -> Self {
        self.charts = Some(Arc::new(charts));
        self
    }

    /// One of the runtime's reconcile slots, or `None` when all are taken (the caller
    /// requeues), so a slow or unreachable runtime cannot occupy every worker.
    pub fn runtime_slot(&self, runtime: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = self
            .runtime_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(runtime.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.settings.per_runtime_concurrency.max(1)))
            })
            .clone();
        semaphore.try_acquire_owned().ok()
    }

    /// Publishes a Kubernetes Event on `object`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: Reason,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.as_str().into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason = reason.as_str(), "could not publish event");
        }
    }

    /// An Event whose type follows its reason's class: Warning for a failure, else Normal.
    pub async fn event_for<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        reason: Reason,
        note: String,
    ) {
        let type_ = if reason.is_failure() {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.event(object, type_, reason, note).await;
    }
}

/// `namespace/name` or `name`, the key used for backoff and logs.
pub fn key_of<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_concurrent_waiter_sees_the_caches_ready() {
        let (caches, mut writers) = caches();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let caches = caches.clone();
                tokio::spawn(async move { caches.ready().await })
            })
            .collect();
        tokio::task::yield_now().await;
        writers.all_listed();
        for waiter in waiters {
            let done = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(matches!(done, Ok(Ok(Ok(())))), "a waiter was never woken");
        }
    }
}
