//! The Qleets: one module per kind, each with a reconcile, an error policy and its wiring.

pub mod instance;
pub mod profile;
pub mod runtime;
pub mod support;
pub mod workload;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use qleetos_crds::FIELD_MANAGER;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

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

use kube::Client;
use qleetos_crds::notification::QleetKind;
use qleetos_crds::{
    KubernetesRuntime, SupportService, SupportServiceProfile, Workload, WorkloadInstance,
};

use crate::queue::worker::Qleet;

/// The Workload Qleet.
pub fn workload_qleet() -> Qleet<Workload> {
    Qleet {
        kind: QleetKind::Workload,
        api: |client: Client, namespace| Api::namespaced(client, namespace.unwrap_or_default()),
        reconcile: |object, ctx| Box::pin(workload::reconcile(object, ctx)),
    }
}

/// The WorkloadInstance Qleet.
pub fn instance_qleet() -> Qleet<WorkloadInstance> {
    Qleet {
        kind: QleetKind::WorkloadInstance,
        api: |client: Client, namespace| Api::namespaced(client, namespace.unwrap_or_default()),
        reconcile: |object, ctx| Box::pin(instance::reconcile(object, ctx)),
    }
}

/// The KubernetesRuntime Qleet.
pub fn runtime_qleet() -> Qleet<KubernetesRuntime> {
    Qleet {
        kind: QleetKind::KubernetesRuntime,
        api: |client: Client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(runtime::reconcile(object, ctx)),
    }
}

/// The SupportService Qleet.
pub fn support_qleet() -> Qleet<SupportService> {
    Qleet {
        kind: QleetKind::SupportService,
        api: |client: Client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(support::reconcile(object, ctx)),
    }
}

/// The SupportServiceProfile Qleet.
pub fn profile_qleet() -> Qleet<SupportServiceProfile> {
    Qleet {
        kind: QleetKind::SupportServiceProfile,
        api: |client: Client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(profile::reconcile(object, ctx)),
    }
}
