//! Turning scenarios into libtest-mimic trials: on the shared environment, or in an
//! environment of their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Result;
use libtest_mimic::{Failed, Trial};
use qleetos_e2e::environment::Environment;
use tokio::runtime::Runtime;

/// The environment most scenarios share, or why it did not start.
pub type SharedEnv = Arc<std::result::Result<Environment, String>>;

/// A scenario on the shared environment.
pub type Scenario =
    for<'a> fn(&'a Environment) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A trial running `scenario` on the shared environment; it fails with the start-up error
/// when the environment did not start.
pub fn shared_trial(
    name: &str,
    runtime: &Arc<Runtime>,
    env: &SharedEnv,
    scenario: Scenario,
) -> Trial {
    let (runtime, env) = (runtime.clone(), env.clone());
    Trial::test(name, move || {
        let env = env
            .as_ref()
            .as_ref()
            .map_err(|e| Failed::from(format!("environment did not start: {e}")))?;
        runtime
            .block_on(scenario(env))
            .map_err(|e| Failed::from(format!("{e:#}")))
    })
}

/// A trial running `work` (which brings its own environment) to completion.
pub fn own_trial<F>(name: &str, runtime: &Arc<Runtime>, work: F) -> Trial
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    let runtime = runtime.clone();
    Trial::test(name, move || {
        runtime
            .block_on(work)
            .map_err(|e| Failed::from(format!("{e:#}")))
    })
}

/// A scenario that needs an environment to itself (it stops processes, or installs
/// cluster-wide objects others would see).
pub type Exclusive =
    for<'a> fn(&'a mut Environment) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// An environment a group of exclusive scenarios take turns on, one at a time, started by
/// whichever runs first.
#[derive(Clone)]
pub struct TakingTurns {
    env: Arc<tokio::sync::Mutex<Option<Environment>>>,
    dir: std::path::PathBuf,
    runtimes: fn() -> Vec<qleetos_e2e::environment::RuntimeSpec>,
    /// Servers of its NATS cluster; 1: a single server.
    nats_servers: usize,
}

impl TakingTurns {
    pub fn new(
        dir: std::path::PathBuf,
        runtimes: fn() -> Vec<qleetos_e2e::environment::RuntimeSpec>,
    ) -> Self {
        Self {
            env: Arc::default(),
            dir,
            runtimes,
            nats_servers: 1,
        }
    }

    /// The same, with a NATS cluster of `servers` servers.
    pub fn with_nats_cluster(mut self, servers: usize) -> Self {
        self.nats_servers = servers;
        self
    }

    pub async fn stop(self) {
        if let Some(env) = self.env.lock().await.take() {
            env.stop().await;
        }
    }

    pub async fn run(&self, scenario: Exclusive) -> Result<()> {
        use anyhow::Context as _;
        let mut guard = self.env.lock().await;
        if guard.is_none() {
            let runtimes = (self.runtimes)();
            let env = match self.nats_servers {
                1 => Environment::start(&self.dir, runtimes).await,
                servers => Environment::start_with_nats_cluster(&self.dir, runtimes, servers).await,
            }
            .with_context(|| format!("starting the environment in {}", self.dir.display()))?;
            *guard = Some(env);
        }
        let env = guard.as_mut().context("environment")?;
        scenario(env).await
    }
}
