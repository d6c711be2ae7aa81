//! Server-side dry-run apply: what applying one manifest would make of the live object, as
//! the runtime's API server decides it (RBAC, admission, Pod Security, validation), with
//! nothing stored.

use kube::api::{DynamicObject, Patch, PatchParams};
use qleetos_crds::Manifest;
use serde_json::Value;

use super::{Ownership, Resolved, RuntimeClient, applied_form};
use crate::error::Result;

/// The live object (absent when it would be created) and what the apply would make of it.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub live: Option<DynamicObject>,
    pub result: DynamicObject,
}

impl RuntimeClient {
    /// Applies `manifest` as [`RuntimeClient::apply_owned`] would, with `dryRun=All`: the same
    /// takeover check and field manager; an error is what the real apply would fail with.
    pub async fn dry_run_owned(
        &self,
        resolved: &Resolved,
        manifest: &Manifest,
        ownership: &Ownership<'_>,
    ) -> Result<DryRun> {
        let namespace = resolved.object.namespace.as_deref();
        let api = self.api_with(&resolved.resource, namespace);
        let name = &resolved.object.name;
        let live = api
            .get_opt(name)
            .await
            .map_err(|e| self.api_error(&resolved.object, "reading", e))?;
        if let Some(live) = &live {
            self.check_takeover(resolved, manifest, ownership, live)?;
        }
        let mut params = PatchParams::apply(ownership.field_manager).validation_strict();
        params.force = live.is_some();
        params.dry_run = true;
        let object = Value::Object(applied_form(manifest, namespace));
        let result = api
            .patch(name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| match e {
                kube::Error::Api(status) if status.code == 409 => {
                    self.conflict(&resolved.object, &status.message)
                }
                other => self.api_error(&resolved.object, "applying (dry run)", other),
            })?;
        Ok(DryRun { live, result })
    }
}
