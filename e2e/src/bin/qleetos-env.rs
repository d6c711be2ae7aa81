//! `qleetos-env`: the local QleetOS environment for humans (`make env-up`, `make run`).
//!
//! `up` starts a management cluster, workload clusters, the operator and the gateway, plus a
//! DNS server (bind9) and the stand-ins for the support services kwok cannot run
//! (cert-manager, external-dns and Traefik, started in a runtime when QleetOS installs them
//! there, and anvil for every Ethereum RPC node QleetOS installs as a back-end service);
//! writes the state directory and stays in the foreground until SIGINT/SIGTERM or `down`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use qleetos_crds::{
    Conditions, KubernetesRuntime, SupportService, Workload, WorkloadServiceDependency,
};
use qleetos_e2e::cluster::free_loopback_address;
use qleetos_e2e::dns::DnsServer;
use qleetos_e2e::environment::{Environment, default_runtimes, delete_lab_policy};
use qleetos_e2e::exposure;
use qleetos_e2e::gateway::GatewayProcess;
use qleetos_e2e::jsonrpc;
use qleetos_e2e::operator::OperatorOptions;
use qleetos_e2e::standin::{IngressPorts, StandIn, StandInSpec};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

#[derive(Debug, Parser)]
#[command(about = "Run the local QleetOS environment")]
struct Args {
    /// State directory (kubeconfigs, logs, pid).
    #[arg(
        long,
        default_value = "/tmp/qleetos-env",
        env = "QLEETOS_ENV_DIR",
        global = true
    )]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the environment and keep it running in the foreground.
    Up,
    /// Wait until a background `up` is ready (or has failed).
    Wait {
        #[arg(long, default_value = "600")]
        timeout_secs: u64,
    },
    /// Stop the environment started by `up`.
    Down,
    /// Print the runtimes and workloads with where they landed and their health.
    Status,
    /// Exit 0 when an environment started by `up` is running.
    Running,
    /// Print the path of the management cluster's kubeconfig.
    Kubeconfig,
}

/// Where `up` serves the gateway unless QLEETOS_GATEWAY_PORT says otherwise (the README's
/// curl example uses it).
const DEFAULT_GATEWAY_PORT: u16 = 18443;

/// What `up` leaves in the state directory for the other commands and for humans.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    pid: u32,
    management_kubeconfig: PathBuf,
    runtimes: Vec<RuntimeState>,
    operator_log: PathBuf,
    #[serde(default)]
    gateway_url: String,
    /// Port of the DNS server (zone qleetos.test) on 127.0.0.1.
    #[serde(default)]
    dns_port: Option<u16>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RuntimeState {
    name: String,
    region: String,
    kubeconfig: PathBuf,
    /// The HTTPS entry point of the runtime's Traefik stand-in on 127.0.0.1.
    #[serde(default)]
    https_port: Option<u16>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    match args.command {
        Command::Up => up(&args.dir).await,
        Command::Wait { timeout_secs } => wait(&args.dir, Duration::from_secs(timeout_secs)).await,
        Command::Down => down(&args.dir).await,
        Command::Status => status(&args.dir).await,
        Command::Running => match read_state(&args.dir) {
            Ok(state) if process_alive(state.pid) && args.dir.join("ready").exists() => Ok(()),
            _ => bail!("no environment is running from {}", args.dir.display()),
        },
        Command::Kubeconfig => {
            println!("{}", read_state(&args.dir)?.management_kubeconfig.display());
            Ok(())
        }
    }
}

