//! The real Helm engine, as the pinned `helm` binary: `helm template` renders a chart archive
//! for one runtime (its Kubernetes version and API versions, so `.Capabilities` checks in
//! templates work), `helm pull` fetches from OCI registries. Values go in on stdin, registry
//! credentials in a private file: nothing secret on a command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use qleetos_crds::Chart;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Credentials, not_rendered, unavailable};
use crate::error::Result;
use crate::runtime_client::Capabilities;

/// Longest one `helm` run may take.
const HELM_TIMEOUT: Duration = Duration::from_secs(60);
/// Most of helm's own error output kept in a condition.
const MAX_MESSAGE: usize = 1500;

/// The `helm` binary and the directory it keeps its state in.
#[derive(Debug, Clone)]
pub struct Helm {
    binary: PathBuf,
    home: PathBuf,
}

/// An archive `helm pull` fetched.
#[derive(Debug)]
pub struct Pulled {
    pub bytes: Vec<u8>,
    pub version: String,
}

/// What `helm template` is asked to render.
#[derive(Debug)]
pub struct Template<'a> {
    pub archive: &'a Path,
    pub release: &'a str,
    pub namespace: &'a str,
    pub values: &'a Map<String, Value>,
    pub capabilities: &'a Capabilities,
}

impl Helm {
    pub fn new(binary: PathBuf, home: PathBuf) -> Self {
        Self { binary, home }
    }

    /// The chart's objects as `helm template` prints them (CRDs of `crds/` included, tests
    /// left out).
    pub async fn template(&self, chart: &Chart, request: &Template<'_>) -> Result<String> {
        let mut command = self.command();
        command
            .arg("template")
            .arg(request.release)
            .arg(request.archive)
            .args(["--namespace", request.namespace])
            .args(["--kube-version", &request.capabilities.kube_version])
            .args(["--include-crds", "--skip-tests", "--values", "-"]);
        for api_version in &request.capabilities.api_versions {
            command.args(["--api-versions", api_version]);
        }
        let values = serde_json::to_vec(request.values).unwrap_or_default();
        let output = self.run(chart, command, &values).await?;
        if !output.status.success() {
            return Err(not_rendered(chart, helm_message(&output.stderr)));
        }
        String::from_utf8(output.stdout)
            .map_err(|_| not_rendered(chart, "the rendered objects are not UTF-8".into()))
    }

    /// Pulls `reference` (`oci://registry/path/name`) at the chart's version (or range).
    pub async fn pull(
        &self,
        chart: &Chart,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Pulled> {
        // helm's home is made on first use: rendering alone never needs it on disk.
        std::fs::create_dir_all(&self.home)
            .map_err(|e| unavailable(chart, format!("cannot make helm's home directory: {e}")))?;
        let work = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(self.home.as_path())
            .map_err(|e| unavailable(chart, format!("cannot make a work directory: {e}")))?;
        let mut command = self.command();
        command
            .args([
                "pull",
                reference,
                "--version",
                &chart.version,
                "--destination",
            ])
            .arg(work.path());
        if chart.plain_http {
            command.arg("--plain-http");
        }
        if let Some(credentials) = credentials {
            let config = work.path().join("registry.json");
            write_registry_config(&config, reference, credentials).map_err(|e| {
                unavailable(chart, format!("cannot write the registry credentials: {e}"))
            })?;
            command.arg("--registry-config").arg(&config);
        }
        let output = self.run(chart, command, &[]).await?;
        if !output.status.success() {
            return Err(unavailable(chart, helm_message(&output.stderr)));
        }
        let prefix = format!("{}-", chart.name);
        let mut entries = std::fs::read_dir(work.path())
            .map_err(|e| unavailable(chart, format!("reading the pulled archive: {e}")))?;
        let found = entries.find_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let version = name.strip_prefix(&prefix)?.strip_suffix(".tgz")?.to_owned();
            Some((name, version))
        });
        let Some((file, version)) = found else {
            return Err(unavailable(chart, "helm pull wrote no archive".into()));
        };
        let bytes = tokio::fs::read(work.path().join(&file))
            .await
            .map_err(|e| unavailable(chart, format!("reading the pulled archive: {e}")))?;
        Ok(Pulled { bytes, version })
    }

    /// `helm` with its state under `home`, never the operator's home directory.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .env("HOME", &self.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(
        &self,
        chart: &Chart,
        mut command: Command,
        stdin: &[u8],
    ) -> Result<std::process::Output> {
        let failed = |e: std::io::Error| {
            let binary = self.binary.display();
            let problem = format!(
                "cannot run the renderer {binary}: {e} (install the pinned helm, see docs/design.md)"
            );
            not_rendered(chart, problem)
        };
        let mut child = command.spawn().map_err(failed)?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin).await.map_err(failed)?;
        }
        match tokio::time::timeout(HELM_TIMEOUT, child.wait_with_output()).await {
            Ok(output) => output.map_err(failed),
            Err(_) => Err(not_rendered(
                chart,
                format!("helm did not finish within {HELM_TIMEOUT:?}"),
            )),
        }
    }
}

/// helm's own message, trimmed to its useful part.
fn helm_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING") && !l.starts_with("Use --debug"))
        .collect();
    let mut message = lines.join("; ");
    if let Some(rest) = message.strip_prefix("Error: ") {
        message = rest.to_owned();
    }
    if message.len() > MAX_MESSAGE {
        let cut = (0..=MAX_MESSAGE)
            .rev()
            .find(|i| message.is_char_boundary(*i))
            .unwrap_or(0);
        message.truncate(cut);
        message.push('…');
    }
    if message.is_empty() {
        "helm failed without a message".into()
    } else {
        message
    }
}

/// A Docker-style registry config holding only this registry's credentials, readable by the
/// operator alone.
fn write_registry_config(
    path: &Path,
    reference: &str,
    credentials: &Credentials,
) -> std::io::Result<()> {
    use std::io::Write;

    use base64::Engine;
    use std::os::unix::fs::OpenOptionsExt;
    let host = reference
        .trim_start_matches("oci://")
        .split('/')
        .next()
        .unwrap_or_default();
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", credentials.username, credentials.password));
    let config = serde_json::json!({"auths": {host: {"auth": auth}}});
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(config.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_errors_keep_the_template_message_without_the_prefix() {
        let stderr = b"WARNING: something\nError: execution error at (web/templates/deploy.yaml:3:4): image.tag is required\n";
        assert_eq!(
            helm_message(stderr),
            "execution error at (web/templates/deploy.yaml:3:4): image.tag is required"
        );
        assert_eq!(helm_message(b""), "helm failed without a message");
    }
}
