//! `wait`: poll a Workload until it runs its current generation Ready on every placement,
//! reporting progress on stderr whenever it changes.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::api::Api;
use qleetos_crds::Workload;
use qleetos_crds::rollout::{RolloutReport, evaluate};

use crate::failure::Failure;

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
    let mut shown = String::new();
    loop {
        let progress = progress(&report);
        if progress != shown {
            eprintln!("{what}: {progress}");
            shown = progress;
        }
        if report.rolled_out {
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
            return Err(Failure::TimedOut(format!(
                "{what} not rolled out after {timeout:?}: {shown}"
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
                    return Err(failure);
                }
            }
        }
    }
}

/// `1/2 placements ready; eu-west: Progressing: 1/2 Deployments ready`.
fn progress(report: &RolloutReport) -> String {
    let ready = report.placements.iter().filter(|p| p.ready).count();
    let mut text = format!("{ready}/{} placements ready", report.placements.len());
    if report.rolled_out {
        return text;
    }
    let waiting: Vec<String> = report
        .placements
        .iter()
        .filter(|p| !p.ready)
        .map(|p| format!("{}: {}: {}", p.runtime, p.reason, p.message))
        .collect();
    if waiting.is_empty() {
        text.push_str(&format!("; {}: {}", report.reason, report.message));
    } else {
        text.push_str(&format!("; {}", waiting.join("; ")));
    }
    text
}
