//! The chart repository of the test environment: a classic Helm repository built once by
//! `e2e/scripts/charts.sh` (the official external-dns chart and the test charts, packaged by
//! the real `helm`), served over HTTP on loopback for the life of the process. Operators of
//! the environment fetch the official repositories the shipped profiles name from it
//! (`--chart-mirror`), and render with the pinned `helm` (`--helm`).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::OnceCell;

use crate::binaries::{helm, run_install_script};
use crate::error::Error;

mod oci;
pub use oci::OciRegistry;

const CHARTS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/charts.sh");

/// The official repository of the external-dns chart, as the shipped `dns` profile names it.
pub const EXTERNAL_DNS_REPOSITORY: &str = "https://kubernetes-sigs.github.io/external-dns/";

/// The served repository and the renderer operators use.
#[derive(Debug)]
pub struct ChartRepository {
    /// `http://127.0.0.1:<port>/charts/`, where `index.yaml` is.
    pub url: String,
    pub dir: PathBuf,
    pub helm: PathBuf,
}

static REPOSITORY: OnceCell<ChartRepository> = OnceCell::const_new();

impl ChartRepository {
    /// The repository, built and served on first use.
    pub async fn get() -> Result<&'static ChartRepository, Error> {
        REPOSITORY.get_or_try_init(Self::start).await
    }

    async fn start() -> Result<ChartRepository, Error> {
        let helm = helm().await?;
        let dir = run_install_script(CHARTS_SCRIPT).await.map_err(|detail| {
            Error::Setup(format!(
                "the chart repository is missing: run `make kube-bins` (needs helm and the Go module proxy); {detail}"
            ))
        })?;
        let dir = PathBuf::from(dir);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| Error::Setup(format!("chart repository: cannot listen: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::Setup(format!("chart repository: {e}")))?
            .port();
        let app = Router::new()
            .route("/charts/{file}", get(serve))
            .with_state(dir.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the chart repository stopped");
            }
        });
        Ok(ChartRepository {
            url: format!("http://127.0.0.1:{port}/charts/"),
            dir,
            helm,
        })
    }

    /// The operator flags that render with the pinned helm and fetch the official
    /// repositories of the shipped profiles from this one.
    pub fn operator_args(&self) -> Vec<String> {
        vec![
            format!("--helm={}", self.helm.display()),
            format!("--chart-mirror={EXTERNAL_DNS_REPOSITORY}={}", self.url),
        ]
    }
}

/// One file of the repository directory; nothing outside it.
async fn serve(State(dir): State<PathBuf>, Path(file): Path<String>) -> Response {
    if file.contains('/') || file.starts_with('.') {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(dir.join(&file)).await {
        Ok(bytes) => {
            let kind = if file.ends_with(".yaml") {
                "application/yaml"
            } else {
                "application/gzip"
            };
            ([(header::CONTENT_TYPE, kind)], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
