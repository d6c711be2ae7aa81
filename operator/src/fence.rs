//! Resource-version fences: how far each watch cache has caught up with the management API.
//!
//! A notification names the resourceVersion of the change behind it (its object's, or the
//! related object's). Once the watch of that kind has delivered an event at or past that
//! version, the cache holds that change, so a reconcile reads its object from the cache
//! instead of asking the API server. The API server's resourceVersions are etcd revisions,
//! one sequence for every kind; an unparsable version is never waited for (the caller reads
//! from the API server instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// The highest resourceVersion each kind's watch has delivered, keyed by kind name.
#[derive(Clone, Default)]
pub struct Fences {
    seen: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl std::fmt::Debug for Fences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fences").finish_non_exhaustive()
    }
}

/// A point a cache must have reached: `version` of kind `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub kind: String,
    pub version: u64,
}

impl Fence {
    /// The fence for a change of `kind` at `resource_version`; `None` when the version is not
    /// a number (nothing to wait for that can be trusted).
    pub fn at(kind: &str, resource_version: &str) -> Option<Self> {
        let version = resource_version.parse().ok()?;
        Some(Self {
            kind: kind.to_owned(),
            version,
        })
    }
}

impl Fences {
    fn sender(&self, kind: &str) -> watch::Sender<u64> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Records that the watch of `kind` delivered an object at `resource_version`.
    pub fn observed(&self, kind: &str, resource_version: Option<&str>) {
        let Some(version) = resource_version.and_then(|v| v.parse::<u64>().ok()) else {
            return;
        };
        self.sender(kind).send_if_modified(|seen| {
            let newer = version > *seen;
            if newer {
                *seen = version;
            }
            newer
        });
    }

    /// Waits until the cache of the fence's kind has caught up with it; false when it has not
    /// within `patience`.
    pub async fn reached(&self, fence: &Fence, patience: Duration) -> bool {
        let mut seen = self.sender(&fence.kind).subscribe();
        let caught_up = seen.wait_for(|seen| *seen >= fence.version);
        matches!(tokio::time::timeout(patience, caught_up).await, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fence_is_reached_once_its_kind_delivered_that_version() {
        let fences = Fences::default();
        let fence = Fence::at("Workload", "42").expect("a number");
        fences.observed("Workload", Some("41"));
        fences.observed("WorkloadInstance", Some("50"));
        assert!(!fences.reached(&fence, Duration::from_millis(20)).await);
        let waiting = tokio::spawn({
            let (fences, fence) = (fences.clone(), fence.clone());
            async move { fences.reached(&fence, Duration::from_secs(5)).await }
        });
        fences.observed("Workload", Some("43"));
        assert!(waiting.await.expect("joined"));
        fences.observed("Workload", Some("7"));
        assert!(fences.reached(&fence, Duration::ZERO).await);
    }

    #[test]
    fn opaque_versions_make_no_fence() {
        assert_eq!(Fence::at("Workload", ""), None);
        assert_eq!(Fence::at("Workload", "abc"), None);
        fences_ignore_opaque_versions();
    }

    fn fences_ignore_opaque_versions() {
        let fences = Fences::default();
        fences.observed("Workload", Some("not-a-number"));
        assert_eq!(*fences.sender("Workload").borrow(), 0);
    }
}
