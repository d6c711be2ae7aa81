//! Stand-ins: a component's real controller, run as a local process for as long as a runtime
//! cluster has the component's Deployment. kwok only simulates the Deployment's pods, so
//! without a stand-in nothing would act on the component's resources.
//!
//! A [`StandIn`] polls its cluster about once a second; it starts the process when the
//! Deployment appears, restarts it if it exits while the Deployment is still there, and
//! stops it when the Deployment is deleted, when [`StandIn::stop`] is called or when the
//! `StandIn` is dropped.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::binaries::CertManager;
use crate::cluster::free_port;
use crate::error::Error;
use crate::process::{self, ChildProcess, ProcessSpec};

/// How often the cluster is asked whether the Deployment exists.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Builds the arguments for one start of a stand-in's process.
pub type ArgsBuilder = Arc<dyn Fn(&StandInTarget) -> Result<Vec<OsString>, Error> + Send + Sync>;

/// What to stand in for: the Deployment that says the component is installed, and the
/// program that does the component's work.
#[derive(Clone)]
pub struct StandInSpec {
    /// Short name for logs; the process logs to `<log dir>/<component>.log`.
    pub component: String,
    pub namespace: String,
    pub deployment: String,
    pub program: PathBuf,
    pub args: ArgsBuilder,
}

impl fmt::Debug for StandInSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandInSpec")
            .field("component", &self.component)
            .field(
                "deployment",
                &format!("{}/{}", self.namespace, self.deployment),
            )
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

impl StandInSpec {
    /// cert-manager's controller (SelfSigned, CA and ACME issuers, Certificates,
    /// ingress-shim) for Deployment `cert-manager/cert-manager`, built once by
    /// `e2e/scripts/cert-manager.sh`. It runs without cert-manager's webhook and cainjector:
    /// nothing defaults or validates cert-manager resources, so write them out in full.
    pub async fn cert_manager() -> Result<Self, Error> {
        let cert_manager = CertManager::get().await?;
        Ok(Self {
            component: "cert-manager".to_owned(),
            namespace: "cert-manager".to_owned(),
            deployment: "cert-manager".to_owned(),
            program: cert_manager.controller.clone(),
            args: Arc::new(|target| {
                let mut kubeconfig = OsString::from("--kubeconfig=");
                kubeconfig.push(&target.kubeconfig);
                Ok(vec![
                    kubeconfig,
                    "--leader-elect=false".into(),
                    format!("--cluster-resource-namespace={}", target.namespace).into(),
                    "--enable-certificate-owner-ref=true".into(),
                    format!("--metrics-listen-address=127.0.0.1:{}", target.free_port()?).into(),
                    "--v=2".into(),
                ])
            }),
        })
    }
}

impl StandInSpec {
    /// external-dns for Deployment `external-dns/external-dns`, publishing the hosts of the
    /// cluster's Ingresses into `dns`'s zone through RFC 2136, owned as `owner`.
    pub async fn external_dns(dns: &crate::dns::DnsUpdates, owner: &str) -> Result<Self, Error> {
        let program = crate::binaries::external_dns().await?;
        let fixed: Vec<String> = vec![
            "--source=ingress".into(),
            // Only the Ingresses QleetOS generates for `expose.dns`, never a tenant's own.
            "--label-filter=qleetos.io/dns=published".into(),
            "--provider=rfc2136".into(),
            "--rfc2136-host=127.0.0.1".into(),
            format!("--rfc2136-port={}", dns.port),
            format!("--rfc2136-zone={}", crate::dns::ZONE),
            format!("--rfc2136-tsig-keyname={}", dns.key_name),
            format!("--rfc2136-tsig-secret={}", dns.key_secret),
            format!("--rfc2136-tsig-secret-alg={}", dns.key_algorithm),
            "--rfc2136-axfr".into(),
            format!("--domain-filter={}", crate::dns::ZONE),
            "--registry=txt".into(),
            format!("--txt-owner-id={owner}"),
            "--policy=sync".into(),
            "--interval=2s".into(),
        ];
        Ok(Self {
            component: "external-dns".to_owned(),
            namespace: "external-dns".to_owned(),
            deployment: "external-dns".to_owned(),
            program,
            args: Arc::new(move |target| {
                let mut args = vec![OsString::from(format!(
                    "--kubeconfig={}",
                    target.kubeconfig.display()
                ))];
                args.extend(fixed.iter().map(OsString::from));
                args.push(format!("--metrics-address=127.0.0.1:{}", target.free_port()?).into());
                Ok(args)
            }),
        })
    }
}

