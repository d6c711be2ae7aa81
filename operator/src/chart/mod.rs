//! Helm charts as a source of objects (the Argo CD model): fetched from their repository,
//! rendered by the real Helm engine for one runtime, and handed to the applier as manifests,
//! so ownership, inventory, pruning, drift correction, health and teardown are those of
//! plain manifests. There is no Helm release in the runtime.

mod credentials;
pub mod helm;
mod objects;
pub mod repository;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use qleetos_crds::{Chart, ChartStatus, Manifest};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use credentials::{CHART_NAMESPACES_ANNOTATION, Credentials, credentials_for};
use helm::{Helm, Template};
pub use objects::is_awaited_hook;
use repository::Repositories;

use crate::error::{Error, Result};
use crate::runtime_client::RuntimeClient;

/// Renders kept before the oldest are dropped.
const RENDERS_KEPT: usize = 512;

/// Where the operator finds `helm` and keeps charts.
#[derive(Debug, Clone)]
pub struct ChartSettings {
    /// The pinned `helm` binary.
    pub helm: PathBuf,
    /// Archives fetched and helm's own state.
    pub cache: PathBuf,
    /// Repository prefix → prefix to fetch from instead.
    pub mirrors: Vec<(String, String)>,
}

/// One chart to render for one runtime.
#[derive(Debug)]
pub struct Request<'a> {
    pub chart: &'a Chart,
    pub values: Map<String, Value>,
    pub release: &'a str,
    pub namespace: &'a str,
    pub credentials: Option<Credentials>,
}

/// A chart's objects for one runtime, in apply order, and what was rendered.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub manifests: Vec<Manifest>,
    pub status: ChartStatus,
}

/// Fetches and renders charts; the same chart, values and runtime capabilities render once.
#[derive(Debug)]
pub struct Charts {
    helm: Helm,
    repositories: Repositories,
    rendered: Mutex<HashMap<String, Rendered>>,
}

impl Charts {
    pub fn new(settings: ChartSettings) -> Result<Self> {
        Ok(Self {
            helm: Helm::new(settings.helm, settings.cache.join("helm")),
            repositories: Repositories::new(settings.cache.join("archives"), settings.mirrors)?,
            rendered: Mutex::default(),
        })
    }

    /// The chart's objects for the runtime `client` reaches, CRDs and namespaces first, then
    /// pre-install hooks, the rest in Helm's install order, post-install hooks last.
    pub async fn render(&self, request: &Request<'_>, client: &RuntimeClient) -> Result<Rendered> {
        let archive = self
            .repositories
            .fetch(request.chart, request.credentials.as_ref(), &self.helm)
            .await?;
        let capabilities = client.capabilities().await?;
        let key = render_key(
            &archive.digest,
            request,
            &capabilities.api_versions,
            &capabilities.kube_version,
        );
        if let Some(rendered) = self
            .rendered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(rendered.clone());
        }
        let template = Template {
            archive: &archive.path,
            release: request.release,
            namespace: request.namespace,
            values: &request.values,
            capabilities: &capabilities,
        };
        let output = self.helm.template(request.chart, &template).await?;
        let manifests = objects::in_apply_order(request.chart, &output)?;
        let rendered = Rendered {
            status: ChartStatus {
                name: request.chart.name.clone(),
                version: archive.version,
                digest: archive.digest,
                objects: i64::try_from(manifests.len()).unwrap_or(i64::MAX),
                hosts: crate::hosts::claimed(None, &manifests)
                    .into_iter()
                    .collect(),
            },
            manifests,
        };
        let mut cache = self.rendered.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= RENDERS_KEPT {
            cache.clear();
        }
        cache.insert(key, rendered.clone());
        Ok(rendered)
    }
}

/// Whether `repository` is `allowed` or below it at a path boundary (trailing slashes aside):
/// `https://r/team-a` covers `https://r/team-a/stable`, never `https://r/team-a-x` or
/// `https://r.evil.io`.
pub fn repository_within(allowed: &str, repository: &str) -> bool {
    let allowed = allowed.trim_end_matches('/');
    let repository = repository.trim_end_matches('/');
    repository
        .strip_prefix(allowed)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `chart` could not be fetched: `problem` says why.
pub(crate) fn unavailable(chart: &Chart, problem: String) -> Error {
    Error::ChartUnavailable {
        chart: format!("{} {}", chart.name, chart.version),
        problem,
    }
}

/// `chart` could not be rendered: `problem` says why (helm's own message when it has one).
pub(crate) fn not_rendered(chart: &Chart, problem: String) -> Error {
    Error::ChartRender {
        chart: format!("{} {}", chart.name, chart.version),
        problem,
    }
}

fn render_key(
    digest: &str,
    request: &Request<'_>,
    api_versions: &[String],
    kube_version: &str,
) -> String {
    let mut hash = Sha256::new();
    for part in [digest, request.release, request.namespace, kube_version] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update(serde_json::to_vec(&request.values).unwrap_or_default());
    for api_version in api_versions {
        hash.update(api_version.as_bytes());
        hash.update([0]);
    }
    format!("{:x}", hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::repository_within;

    #[test]
    fn a_repository_is_within_an_allowed_prefix_only_at_a_path_boundary() {
        assert!(repository_within(
            "https://r.example.com/team-a",
            "https://r.example.com/team-a"
        ));
        assert!(repository_within(
            "https://r.example.com/team-a/",
            "https://r.example.com/team-a/stable"
        ));
        assert!(!repository_within(
            "https://r.example.com/team-a",
            "https://r.example.com/team-ab"
        ));
        assert!(!repository_within(
            "https://r.example.com",
            "https://r.example.com.evil.io/x"
        ));
        assert!(!repository_within(
            "https://r.example.com",
            "http://r.example.com"
        ));
    }
}
