//! Issue 10: clusters on demand with the `Local` provider (real kwokctl clusters of the
//! pinned Kubernetes binaries): a Workload in a region with no runtime gets one, shared by
//! every Workload needing that region, and it goes (its processes too) when unused.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use qleetos_crds::{
    Conditions, KubernetesRuntime, KubernetesRuntimeProfile, ProvisioningPhase, SupportService,
    SupportServiceProfile, TenantPolicy, Workload,
};
use qleetos_e2e::environment::Environment;
use qleetos_e2e::fleet::{self, Fleet, FleetConfig};
use qleetos_e2e::local_clusters;
use qleetos_e2e::operator::OperatorOptions;
use serde_json::{Value, json};

use crate::support::*;

/// Provisioning a cluster takes kwokctl ~10 s; under a full test run, several times that.
pub const PROVISION_TIMEOUT: Duration = Duration::from_secs(240);

pub fn local_profile(name: &str, region: &str, workers: i64) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntimeProfile",
        "metadata": {"name": name},
        "spec": {"provider": "Local", "regions": [region], "default": true,
                 "kubernetesVersion": "v1.36.2",
                 "nodePools": [{"name": "workers", "count": workers}],
                 "idle": {"afterSeconds": 0}}
    })
}

pub async fn apply_runtime_profile(client: &Client, profile: &Value) -> Result<()> {
    let api: Api<KubernetesRuntimeProfile> = Api::all(client.clone());
    let name = profile["metadata"]["name"].as_str().context("name")?;
    api.patch(
        name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(profile),
    )
    .await?;
    Ok(())
}

pub async fn delete_runtime_profile(client: &Client, name: &str) -> Result<()> {
    let api: Api<KubernetesRuntimeProfile> = Api::all(client.clone());
    api.delete(name, &DeleteParams::default()).await?;
    eventually(&format!("profile {name} gone"), TIMEOUT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

pub fn provisioned(name: &str, region: &str, manifests: Vec<Value>) -> Value {
    workload(
        name,
        manifests,
        json!({"regions": [region], "provision": "IfNeeded"}),
    )
}

pub fn config_map(name: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}),
    ]
}