/// Where a Traefik stand-in listens and what address it publishes.
#[derive(Debug, Clone)]
pub struct IngressPorts {
    /// Plain HTTP entry point on 127.0.0.1.
    pub http: u16,
    /// HTTPS entry point on 127.0.0.1 (every route there is TLS).
    pub https: u16,
    /// Written into each served Ingress's `status.loadBalancer` (what external-dns publishes).
    pub address: String,
}

impl IngressPorts {
    /// Two free ports on 127.0.0.1 and the address to publish.
    pub fn free(address: &str) -> Result<Self, Error> {
        Ok(Self {
            http: free_port()?,
            https: free_port()?,
            address: address.to_owned(),
        })
    }
}

impl StandInSpec {
    /// Traefik for Deployment `traefik/traefik`, serving the cluster's Ingresses of class
    /// `traefik` on `ports`. ExternalName backends are allowed here (a test routes to a
    /// process of its own through one); the shipped profile does not allow them.
    pub async fn traefik(ports: &IngressPorts) -> Result<Self, Error> {
        let program = crate::binaries::traefik().await?;
        let args: Vec<String> = vec![
            "--global.checknewversion=false".into(),
            "--global.sendanonymoususage=false".into(),
            format!("--entrypoints.web.address=127.0.0.1:{}", ports.http),
            format!("--entrypoints.websecure.address=127.0.0.1:{}", ports.https),
            "--entrypoints.websecure.http.tls=true".into(),
            "--providers.kubernetesingress=true".into(),
            "--providers.kubernetesingress.ingressclass=traefik".into(),
            "--providers.kubernetesingress.allowexternalnameservices=true".into(),
            format!(
                "--providers.kubernetesingress.ingressendpoint.ip={}",
                ports.address
            ),
            "--log.level=INFO".into(),
        ];
        Ok(Self {
            component: "traefik".to_owned(),
            namespace: "traefik".to_owned(),
            deployment: "traefik".to_owned(),
            program,
            args: Arc::new(move |_| Ok(args.iter().map(OsString::from).collect())),
        })
    }
}

/// The chain id of the dev chain the anvil stand-in runs (anvil's default, also what Hardhat
/// uses for local chains).
pub const ANVIL_CHAIN_ID: u64 = 31337;

impl StandInSpec {
    /// anvil (Foundry's Ethereum dev chain) for the pods of Deployment
    /// `namespace/deployment`, an RPC node: it serves JSON-RPC over HTTP on `address` with
    /// chain id [`ANVIL_CHAIN_ID`] and mines a block every second. There is no cluster DNS
    /// or kube-proxy here, so the test maps the Service's name to `address` itself (see
    /// [`crate::cluster::free_loopback_address`] and [`crate::jsonrpc`]). Each start is a
    /// fresh chain: its state does not survive a restart.
    pub async fn anvil(
        namespace: &str,
        deployment: &str,
        address: std::net::SocketAddr,
    ) -> Result<Self, Error> {
        let program = crate::binaries::anvil().await?;
        let args: Vec<String> = vec![
            "--host".into(),
            address.ip().to_string(),
            "--port".into(),
            address.port().to_string(),
            "--chain-id".into(),
            ANVIL_CHAIN_ID.to_string(),
            "--block-time".into(),
            "1".into(),
        ];
        Ok(Self {
            // Several RPC nodes may run in one cluster: one log each.
            component: format!("anvil-{namespace}-{deployment}"),
            namespace: namespace.to_owned(),
            deployment: deployment.to_owned(),
            program,
            args: Arc::new(move |_| Ok(args.iter().map(OsString::from).collect())),
        })
    }
}

