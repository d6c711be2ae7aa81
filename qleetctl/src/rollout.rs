//! Staged rollouts and revisions of a Workload or a SupportServiceProfile: `rollout status`
//! and `rollout resume` read and nudge what the operator decides (status, and the annotation
//! it honours); `history` lists the revisions kept (ControllerRevisions); `rollback` (and
//! `rollout undo`) writes an earlier revision's template back into the spec with an
//! optimistic replace, which the operator then rolls out (returning to the stable revision
//! reaches every placement at once).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use qleetos_crds::staged::{
    OWNER_UID_LABEL, PAUSE_ANNOTATION, RESUME_ANNOTATION, RolloutPhase, StagedRolloutStatus,
    revision_name, rollback_target,
};
use qleetos_crds::{SupportServiceProfile, SupportServiceProfileSpec, Workload, WorkloadTemplate};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::output::table;

const FIELD_MANAGER: &str = "qleetctl";

/// What a rollout command acts on.
#[derive(Debug, Clone)]
pub enum Target {
    Profile(String),
    Workload { namespace: String, name: String },
}

impl Target {
    fn what(&self) -> String {
        match self {
            Target::Profile(name) => format!("SupportServiceProfile {name}"),
            Target::Workload { namespace, name } => format!("workload {namespace}/{name}"),
        }
    }

    fn name(&self) -> &str {
        match self {
            Target::Profile(name) | Target::Workload { name, .. } => name,
        }
    }
}

/// What the commands read of either kind.
struct Observed {
    uid: Option<String>,
    revision: Option<i64>,
    rollout: Option<StagedRolloutStatus>,
    /// RUNTIME, WAVE, REVISION, INSTALLED or READY, STATE
    rows: Vec<Vec<String>>,
    /// What the spec holds, as a revision would (for `history`).
    template: Value,
}

async fn observe(client: &Client, target: &Target) -> Result<Observed, Failure> {
    let fail = |e| Failure::api(e, &target.what());
    match target {
        Target::Profile(name) => {
            let found = Api::<SupportServiceProfile>::all(client.clone())
                .get(name)
                .await
                .map_err(fail)?;
            let status = found.status.clone().unwrap_or_default();
            let rows = status
                .runtimes
                .iter()
                .map(|r| {
                    let wave = match (r.pinned, r.wave) {
                        (true, _) => "pinned".to_owned(),
                        (false, wave) => shown(wave),
                    };
                    vec![
                        r.runtime.clone(),
                        wave,
                        r.revision.to_string(),
                        shown(r.installed_revision),
                        r.state.clone(),
                    ]
                })
                .collect();
            Ok(Observed {
                uid: found.uid(),
                revision: status.revision,
                rollout: status.rollout,
                rows,
                template: serde_json::to_value(&found.spec).unwrap_or_default(),
            })
        }
        Target::Workload { namespace, name } => {
            let found = Api::<Workload>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(fail)?;
            let status = found.status.clone().unwrap_or_default();
            let rows = status
                .placements
                .iter()
                .map(|p| {
                    vec![
                        p.runtime.clone(),
                        shown(p.wave),
                        shown(p.revision.or(status.revision)),
                        p.ready.to_string(),
                        p.reason.clone(),
                    ]
                })
                .collect();
            Ok(Observed {
                uid: found.uid(),
                revision: status.revision,
                rollout: status.rollout,
                rows,
                template: serde_json::to_value(found.spec.template()).unwrap_or_default(),
            })
        }
    }
}

fn shown<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn written(result: std::io::Result<()>) -> Result<(), Failure> {
    result.context("writing the output").map_err(Failure::from)
}

/// The rollout's phase and wave, then one row per runtime.
pub async fn status(client: &Client, target: &Target, out: &mut dyn Write) -> Result<(), Failure> {
    let observed = observe(client, target).await?;
    let Some(rollout) = observed.rollout else {
        return written(writeln!(
            out,
            "{}: revision {}; no staged rollout (spec.rollout absent): every runtime gets a change at once",
            target.what(),
            shown(observed.revision)
        ));
    };
    let wave = if rollout.phase == RolloutPhase::Complete {
        String::new()
    } else {
        format!(" at wave {} of {}", rollout.wave, rollout.waves)
    };
    written(writeln!(
        out,
        "{}: revision {} {}{wave} (stable revision {})\n  {}",
        target.what(),
        rollout.revision,
        rollout.phase,
        rollout.stable_revision,
        rollout.message
    ))?;
    let last = match target {
        Target::Profile(_) => ["INSTALLED", "STATE"],
        Target::Workload { .. } => ["READY", "REASON"],
    };
    let header = ["RUNTIME", "WAVE", "REVISION", last[0], last[1]];
    table(out, &header, &observed.rows)
}

/// Continues a paused rollout (removes the pause), or tries the halted wave again.
pub async fn resume(client: &Client, target: &Target, out: &mut dyn Write) -> Result<(), Failure> {
    let observed = observe(client, target).await?;
    let phase = observed.rollout.map(|r| r.phase);
    let annotations = match phase {
        Some(RolloutPhase::Paused) => json!({PAUSE_ANNOTATION: null}),
        Some(RolloutPhase::Halted | RolloutPhase::RolledBack) => {
            let token = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis().to_string())
                .unwrap_or_default();
            json!({RESUME_ANNOTATION: token, PAUSE_ANNOTATION: null})
        }
        _ => {
            return Err(Failure::Usage(format!(
                "{}: its rollout is neither paused nor halted; nothing to resume",
                target.what()
            )));
        }
    };
    annotate(client, target, annotations).await?;
    written(writeln!(out, "{}: rollout resumed", target.what()))
}

