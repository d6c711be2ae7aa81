//! `images set`: the gateway's image hook from the command line, with the same rules: the
//! containers must exist in the Workload's pod templates (checked by a server-side dry run,
//! nothing changed otherwise), then a merge patch of `spec.images` as the user, then
//! optionally a wait for the rollout.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use qleetos_crds::Workload;
use serde_json::json;

use crate::failure::Failure;
use crate::wait::until_rolled_out;

const FIELD_MANAGER: &str = "qleetctl";

pub async fn set(
    client: &Client,
    namespace: &str,
    name: &str,
    images: Vec<(String, String)>,
    wait: Option<Duration>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let api: Api<Workload> = Api::namespaced(client.clone(), namespace);
    let what = format!("workload {namespace}/{name}");
    let images: BTreeMap<String, String> = images.into_iter().collect();
    let patch = Patch::Merge(json!({"spec": {"images": images}}));
    let mut params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        dry_run: true,
        ..PatchParams::default()
    };
    let preview = api
        .patch(name, &params, &patch)
        .await
        .map_err(|e| Failure::api(e, &what))?;
    let unmatched = preview.spec.unmatched_image_keys(images.keys());
    if !unmatched.is_empty() {
        return Err(Failure::Usage(format!(
            "{what}: {}; nothing was changed",
            preview.spec.describe_unmatched_image_keys(&unmatched)
        )));
    }
    params.dry_run = false;
    let updated = api
        .patch(name, &params, &patch)
        .await
        .map_err(|e| Failure::api(e, &what))?;
    writeln!(
        out,
        "{what}: images set, generation {}",
        updated.metadata.generation.unwrap_or_default()
    )
    .context("writing the output")?;
    match wait {
        Some(timeout) => until_rolled_out(&api, updated, timeout, out).await,
        None => Ok(()),
    }
}
