//! The infrastructure, control-plane and bootstrap provider behind the ClusterClass
//! `qleetos-local`, run by the `qleetos-capi-provider` binary against the management
//! cluster. One controller per kind (see `assets/cluster-api/provider-crds.yaml`):
//!
//! - `LocalCluster`: nothing to build; reports itself provisioned, with the endpoint, once
//!   the control plane's local cluster runs and its kubeconfig Secret exists.
//! - `LocalControlPlane`: starts a real local cluster ([`crate::cluster::Cluster`]), writes
//!   the `<cluster>-kubeconfig` Secret, reports endpoint, version and replicas; stops the
//!   cluster when deleted.
//! - `LocalMachine`: creates a fake kwok Node with a matching `spec.providerID` in that
//!   cluster; deletes it when deleted.
//! - `LocalConfig`: a Secret with dummy bootstrap data.

mod bootstrap;
mod control_plane;
mod infrastructure;
mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{finalizer, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::error::Error;

/// Field manager and finalizer prefix of everything the provider writes.
pub const FIELD_MANAGER: &str = "qleetos-capi-provider";
/// Label Cluster API puts on every object that belongs to a Cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
const API_VERSION: &str = "v1alpha1";
/// How soon a failed reconcile is retried.
const RETRY: Duration = Duration::from_secs(2);
/// How soon an object waiting for its local cluster is looked at again.
const WAIT: Duration = Duration::from_secs(1);

/// One of the provider's kinds.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub group: &'static str,
    pub kind: &'static str,
}

pub const LOCAL_CLUSTER: Kind = Kind {
    group: "infrastructure.local.e2e.qleetos.io",
    kind: "LocalCluster",
};
pub const LOCAL_MACHINE: Kind = Kind {
    group: "infrastructure.local.e2e.qleetos.io",
    kind: "LocalMachine",
};
pub const LOCAL_CONTROL_PLANE: Kind = Kind {
    group: "controlplane.local.e2e.qleetos.io",
    kind: "LocalControlPlane",
};
pub const LOCAL_CONFIG: Kind = Kind {
    group: "bootstrap.local.e2e.qleetos.io",
    kind: "LocalConfig",
};

impl Kind {
    pub fn api_resource(self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(self.group, API_VERSION, self.kind);
        ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", self.kind.to_lowercase()))
    }
}

/// The name of the local cluster (and of its directory) that runs Cluster API Cluster
/// `cluster`: the same name when it fits [`crate::cluster::ClusterSpec`]'s 40 characters,
/// else a prefix plus a hash.
pub fn local_cluster_name(cluster: &str) -> String {
    if cluster.len() <= 40 {
        return cluster.to_owned();
    }
    let mut hasher = DefaultHasher::new();
    cluster.hash(&mut hasher);
    let prefix = cluster[..31].trim_end_matches('-');
    format!("{prefix}-{:08x}", hasher.finish() as u32)
}

/// The Secret Cluster API and its users read a Cluster's kubeconfig from (key `value`).
pub fn kubeconfig_secret_name(cluster: &str) -> String {
    format!("{cluster}-kubeconfig")
}

/// A Cluster API Cluster: namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ClusterKey {
    pub namespace: String,
    pub name: String,
}

impl ClusterKey {
    /// The Cluster that `obj` belongs to, from its cluster-name label.
    fn of(obj: &DynamicObject) -> Option<ClusterKey> {
        Some(ClusterKey {
            namespace: obj.namespace()?,
            name: obj.labels().get(CLUSTER_NAME_LABEL)?.clone(),
        })
    }
}

/// What every reconciler shares: the management client and the running local clusters.
struct Context {
    client: Client,
    /// Local clusters live in `<dir>/<namespace>/<local cluster name>`.
    dir: PathBuf,
    clusters: Mutex<BTreeMap<ClusterKey, Cluster>>,
}

impl Context {
    fn api(&self, kind: Kind, obj: &DynamicObject) -> Api<DynamicObject> {
        let namespace = obj.namespace().unwrap_or_default();
        Api::namespaced_with(self.client.clone(), &namespace, &kind.api_resource())
    }

    /// An admin client of the local cluster that runs `key`, if it runs.
    async fn workload_client(&self, key: &ClusterKey) -> Result<Option<Client>, Error> {
        match self.clusters.lock().await.get(key) {
            Some(cluster) => Ok(Some(cluster.client().await?)),
            None => Ok(None),
        }
    }

