//! The CI hook: `POST /v1/namespaces/{ns}/workloads/{name}/images` sets container images of a
//! Workload (a merge patch of `spec.images` as the caller) and returns the new generation.
//! With `?wait=<duration>` it answers once every placement runs the new generation Ready
//! (200), or when the wait ends (504), with a per-placement report either way.

use std::collections::BTreeMap;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kube::api::{GetParams, Patch, PatchParams};
use qleetos_crds::Workload;
use qleetos_crds::notification::QleetKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::kinds::GatewayKind as _;
use crate::openapi::{JSON, OperationExt as _, json, schema};
use crate::query::{WaitQuery, wait_duration};
use crate::rollout::{RolloutReport, evaluate};
use crate::routes::resources::{
    ObjectPath, body_bytes, json_object, patch_params, with_retry_version,
};
use crate::state::AppState;

/// The images to set: container name → image.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesRequest {
    /// Container name → image, merged into the Workload's `spec.images`.
    #[schemars(extend("minProperties" = 1))]
    pub images: BTreeMap<String, String>,
}

/// The result of an image update.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagesResponse {
    pub namespace: String,
    pub name: String,
    /// The Workload's generation after the update; the rollout is of this generation.
    pub generation: i64,
    pub resource_version: String,
    /// The Workload's `spec.images` after the update.
    pub images: BTreeMap<String, String>,
    /// With `?wait=`: the rollout state when the call returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutReport>,
}

/// `POST .../workloads/{name}/images`, bounded by its own `?wait=` (no request time limit).
pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        &format!("{}/{{name}}/images", Workload::COLLECTION),
        post_with(set_images, |op| {
            op.id("setWorkloadImages")
                .summary("Set container images of a Workload (the CI hook)")
                .body(JSON, schema::<ImagesRequest>())
                .respond(
                    200,
                    json::<ImagesResponse>(
                        "Images set (and, with wait, rolled out everywhere)",
                    ),
                )
                .respond(
                    504,
                    json::<ImagesResponse>(
                        "The wait ended before every placement was Ready; `rollout` says which are not",
                    ),
                )
        }),
    )
}

fn parse_request(body: &[u8]) -> Result<ImagesRequest, ApiError> {
    let object = Value::Object(json_object(body)?);
    let request: ImagesRequest = serde_json::from_value(object).map_err(|e| {
        ApiError::Invalid(format!(
            "expected {{\"images\": {{\"<container>\": \"<image>\"}}}}: {e}"
        ))
    })?;
    if request.images.is_empty() {
        return Err(ApiError::Invalid(
            "images must name at least one container".into(),
        ));
    }
    if let Some((container, _)) = request
        .images
        .iter()
        .find(|(c, i)| c.trim().is_empty() || i.trim().is_empty())
    {
        return Err(ApiError::Invalid(format!(
            "container names and images must not be empty (container {container:?})"
        )));
    }
    Ok(request)
}

async fn set_images(
    State(state): State<AppState>,
    caller: Caller,
    path: ObjectPath,
    query: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let query = query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("InvalidQuery", e.body_text()))?;
    let wait = wait_duration(&query, state.settings().max_wait)?;
    let request = parse_request(&body_bytes(body)?)?;
    let patch = json!({"spec": {"images": request.images}});
    let preview = send_patch(&caller, &path, &patch, dry_run_params()).await?;
    reject_unknown_containers(&decode(preview)?, &request)?;
    let updated = send_patch(&caller, &path, &patch, patch_params()).await?;
    state
        .notifier()
        .publish(QleetKind::Workload, &updated, state.metrics());
    let workload = decode(updated)?;
    let mut response = ImagesResponse {
        namespace: path.namespace.clone().unwrap_or_default(),
        name: path.name().to_owned(),
        generation: workload.metadata.generation.unwrap_or_default(),
        resource_version: workload
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default(),
        images: workload.spec.images.clone(),
        rollout: None,
    };
    let Some(wait) = wait else {
        return Ok(Json(response).into_response());
    };
    let report =
        wait_for_rollout(&caller, &path, workload, wait, state.settings().wait_poll).await?;
    let code = if report.rolled_out {
        StatusCode::OK
    } else {
        StatusCode::GATEWAY_TIMEOUT
    };
    response.rollout = Some(report);
    Ok((code, Json(response)).into_response())
}