/// The cluster a stand-in process works on, handed to its [`ArgsBuilder`].
#[derive(Debug, Clone)]
pub struct StandInTarget {
    /// Admin kubeconfig of the cluster; also in the process's `KUBECONFIG`.
    pub kubeconfig: PathBuf,
    /// Namespace of the Deployment.
    pub namespace: String,
}

impl StandInTarget {
    /// A port on 127.0.0.1 that is free now, for the process to listen on.
    pub fn free_port(&self) -> Result<u16, Error> {
        free_port()
    }
}

/// What a stand-in is doing, as last published by its task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandInStatus {
    /// Pid of the running process; `None` while the Deployment is absent.
    pub pid: Option<u32>,
    /// How many times the process was started.
    pub starts: u32,
    /// Why the last start failed or the process last exited on its own.
    pub last_error: Option<String>,
    /// How many times the cluster answered whether the Deployment exists (each poll that
    /// could decide to start or stop the process).
    pub checks: u64,
}

/// Keeps a component's process running while its Deployment exists in one cluster.
/// Dropping it stops the process (in the background; [`StandIn::stop`] waits for that).
#[derive(Debug)]
pub struct StandIn {
    component: String,
    status: watch::Receiver<StandInStatus>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl StandIn {
    /// Starts watching the cluster of `kubeconfig` for the spec's Deployment. The process
    /// logs to `<log_dir>/<component>.log`, appending across restarts.
    pub async fn start(
        spec: StandInSpec,
        kubeconfig: &Path,
        log_dir: &Path,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(log_dir).map_err(|e| Error::io("cannot create", log_dir, e))?;
        let config = Kubeconfig::read_from(kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
        let client = Client::try_from(config)?;
        tracing::info!(
            component = spec.component,
            deployment = format!("{}/{}", spec.namespace, spec.deployment),
            "stand-in watching for its Deployment"
        );

        let (status_sender, status) = watch::channel(StandInStatus::default());
        let (shutdown, shutdown_signal) = oneshot::channel();
        let component = spec.component.clone();
        let supervisor = Supervisor {
            deployments: Api::namespaced(client, &spec.namespace),
            target: StandInTarget {
                kubeconfig: kubeconfig.to_owned(),
                namespace: spec.namespace.clone(),
            },
            log_path: log_dir.join(format!("{}.log", spec.component)),
            spec,
            status: status_sender,
            child: None,
        };
        let task = tokio::spawn(supervisor.run(shutdown_signal));
        Ok(Self {
            component,
            status,
            shutdown,
            task,
        })
    }

    /// The component's short name (what its log is named after).
    pub fn component(&self) -> &str {
        &self.component
    }

    pub fn status(&self) -> StandInStatus {
        self.status.borrow().clone()
    }

    /// Waits until the process runs and returns its pid.
    pub async fn wait_running(&self, timeout: Duration) -> Result<u32, Error> {
        let status = self
            .wait_until("to start", timeout, |s| s.pid.is_some())
            .await?;
        Ok(status.pid.unwrap_or_default())
    }

    /// Waits until the cluster has answered `count` polls in all (see
    /// [`StandInStatus::checks`]).
    pub async fn wait_checks(&self, count: u64, timeout: Duration) -> Result<StandInStatus, Error> {
        self.wait_until("to poll its cluster", timeout, |s| s.checks >= count)
            .await
    }

    /// Waits until no process runs (it has been stopped and reaped).
    pub async fn wait_stopped(&self, timeout: Duration) -> Result<(), Error> {
        self.wait_until("to stop", timeout, |s| s.pid.is_none())
            .await
            .map(drop)
    }

    /// Stops watching and stops the process, waiting until it has exited.
    pub async fn stop(self) {
        let Self { shutdown, task, .. } = self;
        drop(shutdown);
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "stand-in task failed");
        }
    }

