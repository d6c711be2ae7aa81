//! Who the caller is and what they may do with a Workload: `GET /v1/whoami` and
//! `GET /v1/namespaces/{ns}/workloads/{name}/permissions`. The console uses them to greet the
//! user and to offer only the actions RBAC allows; the API itself still checks every call.

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use qleetos_crds::Workload;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::access::{self, Attributes};
use crate::caller::Caller;
use crate::error::ApiError;
use crate::kinds::GatewayKind as _;
use crate::openapi::{OperationExt as _, json};
use crate::routes::resources::ObjectPath;
use crate::state::AppState;

/// The caller as the management cluster's TokenReview names them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct WhoAmI {
    pub username: String,
    pub groups: Vec<String>,
}

/// What the caller may do with one Workload, as Kubernetes RBAC decides.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
pub struct WorkloadPermissions {
    pub get: bool,
    pub watch: bool,
    /// Needed to set images.
    pub patch: bool,
    pub delete: bool,
}

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new()
        .api_route(
            "/v1/whoami",
            get_with(whoami, |op| {
                op.id("whoami")
                    .summary("The caller's user name and groups, as the management cluster's TokenReview gives them")
                    .respond(200, json::<WhoAmI>("The caller"))
            }),
        )
        .api_route(
            &format!("{}/{{name}}/permissions", Workload::COLLECTION),
            get_with(workload_permissions, |op| {
                op.id("workloadPermissions")
                    .summary("What the caller may do with a Workload (get, watch, patch, delete), as RBAC decides")
                    .respond(200, json::<WorkloadPermissions>("One flag per verb"))
            }),
        )
}

async fn whoami(caller: Caller) -> Json<WhoAmI> {
    let identity = caller.identity();
    Json(WhoAmI {
        username: identity.username.clone(),
        groups: identity.groups.clone(),
    })
}

async fn workload_permissions(
    caller: Caller,
    path: ObjectPath,
) -> Result<Json<WorkloadPermissions>, ApiError> {
    let may = |verb| {
        let attributes = Attributes {
            verb,
            resource: "workloads",
            namespace: path.namespace.as_deref(),
            name: path.name.as_deref(),
        };
        let caller = caller.clone();
        async move { access::review(&caller, attributes).await.map(|d| d.allowed) }
    };
    let (get, watch, patch, delete) =
        futures::try_join!(may("get"), may("watch"), may("patch"), may("delete"))?;
    Ok(Json(WorkloadPermissions {
        get,
        watch,
        patch,
        delete,
    }))
}