/// The merge patch of `spec.images` as the caller (only `patch` on the Workload is needed).
async fn send_patch(
    caller: &Caller,
    path: &ObjectPath,
    patch: &Value,
    params: PatchParams,
) -> Result<Value, ApiError> {
    let request = path
        .request::<Workload>()
        .patch(path.name(), &params, &Patch::Merge(patch))?;
    match caller.send(request).await {
        Ok(object) => Ok(object),
        Err(e) => Err(with_retry_version::<Workload>(caller, path, path.name(), e).await),
    }
}

fn dry_run_params() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..patch_params()
    }
}

/// 422 when an image key names no container of the Workload's pod templates: the override
/// would change nothing, so the caller's rollout would never happen.
fn reject_unknown_containers(workload: &Workload, request: &ImagesRequest) -> Result<(), ApiError> {
    let spec = &workload.spec;
    let unmatched = spec.unmatched_image_keys(request.images.keys());
    if unmatched.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid(format!(
        "{}; nothing was changed",
        spec.describe_unmatched_image_keys(&unmatched)
    )))
}

fn decode(object: Value) -> Result<Workload, ApiError> {
    crate::routes::resources::decode(object, "Workload")
}

/// Polls the Workload (as the caller) until it has rolled out its generation or `wait` ends.
/// The generation is the one the update produced: a later writer's generation also counts,
/// since it includes the images set here unless it replaced them.
async fn wait_for_rollout(
    caller: &Caller,
    path: &ObjectPath,
    updated: Workload,
    wait: Duration,
    poll: Duration,
) -> Result<RolloutReport, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut report = evaluate(&updated);
    loop {
        if report.rolled_out || tokio::time::Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(poll.min(deadline - tokio::time::Instant::now())).await;
        let request = path
            .request::<Workload>()
            .get(path.name(), &GetParams::default())?;
        match caller.send(request).await {
            Ok(object) => report = evaluate(&decode(object)?),
            Err(error @ (ApiError::NotFound(_) | ApiError::Forbidden(_))) => return Err(error),
            Err(error) => {
                tracing::debug!(%error, "reading the Workload while waiting failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_keys_must_name_a_container() {
        let workload: Workload = serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": "web", "namespace": "ci"},
            "spec": {
                "manifests": [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                    "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}],
                "placement": {"regions": ["eu"]}
            }
        }))
        .expect("workload");
        let known = parse_request(br#"{"images": {"web": "nginx:1.28"}}"#).expect("valid");
        assert!(reject_unknown_containers(&workload, &known).is_ok());
        let unknown =
            parse_request(br#"{"images": {"web": "nginx:1.28", "wbe": "x:1"}}"#).expect("valid");
        let error = reject_unknown_containers(&workload, &unknown).expect_err("unknown key");
        assert_eq!(error.status().as_u16(), 422);
        let message = error.body().message;
        assert!(message.contains("pod template: wbe;"), "{message}");
        assert!(
            message.contains("containers are: web; nothing was changed"),
            "{message}"
        );
    }

    #[test]
    fn parses_image_requests() {
        let request = parse_request(br#"{"images": {"web": "nginx:1.28"}}"#).expect("valid");
        assert_eq!(request.images["web"], "nginx:1.28");
        let cases: [(&[u8], u16); 6] = [
            (b"{", 400),
            (br#"{"images": {}}"#, 422),
            (br#"{"images": {"web": 1}}"#, 422),
            (br#"{"images": {"web": ""}}"#, 422),
            (br#"{"image": {"web": "x"}}"#, 422),
            (br#""x""#, 422),
        ];
        for (body, code) in cases {
            let error = parse_request(body).expect_err("invalid");
            assert_eq!(
                error.status().as_u16(),
                code,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
