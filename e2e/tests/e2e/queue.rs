//! Issue 3 scenarios: Qleets driven by NATS JetStream (durable work, shared replicas,
//! per-object locks, requeue through the broker, drift, broker outages), and issue 7's
//! resilience: pull-stream interruptions, SIGTERM drains, short lock TTLs, settings that
//! follow the flags.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use qleetos_crds::{Conditions, Workload};
use qleetos_e2e::environment::Environment;
use qleetos_e2e::operator::{OperatorOptions, OperatorProcess};
use serde_json::{Value, json};

use crate::support::*;

const BURST_TIMEOUT: Duration = Duration::from_secs(300);
/// `--reconcile-timeout` of the replicas: bounds a drain on SIGTERM.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a burst may stand still after a replica is stopped or killed. The lock TTL
/// (10 s) and the ack wait (reconcile timeout + 5 s) bound it; the old 75 s lock TTL did not.
const STALL_BOUND: Duration = Duration::from_secs(25);
/// Workloads of a burst a replica is stopped or killed in: enough that a quarter of it is
/// Ready well before the rest (QleetOS converges a few dozen a second here).
const DISRUPTED_BURST: usize = 600;
const QLEET_KINDS: [&str; 3] = ["kubernetesruntime", "workload", "workloadinstance"];

/// Replicas with a short reconcile timeout and the default lock TTL (10 s).
pub fn replica_options() -> OperatorOptions {
    replica_options_with(&[])
}

fn replica_options_with(extra: &[&str]) -> OperatorOptions {
    let mut options = OperatorOptions::default();
    options.extra_args.extend([
        format!("--reconcile-timeout={}s", RECONCILE_TIMEOUT.as_secs()),
        "--resync=5m".to_owned(),
    ]);
    options
        .extra_args
        .extend(extra.iter().map(|a| (*a).to_owned()));
    options
}

fn config_workload(name: &str) -> serde_json::Value {
    let manifest = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("settings-{name}")},
        "data": {"owner": name}
    });
    workload(name, vec![manifest], json!({"regions": ["eu-west-1"]}))
}

