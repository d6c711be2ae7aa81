//! List, get, create, replace, merge-patch and delete of every kind, and its `/status`.

use aide::OperationInput;
use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use http::request::Parts;
use http::{HeaderMap, StatusCode, header::CONTENT_TYPE};
use kube::api::GetParams;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::Request;
use kube::core::params::ValidationDirective;
use qleetos_crds::Workload;
use schemars::{JsonSchema, Schema, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::kinds::{self, GatewayKind, KindVisitor};
use crate::openapi::{JSON, OperationExt as _, json, response, schema};
use crate::query::{ListQuery, validate_name, validate_namespace};
use crate::state::AppState;

/// Field manager of every write the gateway makes on a caller's behalf.
pub const FIELD_MANAGER: &str = "qleetos-gateway";

/// `{namespace}` and `{name}` of a route, whichever it has: 400 when the path does not parse,
/// 422 when a name is not a valid Kubernetes name. Documented from the route template.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct ObjectPath {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl ObjectPath {
    pub fn from_rejection(path: Result<Path<Self>, PathRejection>) -> Result<Self, ApiError> {
        let Path(path) = path.map_err(|e| ApiError::bad_request("InvalidPath", e.body_text()))?;
        if let Some(namespace) = &path.namespace {
            validate_namespace(namespace)?;
        }
        if let Some(name) = &path.name {
            validate_name(name)?;
        }
        Ok(path)
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// The management API request builder of `K` at this path.
    pub fn request<K: GatewayKind>(&self) -> Request {
        Request::new(K::url_path(&(), self.namespace.as_deref()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ObjectPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::from_rejection(Path::from_request_parts(parts, state).await)
    }
}

/// The path parameters are documented from the route template (`openapi.rs`).
impl OperationInput for ObjectPath {}

/// What a delete answers: gone, or still finalizing.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResponse {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// True when finalizers still run: the object is gone once they finish (202).
    pub finalizing: bool,
}

/// The routes of every kind in the table (`kinds.rs`).
pub fn all_kinds() -> ApiRouter<AppState> {
    struct Routes(ApiRouter<AppState>);
    impl KindVisitor for Routes {
        fn visit<K: GatewayKind>(&mut self) {
            let routes = std::mem::replace(&mut self.0, ApiRouter::new());
            self.0 = routes.merge(self::routes::<K>());
        }
    }
    let mut routes = Routes(ApiRouter::new());
    kinds::visit_all(&mut routes);
    routes.0
}

/// The routes of one kind, each with its documentation.
pub fn routes<K: GatewayKind>() -> ApiRouter<AppState> {
    let collection = K::COLLECTION;
    let kind = K::kind(&());
    let kind = kind.as_ref();
    let object = || schema::<K>();
    ApiRouter::new()
        .api_route(
            collection,
            get_with(list::<K>, |op| {
                op.id(&format!("list{kind}"))
                    .summary(&format!("List {kind} objects"))
                    .respond(200, response("The list", JSON, list_schema(kind, object())))
            })
            .post_with(create::<K>, |op| {
                op.id(&format!("create{kind}"))
                    .summary(&format!("Create a {kind}"))
                    .body(JSON, object())
                    .respond(201, json::<K>("Created"))
            }),
        )
        .api_route(
            &format!("{collection}/{{name}}"),
            get_with(get_one::<K>, |op| {
                op.id(&format!("read{kind}"))
                    .summary(&format!("Read a {kind}"))
                    .respond(200, json::<K>("The object"))
            })
            .put_with(replace::<K>, |op| {
                op.id(&format!("replace{kind}"))
                    .summary(&format!("Replace a {kind} (send metadata.resourceVersion)"))
                    .body(JSON, object())
                    .respond(200, json::<K>("Replaced"))
            })
            .patch_with(merge_patch::<K>, |op| {
                op.id(&format!("patch{kind}"))
                    .summary(&format!("Merge-patch a {kind}"))
                    .body(
                        "application/merge-patch+json",
                        json_schema!({"type": "object"}),
                    )
                    .respond(200, json::<K>("Patched"))
            })
            .delete_with(delete::<K>, |op| {
                op.id(&format!("delete{kind}"))
                    .summary(&format!("Delete a {kind}"))
                    .respond(200, json::<DeleteResponse>("Deleted"))
                    .respond(
                        202,
                        json::<DeleteResponse>("Deletion started; finalizers still run"),
                    )
            }),
        )
        .api_route(
            &format!("{collection}/{{name}}/status"),
            get_with(status::<K>, |op| {
                op.id(&format!("read{kind}Status"))
                    .summary(&format!("Read a {kind} with its status"))
                    .respond(200, json::<K>("The object and its status"))
            }),
        )
}

/// A page of objects as the management API answers it.
fn list_schema(kind: &str, item: Schema) -> Schema {
    json_schema!({
        "type": "object",
        "description": format!("A page of {kind} objects"),
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {
                    "continue": {"type": "string"},
                    "resourceVersion": {"type": "string"},
                    "remainingItemCount": {"type": "integer"}
                }
            },
            "items": {"type": "array", "items": item}
        }
    })
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("InvalidQuery", e.body_text()))
}

pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(e.body_text()),
        _ => ApiError::bad_request("MalformedBody", e.body_text()),
    })
}

/// A JSON object: 400 when the body is not JSON, 422 when it is JSON but not an object.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("MalformedBody", format!("body is not JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::Invalid("the body must be a JSON object".into())),
    }
}

/// An object the management API answered with, as `T` (a `kind` it does not decode is 502).
pub fn decode<T: serde::de::DeserializeOwned>(object: Value, kind: &str) -> Result<T, ApiError> {
    serde_json::from_value(object).map_err(|e| {
        ApiError::BadGateway(format!("unexpected {kind} from the management API: {e}"))
    })
}

/// The Workload at `path`, read as the caller.
pub async fn read_workload(caller: &Caller, path: &ObjectPath) -> Result<Workload, ApiError> {
    let get = path
        .request::<Workload>()
        .get(path.name(), &GetParams::default())?;
    decode(caller.send(get).await?, "Workload")
}

/// An action's request body, which may be empty (`T::default()` then): a JSON object read as
/// `T`, or 422 saying which shape was `expected`.
pub fn action_request<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    expected: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_value(Value::Object(json_object(body)?))
        .map_err(|e| ApiError::Invalid(format!("expected {expected}: {e}")))
}

/// Fills in `apiVersion`, `kind`, `metadata.namespace` (and the name for replace) from the
/// route, so callers may leave them out; values that contradict the route are rejected.
pub fn prepare<K: GatewayKind>(
    object: &mut Map<String, Value>,
    path: &ObjectPath,
) -> Result<(), ApiError> {
    let expected = [
        ("apiVersion", K::api_version(&()).into_owned()),
        ("kind", K::kind(&()).into_owned()),
    ];
    for (field, want) in expected {
        match object.get(field) {
            None => {
                object.insert(field.to_owned(), Value::String(want));
            }
            Some(Value::String(have)) if *have == want => {}
            Some(other) => {
                return Err(ApiError::Invalid(format!(
                    "{field} must be {want:?}, not {other}"
                )));
            }
        }
    }
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| ApiError::Invalid("metadata must be an object".into()))?;
    if let Some(namespace) = &path.namespace {
        metadata
            .entry("namespace")
            .or_insert_with(|| Value::String(namespace.clone()));
    }
    if let Some(name) = &path.name {
        metadata
            .entry("name")
            .or_insert_with(|| Value::String(name.clone()));
    }
    Ok(())
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    }
}

pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::default()
    }
}

/// Adds `fieldValidation=Strict` to a create or replace, so unknown fields are errors.
fn strict(mut request: http::Request<Vec<u8>>) -> Result<http::Request<Vec<u8>>, ApiError> {
    let uri = request.uri().to_string();
    let separator = if uri.contains('?') { '&' } else { '?' };
    *request.uri_mut() = format!("{uri}{separator}fieldValidation=Strict")
        .parse()
        .map_err(|e| ApiError::bad_request("BadRequest", format!("{e}")))?;
    Ok(request)
}

/// On a conflict, looks up the object's current resourceVersion for the caller to retry from.
pub async fn with_retry_version<K: GatewayKind>(
    caller: &Caller,
    path: &ObjectPath,
    name: &str,
    error: ApiError,
) -> ApiError {
    if !matches!(error, ApiError::Conflict { .. }) || name.is_empty() {
        return error;
    }
    let current = match path.request::<K>().get(name, &GetParams::default()) {
        Ok(request) => caller.send(request).await.ok(),
        Err(_) => None,
    };
    let version = current
        .as_ref()
        .and_then(|o| o.pointer("/metadata/resourceVersion"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    error.with_retry_version(version)
}

async fn list<K: GatewayKind>(
    caller: Caller,
    path: ObjectPath,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let params = query(params)?.list_params()?;
    let request = path.request::<K>().list(&params)?;
    Ok(Json(caller.send(request).await?))
}

async fn get_one<K: GatewayKind>(
    caller: Caller,
    path: ObjectPath,
) -> Result<Json<Value>, ApiError> {
    let request = path
        .request::<K>()
        .get(path.name(), &GetParams::default())?;
    Ok(Json(caller.send(request).await?))
}

async fn status<K: GatewayKind>(caller: Caller, path: ObjectPath) -> Result<Json<Value>, ApiError> {
    let request = path.request::<K>().get_subresource("status", path.name())?;
    Ok(Json(caller.send(request).await?))
}

async fn create<K: GatewayKind>(
    State(state): State<AppState>,
    caller: Caller,
    path: ObjectPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut object = json_object(&body_bytes(body)?)?;
    prepare::<K>(&mut object, &path)?;
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let data = serde_json::to_vec(&object).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let request = strict(path.request::<K>().create(&post_params(), data)?)?;
    let created = match caller.send(request).await {
        Ok(created) => created,
        Err(error) => return Err(with_retry_version::<K>(&caller, &path, &name, error).await),
    };
    state
        .notifier()
        .publish(K::QLEET, &created, state.metrics());
    Ok((StatusCode::CREATED, Json(created)))
}

async fn replace<K: GatewayKind>(
    State(state): State<AppState>,
    caller: Caller,
    path: ObjectPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut object = json_object(&body_bytes(body)?)?;
    prepare::<K>(&mut object, &path)?;
    let data = serde_json::to_vec(&object).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let request = strict(
        path.request::<K>()
            .replace(path.name(), &post_params(), data)?,
    )?;
    let replaced = match caller.send(request).await {
        Ok(replaced) => replaced,
        Err(error) => {
            return Err(with_retry_version::<K>(&caller, &path, path.name(), error).await);
        }
    };
    state
        .notifier()
        .publish(K::QLEET, &replaced, state.metrics());
    Ok(Json(replaced))
}

fn require_merge_patch(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/merge-patch+json")
        || essence.eq_ignore_ascii_case("application/json")
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "PATCH takes a JSON merge patch (Content-Type: application/merge-patch+json), not {content_type:?}"
        )))
    }
}

