//! `POST /v1/namespaces/{ns}/workloads/{name}/plan`: what applying a Workload would do,
//! computed by the operator without changing anything. The body is the Workload as it would
//! be applied (or only its `spec`); an empty body plans the Workload's current spec. The
//! gateway creates a WorkloadPlan as the caller (who needs `create`, `get` and `delete` on
//! workloadplans), waits for its status, deletes it and answers with the plan.

use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use kube::Resource;
use kube::api::{DeleteParams, GetParams, PostParams};
use kube::core::Request;
use qleetos_crds::{Conditions, READY, Workload, WorkloadPlan, WorkloadPlanStatus, WorkloadSpec};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::kinds::GatewayKind as _;
use crate::openapi::{JSON, OperationExt as _, json, schema};
use crate::routes::resources::{ObjectPath, body_bytes, decode, json_object, read_workload};
use crate::state::AppState;

/// How long the gateway waits for the operator to compute a plan.
const PLAN_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        &format!("{}/{{name}}/plan", Workload::COLLECTION),
        post_with(plan, |op| {
            op.id("planWorkload")
                .summary("What applying a Workload would do, computed without changing anything")
                .body(JSON, schema::<Workload>())
                .respond(200, json::<WorkloadPlanStatus>("The plan"))
        }),
    )
}

/// The planned spec: the body's (`spec` of a Workload, or of `{"spec": ...}`), else `None`.
fn parse_spec(body: &[u8]) -> Result<Option<WorkloadSpec>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut object = json_object(body)?;
    let spec = object
        .remove("spec")
        .ok_or_else(|| ApiError::Invalid("expected a Workload (or {\"spec\": ...})".into()))?;
    serde_json::from_value(spec)
        .map(Some)
        .map_err(|e| ApiError::Invalid(format!("the Workload's spec: {e}")))
}

async fn plan(
    State(_state): State<AppState>,
    caller: Caller,
    path: ObjectPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WorkloadPlanStatus>, ApiError> {
    let spec = match parse_spec(&body_bytes(body)?)? {
        Some(spec) => spec,
        None => read_workload(&caller, &path).await?.spec,
    };
    let namespace = path.namespace.clone().unwrap_or_default();
    let request = WorkloadPlan::request(&namespace, path.name(), spec);
    let plans = Request::new(WorkloadPlan::url_path(&(), Some(&namespace)));
    let body = serde_json::to_vec(&request)
        .map_err(|e| ApiError::BadGateway(format!("the WorkloadPlan cannot be encoded: {e}")))?;
    let created = caller
        .send(plans.create(&PostParams::default(), body)?)
        .await?;
    let name = created["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let computed = until_computed(&caller, &plans, &name).await;
    // Best effort: the operator deletes it after its TTL anyway.
    if let Ok(delete) = plans.delete(&name, &DeleteParams::background()) {
        let _ = caller.send(delete).await;
    }
    Ok(Json(computed?))
}

async fn until_computed(
    caller: &Caller,
    plans: &Request,
    name: &str,
) -> Result<WorkloadPlanStatus, ApiError> {
    let deadline = tokio::time::Instant::now() + PLAN_WAIT;
    loop {
        let found = caller.send(plans.get(name, &GetParams::default())?).await?;
        let plan: WorkloadPlan = decode(found, "WorkloadPlan")?;
        if let Some(status) = plan.status.filter(|s| {
            s.observed_generation == plan.metadata.generation && s.condition(READY).is_some()
        }) {
            return Ok(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Upstream {
                code: 504,
                reason: "Timeout".into(),
                message: format!(
                    "the plan was not computed within {PLAN_WAIT:?}: is the QleetOS operator running?"
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_workload_a_spec_or_nothing() {
        assert_eq!(parse_spec(b" ").expect("empty"), None);
        let body = br#"{"kind": "Workload", "spec": {"placement": {"regions": ["eu-west-1"]}}}"#;
        let spec = parse_spec(body).expect("valid").expect("a spec");
        assert_eq!(spec.placement.regions, ["eu-west-1"]);
        let error = parse_spec(br#"{"images": {}}"#).expect_err("no spec");
        assert_eq!(error.status().as_u16(), 422);
    }
}
