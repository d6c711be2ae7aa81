//! Issue 24, hard multi-tenancy, tried the way a hostile tenant would: each attack is made by
//! a ServiceAccount that may only write Workloads in its own management namespace (what a
//! tenant's CI holds), and each must be refused with the condition the design names before
//! anything reaches a runtime, leaving the victim's route, certificate and DNS record as they
//! were.
//!
//! The host trials need the support services (profiles are cluster-wide) and the real
//! cert-manager, Traefik and external-dns with a bind9 server, so they take turns on an
//! environment of their own; the others run on the shared environment.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use libtest_mimic::Trial;
use qleetos_crds::{
    Condition, Conditions, KubernetesRuntime, READY, SupportService, SupportServiceProfile,
    TenantPolicy, Workload,
};
use qleetos_e2e::dns::DnsServer;
use qleetos_e2e::environment::{Environment, ensure_namespace};
use qleetos_e2e::http::Responder;
use qleetos_e2e::issued::IssuedCertificate;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

mod hosts;
mod runtimes;

use hosts::{dns_publishes_only_generated_records, hosts_have_owners};
use runtimes::{
    limits_cap_a_tenant, no_policy_means_no_provisioning_and_no_hosts,
    pod_security_and_node_escapes_are_refused,
    support_and_foreign_namespaces_are_never_tenant_targets,
};

use crate::dependencies::{
    INGRESS_ADDRESS, INSTALL_TIMEOUT, StandIns, apply_default_profiles, apply_profile,
    delete_profile, https_get, operator_running, profile, wait_gone, wait_ready_within,
    web_workload_behind,
};
use crate::harness::{Exclusive, Scenario, SharedEnv, TakingTurns, own_trial, shared_trial};
use crate::support::{TIMEOUT, eventually, instances_of, kubectl, web_manifests, workload};

/// The ServiceAccount each trial's tenants act as.
const TENANT_SA: &str = "ht-tenant";
/// The ClusterIssuer of the shipped cert-manager profile (examples/support-services).
const SHARED_ISSUER: &str = "qleetos-ca";

/// This file's trials: four on the shared environment, the two that need the real exposure
/// components taking turns on an environment of their own (returned, to be stopped at the end).
pub fn trials(runtime: &Arc<Runtime>, shared: &SharedEnv, dir: &Path) -> (Vec<Trial>, TakingTurns) {
    let on_shared: [(&str, Scenario); 4] = [
        ("pod_security_and_node_escapes_are_refused", |env| {
            Box::pin(pod_security_and_node_escapes_are_refused(env))
        }),
        (
            "support_and_foreign_namespaces_are_never_tenant_targets",
            |env| Box::pin(support_and_foreign_namespaces_are_never_tenant_targets(env)),
        ),
        ("no_policy_means_no_provisioning_and_no_hosts", |env| {
            Box::pin(no_policy_means_no_provisioning_and_no_hosts(env))
        }),
        ("limits_cap_a_tenant", |env| {
            Box::pin(limits_cap_a_tenant(env))
        }),
    ];
    let exclusive: [(&str, Exclusive); 2] = [
        ("hosts_have_owners", |env| Box::pin(hosts_have_owners(env))),
        ("dns_publishes_only_generated_records", |env| {
            Box::pin(dns_publishes_only_generated_records(env))
        }),
    ];
    let env = TakingTurns::new(dir.join("hard-tenancy"), crate::dependencies::runtimes);
    let mut trials: Vec<Trial> = on_shared
        .into_iter()
        .map(|(name, scenario)| shared_trial(name, runtime, shared, scenario))
        .collect();
    trials.extend(exclusive.into_iter().map(|(name, scenario)| {
        let env = env.clone();
        own_trial(name, runtime, async move { env.run(scenario).await })
    }));
    (trials, env)
}

// ---------------------------------------------------------------------------------------
// The tenant identity and what it sees
// ---------------------------------------------------------------------------------------

