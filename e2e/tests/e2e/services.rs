//! Service dependencies against real runtimes: an Ethereum RPC node (the real anvil standing
//! in for its pod) installed before the workload, its connection Secret injected and its
//! RPC_URL answering JSON-RPC; shared and dedicated services; moves on a parameter change
//! or a profile swap; admission of bad parameters; a service whose readiness never comes;
//! removal when the dependency or the last workload goes.

use std::path::PathBuf;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use qleetos_crds::{
    Conditions, ServiceProfile, SupportService, TenantPolicy, Workload, WorkloadServiceDependency,
};
use qleetos_e2e::environment::{Environment, ensure_namespace};
use qleetos_e2e::jsonrpc;
use qleetos_e2e::standin::ANVIL_CHAIN_ID;
use serde_json::{Value, json};

use crate::dependencies::{StandIns, apply_default_profiles, operator_running, wait_gone};
use crate::support::{TIMEOUT, apply_workload, delete_workload, eventually, wait_workload_ready};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

pub(crate) fn yaml_documents(path: &str) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(examples().join(path))?;
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The TenantPolicy of examples/tenant-policies.yaml naming `namespace`: what `make run`
/// grants that sample's namespace.
pub(crate) fn example_policy(namespace: &str) -> Result<Value> {
    yaml_documents("tenant-policies.yaml")?
        .into_iter()
        .find(|policy| {
            policy["spec"]["namespaces"]
                .as_array()
                .is_some_and(|names| names.iter().any(|n| n == namespace))
        })
        .with_context(|| format!("examples/tenant-policies.yaml names no namespace {namespace}"))
}

/// The shipped Ethereum RPC profile, renamed when `name` differs.
pub(crate) async fn apply_rpc_profile(client: &Client, name: &str) -> Result<()> {
    let mut profile = yaml_documents("services/ethereum-rpc.yaml")?.remove(0);
    profile["metadata"]["name"] = json!(name);
    apply(client, &profile).await
}

pub(crate) async fn apply(client: &Client, object: &Value) -> Result<()> {
    let kind = object["kind"].as_str().context("kind")?;
    let name = object["metadata"]["name"].as_str().context("name")?;
    let params = PatchParams::apply("e2e").force();
    match kind {
        "ServiceProfile" => {
            Api::<ServiceProfile>::all(client.clone())
                .patch(name, &params, &Patch::Apply(object))
                .await?;
        }
        "WorkloadServiceDependency" => {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .context("namespace")?;
            Api::<WorkloadServiceDependency>::namespaced(client.clone(), ns)
                .patch(name, &params, &Patch::Apply(object))
                .await?;
        }
        other => anyhow::bail!("cannot apply {other}"),
    }
    Ok(())
}

fn dependency(ns: &str, name: &str, profile: &str, workloads: &[&str], spec: Value) -> Value {
    let mut value = json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadServiceDependency",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"workloads": workloads, "profileRef": {"name": profile}},
    });
    if let (Some(target), Value::Object(extra)) = (value["spec"].as_object_mut(), spec) {
        target.extend(extra);
    }
    value
}

/// A Deployment `name` with containers `name` and `sidecar`, in `region`.
fn app(name: &str, region: &str) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name},
        "spec": {
            "placement": {"regions": [region]},
            "manifests": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [
                                          {"name": name, "image": "nginx:1.27"},
                                          {"name": "sidecar", "image": "busybox:1.36"}]}}}
            }]
        }
    })
}

/// The SupportServices installed from ServiceProfiles into namespace `ns`.
async fn services_in(client: &Client, ns: &str) -> Result<Vec<SupportService>> {
    let all = Api::<SupportService>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(all
        .items
        .into_iter()
        .filter(|s| s.spec.service.as_ref().is_some_and(|u| u.namespace == ns))
        .collect())
}

