//! What every handler shares: the management API client, the NATS notifier and the metrics.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::metrics::Metrics;
use crate::notify::Notifier;

/// Limits and timeouts of the HTTP API.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Time limit of every request except `?wait=` and watch streams.
    pub request_timeout: Duration,
    /// Longest `?wait=` accepted.
    pub max_wait: Duration,
    /// How often a `?wait=` looks at the Workload's status.
    pub wait_poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_wait: Duration::from_secs(3600),
            wait_poll: Duration::from_millis(500),
        }
    }
}

/// Cheap to clone; the gateway keeps no other state.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

struct Inner {
    client: Client,
    notifier: Notifier,
    metrics: Metrics,
    settings: Settings,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(client: Client, notifier: Notifier, settings: Settings) -> Self {
        Self(Arc::new(Inner {
            client,
            notifier,
            metrics: Metrics::default(),
            settings,
        }))
    }

    /// The gateway's own client; use it only for TokenReviews and health checks.
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    pub fn notifier(&self) -> &Notifier {
        &self.0.notifier
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }
}
