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
