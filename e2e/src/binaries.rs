//! Locating the etcd, Kubernetes and stand-in binaries the test clusters run.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use crate::error::Error;

/// Overrides the directory that holds kube-apiserver, kube-controller-manager,
/// kube-scheduler, kubectl and kwok (otherwise `e2e/scripts/kube-bins.sh` is run).
pub const KUBE_BIN_DIR_ENV: &str = "QLEETOS_KUBE_BIN_DIR";

const KUBE_BINS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kube-bins.sh");
const NATS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nats-server.sh");
/// Overrides the nats-server binary (otherwise `e2e/scripts/nats-server.sh` installs one).
pub const NATS_SERVER_ENV: &str = "QLEETOS_NATS_SERVER";
const CERT_MANAGER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cert-manager.sh");
const EXTERNAL_DNS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/external-dns.sh");
const HELM_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/helm.sh");
const TRAEFIK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/traefik.sh");
const ANVIL_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/anvil.sh");
const METRICS_SERVER_SCRIPT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/metrics-server.sh");
/// Overrides the directory that holds `bin/cert-manager-controller` and `crds/`
/// (otherwise `e2e/scripts/cert-manager.sh` builds them).
pub const CERT_MANAGER_DIR_ENV: &str = "QLEETOS_CERT_MANAGER_DIR";

/// Absolute paths of every binary a test cluster needs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
    /// Runs whole local clusters of the binaries above (QleetOS's `Local` provider).
    pub kwokctl: PathBuf,
    pub nats_server: PathBuf,
}

static BINARIES: OnceCell<Binaries> = OnceCell::const_new();

impl Binaries {
    /// Finds all binaries once per process (building the Kubernetes ones on first use
    /// through `e2e/scripts/kube-bins.sh`, which takes minutes the first time).
    pub async fn get() -> Result<&'static Binaries, Error> {
        BINARIES.get_or_try_init(Self::locate).await
    }

    async fn locate() -> Result<Binaries, Error> {
        let etcd = find_on_path("etcd").ok_or(Error::EtcdNotFound)?;
        let dir = kube_bin_dir().await?;
        let binaries = Binaries {
            etcd,
            kube_apiserver: binary_in(&dir, "kube-apiserver")?,
            kube_controller_manager: binary_in(&dir, "kube-controller-manager")?,
            kube_scheduler: binary_in(&dir, "kube-scheduler")?,
            kubectl: binary_in(&dir, "kubectl")?,
            kwok: binary_in(&dir, "kwok")?,
            kwokctl: binary_in(&dir, "kwokctl")?,
            nats_server: nats_server().await?,
        };
        tracing::debug!(?binaries, "located test binaries");
        Ok(binaries)
    }
}

/// cert-manager's real controller (built from the pinned Go module) and its CRD YAML.
#[derive(Debug, Clone)]
pub struct CertManager {
    pub controller: PathBuf,
    /// The CRD manifests, one per file, sorted by name.
    pub crds: Vec<PathBuf>,
}

static CERT_MANAGER: OnceCell<CertManager> = OnceCell::const_new();

