//! What a runtime serves, as Helm's `.Capabilities` sees it: the Kubernetes version and every
//! `group/version` and `group/version/Kind`. Read by discovery, kept for a minute, so a chart
//! rendered for a runtime sees a CRD installed there a minute ago.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Discovery;

use super::RuntimeClient;
use crate::error::Result;

/// How long a runtime's capabilities are reused before discovery runs again.
const FRESH_FOR: Duration = Duration::from_secs(60);

/// A runtime's Kubernetes version and API versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// e.g. `v1.36.2`.
    pub kube_version: String,
    /// `v1`, `apps/v1`, `apps/v1/Deployment`, ... sorted.
    pub api_versions: Vec<String>,
}

/// The last capabilities read of one runtime, and when.
pub(super) type CachedCapabilities = Arc<std::sync::Mutex<Option<(Instant, Arc<Capabilities>)>>>;

impl RuntimeClient {
    /// The runtime's capabilities, from discovery at most a minute old.
    pub async fn capabilities(&self) -> Result<Arc<Capabilities>> {
        if let Some((read, known)) = self
            .capabilities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && read.elapsed() < FRESH_FOR
        {
            return Ok(known.clone());
        }
        let version = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| self.unreachable(e))?;
        let discovery = Discovery::new(self.client.clone())
            .run()
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut api_versions = Vec::new();
        for group in discovery.groups() {
            for version in group.versions() {
                let group_version = match group.name() {
                    "" => version.to_owned(),
                    name => format!("{name}/{version}"),
                };
                for (resource, _) in group.versioned_resources(version) {
                    api_versions.push(format!("{group_version}/{}", resource.kind));
                }
                api_versions.push(group_version);
            }
        }
        api_versions.sort();
        api_versions.dedup();
        let known = Arc::new(Capabilities {
            kube_version: version.git_version,
            api_versions,
        });
        *self.capabilities.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), known.clone()));
        Ok(known)
    }
}
