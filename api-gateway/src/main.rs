//! `qleetos-api-gateway`: the REST gateway CI systems and scripts call (see the library).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use qleetos_api_gateway::notify::Notifier;
use qleetos_api_gateway::{AppState, Settings, app};
use qleetos_crds::notification::{NatsAuth, redact_url};
use tracing_subscriber::EnvFilter;

/// QleetOS REST gateway. Reaches the management cluster through KUBECONFIG (or in-cluster
/// config); needs only `create tokenreviews` and `impersonate` there.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443", env = "QLEETOS_GATEWAY_ADDR")]
    listen: SocketAddr,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// NATS server for change notifications; without it the operator's watchers notice writes.
    #[arg(long, env = "QLEETOS_NATS_URL")]
    nats_url: Option<String>,
    #[command(flatten)]
    nats: NatsAuth,
    /// Time limit of a request (except `?wait=` and watch streams).
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    request_timeout: u64,
    /// How long connecting to the management API may take before answering 503.
    #[arg(long, default_value = "2", value_name = "SECONDS")]
    connect_timeout: u64,
    /// Largest request body accepted.
    #[arg(long, default_value = "1048576", value_name = "BYTES")]
    max_body_bytes: usize,
    /// Longest `?wait=` accepted.
    #[arg(long, default_value = "3600", value_name = "SECONDS")]
    max_wait: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let mut config = kube::Config::infer()
        .await
        .context("loading the management cluster's kubeconfig")?;
    config.connect_timeout = Some(Duration::from_secs(args.connect_timeout));
    config.read_timeout = Some(Duration::from_secs(60));
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let auth = args.nats.clone();
    let (nats_url, auth) = match &args.nats_url {
        Some(url) => {
            tracing::info!(nats = %redact_url(url), "notifying the Qleets through NATS");
            let (url, auth) = auth.take_url_credentials(url);
            (Some(url), auth)
        }
        None => (None, auth),
    };
    let notifier = Notifier::connect(nats_url.as_deref(), &auth)
        .await
        .context("configuring NATS")?;
    let settings = Settings {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout),
        max_wait: Duration::from_secs(args.max_wait),
        ..Settings::default()
    };
    let router = app(AppState::new(client, notifier, settings));
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let service = router.into_make_service();
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            ensure_crypto_provider();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| format!("loading {} and {}", cert.display(), key.display()))?;
            tracing::info!(addr = %args.listen, "qleetos-api-gateway listening (https)");
            axum_server::bind_rustls(args.listen, tls)
                .handle(handle)
                .serve(service)
                .await
        }
        _ => {
            tracing::info!(addr = %args.listen, "qleetos-api-gateway listening (http)");
            axum_server::bind(args.listen)
                .handle(handle)
                .serve(service)
                .await
        }
    }
    .with_context(|| format!("serving on {}", args.listen))
}

/// ring as rustls's process-wide provider, unless a client (NATS, the Kubernetes client)
/// already installed one: installing twice is an error, and either serves HTTPS.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed one meanwhile, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
