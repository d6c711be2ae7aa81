//! `GET /openapi.json`: the OpenAPI 3.1 document, derived from the route declarations. Every
//! route is declared once, with aide's `api_route` beside its handler (`routes/*`), and the
//! same `ApiRouter` yields both the axum router and this document ([`finish`]). Schemas come
//! from schemars, from the same Rust types the CRDs and the handlers use; the path parameters
//! from the route templates; security and the error response from the `Caller` extractor.
//!
//! This module is the bottom of the HTTP stack: it knows the error shape and the name
//! patterns, never a route.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{ApiMethodRouter, get_with};
use aide::generate::{GenContext, in_context};
use aide::openapi::{
    Components, Info, MediaType, OpenApi, Operation, Parameter, ParameterData,
    ParameterSchemaOrContent, PathStyle, ReferenceOr, RequestBody, Response, SchemaObject,
    SecurityScheme, Server, StatusCode as DocStatus,
};
use aide::transform::TransformOperation;
use axum::Router;
use axum::extract::Extension;
use axum::response::{IntoResponse, Response as HttpResponse};
use http::header::CONTENT_TYPE;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, json_schema};

use crate::error::ErrorBody;
use crate::query::{LABEL_PATTERN, SUBDOMAIN_PATTERN};

/// The media type of every JSON body.
pub const JSON: &str = "application/json";
/// The name of the bearer security scheme.
pub const BEARER: &str = "bearer";
const ERROR_DESCRIPTION: &str =
    "Error (400 malformed, 401, 403, 404, 409, 413, 415, 422, 503, ...)";

/// The served document, serialized once when the router is built.
#[derive(Clone, Debug)]
pub struct Document(Arc<str>);

impl Document {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Prepares this thread's aide context for a new document: schemars' draft 2020-12 with every
/// named schema under `#/components/schemas/`, and only the responses the declarations state.
/// Call before declaring routes; [`finish`] ends the document.
pub fn begin() {
    aide::generate::infer_responses(false);
    in_context(|ctx| {
        ctx.schema = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "#/components/schemas/".into();
                s.meta_schema = None;
            })
            .into_generator();
    });
}

/// Splits the declared routes into the axum router and the document.
pub fn finish<S: Clone + Send + Sync + 'static>(routes: ApiRouter<S>) -> (Router<S>, Document) {
    let mut api = OpenApi {
        info: Info {
            title: "QleetOS gateway".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: Some("REST gateway to the QleetOS custom resources. Every call runs as the caller (bearer token, reviewed by the management cluster and impersonated), so Kubernetes RBAC decides. Errors share one shape (ErrorBody). `POST .../images?wait=` answers 200 once rolled out and 504 when the wait ends first.".into()),
            ..Info::default()
        },
        servers: vec![Server {
            url: "/".into(),
            ..Server::default()
        }],
        components: Some(Components::default()),
        ..OpenApi::default()
    };
    let router = routes.finish_api_with(&mut api, |t| {
        t.security_scheme(
            BEARER,
            SecurityScheme::Http {
                scheme: "bearer".into(),
                bearer_format: None,
                description: None,
                extensions: Default::default(),
            },
        )
    });
    add_path_parameters(&mut api);
    let text = serde_json::to_string(&api).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    (router, Document(text.into()))
}

/// The declaration of `GET /openapi.json` (served from the [`Document`] extension).
pub fn route<S: Clone + Send + Sync + 'static>() -> ApiMethodRouter<S> {
    get_with(serve, |op| {
        op.id("openapi").respond(
            200,
            response("This document", JSON, json_schema!({"type": "object"})),
        )
    })
}

async fn serve(Extension(document): Extension<Document>) -> HttpResponse {
    ([(CONTENT_TYPE, JSON)], document.as_str().to_owned()).into_response()
}

/// The schema of `T`: a reference into the components when `T` is named.
pub fn schema<T: JsonSchema>() -> Schema {
    in_context(|ctx| ctx.schema.subschema_for::<T>())
}