pub(crate) async fn wait_services(
    client: &Client,
    ns: &str,
    count: usize,
) -> Result<Vec<SupportService>> {
    eventually(&format!("{count} service(s) in {ns}"), TIMEOUT, || async {
        let services = services_in(client, ns).await?;
        let live = services
            .iter()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .count();
        Ok((services.len() == count && live == count).then_some(services))
    })
    .await
}

pub(crate) fn unit_name(service: &SupportService) -> String {
    service
        .spec
        .service
        .as_ref()
        .map(|u| u.name.clone())
        .unwrap_or_default()
}

/// The connection Secret's values, decoded.
pub(crate) async fn connection(
    runtime: &Client,
    ns: &str,
    name: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    let secret = eventually(&format!("Secret {ns}/{name}"), TIMEOUT, || async {
        Ok(Api::<Secret>::namespaced(runtime.clone(), ns)
            .get_opt(name)
            .await?)
    })
    .await?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect())
}

/// The pod template annotation carrying the injected connections' hash, and the names of
/// the Secrets the Deployment's first container gets with `envFrom`.
async fn injection(
    runtime: &Client,
    ns: &str,
    name: &str,
) -> Result<(Option<String>, Vec<String>)> {
    let deployment = Api::<Deployment>::namespaced(runtime.clone(), ns)
        .get(name)
        .await?;
    let template = deployment.spec.context("spec")?.template;
    let hash = template
        .metadata
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("qleetos.io/connections").cloned());
    let env_from = template
        .spec
        .context("pod spec")?
        .containers
        .first()
        .and_then(|c| c.env_from.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.secret_ref.map(|s| s.name))
        .collect();
    Ok((hash, env_from))
}

async fn wait_injection(
    runtime: &Client,
    ns: &str,
    name: &str,
    wanted: impl Fn(&(Option<String>, Vec<String>)) -> bool,
    what: &str,
) -> Result<(Option<String>, Vec<String>)> {
    eventually(what, TIMEOUT, || async {
        let found = injection(runtime, ns, name).await?;
        Ok(wanted(&found).then_some(found))
    })
    .await
}

/// The seeds' Web3 story on an existing runtime: ingress and TLS (support services) and an
/// RPC node (a service dependency) are installed, then the app, Ready, with the injected
/// RPC_URL answering a real JSON-RPC call. Deleting the dependency while the app runs takes
/// the injection out of it (it rolls) and then removes the RPC node.
pub async fn web3_app_gets_an_rpc_node_whose_injected_url_answers(
    env: &mut Environment,
) -> Result<()> {
    operator_running(env).await?;
    let client = env.management_client().await?;
    apply_default_profiles(env, 5).await?;
    let stand_ins = StandIns::start(env, "web3", None).await?;
    let outcome = web3_app_with_its_stand_ins(env, &client, &stand_ins).await;
    stand_ins.stop().await;
    outcome
}

