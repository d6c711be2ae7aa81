//! A real `nats-server` with JetStream on loopback, with its store in the environment's
//! directory so a restart keeps the streams (as a production server would).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries::Binaries;
use crate::cluster::free_port;
use crate::error::Error;
use crate::process::{ChildProcess, ProcessSpec, spawn};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running nats-server; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
    monitor_port: u16,
    process: Option<ChildProcess>,
}

impl NatsServer {
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        let program = Binaries::get().await?.nats_server.clone();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let mut server = Self {
            program,
            dir: dir.to_owned(),
            port: free_port()?,
            monitor_port: free_port()?,
            process: None,
        };
        server.resume().await?;
        Ok(server)
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
        let args = [
            "--jetstream".to_owned(),
            "--addr=127.0.0.1".to_owned(),
            format!("--port={}", self.port),
            format!("--http_port={}", self.monitor_port),
            format!("--store_dir={}", self.dir.join("store").display()),
        ];
        let process = spawn(ProcessSpec {
            component: "nats-server".into(),
            program: self.program.clone(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            log_path: self.dir.join("nats-server.log"),
        })
        .await?;
        self.process = Some(process);
        self.wait_ready().await
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
