//! `wait`: poll a Workload until it runs its current generation Ready on every placement,
//! reporting progress on stderr (a bar on a terminal, else a line whenever it changes).

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::api::Api;
use qleetos_crds::Workload;
use qleetos_crds::rollout::evaluate;

use crate::failure::Failure;
use crate::progress::{Progress, line};

const POLL: Duration = Duration::from_secs(1);

pub async fn rolled_out(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    let what = format!("workload {namespace}/{name}");
    let workload = api.get(name).await.map_err(|e| Failure::api(e, &what))?;
    until_rolled_out(&api, workload, timeout, out).await
}

/// Waits from `workload` as last read; a later writer's generation counts too.
pub async fn until_rolled_out(
    api: &Api<Workload>,
    workload: Workload,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let name = workload.metadata.name.clone().unwrap_or_default();
    let what = format!(
        "workload {}/{name}",
        workload.metadata.namespace.clone().unwrap_or_default()
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let mut report = evaluate(&workload);
    let mut progress = Progress::on_stderr(&what);
    loop {
        progress.show(&report);
        if report.rolled_out {
            progress.finish();
            writeln!(
                out,
                "{what} rolled out generation {} on {} placements",
                report.generation,
                report.placements.len()
            )
            .context("writing the output")?;
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            progress.finish();
            return Err(Failure::TimedOut(format!(
                "{what} not rolled out after {timeout:?}: {}",
                line(&report)
            )));
        }
        tokio::time::sleep(POLL.min(deadline - tokio::time::Instant::now())).await;
        match api.get(&name).await {
            Ok(workload) => report = evaluate(&workload),
            // Anything else is taken as transient: the next poll retries.
            Err(error) => {
                if let failure @ (Failure::NotFound(_) | Failure::Forbidden(_)) =
                    Failure::api(error, &what)
                {
                    progress.finish();
                    return Err(failure);
                }
            }
        }
    }
}
