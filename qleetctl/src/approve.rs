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
    let patch = json!({"metadata": {
        "resourceVersion": workload.metadata.resource_version,
        "annotations": {APPROVE_ANNOTATION: approved.to_string()},
    }});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 409 => Failure::Usage(format!(
                "{what} changed since its plan was read; review the new plan and approve again"
            )),
            other => Failure::api(other, &what),
        })?;
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