/// A client for a provisioned runtime, from the kubeconfig Secret QleetOS wrote for it.
pub async fn provisioned_client(management: &Client, runtime: &str) -> Result<Client> {
    let secrets: Api<Secret> = Api::namespaced(management.clone(), "qleetos-system");
    let secret = secrets.get(&format!("{runtime}-kubeconfig")).await?;
    let bytes = secret
        .data
        .and_then(|d| d.get("kubeconfig").cloned())
        .context("kubeconfig key")?;
    let kubeconfig = Kubeconfig::from_yaml(std::str::from_utf8(&bytes.0)?)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Waits until runtime `name` and its cluster are gone: no object, no kubeconfig Secret, no
/// SupportService, no kwokctl folder and no process of it.
pub async fn wait_cluster_gone(env: &Environment, name: &str) -> Result<()> {
    let client = env.management_client().await?;
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    eventually(
        &format!("runtime {name} gone"),
        PROVISION_TIMEOUT,
        || async {
            match runtimes.get_opt(name).await? {
                None => Ok(Some(())),
                Some(r) => bail!("still there: {:?}", r.status.map(|s| s.conditions)),
            }
        },
    )
    .await?;
    let dir = env.local_clusters_dir();
    eventually(&format!("processes of {name} gone"), TIMEOUT, || async {
        let left = local_clusters::processes_of(&dir, name);
        if left.is_empty() {
            return Ok(Some(()));
        }
        bail!("processes left: {left:?}")
    })
    .await?;
    ensure!(
        !local_clusters::clusters(&dir).contains(&name.to_owned()),
        "the kwokctl cluster {name} is still on disk"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "qleetos-system");
    let secret = format!("{name}-kubeconfig");
    ensure!(secrets.get_opt(&secret).await?.is_none(), "{secret} left");
    let services = Api::<SupportService>::all(client)
        .list(&ListParams::default())
        .await?;
    let left: Vec<_> = services
        .items
        .iter()
        .filter(|s| s.spec.runtime_ref.name == name)
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    ensure!(left.is_empty(), "SupportServices left on {name}: {left:?}");
    Ok(())
}

/// Polls the Workload until Ready, returning every Ready message it showed on the way.
pub async fn ready_with_history(client: &Client, ns: &str, name: &str) -> Result<Vec<String>> {
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let result = eventually(
        &format!("Workload {ns}/{name} Ready"),
        PROVISION_TIMEOUT,
        || {
            let (api, seen) = (api.clone(), seen.clone());
            async move {
                let workload = api.get(name).await?;
                let status = workload.status.clone().unwrap_or_default();
                if let Some(c) = status.condition(qleetos_crds::READY) {
                    let line = format!("{}: {}", c.reason, c.message);
                    let mut seen = seen.lock().expect("history");
                    if seen.last() != Some(&line) {
                        seen.push(line);
                    }
                }
                let current = status.observed_generation == workload.metadata.generation;
                Ok((current && status.is_ready()).then_some(()))
            }
        },
    )
    .await;
    let seen = seen.lock().expect("history").clone();
    result.with_context(|| format!("messages so far: {seen:#?}"))?;
    Ok(seen)
}

/// The seeds' story with a local cluster: an empty region, a Workload, a new real cluster
/// with the profile's support service first, then the Workload; deleting it removes all.
pub async fn a_workload_in_an_empty_region_gets_a_cluster_that_goes_with_it(
    env: &mut Environment,
) -> Result<()> {
    crate::dependencies::operator_running(env).await?;
    let (ns, client) = ("prov-app", env.management_client().await?);
    let mut profile = local_profile("on-demand", "nowhere-1", 2);
    profile["spec"]["supportServices"] = json!(["baseline"]);
    apply_runtime_profile(&client, &profile).await?;
    let baseline = json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "SupportServiceProfile",
        "metadata": {"name": "baseline"},
        "spec": {"provides": ["baseline"], "default": true, "namespace": "baseline",
                 "gracePeriodSeconds": 0,
                 "manifests": [{"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "marker"}, "data": {"region": "$(runtime.region)"}}]}
    });
    Api::<SupportServiceProfile>::all(client.clone())
        .patch(
            "baseline",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&baseline),
        )
        .await?;
    apply_lab_workload(
        &client,
        ns,
        &provisioned("app", "nowhere-1", web_manifests(1, "nginx:1.27")),
    )
    .await?;
    let history = ready_with_history(&client, ns, "app").await?;
    let waited = history.iter().any(|m| {
        m.starts_with("WaitingForRuntime")
            && m.contains("provisioning nowhere-1 from profile on-demand")
    });
    ensure!(waited, "never said it waited for the runtime: {history:#?}");

    let name = "on-demand-nowhere-1";
    let runtime = Api::<KubernetesRuntime>::all(client.clone())
        .get(name)
        .await?;
    let status = runtime.status.clone().context("runtime status")?;
    let phase = status.provisioning.as_ref().map(|p| p.phase);
    ensure!(
        phase == Some(ProvisioningPhase::Provisioned),
        "phase {phase:?}"
    );
    ensure!(
        status.node_count == Some(2),
        "nodes {:?}",
        status.node_count
    );
    ensure!(
        runtime.spec.provider == "local",
        "provider {}",
        runtime.spec.provider
    );
    let cluster = provisioned_client(&client, name).await?;
    let marker = Api::<ConfigMap>::namespaced(cluster.clone(), "baseline")
        .get("marker")
        .await?;
    ensure!(
        marker
            .data
            .as_ref()
            .and_then(|d| d.get("region"))
            .map(String::as_str)
            == Some("nowhere-1"),
        "marker: {:?}",
        marker.data
    );
    let web = Api::<Deployment>::namespaced(cluster.clone(), ns)
        .get("web")
        .await?;
    ensure!(
        marker.metadata.creation_timestamp <= web.metadata.creation_timestamp,
        "the workload was applied before the profile's support service"
    );
    let version = cluster.apiserver_version().await?.git_version;
    ensure!(version == "v1.36.2", "new cluster serves {version}");
    let processes = local_clusters::processes_of(&env.local_clusters_dir(), name);
    ensure!(!processes.is_empty(), "no process runs the new cluster");

    // A namespace nobody granted provisioning (no TenantPolicy) asks for the same region:
    // refused, and it is no user of the cluster, so it cannot keep it alive.
    let squatter = "prov-squatter";
    apply_workload(
        &client,
        squatter,
        &provisioned("pin", "nowhere-1", config_map("pin")),
    )
    .await?;
    let message = wait_workload_not_ready(&client, squatter, "pin", "TenancyViolation").await?;
    ensure!(
        message.contains("may not provision clusters from KubernetesRuntimeProfile on-demand"),
        "{message}"
    );
    delete_workload(&client, ns, "app").await?;
    wait_cluster_gone(env, name).await?;
    delete_workload(&client, squatter, "pin").await?;
    delete_runtime_profile(&client, "on-demand").await?;
    Api::<SupportServiceProfile>::all(client)
        .delete("baseline", &DeleteParams::default())
        .await?;
    Ok(())
}

/// Twenty Workloads created at once for one empty region get one cluster.
pub async fn twenty_workloads_needing_one_new_region_share_one_cluster(
    env: &mut Environment,
) -> Result<()> {
    crate::dependencies::operator_running(env).await?;
    let (ns, client) = ("prov-crowd", env.management_client().await?);
    apply_runtime_profile(&client, &local_profile("crowd", "crowd-1", 1)).await?;
    lab_namespace(&client, ns).await?;
    let names: Vec<String> = (0..20).map(|i| format!("crowd-{i:02}")).collect();
    let creates =
        names.iter().map(|name| {
            let client = client.clone();
            async move {
                apply_workload(&client, ns, &provisioned(name, "crowd-1", config_map(name))).await
            }
        });
    for created in futures::future::join_all(creates).await {
        created?;
    }
    for name in &names {
        ready_with_history(&client, ns, name).await?;
    }
    let selector = "qleetos.io/runtime-profile=crowd";
    let runtimes = Api::<KubernetesRuntime>::all(client.clone())
        .list(&ListParams::default().labels(selector))
        .await?;
    ensure!(
        runtimes.items.len() == 1,
        "{} runtimes for one region",
        runtimes.items.len()
    );
    let clusters: Vec<String> = local_clusters::clusters(&env.local_clusters_dir())
        .into_iter()
        .filter(|c| c.starts_with("crowd"))
        .collect();
    ensure!(
        clusters == ["crowd-crowd-1"],
        "local clusters: {clusters:?}"
    );
    let cluster = provisioned_client(&client, "crowd-crowd-1").await?;
    let count = crowd_config_maps(cluster, ns).await?;
    ensure!(
        count == 20,
        "{count} of 20 ConfigMaps in the shared cluster"
    );
    for name in &names {
        delete_workload(&client, ns, name).await?;
    }
    wait_cluster_gone(env, "crowd-crowd-1").await?;
    delete_runtime_profile(&client, "crowd").await
}

async fn crowd_config_maps(cluster: Client, ns: &str) -> Result<usize> {
    let maps = Api::<ConfigMap>::namespaced(cluster, ns)
        .list(&ListParams::default())
        .await?;
    let named = |m: &&ConfigMap| {
        m.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("crowd-"))
    };
    Ok(maps.items.iter().filter(named).count())
}