async fn web3_app_with_its_stand_ins(
    env: &Environment,
    client: &Client,
    stand_ins: &StandIns,
) -> Result<()> {
    let (ns, client) = ("web3", client.clone());
    apply_rpc_profile(&client, "ethereum-rpc").await?;
    // What `make run` grants the sample (its host), and nothing more.
    let policy = example_policy(ns)?;
    crate::tenancy::apply_policy(&client, policy.clone()).await?;
    ensure_namespace(&client, ns).await?;
    crate::support::policy_selects(&client, name_of(&policy)?, ns).await?;
    let documents = yaml_documents("web3-workload.yaml")?;
    apply(&client, &documents[1]).await?;
    apply_workload(&client, ns, &documents[2]).await?;

    let service = wait_services(&client, ns, 1).await?.remove(0);
    wait_workload_ready(&client, ns, "dapp").await?;
    let runtime = env.runtime("eu-west").context("runtime")?.client().await?;
    let details = connection(&runtime, ns, "rpc-dapp").await?;
    let url = details.get("RPC_URL").context("RPC_URL injected")?;
    ensure!(
        *url == format!("http://{}.{ns}.svc:8545", unit_name(&service)),
        "RPC_URL {url}"
    );
    ensure!(details.get("CHAIN_ID").map(String::as_str) == Some("31337"));
    let (hash, env_from) = injection(&runtime, ns, "dapp").await?;
    ensure!(
        hash.is_some() && env_from == ["rpc-dapp"],
        "injected: {env_from:?}"
    );
    let address = stand_ins.rpc_node("eu-west", url).await?;
    jsonrpc::wait_block_number(url, Some(address), TIMEOUT).await?;
    ensure!(jsonrpc::chain_id(url, Some(address)).await? == ANVIL_CHAIN_ID);
    let rpc_deployment = unit_name(&service);
    let node = Api::<Deployment>::namespaced(runtime.clone(), ns)
        .get(&rpc_deployment)
        .await?;
    let app = Api::<Deployment>::namespaced(runtime.clone(), ns)
        .get("dapp")
        .await?;
    ensure!(
        node.metadata.creation_timestamp <= app.metadata.creation_timestamp,
        "the app was created before its RPC node"
    );
    let bound = eventually("the dependency Bound", TIMEOUT, || async {
        let found = Api::<WorkloadServiceDependency>::namespaced(client.clone(), ns)
            .get("rpc")
            .await?;
        Ok(found.status.clone().filter(|s| s.is_ready()).map(|_| found))
    })
    .await?;
    ensure!(bound.status.map(|s| s.bound_workloads) == Some(vec!["dapp".to_owned()]));

    Api::<WorkloadServiceDependency>::namespaced(client.clone(), ns)
        .delete("rpc", &DeleteParams::default())
        .await?;
    wait_injection(
        &runtime,
        ns,
        "dapp",
        |(hash, env_from)| hash.is_none() && env_from.is_empty(),
        "the injection gone from dapp",
    )
    .await?;
    let api: Api<SupportService> = Api::all(client.clone());
    wait_gone(&api, service.metadata.name.as_deref().unwrap_or_default()).await?;
    wait_gone(
        &Api::<Deployment>::namespaced(runtime.clone(), ns),
        &rpc_deployment,
    )
    .await?;
    wait_gone(&Api::<Secret>::namespaced(runtime.clone(), ns), "rpc-dapp").await?;
    stand_ins
        .runtime_when("eu-west", "anvil stopped", |r| {
            !r.rpc_nodes.contains_key(url.as_str())
        })
        .await?;
    wait_workload_ready(&client, ns, "dapp").await?;
    delete_workload(&client, ns, "dapp").await?;
    wait_gone(&Api::<Workload>::namespaced(client.clone(), ns), "dapp").await?;
    delete_example_policy(&client, &policy).await
}

/// Deletes a policy [`example_policy`] gave.
pub(crate) async fn delete_example_policy(client: &Client, policy: &Value) -> Result<()> {
    Api::<TenantPolicy>::all(client.clone())
        .delete(name_of(policy)?, &DeleteParams::default())
        .await?;
    Ok(())
}

pub(crate) fn name_of(object: &Value) -> Result<&str> {
    object["metadata"]["name"]
        .as_str()
        .context("an object without metadata.name")
}

