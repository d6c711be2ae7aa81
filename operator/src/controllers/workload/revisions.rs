//! Revisions of a Workload: the template its instances are rendered from (manifests, chart,
//! images, expose, needs). The latest is the spec itself; a template is kept as a
//! ControllerRevision in the Workload's namespace when it leaves the spec, if it reached a
//! runtime (an instance runs it), so creating a Workload costs no extra write and each change
//! one; with a rollout, as soon as it is the spec. A staged rollout installs the stable
//! revision from its record; `qleetctl rollback` writes a record back into the spec.

use std::collections::BTreeMap;

use kube::{Resource, ResourceExt};
use qleetos_crds::{Workload, WorkloadInstance, WorkloadTemplate};
use serde_json::Value;

use super::WORKLOAD_LABEL;
use crate::context::Context;
use crate::engine::revisions::{Revision, Revisioned, hash_of};
use crate::error::{Error, Result};

pub fn value_of(template: &WorkloadTemplate) -> Value {
    serde_json::to_value(template).unwrap_or_default()
}

/// The template `instance` was rendered from.
pub fn template_of(instance: &WorkloadInstance) -> WorkloadTemplate {
    let spec = &instance.spec;
    WorkloadTemplate {
        manifests: spec.manifests.clone(),
        chart: spec.chart.clone(),
        images: spec.images.clone(),
        expose: spec.expose.clone(),
        needs: spec.needs.clone(),
    }
}

/// Where the Workload's revisions are kept.
pub fn revisioned<'a>(workload: &'a Workload, ctx: &Context) -> Revisioned<'a> {
    let name = workload.meta().name.as_deref().unwrap_or_default();
    let namespace = workload.namespace().unwrap_or_default();
    Revisioned {
        api: kube::Api::namespaced(ctx.client.clone(), &namespace),
        name,
        uid: workload.meta().uid.as_deref().unwrap_or_default(),
        owner: workload.controller_owner_ref(&()).unwrap_or_default(),
        label: (WORKLOAD_LABEL, crate::names::label_value(name)),
        history_limit: workload.spec.revision_history_limit as usize,
    }
}

/// The revision of the spec's template. Without a rollout or required approval, a template
/// is kept when it leaves the spec, if some instance runs it; with one, when it arrives (a
/// rollout may return to it after every instance left it, an approval holds placements on it).
pub async fn record(
    workload: &Workload,
    instances: &[WorkloadInstance],
    approval_required: bool,
    ctx: &Context,
) -> Result<Revision> {
    let template = value_of(&workload.spec.template());
    let hash = hash_of(&template);
    let status = workload.status.clone().unwrap_or_default();
    let staged = workload.spec.rollout.is_some() || approval_required;
    let known = status.revision.zip(status.revision_hash);
    if let Some((latest, latest_hash)) = &known
        && *latest_hash == hash
    {
        return Ok(Revision {
            number: *latest,
            hash,
            beyond_limit: Vec::new(),
        });
    }
    let revisioned = revisioned(workload, ctx);
    let Some((latest, latest_hash)) = known else {
        if staged {
            revisioned.keep(template, 1).await?;
        }
        return Ok(Revision {
            number: 1,
            hash,
            beyond_limit: Vec::new(),
        });
    };
    let leaving = instances
        .iter()
        .map(|i| value_of(&template_of(i)))
        .find(|t| hash_of(t) == latest_hash);
    if let Some(leaving) = leaving.filter(|_| !staged && workload.spec.revision_history_limit > 0) {
        revisioned.keep(leaving, latest).await?;
    }
    let revision = revisioned.number_for(&template, latest).await?;
    if staged {
        revisioned.keep(template, revision.number).await?;
    }
    Ok(revision)
}

/// The templates of revisions, each read at most once per pass.
#[derive(Debug)]
pub struct Templates<'a> {
    workload: &'a Workload,
    latest: i64,
    read: BTreeMap<i64, WorkloadTemplate>,
}

impl<'a> Templates<'a> {
    pub fn new(workload: &'a Workload, latest: i64) -> Self {
        Self {
            workload,
            latest,
            read: BTreeMap::new(),
        }
    }

    /// Revision `number`'s template: the spec's for the latest, else its record.
    pub async fn get(&mut self, number: i64, ctx: &Context) -> Result<WorkloadTemplate> {
        if number == self.latest {
            return Ok(self.workload.spec.template());
        }
        if let Some(found) = self.read.get(&number) {
            return Ok(found.clone());
        }
        let missing = || Error::RevisionNotFound {
            kind: "Workload",
            name: self.workload.name_any(),
            revision: number,
        };
        let held = revisioned(self.workload, ctx)
            .template(number)
            .await?
            .ok_or_else(missing)?;
        let template: WorkloadTemplate = serde_json::from_value(held).map_err(|_| missing())?;
        self.read.insert(number, template.clone());
        Ok(template)
    }
}
