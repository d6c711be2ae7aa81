//! `GET /v1/namespaces/{ns}/workloads/{name}/watch`: server-sent events following a Workload's
//! status, for CI logs and dashboards. Event `status` carries the generation, resourceVersion
//! and status whenever they change; `deleted` ends the stream; `error` reports a problem
//! reaching the management API (the stream keeps trying).

use std::convert::Infallible;
use std::time::Duration;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use kube::api::{GetParams, WatchParams};
use kube::core::WatchEvent;
use qleetos_crds::Workload;
use schemars::{JsonSchema, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::access;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::kinds::GatewayKind as _;
use crate::openapi::{OperationExt as _, response, schema};
use crate::routes::resources::ObjectPath;
use crate::state::AppState;

const WATCH_TIMEOUT_SECS: u32 = 30;
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The data of a `status` event of the watch stream (documentation only; see
/// [`status_event`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchEventDoc {
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    pub status: Option<qleetos_crds::WorkloadStatus>,
}

/// `GET .../workloads/{name}/watch`: lasts until the client leaves (no request time limit).
pub fn routes() -> ApiRouter<AppState> {
    ApiRouter::new().api_route(
        &format!("{}/{{name}}/watch", Workload::COLLECTION),
        get_with(watch_workload, |op| {
            let event = schema::<WatchEventDoc>();
            op.id("watchWorkloadStatus")
                .summary("Follow a Workload's status as server-sent events (`status`, `deleted`, `error`)")
                .respond(
                    200,
                    response(
                        "An event stream; each `status` event's data is a WatchEventDoc",
                        "text/event-stream",
                        json_schema!({"type": "string", "description": "data lines hold JSON", "contentSchema": event}),
                    ),
                )
        }),
    )
}

async fn watch_workload(caller: Caller, path: ObjectPath) -> Result<Response, ApiError> {
    // Authorisation (get and watch) and existence are checked before the stream starts.
    let first = get(&caller, &path).await?;
    access::ensure(
        &caller,
        access::Attributes {
            verb: "watch",
            resource: "workloads",
            namespace: path.namespace.as_deref(),
            name: path.name.as_deref(),
        },
    )
    .await?;
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(follow(caller, path, first, sender).in_current_span());
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn get(caller: &Caller, path: &ObjectPath) -> Result<Value, ApiError> {
    let request = path
        .request::<Workload>()
        .get(path.name(), &GetParams::default())?;
    caller.send(request).await
}

/// The payload of a `status` event.
pub fn status_event(object: &Value) -> Value {
    json!({
        "generation": object.pointer("/metadata/generation"),
        "resourceVersion": object.pointer("/metadata/resourceVersion"),
        "status": object.get("status").cloned().unwrap_or(Value::Null),
    })
}

/// Sends a status event when generation or status changed; false once the client is gone.
async fn emit(sender: &mpsc::Sender<Event>, object: &Value, last: &mut Option<Value>) -> bool {
    let payload = status_event(object);
    let key = json!([payload["generation"], payload["status"]]);
    if last.as_ref() == Some(&key) {
        return !sender.is_closed();
    }
    *last = Some(key);
    let event = Event::default().event("status").data(payload.to_string());
    sender.send(event).await.is_ok()
}

fn resource_version(object: &Value) -> String {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_owned()
}

async fn follow(caller: Caller, path: ObjectPath, first: Value, sender: mpsc::Sender<Event>) {
    let mut last = None;
    if !emit(&sender, &first, &mut last).await {
        return;
    }
    let mut version = resource_version(&first);
    let params = WatchParams::default()
        .fields(&format!("metadata.name={}", path.name()))
        .timeout(WATCH_TIMEOUT_SECS);
    while !sender.is_closed() {
        match watch_once(&caller, &path, &params, &version, &sender, &mut last).await {
            Ok(Some(next)) => version = next,
            Ok(None) => return,
            Err(error) => {
                let body = error.body();
                let data = serde_json::to_string(&body).unwrap_or_default();
                if sender
                    .send(Event::default().event("error").data(data))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(RETRY_DELAY).await;
                match get(&caller, &path).await {
                    Ok(object) => {
                        version = resource_version(&object);
                        if !emit(&sender, &object, &mut last).await {
                            return;
                        }
                    }
                    Err(ApiError::NotFound(_)) => {
                        let _ = sender.send(deleted(path.name())).await;
                        return;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

fn deleted(name: &str) -> Event {
    Event::default()
        .event("deleted")
        .data(json!({"name": name}).to_string())
}

/// Follows one watch request; `Ok(None)` when the stream should end (deleted or client gone),
/// else the resourceVersion to continue from.
async fn watch_once(
    caller: &Caller,
    path: &ObjectPath,
    params: &WatchParams,
    version: &str,
    sender: &mpsc::Sender<Event>,
    last: &mut Option<Value>,
) -> Result<Option<String>, ApiError> {
    let request = path.request::<Workload>().watch(params, version)?;
    let mut events = Box::pin(caller.watch(request).await?);
    let mut version = version.to_owned();
    while let Some(event) = events.next().await {
        match event? {
            WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                version = resource_version(&object);
                if !emit(sender, &object, last).await {
                    return Ok(None);
                }
            }
            WatchEvent::Deleted(_) => {
                let _ = sender.send(deleted(path.name())).await;
                return Ok(None);
            }
            WatchEvent::Bookmark(bookmark) => version = bookmark.metadata.resource_version,
            WatchEvent::Error(status) => {
                return Err(ApiError::Upstream {
                    code: status.code,
                    reason: status.reason,
                    message: status.message,
                });
            }
        }
    }
    Ok(Some(version))
}
