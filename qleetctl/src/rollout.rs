//! `rollout status|resume|undo`: a SupportServiceProfile's staged rollout, read from its
//! status; resumed through the annotation the operator honours; undone by writing an earlier
//! revision's spec back (from its ControllerRevision), which the operator then installs in
//! every runtime at once when it is the stable revision.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use qleetos_crds::staged::{OWNER_UID_LABEL, RESUME_ANNOTATION, RolloutPhase};
use qleetos_crds::{SupportServiceProfile, SupportServiceProfileSpec};
use serde_json::json;

use crate::failure::Failure;
use crate::output::table;

const FIELD_MANAGER: &str = "qleetctl";

fn what(name: &str) -> String {
    format!("SupportServiceProfile {name}")
}

async fn profile(client: &Client, name: &str) -> Result<SupportServiceProfile, Failure> {
    Api::all(client.clone())
        .get(name)
        .await
        .map_err(|e| Failure::api(e, &what(name)))
}

/// The rollout's phase and wave, then one row per runtime.
pub async fn status(client: &Client, name: &str, out: &mut dyn Write) -> Result<(), Failure> {
    let found = profile(client, name).await?;
    let status = found.status.unwrap_or_default();
    let latest = status
        .revision
        .map_or_else(|| "not recorded yet".to_owned(), |r| r.to_string());
    let Some(rollout) = status.rollout else {
        writeln!(
            out,
            "{}: revision {latest}; no staged rollout (spec.rollout absent): every runtime gets a change at once",
            what(name)
        )
        .context("writing the output")?;
        return Ok(());
    };
    let wave = if rollout.phase == RolloutPhase::Complete {
        String::new()
    } else {
        format!(" at wave {} of {}", rollout.wave, rollout.waves)
    };
    writeln!(
        out,
        "{}: revision {} {}{wave} (stable revision {})\n  {}",
        what(name),
        rollout.revision,
        rollout.phase,
        rollout.stable_revision,
        rollout.message
    )
    .context("writing the output")?;
    let rows: Vec<Vec<String>> = status
        .runtimes
        .iter()
        .map(|r| {
            let wave = match (r.pinned, r.wave) {
                (true, _) => "pinned".to_owned(),
                (false, Some(wave)) => wave.to_string(),
                (false, None) => "-".to_owned(),
            };
            let installed = r
                .installed_revision
                .map_or_else(|| "-".to_owned(), |i| i.to_string());
            vec![
                r.runtime.clone(),
                wave,
                r.revision.to_string(),
                installed,
                r.state.clone(),
            ]
        })
        .collect();
    table(
        out,
        &["RUNTIME", "WAVE", "REVISION", "INSTALLED", "STATE"],
        &rows,
    )
}

/// Tries the halted wave again.
pub async fn resume(client: &Client, name: &str, out: &mut dyn Write) -> Result<(), Failure> {
    let found = profile(client, name).await?;
    let halted = found
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .is_some_and(|r| r.phase == RolloutPhase::Halted);
    if !halted {
        return Err(Failure::Usage(format!(
            "{}: its rollout is not halted; nothing to resume",
            what(name)
        )));
    }
    let token = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().to_string())
        .unwrap_or_default();
    let patch = json!({"metadata": {"annotations": {RESUME_ANNOTATION: token}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    Api::<SupportServiceProfile>::all(client.clone())
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| Failure::api(e, &what(name)))?;
    writeln!(out, "{}: rollout resumed", what(name)).context("writing the output")?;
    Ok(())
}

/// Writes revision `to` (default: the stable one while a rollout is under way, else the one
/// before the latest) back into the profile's spec, keeping its `rollout`.
pub async fn undo(
    client: &Client,
    name: &str,
    to: Option<i64>,
    system_namespace: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut found = profile(client, name).await?;
    let status = found.status.clone().unwrap_or_default();
    let target = to
        .or_else(|| {
            status
                .rollout
                .as_ref()
                .filter(|r| r.phase != RolloutPhase::Complete)
                .map(|r| r.stable_revision)
        })
        .or_else(|| status.revision.map(|r| r - 1))
        .filter(|r| *r >= 1)
        .ok_or_else(|| {
            Failure::Usage(format!(
                "{}: there is no earlier revision; give --to-revision",
                what(name)
            ))
        })?;
    let record_name = format!("{}.r{target}", name.chars().take(230).collect::<String>());
    let record: ControllerRevision = Api::namespaced(client.clone(), system_namespace)
        .get(&record_name)
        .await
        .map_err(|e| Failure::api(e, &format!("revision {target} of {}", what(name))))?;
    if record.labels().get(OWNER_UID_LABEL) != found.uid().as_ref() {
        return Err(Failure::NotFound(format!(
            "revision {target} of {} not found",
            what(name)
        )));
    }
    let held: SupportServiceProfileSpec =
        serde_json::from_value(record.data.map(|d| d.0).unwrap_or_default())
            .context("reading the revision back")?;
    found.spec = SupportServiceProfileSpec {
        rollout: found.spec.rollout.clone(),
        ..held
    };
    found.status = None;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    Api::<SupportServiceProfile>::all(client.clone())
        .replace(name, &params, &found)
        .await
        .map_err(|e| Failure::api(e, &what(name)))?;
    writeln!(out, "{}: rolled back to revision {target}", what(name))
        .context("writing the output")?;
    Ok(())
}
