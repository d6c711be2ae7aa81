//! The router without a cluster: a management API that does not listen.

use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use qleetos_api_gateway::notify::Notifier;
use qleetos_api_gateway::{AppState, ErrorBody, Settings, app};
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

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn error(body: &str) -> ErrorBody {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {body}"))
}

#[tokio::test]
async fn serves_version_health_and_openapi() {
    let (status, body) = call(get("/version")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""version":"0.1.0""#), "{body}");
    assert_eq!(call(get("/healthz")).await.0, StatusCode::OK);
    let (status, body) = call(get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""openapi":"3.1.0""#));
}

#[tokio::test]
async fn missing_or_malformed_tokens_are_401() {
    let (status, body) = call(get("/v1/namespaces/a/workloads")).await;
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
    let (status, body) = call(get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error(&body).code, 503);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_error_shape() {
    let (status, body) = call(get("/v2/nothing")).await;
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
        .oneshot(get("/v1/namespaces/a/workloads/web"))
        .await
        .expect("infallible");
    let response = router.oneshot(get("/metrics")).await.expect("infallible");
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