async fn up(dir: &Path) -> Result<()> {
    if let Ok(state) = read_state(dir)
        && process_alive(state.pid)
    {
        bail!(
            "an environment is already running from {} (pid {}); run `make env-down` first",
            dir.display(),
            state.pid
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let result = run_until_signalled(dir).await;
    if let Err(error) = &result {
        std::fs::write(dir.join("failed"), format!("{error:#}"))?;
    }
    let _ = std::fs::remove_file(dir.join("ready"));
    result
}

async fn run_until_signalled(dir: &Path) -> Result<()> {
    let mut env = Environment::start(&dir.join("clusters"), default_runtimes()).await?;
    // The tests' lab policy has no place here: `make run` applies the samples' own
    // (examples/tenant-policies.yaml), and anything else gets the safe default.
    delete_lab_policy(&env.management_client().await?).await?;
    let operator_log = env
        .start_operator(OperatorOptions {
            extra_args: vec!["--probe-interval=5s".into()],
        })
        .await?
        .log_path()
        .to_owned();
    let gateway_port = std::env::var("QLEETOS_GATEWAY_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_GATEWAY_PORT);
    let mut gateway = GatewayProcess::start_on(
        dir,
        env.management.kubeconfig_path(),
        Some(&env.nats_url()),
        &[],
        gateway_port,
    )
    .await
    .with_context(|| {
        format!(
            "starting the gateway on port {gateway_port} (set QLEETOS_GATEWAY_PORT to change it)"
        )
    })?;
    let dns = DnsServer::start(&dir.join("dns"))
        .await
        .context("starting the DNS server (bind9's named and dig: `make deps` installs them)")?;
    let ingress_ports: Vec<IngressPorts> = env
        .runtimes
        .iter()
        .map(|_| IngressPorts::free(INGRESS_ADDRESS))
        .collect::<Result<_, _>>()?;
    let stand_ins = start_stand_ins(&env, &dns, &ingress_ports, dir).await?;
    let rpc_node_watchers = start_rpc_node_watchers(&env, dir).await?;
    let state = State {
        dns_port: Some(dns.port),
        gateway_url: gateway.base_url(),
        pid: std::process::id(),
        management_kubeconfig: env.management.kubeconfig_path().to_owned(),
        operator_log,
        runtimes: env
            .runtimes
            .iter()
            .zip(&ingress_ports)
            .map(|((spec, cluster), ports)| RuntimeState {
                name: spec.name.clone(),
                region: spec.region.clone(),
                kubeconfig: cluster.kubeconfig_path().to_owned(),
                https_port: Some(ports.https),
            })
            .collect(),
    };
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_string_pretty(&state)?,
    )?;
    std::fs::write(dir.join("ready"), "")?;
    print_instructions(&state);
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping the environment");
    for stand_in in stand_ins {
        stand_in.stop().await;
    }
    for watcher in rpc_node_watchers {
        watcher.stop().await;
    }
    drop(dns);
    gateway.stop().await;
    env.stop().await;
    Ok(())
}

/// The address Traefik publishes in the Ingresses it serves, and external-dns in DNS: the
/// loopback, where each runtime's Traefik listens (on its own ports).
const INGRESS_ADDRESS: &str = "127.0.0.1";

/// cert-manager, external-dns and Traefik in every runtime, each started once QleetOS
/// installs it there (kwok shows their pods Running but runs no container).
async fn start_stand_ins(
    env: &Environment,
    dns: &DnsServer,
    ingress_ports: &[IngressPorts],
    dir: &Path,
) -> Result<Vec<StandIn>> {
    let mut stand_ins = Vec::new();
    for ((spec, cluster), ports) in env.runtimes.iter().zip(ingress_ports) {
        let logs = dir.join("stand-ins").join(&spec.name);
        for component in [
            StandInSpec::cert_manager().await?,
            StandInSpec::external_dns(dns, &spec.name).await?,
            StandInSpec::traefik(ports).await?,
        ] {
            stand_ins.push(StandIn::start(component, cluster.kubeconfig_path(), &logs).await?);
        }
    }
    Ok(stand_ins)
}

/// The file `up` keeps up to date with the RPC node stand-ins: runtime → URL of the node's
/// Service (`http://<name>.<namespace>.svc:8545`, what its connection Secret says) → the
/// loopback address its anvil listens on. Per runtime, because a workload placed on two
/// runtimes gets a node of the same name on each.
const RPC_NODES_FILE: &str = "rpc-nodes.json";
/// What marks the Deployment of an RPC node (examples/services/ethereum-rpc.yaml).
const RPC_NODE_SELECTOR: &str = "app.kubernetes.io/name=ethereum-rpc";
/// The port of an RPC node's Service, and the one its anvil listens on.
const RPC_NODE_PORT: u16 = 8545;
/// How often each runtime is asked for RPC node Deployments.
const RPC_NODE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Runtime → Service URL → address, as in [`RPC_NODES_FILE`].
type RpcNodeMap = BTreeMap<String, BTreeMap<String, SocketAddr>>;

/// [`RPC_NODES_FILE`], shared by the watchers of all runtimes.
#[derive(Debug, Clone)]
struct RpcNodesFile {
    path: PathBuf,
    nodes: Arc<Mutex<RpcNodeMap>>,
}

impl RpcNodesFile {
    /// Replaces the nodes of `runtime` and rewrites the file atomically (readers see the old
    /// or the new map, never a part).
    fn set(&self, runtime: &str, nodes: BTreeMap<String, SocketAddr>) -> Result<()> {
        let mut all = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        all.insert(runtime.to_owned(), nodes);
        let temporary = self.path.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_string_pretty(&*all)?)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &self.path).with_context(|| {
            format!(
                "renaming {} to {}",
                temporary.display(),
                self.path.display()
            )
        })
    }
}