/// A provider error (a version the Local provider does not have) reaches the Workload; a
/// profile that does not serve the region and a tenant without the right are refused with
/// nothing created.
pub async fn provisioning_failures_and_refusals_are_reported(env: &mut Environment) -> Result<()> {
    crate::dependencies::operator_running(env).await?;
    let (ns, client) = ("prov-bad", env.management_client().await?);
    let mut stale = local_profile("old-k8s", "stale-1", 1);
    stale["spec"]["kubernetesVersion"] = json!("v1.30.0");
    apply_runtime_profile(&client, &stale).await?;
    apply_lab_workload(
        &client,
        ns,
        &provisioned("stale", "stale-1", config_map("stale")),
    )
    .await?;
    let message = wait_workload_not_ready(&client, ns, "stale", "PlacementFailed").await?;
    ensure!(
        message.contains("ProvisioningFailed")
            && message.contains("the Local provider runs Kubernetes v1.36.2")
            && message.contains("asks for v1.30.0"),
        "{message}"
    );
    let runtime = Api::<KubernetesRuntime>::all(client.clone())
        .get("old-k8s-stale-1")
        .await?;
    let phase = runtime.status.and_then(|s| s.provisioning).map(|p| p.phase);
    ensure!(phase == Some(ProvisioningPhase::Failed), "phase {phase:?}");
    ensure!(
        !local_clusters::clusters(&env.local_clusters_dir())
            .contains(&"old-k8s-stale-1".to_owned()),
        "a cluster was created for a refused version"
    );

    let mut elsewhere = provisioned("elsewhere", "elsewhere-1", config_map("elsewhere"));
    elsewhere["spec"]["placement"]["runtimeProfile"] = json!("old-k8s");
    apply_lab_workload(&client, ns, &elsewhere).await?;
    let message = wait_workload_not_ready(&client, ns, "elsewhere", "NoRuntimeProfile").await?;
    ensure!(
        message.contains("serves regions stale-1, not elsewhere-1"),
        "{message}"
    );

    apply_runtime_profile(&client, &local_profile("fenced-prof", "fenced-1", 1)).await?;
    let policy = json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
        "metadata": {"name": "no-provisioning"},
        "spec": {"namespaces": ["prov-fenced"], "runtimeProfiles": []}
    });
    Api::<TenantPolicy>::all(client.clone())
        .patch(
            "no-provisioning",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&policy),
        )
        .await?;
    apply_workload(
        &client,
        "prov-fenced",
        &provisioned("wants", "fenced-1", config_map("wants")),
    )
    .await?;
    let message =
        wait_workload_not_ready(&client, "prov-fenced", "wants", "TenancyViolation").await?;
    ensure!(
        message.contains("may not provision clusters from KubernetesRuntimeProfile fenced-prof"),
        "{message}"
    );
    let fenced = Api::<KubernetesRuntime>::all(client.clone())
        .get_opt("fenced-prof-fenced-1")
        .await?;
    ensure!(
        fenced.is_none(),
        "a runtime was provisioned for a fenced tenant"
    );

    for (namespace, name) in [(ns, "stale"), (ns, "elsewhere"), ("prov-fenced", "wants")] {
        delete_workload(&client, namespace, name).await?;
    }
    wait_cluster_gone(env, "old-k8s-stale-1").await?;
    Api::<TenantPolicy>::all(client.clone())
        .delete("no-provisioning", &DeleteParams::default())
        .await?;
    delete_runtime_profile(&client, "old-k8s").await?;
    delete_runtime_profile(&client, "fenced-prof").await
}