/// One shared RPC node serves two workloads (installed once, kept when the first goes,
/// removed after the last); a dedicated one is installed per workload.
pub async fn shared_and_dedicated_services_follow_their_users(env: &mut Environment) -> Result<()> {
    operator_running(env).await?;
    let (ns, client) = ("svc-shared", env.management_client().await?);
    apply_rpc_profile(&client, "ethereum-rpc").await?;
    ensure_namespace(&client, ns).await?;
    apply(
        &client,
        &dependency(ns, "chain", "ethereum-rpc", &["alpha", "beta"], json!({})),
    )
    .await?;
    apply(
        &client,
        &dependency(
            ns,
            "own-chain",
            "ethereum-rpc",
            &["gamma", "delta"],
            json!({"sharing": "Dedicated"}),
        ),
    )
    .await?;
    for name in ["alpha", "beta", "gamma", "delta"] {
        apply_workload(&client, ns, &app(name, "us-east-1")).await?;
    }
    for name in ["alpha", "beta", "gamma", "delta"] {
        wait_workload_ready(&client, ns, name).await?;
    }
    let services = wait_services(&client, ns, 3).await?;
    let runtime = env.runtime("us-east").context("runtime")?.client().await?;
    let alpha = connection(&runtime, ns, "chain-alpha").await?;
    let (gamma_hash, _) = injection(&runtime, ns, "gamma").await?;
    let (delta_hash, _) = injection(&runtime, ns, "delta").await?;
    ensure!(
        gamma_hash != delta_hash,
        "dedicated services give each workload its own details"
    );
    ensure!(alpha.contains_key("RPC_URL"));
    let shared: Vec<&SupportService> = services
        .iter()
        .filter(|s| {
            s.spec
                .service
                .as_ref()
                .is_some_and(|u| u.dedicated_to.is_none())
        })
        .collect();
    ensure!(
        shared.len() == 1,
        "one shared service, got {}",
        shared.len()
    );
    let shared_name = shared[0].metadata.name.clone().unwrap_or_default();

    delete_workload(&client, ns, "alpha").await?;
    wait_gone(&Api::<Deployment>::namespaced(runtime.clone(), ns), "alpha").await?;
    let api: Api<SupportService> = Api::all(client.clone());
    // The shared service took note that alpha went: one user left.
    let kept = eventually("the shared service down to one user", TIMEOUT, || async {
        let service = api.get(&shared_name).await?;
        let users = service.status.as_ref().map(|s| s.users.clone());
        let alpha_gone = users
            .as_ref()
            .is_some_and(|u| !u.iter().any(|u| u.starts_with(&format!("{ns}/alpha-"))));
        Ok(alpha_gone.then_some(service))
    })
    .await?;
    ensure!(
        kept.metadata.deletion_timestamp.is_none(),
        "the shared service went with its first user"
    );
    ensure!(
        kept.status.map(|s| s.users.len()) == Some(1),
        "beta still uses it"
    );
    delete_workload(&client, ns, "beta").await?;
    wait_gone(&api, &shared_name).await?;
    wait_gone(
        &Api::<Deployment>::namespaced(runtime.clone(), ns),
        &unit_name(shared[0]),
    )
    .await?;
    let unbound = eventually("the dependency NoBoundWorkload", TIMEOUT, || async {
        let found = Api::<WorkloadServiceDependency>::namespaced(client.clone(), ns)
            .get("chain")
            .await?;
        let reason = found
            .status
            .as_ref()
            .and_then(|s| s.condition("Ready"))
            .map(|c| c.reason.clone());
        Ok((reason.as_deref() == Some("NoBoundWorkload")).then_some(found))
    })
    .await?;
    ensure!(
        unbound.metadata.deletion_timestamp.is_none(),
        "the dependency stays when its workloads go"
    );
    for name in ["gamma", "delta"] {
        delete_workload(&client, ns, name).await?;
    }
    wait_services(&client, ns, 0).await?;
    Ok(())
}