/// A management-cluster client acting as ServiceAccount `ht-tenant` of `ns` (created here,
/// with a Role allowing every verb on Workloads and WorkloadServiceDependencies in `ns` and
/// nothing else). The namespace must exist.
async fn tenant_client(env: &Environment, ns: &str) -> Result<Client> {
    let admin = env.management_client().await?;
    let params = PatchParams::apply("e2e-test").force();
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": TENANT_SA, "namespace": ns}});
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), ns)
        .patch(TENANT_SA, &params, &Patch::Apply(&account))
        .await?;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": TENANT_SA, "namespace": ns},
        "rules": [{"apiGroups": ["qleetos.io"],
                   "resources": ["workloads", "workloadservicedependencies"],
                   "verbs": ["*"]}]});
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), ns)
        .patch(TENANT_SA, &params, &Patch::Apply(&role))
        .await?;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": TENANT_SA, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TENANT_SA},
        "subjects": [{"kind": "ServiceAccount", "name": TENANT_SA, "namespace": ns}]});
    Api::<RoleBinding>::namespaced(admin, ns)
        .patch(TENANT_SA, &params, &Patch::Apply(&binding))
        .await?;

    let kubeconfig = Kubeconfig::read_from(env.management.kubeconfig_path())?;
    let mut config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:{TENANT_SA}"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".to_owned(),
    ]);
    let tenant = Client::try_from(config)?;
    // The identity is fenced for real: it may not even read ConfigMaps of its namespace.
    match Api::<ConfigMap>::namespaced(tenant.clone(), ns)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(tenant),
        other => {
            bail!("the tenant identity of {ns} is not fenced: listing ConfigMaps gave {other:?}")
        }
    }
}

/// Applies `workload` in `ns` as `tenant` (server-side apply; the namespace must exist).
async fn apply_as(tenant: &Client, ns: &str, workload: &Value) -> Result<()> {
    let name = workload["metadata"]["name"].as_str().context("name")?;
    Api::<Workload>::namespaced(tenant.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("ht-tenant").force(),
            &Patch::Apply(workload),
        )
        .await
        .with_context(|| format!("applying Workload {ns}/{name} as the tenant"))?;
    Ok(())
}

/// The Ready condition of Workload `ns/name`, or of one of its instances, once one of them
/// (at its current generation) is not True and satisfies `wanted`: where a refusal shows.
async fn ready_condition_where(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    wanted: impl Fn(&Condition) -> bool,
) -> Result<Condition> {
    let workloads: Api<Workload> = Api::namespaced(client.clone(), ns);
    let (workloads, wanted) = (&workloads, &wanted);
    eventually(&format!("{ns}/{name}: {what}"), TIMEOUT, || async move {
        let workload = workloads.get(name).await?;
        let mut seen = Vec::new();
        let status = workload.status.clone().unwrap_or_default();
        if status.observed_generation == workload.metadata.generation
            && let Some(c) = status.condition(READY)
        {
            if !c.is_true() && wanted(c) {
                return Ok(Some(c.clone()));
            }
            seen.push(format!(
                "Workload {:?} {}: {}",
                c.status, c.reason, c.message
            ));
        }
        for instance in instances_of(client, ns, name).await? {
            let status = instance.status.clone().unwrap_or_default();
            if status.observed_generation != instance.metadata.generation {
                continue;
            }
            if let Some(c) = status.condition(READY) {
                if !c.is_true() && wanted(c) {
                    return Ok(Some(c.clone()));
                }
                seen.push(format!(
                    "instance {} {:?} {}: {}",
                    instance.name_any(),
                    c.status,
                    c.reason,
                    c.message
                ));
            }
        }
        bail!("Ready conditions: {seen:?}")
    })
    .await
}

