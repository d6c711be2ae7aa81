//! `rebalance NAME`: plans placing a running Workload anew under its placement preferences
//! (which placements would move, which runtimes would be left with nothing to run) without
//! changing anything; with `--apply`, then asks QleetOS to do it. Placements never move by
//! themselves when capacity or prices change: this is the explicit, planned action.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::api::Api;
use qleetos_crds::{REBALANCE_ANNOTATION, Workload, WorkloadPlan};

use crate::approve::annotate_unchanged;
use crate::failure::Failure;
use crate::output::Format;
use crate::plan;

pub async fn rebalance(
    client: &Client,
    namespace: &str,
    name: &str,
    apply: bool,
    format: Format,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    let what = format!("workload {namespace}/{name}");
    let workload = api.get(name).await.map_err(|e| Failure::api(e, &what))?;
    let mut request = WorkloadPlan::request(namespace, name, workload.spec.clone());
    request.spec.rebalance = true;
    let computed = plan::run(client, &request, format, timeout, out).await?;
    if !apply {
        return Ok(());
    }
    // The plan's name says which plan the rebalance follows; a Workload changed since it was
    // read is refused, so what moves is what was planned.
    let token = computed.metadata.name.clone().unwrap_or_default();
    let changed = "changed since it was planned; run the rebalance again";
    annotate_unchanged(&api, &workload, (REBALANCE_ANNOTATION, &token), changed).await?;
    writeln!(
        out,
        "{what}: rebalance requested ({REBALANCE_ANNOTATION}={token}); `qleetctl describe workload {name}` follows it"
    )
    .context("writing the output")?;
    Ok(())
}