/// A parameter change and then a profile swap each install the new service, roll the
/// workload onto it, and remove the old one.
pub async fn parameter_change_and_profile_swap_move_the_workload(
    env: &mut Environment,
) -> Result<()> {
    operator_running(env).await?;
    let (ns, client) = ("svc-move", env.management_client().await?);
    apply_rpc_profile(&client, "ethereum-rpc").await?;
    apply_rpc_profile(&client, "ethereum-rpc-next").await?;
    ensure_namespace(&client, ns).await?;
    apply(
        &client,
        &dependency(ns, "rpc", "ethereum-rpc", &["mover"], json!({})),
    )
    .await?;
    apply_workload(&client, ns, &app("mover", "us-east-1")).await?;
    wait_workload_ready(&client, ns, "mover").await?;
    let runtime = env.runtime("us-east").context("runtime")?.client().await?;
    let first = wait_services(&client, ns, 1).await?.remove(0);
    let (first_hash, _) = injection(&runtime, ns, "mover").await?;

    let changes = [
        (
            "a parameter change",
            json!({"parameters": {"chainId": 1337}}),
            "ethereum-rpc",
        ),
        (
            "a profile swap",
            json!({"parameters": {"chainId": 1337}}),
            "ethereum-rpc-next",
        ),
    ];
    let (mut old, mut old_hash) = (first, first_hash);
    for (what, spec, profile) in changes {
        apply(&client, &dependency(ns, "rpc", profile, &["mover"], spec)).await?;
        let moved = wait_injection(
            &runtime,
            ns,
            "mover",
            |(hash, _)| hash.is_some() && *hash != old_hash,
            &format!("mover rolled by {what}"),
        )
        .await?;
        let api: Api<SupportService> = Api::all(client.clone());
        wait_gone(&api, old.metadata.name.as_deref().unwrap_or_default()).await?;
        wait_gone(
            &Api::<Deployment>::namespaced(runtime.clone(), ns),
            &unit_name(&old),
        )
        .await?;
        let now = wait_services(&client, ns, 1).await?.remove(0);
        ensure!(
            now.spec.profile_ref.name == profile,
            "{what}: now on {}",
            now.spec.profile_ref.name
        );
        let details = connection(&runtime, ns, "rpc-mover").await?;
        ensure!(
            details
                .get("RPC_URL")
                .is_some_and(|u| u.contains(&unit_name(&now))),
            "{what}: RPC_URL {details:?}"
        );
        wait_workload_ready(&client, ns, "mover").await?;
        (old, old_hash) = (now, moved.0);
    }
    delete_workload(&client, ns, "mover").await?;
    wait_services(&client, ns, 0).await?;
    Ok(())
}

