//! The router without a cluster: a management API that does not listen.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use qleetos_api_gateway::notify::Notifier;
use qleetos_api_gateway::{AppState, ErrorBody, Settings, app};
use serde_json::Value;
use tower::ServiceExt as _;

fn unreachable_state() -> AppState {
    let url = "https://127.0.0.1:1".parse().expect("url");
    let mut config = kube::Config::new(url);
    config.connect_timeout = Some(Duration::from_secs(1));
    let client = kube::Client::try_from(config).expect("client");
    AppState::new(client, Notifier::default(), Settings::default())
}

async fn call(request: Request<Body>) -> (StatusCode, String) {
    let response = app(unreachable_state())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get_request(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn error(body: &str) -> ErrorBody {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {body}"))
}

#[tokio::test]
async fn serves_version_health_and_openapi() {
    let (status, body) = call(get_request("/version")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""version":"0.1.0""#), "{body}");
    assert_eq!(call(get_request("/healthz")).await.0, StatusCode::OK);
    let (status, body) = call(get_request("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""openapi":"3.1.0""#));
}

#[tokio::test]
async fn missing_or_malformed_tokens_are_401() {
    let (status, body) = call(get_request("/v1/namespaces/a/workloads")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error(&body).reason, "Unauthorized");
    let request = Request::get("/v1/runtimes")
        .header("authorization", "Basic c2VjcmV0LXRva2Vu")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        !body.contains("c2VjcmV0LXRva2Vu"),
        "credential echoed: {body}"
    );
}

#[tokio::test]
async fn unreachable_management_api_is_503_quickly() {
    let start = Instant::now();
    let request = Request::get("/v1/runtimes")
        .header("authorization", "Bearer some-token")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.contains("some-token"), "token echoed: {body}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let (status, body) = call(get_request("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error(&body).code, 503);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_error_shape() {
    let (status, body) = call(get_request("/v2/nothing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&body).code, 404);
    let request = Request::delete("/version")
        .body(Body::empty())
        .expect("request");
    let (status, body) = call(request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error(&body).code, 405);
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let router = app(unreachable_state());
    let _ = router
        .clone()
        .oneshot(get_request("/v1/namespaces/a/workloads/web"))
        .await
        .expect("infallible");
    let response = router
        .oneshot(get_request("/metrics"))
        .await
        .expect("infallible");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(r#"route="/v1/namespaces/{namespace}/workloads/{name}",status="401""#),
        "{text}"
    );
}

/// The console's static files (`/ui`, `/ui/`, `/ui/app.js`, `/ui/app.css`) are pages, not part
/// of the REST API: the only routes the document leaves out.
const CONSOLE: &str = "/ui";

/// The methods probed on every path. HEAD is left out: axum answers it wherever GET is served.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

/// Every (method, path template) `router` serves: the paths from its routing table (axum's
/// `Debug` lists them as `RouteId(n): "/path"`), each method probed on the path (a method a
/// path does not serve answers 405). The fallback's own table is not read.
async fn served_routes(router: &Router) -> BTreeSet<(String, String)> {
    let table = format!("{router:?}");
    let table = table
        .split("fallback_router")
        .next()
        .expect("the Debug output names the path router first");
    let paths: BTreeSet<&str> = table
        .split("RouteId(")
        .skip(1)
        .filter_map(|entry| {
            let (id, rest) = entry.split_once("): \"")?;
            id.chars().all(|c| c.is_ascii_digit()).then_some(())?;
            rest.split('"').next()
        })
        .collect();
    assert!(
        paths.contains("/healthz"),
        "the routing table could not be read from axum's Debug output: {table}"
    );
    let mut served = BTreeSet::new();
    for path in paths {
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            let request = Request::builder()
                .method(method.clone())
                .uri(&concrete)
                .body(Body::empty())
                .expect("request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            if response.status() != StatusCode::METHOD_NOT_ALLOWED {
                served.insert((method.to_string(), path.to_owned()));
            }
        }
    }
    served
}

async fn document() -> Value {
    let (status, body) = call(get_request("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&body).expect("the document is JSON")
}

/// Every (method, path) the document describes.
fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    documented
}

#[tokio::test]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let served: BTreeSet<_> = served_routes(&app(unreachable_state()))
        .await
        .into_iter()
        .filter(|(_, path)| !path.starts_with(CONSOLE))
        .collect();
    let documented = documented_routes(&document().await);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in /openapi.json: {undocumented:?}; documented but not served: {unserved:?}"
    );
    // 8 kinds × 7 operations, the Workload's images, rollback, plan, approve, watch and
    // permissions, whoami, and the five system routes.
    assert_eq!(served.len(), 8 * 7 + 7 + 5, "{served:?}");
}

#[tokio::test]
async fn a_route_added_beside_the_declarations_is_noticed() {
    let router = app(unreachable_state()).route("/v1/undocumented", get(|| async { "hidden" }));
    let served = served_routes(&router).await;
    assert!(served.contains(&("GET".to_owned(), "/v1/undocumented".to_owned())));
    assert!(served.contains(&("GET".to_owned(), "/ui/app.js".to_owned())));
    let documented = documented_routes(&document().await);
    assert!(!documented.contains(&("GET".to_owned(), "/v1/undocumented".to_owned())));
}

#[tokio::test]
async fn the_document_resolves_its_refs_and_describes_the_kinds() {
    let doc = document().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap_or_default();
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("ref outside components: {target}"));
        assert!(schemas.contains_key(name), "dangling ref {target}");
    }
    for kind in [
        "Workload",
        "WorkloadInstance",
        "KubernetesRuntime",
        "SupportServiceProfile",
        "SupportService",
        "ServiceProfile",
        "WorkloadServiceDependency",
        "KubernetesRuntimeProfile",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(kind), "{kind} missing");
    }
    assert!(schemas["Workload"].to_string().contains("images"));
    let workload = &doc["paths"]["/v1/namespaces/{namespace}/workloads/{name}"];
    let parameters: Vec<_> = workload["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| {
            (
                p["name"].as_str(),
                p["in"].as_str(),
                p["required"].as_bool(),
            )
        })
        .collect();
    assert_eq!(
        parameters,
        [
            (Some("namespace"), Some("path"), Some(true)),
            (Some("name"), Some("path"), Some(true))
        ]
    );
    let list = &doc["paths"]["/v1/runtimes"]["get"];
    let names: BTreeSet<_> = list["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["continue", "labelSelector", "limit"])
    );
    let limit = list["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
        .expect("limit");
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 1000);
    assert_eq!(list["security"], serde_json::json!([{"bearer": []}]));
    assert_eq!(
        list["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let delete = &workload["delete"]["responses"];
    assert!(
        delete["200"].is_object() && delete["202"].is_object(),
        "{delete}"
    );
    let images = &doc["paths"]["/v1/namespaces/{namespace}/workloads/{name}/images"]["post"];
    assert!(images["responses"]["504"].is_object(), "{images}");
    let healthz = &doc["paths"]["/healthz"]["get"];
    assert!(healthz.get("security").is_none() && doc.get("security").is_none());
}
