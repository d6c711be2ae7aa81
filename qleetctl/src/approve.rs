//! `approve NAME`: approves the plan waiting in a Workload's status (`spec.approval:
//! Required`), by annotating the generation it belongs to, with the resourceVersion read as
//! precondition: a Workload changed in between is refused, not approved blindly.

use std::io::Write;

use anyhow::Context as _;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use qleetos_crds::Workload;
use qleetos_crds::plan::{APPROVE_ANNOTATION, approval_target};
use serde_json::json;

use crate::failure::Failure;

pub async fn approve(
    client: &Client,
    namespace: &str,
    name: &str,
    generation: Option<i64>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    let what = format!("workload {namespace}/{name}");
    let workload = api.get(name).await.map_err(|e| Failure::api(e, &what))?;
    let approved = approval_target(&workload, generation)
        .map_err(|e| Failure::Usage(format!("{what}: {e}")))?;
    let changed = "changed since its plan was read; review the new plan and approve again";
    let value = approved.to_string();
    annotate_unchanged(&api, &workload, (APPROVE_ANNOTATION, &value), changed).await?;
    let summary = workload
        .status
        .and_then(|s| s.approval)
        .and_then(|a| a.summary)
        .unwrap_or_default();
    writeln!(
        out,
        "{what}: approved the plan of generation {approved} ({summary})"
    )
    .context("writing the output")?;
    Ok(())
}

/// Sets annotation `key=value` on `workload`, with the resourceVersion it was read at as
/// precondition: a Workload changed in between is refused with `{what} {changed}`.
pub(crate) async fn annotate_unchanged(
    api: &Api<Workload>,
    workload: &Workload,
    (key, value): (&str, &str),
    changed: &str,
) -> Result<(), Failure> {
    let name = workload.metadata.name.clone().unwrap_or_default();
    let namespace = workload.metadata.namespace.clone().unwrap_or_default();
    let what = format!("workload {namespace}/{name}");
    let patch = json!({"metadata": {
        "resourceVersion": workload.metadata.resource_version,
        "annotations": {key: value},
    }});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 409 => {
                Failure::Usage(format!("{what} {changed}"))
            }
            other => Failure::api(other, &what),
        })?;
    Ok(())
}
