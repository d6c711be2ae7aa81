//! One Kubernetes client per runtime, built from the runtime's kubeconfig Secret and rebuilt
//! when the Secret changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use qleetos_crds::KubernetesRuntime;

use crate::error::{Error, Result};
use crate::runtime_client::RuntimeClient;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients of the compute space, keyed by runtime name.
#[derive(Clone)]
pub struct RuntimePool {
    management: Client,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

#[derive(Debug, Clone)]
struct Cached {
    secret_version: String,
    client: RuntimeClient,
}

impl std::fmt::Debug for RuntimePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimePool").finish_non_exhaustive()
    }
}

impl RuntimePool {
    pub fn new(management: Client) -> Self {
        Self {
            management,
            cache: Arc::default(),
        }
    }

    /// The client of `runtime`, reusing the cached one while its Secret is unchanged.
    pub async fn client_for(&self, runtime: &KubernetesRuntime) -> Result<RuntimeClient> {
        let name = runtime
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingMetadata("KubernetesRuntime", "name"))?;
        let secret = self.kubeconfig_secret(&name, runtime).await?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if let Some(cached) = self.cached(&name).filter(|c| c.secret_version == version) {
            return Ok(cached.client);
        }
        let client = build_client(&name, runtime, &secret).await?;
        tracing::info!(runtime = %name, "connected runtime client");
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            name,
            Cached {
                secret_version: version,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// Drops the client of a deleted runtime.
    pub fn forget(&self, runtime: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(runtime);
    }

    fn cached(&self, name: &str) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    async fn kubeconfig_secret(&self, name: &str, runtime: &KubernetesRuntime) -> Result<Secret> {
        let reference = &runtime.spec.connection.kubeconfig_secret_ref;
        let secrets: Api<Secret> = Api::namespaced(self.management.clone(), &reference.namespace);
        secrets
            .get_opt(&reference.name)
            .await
            .map_err(Error::Management)?
            .ok_or_else(|| Error::SecretNotFound {
                runtime: name.to_owned(),
                namespace: reference.namespace.clone(),
                name: reference.name.clone(),
            })
    }
}

async fn build_client(
    name: &str,
    runtime: &KubernetesRuntime,
    secret: &Secret,
) -> Result<RuntimeClient> {
    let reference = &runtime.spec.connection.kubeconfig_secret_ref;
    let invalid = |reason: String| Error::InvalidKubeconfig {
        runtime: name.to_owned(),
        namespace: reference.namespace.clone(),
        name: reference.name.clone(),
        reason,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .ok_or_else(|| invalid(format!("it has no key {:?}", reference.key)))?;
    let text = std::str::from_utf8(&bytes.0).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| invalid(e.to_string()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| invalid(e.to_string()))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    RuntimeClient::from_config(name, config).map_err(|e| invalid(e.to_string()))
}
