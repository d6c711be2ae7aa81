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

/// Where a kind keeps the pod template its controller makes Pods from.
fn pod_template<'a>(kind: &str, object: &'a Value) -> Option<&'a Value> {
    let template = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            object.pointer("/spec/template")
        }
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template"),
        _ => None,
    }?;
    template.get("spec").is_some().then_some(template)
}

impl RuntimeClient {
    /// Pod admission (Pod Security, quotas, limit ranges) judges Pods, not the objects
    /// that make them: a Pod from `object`'s template is created with a dry run in its
    /// namespace. `Some(message)` when the runtime would refuse that Pod.
    pub async fn dry_run_pod_of(&self, object: &DynamicObject) -> Result<Option<String>> {
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.as_str())
            .unwrap_or_default();
        let value = serde_json::to_value(object).unwrap_or_default();
        let (Some(template), Some(namespace)) = (
            pod_template(kind, &value),
            object.metadata.namespace.as_deref(),
        ) else {
            return Ok(None);
        };
        let name = object.metadata.name.as_deref().unwrap_or("pod");
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": format!("{}-plan-", crate::names::cut_with_hash(name, 40)),
                "namespace": namespace, "labels": template.pointer("/metadata/labels")},
            "spec": template["spec"],
        });
        let pod: k8s_openapi::api::core::v1::Pod = match serde_json::from_value(pod) {
            Ok(pod) => pod,
            Err(error) => {
                return Ok(Some(format!(
                    "its pod template is not a valid Pod: {error}"
                )));
            }
        };
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.client.clone(), namespace);
        let params = kube::api::PostParams {
            dry_run: true,
            ..Default::default()
        };
        match api.create(&params, &pod).await {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => Ok(Some(
                format!("a Pod of its template would be refused: {}", status.message),
            )),
            Err(error) => Err(self.api_error(
                &qleetos_crds::AppliedObject {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    namespace: Some(namespace.to_owned()),
                    name: format!("{name}-plan-*"),
                    uid: None,
                    applied: None,
                },
                "admitting (dry run)",
                error,
            )),
        }
    }
}
