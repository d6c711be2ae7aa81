//! The gateway's one error type and its JSON shape.
//!
//! Every failure answers `{"reason", "message", "code", "retryResourceVersion"?}`. Errors from
//! the management API server keep its message (validation and RBAC messages pass through);
//! transport failures mean the management API is unreachable (503).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kube::core::Status;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The JSON body of every error response.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Machine-readable CamelCase reason, e.g. `NotFound`, `Forbidden`, `Conflict`, `Invalid`.
    pub reason: String,
    /// Human-readable explanation (the API server's own message where there is one).
    pub message: String,
    /// The HTTP status code of the response.
    pub code: u16,
    /// On 409: the object's current resourceVersion, to retry the write from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_resource_version: Option<String>,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: body that is not JSON, bad query parameter, invalid name (400).
    #[error("{message}")]
    BadRequest {
        reason: &'static str,
        message: String,
    },
    /// No or invalid bearer token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// RBAC denied the caller (403), with the API server's message.
    #[error("{0}")]
    Forbidden(String),
    /// The object does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// Write conflict or already exists (409), with the resourceVersion to retry from.
    #[error("{message}")]
    Conflict {
        reason: String,
        message: String,
        retry_resource_version: Option<String>,
    },
    /// Body larger than the limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Content type the operation does not accept (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed JSON that violates the schema (422), with the API server's message.
    #[error("{0}")]
    Invalid(String),
    /// The management API server is unreachable or unavailable (503).
    #[error("management API unavailable: {0}")]
    Unavailable(String),
    /// Any other status the API server answered with, passed through (e.g. 410, 429).
    #[error("{message}")]
    Upstream {
        code: u16,
        reason: String,
        message: String,
    },
    /// The management API server misbehaved (502).
    #[error("{0}")]
    BadGateway(String),
}

impl ApiError {
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            reason,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream { code, .. } => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Self::BadRequest { reason, .. } => (*reason).to_owned(),
            Self::Unauthorized(_) => "Unauthorized".into(),
            Self::Forbidden(_) => "Forbidden".into(),
            Self::NotFound(_) => "NotFound".into(),
            Self::Conflict { reason, .. } | Self::Upstream { reason, .. } => reason.clone(),
            Self::PayloadTooLarge(_) => "RequestEntityTooLarge".into(),
            Self::UnsupportedMediaType(_) => "UnsupportedMediaType".into(),
            Self::Invalid(_) => "Invalid".into(),
            Self::Unavailable(_) => "ServiceUnavailable".into(),
            Self::BadGateway(_) => "BadGateway".into(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            reason: self.reason(),
            message: self.to_string(),
            code: self.status().as_u16(),
            retry_resource_version: match self {
                Self::Conflict {
                    retry_resource_version,
                    ..
                } => retry_resource_version.clone(),
                _ => None,
            },
        }
    }

    /// Adds the resourceVersion to retry from to a conflict.
    #[must_use]
    pub fn with_retry_version(self, version: Option<String>) -> Self {
        match self {
            Self::Conflict {
                reason, message, ..
            } => Self::Conflict {
                reason,
                message,
                retry_resource_version: version,
            },
            other => other,
        }
    }

    fn from_status(status: &Status) -> Self {
        let message = status.message.clone();
        let reason = if status.reason.is_empty() {
            "Unknown".to_owned()
        } else {
            status.reason.clone()
        };
        match status.code {
            400 if is_schema_violation(&message) => Self::Invalid(message),
            400 => Self::BadRequest {
                reason: "BadRequest",
                message,
            },
            // The gateway's own credentials were rejected: the caller cannot fix that.
            401 => Self::BadGateway(format!(
                "the management API rejected the gateway: {message}"
            )),
            403 => Self::Forbidden(message),
            404 => Self::NotFound(message),
            409 => Self::Conflict {
                reason,
                message,
                retry_resource_version: None,
            },
            413 => Self::PayloadTooLarge(message),
            415 => Self::UnsupportedMediaType(message),
            422 => Self::Invalid(message),
            503 | 504 => Self::Unavailable(message),
            code @ 400..=499 => Self::Upstream {
                code,
                reason,
                message,
            },
            _ => Self::BadGateway(format!("management API error {}: {message}", status.code)),
        }
    }
}

/// Strict field validation failures are schema violations, whatever status they came with.
fn is_schema_violation(message: &str) -> bool {
    message.contains("strict decoding error") || message.contains("unknown field")
}

impl From<kube::Error> for ApiError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::from_status(&status),
            kube::Error::SerdeError(e) => {
                Self::BadGateway(format!("unexpected answer from the management API: {e}"))
            }
            kube::Error::BuildRequest(e) => Self::bad_request("BadRequest", e.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<kube::core::request::Error> for ApiError {
    fn from(error: kube::core::request::Error) -> Self {
        Self::bad_request("BadRequest", error.to_string())
    }
}

/// Handlers return `Result<_, ApiError>`; the error response itself is documented once, for
/// every route that takes a `Caller` (`openapi::authenticated`).
impl aide::OperationOutput for ApiError {
    type Inner = ErrorBody;
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        (status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure(message, reason).with_code(code)))
    }

    #[test]
    fn maps_api_server_statuses() {
        let cases = [
            (403, "Forbidden", "cannot patch", 403, "Forbidden"),
            (404, "NotFound", "not found", 404, "NotFound"),
            (409, "Conflict", "modified", 409, "Conflict"),
            (409, "AlreadyExists", "exists", 409, "AlreadyExists"),
            (422, "Invalid", "spec.placement: bad", 422, "Invalid"),
            (
                400,
                "BadRequest",
                "strict decoding error: unknown field",
                422,
                "Invalid",
            ),
            (400, "BadRequest", "namespace mismatch", 400, "BadRequest"),
            (410, "Expired", "continue expired", 410, "Expired"),
            (429, "TooManyRequests", "slow down", 429, "TooManyRequests"),
            (500, "InternalError", "boom", 502, "BadGateway"),
            (503, "ServiceUnavailable", "etcd", 503, "ServiceUnavailable"),
            (401, "Unauthorized", "bad gateway creds", 502, "BadGateway"),
        ];
        for (code, reason, message, want_code, want_reason) in cases {
            let body = ApiError::from(status(code, reason, message)).body();
            assert_eq!(body.code, want_code, "{code} {reason}");
            assert_eq!(body.reason, want_reason, "{code} {reason}");
            assert!(body.message.contains(message), "{body:?}");
        }
    }

    #[test]
    fn transport_errors_are_unavailable() {
        let error = kube::Error::Service("connection refused".into());
        assert_eq!(
            ApiError::from(error).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn conflict_carries_retry_version() {
        let body = ApiError::from(status(409, "Conflict", "stale"))
            .with_retry_version(Some("42".into()))
            .body();
        assert_eq!(body.retry_resource_version.as_deref(), Some("42"));
        let json = serde_json::to_value(&body).expect("serialises");
        assert_eq!(json["retryResourceVersion"], "42");
        let not_found = ApiError::NotFound("x".into()).with_retry_version(Some("1".into()));
        assert_eq!(not_found.body().retry_resource_version, None);
    }
}
