//! Issue 7 (3) scenarios, as a careless user acts: a kubeconfig Secret with a mis-indented
//! line and a bearer token, an exec-plugin kubeconfig, a Secret outside QleetOS's namespace,
//! and NATS that requires credentials. Secrets must appear nowhere: status, Events, logs.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use qleetos_crds::{
    Conditions, KubernetesRuntime, KubernetesRuntimeSpec, RuntimeConnection, SecretKeyRef,
};
use qleetos_e2e::environment::{
    Environment, RuntimeSpec, SYSTEM_NAMESPACE, ensure_namespace, register_runtime,
};
use qleetos_e2e::gateway::GatewayProcess;
use qleetos_e2e::nats::NatsUser;
use qleetos_e2e::operator::OperatorOptions;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const FIELD_MANAGER: &str = "qleetos-e2e";

/// A string no other test writes, so finding it anywhere is a leak.
fn canary(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{what}-canary-{nanos:x}")
}

/// A kubeconfig for `server` authenticating with `token`; `user_tail` is appended to the
/// user entry (e.g. a mis-indented line).
fn token_kubeconfig(server: &str, token: &str, user_tail: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: ops\nclusters:\n- name: rt\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: ops\n  context:\n    cluster: rt\n    user: ops\nusers:\n- name: ops\n  user:\n    token: {token}\n{user_tail}"
    )
}

async fn put_secret(client: &Client, namespace: &str, name: &str, kubeconfig: &str) -> Result<()> {
    ensure_namespace(client, namespace).await?;
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.data = Some(
        [(
            "kubeconfig".to_owned(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )]
        .into(),
    );
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// A runtime in a region of its own, so no other scenario places anything on it.
async fn put_runtime(client: &Client, name: &str, secret_namespace: &str) -> Result<()> {
    let runtime = KubernetesRuntime::new(
        name,
        KubernetesRuntimeSpec {
            provider: "local".into(),
            region: format!("{name}-region"),
            location: None,
            deletion_policy: Default::default(),
            provisioning: None,
            cost: None,
            connection: RuntimeConnection {
                kubeconfig_secret_ref: SecretKeyRef {
                    namespace: secret_namespace.to_owned(),
                    name: name.to_owned(),
                    key: "kubeconfig".to_owned(),
                },
            },
        },
    );
    Api::<KubernetesRuntime>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&runtime),
        )
        .await?;
    Ok(())
}

/// Waits until the runtime's Ready condition is False with `reason`; returns its message.
async fn wait_runtime_refused(client: &Client, name: &str, reason: &str) -> Result<String> {
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    eventually(
        &format!("runtime {name} Ready=False {reason}"),
        TIMEOUT,
        || async {
            let runtime = runtimes.get(name).await?;
            let status = runtime.status.clone().unwrap_or_default();
            match status.condition(qleetos_crds::READY) {
                Some(c) if !c.is_true() && c.reason == reason => Ok(Some(c.message.clone())),
                _ => bail!("status: {}", serde_json::to_string(&status)?),
            }
        },
    )
    .await
}

/// Waits until the runtime Qleet has probed runtime `name` `times` more times (its status's
/// lastProbeTime moved on that often): a positive sign that it looked at the runtime, and its
/// kubeconfig, again.
async fn wait_probed_again(client: &Client, name: &str, times: usize) -> Result<()> {
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    let probed = || async {
        let runtime = runtimes.get(name).await?;
        Ok::<_, anyhow::Error>(runtime.status.and_then(|s| s.last_probe_time))
    };
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let (mut last, mut seen) = (probed().await?, 0);
    while seen < times {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "runtime {name} probed {seen} more time(s) in {TIMEOUT:?}, not {times} (last at {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = probed().await?;
        if now != last {
            (last, seen) = (now, seen + 1);
        }
    }
    Ok(())
}

