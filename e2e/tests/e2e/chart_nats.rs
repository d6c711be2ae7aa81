//! The NATS cluster the chart installs (issues 11 and 12): its rendered objects pass the
//! management API server's schemas; three real nats-servers run from its rendered
//! configuration, with only the paths, ports and route addresses mapped to this machine;
//! they refuse a client without the chart's generated credentials; and an operator started
//! with the chart's own arguments and credentials takes its work from them: a Workload is
//! placed through it and every stream and bucket has three copies. The gateway then runs as
//! the chart configures it too (`chart_gateway`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use qleetos_e2e::environment::Environment;
use qleetos_e2e::nats::{NatsServer, NatsUser};
use qleetos_e2e::operator::{OperatorOptions, OperatorProcess};
use serde_json::{Value, json};

use crate::chart::{documents, render, server_dry_run};
use crate::provisioning::config_map;
use crate::replicated::Layout;
use crate::support::*;

/// Where the chart's StatefulSet keeps JetStream, and its pid file (for lame-duck mode).
const STORE_DIR: &str = "store_dir: /data";
const PID_FILE: &str = "pid_file: /var/run/nats/nats.pid";
const SERVERS: usize = 3;

/// Runs in an environment of its own: its operator works from the chart's NATS.
pub async fn chart_nats_cluster_carries_the_operator_and_gateway(
    env: &mut Environment,
) -> Result<()> {
    refuses_inconsistent_values().await?;
    let rendered = documents(&render(&[crate::chart_gateway::TLS_VALUE]).await?)?;
    let nats: Vec<Value> = rendered
        .iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/name"] == "qleetos-nats")
        .cloned()
        .collect();
    let mut kinds: Vec<&str> = nats.iter().filter_map(|d| d["kind"].as_str()).collect();
    kinds.sort_unstable();
    ensure!(
        kinds
            == [
                "PodDisruptionBudget",
                "Secret",
                "Secret",
                "Service",
                "Service",
                "StatefulSet"
            ],
        "the chart's NATS objects: {kinds:?}"
    );
    let statefulset = named(&nats, "StatefulSet", "qleetos-nats")?;
    ensure!(
        statefulset["spec"]["replicas"] == SERVERS,
        "servers: {}",
        statefulset["spec"]["replicas"]
    );
    let operator = named(&rendered, "Deployment", "qleetos-operator")?;
    let gateway = named(&rendered, "Deployment", "qleetos-gateway")?;
    let mut checked = nats.clone();
    checked.push(operator.clone());
    checked.push(gateway.clone());
    server_dry_run(env.management.kubeconfig_path(), &checked).await?;

    let auth = secret_data(&nats, "qleetos-nats-auth")?;
    let user = NatsUser {
        user: auth
            .get("user")
            .cloned()
            .context("no user in qleetos-nats-auth")?,
        password: auth.get("password").cloned().context("no password")?,
    };
    let config = secret_data(&nats, "qleetos-nats-config")?
        .remove("nats.conf")
        .context("no nats.conf in qleetos-nats-config")?;
    let configs = mapped_configs(&config, &env.dir().join("chart-nats"))?;
    let mut servers =
        NatsServer::start_cluster_from_configs(&env.dir().join("chart-nats"), &configs, user)
            .await?;
    refuses_anonymous_clients(&servers[0].url()).await?;
    env.nats = servers.remove(0);
    env.nats_peers = servers;

    let mut operator = start_as_charted(env, operator, &auth).await?;
    let (ns, client) = ("chart-nats", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1"]});
    apply_workload(&client, ns, &workload("cm", config_map("cm"), placement)).await?;
    wait_workload_ready(&client, ns, "cm").await?;
    Layout::read(env).await?.ensure_replicated(SERVERS)?;
    crate::chart_gateway::serves_as_charted(env, &rendered, &auth).await?;
    delete_workload(&client, ns, "cm").await?;
    eventually("the Workload's instance removed", TIMEOUT, || async {
        Ok(instances_of(&client, ns, "cm")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    operator.stop().await;
    Ok(())
}

/// The container's environment with each `secretKeyRef` of Secret `qleetos-nats-auth` read
/// from the rendered Secret: the NATS user and password, and nothing else.
pub(crate) fn charted_env(
    container: &Value,
    auth: &BTreeMap<String, String>,
) -> Result<Vec<(OsString, OsString)>> {
    let mut variables: Vec<(OsString, OsString)> = Vec::new();
    for variable in container["env"].as_array().into_iter().flatten() {
        let reference = &variable["valueFrom"]["secretKeyRef"];
        ensure!(
            reference["name"] == "qleetos-nats-auth",
            "unexpected variable source: {variable}"
        );
        let key = reference["key"].as_str().unwrap_or_default();
        let value = auth
            .get(key)
            .with_context(|| format!("no {key} in the Secret"))?;
        let name = variable["name"].as_str().unwrap_or_default();
        variables.push((name.into(), value.into()));
    }
    let names: Vec<_> = variables.iter().map(|(n, _)| n.clone()).collect();
    ensure!(
        names == ["QLEETOS_NATS_USER", "QLEETOS_NATS_PASSWORD"],
        "the chart gives {} {names:?}",
        container["name"]
    );
    Ok(variables)
}

/// Values that cannot work are refused by the chart, saying why.
async fn refuses_inconsistent_values() -> Result<()> {
    let refusals = [
        (
            "operator.natsReplicas=5",
            "cannot exceed nats.install.replicas (3)",
        ),
        ("nats.install.replicas=2", "value must be one of 1, 3, 5"),
        (
            "nats.auth.secretName=mine",
            "nats.auth.secretName is for an existing NATS",
        ),
    ];
    for (value, message) in refusals {
        match render(&[value]).await {
            Ok(_) => bail!("the chart accepted {value}"),
            Err(error) => ensure!(
                error.to_string().contains(message),
                "{value}: expected {message:?}, got {error:#}"
            ),
        }
    }
    let external = documents(&render(&["nats.install.enabled=false"]).await?)?;
    ensure!(
        !external.iter().any(|d| d["kind"] == "StatefulSet"),
        "nats.install.enabled=false still installs NATS"
    );
    Ok(())
}

pub(crate) fn named<'a>(documents: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("the chart renders no {kind} {name}"))
}

fn secret_data(documents: &[Value], name: &str) -> Result<BTreeMap<String, String>> {
    let data = &named(documents, "Secret", name)?["stringData"];
    Ok(serde_json::from_value(data.clone())?)
}

/// The chart's nats.conf for each server, its store and pid file moved under `dir`.
fn mapped_configs(config: &str, dir: &std::path::Path) -> Result<Vec<String>> {
    ensure!(
        config.contains(STORE_DIR) && config.contains(PID_FILE),
        "the chart's nats.conf no longer has `{STORE_DIR}` and `{PID_FILE}`: update this trial\n{config}"
    );
    Ok((0..SERVERS)
        .map(|i| {
            let server = dir.join(format!("n{i}"));
            config
                .replace(
                    STORE_DIR,
                    &format!("store_dir: {}", server.join("data").display()),
                )
                .replace(
                    PID_FILE,
                    &format!("pid_file: {}", server.join("nats.pid").display()),
                )
        })
        .collect())
}

async fn refuses_anonymous_clients(url: &str) -> Result<()> {
    let attempt = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(url)).await;
    match attempt {
        Ok(Ok(_)) => bail!("the chart's NATS accepted a client without credentials"),
        Ok(Err(error)) => {
            let error = error.to_string();
            ensure!(
                error.to_lowercase().contains("authorization"),
                "refused for another reason: {error}"
            );
            Ok(())
        }
        Err(_) => bail!("connecting without credentials neither succeeded nor failed in 10 s"),
    }
}

/// The operator with the container arguments and environment of the chart's Deployment; only
/// the NATS address (a Service name in a cluster) is this machine's.
async fn start_as_charted(
    env: &Environment,
    deployment: &Value,
    auth: &BTreeMap<String, String>,
) -> Result<OperatorProcess> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = serde_json::from_value(container["args"].clone())?;
    ensure!(
        args.iter().any(|a| a == "--nats-replicas=3"),
        "the chart's operator must keep three copies on its three servers: {args:?}"
    );
    let args = args
        .into_iter()
        .map(|arg| match arg.starts_with("--nats-url=") {
            true => format!("--nats-url={}", env.nats_url()),
            false => arg,
        })
        .collect();
    let variables = charted_env(container, auth)?;
    let options = OperatorOptions { extra_args: args };
    let kubeconfig = env.management.kubeconfig_path();
    Ok(OperatorProcess::start_with_env(
        env.dir(),
        9,
        kubeconfig,
        &env.nats_url(),
        options,
        variables,
    )
    .await?)
}
