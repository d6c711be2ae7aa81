//! `POST /v1/namespaces/{ns}/workloads/{name}/approve`: approves the plan waiting in a
//! Workload's status (`spec.approval: Required`) by annotating its generation, as the caller
//! (who needs `get` and `patch` on the Workload), with the resourceVersion read as
//! precondition: a Workload changed since is a 409, a stale generation a 409 saying which one
//! to review.

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use kube::api::{Patch, PatchParams};
use qleetos_crds::Workload;
use qleetos_crds::notification::QleetKind;
use qleetos_crds::plan::{APPROVE_ANNOTATION, approval_target};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::kinds::GatewayKind as _;
use crate::openapi::{JSON, OperationExt as _, json, schema};
use crate::routes::resources::{ObjectPath, action_request, body_bytes, read_workload};
use crate::state::AppState;

/// Which plan to approve.
#[derive(Deserialize, Serialize, Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApproveRequest {
    /// The generation whose plan is approved; absent: the pending plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// The approval recorded.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproveResponse {
    pub namespace: String,
    pub name: String,
    /// The generation approved: QleetOS applies it next.
    pub generation: i64,
    /// The approved plan's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        &format!("{}/{{name}}/approve", Workload::COLLECTION),
        post_with(approve, |op| {
            op.id("approveWorkloadPlan")
                .summary("Approve the plan waiting in a Workload's status")
                .body(JSON, schema::<ApproveRequest>())
                .respond(200, json::<ApproveResponse>("Approved"))
        }),
    )
}

fn parse_request(body: &[u8]) -> Result<ApproveRequest, ApiError> {
    action_request(body, "{\"generation\": <generation>}")
}

async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    path: ObjectPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ApproveResponse>, ApiError> {
    let request = parse_request(&body_bytes(body)?)?;
    let workload = read_workload(&caller, &path).await?;
    let generation =
        approval_target(&workload, request.generation).map_err(|message| ApiError::Conflict {
            reason: "PlanNotPending".into(),
            message,
            retry_resource_version: workload.metadata.resource_version.clone(),
        })?;
    let patch = json!({"metadata": {
        "resourceVersion": workload.metadata.resource_version,
        "annotations": {APPROVE_ANNOTATION: generation.to_string()},
    }});
    let request = path.request::<Workload>().patch(
        path.name(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )?;
    let updated = caller.send(request).await?;
    state
        .notifier()
        .publish(QleetKind::Workload, &updated, state.metrics());
    Ok(Json(ApproveResponse {
        namespace: path.namespace.clone().unwrap_or_default(),
        name: path.name().to_owned(),
        generation,
        summary: workload
            .status
            .and_then(|s| s.approval)
            .and_then(|a| a.summary),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_approve_requests() {
        assert_eq!(
            parse_request(b"").expect("empty"),
            ApproveRequest::default()
        );
        let request = parse_request(br#"{"generation": 3}"#).expect("valid");
        assert_eq!(request.generation, Some(3));
        let error = parse_request(br#"{"gen": 3}"#).expect_err("unknown field");
        assert_eq!(error.status().as_u16(), 422);
    }
}
