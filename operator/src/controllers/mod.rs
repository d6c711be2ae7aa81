//! The Qleets: one module per kind, each with a reconcile, an error policy and its wiring.

pub mod instance;
pub mod profile;
pub mod runtime;
pub mod runtimeprofile;
pub mod servicedependency;
pub mod serviceprofile;
pub mod support;
pub mod tenantpolicy;
pub mod workload;
pub mod workloadplan;

use futures::future::BoxFuture;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use qleetos_crds::FIELD_MANAGER;
use qleetos_crds::notification::{QleetKind, Queued};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::queue::triggers::{Registry, Triggers};
use crate::queue::worker::Worker;

/// Writes `status` with server-side apply on the status subresource, under QleetOS's field manager.
pub(crate) async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(patch))
        .await
        .map_err(Error::Management)?;
    Ok(())
}

/// Writes `status` like [`apply_status`] unless the object's `current` status already is
/// exactly that: a write that changes nothing still costs the API server a request, and
/// every watcher an event.
pub(crate) async fn apply_status_if_changed<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    status: &S,
    metrics: (&crate::metrics::Metrics, &'static str),
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    if current.is_some_and(|current| same_json(current, status)) {
        let (metrics, controller) = metrics;
        metrics.write_skipped(controller, "status");
        return Ok(());
    }
    apply_status(api, name, status).await
}

/// Whether two values serialize to the same JSON.
pub(crate) fn same_json<A: Serialize, B: Serialize>(a: &A, b: &B) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The name of a resource, or the error saying it has none.
pub(crate) fn name_of<K: Resource>(object: &K) -> Result<String> {
    object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata(std::any::type_name::<K>(), "name"))
}

/// The namespace of a namespaced resource, or the error saying it has none.
pub(crate) fn namespace_of<K: Resource>(object: &K) -> Result<String> {
    object
        .meta()
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata(
            std::any::type_name::<K>(),
            "namespace",
        ))
}

/// One Qleet as the operator runs it: its name in `--qleets`, its kind, its worker and what
/// notifies it. Adding a Qleet is adding its module and one entry here.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    pub name: &'static str,
    pub kind: QleetKind,
    pub run: fn(Worker, CancellationToken) -> BoxFuture<'static, ()>,
    pub notified_by: fn() -> Triggers,
}

/// Registers each Qleet from its module: `"<name in --qleets>" => <module>: <kind>`.
macro_rules! qleets {
    ($($name:literal => $module:ident: $kind:ty,)+) => {
        /// Every Qleet.
        pub const QLEETS: &[Registered] = &[$(
            Registered {
                name: $name,
                kind: <$kind as Queued>::QLEET,
                run: |worker, shutdown| Box::pin(worker.run($module::qleet(), shutdown)),
                notified_by: $module::notified_by,
            },
        )+];
    };
}

// Adding a Qleet is its module and one line here.
qleets! {
    "runtime" => runtime: qleetos_crds::KubernetesRuntime,
    "workload" => workload: qleetos_crds::Workload,
    "instance" => instance: qleetos_crds::WorkloadInstance,
    "support" => support: qleetos_crds::SupportService,
    "profile" => profile: qleetos_crds::SupportServiceProfile,
    "serviceprofile" => serviceprofile: qleetos_crds::ServiceProfile,
    "servicedependency" => servicedependency: qleetos_crds::WorkloadServiceDependency,
    "runtimeprofile" => runtimeprofile: qleetos_crds::KubernetesRuntimeProfile,
    "tenantpolicy" => tenantpolicy: qleetos_crds::TenantPolicy,
    "workloadplan" => workloadplan: qleetos_crds::WorkloadPlan,
}

/// What notifies every Qleet (every replica publishes for all of them, whichever it runs).
pub fn triggers() -> Registry {
    Registry::new(QLEETS.iter().map(|qleet| (qleet.notified_by)()).collect())
}

/// The Qleet named `name` in `--qleets`.
pub fn named(name: &str) -> Option<Registered> {
    QLEETS.iter().copied().find(|qleet| qleet.name == name)
}
