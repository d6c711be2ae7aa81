//! What the operator's `Local` provider left on this machine: its kwokctl clusters and
//! their processes (found by the cluster folder in their command lines).

use std::path::{Path, PathBuf};

use crate::binaries::Binaries;

/// Names of the local clusters in `dir` (kwokctl keeps one folder per cluster).
pub fn clusters(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("clusters"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Process ids whose command line mentions the folder of cluster `name` in `dir`.
pub fn processes_of(dir: &Path, name: &str) -> Vec<u32> {
    let folder = cluster_folder(dir, name);
    processes_mentioning(&folder.to_string_lossy())
}

/// Process ids of every process of every local cluster in `dir`.
pub fn all_processes(dir: &Path) -> Vec<u32> {
    processes_mentioning(&dir.join("clusters").to_string_lossy())
}

fn cluster_folder(dir: &Path, name: &str) -> PathBuf {
    dir.join("clusters").join(name)
}

fn processes_mentioning(text: &str) -> Vec<u32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // A zombie is gone for our purposes (some sandboxes reap late).
            let zombie = status
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'));
            !zombie
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).contains(text))
                .unwrap_or(false)
        })
        .collect()
}

/// Deletes every local cluster in `dir` (a safety net when a test environment stops).
pub async fn delete_all(dir: &Path) {
    let Ok(binaries) = Binaries::get().await else {
        return;
    };
    for name in clusters(dir) {
        let status = tokio::process::Command::new(&binaries.kwokctl)
            .env("KWOK_WORKDIR", dir)
            .args(["--name", &name, "delete", "cluster"])
            .arg("--kubeconfig")
            .arg(dir.join(format!("{name}.contexts.yaml")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        if !status.is_ok_and(|s| s.success()) {
            tracing::warn!(cluster = %name, "could not delete a leftover local cluster");
        }
    }
}
