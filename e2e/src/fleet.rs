//! The stand-ins of a whole fleet: for every KubernetesRuntime of the management cluster,
//! registered or provisioned while the fleet runs, the real controllers kwok cannot run
//! (cert-manager, external-dns, Traefik, and anvil for every RPC node), each running while
//! QleetOS has installed it there; when a runtime goes, its stand-ins stop and its files
//! go.
//!
//! A [`Fleet`] polls the management cluster every [`POLL_INTERVAL`]. It reads each
//! runtime's kubeconfig from the Secret its `spec.connection.kubeconfigSecretRef` names and
//! writes it under `<dir>/runtimes/`; the stand-ins log under `<dir>/stand-ins/<runtime>/`.
//! What runs is published in `<dir>/`[`FLEET_FILE`] (see [`Published`]).

mod rpc_nodes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use qleetos_crds::KubernetesRuntime;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::rpc_nodes::RpcNodes;
pub use self::rpc_nodes::{RPC_NODE_PORT, rpc_node_url};
use crate::dns::DnsUpdates;
use crate::error::Error;
use crate::standin::{IngressPorts, Polls, StandIn, StandInSpec};

/// How often the management cluster is asked for runtimes (and each runtime for RPC nodes).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The file under the fleet's directory that says what runs, as [`Published`].
pub const FLEET_FILE: &str = "fleet.json";

/// What a [`Fleet`] works on.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Where the kubeconfigs, logs and [`FLEET_FILE`] go.
    pub dir: PathBuf,
    pub management_kubeconfig: PathBuf,
    /// Only the runtimes with these labels (`None`: all).
    pub runtime_selector: Option<String>,
    /// The DNS server external-dns publishes into; without one, no external-dns runs.
    pub dns: Option<DnsUpdates>,
    /// The address Traefik publishes in the Ingresses it serves (each runtime's Traefik
    /// listens on ports of its own there).
    pub ingress_address: String,
}

/// What a fleet runs now, in [`FLEET_FILE`]: runtime → its stand-ins.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Published {
    pub runtimes: BTreeMap<String, PublishedRuntime>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishedRuntime {
    pub kubeconfig: PathBuf,
    /// The HTTPS entry point of the runtime's Traefik on the ingress address.
    pub https_port: u16,
    /// Service URL of each RPC node (`RPC_URL` of its connection Secret) → where its anvil
    /// listens.
    pub rpc_nodes: BTreeMap<String, SocketAddr>,
    /// Component → pid, for every stand-in process running now.
    pub pids: BTreeMap<String, u32>,
}

