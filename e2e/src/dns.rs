//! A private DNS server for the tests: Debian's BIND serving one zone that takes RFC 2136
//! updates signed with a TSIG key (what external-dns writes through), on a free port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::free_port;
use crate::error::Error;
use crate::process::{self, ChildProcess, ProcessSpec};

/// The zone the DNS trials publish records in.
pub const ZONE: &str = "qleetos.test";

/// A running `named` and how to update and query it.
#[derive(Debug)]
pub struct DnsServer {
    pub port: u16,
    pub key_name: String,
    pub key_algorithm: String,
    pub key_secret: String,
    _process: ChildProcess,
}

/// How to send RFC 2136 updates to a [`DnsServer`] (what external-dns needs); a copy that
/// outlives no one's process.
#[derive(Clone)]
pub struct DnsUpdates {
    pub port: u16,
    pub key_name: String,
    pub key_algorithm: String,
    pub key_secret: String,
}

impl std::fmt::Debug for DnsUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsUpdates")
            .field("port", &self.port)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Where and with which key to send updates.
    pub fn updates(&self) -> DnsUpdates {
        DnsUpdates {
            port: self.port,
            key_name: self.key_name.clone(),
            key_algorithm: self.key_algorithm.clone(),
            key_secret: self.key_secret.clone(),
        }
    }

    /// Writes the configuration (`e2e/scripts/bind9-zone.sh`) into `dir` and starts `named`
    /// in the foreground; ready once it answers for the zone.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        let port = free_port()?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bind9-zone.sh");
        let output = tokio::process::Command::new("bash")
            .arg(&script)
            .arg(dir)
            .arg(port.to_string())
            .arg(ZONE)
            .output()
            .await
            .map_err(|e| Error::io("cannot run", &script, e))?;
        if !output.status.success() {
            return Err(Error::Setup(format!(
                "{} failed (install bind9, bind9-utils and bind9-dnsutils from Debian): {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let read = |name: &str| -> Result<String, Error> {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| Error::io("cannot read", &path, e))
        };
        let process = process::spawn(ProcessSpec {
            component: "named".to_owned(),
            program: PathBuf::from("/usr/sbin/named"),
            args: vec![
                "-g".into(),
                "-n".into(),
                "1".into(),
                "-c".into(),
                dir.join("named.conf").into(),
            ],
            env: Vec::new(),
            log_path: dir.join("named.log"),
        })
        .await?;
        let server = Self {
            port,
            key_name: read("tsig.name")?,
            key_algorithm: read("tsig.alg")?,
            key_secret: read("tsig.secret")?,
            _process: process,
        };
        server.wait_serving().await?;
        Ok(server)
    }

    async fn wait_serving(&self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if self.query(ZONE, "SOA").await.is_ok_and(|a| !a.is_empty()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Setup(format!(
                    "named did not answer for {ZONE} on 127.0.0.1:{} within 20s",
                    self.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The answers for `name` (`dig +short`), one per line; empty when there are none.
    pub async fn query(&self, name: &str, record_type: &str) -> Result<Vec<String>, Error> {
        query(self.port, name, record_type).await
    }
}

/// The answers of the DNS server on 127.0.0.1:`port` for `name` (with `dig +short`).
pub async fn query(port: u16, name: &str, record_type: &str) -> Result<Vec<String>, Error> {
    let output = tokio::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+time=1",
            "+tries=1",
        ])
        .args([name, record_type])
        .output()
        .await
        .map_err(|e| Error::io("cannot run", Path::new("dig"), e))?;
    if !output.status.success() {
        return Err(Error::Setup(format!(
            "dig {name} failed: {}",
            String::from_utf8_lossy(&output.stdout)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}
