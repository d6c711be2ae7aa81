//! Health, readiness, metrics, version and the OpenAPI document; none needs a token.

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorBody};
use crate::openapi::{self, OperationExt as _, json, text};
use crate::state::AppState;

/// How long `/readyz` waits for the management API.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /version`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
}

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/healthz",
            get_with(healthz, |op| {
                op.id("healthz").respond(200, text("The process is alive"))
            }),
        )
        .api_route(
            "/readyz",
            get_with(readyz, |op| {
                op.id("readyz")
                    .respond(200, text("The management API is reachable"))
                    .respond(503, json::<ErrorBody>("The management API is unreachable"))
            }),
        )
        .api_route(
            "/metrics",
            get_with(metrics, |op| {
                op.id("metrics")
                    .respond(200, text("Prometheus text exposition"))
            }),
        )
        .api_route(
            "/version",
            get_with(version, |op| {
                op.id("version")
                    .respond(200, json::<VersionInfo>("Gateway version"))
            }),
        )
        .api_route("/openapi.json", openapi::route())
}

async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        name: env!("CARGO_PKG_NAME").to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready while the management API answers (as the gateway itself).
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.client().apiserver_version()).await {
        Ok(Ok(_)) => Ok("ok"),
        Ok(Err(error)) => Err(ApiError::Unavailable(error.to_string())),
        Err(_) => Err(ApiError::Unavailable(format!(
            "no answer within {}s",
            READY_TIMEOUT.as_secs()
        ))),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics().encode(),
    )
        .into_response()
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
