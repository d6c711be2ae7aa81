//! Issue 12's control-plane trials: the Qleets on a three-server NATS cluster with every work
//! queue and bucket replicated on all three. A one-server layout is scaled up in place; losing
//! any one server (the stream leader included), alone or with an operator replica, loses no
//! work and stalls it only for a leader election; a full cluster restart is caught up.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use kube::Client;
use qleetos_e2e::environment::Environment;
use qleetos_e2e::nats::NatsServer;
use serde_json::Value;

use crate::queue::{
    apply_burst, assert_all_applied, ensure_no_long_stall_within, ready_count, restart_replicas,
    restart_replicas_with, wait_all_ready, watch_finish,
};
use crate::support::eventually;

/// Servers of the cluster, and so replicas of every stream and bucket.
const SERVERS: usize = 3;
/// Workloads of a burst a server is killed in.
const BURST: usize = 200;
/// The stream whose leader is killed: the instances' work queue, the busiest.
const KILLED_STREAM: &str = "QLEETOS_WORKLOADINSTANCE";
/// How long a burst may stand still when a server dies: a new stream and consumer leader is
/// elected, clients reconnect to the survivors, pulls on the lost leader miss two heartbeats
/// (2 s each) and pull again, publishes that failed are resent (measured: 2 to 4 s).
/// Under the whole suite's load on two cores elections take longer (17 s seen).
const SERVER_LOSS_STALL: Duration = Duration::from_secs(20);
/// The same when an operator replica dies with it: its locks must also expire (10 s) and its
/// unacknowledged messages come back after the ack wait (reconcile timeout + 5 s).
const SERVER_AND_REPLICA_LOSS_STALL: Duration = Duration::from_secs(25);

/// Streams, consumers and buckets as one server of the cluster reports them.
#[derive(Debug)]
pub(crate) struct Layout {
    /// Name → (configured replicas, servers holding a copy: the leader and its followers).
    assets: Vec<(String, u64, usize)>,
}

impl Layout {
    /// Gathered from every live server: each reports only the streams it holds a copy of.
    pub(crate) async fn read(env: &Environment) -> Result<Self> {
        let mut assets: Vec<(String, u64, usize)> = Vec::new();
        for report in live_reports(env).await? {
            for asset in assets_of(&report) {
                if !assets.iter().any(|(name, _, _)| *name == asset.0) {
                    assets.push(asset);
                }
            }
        }
        Ok(Self { assets })
    }

    /// Every stream, consumer and bucket is configured with `replicas` and has that many copies.
    pub(crate) fn ensure_replicated(&self, replicas: usize) -> Result<()> {
        let expected = [
            "QLEETOS_WORKLOAD",
            "QLEETOS_WORKLOADINSTANCE",
            "KV_qleetos-locks",
            "KV_qleetos-retries",
        ];
        for name in expected {
            ensure!(
                self.assets.iter().any(|(n, _, _)| n == name),
                "{name} missing from the JetStream report: {self:?}"
            );
        }
        for (name, configured, copies) in &self.assets {
            let configured = usize::try_from(*configured)?;
            ensure!(
                configured == replicas && *copies == replicas,
                "{name}: {configured} replicas configured, {copies} copies (want {replicas})"
            );
        }
        Ok(())
    }
}

/// Each stream and consumer in one server's report: name, configured replicas, copies.
fn assets_of(report: &Value) -> Vec<(String, u64, usize)> {
    let mut assets = Vec::new();
    for stream in streams(report) {
        let name = stream["name"].as_str().unwrap_or_default().to_owned();
        assets.push((
            name.clone(),
            replicas_of(&stream["config"]),
            copies(&stream["cluster"]),
        ));
        for consumer in stream["consumer_detail"].as_array().into_iter().flatten() {
            let consumer_name = consumer["name"].as_str().unwrap_or_default();
            let config = replicas_of(&consumer["config"]);
            assets.push((
                format!("{name}/{consumer_name}"),
                config,
                copies(&consumer["cluster"]),
            ));
        }
    }
    assets
}

