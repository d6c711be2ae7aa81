//! An OCI registry for charts: go-containerregistry's in-memory `registry` (built once by
//! `e2e/scripts/oci-registry.sh`) over plain HTTP on loopback, with charts pushed to it by
//! the real `helm push`. Dropping it stops the registry.

use std::path::Path;
use std::time::Duration;

use crate::binaries::{helm, run_install_script};
use crate::cluster::free_port;
use crate::error::Error;
use crate::http;
use crate::process::{self, ChildProcess, ProcessSpec};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/oci-registry.sh");
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct OciRegistry {
    port: u16,
    _process: ChildProcess,
}

impl OciRegistry {
    /// Starts a registry, its log under `dir`, and waits until it answers `/v2/`.
    pub async fn start(dir: &Path) -> Result<Self, Error> {
        let program = run_install_script(SCRIPT).await.map_err(|detail| {
            Error::Setup(format!(
                "the OCI registry is missing: run `make kube-bins` (needs Go and the module proxy); {detail}"
            ))
        })?;
        let port = free_port()?;
        let mut registry = process::spawn(ProcessSpec {
            component: "oci-registry".to_owned(),
            program: program.into(),
            args: vec!["-port".into(), port.to_string().into()],
            env: Vec::new(),
            log_path: dir.join("oci-registry.log"),
        })
        .await?;
        http::wait_ready(&mut registry, port, "/v2/", READY_TIMEOUT).await?;
        Ok(OciRegistry {
            port,
            _process: registry,
        })
    }

    /// `oci://127.0.0.1:<port>/charts`: where charts are pushed, and a chart's `repository`.
    pub fn repository(&self) -> String {
        format!("oci://127.0.0.1:{}/charts", self.port)
    }

    /// Pushes the packaged chart `archive` with the pinned `helm push --plain-http`.
    pub async fn push(&self, archive: &Path, work: &Path) -> Result<(), Error> {
        let helm = helm().await?;
        let output = tokio::process::Command::new(&helm)
            .arg("push")
            .arg(archive)
            .args([self.repository().as_str(), "--plain-http"])
            .env("HELM_CACHE_HOME", work.join("helm/cache"))
            .env("HELM_CONFIG_HOME", work.join("helm/config"))
            .env("HELM_DATA_HOME", work.join("helm/data"))
            .output()
            .await
            .map_err(|e| Error::io("cannot run", &helm, e))?;
        if !output.status.success() {
            return Err(Error::Setup(format!(
                "helm push {} failed: {}",
                archive.display(),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }
}