/// Bad parameters are refused at admission with what is wrong; a service whose readiness
/// never comes keeps the workload waiting with a message saying so, without Warnings.
pub async fn bad_parameters_are_refused_and_a_never_ready_service_waits_quietly(
    env: &mut Environment,
) -> Result<()> {
    operator_running(env).await?;
    let (ns, client) = ("svc-bad", env.management_client().await?);
    apply_rpc_profile(&client, "ethereum-rpc").await?;
    ensure_namespace(&client, ns).await?;
    let refusals = [
        (
            json!({"parameters": {"chainid": 1}}),
            "chainid not declared by ServiceProfile ethereum-rpc",
        ),
        (
            json!({"parameters": {"chainId": "one"}}),
            "wrong type for chainId (must be integer)",
        ),
    ];
    // The API server's policy sees a new ServiceProfile within moments; until then (or when
    // none exists) the dependency is admitted and its Qleet reports InvalidParameters.
    for (spec, expected) in refusals {
        let bad = dependency(ns, "bad", "ethereum-rpc", &["waiter"], spec);
        refused(&client, &bad, expected).await?;
    }
    let _ = Api::<WorkloadServiceDependency>::namespaced(client.clone(), ns)
        .delete("bad", &DeleteParams::default())
        .await;
    let never = json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "ServiceProfile",
        "metadata": {"name": "never-ready"},
        "spec": {
            "parameters": [{"name": "size", "type": "string"}],
            "manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "$(service.name)"}}],
            "healthChecks": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "$(service.name)", "type": "Ready"}],
        }
    });
    apply(&client, &never).await?;
    let incomplete = dependency(ns, "slow", "never-ready", &["waiter"], json!({}));
    refused(
        &client,
        &incomplete,
        "size required by ServiceProfile never-ready",
    )
    .await?;
    apply(
        &client,
        &dependency(
            ns,
            "slow",
            "never-ready",
            &["waiter"],
            json!({"parameters": {"size": "s"}}),
        ),
    )
    .await?;
    apply_workload(&client, ns, &app("waiter", "us-east-1")).await?;
    let api: Api<qleetos_crds::Workload> = Api::namespaced(client.clone(), ns);
    let message = eventually("waiter WaitingForService, Installing", TIMEOUT, || async {
        let workload = api.get("waiter").await?;
        let ready = workload
            .status
            .as_ref()
            .and_then(|s| s.condition("Ready").cloned());
        Ok(ready
            .filter(|c| c.reason == "WaitingForService" && c.message.contains("is Installing"))
            .map(|c| c.message))
    })
    .await?;
    ensure!(
        message.contains("slow (never-ready) on us-east is Installing"),
        "the wait says: {message}"
    );
    // The service's Qleet checks its health again and again, and it stays Installing.
    let slow = wait_services(&client, ns, 1).await?.remove(0);
    let marks = crate::support::log_marks(env);
    let slow_name = slow.metadata.name.clone().unwrap_or_default();
    crate::support::wait_reconciled(env, &marks, "supportservice", "_", &slow_name, 3).await?;
    let slow = wait_services(&client, ns, 1).await?.remove(0);
    ensure!(
        slow.state() == qleetos_crds::DependencyState::Installing,
        "the never-ready service is {:?}",
        slow.state()
    );
    let runtime = env.runtime("us-east").context("runtime")?.client().await?;
    ensure!(
        Api::<Deployment>::namespaced(runtime, ns)
            .get_opt("waiter")
            .await?
            .is_none(),
        "the workload was deployed before its service was Ready"
    );
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let warnings: Vec<String> = events
        .items
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| format!("{:?}: {:?}", e.reason, e.message))
        .collect();
    ensure!(
        warnings.is_empty(),
        "a normal wait raised Warnings: {warnings:?}"
    );
    delete_workload(&client, ns, "waiter").await?;
    wait_services(&client, ns, 0).await?;
    profile_outside_the_policy_is_refused(&client).await
}

/// A namespace whose TenantPolicy lists the ServiceProfiles it may use cannot make QleetOS
/// install another: refused, nothing installed, nothing of the workload applied.
async fn profile_outside_the_policy_is_refused(client: &Client) -> Result<()> {
    let (ns, policy) = ("svc-fenced", "svc-fenced-profiles");
    crate::tenancy::apply_policy(
        client,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": policy}, "spec": {"namespaces": [ns], "serviceProfiles": ["postgres"]}}),
    )
    .await?;
    ensure_namespace(client, ns).await?;
    apply(
        client,
        &dependency(ns, "rpc", "ethereum-rpc", &["fenced"], json!({})),
    )
    .await?;
    apply_workload(client, ns, &app("fenced", "us-east-1")).await?;
    let message =
        crate::support::wait_workload_not_ready(client, ns, "fenced", "PlacementFailed").await?;
    ensure!(
        message.contains("may not use ServiceProfile ethereum-rpc; allowed: postgres"),
        "{message}"
    );
    // The dependency's Qleet has looked at it since the Workload exists: it names it as
    // bound, at its current generation.
    let dependencies: Api<WorkloadServiceDependency> = Api::namespaced(client.clone(), ns);
    eventually(
        "the fenced dependency binding the Workload",
        TIMEOUT,
        || async {
            let found = dependencies.get("rpc").await?;
            let status = found.status.clone().unwrap_or_default();
            let seen = status.observed_generation == found.metadata.generation
                && status.bound_workloads == ["fenced"];
            Ok(seen.then_some(()))
        },
    )
    .await?;
    ensure!(
        services_in(client, ns).await?.is_empty(),
        "a refused dependency installed its service"
    );
    delete_workload(client, ns, "fenced").await?;
    Api::<qleetos_crds::TenantPolicy>::all(client.clone())
        .delete(policy, &DeleteParams::default())
        .await?;
    Ok(())
}

