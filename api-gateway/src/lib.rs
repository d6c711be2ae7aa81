//! `qleetos-api-gateway`: a thin, stateless REST gateway for CI systems and scripts. It
//! translates HTTP calls into operations on the QleetOS custom resources in the management
//! cluster, performed as the caller (TokenReview + impersonation) so Kubernetes RBAC decides,
//! and publishes a NATS notification after each write. It also serves the web console
//! (`/ui/`), whose page calls this same API with the user's token.

pub mod access;
pub mod auth;
pub mod caller;
pub mod error;
pub mod kinds;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod query;
pub use qleetos_crds::rollout;
pub mod routes;
pub mod state;

use aide::axum::ApiRouter;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};

pub use error::{ApiError, ErrorBody};
pub use state::{AppState, Settings};

use crate::routes::{approve, console, identity, images, plan, resources, rollback, system, watch};

/// The whole HTTP API. Every documented route is declared once, in `routes/*`; the router and
/// `/openapi.json` are both derived from those declarations.
pub fn app(state: AppState) -> Router {
    openapi::begin();
    let limited = resources::all_kinds()
        .merge(identity::routes())
        .merge(rollback::routes())
        .merge(plan::routes())
        .merge(approve::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), time_limit));
    // The image hook bounds itself by `?wait=`; a watch lasts until the client leaves.
    let long = images::routes().merge(watch::routes());
    let documented = ApiRouter::new()
        .merge(limited)
        .merge(long)
        .merge(system::routes());
    let (api, document) = openapi::finish(documented);
    api
        // The console's static files are not part of the REST API (see the route test).
        .merge(console::routes())
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(state.settings().max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.metrics().clone(),
            metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// The span of one request: method and route template (never the URI's query, never a
/// header). `user` is recorded once the caller's token has been reviewed (`Caller`).
fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        user = tracing::field::Empty,
    )
}

/// Answers 503 when a request takes longer than the configured request timeout.
async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.settings().request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!(
            "the management API did not answer within {}s",
            limit.as_secs()
        ))
        .into_response(),
    }
}