/// The operator is SIGKILLed while the cluster is being created; the restarted operator
/// ends with one cluster and the Workload Ready.
pub async fn an_operator_killed_while_provisioning_converges_to_one_cluster(
    env: &mut Environment,
) -> Result<()> {
    crate::dependencies::operator_running(env).await?;
    let (ns, client) = ("prov-kill", env.management_client().await?);
    apply_runtime_profile(&client, &local_profile("sturdy", "sturdy-1", 2)).await?;
    apply_lab_workload(
        &client,
        ns,
        &provisioned("sturdy", "sturdy-1", config_map("sturdy")),
    )
    .await?;
    let dir = env.local_clusters_dir();
    eventually("the cluster being created", PROVISION_TIMEOUT, || async {
        Ok(local_clusters::clusters(&dir)
            .contains(&"sturdy-sturdy-1".to_owned())
            .then_some(()))
    })
    .await?;
    for operator in env.operators_mut() {
        operator.kill();
    }
    env.stop_operators().await;
    env.start_operator(OperatorOptions::default()).await?;
    ready_with_history(&client, ns, "sturdy").await?;
    let clusters: Vec<String> = local_clusters::clusters(&dir)
        .into_iter()
        .filter(|c| c.starts_with("sturdy"))
        .collect();
    ensure!(
        clusters == ["sturdy-sturdy-1"],
        "local clusters: {clusters:?}"
    );
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(
        provisioned_client(&client, "sturdy-sturdy-1").await?,
    )
    .list(&ListParams::default())
    .await?;
    ensure!(nodes.items.len() == 2, "{} nodes", nodes.items.len());
    delete_workload(&client, ns, "sturdy").await?;
    wait_cluster_gone(env, "sturdy-sturdy-1").await?;
    delete_runtime_profile(&client, "sturdy").await
}

