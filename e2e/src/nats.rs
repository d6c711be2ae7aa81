//! A real `nats-server` with JetStream on loopback, with its store in the environment's
//! directory so a restart keeps the streams (as a production server would), optionally
//! requiring a user and password (set in its configuration file, as in production), or a
//! cluster of such servers routed to each other, with JetStream replicating across them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries::Binaries;
use crate::cluster::free_port;
use crate::error::Error;
use crate::process::{ChildProcess, ProcessSpec, spawn};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a restarted cluster member may take to catch up.
const CURRENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The user and password a server requires of every client.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUser {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for NatsUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsUser")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Name of the clusters [`NatsServer::start_cluster`] forms.
pub const CLUSTER_NAME: &str = "qleetos";

/// One server's place in a cluster: its name, its route port and its peers' route ports.
#[derive(Debug, Clone)]
struct ClusterMember {
    server_name: String,
    route_port: u16,
    peer_route_ports: Vec<u16>,
}

/// A running nats-server; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
    monitor_port: u16,
    auth: Option<NatsUser>,
    cluster: Option<ClusterMember>,
    /// A configuration file of its own (e.g. a Helm chart's), which then also sets its store
    /// and authentication; ports and routes still come from flags.
    config: Option<PathBuf>,
    process: Option<ChildProcess>,
}