/// Pauses the rollout: the waves reached keep the new revision, no further wave starts.
pub async fn pause(client: &Client, target: &Target, out: &mut dyn Write) -> Result<(), Failure> {
    annotate(client, target, json!({PAUSE_ANNOTATION: "true"})).await?;
    written(writeln!(
        out,
        "{}: rollout paused (no further wave starts until `qleetctl rollout resume`)",
        target.what()
    ))
}

/// Merges `annotations` (a null removes one) into the target's metadata.
async fn annotate(
    client: &Client,
    target: &Target,
    annotations: serde_json::Value,
) -> Result<(), Failure> {
    let patch = Patch::Merge(json!({"metadata": {"annotations": annotations}}));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let fail = |e| Failure::api(e, &target.what());
    match target {
        Target::Profile(name) => Api::<SupportServiceProfile>::all(client.clone())
            .patch(name, &params, &patch)
            .await
            .map(drop),
        Target::Workload { namespace, name } => {
            Api::<Workload>::namespaced(client.clone(), namespace)
                .patch(name, &params, &patch)
                .await
                .map(drop)
        }
    }
    .map_err(fail)
}

/// Where `target`'s revisions are kept.
fn revisions(client: &Client, target: &Target, system_namespace: &str) -> Api<ControllerRevision> {
    match target {
        Target::Profile(_) => Api::namespaced(client.clone(), system_namespace),
        Target::Workload { namespace, .. } => Api::namespaced(client.clone(), namespace),
    }
}

/// The revisions kept, oldest first, and the latest (in the spec).
pub async fn history(
    client: &Client,
    target: &Target,
    system_namespace: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let observed = observe(client, target).await?;
    let uid = observed.uid.unwrap_or_default();
    let mut kept = revisions(client, target, system_namespace)
        .list(&ListParams::default().labels(&format!("{OWNER_UID_LABEL}={uid}")))
        .await
        .map_err(|e| Failure::api(e, &format!("revisions of {}", target.what())))?
        .items;
    kept.sort_by_key(|r| r.revision);
    let mut rows: Vec<Vec<String>> = kept
        .iter()
        .filter(|r| Some(r.revision) != observed.revision)
        .map(|r| {
            let data = r.data.as_ref().map(|d| d.0.clone()).unwrap_or_default();
            vec![r.revision.to_string(), summary(&data), "kept".to_owned()]
        })
        .collect();
    if let Some(latest) = observed.revision {
        rows.push(vec![
            latest.to_string(),
            summary(&observed.template),
            "latest (the spec)".to_owned(),
        ]);
    }
    table(out, &["REVISION", "IMAGES / CHART", "WHERE"], &rows)
}

/// What tells revisions apart at a glance: the images set, or the chart's version.
fn summary(template: &Value) -> String {
    let images: Vec<String> = template["images"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let chart = template["chart"]["version"]
        .as_str()
        .map(|v| format!("chart {v}"));
    images
        .into_iter()
        .chain(chart)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes revision `to` (default: the stable one while a rollout is under way, else the one
/// before the latest) back into the spec, keeping placement and rollout.
pub async fn rollback(
    client: &Client,
    target: &Target,
    to: Option<i64>,
    system_namespace: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let observed = observe(client, target).await?;
    let number =
        rollback_target(to, observed.revision, observed.rollout.as_ref()).ok_or_else(|| {
            Failure::Usage(format!(
                "{}: there is no earlier revision; give --to-revision",
                target.what()
            ))
        })?;
    let record_name = revision_name(target.name(), number);
    let what = format!("revision {number} of {}", target.what());
    let record = revisions(client, target, system_namespace)
        .get(&record_name)
        .await
        .map_err(|e| Failure::api(e, &what))?;
    if record.labels().get(OWNER_UID_LABEL) != observed.uid.as_ref() {
        return Err(Failure::NotFound(format!("{what} not found")));
    }
    let held = record.data.map(|d| d.0).unwrap_or_default();
    write_back(client, target, held).await?;
    written(writeln!(
        out,
        "{}: rolled back to revision {number}",
        target.what()
    ))
}

/// Replaces the spec with the revision's, retrying from a fresh read when the object changed
/// between the read and the write (the operator writes its status meanwhile): the
/// optimistic replace never overwrites a change it did not see.
async fn write_back(client: &Client, target: &Target, held: Value) -> Result<(), Failure> {
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        match replace_once(client, target, held.clone()).await {
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => continue,
            Err(error) => return Err(Failure::api(error, &target.what())),
            Ok(()) => return Ok(()),
        }
    }
    Ok(())
}

async fn replace_once(client: &Client, target: &Target, held: Value) -> kube::Result<()> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match target {
        Target::Profile(name) => {
            let api = Api::<SupportServiceProfile>::all(client.clone());
            let mut found = api.get(name).await?;
            let spec: SupportServiceProfileSpec =
                serde_json::from_value(held).map_err(kube::Error::SerdeError)?;
            found.spec = SupportServiceProfileSpec {
                rollout: found.spec.rollout.clone(),
                ..spec
            };
            api.replace(name, &params, &found).await?;
        }
        Target::Workload { namespace, name } => {
            let api = Api::<Workload>::namespaced(client.clone(), namespace);
            let mut found = api.get(name).await?;
            let template: WorkloadTemplate =
                serde_json::from_value(held).map_err(kube::Error::SerdeError)?;
            found.spec = found.spec.with_template(template);
            api.replace(name, &params, &found).await?;
        }
    }
    Ok(())
}