fn streams(report: &Value) -> impl Iterator<Item = &Value> {
    report["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
}

fn replicas_of(config: &Value) -> u64 {
    config["num_replicas"].as_u64().unwrap_or(0)
}

/// The leader plus its followers in a `cluster` block of the report.
fn copies(cluster: &Value) -> usize {
    let leader = usize::from(cluster["leader"].as_str().is_some_and(|l| !l.is_empty()));
    leader + cluster["replicas"].as_array().map_or(0, Vec::len)
}

/// The server leading `stream`, as a live server of the cluster reports it.
async fn leader_of(env: &Environment, stream: &str) -> Result<String> {
    for report in live_reports(env).await? {
        let leader = streams(&report)
            .find(|s| s["name"] == stream)
            .and_then(|s| s["cluster"]["leader"].as_str())
            .filter(|leader| !leader.is_empty());
        if let Some(leader) = leader {
            return Ok(leader.to_owned());
        }
    }
    bail!("no live server reports a leader of {stream}")
}

/// The JetStream report of every server that answers (a killed one does not).
async fn live_reports(env: &Environment) -> Result<Vec<Value>> {
    let mut reports = Vec::new();
    for server in env.nats_servers() {
        if let Ok(report) = server.jetstream_report().await {
            reports.push(serde_json::from_str(&report)?);
        }
    }
    Ok(reports)
}

fn server_named<'a>(env: &'a mut Environment, name: &str) -> Result<&'a mut NatsServer> {
    env.nats_servers_mut()
        .find(|s| s.server_name() == Some(name))
        .with_context(|| format!("no NATS server named {name}"))
}

/// Registered first, so it takes the fresh cluster before the others put three copies on it
/// (the environment's lock hands it out in the order the trials ask for it).
pub async fn nats_cluster_replicates_a_one_server_layout_in_place(
    env: &mut Environment,
) -> Result<()> {
    let (ns, client) = ("r-scale", env.management_client().await?);
    restart_replicas_with(env, 1, &["--nats-replicas=1"]).await?;
    eventually("a one-copy layout", Duration::from_secs(30), || async {
        Layout::read(env).await?.ensure_replicated(1).map(Some)
    })
    .await?;
    apply_burst(&client, ns, 20).await?;
    wait_all_ready(&client, ns, 20).await?;

    restart_replicas(env, 1).await?;
    eventually(
        "every stream on three servers",
        Duration::from_secs(60),
        || async {
            Layout::read(env)
                .await?
                .ensure_replicated(SERVERS)
                .map(Some)
        },
    )
    .await?;
    apply_burst(&client, "r-scaled", 20).await?;
    wait_all_ready(&client, "r-scaled", 20).await
}

pub async fn nats_cluster_loses_nothing_with_its_stream_leader(
    env: &mut Environment,
) -> Result<()> {
    let trial = "nats_cluster_loses_nothing_with_its_stream_leader";
    survives_a_kill_mid_burst(env, trial, "r-leader", false, SERVER_LOSS_STALL).await
}

pub async fn nats_cluster_loses_nothing_with_a_server_and_a_replica(
    env: &mut Environment,
) -> Result<()> {
    let trial = "nats_cluster_loses_nothing_with_a_server_and_a_replica";
    survives_a_kill_mid_burst(env, trial, "r-both", true, SERVER_AND_REPLICA_LOSS_STALL).await
}

/// [`kill_mid_burst`], then the killed server back, then: the burst never stood still longer
/// than `bound`, and every Workload is applied.
async fn survives_a_kill_mid_burst(
    env: &mut Environment,
    trial: &str,
    ns: &'static str,
    and_a_replica: bool,
    bound: Duration,
) -> Result<()> {
    let client = env.management_client().await?;
    let (leader, finish) = kill_mid_burst(env, &client, ns, and_a_replica).await?;
    rejoin(env, &leader).await?;
    ensure_no_long_stall_within(trial, &finish?, BURST, bound)?;
    assert_all_applied(env, ns, BURST).await
}