/// Waits until applying `object` is refused with a message containing `expected`.
async fn refused(client: &Client, object: &Value, expected: &str) -> Result<()> {
    eventually(&format!("a refusal saying {expected}"), TIMEOUT, || async {
        match apply(client, object).await {
            Ok(()) => anyhow::bail!("admitted"),
            Err(error) if format!("{error:#}").contains(expected) => Ok(Some(())),
            Err(error) => anyhow::bail!("refused with another message: {error:#}"),
        }
    })
    .await
}

/// Another operator's custom resource as the service: a cert-manager `Certificate` whose
/// issued key pair (the Secret cert-manager writes) is the connection, mounted as a volume.
pub async fn a_certificate_from_cert_manager_is_a_service(env: &mut Environment) -> Result<()> {
    operator_running(env).await?;
    let client = env.management_client().await?;
    apply_default_profiles(env, 5).await?;
    let stand_ins = StandIns::start(env, "svc-cert", None).await?;
    let outcome = certificate_service_with_cert_manager(env, &client).await;
    stand_ins.stop().await;
    outcome
}

async fn certificate_service_with_cert_manager(env: &Environment, client: &Client) -> Result<()> {
    let (ns, client) = ("svc-cert", client.clone());
    let profile = json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "ServiceProfile",
        "metadata": {"name": "client-certificate"},
        "spec": {
            "requires": ["tls"],
            "parameters": [{"name": "commonName", "type": "string"}],
            "manifests": [{
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": "$(service.name)"},
                "spec": {"secretName": "$(service.name)-tls", "commonName": "$(parameters.commonName)",
                         "dnsNames": ["$(parameters.commonName)"],
                         "privateKey": {"algorithm": "ECDSA", "size": 256},
                         "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "qleetos-ca"}}
            }],
            "healthChecks": [{"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "name": "$(service.name)", "type": "Ready"}],
            "connection": {"fromSecret": {"name": "$(service.name)-tls", "keys": ["tls.crt", "tls.key"]}},
        }
    });
    apply(&client, &profile).await?;
    ensure_namespace(&client, ns).await?;
    let spec = json!({"parameters": {"commonName": "client.qleetos.test"}, "inject": {"mode": "Volume", "mountPath": "/etc/client-tls"}});
    apply(
        &client,
        &dependency(ns, "identity", "client-certificate", &["signer"], spec),
    )
    .await?;
    apply_workload(&client, ns, &app("signer", "eu-west-1")).await?;
    crate::dependencies::wait_ready_within(
        &client,
        ns,
        "signer",
        crate::dependencies::INSTALL_TIMEOUT,
    )
    .await?;
    let runtime = env.runtime("eu-west").context("runtime")?.client().await?;
    let secret = Api::<Secret>::namespaced(runtime.clone(), ns)
        .get("identity-signer")
        .await?;
    let data = secret.data.unwrap_or_default();
    let pem = data.get("tls.crt").context("tls.crt copied")?;
    ensure!(data.contains_key("tls.key"), "tls.key copied");
    let issued = qleetos_e2e::issued::IssuedCertificate::from_pem(&pem.0)?;
    ensure!(
        issued.dns_names.iter().any(|n| n == "client.qleetos.test"),
        "issued for {:?}",
        issued.dns_names
    );
    let deployment = Api::<Deployment>::namespaced(runtime, ns)
        .get("signer")
        .await?;
    let pod = deployment
        .spec
        .context("spec")?
        .template
        .spec
        .context("pod")?;
    let mounted = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    ensure!(
        mounted.iter().any(|m| m.mount_path == "/etc/client-tls"),
        "mounted: {mounted:?}"
    );
    delete_workload(&client, ns, "signer").await?;
    wait_services(&client, ns, 0).await?;
    Ok(())
}

/// A profile with `target: Management` creates its objects in the dependency's namespace of
/// the management cluster (where operators such as Crossplane run), never in the runtime,
/// and its connection Secret still reaches the workload there.
pub async fn a_management_cluster_service_reaches_the_runtime_workload(
    env: &mut Environment,
) -> Result<()> {
    operator_running(env).await?;
    let (ns, client) = ("svc-mgmt", env.management_client().await?);
    let profile = json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "ServiceProfile",
        "metadata": {"name": "managed-credentials"},
        "spec": {
            "target": "Management",
            "parameters": [{"name": "password", "type": "string"}],
            "manifests": [{
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "$(service.name)-credentials"},
                "stringData": {"password": "$(parameters.password)"}
            }],
            "connection": {
                "fromSecret": {"name": "$(service.name)-credentials", "keys": ["password"]},
                "values": {"HOST": "$(service.name).$(runtime.region).example"},
            },
        }
    });
    apply(&client, &profile).await?;
    ensure_namespace(&client, ns).await?;
    let spec = json!({"parameters": {"password": "s3cret-from-management"}});
    apply(
        &client,
        &dependency(ns, "db", "managed-credentials", &["keeper"], spec),
    )
    .await?;
    apply_workload(&client, ns, &app("keeper", "us-east-1")).await?;
    wait_workload_ready(&client, ns, "keeper").await?;
    let service = wait_services(&client, ns, 1).await?.remove(0);
    let source = format!("{}-credentials", unit_name(&service));
    ensure!(
        Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&source)
            .await?
            .is_some(),
        "the service's Secret is not in the management cluster"
    );
    let runtime = env.runtime("us-east").context("runtime")?.client().await?;
    ensure!(
        Api::<Secret>::namespaced(runtime.clone(), ns)
            .get_opt(&source)
            .await?
            .is_none(),
        "a Management profile created objects in the runtime"
    );
    let details = connection(&runtime, ns, "db-keeper").await?;
    ensure!(details.get("password").map(String::as_str) == Some("s3cret-from-management"));
    let host = format!("{}.us-east-1.example", unit_name(&service));
    ensure!(
        details.get("HOST") == Some(&host),
        "HOST {:?}",
        details.get("HOST")
    );
    delete_workload(&client, ns, "keeper").await?;
    wait_services(&client, ns, 0).await?;
    wait_gone(&Api::<Secret>::namespaced(client.clone(), ns), &source).await
}

/// This module's scenarios, run in the dependency environment after its own.
pub fn scenarios() -> Vec<(&'static str, crate::harness::Exclusive)> {
    vec![
        (
            "web3_app_gets_an_rpc_node_whose_injected_url_answers",
            |env| Box::pin(web3_app_gets_an_rpc_node_whose_injected_url_answers(env)),
        ),
        ("shared_and_dedicated_services_follow_their_users", |env| {
            Box::pin(shared_and_dedicated_services_follow_their_users(env))
        }),
        (
            "parameter_change_and_profile_swap_move_the_workload",
            |env| Box::pin(parameter_change_and_profile_swap_move_the_workload(env)),
        ),
        (
            "bad_parameters_are_refused_and_a_never_ready_service_waits_quietly",
            |env| Box::pin(bad_parameters_are_refused_and_a_never_ready_service_waits_quietly(env)),
        ),
        (
            "a_management_cluster_service_reaches_the_runtime_workload",
            |env| {
                Box::pin(a_management_cluster_service_reaches_the_runtime_workload(
                    env,
                ))
            },
        ),
        ("a_certificate_from_cert_manager_is_a_service", |env| {
            Box::pin(a_certificate_from_cert_manager_is_a_service(env))
        }),
    ]
}