/// Deleting the only Workload while its cluster is still being created cancels cleanly: the
/// runtime goes, and no folder or process of the cluster is left.
pub async fn deleting_a_workload_while_its_cluster_provisions_cancels_cleanly(
    env: &mut Environment,
) -> Result<()> {
    crate::dependencies::operator_running(env).await?;
    let (ns, client) = ("prov-hasty", env.management_client().await?);
    apply_runtime_profile(&client, &local_profile("hasty", "hasty-1", 2)).await?;
    apply_lab_workload(
        &client,
        ns,
        &provisioned("hasty", "hasty-1", config_map("hasty")),
    )
    .await?;
    let dir = env.local_clusters_dir();
    eventually("the cluster being created", PROVISION_TIMEOUT, || async {
        Ok(local_clusters::clusters(&dir)
            .contains(&"hasty-hasty-1".to_owned())
            .then_some(()))
    })
    .await?;
    let workload: Api<Workload> = Api::namespaced(client.clone(), ns);
    let ready = workload
        .get("hasty")
        .await?
        .status
        .is_some_and(|s| s.is_ready());
    ensure!(
        !ready,
        "the Workload was Ready before its cluster had been created"
    );
    delete_workload(&client, ns, "hasty").await?;
    wait_cluster_gone(env, "hasty-hasty-1").await?;
    delete_runtime_profile(&client, "hasty").await
}

pub fn scenarios() -> Vec<(&'static str, crate::harness::Exclusive)> {
    vec![
        (
            "a_workload_in_an_empty_region_gets_a_cluster_that_goes_with_it",
            |env| Box::pin(a_workload_in_an_empty_region_gets_a_cluster_that_goes_with_it(env)),
        ),
        (
            "the_web3_example_in_an_empty_region_gets_a_cluster_and_goes_with_it",
            |env| {
                Box::pin(the_web3_example_in_an_empty_region_gets_a_cluster_and_goes_with_it(env))
            },
        ),
        (
            "twenty_workloads_needing_one_new_region_share_one_cluster",
            |env| {
                Box::pin(twenty_workloads_needing_one_new_region_share_one_cluster(
                    env,
                ))
            },
        ),
        ("provisioning_failures_and_refusals_are_reported", |env| {
            Box::pin(provisioning_failures_and_refusals_are_reported(env))
        }),
        (
            "cluster_api_provisions_a_runtime_through_real_cluster_api",
            |env| {
                Box::pin(crate::provisioning_capi::cluster_api_provisions_a_runtime_through_real_cluster_api(
                    env,
                ))
            },
        ),
        (
            "deleting_a_workload_while_its_cluster_provisions_cancels_cleanly",
            |env| Box::pin(deleting_a_workload_while_its_cluster_provisions_cancels_cleanly(env)),
        ),
        (
            "an_operator_killed_while_provisioning_converges_to_one_cluster",
            |env| Box::pin(an_operator_killed_while_provisioning_converges_to_one_cluster(env)),
        ),
    ]
}