    /// The API server port of the local cluster that runs `key`, if it runs.
    async fn api_server_port(&self, key: &ClusterKey) -> Option<u16> {
        self.clusters.lock().await.get(key).map(api_server_port)
    }

    async fn stop_all(&self) {
        let clusters = std::mem::take(&mut *self.clusters.lock().await);
        for (key, cluster) in clusters {
            tracing::info!(
                namespace = key.namespace,
                cluster = key.name,
                "stopping local cluster on shutdown"
            );
            cluster.stop().await;
        }
    }
}

fn api_server_port(cluster: &Cluster) -> u16 {
    let url = cluster.server_url();
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_default()
}

/// Runs the provider's controllers until `shutdown` completes, then stops every local
/// cluster it started. Local clusters go to `dir/<namespace>/<name>`.
pub async fn run(
    client: Client,
    dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let context = Arc::new(Context {
        client,
        dir,
        clusters: Mutex::default(),
    });
    let controllers = futures::future::join4(
        control(LOCAL_CLUSTER, infrastructure::reconcile_cluster, &context),
        control(LOCAL_MACHINE, infrastructure::reconcile_machine, &context),
        control(LOCAL_CONTROL_PLANE, control_plane::reconcile, &context),
        control(LOCAL_CONFIG, bootstrap::reconcile, &context),
    );
    tracing::info!("provider controllers running");
    tokio::select! {
        _ = controllers => tracing::warn!("provider controllers ended"),
        () = shutdown => tracing::info!("shutting down"),
    }
    context.stop_all().await;
    Ok(())
}

async fn control<F, Fut>(kind: Kind, reconcile: F, context: &Arc<Context>)
where
    F: FnMut(Arc<DynamicObject>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let resource = kind.api_resource();
    let api = Api::<DynamicObject>::all_with(context.client.clone(), &resource);
    Controller::new_with(api, watcher::Config::default(), resource)
        .run(reconcile, retry, context.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(kind = kind.kind, %error, "controller event");
            }
        })
        .await;
}

fn retry(obj: Arc<DynamicObject>, error: &Error, _: Arc<Context>) -> Action {
    let kind = obj.types.as_ref().map_or("?", |t| t.kind.as_str());
    let name = obj.name_any();
    tracing::warn!(kind, name, %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// Runs `apply` while `obj` lives and `cleanup` once it is being deleted, with finalizer
/// `<group>/<FIELD_MANAGER>` holding the deletion until `cleanup` succeeded.
async fn with_finalizer<A, C>(
    kind: Kind,
    obj: Arc<DynamicObject>,
    context: &Context,
    apply: impl FnOnce(Arc<DynamicObject>) -> A,
    cleanup: impl FnOnce(Arc<DynamicObject>) -> C,
) -> Result<Action, Error>
where
    A: Future<Output = Result<Action, Error>>,
    C: Future<Output = Result<Action, Error>>,
{
    let api = context.api(kind, &obj);
    let name = format!("{}/{FIELD_MANAGER}", kind.group);
    let result = finalizer(&api, &name, obj, |event| async move {
        match event {
            finalizer::Event::Apply(obj) => apply(obj).await,
            finalizer::Event::Cleanup(obj) => cleanup(obj).await,
        }
    })
    .await;
    match result {
        Ok(action) => Ok(action),
        // The finalizer patches test the finalizers they saw: a cached object older than
        // our last finalizer change fails that test. Look again once the cache caught up.
        Err(
            finalizer::Error::AddFinalizer(kube::Error::Api(e))
            | finalizer::Error::RemoveFinalizer(kube::Error::Api(e)),
        ) if e.code == 422 => {
            tracing::debug!(finalizer = name, "stale object; retrying");
            Ok(Action::requeue(WAIT))
        }
        Err(finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e)) => Err(e),
        Err(finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e)) => {
            Err(Error::Kube(e))
        }
        Err(other) => Err(Error::Setup(format!("finalizer {name}: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_fit_the_cluster_spec() {
        assert_eq!(local_cluster_name("dev"), "dev");
        let long = "a-very-long-cluster-name-that-does-not-fit-in-forty";
        let local = local_cluster_name(long);
        assert!(local.len() <= 40, "{local}");
        assert_eq!(local, local_cluster_name(long));
        assert_ne!(local, local_cluster_name(&format!("{long}x")));
    }
}
