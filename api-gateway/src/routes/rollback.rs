//! `POST /v1/namespaces/{ns}/workloads/{name}/rollback`: writes an earlier revision of a
//! Workload (its ControllerRevision) back into the spec, as the caller, who therefore needs
//! `get` on the namespace's controllerrevisions and `update` on the Workload. The operator
//! then rolls the restored template out like any change.

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{GetParams, PostParams};
use kube::core::Request;
use kube::{Resource, ResourceExt};
use qleetos_crds::notification::QleetKind;
use qleetos_crds::staged::{OWNER_UID_LABEL, revision_name, rollback_target};
use qleetos_crds::{Workload, WorkloadTemplate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::kinds::GatewayKind as _;
use crate::openapi::{JSON, OperationExt as _, json, schema};
use crate::routes::resources::{ObjectPath, action_request, body_bytes, decode, read_workload};
use crate::state::AppState;

/// Which revision to return to.
#[derive(Deserialize, Serialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// The revision; absent: the stable one while a rollout is under way, else the one before
    /// the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<i64>,
}

/// The result of a rollback.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackResponse {
    pub namespace: String,
    pub name: String,
    /// The revision whose template is now the spec.
    pub revision: i64,
    /// The Workload's generation after the rollback.
    pub generation: i64,
}

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        &format!("{}/{{name}}/rollback", Workload::COLLECTION),
        post_with(rollback, |op| {
            op.id("rollbackWorkload")
                .summary("Write an earlier revision of a Workload back into its spec")
                .body(JSON, schema::<RollbackRequest>())
                .respond(200, json::<RollbackResponse>("Rolled back"))
        }),
    )
}

fn parse_request(body: &[u8]) -> Result<RollbackRequest, ApiError> {
    action_request(body, "{\"toRevision\": <revision>}")
}

async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    path: ObjectPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RollbackResponse>, ApiError> {
    let request = parse_request(&body_bytes(body)?)?;
    let mut workload = read_workload(&caller, &path).await?;
    let status = workload.status.clone().unwrap_or_default();
    let number = rollback_target(
        request.to_revision,
        status.revision,
        status.rollout.as_ref(),
    )
    .ok_or_else(|| ApiError::Invalid("there is no earlier revision; give toRevision".into()))?;
    let template = template(&caller, &path, &workload, number).await?;
    workload.spec = workload.spec.with_template(template);
    workload.status = None;
    let body = serde_json::to_vec(&workload)
        .map_err(|e| ApiError::BadGateway(format!("the Workload cannot be encoded: {e}")))?;
    let replace = path
        .request::<Workload>()
        .replace(path.name(), &PostParams::default(), body)?;
    let updated = caller.send(replace).await?;
    state
        .notifier()
        .publish(QleetKind::Workload, &updated, state.metrics());
    let updated: Workload = decode(updated, "Workload")?;
    Ok(Json(RollbackResponse {
        namespace: path.namespace.clone().unwrap_or_default(),
        name: path.name().to_owned(),
        revision: number,
        generation: updated.metadata.generation.unwrap_or_default(),
    }))
}

/// The template revision `number` of `workload` holds, read as the caller; 404 when that
/// revision is not (or no longer) kept.
async fn template(
    caller: &Caller,
    path: &ObjectPath,
    workload: &Workload,
    number: i64,
) -> Result<WorkloadTemplate, ApiError> {
    let missing = || {
        ApiError::NotFound(format!(
            "revision {number} of workload {} is not kept",
            path.name()
        ))
    };
    let url = ControllerRevision::url_path(&(), path.namespace.as_deref());
    let get = Request::new(url).get(&revision_name(path.name(), number), &GetParams::default())?;
    let record: ControllerRevision = match caller.send(get).await {
        Ok(found) => decode(found, "ControllerRevision")?,
        Err(ApiError::NotFound(_)) => return Err(missing()),
        Err(error) => return Err(error),
    };
    if record.labels().get(OWNER_UID_LABEL) != workload.uid().as_ref() {
        return Err(missing());
    }
    serde_json::from_value(record.data.map(|d| d.0).unwrap_or_default())
        .map_err(|e| ApiError::BadGateway(format!("revision {number} cannot be read back: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rollback_requests() {
        assert_eq!(
            parse_request(b"").expect("empty"),
            RollbackRequest::default()
        );
        let to = parse_request(br#"{"toRevision": 3}"#).expect("valid");
        assert_eq!(to.to_revision, Some(3));
        let error = parse_request(br#"{"revision": 3}"#).expect_err("unknown field");
        assert_eq!(error.status().as_u16(), 422);
    }
}