impl CertManager {
    /// Finds them once per process (building them on first use through
    /// `e2e/scripts/cert-manager.sh`, which takes minutes the first time).
    pub async fn get() -> Result<&'static CertManager, Error> {
        CERT_MANAGER.get_or_try_init(Self::locate).await
    }

    async fn locate() -> Result<CertManager, Error> {
        let dir = match std::env::var_os(CERT_MANAGER_DIR_ENV).filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                tracing::info!(
                    script = CERT_MANAGER_SCRIPT,
                    "locating cert-manager (the first run builds it, which takes several minutes)"
                );
                run_install_script(CERT_MANAGER_SCRIPT)
                    .await
                    .map(PathBuf::from)
                    .map_err(|detail| Error::CertManager { detail })?
            }
        };
        Self::in_dir(&dir)
    }

    fn in_dir(dir: &Path) -> Result<CertManager, Error> {
        let missing = |what: &str| Error::CertManager {
            detail: format!("{what} missing in {}", dir.display()),
        };
        let controller = dir.join("bin/cert-manager-controller");
        if !is_executable(&controller) {
            return Err(missing("bin/cert-manager-controller"));
        }
        let mut crds: Vec<PathBuf> = std::fs::read_dir(dir.join("crds"))
            .map_err(|_| missing("crds/"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        if crds.is_empty() {
            return Err(missing("crds/*.yaml"));
        }
        crds.sort();
        Ok(CertManager { controller, crds })
    }
}

/// The external-dns binary (rfc2136 provider), built once by `e2e/scripts/external-dns.sh`.
pub async fn external_dns() -> Result<PathBuf, Error> {
    built_by(EXTERNAL_DNS_SCRIPT, "external-dns", "bin/external-dns").await
}

/// The Traefik binary (ingress controller), built once by `e2e/scripts/traefik.sh`.
pub async fn traefik() -> Result<PathBuf, Error> {
    built_by(TRAEFIK_SCRIPT, "traefik", "bin/traefik").await
}

/// The pinned metrics-server, built once by `e2e/scripts/metrics-server.sh`.
pub async fn metrics_server() -> Result<PathBuf, Error> {
    built_by(
        METRICS_SERVER_SCRIPT,
        "metrics-server",
        "bin/metrics-server",
    )
    .await
}

/// The pinned Helm CLI, built once by `e2e/scripts/helm.sh` (which prints its path).
pub async fn helm() -> Result<PathBuf, Error> {
    built_by(HELM_SCRIPT, "helm", "").await
}

/// The pinned anvil (Foundry's Ethereum dev chain), installed once from its npm package by
/// `e2e/scripts/anvil.sh` (which prints its path).
pub async fn anvil() -> Result<PathBuf, Error> {
    built_by(ANVIL_SCRIPT, "anvil", "").await
}

/// The executable at `relative` under what `script` prints (`""`: what it prints is the
/// executable), built once and cached, or a message saying how to get `component`.
async fn built_by(script: &str, component: &str, relative: &str) -> Result<PathBuf, Error> {
    let printed = run_install_script(script).await.map_err(|detail| {
        Error::Setup(format!(
            "{component} is missing: run `make kube-bins` (needs Go and the module proxy, and npm for anvil); {detail}"
        ))
    })?;
    let mut binary = PathBuf::from(printed);
    if !relative.is_empty() {
        binary.push(relative);
    }
    if !is_executable(&binary) {
        return Err(Error::Setup(format!(
            "{} is not executable",
            binary.display()
        )));
    }
    Ok(binary)
}

async fn kube_bin_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os(KUBE_BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    tracing::info!(
        script = KUBE_BINS_SCRIPT,
        "locating Kubernetes binaries (the first run builds them, which takes several minutes)"
    );
    run_install_script(KUBE_BINS_SCRIPT)
        .await
        .map(PathBuf::from)
        .map_err(|detail| Error::KubeBinaries { detail })
}

async fn nats_server() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let path = run_install_script(NATS_SCRIPT)
        .await
        .map(PathBuf::from)
        .map_err(|detail| Error::NatsServer { detail })?;
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(Error::NatsServer {
            detail: format!("{} is not executable", path.display()),
        })
    }
}

/// Runs one of the e2e/scripts installers and returns the last line it printed.
pub(crate) async fn run_install_script(script: &str) -> Result<String, String> {
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("could not run bash {script}: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{script} failed ({}):\n{}",
            output.status,
            stderr.trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("{script} printed nothing; its stderr:\n{}", stderr.trim()))
}

fn binary_in(dir: &Path, binary: &'static str) -> Result<PathBuf, Error> {
    let path = dir.join(binary);
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(Error::BinaryMissing {
            binary,
            dir: dir.to_path_buf(),
        })
    }
}

fn find_on_path(binary: impl AsRef<OsStr>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary.as_ref()))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("definitely-not-a-binary-qleetos").is_none());
    }

    #[test]
    fn missing_binary_names_the_fix() {
        let err = binary_in(Path::new("/nonexistent"), "kwok").unwrap_err();
        assert!(err.to_string().contains("kube-bins.sh"), "{err}");
        let err = CertManager::in_dir(Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("cert-manager.sh"), "{err}");
        assert!(err.to_string().contains("make kube-bins"), "{err}");
    }
}