impl NatsServer {
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        Self::start_with_auth(dir, None).await
    }

    /// Starts a server that refuses clients without `auth`'s user and password, when given.
    pub async fn start_with_auth(dir: &Path, auth: Option<NatsUser>) -> Result<Self, Error> {
        let mut server = Self::new(dir, auth, None).await?;
        server.resume().await?;
        Ok(server)
    }

    /// Starts `size` servers (`n0`, `n1`, ...) routed into one JetStream cluster, each with
    /// its store under `dir/<name>`.
    pub async fn start_cluster(dir: &Path, size: usize) -> Result<Vec<Self>, Error> {
        let mut servers = Vec::with_capacity(size);
        for member in Self::cluster_members(size)? {
            let server_dir = dir.join(&member.server_name);
            servers.push(Self::new(&server_dir, None, Some(member)).await?);
        }
        futures::future::try_join_all(servers.iter_mut().map(Self::resume)).await?;
        Ok(servers)
    }

    /// Starts one server per configuration text, routed into one JetStream cluster as in
    /// [`start_cluster`](Self::start_cluster). Each configuration must authorise `auth` for
    /// clients and routes and may name the server with `$POD_NAME` (set to `n0`, `n1`, ...,
    /// as a StatefulSet would); its store is wherever the configuration puts it.
    pub async fn start_cluster_from_configs(
        dir: &Path,
        configs: &[String],
        auth: NatsUser,
    ) -> Result<Vec<Self>, Error> {
        let mut servers = Vec::with_capacity(configs.len());
        for (server, config) in Self::cluster_members(configs.len())?
            .into_iter()
            .zip(configs)
        {
            let server_dir = dir.join(&server.server_name);
            let mut server = Self::new(&server_dir, Some(auth.clone()), Some(server)).await?;
            let path = server_dir.join("nats.conf");
            std::fs::write(&path, config).map_err(|e| Error::io("writing", &path, e))?;
            server.config = Some(path);
            servers.push(server);
        }
        futures::future::try_join_all(servers.iter_mut().map(Self::resume)).await?;
        Ok(servers)
    }

    fn cluster_members(size: usize) -> Result<Vec<ClusterMember>, Error> {
        let route_ports = (0..size)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(route_ports
            .iter()
            .enumerate()
            .map(|(index, route_port)| ClusterMember {
                server_name: format!("n{index}"),
                route_port: *route_port,
                peer_route_ports: route_ports
                    .iter()
                    .copied()
                    .filter(|p| p != route_port)
                    .collect(),
            })
            .collect())
    }

    async fn new(
        dir: &Path,
        auth: Option<NatsUser>,
        cluster: Option<ClusterMember>,
    ) -> Result<Self, Error> {
        let program = Binaries::get().await?.nats_server.clone();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        Ok(Self {
            program,
            dir: dir.to_owned(),
            port: free_port()?,
            monitor_port: free_port()?,
            auth,
            cluster,
            config: None,
            process: None,
        })
    }

    /// Waits until the server's JetStream is current: it has caught up with the cluster's
    /// metadata and every stream and consumer it holds a copy of (`/healthz` without
    /// `js-enabled-only`). A server just restarted in a cluster needs this before another can
    /// be lost without losing quorum.
    pub async fn wait_current(&mut self) -> Result<(), Error> {
        match self.process.as_mut() {
            Some(process) => {
                crate::http::wait_ready(process, self.monitor_port, "/healthz", CURRENT_TIMEOUT)
                    .await
            }
            None => Err(Error::Setup(format!(
                "nats-server {} is not running",
                self.server_name().unwrap_or("(single)")
            ))),
        }
    }

    /// The server's name in its cluster (`n0`, ...), if it is in one.
    pub fn server_name(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.server_name.as_str())
    }

    /// Kills the server (SIGKILL) without warning; its JetStream store stays on disk.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill_blocking();
        }
    }

    /// The credentials clients need, when the server requires some.
    pub fn auth(&self) -> Option<&NatsUser> {
        self.auth.as_ref()
    }

    /// The environment variables that give the operator or gateway the server's credentials.
    pub fn client_env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        match &self.auth {
            Some(auth) => vec![
                ("QLEETOS_NATS_USER".into(), auth.user.clone().into()),
                ("QLEETOS_NATS_PASSWORD".into(), auth.password.clone().into()),
            ],
            None => Vec::new(),
        }
    }

    /// The monitoring port (`/connz`, `/healthz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM, then SIGKILL); its JetStream store stays on disk.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, so clients
    /// see missed heartbeats and timeouts rather than a closed connection.
    pub fn pause(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.pause();
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn unpause(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.unpause();
        }
    }

    /// The monitoring endpoint's JetStream report (`/jsz`) with every stream and consumer
    /// and their configuration, as JSON text.
    pub async fn jetstream_report(&self) -> Result<String, Error> {
        let path = "/jsz?accounts=true&streams=true&consumers=true&config=true";
        let (_, body) = crate::http::get(self.monitor_port, path).await?;
        Ok(body)
    }

    /// Starts the server again on the same port with the same store.
    pub async fn resume(&mut self) -> Result<(), Error> {
        let mut args = vec![
            "--addr=127.0.0.1".to_owned(),
            format!("--port={}", self.port),
            format!("--http_port={}", self.monitor_port),
        ];
        let mut env = Vec::new();
        match (&self.config, &self.auth) {
            (Some(config), _) => {
                args.push(format!("--config={}", config.display()));
                let name = self.server_name().unwrap_or("n0");
                env.push(("POD_NAME".into(), name.into()));
            }
            (None, auth) => {
                args.push("--jetstream".to_owned());
                let store = self.dir.join("store");
                args.push(format!("--store_dir={}", store.display()));
                if let Some(auth) = auth {
                    let config = self.write_auth_config(auth)?;
                    args.push(format!("--config={}", config.display()));
                }
            }
        }
        if let Some(member) = &self.cluster {
            let route_user = self.config.as_ref().and(self.auth.as_ref());
            args.extend(cluster_args(member, route_user));
        }
        let process = spawn(ProcessSpec {
            component: "nats-server".into(),
            program: self.program.clone(),
            args: args.into_iter().map(Into::into).collect(),
            env,
            log_path: self.dir.join("nats-server.log"),
        })
        .await?;
        self.process = Some(process);
        self.wait_ready().await
    }

    /// A configuration file with the one user every client must authenticate as.
    fn write_auth_config(&self, auth: &NatsUser) -> Result<PathBuf, Error> {
        let path = self.dir.join("auth.conf");
        let config = format!(
            "authorization {{\n  user: {}\n  password: {}\n}}\n",
            serde_json::to_string(&auth.user).unwrap_or_default(),
            serde_json::to_string(&auth.password).unwrap_or_default()
        );
        std::fs::write(&path, config).map_err(|e| Error::io("writing", &path, e))?;
        Ok(path)
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let path = "/healthz?js-enabled-only=true";
        match self.process.as_mut() {
            Some(process) => {
                crate::http::wait_ready(process, self.monitor_port, path, READY_TIMEOUT).await
            }
            None => Ok(()),
        }
    }
}

/// The flags that make a server a member of [`CLUSTER_NAME`], routed to its peers (as
/// `route_user` when the routes require one).
fn cluster_args(member: &ClusterMember, route_user: Option<&NatsUser>) -> Vec<String> {
    let credentials = route_user
        .map(|u| format!("{}:{}@", u.user, u.password))
        .unwrap_or_default();
    let routes: Vec<String> = member
        .peer_route_ports
        .iter()
        .map(|port| format!("nats://{credentials}127.0.0.1:{port}"))
        .collect();
    vec![
        format!("--server_name={}", member.server_name),
        format!("--cluster_name={CLUSTER_NAME}"),
        format!("--cluster=nats://127.0.0.1:{}", member.route_port),
        format!("--routes={}", routes.join(",")),
    ]
}
