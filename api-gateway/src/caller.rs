//! A request's view of the management API: the gateway's shared client (one connection pool)
//! with the caller's impersonation headers added to every call.

use std::sync::Arc;

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::extract::FromRequestParts;
use futures::{Stream, StreamExt as _};
use http::request::Parts;
use kube::Client;
use kube::core::WatchEvent;
use serde_json::Value;

use crate::auth::{self, Identity};
use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller; every call through it runs as the caller.
#[derive(Clone)]
pub struct Caller {
    client: Client,
    identity: Arc<Identity>,
}

impl Caller {
    pub fn new(client: Client, identity: Identity) -> Self {
        Self {
            client,
            identity: Arc::new(identity),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Sends a request as the caller and returns the API server's JSON answer.
    pub async fn send(&self, request: http::Request<Vec<u8>>) -> Result<Value, ApiError> {
        let request = self.impersonated(request)?;
        Ok(self.client.request::<Value>(request).await?)
    }

    /// Starts a watch as the caller.
    pub async fn watch(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<impl Stream<Item = Result<WatchEvent<Value>, ApiError>> + use<>, ApiError> {
        let request = self.impersonated(request)?;
        let events = self.client.request_events::<Value>(request).await?;
        Ok(events.map(|event| event.map_err(ApiError::from)))
    }

    fn impersonated(
        &self,
        mut request: http::Request<Vec<u8>>,
    ) -> Result<http::Request<Vec<u8>>, ApiError> {
        self.identity.impersonate(request.headers_mut())?;
        Ok(request)
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user", &self.identity.username)
            .finish_non_exhaustive()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = auth::bearer_token(&parts.headers)?;
        let identity = auth::review(state.client(), token).await?;
        // The request span names the caller from here on (the name only; never the token).
        tracing::Span::current().record("user", identity.username.as_str());
        tracing::debug!(user = identity.username, "caller authenticated");
        Ok(Self::new(state.client().clone(), identity))
    }
}

/// A route taking a `Caller` needs a bearer token and answers the shared error shape; the
/// document says so for exactly those routes.
impl OperationInput for Caller {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        crate::openapi::authenticated(ctx, operation);
    }
}