/// The seeds' whole story on an empty region: `make run`'s headline sample
/// (examples/web3-empty-region.yaml: HTTPS, DNS, an Ethereum RPC node, the dApp) gets a new
/// cluster first, whose stand-ins the environment's fleet starts on its own; its certificate
/// is issued, DNS answers, Traefik serves it over HTTPS and its RPC_URL answers; deleting it
/// leaves nothing: no runtime, cluster, stand-in process or file. The time from apply to
/// Ready is printed.
pub async fn the_web3_example_in_an_empty_region_gets_a_cluster_and_goes_with_it(
    env: &mut Environment,
) -> Result<()> {
    crate::dependencies::operator_running(env).await?;
    let client = env.management_client().await?;
    crate::dependencies::apply_default_profiles(env, 5).await?;
    apply_runtime_profile(&client, &local_profile("web3-local", "web3-empty-1", 1)).await?;
    crate::services::apply_rpc_profile(&client, "ethereum-rpc").await?;
    let dns = qleetos_e2e::dns::DnsServer::start(&env.dir().join("dns-web3")).await?;
    let fleet_dir = env.dir().join("fleet-web3");
    let fleet = Fleet::start(FleetConfig {
        dir: fleet_dir.clone(),
        management_kubeconfig: env.management.kubeconfig_path().to_owned(),
        runtime_selector: Some("qleetos.io/runtime-profile=web3-local".to_owned()),
        dns: Some(dns.updates()),
        ingress_address: "127.0.0.1".to_owned(),
    })
    .await?;
    let outcome = web3_on_a_new_cluster(env, &client, &fleet_dir, &dns).await;
    fleet.stop().await;
    outcome
}

