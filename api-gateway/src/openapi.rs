//! `GET /openapi.json`: the OpenAPI 3.1 document, assembled from the schemas schemars derives
//! from the same Rust types the CRDs and the handlers use (nothing is written by hand but the
//! path table below).

use std::sync::OnceLock;

use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeProfile, ServiceProfile, SupportService,
    SupportServiceProfile, Workload, WorkloadInstance, WorkloadServiceDependency,
};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::error::ErrorBody;
use crate::kinds::{GatewayKind, is_namespaced};
use crate::query::{LABEL_PATTERN, MAX_LIMIT, SUBDOMAIN_PATTERN};
use crate::routes::identity::{WhoAmI, WorkloadPermissions};
use crate::routes::images::{ImagesRequest, ImagesResponse};
use crate::routes::resources::DeleteResponse;
use crate::routes::system::{VersionInfo, WatchEventDoc};

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

struct Builder {
    generator: SchemaGenerator,
    paths: Map<String, Value>,
}

fn build() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "#/components/schemas/".into();
        s.meta_schema = None;
    });
    let mut builder = Builder {
        generator: settings.into_generator(),
        paths: Map::new(),
    };
    builder.kind::<Workload>("Workload");
    builder.kind::<WorkloadInstance>("WorkloadInstance");
    builder.kind::<KubernetesRuntime>("KubernetesRuntime");
    builder.kind::<SupportServiceProfile>("SupportServiceProfile");
    builder.kind::<SupportService>("SupportService");
    builder.kind::<ServiceProfile>("ServiceProfile");
    builder.kind::<WorkloadServiceDependency>("WorkloadServiceDependency");
    builder.kind::<KubernetesRuntimeProfile>("KubernetesRuntimeProfile");
    builder.workload_extras();
    builder.identity();
    builder.system();
    let Builder {
        mut generator,
        paths,
    } = builder;
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "QleetOS gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST gateway to the QleetOS custom resources. Every call runs as the caller (bearer token, reviewed by the management cluster and impersonated), so Kubernetes RBAC decides. Errors share one shape (ErrorBody). `POST .../images?wait=` answers 200 once rolled out and 504 when the wait ends first."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "paths": paths,
    })
}

fn param(name: &str, location: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": schema, "description": description})
}

fn namespace_param() -> Value {
    param(
        "namespace",
        "path",
        true,
        json!({"type": "string", "pattern": LABEL_PATTERN, "minLength": 1, "maxLength": 63}),
        "Namespace of the object.",
    )
}

fn name_param() -> Value {
    param(
        "name",
        "path",
        true,
        json!({"type": "string", "pattern": SUBDOMAIN_PATTERN, "minLength": 1, "maxLength": 253}),
        "Name of the object.",
    )
}

fn json_content(schema: &impl serde::Serialize) -> Value {
    json!({"application/json": {"schema": schema}})
}

impl Builder {
    fn schema<T: JsonSchema>(&mut self) -> Schema {
        self.generator.subschema_for::<T>()
    }

    fn error_responses(&mut self, mut responses: Map<String, Value>) -> Value {
        let error = self.schema::<ErrorBody>();
        responses.insert(
            "default".into(),
            json!({"description": "Error (400 malformed, 401, 403, 404, 409, 413, 415, 422, 503, ...)", "content": json_content(&error)}),
        );
        Value::Object(responses)
    }

    fn operation(
        &mut self,
        id: String,
        summary: String,
        parameters: Vec<Value>,
        body: Option<Value>,
        responses: Map<String, Value>,
    ) -> Value {
        let mut operation = json!({
            "operationId": id,
            "summary": summary,
            "parameters": parameters,
            "responses": self.error_responses(responses),
        });
        if let Some(body) = body {
            operation["requestBody"] = body;
        }
        operation
    }