async fn remove_runtime(client: &Client, name: &str, secret_namespace: &str) -> Result<()> {
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    runtimes.delete(name, &DeleteParams::default()).await?;
    eventually(&format!("runtime {name} gone"), TIMEOUT, || async {
        Ok(runtimes.get_opt(name).await?.is_none().then_some(()))
    })
    .await?;
    Api::<Secret>::namespaced(client.clone(), secret_namespace)
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// Fails when `secret` appears in the runtime's status, any Event of the management
/// cluster, any operator log, or the extra JSON documents given.
async fn assert_nowhere(
    env: &Environment,
    secret: &str,
    runtime: &str,
    extra: &[(&str, String)],
) -> Result<()> {
    let client = env.management_client().await?;
    let status = Api::<KubernetesRuntime>::all(client)
        .get(runtime)
        .await?
        .status;
    let mut places = vec![
        (
            format!("runtime {runtime} status"),
            serde_json::to_string(&status)?,
        ),
        (
            "Events of the management cluster".to_owned(),
            kubectl(
                env.management.kubeconfig_path(),
                &["get", "events", "-A", "-o", "json"],
            )
            .await?,
        ),
    ];
    for operator in env.operators() {
        places.push((operator.log_path().display().to_string(), operator.log()));
    }
    places.extend(
        extra
            .iter()
            .map(|(what, text)| ((*what).to_owned(), text.clone())),
    );
    for (what, text) in places {
        ensure!(!text.contains(secret), "the secret leaked into {what}");
    }
    Ok(())
}

pub async fn malformed_kubeconfig_leaks_no_token(env: &Environment) -> Result<()> {
    let (client, name, ns) = (env.management_client().await?, "leaky", "cred-leak");
    let token = canary("bearer");
    let server = env.runtime("eu-west").context("eu-west")?.server_url();
    let mis_indented = token_kubeconfig(&server, &token, "   username: ops\n");
    put_secret(&client, SYSTEM_NAMESPACE, name, &mis_indented).await?;
    put_runtime(&client, name, SYSTEM_NAMESPACE).await?;
    let message = wait_runtime_refused(&client, name, "InvalidKubeconfig").await?;
    ensure!(
        message
            == "the kubeconfig of runtime leaky in Secret qleetos-system/leaky key `kubeconfig` is not valid kubeconfig YAML (line 18, column 4)",
        "condition message: {message}"
    );
    let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}, "data": {"a": "b"}});
    let placement = json!({"regions": [format!("{name}-region")]});
    apply_workload(&client, ns, &workload("probe", vec![configmap], placement)).await?;
    let workloads = Api::<qleetos_crds::Workload>::namespaced(client.clone(), ns);
    let reported = eventually(
        "the Workload reporting the runtime's kubeconfig problem",
        TIMEOUT,
        || async {
            let text = serde_json::to_string(&workloads.get("probe").await?)?;
            Ok(text.contains("not valid kubeconfig YAML").then_some(text))
        },
    )
    .await?;
    let instances = serde_json::to_string(&instances_of(&client, ns, "probe").await?)?;
    ensure!(
        instances.contains("InvalidKubeconfig"),
        "instances: {instances}"
    );
    let documents = [
        ("the Workload", reported),
        ("its WorkloadInstances", instances),
    ];
    assert_nowhere(env, &token, name, &documents).await?;

    // Fixed indentation, still a token the runtime does not accept: the API server's
    // answer reaches the status (RuntimeUnreachable), the token still does not.
    let rejected = token_kubeconfig(&server, &token, "");
    put_secret(&client, SYSTEM_NAMESPACE, name, &rejected).await?;
    let message = wait_runtime_refused(&client, name, "RuntimeUnreachable").await?;
    ensure!(
        message.contains("Unauthorized"),
        "condition message: {message}"
    );
    let instances = eventually(
        "the instance seeing the new kubeconfig",
        TIMEOUT,
        || async {
            let text = serde_json::to_string(&instances_of(&client, ns, "probe").await?)?;
            Ok(text.contains("RuntimeUnreachable").then_some(text))
        },
    )
    .await?;
    let workload = serde_json::to_string(&workloads.get("probe").await?)?;
    let documents = [("the Workload", workload), ("its instances", instances)];
    assert_nowhere(env, &token, name, &documents).await?;
    delete_workload(&client, ns, "probe").await?;
    eventually("the Workload gone", TIMEOUT, || async {
        Ok(workloads.get_opt("probe").await?.is_none().then_some(()))
    })
    .await?;
    remove_runtime(&client, name, SYSTEM_NAMESPACE).await
}

