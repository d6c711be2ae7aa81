//! Request spans, alone in this binary: a scoped subscriber shares tracing's callsite cache
//! with every other test thread of the binary.

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use qleetos_api_gateway::notify::Notifier;
use qleetos_api_gateway::{AppState, Settings, app};
use tower::ServiceExt as _;

/// A log sink for one test.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test]
async fn log_lines_belong_to_a_request_span_without_credentials() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let request = Request::get("/v1/runtimes/eu?labelSelector=secret-selector")
        .header("authorization", "Bearer secret-token-123")
        .body(Body::empty())
        .expect("request");
    let url = "https://127.0.0.1:1".parse().expect("url");
    let mut config = kube::Config::new(url);
    config.connect_timeout = Some(Duration::from_secs(1));
    let client = kube::Client::try_from(config).expect("client");
    let state = AppState::new(client, Notifier::default(), Settings::default());
    let status = app(state)
        .oneshot(request)
        .await
        .expect("infallible")
        .status();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let text = String::from_utf8_lossy(&logs.0.lock().expect("log lock")).into_owned();
    let lines: Vec<_> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    for line in &lines {
        assert!(
            line.contains("request{method=GET route=/v1/runtimes/{name}}"),
            "a line outside the request span: {line}"
        );
    }
    for secret in ["secret-token-123", "secret-selector", "authorization"] {
        assert!(
            !text.to_lowercase().contains(secret),
            "{secret} logged: {text}"
        );
    }
}