    async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl FnMut(&StandInStatus) -> bool,
    ) -> Result<StandInStatus, Error> {
        let mut status = self.status.clone();
        let outcome = tokio::time::timeout(timeout, status.wait_for(done)).await;
        match outcome {
            Ok(Ok(status)) => Ok(status.clone()),
            Ok(Err(_)) | Err(_) => Err(Error::Timeout {
                what: format!("the {} stand-in {what}", self.component),
                timeout,
                last_error: self.status().last_error,
            }),
        }
    }
}

/// The ticks of a background poller, every `interval` (a late tick is not caught up), until
/// `shutdown` fires or its sender is dropped.
pub(crate) struct Polls {
    ticks: tokio::time::Interval,
    shutdown: oneshot::Receiver<()>,
}

impl Polls {
    pub(crate) fn new(interval: Duration, shutdown: oneshot::Receiver<()>) -> Self {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { ticks, shutdown }
    }

    /// `true` at the next tick, `false` once it is time to stop.
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            _ = &mut self.shutdown => false,
            _ = self.ticks.tick() => true,
        }
    }
}

/// The background task of a [`StandIn`]; it owns the process.
struct Supervisor {
    spec: StandInSpec,
    target: StandInTarget,
    log_path: PathBuf,
    deployments: Api<Deployment>,
    status: watch::Sender<StandInStatus>,
    child: Option<ChildProcess>,
}

impl Supervisor {
    /// Polls until `shutdown` fires or its sender is dropped, then stops the process.
    async fn run(mut self, shutdown: oneshot::Receiver<()>) {
        let mut polls = Polls::new(POLL_INTERVAL, shutdown);
        while polls.next().await {
            self.step().await;
        }
        self.stop_child().await;
    }

    async fn step(&mut self) {
        self.notice_exit();
        let wanted = match self.deployment_exists().await {
            Ok(exists) => {
                self.status.send_modify(|s| s.checks += 1);
                exists
            }
            Err(e) => {
                // Leave the process as it is while the cluster does not answer.
                tracing::debug!(component = self.spec.component, error = %e, "cannot read the Deployment");
                return;
            }
        };
        match (wanted, self.child.is_some()) {
            (true, false) => self.start_child().await,
            (false, true) => self.stop_child().await,
            _ => {}
        }
    }

    async fn deployment_exists(&self) -> Result<bool, kube::Error> {
        let deployment = self.deployments.get_opt(&self.spec.deployment).await?;
        Ok(deployment.is_some_and(|d| d.metadata.deletion_timestamp.is_none()))
    }

    /// Forgets a process that exited on its own, so that the next step restarts it.
    fn notice_exit(&mut self) {
        let Some(Err(exited)) = self.child.as_mut().map(ChildProcess::check_running) else {
            return;
        };
        tracing::warn!(component = self.spec.component, error = %exited, "stand-in process exited");
        self.child = None;
        self.status.send_modify(|s| {
            s.pid = None;
            s.last_error = Some(exited.to_string());
        });
    }

    async fn start_child(&mut self) {
        let spawned = match (self.spec.args)(&self.target) {
            Ok(args) => {
                process::spawn(ProcessSpec {
                    component: self.spec.component.clone(),
                    program: self.spec.program.clone(),
                    args,
                    env: vec![("KUBECONFIG".into(), self.target.kubeconfig.clone().into())],
                    log_path: self.log_path.clone(),
                })
                .await
            }
            Err(e) => Err(e),
        };
        match spawned {
            Ok(child) => {
                tracing::info!(
                    component = self.spec.component,
                    pid = child.pid(),
                    "stand-in started"
                );
                let pid = child.pid();
                self.child = Some(child);
                self.status.send_modify(|s| {
                    s.pid = Some(pid);
                    s.starts += 1;
                });
            }
            Err(e) => {
                tracing::warn!(component = self.spec.component, error = %e, "cannot start stand-in");
                self.status
                    .send_modify(|s| s.last_error = Some(e.to_string()));
            }
        }
    }

    async fn stop_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop().await;
            tracing::info!(component = self.spec.component, "stand-in stopped");
            self.status.send_modify(|s| s.pid = None);
        }
    }
}
