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

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeProfile, ServiceProfile, SupportService,
    SupportServiceProfile, Workload, WorkloadInstance, WorkloadServiceDependency,
};

pub use error::{ApiError, ErrorBody};
pub use state::{AppState, Settings};

use crate::kinds::GatewayKind;
use crate::routes::{console, identity, images, resources, system, watch};

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let limited = Router::new()
        .merge(resources::routes::<Workload>())
        .merge(resources::routes::<WorkloadInstance>())
        .merge(resources::routes::<KubernetesRuntime>())
        .merge(resources::routes::<SupportServiceProfile>())
        .merge(resources::routes::<SupportService>())
        .merge(resources::routes::<ServiceProfile>())
        .merge(resources::routes::<WorkloadServiceDependency>())
        .merge(resources::routes::<KubernetesRuntimeProfile>())
        .route("/v1/whoami", get(identity::whoami))
        .route(
            &format!("{}/{{name}}/permissions", Workload::COLLECTION),
            get(identity::workload_permissions),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), time_limit));
    // The image hook bounds itself by `?wait=`; a watch lasts until the client leaves.
    let long = Router::new()
        .route(
            &format!("{}/{{name}}/images", Workload::COLLECTION),
            post(images::set_images),
        )
        .route(
            &format!("{}/{{name}}/watch", Workload::COLLECTION),
            get(watch::watch_workload),
        );
    Router::new()
        .merge(limited)
        .merge(long)
        .merge(console::routes())
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/version", get(system::version))
        .route("/openapi.json", get(system::openapi))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.settings().max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
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
