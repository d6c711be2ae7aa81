//! Health, readiness, metrics, version and the OpenAPI document.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// How long `/readyz` waits for the management API.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /version`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
}

/// The data of a `status` event of the watch stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchEventDoc {
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    pub status: Option<qleetos_crds::WorkloadStatus>,
}

pub async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        name: env!("CARGO_PKG_NAME").to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready while the management API answers (as the gateway itself).
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.client().apiserver_version()).await {
        Ok(Ok(_)) => Ok("ok"),
        Ok(Err(error)) => Err(ApiError::Unavailable(error.to_string())),
        Err(_) => Err(ApiError::Unavailable(format!(
            "no answer within {}s",
            READY_TIMEOUT.as_secs()
        ))),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics().encode(),
    )
        .into_response()
}

pub async fn openapi() -> Json<&'static Value> {
    Json(crate::openapi::document())
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /openapi.json".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::Upstream {
        code: 405,
        reason: "MethodNotAllowed".into(),
        message: "method not allowed on this route; see /openapi.json".into(),
    }
}