async fn merge_patch<K: GatewayKind>(
    State(state): State<AppState>,
    caller: Caller,
    path: ObjectPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    require_merge_patch(&headers)?;
    let patch = Value::Object(json_object(&body_bytes(body)?)?);
    let request = path
        .request::<K>()
        .patch(path.name(), &patch_params(), &Patch::Merge(&patch))?;
    let patched = match caller.send(request).await {
        Ok(patched) => patched,
        Err(error) => {
            return Err(with_retry_version::<K>(&caller, &path, path.name(), error).await);
        }
    };
    state
        .notifier()
        .publish(K::QLEET, &patched, state.metrics());
    Ok(Json(patched))
}

async fn delete<K: GatewayKind>(
    State(state): State<AppState>,
    caller: Caller,
    path: ObjectPath,
) -> Result<(StatusCode, Json<DeleteResponse>), ApiError> {
    let request = path
        .request::<K>()
        .delete(path.name(), &DeleteParams::background())?;
    let answer = caller.send(request).await?;
    let finalizing = answer.get("kind").and_then(Value::as_str) != Some("Status");
    let uid = answer
        .pointer(if finalizing {
            "/metadata/uid"
        } else {
            "/details/uid"
        })
        .and_then(Value::as_str)
        .map(str::to_owned);
    if finalizing {
        state.notifier().publish(K::QLEET, &answer, state.metrics());
    }
    let code = if finalizing {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let response = DeleteResponse {
        name: path.name().to_owned(),
        uid,
        finalizing,
    };
    Ok((code, Json(response)))
}

#[cfg(test)]
mod tests {
    use qleetos_crds::{KubernetesRuntime, Workload};
    use serde_json::json;

    use super::*;

    fn path(namespace: Option<&str>, name: Option<&str>) -> ObjectPath {
        ObjectPath {
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn prepare_fills_type_namespace_and_name() {
        let mut object = json_object(br#"{"spec": {}}"#).expect("object");
        prepare::<Workload>(&mut object, &path(Some("a"), Some("web"))).expect("prepared");
        assert_eq!(object["apiVersion"], "qleetos.io/v1alpha1");
        assert_eq!(object["kind"], "Workload");
        assert_eq!(object["metadata"], json!({"namespace": "a", "name": "web"}));
        let mut runtime = json_object(br#"{"metadata": {"name": "eu"}}"#).expect("object");
        prepare::<KubernetesRuntime>(&mut runtime, &path(None, None)).expect("prepared");
        assert_eq!(runtime["metadata"], json!({"name": "eu"}));
    }

    #[test]
    fn prepare_rejects_contradictions() {
        let mut object = json_object(br#"{"kind": "Pod"}"#).expect("object");
        let error = prepare::<Workload>(&mut object, &path(Some("a"), None)).expect_err("kind");
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let mut object = json_object(br#"{"metadata": []}"#).expect("object");
        assert!(prepare::<Workload>(&mut object, &path(Some("a"), None)).is_err());
    }

    #[test]
    fn bodies_are_400_when_malformed_and_422_when_not_objects() {
        assert_eq!(
            json_object(b"{nope").expect_err("malformed").status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            json_object(b"[1]").expect_err("array").status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn strict_appends_field_validation() {
        let request = path(Some("a"), None)
            .request::<Workload>()
            .create(&post_params(), Vec::new())
            .expect("request");
        let request = strict(request).expect("strict");
        assert!(
            request
                .uri()
                .to_string()
                .ends_with("fieldManager=qleetos-gateway&fieldValidation=Strict"),
            "{}",
            request.uri()
        );
    }
}