/// Waits for the refusal `reason` of `ns/name` and checks that its message holds each of
/// `expected`; returns the message.
async fn refused(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    expected: &[&str],
) -> Result<String> {
    let condition = ready_condition_where(client, ns, name, &format!("refused {reason}"), |c| {
        c.reason == reason
    })
    .await?;
    println!("{ns}/{name} refused, {reason}: {}", condition.message);
    for part in expected {
        ensure!(
            condition.message.contains(part),
            "{ns}/{name} refused ({reason}) without {part:?} in: {}",
            condition.message
        );
    }
    Ok(condition.message)
}

/// Waits until `ns/name` is not Ready with a message holding `part` (whatever the reason:
/// refusals of a runtime's admission come back as the apply's error); returns the condition.
async fn failed_with(client: &Client, ns: &str, name: &str, part: &str) -> Result<Condition> {
    ready_condition_where(
        client,
        ns,
        name,
        &format!("a failure saying {part:?}"),
        |c| c.message.contains(part),
    )
    .await
}

/// Everything in runtime namespace `ns` of every runtime of `env`, other than what Kubernetes
/// puts in any namespace, and the namespace itself: `<runtime>: kind/name`.
async fn runtime_objects(env: &Environment, ns: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for (spec, cluster) in &env.runtimes {
        let kubeconfig = cluster.kubeconfig_path();
        let kinds = kubectl(
            kubeconfig,
            &[
                "api-resources",
                "--verbs=list",
                "--namespaced=true",
                "-o",
                "name",
            ],
        )
        .await?;
        let kinds: Vec<&str> = kinds.lines().filter(|k| !k.starts_with("events")).collect();
        let listed = kubectl(
            kubeconfig,
            &[
                "get",
                &kinds.join(","),
                "-n",
                ns,
                "-o",
                "name",
                "--ignore-not-found",
            ],
        )
        .await?;
        found.extend(
            listed
                .lines()
                .filter(|o| !["configmap/kube-root-ca.crt", "serviceaccount/default"].contains(o))
                .map(|o| format!("{}: {o}", spec.name)),
        );
        let namespaces: Api<Namespace> = Api::all(cluster.client().await?);
        if namespaces.get_opt(ns).await?.is_some() {
            found.push(format!("{}: namespace/{ns}", spec.name));
        }
    }
    Ok(found)
}

/// Nothing of `ns` reached any runtime.
async fn nothing_in_runtimes(env: &Environment, ns: &str) -> Result<()> {
    let found = runtime_objects(env, ns).await?;
    ensure!(
        found.is_empty(),
        "refused Workloads of {ns} left objects in the runtimes: {found:?}"
    );
    Ok(())
}

/// Applies a TenantPolicy for `ns` and waits until the operator has it in force for `ns` (its
/// status, written from the operator's caches, lists `ns` at the policy's generation).
async fn apply_policy_for(client: &Client, ns: &str, policy: Value) -> Result<()> {
    let name = policy["metadata"]["name"]
        .as_str()
        .context("policy name")?
        .to_owned();
    crate::tenancy::apply_policy(client, policy).await?;
    crate::support::policy_selects(client, &name, ns).await
}

async fn delete_policy(client: &Client, name: &str) -> Result<()> {
    Api::<TenantPolicy>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// Deletes the Workloads and waits until they are gone (their instances with them).
async fn delete_workloads(client: &Client, ns: &str, names: &[&str]) -> Result<()> {
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    for name in names {
        api.delete(name, &DeleteParams::default()).await?;
    }
    for name in names {
        wait_gone(&api, name).await?;
    }
    Ok(())
}

/// Deletes management namespaces a trial made (their tenant accounts with them).
async fn delete_namespaces(client: &Client, names: &[&str]) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in names {
        api.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

fn config_map(name: &str, namespace: Option<&str>) -> Value {
    let mut manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name}, "data": {"k": "v"}});
    if let Some(namespace) = namespace {
        manifest["metadata"]["namespace"] = json!(namespace);
    }
    manifest
}

fn in_region(name: &str, manifests: Vec<Value>, region: &str) -> Value {
    workload(name, manifests, json!({"regions": [region]}))
}