/// Applies `count` ConfigMap workloads named `w-<i>` into `namespace`, 16 at a time.
pub(crate) async fn apply_burst(client: &Client, namespace: &str, count: usize) -> Result<()> {
    ensure_ns(client, namespace).await?;
    futures::stream::iter(0..count)
        .map(|i| async move {
            apply_workload(client, namespace, &config_workload(&format!("w-{i}"))).await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn ensure_ns(client: &Client, namespace: &str) -> Result<()> {
    qleetos_e2e::environment::ensure_namespace(client, namespace).await?;
    Ok(())
}

pub(crate) async fn ready_count(client: &Client, namespace: &str) -> Result<usize> {
    let workloads = Api::<Workload>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(workloads
        .items
        .iter()
        .filter(|w| {
            let status = w.status.clone().unwrap_or_default();
            status.is_ready() && status.observed_generation == w.metadata.generation
        })
        .count())
}

pub(crate) async fn wait_all_ready(client: &Client, namespace: &str, count: usize) -> Result<()> {
    eventually(
        &format!("{count} Workloads Ready in {namespace}"),
        BURST_TIMEOUT,
        || async {
            let ready = ready_count(client, namespace).await?;
            if ready == count {
                return Ok(Some(()));
            }
            anyhow::bail!("{ready}/{count} ready")
        },
    )
    .await
}

/// Every workload's ConfigMap is in the runtime with the right content: nothing half-applied.
pub(crate) async fn assert_all_applied(
    env: &Environment,
    namespace: &str,
    count: usize,
) -> Result<()> {
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let config_maps = Api::<ConfigMap>::namespaced(runtime, namespace)
        .list(&ListParams::default())
        .await?;
    for i in 0..count {
        let name = format!("w-{i}");
        let found = config_maps
            .items
            .iter()
            .find(|c| c.name_any() == format!("settings-{name}"));
        let owner = found
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get("owner"));
        ensure!(
            owner == Some(&name),
            "ConfigMap of {name} missing or wrong in the runtime"
        );
    }
    Ok(())
}

pub(crate) use qleetos_e2e::quiescence::metric;

/// Waits until a replica has seen the change of every Workload `w-<i>` of a burst into `ns`
/// made while NATS is down and said it could not publish its notification (what the resync
/// once NATS is back makes up for). `logs_from` is where each replica's log stood before.
pub(crate) async fn wait_publishes_missed(
    env: &Environment,
    logs_from: &[usize],
    ns: &str,
    count: usize,
) -> Result<()> {
    eventually(
        &format!("the replicas telling the notifications of {ns} missed"),
        TIMEOUT,
        || async {
            let mut missed = std::collections::BTreeSet::new();
            for (operator, from) in env.operators().iter().zip(logs_from) {
                let log = operator.log();
                let since = log.get(*from..).unwrap_or_default();
                for line in since.lines().filter(|l| {
                    l.contains("could not publish") || l.contains("was not acknowledged")
                }) {
                    let marker = format!(".workload.{ns}.");
                    if let Some(at) = line.find(&marker) {
                        let name: String = line[at + marker.len()..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                            .collect();
                        missed.insert(name);
                    }
                }
            }
            let all = (0..count).all(|i| missed.contains(&format!("w-{i}")));
            Ok(all.then_some(()))
        },
    )
    .await
}

pub(crate) async fn restart_replicas(env: &mut Environment, count: usize) -> Result<()> {
    restart_replicas_with(env, count, &[]).await
}

pub(crate) async fn restart_replicas_with(
    env: &mut Environment,
    count: usize,
    extra: &[&str],
) -> Result<()> {
    env.stop_operators().await;
    for _ in 0..count {
        env.start_operator(replica_options_with(extra)).await?;
    }
    Ok(())
}

/// How a burst finished after a disruption at `since`.
pub(crate) struct Finish {
    /// From the disruption until every Workload was Ready.
    all_ready: Duration,
    /// The longest time the Ready count stood still.
    longest_stall: Duration,
}

pub(crate) async fn watch_finish(
    client: &Client,
    namespace: &str,
    count: usize,
    since: Instant,
) -> Result<Finish> {
    let (mut last_count, mut last_change) = (usize::MAX, since);
    let mut longest_stall = Duration::ZERO;
    loop {
        let ready = ready_count(client, namespace).await?;
        let now = Instant::now();
        if ready != last_count {
            longest_stall = longest_stall.max(now - last_change);
            (last_count, last_change) = (ready, now);
        }
        if ready == count {
            return Ok(Finish {
                all_ready: now - since,
                longest_stall,
            });
        }
        ensure!(
            now - since < BURST_TIMEOUT,
            "{ready}/{count} Workloads Ready {BURST_TIMEOUT:?} after the disruption"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ensure_no_long_stall(trial: &str, finish: &Finish, count: usize) -> Result<()> {
    ensure_no_long_stall_within(trial, finish, count, STALL_BOUND)
}

/// The burst never stood still for longer than `bound`.
pub(crate) fn ensure_no_long_stall_within(
    trial: &str,
    finish: &Finish,
    count: usize,
    bound: Duration,
) -> Result<()> {
    println!(
        "{trial}: all {count} Workloads Ready {:.1}s after the disruption; longest time without progress {:.1}s",
        finish.all_ready.as_secs_f64(),
        finish.longest_stall.as_secs_f64()
    );
    ensure!(
        finish.longest_stall <= bound,
        "the burst stood still for {:.1}s (bound {bound:?})",
        finish.longest_stall.as_secs_f64()
    );
    Ok(())
}

/// Every message the replica received was handled to its end (reconciled, requeued for
/// contention or dropped as invalid): nothing was cancelled half-way.
async fn every_message_handled(operator: &OperatorProcess) -> Result<()> {
    eventually("every received message handled", TIMEOUT, || async {
        let text = operator.metrics().await?;
        for kind in QLEET_KINDS {
            let count = |outcome: &str| {
                metric(
                    &text,
                    &format!(
                        r#"qleetos_messages_total{{controller="{kind}",outcome="{outcome}"}}"#
                    ),
                )
            };
            let (received, handled) = (count("received"), count("handled"));
            ensure!(
                received == handled,
                "{kind}: {received} messages received, {handled} handled"
            );
        }
        Ok(Some(()))
    })
    .await
}

/// No reconcile of the replica lost its lock or was aborted.
fn ensure_no_lock_lost(metrics: &str) -> Result<()> {
    for kind in QLEET_KINDS {
        let lost = metric(
            metrics,
            &format!(r#"qleetos_lock_releases_total{{controller="{kind}",outcome="lost"}}"#),
        );
        let aborted = metric(
            metrics,
            &format!(
                r#"qleetos_reconciles_aborted_total{{controller="{kind}",reason="LockLost"}}"#
            ),
        );
        ensure!(
            lost == 0.0 && aborted == 0.0,
            "{kind}: {lost} locks lost, {aborted} reconciles aborted"
        );
    }
    Ok(())
}

pub async fn pending_work_waits_for_an_operator(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-offline", env.management_client().await?);
    let stopped: Vec<u32> = env.operators().iter().map(OperatorProcess::pid).collect();
    env.stop_operators().await;
    apply_burst(&client, ns, 20).await?;
    // No QleetOS process is left to act: every replica has exited (nothing runs that could
    // reconcile), and the API server holds the whole burst.
    eventually("every stopped replica gone", TIMEOUT, || async {
        let gone = env.operators().is_empty()
            && stopped.iter().all(|pid| !qleetos_e2e::fleet::alive(*pid));
        Ok(gone.then_some(()))
    })
    .await?;
    let untouched = Api::<Workload>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    ensure!(
        untouched.items.len() == 20,
        "{} Workloads stored",
        untouched.items.len()
    );
    ensure!(
        untouched.items.iter().all(|w| w.status.is_none()),
        "something reconciled with no operator running"
    );
    env.start_operator(replica_options()).await?;
    wait_all_ready(&client, ns, 20).await?;
    assert_all_applied(env, ns, 20).await
}

pub async fn two_replicas_share_work_without_overlap(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-pair", env.management_client().await?);
    restart_replicas(env, 2).await?;
    apply_burst(&client, ns, 200).await?;
    wait_all_ready(&client, ns, 200).await?;
    assert_all_applied(env, ns, 200).await?;
    for operator in env.operators() {
        let metrics = operator.metrics().await?;
        let done = metric(
            &metrics,
            r#"qleetos_reconciles_total{controller="workloadinstance"}"#,
        );
        ensure!(
            done > 0.0,
            "replica {} reconciled no instance",
            operator.log_path().display()
        );
        let lost = metric(
            &metrics,
            r#"qleetos_lock_releases_total{controller="workloadinstance",outcome="lost"}"#,
        );
        ensure!(lost == 0.0, "replica lost {lost} locks while reconciling");
        let log = operator.log();
        let reconciled: Vec<&str> = log.lines().filter(|l| l.contains("reconciled")).collect();
        ensure!(
            !reconciled.is_empty(),
            "no reconcile in {}",
            operator.log_path().display()
        );
        // A clean release deletes the lock only at the revision this replica created, which
        // proves no other replica held the object's lock during the reconcile.
        ensure!(
            reconciled.iter().all(|l| l.contains("lock=Clean")),
            "a reconcile did not hold its lock throughout"
        );
    }
    Ok(())
}

/// Two fresh replicas, a burst of [`DISRUPTED_BURST`] Workloads, and a quarter of it Ready (but
/// not all: the disruption that follows, `what`, must hit a burst in progress).
async fn two_replicas_a_quarter_into_a_burst(
    env: &mut Environment,
    client: &Client,
    ns: &str,
    what: &str,
) -> Result<()> {
    restart_replicas(env, 2).await?;
    apply_burst(client, ns, DISRUPTED_BURST).await?;
    eventually("a quarter of the burst ready", BURST_TIMEOUT, || async {
        Ok((ready_count(client, ns).await? >= DISRUPTED_BURST / 4).then_some(()))
    })
    .await?;
    ensure!(
        ready_count(client, ns).await? < DISRUPTED_BURST,
        "burst finished before {what}; nothing was tested"
    );
    Ok(())
}

pub async fn surviving_replica_finishes_after_sigkill(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-sigkill", env.management_client().await?);
    two_replicas_a_quarter_into_a_burst(env, &client, ns, "the kill").await?;
    let killed = Instant::now();
    env.operators_mut()[0].kill();
    let finish = watch_finish(&client, ns, DISRUPTED_BURST, killed).await?;
    ensure_no_long_stall(
        "surviving_replica_finishes_after_sigkill",
        &finish,
        DISRUPTED_BURST,
    )?;
    assert_all_applied(env, ns, DISRUPTED_BURST).await
}

/// The NATS server freezes mid-burst for longer than two pull heartbeats (but less than the
/// lock TTL, so locks stay valid): pulls fail and are retried, reconciles in flight finish.
pub async fn pull_stream_interruption_cancels_nothing(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-interrupt", env.management_client().await?);
    restart_replicas_with(env, 1, &["--lock-ttl=45s"]).await?;
    apply_burst(&client, ns, DISRUPTED_BURST).await?;
    eventually("a tenth of the burst ready", BURST_TIMEOUT, || async {
        Ok((ready_count(&client, ns).await? > DISRUPTED_BURST / 10).then_some(()))
    })
    .await?;
    ensure!(
        ready_count(&client, ns).await? < DISRUPTED_BURST,
        "burst finished before the interruption; nothing was tested"
    );
    let log_before = env.operators()[0].log().len();
    env.nats.pause();
    // Frozen until the replica has seen the pull stream fail (its heartbeats missed) and a
    // reconcile in flight at the freeze has finished.
    let during = eventually(
        "the interruption seen while NATS is frozen",
        TIMEOUT,
        || async {
            let during = env.operators()[0]
                .log()
                .get(log_before..)
                .unwrap_or_default()
                .to_owned();
            let seen = during.contains("work queue interrupted") && during.contains("reconciled");
            Ok(seen.then_some(during))
        },
    )
    .await;
    env.nats.unpause();
    let during = during?;
    wait_all_ready(&client, ns, DISRUPTED_BURST).await?;
    assert_all_applied(env, ns, DISRUPTED_BURST).await?;
    let operator = &env.operators()[0];
    let (interrupted, finished) = (
        during.matches("work queue interrupted").count(),
        during.matches("reconciled").count(),
    );
    println!(
        "pull_stream_interruption_cancels_nothing: while NATS was frozen, {interrupted} pull errors and {finished} reconciles finished"
    );
    ensure!(
        interrupted > 0,
        "no pull stream error in {} while NATS was frozen: the interruption was not seen",
        operator.log_path().display()
    );
    // Nothing new can be pulled while NATS is frozen: these were in flight at the freeze.
    ensure!(
        finished > 0,
        "no reconcile in flight finished during the interruption"
    );
    every_message_handled(operator).await?;
    ensure_no_lock_lost(&operator.metrics().await?)
}

/// SIGTERM to one of two replicas mid-burst: it stops pulling, finishes what it holds,
/// releases its locks and exits 0 within the reconcile timeout; the other one finishes.
pub async fn sigterm_drains_a_replica_mid_burst(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-sigterm", env.management_client().await?);
    two_replicas_a_quarter_into_a_burst(env, &client, ns, "SIGTERM").await?;
    let terminated = Instant::now();
    let draining = &mut env.operators_mut()[0];
    let status = draining
        .terminate(RECONCILE_TIMEOUT + Duration::from_secs(2))
        .await;
    let exited_after = terminated.elapsed();
    println!(
        "sigterm_drains_a_replica_mid_burst: the replica exited {:.1}s after SIGTERM ({status:?})",
        exited_after.as_secs_f64()
    );
    let status = status.context("the replica did not exit within the reconcile timeout")?;
    ensure!(status.success(), "the drained replica exited with {status}");
    ensure_drained_cleanly(&draining.log())?;
    let finish = watch_finish(&client, ns, DISRUPTED_BURST, terminated).await?;
    ensure_no_long_stall(
        "sigterm_drains_a_replica_mid_burst",
        &finish,
        DISRUPTED_BURST,
    )?;
    assert_all_applied(env, ns, DISRUPTED_BURST).await?;
    ensure_no_lock_lost(&env.operators()[1].metrics().await?)
}

/// The drained replica's log: every reconcile after the signal released its lock cleanly,
/// every worker drained, and the process stopped on its own.
fn ensure_drained_cleanly(log: &str) -> Result<()> {
    let after_signal = log
        .split_once("signal received: stopping")
        .map(|(_, rest)| rest)
        .context("the replica did not log the signal")?;
    let finished: Vec<&str> = after_signal
        .lines()
        .filter(|l| l.contains("reconciled"))
        .collect();
    println!(
        "sigterm_drains_a_replica_mid_burst: {} reconciles finished during the drain",
        finished.len()
    );
    ensure!(
        finished.iter().all(|l| l.contains("lock=Clean")),
        "a reconcile finished during the drain without releasing its lock cleanly"
    );
    let drained = after_signal.matches("work queue drained").count();
    let workers = qleetos_crds::notification::QleetKind::ALL.len();
    ensure!(drained == workers, "{drained} of {workers} workers drained");
    ensure!(
        after_signal.contains("qleetos-operator stopped"),
        "the replica did not stop cleanly"
    );
    Ok(())
}

/// Instance reconciles hang on a frozen runtime API server while another holder takes their
/// locks: each notices at its next refresh (every third of the 3 s TTL), is dropped before it
/// can write anything more, is counted and NAKed; once the runtime answers and the stolen
/// locks expire, every Workload converges.
pub async fn a_lost_lock_aborts_the_reconcile(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-lost-lock", env.management_client().await?);
    restart_replicas_with(env, 1, &["--lock-ttl=3s"]).await?;
    let nats = async_nats::connect(env.nats.url()).await?;
    let locks = async_nats::jetstream::new(nats)
        .get_key_value("qleetos-locks")
        .await?;
    env.runtime_mut("eu-west")
        .context("eu-west")?
        .pause_apiserver();
    let stolen = steal_while_frozen(env, &client, ns, &locks).await;
    env.runtime_mut("eu-west")
        .context("eu-west")?
        .resume_apiserver();
    let stolen = stolen?;
    wait_all_ready(&client, ns, 5).await?;
    assert_all_applied(env, ns, 5).await?;
    let operator = &env.operators()[0];
    let metrics = operator.metrics().await?;
    let aborted = metric(
        &metrics,
        r#"qleetos_reconciles_aborted_total{controller="workloadinstance",reason="LockLost"}"#,
    );
    println!(
        "a_lost_lock_aborts_the_reconcile: {stolen} locks taken, {aborted} reconciles aborted"
    );
    ensure!(
        operator.log().contains("aborted: lock lost"),
        "no aborted reconcile in {}",
        operator.log_path().display()
    );
    every_message_handled(operator).await
}

/// Applies the Workloads, takes over the locks of their instance reconciles (stuck on the
/// frozen runtime) and waits until the operator aborted at least one.
async fn steal_while_frozen(
    env: &Environment,
    client: &Client,
    namespace: &str,
    locks: &async_nats::jetstream::kv::Store,
) -> Result<usize> {
    apply_burst(client, namespace, 5).await?;
    let stolen = eventually("instance reconciles holding locks", TIMEOUT, || async {
        let keys: Vec<String> = locks.keys().await?.try_collect().await?;
        let mut stolen = 0;
        for key in keys.iter().filter(|k| k.starts_with("workloadinstance.")) {
            locks.put(key, "intruder".into()).await?;
            stolen += 1;
        }
        Ok((stolen > 0).then_some(stolen))
    })
    .await?;
    let operator = &env.operators()[0];
    eventually("a reconcile aborted for its lost lock", TIMEOUT, || async {
        let aborted = metric(
            &operator.metrics().await?,
            r#"qleetos_reconciles_aborted_total{controller="workloadinstance",reason="LockLost"}"#,
        );
        Ok((aborted >= 1.0).then_some(()))
    })
    .await?;
    Ok(stolen)
}

/// Restarting with other flags updates the consumers' ack wait and the lock bucket's TTL
/// in place: the same stream, consumer and bucket (creation time and sequence kept).
pub async fn settings_follow_the_flags_at_start_up(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-settings", env.management_client().await?);
    restart_replicas_with(env, 1, &["--lock-ttl=7s"]).await?;
    apply_burst(&client, ns, 5).await?;
    wait_all_ready(&client, ns, 5).await?;
    let before = Layout::read(env).await?;
    ensure!(
        before.ack_wait == 15.0 && before.lock_ttl == 7.0,
        "after the first start: {before:?}"
    );
    env.stop_operators().await;
    env.start_operator(replica_options_with(&[
        "--reconcile-timeout=25s",
        "--lock-ttl=12s",
    ]))
    .await?;
    let after = Layout::read(env).await?;
    println!("settings_follow_the_flags_at_start_up: {before:?} -> {after:?}");
    ensure!(
        after.ack_wait == 30.0 && after.lock_ttl == 12.0,
        "the flags were not applied: {after:?}"
    );
    ensure!(
        after.created == before.created && after.last_seq >= before.last_seq,
        "the stream, consumer or bucket was re-created: {before:?} -> {after:?}"
    );
    apply_burst(&client, "q-settings-after", 5).await?;
    wait_all_ready(&client, "q-settings-after", 5).await
}

/// What `/jsz` says of the Workload queue and the lock bucket.
#[derive(Debug, PartialEq)]
struct Layout {
    /// The Workload consumer's ack wait and the lock bucket's max age, in seconds.
    ack_wait: f64,
    lock_ttl: f64,
    /// Creation times of the Workload stream, its consumer and the lock bucket.
    created: [String; 3],
    last_seq: u64,
}

impl Layout {
    async fn read(env: &Environment) -> Result<Self> {
        let report: Value = serde_json::from_str(&env.nats.jetstream_report().await?)?;
        let streams = report["account_details"][0]["stream_detail"]
            .as_array()
            .context("no streams in /jsz")?;
        let stream = |name: &str| {
            streams
                .iter()
                .find(|s| s["name"] == name)
                .with_context(|| format!("stream {name} not in /jsz"))
        };
        let work = stream("QLEETOS_WORKLOAD")?;
        let consumer = work["consumer_detail"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "qleet-workload"))
            .context("consumer qleet-workload not in /jsz")?;
        let locks = stream("KV_qleetos-locks")?;
        let seconds = |nanos: &Value| nanos.as_f64().unwrap_or(-1.0) / 1e9;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(Self {
            ack_wait: seconds(&consumer["config"]["ack_wait"]),
            lock_ttl: seconds(&locks["config"]["max_age"]),
            created: [
                text(&work["created"]),
                text(&consumer["created"]),
                text(&locks["created"]),
            ],
            last_seq: work["state"]["last_seq"].as_u64().unwrap_or(0),
        })
    }
}

pub async fn work_survives_a_nats_restart(env: &mut Environment) -> Result<()> {
    let (ns, client) = ("q-nats", env.management_client().await?);
    restart_replicas(env, 1).await?;
    apply_burst(&client, ns, 50).await?;
    let log_before = env.operators()[0].log().len();
    env.nats.stop().await;
    apply_burst(&client, "q-nats-down", 30).await?;
    wait_publishes_missed(env, &[log_before], "q-nats-down", 30).await?;
    env.nats.resume().await?;
    wait_all_ready(&client, ns, 50).await?;
    wait_all_ready(&client, "q-nats-down", 30).await?;
    assert_all_applied(env, "q-nats-down", 30).await
}

pub async fn drift_in_a_runtime_is_corrected(env: &Environment) -> Result<()> {
    let (ns, client) = ("q-drift", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1"]});
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(2, "nginx:1.27"), placement),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(runtime.clone(), ns);
    let scale = json!({"spec": {"replicas": 5}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale))
        .await?;
    let services: Api<Service> = Api::namespaced(runtime, ns);
    services.delete("web", &DeleteParams::default()).await?;
    eventually("drift corrected", TIMEOUT, || async {
        let replicas = deployments.get("web").await?.spec.and_then(|s| s.replicas);
        let service = services.get_opt("web").await?;
        Ok((replicas == Some(2) && service.is_some()).then_some(()))
    })
    .await
}

pub async fn a_poison_workload_does_not_block_others(env: &Environment) -> Result<()> {
    let (ns, client) = ("q-poison", env.management_client().await?);
    let widget = json!({"apiVersion": "widgets.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    apply_workload(
        &client,
        ns,
        &workload("poison", vec![widget], json!({"regions": ["eu-west-1"]})),
    )
    .await?;
    apply_burst(&client, ns, 30).await?;
    wait_all_ready_but(&client, ns, 30, "poison").await?;
    let message = wait_workload_not_ready(&client, ns, "poison", "PlacementFailed").await?;
    ensure!(
        message.contains("UnknownKind"),
        "poison condition: {message}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(
        "a Warning Event on the poison instance",
        TIMEOUT,
        || async {
            let events = events.list(&ListParams::default()).await?;
            Ok(events
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("UnknownKind")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(()))
        },
    )
    .await?;
    let metrics = env.operators()[0].metrics().await?;
    let failures = metric(
        &metrics,
        r#"qleetos_reconcile_failures_total{controller="workloadinstance",reason="UnknownKind"}"#,
    );
    ensure!(failures >= 1.0, "failure metric not counted: {failures}");
    Ok(())
}

async fn wait_all_ready_but(
    client: &Client,
    namespace: &str,
    count: usize,
    except: &str,
) -> Result<()> {
    let api = Api::<Workload>::namespaced(client.clone(), namespace);
    eventually(
        &format!("{count} healthy Workloads Ready"),
        BURST_TIMEOUT,
        || async {
            let workloads = api.list(&ListParams::default()).await?;
            let ready = workloads
                .items
                .iter()
                .filter(|w| {
                    w.name_any() != except && w.status.as_ref().is_some_and(|s| s.is_ready())
                })
                .count();
            Ok((ready == count).then_some(()))
        },
    )
    .await
}

/// The queue trials: two on the shared environment, eight taking turns on their own.
pub fn trials(
    runtime: &std::sync::Arc<tokio::runtime::Runtime>,
    shared: &crate::harness::SharedEnv,
    dir: &std::path::Path,
) -> (Vec<libtest_mimic::Trial>, crate::harness::TakingTurns) {
    use libtest_mimic::Trial;
    let shared_scenarios: [(&str, crate::harness::Scenario); 2] = [
        ("drift_in_a_runtime_is_corrected", |env| {
            Box::pin(drift_in_a_runtime_is_corrected(env))
        }),
        ("a_poison_workload_does_not_block_others", |env| {
            Box::pin(a_poison_workload_does_not_block_others(env))
        }),
    ];
    let exclusive_scenarios: [(&str, crate::harness::Exclusive); 9] = [
        (
            "a_restart_and_resync_of_converged_workloads_write_nothing",
            |env| {
                Box::pin(
                    crate::quiet::a_restart_and_resync_of_converged_workloads_write_nothing(env),
                )
            },
        ),
        ("pending_work_waits_for_an_operator", |env| {
            Box::pin(pending_work_waits_for_an_operator(env))
        }),
        ("two_replicas_share_work_without_overlap", |env| {
            Box::pin(two_replicas_share_work_without_overlap(env))
        }),
        ("surviving_replica_finishes_after_sigkill", |env| {
            Box::pin(surviving_replica_finishes_after_sigkill(env))
        }),
        ("work_survives_a_nats_restart", |env| {
            Box::pin(work_survives_a_nats_restart(env))
        }),
        ("pull_stream_interruption_cancels_nothing", |env| {
            Box::pin(pull_stream_interruption_cancels_nothing(env))
        }),
        ("sigterm_drains_a_replica_mid_burst", |env| {
            Box::pin(sigterm_drains_a_replica_mid_burst(env))
        }),
        ("a_lost_lock_aborts_the_reconcile", |env| {
            Box::pin(a_lost_lock_aborts_the_reconcile(env))
        }),
        ("settings_follow_the_flags_at_start_up", |env| {
            Box::pin(settings_follow_the_flags_at_start_up(env))
        }),
    ];
    let mut trials: Vec<Trial> = shared_scenarios
        .into_iter()
        .map(|(name, scenario)| crate::harness::shared_trial(name, runtime, shared, scenario))
        .collect();
    let queue_env = crate::harness::TakingTurns::new(dir.join("queue"), || {
        vec![qleetos_e2e::environment::RuntimeSpec::new(
            "eu-west",
            "eu-west-1",
            &[],
        )]
    });
    for (name, scenario) in exclusive_scenarios {
        let env = queue_env.clone();
        let work = async move { env.run(scenario).await };
        trials.push(crate::harness::own_trial(name, runtime, work));
    }
    (trials, queue_env)
}
