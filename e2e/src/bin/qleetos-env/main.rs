//! `qleetos-env`: the local QleetOS environment for humans (`make env-up`, `make run`).
//!
//! `up` starts a management cluster, workload clusters, the operator and the gateway, plus a
//! DNS server (bind9) and the stand-ins for the support services kwok cannot run
//! (cert-manager, external-dns and Traefik, started in a runtime when QleetOS installs them
//! there, and anvil for every Ethereum RPC node QleetOS installs as a back-end service);
//! writes the state directory and stays in the foreground until SIGINT/SIGTERM or `down`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
use qleetos_e2e::dns::DnsServer;
use qleetos_e2e::environment::{Environment, default_runtimes, delete_lab_policy};
use qleetos_e2e::exposure;
use qleetos_e2e::fleet::{self, Fleet, FleetConfig, Published};
use qleetos_e2e::gateway::GatewayProcess;
use qleetos_e2e::jsonrpc;
use qleetos_e2e::operator::OperatorOptions;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};

mod story;
mod teardown;

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
    /// Follow a Workload deployed into an empty region, printing each layer as it becomes
    /// true (cluster, support services, RPC node, certificate, DNS, HTTPS, RPC answer, app)
    /// with the time since the Workload was created.
    Story {
        #[arg(long, default_value = "web3-edge")]
        namespace: String,
        #[arg(long, default_value = "dapp")]
        workload: String,
        #[arg(long, default_value = "600")]
        timeout_secs: u64,
    },
    /// Delete a sample's namespace and print each layer as it goes (app, RPC node, support
    /// services, the idle cluster), ending with the count of what is left: all zero.
    Teardown {
        #[arg(long, default_value = "web3-edge")]
        namespace: String,
        #[arg(long, default_value = "600")]
        timeout_secs: u64,
    },
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
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    qleetos_e2e::init_logging();
    match args.command {
        Command::Up => up(&args.dir).await,
        Command::Wait { timeout_secs } => wait(&args.dir, Duration::from_secs(timeout_secs)).await,
        Command::Down => down(&args.dir).await,
        Command::Status => status(&args.dir).await,
        Command::Story {
            namespace,
            workload,
            timeout_secs,
        } => {
            let state = read_state(&args.dir).context("is the environment up? (`make env-up`)")?;
            let story = story::Story {
                dir: &args.dir,
                management: client_from(&state.management_kubeconfig).await?,
                state: &state,
                namespace,
                workload,
                timeout: Duration::from_secs(timeout_secs),
            };
            story.tell().await
        }
        Command::Teardown {
            namespace,
            timeout_secs,
        } => {
            let state = read_state(&args.dir).context("is the environment up? (`make env-up`)")?;
            let teardown = teardown::Teardown {
                dir: &args.dir,
                management: client_from(&state.management_kubeconfig).await?,
                namespace,
                timeout: Duration::from_secs(timeout_secs),
            };
            teardown.run().await
        }
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
    // The stand-ins of every runtime, registered or provisioned later on.
    let fleet = Fleet::start(FleetConfig {
        dir: dir.to_owned(),
        management_kubeconfig: env.management.kubeconfig_path().to_owned(),
        runtime_selector: None,
        dns: Some(dns.updates()),
        ingress_address: INGRESS_ADDRESS.to_owned(),
    })
    .await?;
    let state = State {
        dns_port: Some(dns.port),
        gateway_url: gateway.base_url(),
        pid: std::process::id(),
        management_kubeconfig: env.management.kubeconfig_path().to_owned(),
        operator_log,
        runtimes: env
            .runtimes
            .iter()
            .map(|(spec, cluster)| RuntimeState {
                name: spec.name.clone(),
                region: spec.region.clone(),
                kubeconfig: cluster.kubeconfig_path().to_owned(),
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
    fleet.stop().await;
    drop(dns);
    gateway.stop().await;
    env.stop().await;
    Ok(())
}

/// The address Traefik publishes in the Ingresses it serves, and external-dns in DNS: the
/// loopback, where each runtime's Traefik listens (on its own ports).
const INGRESS_ADDRESS: &str = "127.0.0.1";

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
    let fleet = fleet::read_published(dir);
    for workload in Api::<Workload>::all(management)
        .list(&ListParams::default())
        .await?
    {
        print_workload(&state, &fleet, &workload).await?;
    }
    Ok(())
}

async fn print_workload(state: &State, fleet: &Published, workload: &Workload) -> Result<()> {
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
        let Some(runtime) = fleet.runtimes.get(&placement.runtime) else {
            println!("      (no stand-ins run for this runtime yet)");
            continue;
        };
        let client = client_from(&runtime.kubeconfig).await?;
        let namespace = workload.namespace().unwrap_or_default();
        let ports = exposure::LocalPorts {
            dns: state.dns_port,
            https: Some(runtime.https_port),
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
        for (secret, url) in rpc_urls(&client, &namespace).await? {
            println!("      RPC_URL {} (Secret {secret})", shown_url(&url));
            let Some(&address) = runtime.rpc_nodes.get(&url) else {
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