/// Two replicas take a burst of [`BURST`] Workloads; a tenth into it, the leader of
/// [`KILLED_STREAM`] is SIGKILLed (and, with `and_a_replica`, one replica at the same moment).
/// Returns the killed server's name and how the burst finished (an error once a server is
/// killed, so the caller brings it back whatever happened).
async fn kill_mid_burst(
    env: &mut Environment,
    client: &Client,
    ns: &'static str,
    and_a_replica: bool,
) -> Result<(String, Result<crate::queue::Finish>)> {
    restart_replicas(env, 2).await?;
    let burst = {
        let client = client.clone();
        tokio::spawn(async move { apply_burst(&client, ns, BURST).await })
    };
    eventually(
        "a tenth of the burst Ready",
        Duration::from_secs(120),
        || async { Ok((ready_count(client, ns).await? >= BURST / 10).then_some(())) },
    )
    .await?;
    let leader = leader_of(env, KILLED_STREAM).await?;
    let killed = Instant::now();
    server_named(env, &leader)?.kill();
    if and_a_replica {
        env.operators_mut()[0].kill();
    }
    println!("killed {leader}, the leader of {KILLED_STREAM}");
    let finish = async {
        ensure!(
            ready_count(client, ns).await? < BURST,
            "the burst finished before {leader} was killed; nothing was tested"
        );
        burst.await??;
        watch_finish(client, ns, BURST, killed).await
    };
    Ok((leader.clone(), finish.await))
}

/// Restarts the killed server and waits until it is current again, so the next trial can lose
/// another one without losing quorum.
async fn rejoin(env: &mut Environment, name: &str) -> Result<()> {
    let server = server_named(env, name)?;
    server.resume().await?;
    server.wait_current().await?;
    Ok(())
}

pub async fn nats_cluster_catches_up_after_a_full_restart(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("r-restart", env.management_client().await?);
    restart_replicas(env, 2).await?;
    apply_burst(&client, ns, 20).await?;
    wait_all_ready(&client, ns, 20).await?;
    let logs_from: Vec<usize> = env.operators().iter().map(|o| o.log().len()).collect();
    for server in env.nats_servers_mut() {
        server.stop().await;
    }
    apply_burst(&client, "r-restart-down", 30).await?;
    crate::queue::wait_publishes_missed(env, &logs_from, "r-restart-down", 30).await?;
    futures::future::try_join_all(env.nats_servers_mut().map(NatsServer::resume)).await?;
    futures::future::try_join_all(env.nats_servers_mut().map(NatsServer::wait_current)).await?;
    wait_all_ready(&client, "r-restart-down", 30).await?;
    assert_all_applied(env, "r-restart-down", 30).await?;
    Layout::read(env).await?.ensure_replicated(SERVERS)
}

/// The replicated trials, taking turns on an environment of their own with a NATS cluster.
pub fn trials(
    runtime: &std::sync::Arc<tokio::runtime::Runtime>,
    dir: &std::path::Path,
) -> (Vec<libtest_mimic::Trial>, crate::harness::TakingTurns) {
    let scenarios: [(&str, crate::harness::Exclusive); 4] = [
        (
            "nats_cluster_replicates_a_one_server_layout_in_place",
            |env| Box::pin(nats_cluster_replicates_a_one_server_layout_in_place(env)),
        ),
        ("nats_cluster_loses_nothing_with_its_stream_leader", |env| {
            Box::pin(nats_cluster_loses_nothing_with_its_stream_leader(env))
        }),
        (
            "nats_cluster_loses_nothing_with_a_server_and_a_replica",
            |env| Box::pin(nats_cluster_loses_nothing_with_a_server_and_a_replica(env)),
        ),
        ("nats_cluster_catches_up_after_a_full_restart", |env| {
            Box::pin(nats_cluster_catches_up_after_a_full_restart(env))
        }),
    ];
    let turns = crate::harness::TakingTurns::new(dir.join("replicated"), || {
        vec![qleetos_e2e::environment::RuntimeSpec::new(
            "eu-west",
            "eu-west-1",
            &[],
        )]
    })
    .with_nats_cluster(SERVERS);
    let trials = scenarios
        .into_iter()
        .map(|(name, scenario)| {
            let env = turns.clone();
            crate::harness::own_trial(name, runtime, async move { env.run(scenario).await })
        })
        .collect();
    (trials, turns)
}