/// A response with one media type.
pub fn response(description: &str, media: &str, schema: Schema) -> Response {
    Response {
        description: description.into(),
        content: [(media.to_owned(), media_type(schema))]
            .into_iter()
            .collect(),
        ..Response::default()
    }
}

/// A JSON response of `T`.
pub fn json<T: JsonSchema>(description: &str) -> Response {
    response(description, JSON, schema::<T>())
}

/// A plain-text response.
pub fn text(description: &str) -> Response {
    response(description, "text/plain", json_schema!({"type": "string"}))
}

fn media_type(schema: Schema) -> MediaType {
    MediaType {
        schema: Some(SchemaObject {
            json_schema: schema,
            example: None,
            external_docs: None,
        }),
        ..MediaType::default()
    }
}

/// What an authenticated operation adds (the `Caller` extractor calls it): the bearer scheme
/// and the shared error response.
pub fn authenticated(ctx: &mut GenContext, operation: &mut Operation) {
    operation
        .security
        .push([(BEARER.to_owned(), Vec::new())].into_iter().collect());
    let error = ctx.schema.subschema_for::<ErrorBody>();
    operation
        .responses
        .get_or_insert_with(Default::default)
        .default = Some(ReferenceOr::Item(response(ERROR_DESCRIPTION, JSON, error)));
}

/// Short forms for the declarations.
pub trait OperationExt: Sized {
    /// Adds (or replaces) the response of `code`.
    fn respond(self, code: u16, response: Response) -> Self;
    /// Sets the required request body.
    fn body(self, media: &str, schema: Schema) -> Self;
}

impl OperationExt for TransformOperation<'_> {
    fn respond(mut self, code: u16, response: Response) -> Self {
        self.inner_mut()
            .responses
            .get_or_insert_with(Default::default)
            .responses
            .insert(DocStatus::Code(code), ReferenceOr::Item(response));
        self
    }

    fn body(mut self, media: &str, schema: Schema) -> Self {
        self.inner_mut().request_body = Some(ReferenceOr::Item(RequestBody {
            description: None,
            content: [(media.to_owned(), media_type(schema))]
                .into_iter()
                .collect(),
            required: true,
            extensions: Default::default(),
        }));
        self
    }
}

/// The parameters named in a route template, in order.
pub fn template_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// The documentation of a path parameter; `None` for a name the gateway does not know.
pub fn path_parameter(name: &str) -> Option<Parameter> {
    let (schema, description) = match name {
        "namespace" => (
            json_schema!({"type": "string", "pattern": LABEL_PATTERN, "minLength": 1, "maxLength": 63}),
            "Namespace of the object.",
        ),
        "name" => (
            json_schema!({"type": "string", "pattern": SUBDOMAIN_PATTERN, "minLength": 1, "maxLength": 253}),
            "Name of the object.",
        ),
        _ => return None,
    };
    Some(Parameter::Path {
        parameter_data: ParameterData {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            required: true,
            format: ParameterSchemaOrContent::Schema(SchemaObject {
                json_schema: schema,
                example: None,
                external_docs: None,
            }),
            extensions: Default::default(),
            deprecated: None,
            example: None,
            examples: Default::default(),
            explode: None,
        },
        style: PathStyle::Simple,
    })
}

/// Documents every template parameter of every operation, before its query parameters. A
/// template naming an unknown parameter panics: the router is built at start-up, and the
/// tests build it.
fn add_path_parameters(api: &mut OpenApi) {
    let Some(paths) = api.paths.as_mut() else {
        return;
    };
    for (path, item) in &mut paths.paths {
        let ReferenceOr::Item(item) = item else {
            continue;
        };
        let parameters: Vec<_> = template_parameters(path)
            .into_iter()
            .map(|name| {
                path_parameter(name).unwrap_or_else(|| {
                    panic!("{path}: document the path parameter {{{name}}} in openapi.rs")
                })
            })
            .collect();
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            let own = std::mem::take(&mut operation.parameters);
            operation.parameters = parameters
                .iter()
                .cloned()
                .map(ReferenceOr::Item)
                .chain(own)
                .collect();
        }
    }
}
