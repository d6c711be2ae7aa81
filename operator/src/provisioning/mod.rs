//! Clusters on demand, the bottom layer of the dependency graph: a KubernetesRuntime made
//! from a KubernetesRuntimeProfile is provisioned by the profile's provider, connected
//! through the kubeconfig Secret QleetOS writes for it in its own namespace, and removed
//! (what QleetOS installed first, then the cluster) once unused for the idle period.

pub mod cluster_api;
pub mod demand;
pub mod local;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use qleetos_crds::{
    FIELD_MANAGER, KubernetesRuntime, KubernetesRuntimeProfile, ProvisioningPhase,
    ProvisioningProvider, SecretKeyRef,
};

use crate::context::Context;
use crate::engine::writes::delete_if_present;
use crate::error::{Error, Result};

/// Key of the kubeconfig in the Secret QleetOS writes for a provisioned runtime.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// Label on everything QleetOS creates for a provisioned runtime, naming it.
pub const RUNTIME_LABEL: &str = "qleetos.io/runtime";
/// Label on provisioned runtimes naming their profile.
pub const PROFILE_LABEL: &str = "qleetos.io/runtime-profile";

/// Where the provider stands with one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub phase: ProvisioningPhase,
    pub message: String,
    /// The provider's object for the cluster, e.g. `Cluster qleetos-clusters/standard-eu-1`.
    pub cluster: Option<String>,
}

impl Progress {
    pub fn provisioning(message: impl Into<String>, cluster: Option<String>) -> Self {
        Self {
            phase: ProvisioningPhase::Provisioning,
            message: message.into(),
            cluster,
        }
    }

    pub fn provisioned(message: impl Into<String>, cluster: Option<String>) -> Self {
        Self {
            phase: ProvisioningPhase::Provisioned,
            message: message.into(),
            cluster,
        }
    }
}

/// The Secret, in QleetOS's namespace, a provisioned runtime is connected through.
pub fn kubeconfig_ref(runtime: &str, system_namespace: &str) -> SecretKeyRef {
    SecretKeyRef {
        namespace: system_namespace.to_owned(),
        name: format!("{runtime}-kubeconfig"),
        key: KUBECONFIG_KEY.to_owned(),
    }
}

/// Moves the cluster of `runtime` one step towards existing, and says how far it is. Once
/// the provider has a kubeconfig, it is in the runtime's Secret.
pub async fn ensure(
    ctx: &Context,
    runtime: &KubernetesRuntime,
    profile: &KubernetesRuntimeProfile,
) -> Result<Progress> {
    match profile.spec.provider {
        ProvisioningProvider::Local => local::ensure(ctx, runtime, profile).await,
        ProvisioningProvider::ClusterAPI => cluster_api::ensure(ctx, runtime, profile).await,
    }
}

/// Removes the cluster of `runtime`: `None` once it is gone (and its Secret with it), else
/// what the removal waits for.
pub async fn remove(
    ctx: &Context,
    runtime: &KubernetesRuntime,
    profile: Option<&KubernetesRuntimeProfile>,
) -> Result<Option<String>> {
    let provider = profile.map(|p| p.spec.provider);
    let waiting = match provider {
        Some(ProvisioningProvider::ClusterAPI) => {
            cluster_api::remove(ctx, runtime, profile).await?
        }
        Some(ProvisioningProvider::Local) => local::remove(ctx, runtime).await?,
        // The profile is gone: whichever provider made the cluster still holds it.
        None => match cluster_api::remove(ctx, runtime, None).await? {
            Some(waiting) => Some(waiting),
            None => local::remove(ctx, runtime).await?,
        },
    };
    if waiting.is_none() {
        delete_kubeconfig(ctx, runtime).await?;
    }
    Ok(waiting)
}

/// Writes `kubeconfig` into the runtime's Secret (owned by the runtime, so it cannot outlive it).
pub async fn write_kubeconfig(
    ctx: &Context,
    runtime: &KubernetesRuntime,
    kubeconfig: &[u8],
) -> Result<()> {
    let name = runtime.metadata.name.clone().unwrap_or_default();
    let reference = kubeconfig_ref(&name, &ctx.settings.system_namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &reference.namespace);
    let unchanged = secrets
        .get_opt(&reference.name)
        .await
        .map_err(Error::Management)?
        .and_then(|s| s.data)
        .and_then(|d| d.get(KUBECONFIG_KEY).cloned())
        .is_some_and(|current| current.0 == kubeconfig);
    if unchanged {
        return Ok(());
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(reference.name.clone()),
            labels: Some([(RUNTIME_LABEL.to_owned(), crate::names::label_value(&name))].into()),
            owner_references: Some(vec![owner_reference(runtime)]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some([(KUBECONFIG_KEY.to_owned(), ByteString(kubeconfig.to_vec()))].into()),
        ..Secret::default()
    };
    secrets
        .patch(
            &reference.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(Error::Management)?;
    tracing::info!(runtime = %name, "kubeconfig of the provisioned cluster stored");
    Ok(())
}

async fn delete_kubeconfig(ctx: &Context, runtime: &KubernetesRuntime) -> Result<()> {
    let name = runtime.metadata.name.clone().unwrap_or_default();
    let reference = kubeconfig_ref(&name, &ctx.settings.system_namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &reference.namespace);
    delete_if_present(&secrets, &reference.name).await.map(drop)
}

/// An owner reference to `runtime` (not a controller: the Secret is QleetOS's own).
pub fn owner_reference(runtime: &KubernetesRuntime) -> OwnerReference {
    OwnerReference {
        api_version: KubernetesRuntime::api_version(&()).into_owned(),
        kind: KubernetesRuntime::kind(&()).into_owned(),
        name: runtime.metadata.name.clone().unwrap_or_default(),
        uid: runtime.metadata.uid.clone().unwrap_or_default(),
        ..OwnerReference::default()
    }
}

/// `provisioning runtime <name>: <message>`.
pub fn failed(runtime: &KubernetesRuntime, message: impl Into<String>) -> Error {
    Error::Provisioning {
        runtime: runtime.metadata.name.clone().unwrap_or_default(),
        message: message.into(),
    }
}
