//! What every reconcile gets: clients, the runtime pool, events, metrics and settings.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use qleetos_crds::Reason;
use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeProfile, ServiceProfile, SupportService,
    SupportServiceProfile, TenantPolicy, Workload, WorkloadInstance, WorkloadServiceDependency,
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

/// Watch caches of the kinds reconciles read many of, filled by the notifier's watches, so a
/// reconcile does not list them from the API server (which costs O(objects) per call).
#[derive(Clone)]
pub struct Caches {
    pub workloads: Store<Workload>,
    pub instances: Store<WorkloadInstance>,
    pub runtimes: Store<KubernetesRuntime>,
    pub policies: Store<TenantPolicy>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub profiles: Store<SupportServiceProfile>,
    pub support_services: Store<SupportService>,
    pub service_profiles: Store<ServiceProfile>,
    pub service_dependencies: Store<WorkloadServiceDependency>,
    pub runtime_profiles: Store<KubernetesRuntimeProfile>,
    /// Metadata of the Secrets in QleetOS's own namespace (kubeconfigs): their versions tell
    /// whether a runtime's cached client is current.
    pub system_secrets: Store<PartialObjectMeta<Secret>>,
    /// The cached instances of each Workload, by its uid.
    pub instances_by_owner: crate::owners::OwnerIndex,
    /// Whether every cache above listed its objects once (see [`Caches::ready`]).
    listed: Arc<tokio::sync::OnceCell<bool>>,
}

/// The writing ends of [`Caches`], handed to the watches that fill them.
pub struct CacheWriters {
    pub workloads: Writer<Workload>,
    pub instances: Writer<WorkloadInstance>,
    pub runtimes: Writer<KubernetesRuntime>,
    pub policies: Writer<TenantPolicy>,
    pub namespaces: Writer<PartialObjectMeta<Namespace>>,
    pub profiles: Writer<SupportServiceProfile>,
    pub support_services: Writer<SupportService>,
    pub service_profiles: Writer<ServiceProfile>,
    pub service_dependencies: Writer<WorkloadServiceDependency>,
    pub runtime_profiles: Writer<KubernetesRuntimeProfile>,
    pub system_secrets: Writer<PartialObjectMeta<Secret>>,
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

/// Empty caches and their writers.
pub fn caches() -> (Caches, CacheWriters) {
    let (workloads, workload_writer) = reflector::store();
    let (instances, instance_writer) = reflector::store();
    let (runtimes, runtime_writer) = reflector::store();
    let (policies, policy_writer) = reflector::store();
    let (namespaces, namespace_writer) = reflector::store();
    let (profiles, profile_writer) = reflector::store();
    let (support_services, support_writer) = reflector::store();
    let (service_profiles, service_profile_writer) = reflector::store();
    let (service_dependencies, service_dependency_writer) = reflector::store();
    let (runtime_profiles, runtime_profile_writer) = reflector::store();
    let (system_secrets, system_secret_writer) = reflector::store();
    (
        Caches {
            workloads,
            instances,
            runtimes,
            policies,
            namespaces,
            profiles,
            support_services,
            service_profiles,
            service_dependencies,
            runtime_profiles,
            system_secrets,
            instances_by_owner: crate::owners::OwnerIndex::default(),
            listed: Arc::default(),
        },
        CacheWriters {
            workloads: workload_writer,
            instances: instance_writer,
            runtimes: runtime_writer,
            policies: policy_writer,
            namespaces: namespace_writer,
            profiles: profile_writer,
            support_services: support_writer,
            service_profiles: service_profile_writer,
            service_dependencies: service_dependency_writer,
            runtime_profiles: runtime_profile_writer,
            system_secrets: system_secret_writer,
        },
    )
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

    /// Whether every watch listed its objects once (`false`: a watch stopped before).
    async fn every_list(&self) -> bool {
        self.workloads.wait_until_ready().await.is_ok()
            && self.instances.wait_until_ready().await.is_ok()
            && self.runtimes.wait_until_ready().await.is_ok()
            && self.policies.wait_until_ready().await.is_ok()
            && self.namespaces.wait_until_ready().await.is_ok()
            && self.profiles.wait_until_ready().await.is_ok()
            && self.support_services.wait_until_ready().await.is_ok()
            && self.service_profiles.wait_until_ready().await.is_ok()
            && self.service_dependencies.wait_until_ready().await.is_ok()
            && self.runtime_profiles.wait_until_ready().await.is_ok()
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
            runtime_slots: Arc::default(),
        }
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
    use kube::runtime::watcher::Event;

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
        writers.workloads.apply_watcher_event(&Event::InitDone);
        writers.instances.apply_watcher_event(&Event::InitDone);
        writers.runtimes.apply_watcher_event(&Event::InitDone);
        writers.policies.apply_watcher_event(&Event::InitDone);
        writers.namespaces.apply_watcher_event(&Event::InitDone);
        writers.profiles.apply_watcher_event(&Event::InitDone);
        writers
            .support_services
            .apply_watcher_event(&Event::InitDone);
        writers
            .service_profiles
            .apply_watcher_event(&Event::InitDone);
        writers
            .service_dependencies
            .apply_watcher_event(&Event::InitDone);
        writers
            .runtime_profiles
            .apply_watcher_event(&Event::InitDone);
        for waiter in waiters {
            let done = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(matches!(done, Ok(Ok(Ok(())))), "a waiter was never woken");
        }
    }
}
