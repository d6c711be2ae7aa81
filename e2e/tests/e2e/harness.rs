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