pub async fn exec_plugin_kubeconfig_is_refused(env: &Environment) -> Result<()> {
    let (client, name) = (env.management_client().await?, "exec-plugin");
    let marker = env.dir().join("exec-plugin-ran");
    let server = env.runtime("eu-west").context("eu-west")?.server_url();
    let exec = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: ops\nclusters:\n- name: rt\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: ops\n  context:\n    cluster: rt\n    user: ops\nusers:\n- name: ops\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [\"-c\", \"touch {}\"]\n      interactiveMode: Never\n",
        marker.display()
    );
    put_secret(&client, SYSTEM_NAMESPACE, name, &exec).await?;
    put_runtime(&client, name, SYSTEM_NAMESPACE).await?;
    let message = wait_runtime_refused(&client, name, "ForbiddenKubeconfigFeature").await?;
    ensure!(
        message.contains("uses an exec credential plugin")
            && message.contains("--allow-kubeconfig-exec"),
        "condition message: {message}"
    );
    wait_probed_again(&client, name, 2).await?;
    wait_runtime_refused(&client, name, "ForbiddenKubeconfigFeature").await?;
    ensure!(!marker.exists(), "the exec plugin ran inside the operator");
    remove_runtime(&client, name, SYSTEM_NAMESPACE).await
}

pub async fn secret_outside_the_system_namespace_is_not_read(env: &Environment) -> Result<()> {
    let (client, name, ns) = (env.management_client().await?, "elsewhere", "team-secrets");
    let cluster = env.runtime("eu-west").context("eu-west")?;
    // A kubeconfig that works: if the operator read it, the runtime would become Ready.
    let working = cluster.kubeconfig_yaml();
    let key_data = client_key_data(&working)?;
    put_secret(&client, ns, name, &working).await?;
    put_runtime(&client, name, ns).await?;
    let message = wait_runtime_refused(&client, name, "ForbiddenSecretNamespace").await?;
    ensure!(
        message.contains("team-secrets")
            && message.contains("only from its own namespace qleetos-system"),
        "condition message: {message}"
    );
    wait_probed_again(&client, name, 2).await?;
    wait_runtime_refused(&client, name, "ForbiddenSecretNamespace").await?;
    let runtime = Api::<KubernetesRuntime>::all(client.clone())
        .get(name)
        .await?;
    let status = runtime.status.unwrap_or_default();
    ensure!(
        status.server_version.is_none() && status.node_count.is_none(),
        "the runtime was reached with the Secret: {status:?}"
    );
    assert_nowhere(env, &key_data, name, &[]).await?;
    remove_runtime(&client, name, ns).await
}

/// The `client-key-data` of a kubeconfig: the one secret of the environment's kubeconfigs.
fn client_key_data(kubeconfig: &str) -> Result<String> {
    let parsed: Value = serde_norway::from_str(kubeconfig)?;
    parsed["users"][0]["user"]["client-key-data"]
        .as_str()
        .map(str::to_owned)
        .context("client-key-data in the cluster's kubeconfig")
}

pub async fn nats_requires_credentials(dir: PathBuf) -> Result<()> {
    let auth = NatsUser {
        user: "qleetos".into(),
        password: canary("nats-password"),
    };
    let mut env = Environment::start_with_nats_auth(&dir, Vec::new(), Some(auth.clone()))
        .await
        .context("starting an environment with an authenticated NATS")?;
    let result = nats_requires_credentials_scenario(&mut env, &auth).await;
    env.stop().await;
    result
}

