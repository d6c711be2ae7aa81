//! One Kubernetes client per runtime, built from the runtime's kubeconfig Secret and rebuilt
//! when the Secret changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use qleetos_crds::KubernetesRuntime;

use crate::error::{Error, Result};
use crate::kubeconfig::{self, KubeconfigPolicy, KubeconfigProblem};
use crate::runtime_client::RuntimeClient;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients of the compute space, keyed by runtime name.
#[derive(Clone)]
pub struct RuntimePool {
    management: Client,
    /// The only namespace kubeconfig Secrets are read from.
    secrets_namespace: String,
    policy: KubeconfigPolicy,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    /// The watched versions of the kubeconfig Secrets, when the operator watches them.
    secret_versions: Option<Store<PartialObjectMeta<Secret>>>,
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
    pub fn new(management: Client, secrets_namespace: String, policy: KubeconfigPolicy) -> Self {
        Self {
            management,
            secrets_namespace,
            policy,
            cache: Arc::default(),
            secret_versions: None,
        }
    }

    /// Reuses a runtime's client without reading its Secret while `secrets` (a watch cache
    /// of the Secrets' metadata) shows the Secret at the version the client was built from.
    #[must_use]
    pub fn with_secret_versions(mut self, secrets: Store<PartialObjectMeta<Secret>>) -> Self {
        self.secret_versions = Some(secrets);
        self
    }

    /// The cached client of `runtime` when the watched Secret is still the one it was built
    /// from.
    fn current_client(&self, name: &str, runtime: &KubernetesRuntime) -> Option<RuntimeClient> {
        let reference = &runtime.spec.connection.kubeconfig_secret_ref;
        if reference.namespace != self.secrets_namespace {
            return None;
        }
        let watched = self
            .secret_versions
            .as_ref()?
            .get(&ObjectRef::new(&reference.name).within(&reference.namespace))?;
        let version = watched.metadata.resource_version.as_deref()?;
        self.cached(name)
            .filter(|cached| cached.secret_version == version)
            .map(|cached| cached.client)
    }

    /// The client of `runtime`, reusing the cached one while its Secret is unchanged.
    pub async fn client_for(&self, runtime: &KubernetesRuntime) -> Result<RuntimeClient> {
        let name = runtime
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingMetadata("KubernetesRuntime", "name"))?;
        if let Some(client) = self.current_client(&name, runtime) {
            return Ok(client);
        }
        let secret = self.kubeconfig_secret(&name, runtime).await?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        if let Some(cached) = self.cached(&name).filter(|c| c.secret_version == version) {
            return Ok(cached.client);
        }
        let client = build_client(&name, runtime, &secret, self.policy).await?;
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
        if reference.namespace != self.secrets_namespace {
            return Err(Error::ForbiddenSecretNamespace {
                runtime: name.to_owned(),
                namespace: reference.namespace.clone(),
                allowed: self.secrets_namespace.clone(),
            });
        }
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
    policy: KubeconfigPolicy,
) -> Result<RuntimeClient> {
    let reference = &runtime.spec.connection.kubeconfig_secret_ref;
    let invalid = |problem: KubeconfigProblem| Error::InvalidKubeconfig {
        runtime: name.to_owned(),
        namespace: reference.namespace.clone(),
        name: reference.name.clone(),
        key: reference.key.clone(),
        problem,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .ok_or_else(|| invalid(KubeconfigProblem::MissingKey))?;
    let parsed = kubeconfig::parse(&bytes.0).map_err(invalid)?;
    let mut config = kubeconfig::client_config(parsed, policy)
        .await
        .map_err(invalid)?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    RuntimeClient::from_config(name, config).map_err(|_| invalid(KubeconfigProblem::UnusableClient))
}

#[cfg(test)]
mod tests {
    use qleetos_crds::{KubernetesRuntimeSpec, RuntimeConnection, SecretKeyRef};

    use super::*;

    fn runtime_with_secret_in(namespace: &str) -> KubernetesRuntime {
        let reference = SecretKeyRef {
            namespace: namespace.into(),
            name: "eu-west".into(),
            key: "kubeconfig".into(),
        };
        KubernetesRuntime::new(
            "eu-west",
            KubernetesRuntimeSpec {
                provider: "local".into(),
                region: "eu-west-1".into(),
                location: None,
                deletion_policy: Default::default(),
                provisioning: None,
                cost: None,
                connection: RuntimeConnection {
                    kubeconfig_secret_ref: reference,
                },
            },
        )
    }

    #[tokio::test]
    async fn a_secret_outside_the_system_namespace_is_refused_before_any_read() {
        // The management API is unreachable: any attempt to read would fail differently.
        let unreachable = kube::Config::new("http://127.0.0.1:9".parse().expect("uri"));
        let management = Client::try_from(unreachable).expect("client");
        let pool = RuntimePool::new(management, "qleetos-system".into(), Default::default());
        let error = pool
            .client_for(&runtime_with_secret_in("team-a"))
            .await
            .expect_err("refused");
        assert_eq!(error.reason().as_str(), "ForbiddenSecretNamespace");
        assert!(
            error
                .to_string()
                .contains("only from its own namespace qleetos-system"),
            "{error}"
        );
        let allowed = pool
            .client_for(&runtime_with_secret_in("qleetos-system"))
            .await
            .expect_err("the read fails");
        assert_eq!(allowed.reason().as_str(), "ManagementApiError", "{allowed}");
    }
}
