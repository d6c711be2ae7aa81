//! The real `qleetos-api-gateway` binary, started as a process against the management cluster.

use std::path::Path;
use std::time::Duration;

use crate::cluster::free_port;
use crate::error::Error;
use crate::operator::workspace_binary;
use crate::process::{ChildProcess, ProcessSpec, spawn};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running gateway; killed when dropped. Its output is captured in `gateway.log`.
#[derive(Debug)]
pub struct GatewayProcess {
    process: ChildProcess,
    port: u16,
}

impl GatewayProcess {
    /// Starts the gateway on a free loopback port with the management cluster's kubeconfig
    /// (its own identity) and, when given, the NATS server to notify.
    pub async fn start(
        dir: &Path,
        kubeconfig: &Path,
        nats_url: Option<&str>,
        extra_args: &[&str],
    ) -> Result<Self, Error> {
        Self::start_on(dir, kubeconfig, nats_url, extra_args, free_port()?).await
    }

    /// Starts the gateway against `env`'s management cluster, notifying its NATS server.
    pub async fn start_for(env: &crate::environment::Environment) -> Result<Self, Error> {
        let kubeconfig = env.management.kubeconfig_path();
        Self::start(env.dir(), kubeconfig, Some(&env.nats_url()), &[]).await
    }

    /// Like [`start`](Self::start) on a given port.
    pub async fn start_on(
        dir: &Path,
        kubeconfig: &Path,
        nats_url: Option<&str>,
        extra_args: &[&str],
        port: u16,
    ) -> Result<Self, Error> {
        let program = workspace_binary("qleetos-api-gateway")?;
        let mut args = vec![format!("--listen=127.0.0.1:{port}")];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let mut env = vec![
            ("KUBECONFIG".into(), kubeconfig.as_os_str().to_owned()),
            (
                "RUST_LOG".into(),
                "debug,kube=info,hyper=info,tower=info,async_nats=info".into(),
            ),
        ];
        if let Some(url) = nats_url {
            env.push(("QLEETOS_NATS_URL".into(), url.into()));
        }
        let process = spawn(ProcessSpec {
            component: "qleetos-api-gateway".into(),
            program,
            args: args.into_iter().map(Into::into).collect(),
            env,
            log_path: dir.join("gateway.log"),
        })
        .await?;
        let mut gateway = Self { process, port };
        gateway.wait_ready().await?;
        Ok(gateway)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        crate::http::wait_ready(&mut self.process, self.port, "/readyz", READY_TIMEOUT).await
    }
}

/// A bearer token of ServiceAccount `name` in `namespace`, bound to `cluster-admin`: a CI
/// identity for benchmarks that measure the gateway, not RBAC. Valid for an hour.
pub async fn admin_service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String, Error> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    use kube::api::{Api, Patch, PatchParams, PostParams};

    let apply = PatchParams::apply("qleetos-e2e").force();
    let account = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace}});
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    accounts
        .patch(name, &apply, &Patch::Apply(&account))
        .await?;
    let binding_name = format!("{namespace}-{name}-admin");
    let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding", "metadata": {"name": binding_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]});
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(&binding_name, &apply, &Patch::Apply(&binding))
        .await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await?
        .status
        .and_then(|status| status.token)
        .ok_or_else(|| {
            Error::Setup(format!(
                "TokenRequest for {namespace}/{name} returned no token"
            ))
        })
}