async fn nats_requires_credentials_scenario(env: &mut Environment, auth: &NatsUser) -> Result<()> {
    let port = env.nats.port();
    ensure!(
        nats_handshake(port, None)
            .await?
            .contains("Authorization Violation"),
        "a client without credentials was not refused"
    );
    let wrong = format!(r#""user":"{}","pass":"guess""#, auth.user);
    ensure!(
        nats_handshake(port, Some(&wrong))
            .await?
            .contains("Authorization Violation"),
        "a client with a wrong password was not refused"
    );
    env.start_operator(OperatorOptions::default()).await?;
    let client = env.management_client().await?;
    // The management cluster doubles as the runtime, so this environment needs no other.
    let spec = RuntimeSpec::new("self", "self-1", &[]);
    register_runtime(&client, &spec, &env.management).await?;
    // There the runtime namespace is the management namespace itself, which QleetOS did not
    // create for the tenant: operations name it for adoption.
    crate::tenancy::apply_policy(
        &client,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
               "metadata": {"name": "nats-auth-self"},
               "spec": {"namespaces": ["nats-auth"], "targetNamespaces": ["nats-auth"], "allowAdoption": true}}),
    )
    .await?;
    qleetos_e2e::environment::ensure_namespace(&client, "nats-auth").await?;
    crate::support::policy_selects(&client, "nats-auth-self", "nats-auth").await?;
    let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hello"}, "data": {"via": "authenticated NATS"}});
    let placement = json!({"regions": ["self-1"]});
    apply_workload(
        &client,
        "nats-auth",
        &workload("hello", vec![configmap], placement),
    )
    .await?;
    wait_workload_ready(&client, "nats-auth", "hello").await?;

    // The careless way: the password inside the URL. It works, and is never logged.
    let url = format!("nats://{}:{}@127.0.0.1:{port}", auth.user, auth.password);
    let kubeconfig = env.management.kubeconfig_path().to_owned();
    let mut gateway = GatewayProcess::start(env.dir(), &kubeconfig, Some(&url), &[]).await?;
    let connected = authenticated_clients(env, &auth.user).await;
    gateway.stop().await;
    let names = connected?;
    ensure!(
        names.iter().any(|n| n == "qleetos-api-gateway"),
        "the gateway is not connected as {}: {names:?}",
        auth.user
    );
    let gateway_log = std::fs::read_to_string(gateway.log_path())?;
    ensure!(
        gateway_log.contains("nats://***@127.0.0.1"),
        "the gateway does not log its (redacted) NATS URL"
    );
    ensure!(
        !gateway_log.contains(&auth.password),
        "the NATS password leaked into {}",
        gateway.log_path().display()
    );
    for operator in env.operators() {
        ensure!(
            !operator.log().contains(&auth.password),
            "the NATS password leaked into {}",
            operator.log_path().display()
        );
    }
    Ok(())
}

/// Names of the clients connected as `user`, once the operator and the gateway both are.
async fn authenticated_clients(env: &Environment, user: &str) -> Result<Vec<String>> {
    eventually(
        "the operator and the gateway connected",
        TIMEOUT,
        || async {
            let (_, body) =
                qleetos_e2e::http::get(env.nats.monitor_port(), "/connz?auth=true").await?;
            let connz: Value = serde_json::from_str(&body)?;
            let names: Vec<String> = connz["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["authorized_user"] == user)
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect();
            let gateway = names.iter().any(|n| n == "qleetos-api-gateway");
            Ok((gateway && names.len() >= 2).then_some(names))
        },
    )
    .await
}

/// Speaks the NATS protocol by hand: CONNECT (with `credentials` as JSON fields) and PING;
/// returns what the server answered.
async fn nats_handshake(port: u16, credentials: Option<&str>) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut answer = vec![0; 4096];
    let read = stream.read(&mut answer).await?;
    ensure!(
        String::from_utf8_lossy(&answer[..read]).starts_with("INFO"),
        "no INFO from nats-server"
    );
    let fields = credentials.map(|c| format!(",{c}")).unwrap_or_default();
    let connect = format!("CONNECT {{\"verbose\":false,\"pedantic\":false{fields}}}\r\nPING\r\n");
    stream.write_all(connect.as_bytes()).await?;
    let mut reply = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !reply.contains("PONG") && !reply.contains("-ERR") {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut answer))
            .await
            .context("nats-server did not answer CONNECT")??;
        if read == 0 {
            break;
        }
        reply.push_str(&String::from_utf8_lossy(&answer[..read]));
    }
    Ok(reply)
}

/// The trials: three on the shared environment, one with an authenticated NATS of its own.
pub fn trials(
    runtime: &std::sync::Arc<tokio::runtime::Runtime>,
    shared: &crate::harness::SharedEnv,
    dir: &std::path::Path,
) -> Vec<libtest_mimic::Trial> {
    let shared_scenarios: [(&str, crate::harness::Scenario); 3] = [
        ("malformed_kubeconfig_leaks_no_token", |env| {
            Box::pin(malformed_kubeconfig_leaks_no_token(env))
        }),
        ("exec_plugin_kubeconfig_is_refused", |env| {
            Box::pin(exec_plugin_kubeconfig_is_refused(env))
        }),
        (
            "kubeconfig_secret_outside_the_system_namespace_is_not_read",
            |env| Box::pin(secret_outside_the_system_namespace_is_not_read(env)),
        ),
    ];
    let mut trials: Vec<libtest_mimic::Trial> = shared_scenarios
        .into_iter()
        .map(|(name, scenario)| crate::harness::shared_trial(name, runtime, shared, scenario))
        .collect();
    trials.push(crate::harness::own_trial(
        "operator_and_gateway_use_authenticated_nats",
        runtime,
        nats_requires_credentials(dir.join("credentials-nats")),
    ));
    trials
}
