//! The Cluster API core manager process (`sigs.k8s.io/cluster-api/core` at the pinned
//! release), out of cluster against the management API server.
//!
//! Its webhook server must start, so it gets a self-signed certificate; no webhook
//! configuration points at it, so nothing calls it and nothing is defaulted.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};

use crate::cluster::free_port;
use crate::error::Error;
use crate::http;
use crate::process::{self, ChildProcess, ProcessSpec};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the manager with its files in `dir` and waits until `/readyz` answers 200.
pub(super) async fn start(
    program: &Path,
    kubeconfig: &Path,
    dir: &Path,
) -> Result<ChildProcess, Error> {
    let cert_dir = dir.join("webhook-certs");
    write_self_signed(&cert_dir)?;
    let health_port = free_port()?;
    let flags = [
        ("kubeconfig", kubeconfig.display().to_string()),
        ("leader-elect", "false".to_owned()),
        ("feature-gates", "ClusterTopology=true".to_owned()),
        ("webhook-port", free_port()?.to_string()),
        ("webhook-cert-dir", cert_dir.display().to_string()),
        ("health-addr", format!("127.0.0.1:{health_port}")),
        ("diagnostics-address", format!("127.0.0.1:{}", free_port()?)),
        ("insecure-diagnostics", "true".to_owned()),
    ];
    let args: Vec<OsString> = flags
        .iter()
        .map(|(name, value)| format!("--{name}={value}").into())
        .collect();
    let mut manager = process::spawn(ProcessSpec {
        component: "cluster-api-manager".to_owned(),
        program: program.to_path_buf(),
        args,
        env: Vec::new(),
        log_path: dir.join("cluster-api-manager.log"),
    })
    .await?;
    http::wait_ready(&mut manager, health_port, "/readyz", READY_TIMEOUT).await?;
    Ok(manager)
}

/// `tls.crt` and `tls.key` for 127.0.0.1/localhost in `dir`.
fn write_self_signed(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let cert = params.self_signed(&key)?;
    for (name, pem) in [("tls.crt", cert.pem()), ("tls.key", key.serialize_pem())] {
        let path = dir.join(name);
        std::fs::write(&path, pem).map_err(|e| Error::io("cannot write", &path, e))?;
    }
    Ok(())
}