fn read_rpc_nodes(dir: &Path) -> RpcNodeMap {
    std::fs::read_to_string(dir.join(RPC_NODES_FILE))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// One watcher per runtime: an anvil stand-in for every RPC node QleetOS installs there.
async fn start_rpc_node_watchers(env: &Environment, dir: &Path) -> Result<Vec<RpcNodeWatcher>> {
    let file = RpcNodesFile {
        path: dir.join(RPC_NODES_FILE),
        nodes: Arc::default(),
    };
    let mut watchers = Vec::new();
    for (spec, cluster) in &env.runtimes {
        file.set(&spec.name, BTreeMap::new())?;
        let kubeconfig = cluster.kubeconfig_path().to_owned();
        let nodes = RpcNodes {
            deployments: Api::all(client_from(&kubeconfig).await?),
            runtime: spec.name.clone(),
            kubeconfig,
            log_dir: dir.join("stand-ins").join(&spec.name),
            file: file.clone(),
            running: BTreeMap::new(),
        };
        let (shutdown, shutdown_signal) = oneshot::channel();
        watchers.push(RpcNodeWatcher {
            shutdown,
            task: tokio::spawn(nodes.run(shutdown_signal)),
        });
    }
    Ok(watchers)
}

/// The background task of [`RpcNodes`]; stopping it stops its stand-ins.
#[derive(Debug)]
struct RpcNodeWatcher {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RpcNodeWatcher {
    async fn stop(self) {
        drop(self.shutdown);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the RPC node watcher failed");
        }
    }
}

/// The RPC node Deployments of one runtime and their anvil stand-ins.
#[derive(Debug)]
struct RpcNodes {
    runtime: String,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    deployments: Api<Deployment>,
    file: RpcNodesFile,
    /// (namespace, Deployment) → its stand-in and the address anvil listens on.
    running: BTreeMap<(String, String), (StandIn, SocketAddr)>,
}

impl RpcNodes {
    async fn run(mut self, mut shutdown: oneshot::Receiver<()>) {
        let mut ticks = tokio::time::interval(RPC_NODE_POLL_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticks.tick() => {}
            }
            self.step().await;
        }
        for (_, (stand_in, _)) in std::mem::take(&mut self.running) {
            stand_in.stop().await;
        }
        self.publish();
    }

    async fn step(&mut self) {
        let listed = match self
            .deployments
            .list(&ListParams::default().labels(RPC_NODE_SELECTOR))
            .await
        {
            Ok(listed) => listed,
            Err(e) => {
                // Keep the stand-ins as they are while the cluster does not answer.
                tracing::debug!(runtime = self.runtime, error = %e, "cannot list RPC node Deployments");
                return;
            }
        };
        let present: BTreeSet<(String, String)> = listed
            .items
            .iter()
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .map(|d| (d.namespace().unwrap_or_default(), d.name_any()))
            .collect();
        let gone: Vec<_> = self
            .running
            .keys()
            .filter(|key| !present.contains(*key))
            .cloned()
            .collect();
        let mut changed = false;
        for key in gone {
            if let Some((stand_in, _)) = self.running.remove(&key) {
                // It has stopped its anvil already, or does so now.
                stand_in.stop().await;
                tracing::info!(
                    runtime = self.runtime,
                    deployment = format!("{}/{}", key.0, key.1),
                    "RPC node removed"
                );
                changed = true;
            }
        }
        for key in present {
            if self.running.contains_key(&key) {
                continue;
            }
            match self.start(&key.0, &key.1).await {
                Ok(started) => {
                    tracing::info!(
                        runtime = self.runtime,
                        deployment = format!("{}/{}", key.0, key.1),
                        address = %started.1,
                        "RPC node stand-in started"
                    );
                    self.running.insert(key, started);
                    changed = true;
                }
                // Tried again on the next poll.
                Err(e) => {
                    tracing::warn!(
                        runtime = self.runtime,
                        deployment = format!("{}/{}", key.0, key.1),
                        error = format!("{e:#}"),
                        "cannot start the RPC node stand-in"
                    );
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    async fn start(&self, namespace: &str, deployment: &str) -> Result<(StandIn, SocketAddr)> {
        let address = free_loopback_address(RPC_NODE_PORT)?;
        let spec = StandInSpec::anvil(namespace, deployment, address).await?;
        let stand_in = StandIn::start(spec, &self.kubeconfig, &self.log_dir).await?;
        Ok((stand_in, address))
    }

    fn publish(&self) {
        let nodes = self
            .running
            .iter()
            .map(|((namespace, name), (_, address))| (rpc_node_url(namespace, name), *address))
            .collect();
        if let Err(e) = self.file.set(&self.runtime, nodes) {
            tracing::warn!(error = format!("{e:#}"), "cannot write {RPC_NODES_FILE}");
        }
    }
}

/// What an RPC node's connection Secret says in `RPC_URL`: its Service in cluster DNS.
fn rpc_node_url(namespace: &str, deployment: &str) -> String {
    format!("http://{deployment}.{namespace}.svc:{RPC_NODE_PORT}")
}

fn print_instructions(state: &State) {
    println!("QleetOS environment is up.");
    println!(
        "  management cluster: export KUBECONFIG={}",
        state.management_kubeconfig.display()
    );
    for runtime in &state.runtimes {
        println!(
            "  runtime {} ({}): KUBECONFIG={}",
            runtime.name,
            runtime.region,
            runtime.kubeconfig.display()
        );
    }
    println!("  operator log: {}", state.operator_log.display());
    if !state.gateway_url.is_empty() {
        println!("  gateway: {}", state.gateway_url);
        println!(
            "  web console: {}/ui/ (log in with a token, e.g. kubectl -n demo create token <serviceaccount>)",
            state.gateway_url
        );
    }
}

async fn wait(dir: &Path, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if dir.join("ready").exists() {
            print_instructions(&read_state(dir)?);
            return Ok(());
        }
        if let Ok(reason) = std::fs::read_to_string(dir.join("failed")) {
            bail!("the environment failed to start: {reason}");
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the environment was not ready after {timeout:?}; see the output of `up` \
                 ({}.log when started by `qleetctl up` or `make env-up`)",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn down(dir: &Path) -> Result<()> {
    let Ok(state) = read_state(dir) else {
        println!("no environment state in {}; nothing to stop", dir.display());
        return Ok(());
    };
    let pid = libc::pid_t::try_from(state.pid).context("pid out of range")?;
    if process_alive(state.pid) {
        // SAFETY: kill(2) with a pid read from our own state file and a valid signal number.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    for _ in 0..120 {
        if !process_alive(state.pid) {
            println!("environment stopped");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("process {} did not stop within 30s", state.pid)
}

async fn status(dir: &Path) -> Result<()> {
    let state = read_state(dir).context("is the environment up? (`make env-up`)")?;
    let management = client_from(&state.management_kubeconfig).await?;
    println!("RUNTIMES");
    for runtime in Api::<KubernetesRuntime>::all(management.clone())
        .list(&ListParams::default())
        .await?
    {
        let status = runtime.status.clone().unwrap_or_default();
        let source = match (runtime.profile(), &status.provisioning) {
            (None, _) => "registered".to_owned(),
            (Some(profile), Some(p)) => format!("provisioned from {profile} ({})", p.phase),
            (Some(profile), None) => format!("provisioned from {profile}"),
        };
        println!(
            "  {:<10} region={:<10} ready={:<5} version={} nodes={} {source}",
            runtime.name_any(),
            runtime.spec.region,
            status.is_ready(),
            status.server_version.unwrap_or_default(),
            status.node_count.unwrap_or_default()
        );
    }
    println!("SUPPORT SERVICES");
    for service in Api::<SupportService>::all(management.clone())
        .list(&ListParams::default())
        .await?
    {
        println!(
            "  {:<28} {:<10} {}",
            service.name_any(),
            format!("{:?}", service.state()),
            service.message()
        );
    }
    println!("SERVICE DEPENDENCIES");
    for dependency in Api::<WorkloadServiceDependency>::all(management.clone())
        .list(&ListParams::default())
        .await?
    {
        let status = dependency.status.clone().unwrap_or_default();
        let ready = status.condition(qleetos_crds::READY);
        println!(
            "  {}/{} profile={} ready={} ({}: {})",
            dependency.namespace().unwrap_or_default(),
            dependency.name_any(),
            dependency.spec.profile_ref.name,
            ready.map_or_else(|| "Unknown".to_owned(), |c| format!("{:?}", c.status)),
            ready.map_or("Pending", |c| c.reason.as_str()),
            ready.map_or("no status yet", |c| c.message.as_str()),
        );
    }
    println!("WORKLOADS");
    let rpc_nodes = read_rpc_nodes(dir);
    for workload in Api::<Workload>::all(management)
        .list(&ListParams::default())
        .await?
    {
        print_workload(&state, &rpc_nodes, &workload).await?;
    }
    Ok(())
}

async fn print_workload(state: &State, rpc_nodes: &RpcNodeMap, workload: &Workload) -> Result<()> {
    let status = workload.status.clone().unwrap_or_default();
    let ready = status.condition(qleetos_crds::READY);
    println!(
        "  {}/{} ready={} ({}) placements={}",
        workload.namespace().unwrap_or_default(),
        workload.name_any(),
        ready.is_some_and(|c| c.is_true()),
        ready.map(|c| c.reason.as_str()).unwrap_or("Pending"),
        status.ready_placements.clone().unwrap_or_default()
    );
    for placement in &status.placements {
        println!(
            "    on runtime {} ({}): ready={} {}",
            placement.runtime, placement.region, placement.ready, placement.reason
        );
        let Some(runtime) = state.runtimes.iter().find(|r| r.name == placement.runtime) else {
            continue;
        };
        let client = client_from(&runtime.kubeconfig).await?;
        let namespace = workload.namespace().unwrap_or_default();
        let ports = exposure::LocalPorts {
            dns: state.dns_port,
            https: runtime.https_port,
        };
        for line in exposure::describe(&client, &namespace, ports).await? {
            println!("      {line}");
        }
        for deployment in Api::<Deployment>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default())
            .await?
        {
            let s = deployment.status.clone().unwrap_or_default();
            let image = deployment
                .spec
                .as_ref()
                .and_then(|d| d.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone());
            println!(
                "      Deployment {}: {}/{} available, image {}",
                deployment.name_any(),
                s.available_replicas.unwrap_or(0),
                deployment
                    .spec
                    .as_ref()
                    .and_then(|d| d.replicas)
                    .unwrap_or(1),
                image.unwrap_or_default()
            );
        }
        let nodes = rpc_nodes.get(&placement.runtime);
        for (secret, url) in rpc_urls(&client, &namespace).await? {
            println!("      RPC_URL {} (Secret {secret})", shown_url(&url));
            let Some(&address) = nodes.and_then(|nodes| nodes.get(&url)) else {
                println!("        (no local RPC node stand-in serves it)");
                continue;
            };
            match ask_rpc_node(&url, address).await {
                Ok((block, chain_id)) => println!(
                    "        answers eth_blockNumber: block {block}, chain id {chain_id} via {address}"
                ),
                Err(e) => println!("        does not answer via {address}: {e}"),
            }
        }
    }
    Ok(())
}

/// (Secret name, `RPC_URL`) for every Secret of `namespace` with an `RPC_URL` key; no other
/// value of any Secret leaves this function.
async fn rpc_urls(client: &Client, namespace: &str) -> Result<Vec<(String, String)>> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(secrets
        .items
        .into_iter()
        .filter_map(|secret| {
            let url = secret.data.as_ref()?.get("RPC_URL")?;
            let url = String::from_utf8_lossy(&url.0).into_owned();
            Some((secret.name_any(), url))
        })
        .collect())
}

/// A real `eth_blockNumber` and `eth_chainId` through `address`, standing in for cluster
/// DNS and kube-proxy.
async fn ask_rpc_node(url: &str, address: SocketAddr) -> Result<(u64, u64)> {
    let block = jsonrpc::block_number(url, Some(address)).await?;
    let chain_id = jsonrpc::chain_id(url, Some(address)).await?;
    Ok((block, chain_id))
}

/// `url` as it may be shown: without user, password and query, where credentials and API
/// keys go (an RPC node QleetOS installs has none, a hosted one may).
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed)
            if !parsed.username().is_empty()
                || parsed.password().is_some()
                || parsed.query().is_some() =>
        {
            // Both only fail for URLs that cannot have credentials at all.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            format!("{parsed} (credentials and query not shown)")
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<not a URL>".to_owned(),
    }
}

async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn read_state(dir: &Path) -> Result<State> {
    let text = std::fs::read_to_string(dir.join("state.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}
