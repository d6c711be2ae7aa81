//! Helm's `helm.sh/resource-policy: keep`: an object so annotated is not deleted when its
//! owner removes or prunes it. QleetOS lets go of it instead (drops its ownership label and
//! marks it kept), so the next owner applying the same object from a chart that also keeps it
//! (cert-manager's CRDs, reinstalled after a removal) takes it back instead of conflicting.

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use qleetos_crds::{AppliedObject, Manifest};
use serde_json::{Value, json};

use super::{Deletion, RuntimeClient, describe};
use crate::error::Result;
use crate::render::INSTANCE_UID_LABEL;

/// Helm's annotation asking that an object outlive its release.
pub const RESOURCE_POLICY_ANNOTATION: &str = "helm.sh/resource-policy";
/// Marks an object QleetOS let go of because of [`RESOURCE_POLICY_ANNOTATION`].
pub const KEPT_ANNOTATION: &str = "qleetos.io/kept";

/// Whether the live object asks to be kept.
pub fn is_kept(live: &DynamicObject) -> bool {
    live.annotations()
        .get(RESOURCE_POLICY_ANNOTATION)
        .is_some_and(|policy| policy == "keep")
}

/// Whether `manifest` may take back `live`: an object QleetOS let go of, applied again from
/// a manifest that keeps it too.
pub fn retaken(manifest: &Manifest, live: &DynamicObject) -> bool {
    let wants_keep = manifest
        .0
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(RESOURCE_POLICY_ANNOTATION))
        .and_then(Value::as_str)
        == Some("keep");
    wants_keep && live.annotations().contains_key(KEPT_ANNOTATION)
}

impl RuntimeClient {
    /// Leaves a kept object in the runtime without its ownership label, marked kept.
    pub(super) async fn let_go(
        &self,
        api: &Api<DynamicObject>,
        object: &AppliedObject,
    ) -> Result<Deletion> {
        let patch = json!({"metadata": {
            "labels": {INSTANCE_UID_LABEL: null},
            "annotations": {KEPT_ANNOTATION: "true"},
        }});
        api.patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| self.api_error(object, "letting go of", e))?;
        tracing::info!(object = %describe(object), "kept in the runtime (helm.sh/resource-policy: keep)");
        Ok(Deletion::NotOurs(
            "kept (helm.sh/resource-policy: keep)".into(),
        ))
    }
}
