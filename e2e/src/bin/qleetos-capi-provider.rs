//! `qleetos-capi-provider`: the test environment's Cluster API infrastructure, control-plane
//! and bootstrap provider (see `qleetos_e2e::cluster_api::provider`). Reads `KUBECONFIG`
//! for the management cluster; runs until SIGTERM or SIGINT, then stops the local clusters
//! it started.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use qleetos_e2e::cluster_api::provider;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(
    about = "Turn Cluster API Clusters of the ClusterClass qleetos-local into local clusters"
)]
struct Args {
    /// Where local clusters live (`<dir>/<namespace>/<cluster>`).
    #[arg(long)]
    dir: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    qleetos_e2e::init_logging();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the management cluster (KUBECONFIG)")?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    provider::run(client, args.dir, shutdown).await?;
    Ok(())
}