    fn ok(code: &str, description: &str, content: Value) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert(
            code.into(),
            json!({"description": description, "content": content}),
        );
        map
    }

    fn kind<K: GatewayKind>(&mut self, kind: &str) {
        let object = self.schema::<K>();
        let list = self.list_schema(kind, &object);
        let delete = self.schema::<DeleteResponse>();
        let base = if is_namespaced::<K>() {
            vec![namespace_param()]
        } else {
            Vec::new()
        };
        let with_name = [base.clone(), vec![name_param()]].concat();
        let collection = K::COLLECTION.to_owned();
        let body = json!({"required": true, "content": json_content(&object)});
        let list_params = vec![
            param(
                "labelSelector",
                "query",
                false,
                json!({"type": "string"}),
                "Kubernetes label selector, e.g. `app=web`.",
            ),
            param(
                "limit",
                "query",
                false,
                json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
                "Page size.",
            ),
            param(
                "continue",
                "query",
                false,
                json!({"type": "string"}),
                "Continue token from the previous page's `metadata.continue`.",
            ),
        ];
        let list_op = self.operation(
            format!("list{kind}"),
            format!("List {kind} objects"),
            [base.clone(), list_params].concat(),
            None,
            Self::ok("200", "The list", json_content(&list)),
        );
        let create_op = self.operation(
            format!("create{kind}"),
            format!("Create a {kind}"),
            base.clone(),
            Some(body.clone()),
            Self::ok("201", "Created", json_content(&object)),
        );
        self.paths.insert(
            collection.clone(),
            json!({"get": list_op, "post": create_op}),
        );
        let get_op = self.operation(
            format!("read{kind}"),
            format!("Read a {kind}"),
            with_name.clone(),
            None,
            Self::ok("200", "The object", json_content(&object)),
        );
        let put_op = self.operation(
            format!("replace{kind}"),
            format!("Replace a {kind} (send metadata.resourceVersion)"),
            with_name.clone(),
            Some(body),
            Self::ok("200", "Replaced", json_content(&object)),
        );
        let patch_body = json!({"required": true, "content": {"application/merge-patch+json": {"schema": {"type": "object"}}}});
        let patch_op = self.operation(
            format!("patch{kind}"),
            format!("Merge-patch a {kind}"),
            with_name.clone(),
            Some(patch_body),
            Self::ok("200", "Patched", json_content(&object)),
        );
        let mut delete_responses = Self::ok("200", "Deleted", json_content(&delete));
        delete_responses.insert("202".into(), json!({"description": "Deletion started; finalizers still run", "content": json_content(&delete)}));
        let delete_op = self.operation(
            format!("delete{kind}"),
            format!("Delete a {kind}"),
            with_name.clone(),
            None,
            delete_responses,
        );
        self.paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": get_op, "put": put_op, "patch": patch_op, "delete": delete_op}),
        );
        let status_op = self.operation(
            format!("read{kind}Status"),
            format!("Read a {kind} with its status"),
            with_name,
            None,
            Self::ok("200", "The object and its status", json_content(&object)),
        );
        self.paths.insert(
            format!("{collection}/{{name}}/status"),
            json!({"get": status_op}),
        );
    }

    fn list_schema(&mut self, kind: &str, item: &Schema) -> Value {
        json!({
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

    fn workload_extras(&mut self) {
        let request = self.schema::<ImagesRequest>();
        let response = self.schema::<ImagesResponse>();
        let params = vec![
            namespace_param(),
            name_param(),
            param(
                "wait",
                "query",
                false,
                json!({"type": "string", "pattern": "^[0-9]{1,9}(ms|s|m|h)?$"}),
                "Wait until every placement runs the new generation Ready, at most this long (e.g. `120s`; at most 1h).",
            ),
        ];
        let mut responses = Self::ok(
            "200",
            "Images set (and, with wait, rolled out everywhere)",
            json_content(&response),
        );
        responses.insert("504".into(), json!({"description": "The wait ended before every placement was Ready; `rollout` says which are not", "content": json_content(&response)}));
        let images = self.operation(
            "setWorkloadImages".into(),
            "Set container images of a Workload (the CI hook)".into(),
            params,
            Some(json!({"required": true, "content": json_content(&request)})),
            responses,
        );
        self.paths.insert(
            format!("{}/{{name}}/images", Workload::COLLECTION),
            json!({"post": images}),
        );
        let event = self.schema::<WatchEventDoc>();
        let watch = self.operation(
            "watchWorkloadStatus".into(),
            "Follow a Workload's status as server-sent events (`status`, `deleted`, `error`)".into(),
            vec![namespace_param(), name_param()],
            None,
            Self::ok("200", "An event stream; each `status` event's data is a WatchEventDoc", json!({"text/event-stream": {"schema": {"type": "string", "description": "data lines hold JSON", "contentSchema": event}}})),
        );
        self.paths.insert(
            format!("{}/{{name}}/watch", Workload::COLLECTION),
            json!({"get": watch}),
        );
    }

    fn identity(&mut self) {
        let who = self.schema::<WhoAmI>();
        let whoami = self.operation(
            "whoami".into(),
            "The caller's user name and groups, as the management cluster's TokenReview gives them"
                .into(),
            vec![],
            None,
            Self::ok("200", "The caller", json_content(&who)),
        );
        self.paths
            .insert("/v1/whoami".into(), json!({"get": whoami}));
        let allowed = self.schema::<WorkloadPermissions>();
        let permissions = self.operation(
            "workloadPermissions".into(),
            "What the caller may do with a Workload (get, watch, patch, delete), as RBAC decides"
                .into(),
            vec![namespace_param(), name_param()],
            None,
            Self::ok("200", "One flag per verb", json_content(&allowed)),
        );
        self.paths.insert(
            format!("{}/{{name}}/permissions", Workload::COLLECTION),
            json!({"get": permissions}),
        );
    }

    fn system(&mut self) {
        let version = self.schema::<VersionInfo>();
        let text = |description: &str| json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}});
        self.paths.insert("/version".into(), json!({"get": {"operationId": "version", "security": [], "responses": {"200": {"description": "Gateway version", "content": json_content(&version)}}}}));
        self.paths.insert("/healthz".into(), json!({"get": {"operationId": "healthz", "security": [], "responses": {"200": text("The process is alive")}}}));
        let error = self.schema::<ErrorBody>();
        self.paths.insert("/readyz".into(), json!({"get": {"operationId": "readyz", "security": [], "responses": {"200": text("The management API is reachable"), "503": {"description": "The management API is unreachable", "content": json_content(&error)}}}}));
        self.paths.insert("/metrics".into(), json!({"get": {"operationId": "metrics", "security": [], "responses": {"200": text("Prometheus text exposition")}}}));
        self.paths.insert("/openapi.json".into(), json!({"get": {"operationId": "openapi", "security": [], "responses": {"200": {"description": "This document", "content": {"application/json": {"schema": {"type": "object"}}}}}}}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_route_with_resolvable_refs() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for path in [
            "/v1/namespaces/{namespace}/workloads",
            "/v1/namespaces/{namespace}/workloads/{name}",
            "/v1/namespaces/{namespace}/workloads/{name}/status",
            "/v1/namespaces/{namespace}/workloads/{name}/images",
            "/v1/namespaces/{namespace}/workloads/{name}/watch",
            "/v1/namespaces/{namespace}/workloads/{name}/permissions",
            "/v1/whoami",
            "/v1/namespaces/{namespace}/workloadinstances/{name}",
            "/v1/runtimes",
            "/v1/runtimes/{name}/status",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = reference.split('"').next().unwrap_or_default();
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("ref outside components: {target}"));
            assert!(schemas.contains_key(name), "dangling ref {target}");
        }
        let workload = &schemas["Workload"];
        assert!(workload.to_string().contains("images"), "{workload}");
    }
}
