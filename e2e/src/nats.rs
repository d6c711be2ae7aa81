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
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut last_error = None;
        while tokio::time::Instant::now() < deadline {
            if let Some(process) = self.process.as_mut() {
                process.check_running()?;
            }
            match crate::http::get(self.monitor_port, "/healthz?js-enabled-only=true").await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last_error = Some(format!("{status} {body}")),
                Err(error) => last_error = Some(error.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Timeout {
            what: "nats-server /healthz".into(),
            timeout: READY_TIMEOUT,
            last_error,
        })
    }
}