/// What [`FLEET_FILE`] under `dir` says (nothing when there is no such file).
pub fn read_published(dir: &Path) -> Published {
    std::fs::read_to_string(dir.join(FLEET_FILE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// The background task; stopping it (or dropping it) stops every stand-in.
#[derive(Debug)]
pub struct Fleet {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Fleet {
    pub async fn start(config: FleetConfig) -> Result<Self, Error> {
        for sub in ["runtimes", "stand-ins"] {
            let path = config.dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| Error::io("cannot create", path, e))?;
        }
        let management = client_from(&config.management_kubeconfig).await?;
        let state = FleetState {
            runtimes: Api::all(management.clone()),
            management,
            config,
            running: BTreeMap::new(),
            published: None,
        };
        let (shutdown, signal) = oneshot::channel();
        let task = tokio::spawn(state.run(signal));
        Ok(Self { shutdown, task })
    }

    /// Stops every stand-in, waiting until their processes have exited.
    pub async fn stop(self) {
        drop(self.shutdown);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the fleet's task failed");
        }
    }
}

/// The stand-ins of one runtime.
#[derive(Debug)]
struct RuntimeStandIns {
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    ports: IngressPorts,
    controllers: Vec<StandIn>,
    rpc_nodes: RpcNodes,
}

impl RuntimeStandIns {
    fn published(&self) -> PublishedRuntime {
        let mut pids: BTreeMap<String, u32> = self
            .controllers
            .iter()
            .filter_map(|s| Some((s.component().to_owned(), s.status().pid?)))
            .collect();
        pids.extend(self.rpc_nodes.pids());
        PublishedRuntime {
            kubeconfig: self.kubeconfig.clone(),
            https_port: self.ports.https,
            rpc_nodes: self.rpc_nodes.urls(),
            pids,
        }
    }

    async fn stop(self) {
        for stand_in in self.controllers {
            stand_in.stop().await;
        }
        self.rpc_nodes.stop().await;
        let _ = std::fs::remove_file(&self.kubeconfig);
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

struct FleetState {
    config: FleetConfig,
    management: Client,
    runtimes: Api<KubernetesRuntime>,
    running: BTreeMap<String, RuntimeStandIns>,
    /// What was last written to [`FLEET_FILE`].
    published: Option<Published>,
}

impl FleetState {
    async fn run(mut self, shutdown: oneshot::Receiver<()>) {
        let mut polls = Polls::new(POLL_INTERVAL, shutdown);
        while polls.next().await {
            self.step().await;
        }
        for (_, runtime) in std::mem::take(&mut self.running) {
            runtime.stop().await;
        }
        self.publish();
    }

    async fn step(&mut self) {
        let mut params = ListParams::default();
        if let Some(selector) = &self.config.runtime_selector {
            params = params.labels(selector);
        }
        let listed = match self.runtimes.list(&params).await {
            Ok(listed) => listed.items,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list KubernetesRuntimes");
                return;
            }
        };
        let names: Vec<String> = listed.iter().map(ResourceExt::name_any).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|name| !names.contains(name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(runtime) = self.running.remove(&name) {
                runtime.stop().await;
                tracing::info!(runtime = name, "runtime gone: its stand-ins stopped");
            }
        }
        for runtime in &listed {
            let name = runtime.name_any();
            if !self.running.contains_key(&name) {
                match self.start(runtime).await {
                    Ok(Some(started)) => {
                        tracing::info!(
                            runtime = name,
                            https_port = started.ports.https,
                            "stand-ins watching the runtime"
                        );
                        self.running.insert(name.clone(), started);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(runtime = name, error = %e, "cannot start the runtime's stand-ins")
                    }
                }
            }
        }
        for runtime in self.running.values_mut() {
            runtime.rpc_nodes.step().await;
        }
        self.publish();
    }

    /// The stand-ins of `runtime`, once its kubeconfig Secret is there (`None` before).
    async fn start(&self, runtime: &KubernetesRuntime) -> Result<Option<RuntimeStandIns>, Error> {
        let name = runtime.name_any();
        let reference = &runtime.spec.connection.kubeconfig_secret_ref;
        let secret = Api::<Secret>::namespaced(self.management.clone(), &reference.namespace)
            .get_opt(&reference.name)
            .await?;
        let Some(bytes) = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(&reference.key))
        else {
            return Ok(None);
        };
        let kubeconfig = self
            .config
            .dir
            .join("runtimes")
            .join(format!("{name}.kubeconfig"));
        write_private(&kubeconfig, &bytes.0)?;
        let log_dir = self.config.dir.join("stand-ins").join(&name);
        let ports = IngressPorts::free(&self.config.ingress_address)?;
        let mut specs = vec![StandInSpec::cert_manager().await?];
        if let Some(dns) = &self.config.dns {
            specs.push(StandInSpec::external_dns(dns, &name).await?);
        }
        specs.push(StandInSpec::traefik(&ports).await?);
        let mut controllers = Vec::new();
        for spec in specs {
            controllers.push(StandIn::start(spec, &kubeconfig, &log_dir).await?);
        }
        let rpc_nodes = RpcNodes {
            runtime: name,
            deployments: Api::all(client_from(&kubeconfig).await?),
            kubeconfig: kubeconfig.clone(),
            log_dir: log_dir.clone(),
            running: BTreeMap::new(),
        };
        Ok(Some(RuntimeStandIns {
            kubeconfig,
            log_dir,
            ports,
            controllers,
            rpc_nodes,
        }))
    }

    /// Rewrites [`FLEET_FILE`] atomically when what runs has changed.
    fn publish(&mut self) {
        let now = Published {
            runtimes: self
                .running
                .iter()
                .map(|(name, runtime)| (name.clone(), runtime.published()))
                .collect(),
        };
        if self
            .published
            .as_ref()
            .is_some_and(|p| p.runtimes == now.runtimes)
        {
            return;
        }
        let path = self.config.dir.join(FLEET_FILE);
        let temporary = path.with_extension("json.tmp");
        let written = serde_json::to_string_pretty(&now)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&temporary, text))
            .and_then(|()| std::fs::rename(&temporary, &path));
        match written {
            Ok(()) => self.published = Some(now),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the fleet file")
            }
        }
    }
}

/// Writes a file only its owner may read (a kubeconfig holds credentials).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .map_err(|e| Error::io("cannot write", path, e))
}

async fn client_from(kubeconfig: &Path) -> Result<Client, Error> {
    let config = Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Whether process `pid` runs (exists and is no zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}