async fn web3_on_a_new_cluster(
    env: &Environment,
    client: &Client,
    fleet_dir: &std::path::Path,
    dns: &qleetos_e2e::dns::DnsServer,
) -> Result<()> {
    use crate::services::{delete_example_policy, example_policy};
    let (ns, name, host) = ("web3-edge", "web3-local-web3-empty-1", "edge.qleetos.test");
    // What `make run` grants the sample (its host), with the profile to provision from.
    let mut policy = example_policy(ns)?;
    policy["spec"]["runtimeProfiles"] = json!(["web3-local"]);
    crate::tenancy::apply_policy(client, policy.clone()).await?;
    qleetos_e2e::environment::ensure_namespace(client, ns).await?;
    policy_selects(client, crate::services::name_of(&policy)?, ns).await?;
    let documents = crate::services::yaml_documents("web3-empty-region.yaml")?;
    let mut dapp = documents[2].clone();
    dapp["spec"]["placement"]["regions"] = json!(["web3-empty-1"]);
    let started = std::time::Instant::now();
    crate::services::apply(client, &documents[1]).await?;
    apply_workload(client, ns, &dapp).await?;
    ready_with_history(client, ns, "dapp").await?;
    eprintln!(
        "the Web3 example on a new cluster: apply to Ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let service = crate::services::wait_services(client, ns, 1)
        .await?
        .remove(0);
    ensure!(
        service.spec.runtime_ref.name == name,
        "the RPC node went to {}",
        service.spec.runtime_ref.name
    );
    let cluster = provisioned_client(client, name).await?;
    let ca = check_issued_certificate(&cluster, ns, host).await?;
    let url = crate::services::connection(&cluster, ns, "rpc-dapp")
        .await?
        .remove("RPC_URL")
        .context("RPC_URL")?;
    let runtime = eventually("the fleet's anvil for the RPC node", TIMEOUT, || async {
        let published = fleet::read_published(fleet_dir).runtimes.remove(name);
        Ok(published.filter(|r| r.rpc_nodes.contains_key(&url)))
    })
    .await?;
    qleetos_e2e::jsonrpc::wait_block_number(&url, Some(runtime.rpc_nodes[&url]), TIMEOUT).await?;
    check_dns_and_https(dns, host, runtime.https_port, &ca).await?;

    Api::<qleetos_crds::WorkloadServiceDependency>::namespaced(client.clone(), ns)
        .delete("rpc", &DeleteParams::default())
        .await?;
    delete_workload(client, ns, "dapp").await?;
    wait_cluster_gone(env, name).await?;
    wait_stand_ins_gone(fleet_dir, name, &runtime).await?;
    delete_runtime_profile(client, "web3-local").await?;
    delete_example_policy(client, &policy).await
}

/// external-dns wrote the host into bind9, and Traefik serves it over HTTPS with the
/// certificate cert-manager issued (verified against `ca`).
async fn check_dns_and_https(
    dns: &qleetos_e2e::dns::DnsServer,
    host: &str,
    https_port: u16,
    ca: &[u8],
) -> Result<()> {
    let answers = eventually("the DNS record of the host", TIMEOUT, || async {
        let answers = dns.query(host, "A").await?;
        Ok((!answers.is_empty()).then_some(answers))
    })
    .await?;
    ensure!(answers == ["127.0.0.1"], "{host} A {answers:?}");
    eventually(
        "HTTPS through Traefik with the issued certificate",
        TIMEOUT,
        || async {
            let (verified, _) = qleetos_e2e::exposure::https_request(host, https_port, ca).await?;
            Ok(verified.then_some(()))
        },
    )
    .await
}

/// The dApp's TLS Secret holds a certificate cert-manager issued for `host`; returns the
/// issuing CA (PEM).
async fn check_issued_certificate(cluster: &Client, ns: &str, host: &str) -> Result<Vec<u8>> {
    let data = eventually("the dApp's TLS Secret", TIMEOUT, || async {
        let secrets: Api<Secret> = Api::namespaced(cluster.clone(), ns);
        let found = secrets.list(&ListParams::default()).await?;
        Ok(found
            .items
            .into_iter()
            .find(|s| s.type_.as_deref() == Some("kubernetes.io/tls"))
            .and_then(|s| s.data)
            .filter(|d| d.contains_key("tls.crt") && d.contains_key("ca.crt")))
    })
    .await?;
    let issued = qleetos_e2e::issued::IssuedCertificate::from_pem(&data["tls.crt"].0)?;
    ensure!(
        issued.valid_now && issued.dns_names == [host],
        "issued: {issued:?}"
    );
    Ok(data["ca.crt"].0.clone())
}

/// The fleet stops listing runtime `name`; none of the processes it ran there is left, nor
/// its kubeconfig or logs.
async fn wait_stand_ins_gone(
    fleet_dir: &std::path::Path,
    name: &str,
    runtime: &fleet::PublishedRuntime,
) -> Result<()> {
    ensure!(
        runtime.pids.len() >= 3,
        "stand-ins that ran: {:?}",
        runtime.pids
    );
    eventually("the fleet to drop the runtime", TIMEOUT, || async {
        let published = fleet::read_published(fleet_dir);
        Ok((!published.runtimes.contains_key(name)).then_some(()))
    })
    .await?;
    let left: Vec<_> = runtime
        .pids
        .iter()
        .filter(|(_, pid)| fleet::alive(**pid))
        .collect();
    ensure!(left.is_empty(), "stand-in processes left: {left:?}");
    for path in [
        runtime.kubeconfig.clone(),
        fleet_dir.join("stand-ins").join(name),
    ] {
        ensure!(!path.exists(), "{} left", path.display());
    }
    Ok(())
}
