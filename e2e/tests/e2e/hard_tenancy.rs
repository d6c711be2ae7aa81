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
use qleetos_e2e::standin::{IngressPorts, StandIn};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::dependencies::{
    INGRESS_ADDRESS, INSTALL_TIMEOUT, apply_default_profiles, apply_profile, cert_manager_on,
    delete_profile, external_dns_on, https_get, operator_running, profile, traefik_on, wait_gone,
    wait_ready_within, web_workload_behind,
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

// ---------------------------------------------------------------------------------------
// Hosts: the exposure components on eu-west
// ---------------------------------------------------------------------------------------

/// The default support-service profiles, and the real Traefik, external-dns (writing into
/// a bind9 server of its own) and, for TLS, cert-manager standing in for their pods on
/// eu-west.
#[derive(Debug)]
struct Exposure {
    dns: DnsServer,
    ingress: IngressPorts,
    stand_ins: Vec<StandIn>,
}

impl Exposure {
    async fn start(env: &Environment, tag: &str, tls: bool) -> Result<Self> {
        apply_default_profiles(env, 5).await?;
        let dns = DnsServer::start(&env.dir().join(format!("dns-{tag}"))).await?;
        let ingress = IngressPorts::free(INGRESS_ADDRESS)?;
        let mut stand_ins = vec![
            traefik_on(env, "eu-west", &ingress).await?,
            external_dns_on(env, "eu-west", &dns).await?,
        ];
        if tls {
            stand_ins.push(cert_manager_on(env, "eu-west").await?);
        }
        Ok(Self {
            dns,
            ingress,
            stand_ins,
        })
    }

    /// Once every exposed Workload is gone: waits until QleetOS removed the support services,
    /// then stops the stand-ins and deletes the profiles.
    async fn finish(self, client: &Client) -> Result<()> {
        let services: Api<SupportService> = Api::all(client.clone());
        eventually("every support service removed", INSTALL_TIMEOUT, || async {
            let left = services.list(&Default::default()).await?.items;
            if left.is_empty() {
                return Ok(Some(()));
            }
            bail!(
                "left: {:?}",
                left.iter().map(|s| s.name_any()).collect::<Vec<_>>()
            )
        })
        .await?;
        for stand_in in self.stand_ins {
            stand_in.stop().await;
        }
        for name in ["cert-manager", "traefik", "external-dns"] {
            delete_profile(client, name).await?;
        }
        Ok(())
    }

    async fn answers(&self, host: &str) -> Result<Vec<String>> {
        Ok(self.dns.query(host, "A").await?)
    }
}

/// What the world sees of a host served from runtime namespace `ns` by the expose of
/// Workload `name`: its route, its certificate, its DNS answer and the HTTPS answer.
#[derive(Debug, PartialEq)]
struct Served {
    route: Value,
    certificate: Vec<u8>,
    dns: Vec<String>,
    https: String,
}

/// The CA that issued the certificate in Secret `<name>-tls` of `ns`, and the certificate.
async fn issued(runtime: &Client, ns: &str, name: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let secret = Api::<Secret>::namespaced(runtime.clone(), ns)
        .get(&format!("{name}-tls"))
        .await?;
    let data = secret.data.unwrap_or_default();
    let crt = data.get("tls.crt").context("no tls.crt")?.0.clone();
    let ca = data.get("ca.crt").context("no ca.crt")?.0.clone();
    Ok((ca, crt))
}

async fn served(
    runtime: &Client,
    exposure: &Exposure,
    ns: &str,
    name: &str,
    host: &str,
) -> Result<Served> {
    let ingress = Api::<Ingress>::namespaced(runtime.clone(), ns)
        .get(name)
        .await?;
    let route = json!({"labels": ingress.metadata.labels, "annotations": ingress.metadata.annotations,
        "spec": ingress.spec});
    let (ca, certificate) = issued(runtime, ns, name).await?;
    Ok(Served {
        route,
        certificate,
        dns: exposure.answers(host).await?,
        https: https_get(host, exposure.ingress.https, &ca).await?,
    })
}

/// `served`, once DNS answers with the ingress address and HTTPS with `token`.
async fn serving(
    runtime: &Client,
    exposure: &Exposure,
    ns: &str,
    name: &str,
    host: &str,
    token: &str,
) -> Result<Served> {
    eventually(
        &format!("{host} served by {ns}/{name} (DNS and HTTPS)"),
        TIMEOUT,
        || async {
            let seen = served(runtime, exposure, ns, name, host).await?;
            ensure!(
                seen.dns == [INGRESS_ADDRESS],
                "{host} resolves to {:?}",
                seen.dns
            );
            ensure!(seen.https == token, "HTTPS answered {:?}", seen.https);
            Ok(Some(seen))
        },
    )
    .await
}

/// An Ingress of class traefik routing `host` to Service `service` on `port`.
fn ingress(name: &str, host: &str, service: &str, port: u16) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name},
        "spec": {"ingressClassName": "traefik",
                 "rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": service, "port": {"number": port}}}}]}}]}})
}

/// A Service leading out of the cluster to 127.0.0.1:`port` (kwok's pods answer nothing).
fn service_to(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1",
                 "ports": [{"name": "http", "port": port}]}})
}

/// A victim serves a host with TLS and DNS; a tenant of the same lab tries to take it over
/// through `expose`, a raw Ingress and a raw Certificate (HostConflict, never naming the
/// victim), a CertificateRequest (HostBearingKind) and the label that makes external-dns
/// publish (ReservedLabel); a tenant granted only its own subdomain tries the victim's host
/// and a wildcard over everyone (Host). None of it reaches a runtime, and the victim's route,
/// certificate, DNS record and HTTPS answer stay the same. Once the victim's Workload is gone
/// the host is free: the waiting claimant gets it.
pub async fn hosts_have_owners(env: &mut Environment) -> Result<()> {
    const VICTIM: &str = "ht-own-victim";
    const ATTACKER: &str = "ht-own-attacker";
    const OUTSIDER: &str = "ht-own-outsider";
    const OUTSIDER_POLICY: &str = "ht-own-outsider";
    const HOST: &str = "ht-shop.qleetos.test";
    const SNEAKY: &str = "ht-sneaky.qleetos.test";
    operator_running(env).await?;
    let client = env.management_client().await?;
    let exposure = Exposure::start(env, "hosts", true).await?;
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;

    crate::support::lab_namespace(&client, VICTIM).await?;
    let victim = tenant_client(env, VICTIM).await?;
    let victim_token = format!("ht-victim-{}", std::process::id());
    let victim_backend = Responder::start(&victim_token).await?;
    apply_as(
        &victim,
        VICTIM,
        &web_workload_behind("shop", HOST, "eu-west-1", victim_backend.port),
    )
    .await?;
    wait_ready_within(&client, VICTIM, "shop", INSTALL_TIMEOUT).await?;
    let before = serving(&runtime, &exposure, VICTIM, "shop", HOST, &victim_token).await?;
    ensure!(
        before.route["labels"]["qleetos.io/dns"].as_str() == Some("published"),
        "the generated Ingress is not labelled qleetos.io/dns=published: {}",
        before.route
    );

    crate::support::lab_namespace(&client, ATTACKER).await?;
    let attacker = tenant_client(env, ATTACKER).await?;
    let attacker_token = format!("ht-attacker-{}", std::process::id());
    let attacker_backend = Responder::start(&attacker_token).await?;
    let conflict = format!("host {HOST} is served by another namespace");
    apply_as(
        &attacker,
        ATTACKER,
        &web_workload_behind("claim", HOST, "eu-west-1", attacker_backend.port),
    )
    .await?;
    let mut route = ingress("route", HOST, "route", attacker_backend.port);
    route["spec"]["tls"] = json!([{"hosts": [HOST], "secretName": "route-tls"}]);
    apply_as(
        &attacker,
        ATTACKER,
        &in_region(
            "raw-route",
            vec![service_to("route", attacker_backend.port), route],
            "eu-west-1",
        ),
    )
    .await?;
    let certificate = json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "stolen"},
        "spec": {"secretName": "stolen-tls", "commonName": HOST, "dnsNames": [HOST],
                 "privateKey": {"algorithm": "ECDSA", "size": 256},
                 "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": SHARED_ISSUER}}});
    apply_as(
        &attacker,
        ATTACKER,
        &in_region("raw-cert", vec![certificate], "eu-west-1"),
    )
    .await?;
    let request = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": "forged"},
        "spec": {"request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K",
                 "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": SHARED_ISSUER}}});
    apply_as(
        &attacker,
        ATTACKER,
        &in_region("raw-request", vec![request], "eu-west-1"),
    )
    .await?;
    let mut publish = ingress("publish", SNEAKY, "publish", attacker_backend.port);
    publish["metadata"]["labels"] = json!({"qleetos.io/dns": "published"});
    publish["metadata"]["annotations"] =
        json!({"external-dns.alpha.kubernetes.io/hostname": SNEAKY});
    apply_as(
        &attacker,
        ATTACKER,
        &in_region(
            "raw-publish",
            vec![service_to("publish", attacker_backend.port), publish],
            "eu-west-1",
        ),
    )
    .await?;
    for name in ["claim", "raw-route", "raw-cert"] {
        let message = refused(&client, ATTACKER, name, "HostConflict", &[&conflict]).await?;
        ensure!(
            !message.contains(VICTIM),
            "the HostConflict of {name} names the victim's namespace: {message}"
        );
    }
    refused(
        &client,
        ATTACKER,
        "raw-request",
        "TenancyViolation",
        &["(HostBearingKind)"],
    )
    .await?;
    refused(
        &client,
        ATTACKER,
        "raw-publish",
        "TenancyViolation",
        &["(ReservedLabel)"],
    )
    .await?;

    ensure_namespace(&client, OUTSIDER).await?;
    apply_policy_for(
        &client,
        OUTSIDER,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": OUTSIDER_POLICY},
            "spec": {"namespaces": [OUTSIDER], "hosts": ["*.outsider.qleetos.test"]}}),
    )
    .await?;
    let outsider = tenant_client(env, OUTSIDER).await?;
    apply_as(
        &outsider,
        OUTSIDER,
        &web_workload_behind("steal", HOST, "eu-west-1", attacker_backend.port),
    )
    .await?;
    apply_as(
        &outsider,
        OUTSIDER,
        &web_workload_behind(
            "everyone",
            "*.qleetos.test",
            "eu-west-1",
            attacker_backend.port,
        ),
    )
    .await?;
    refused(
        &client,
        OUTSIDER,
        "steal",
        "TenancyViolation",
        &[&format!("may not use host {HOST}"), "(Host)"],
    )
    .await?;
    refused(
        &client,
        OUTSIDER,
        "everyone",
        "TenancyViolation",
        &["may not use host *.qleetos.test", "(Host)"],
    )
    .await?;

    nothing_in_runtimes(env, ATTACKER).await?;
    nothing_in_runtimes(env, OUTSIDER).await?;
    let after = served(&runtime, &exposure, VICTIM, "shop", HOST).await?;
    ensure!(
        after == before,
        "the victim's exposure changed under the attacks:\nbefore {before:?}\nafter {after:?}"
    );
    let sneaky = exposure.answers(SNEAKY).await?;
    ensure!(sneaky.is_empty(), "{SNEAKY} was published: {sneaky:?}");

    delete_workloads(
        &client,
        ATTACKER,
        &["raw-route", "raw-cert", "raw-request", "raw-publish"],
    )
    .await?;
    delete_workloads(&client, OUTSIDER, &["steal", "everyone"]).await?;
    delete_workloads(&client, VICTIM, &["shop"]).await?;
    wait_ready_within(&client, ATTACKER, "claim", INSTALL_TIMEOUT)
        .await
        .context("the host stayed taken after its owner's Workload went")?;
    let (_, certificate) = issued(&runtime, ATTACKER, "claim").await?;
    let names = IssuedCertificate::from_pem(&certificate)?.dns_names;
    ensure!(
        names.iter().any(|n| n == HOST),
        "the new owner's certificate is for {names:?}"
    );
    serving(
        &runtime,
        &exposure,
        ATTACKER,
        "claim",
        HOST,
        &attacker_token,
    )
    .await?;

    delete_workloads(&client, ATTACKER, &["claim"]).await?;
    delete_policy(&client, OUTSIDER_POLICY).await?;
    delete_namespaces(&client, &[VICTIM, ATTACKER, OUTSIDER]).await?;
    exposure.finish(&client).await
}

/// A tenant's own Ingress carrying external-dns's hostname annotation is served, but only
/// the Ingresses QleetOS generates for `expose.dns` reach DNS: once the generated host
/// resolves (external-dns has synced with both Ingresses present), the hand-made one does not.
pub async fn dns_publishes_only_generated_records(env: &mut Environment) -> Result<()> {
    const NS: &str = "ht-dns";
    const GENERATED: &str = "ht-generated.qleetos.test";
    const HANDMADE: &str = "ht-handmade.qleetos.test";
    operator_running(env).await?;
    let client = env.management_client().await?;
    let exposure = Exposure::start(env, "records", false).await?;
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    crate::support::lab_namespace(&client, NS).await?;
    let tenant = tenant_client(env, NS).await?;
    let backend = Responder::start("ht-dns").await?;

    let mut handmade = ingress("handmade", HANDMADE, "handmade", backend.port);
    handmade["metadata"]["annotations"] =
        json!({"external-dns.alpha.kubernetes.io/hostname": HANDMADE});
    let mut own = in_region(
        "handmade",
        vec![service_to("handmade", backend.port), handmade],
        "eu-west-1",
    );
    own["spec"]["needs"] = json!(["ingress"]);
    apply_as(&tenant, NS, &own).await?;
    wait_ready_within(&client, NS, "handmade", INSTALL_TIMEOUT).await?;
    let ingresses: Api<Ingress> = Api::namespaced(runtime.clone(), NS);
    eventually(
        "Traefik publishing an address for the hand-made Ingress",
        TIMEOUT,
        || async {
            let found = ingresses.get("handmade").await?;
            let address = found
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|b| b.ingress)
                .and_then(|i| i.first().and_then(|i| i.ip.clone()));
            Ok(address.filter(|a| a == INGRESS_ADDRESS))
        },
    )
    .await?;

    let mut generated = web_workload_behind("generated", GENERATED, "eu-west-1", backend.port);
    generated["spec"]["expose"]["tls"] = json!(false);
    apply_as(&tenant, NS, &generated).await?;
    wait_ready_within(&client, NS, "generated", INSTALL_TIMEOUT).await?;
    eventually(
        &format!("{GENERATED} resolving to {INGRESS_ADDRESS}"),
        INSTALL_TIMEOUT,
        || async { Ok((exposure.answers(GENERATED).await? == [INGRESS_ADDRESS]).then_some(())) },
    )
    .await?;
    let published = exposure.answers(HANDMADE).await?;
    ensure!(
        published.is_empty(),
        "the hand-made Ingress's host was published: {HANDMADE} A {published:?}"
    );
    let labels = ingresses.get("generated").await?.labels().clone();
    ensure!(
        labels.get("qleetos.io/dns").map(String::as_str) == Some("published"),
        "generated Ingress labels: {labels:?}"
    );
    let labels = ingresses.get("handmade").await?.labels().clone();
    ensure!(
        !labels.contains_key("qleetos.io/dns"),
        "the hand-made Ingress carries the publishing label: {labels:?}"
    );

    delete_workloads(&client, NS, &["generated", "handmade"]).await?;
    delete_namespaces(&client, &[NS]).await?;
    exposure.finish(&client).await
}

// ---------------------------------------------------------------------------------------
// The shared environment's trials
// ---------------------------------------------------------------------------------------

/// A privileged Pod sharing the node's PID and network namespaces with the node's `/` mounted.
fn root_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
        "spec": {"hostPID": true, "hostNetwork": true,
                 "containers": [{"name": "root", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                 "securityContext": {"privileged": true},
                                 "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
                 "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}})
}

/// The runtime namespace's labels on eu-west.
async fn runtime_namespace_labels(
    env: &Environment,
    ns: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    Ok(Api::<Namespace>::all(eu_west)
        .get(ns)
        .await?
        .labels()
        .clone())
}

/// A tenant with no policy cannot run a privileged, host-sharing Pod (Pod Security admission
/// at `baseline` on the runtime namespace QleetOS made for it), nor hijack traffic with a
/// Service's externalIPs (CVE-2020-8554, the runtime's admission policy), nor set reserved
/// labels itself; a TenantPolicy with `podSecurity: privileged` lets the same Pod in.
pub async fn pod_security_and_node_escapes_are_refused(env: &Environment) -> Result<()> {
    const NS: &str = "ht-psa";
    const PRIVILEGED: &str = "ht-psa-privileged";
    let client = env.management_client().await?;
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    ensure_namespace(&client, NS).await?;
    let tenant = tenant_client(env, NS).await?;
    apply_as(
        &tenant,
        NS,
        &in_region("root", vec![root_pod()], "eu-west-1"),
    )
    .await?;
    let refused_pod = failed_with(&client, NS, "root", "violates PodSecurity").await?;
    println!(
        "privileged Pod: {}: {}",
        refused_pod.reason, refused_pod.message
    );
    let hijack = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hijack"},
        "spec": {"selector": {"app": "hijack"}, "ports": [{"port": 80}],
                 "externalIPs": ["203.0.113.10"]}});
    apply_as(&tenant, NS, &in_region("hijack", vec![hijack], "eu-west-1")).await?;
    let refused_service =
        match failed_with(&client, NS, "hijack", "externalIPs is not allowed").await {
            Ok(condition) => condition,
            Err(error) => bail!("{error:#}\n{}", guard_report(env, NS, "hijack").await?),
        };
    println!(
        "externalIPs: {}: {}",
        refused_service.reason, refused_service.message
    );
    let mut relabel = config_map("relabel", None);
    relabel["metadata"]["labels"] = json!({"pod-security.kubernetes.io/enforce": "privileged"});
    apply_as(
        &tenant,
        NS,
        &in_region("relabel", vec![relabel], "eu-west-1"),
    )
    .await?;
    refused(
        &client,
        NS,
        "relabel",
        "TenancyViolation",
        &["(ReservedLabel)"],
    )
    .await?;
    ensure!(
        Api::<Pod>::namespaced(eu_west.clone(), NS)
            .get_opt("root")
            .await?
            .is_none(),
        "the privileged Pod reached the runtime"
    );
    ensure!(
        Api::<Service>::namespaced(eu_west.clone(), NS)
            .get_opt("hijack")
            .await?
            .is_none(),
        "the Service with externalIPs reached the runtime"
    );
    ensure!(
        Api::<ConfigMap>::namespaced(eu_west.clone(), NS)
            .get_opt("relabel")
            .await?
            .is_none(),
        "the relabelling ConfigMap reached the runtime"
    );
    let labels = runtime_namespace_labels(env, NS).await?;
    for (key, value) in [
        ("pod-security.kubernetes.io/enforce", "baseline"),
        ("qleetos.io/tenant", NS),
        ("app.kubernetes.io/managed-by", "qleetos"),
    ] {
        ensure!(
            labels.get(key).map(String::as_str) == Some(value),
            "runtime namespace {NS} lacks {key}={value}: {labels:?}"
        );
    }

    ensure_namespace(&client, PRIVILEGED).await?;
    apply_policy_for(
        &client,
        PRIVILEGED,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": PRIVILEGED},
            "spec": {"namespaces": [PRIVILEGED], "podSecurity": "privileged"}}),
    )
    .await?;
    let trusted = tenant_client(env, PRIVILEGED).await?;
    apply_as(
        &trusted,
        PRIVILEGED,
        &in_region("root", vec![root_pod()], "eu-west-1"),
    )
    .await?;
    wait_ready_within(&client, PRIVILEGED, "root", TIMEOUT).await?;
    ensure!(
        Api::<Pod>::namespaced(eu_west, PRIVILEGED)
            .get_opt("root")
            .await?
            .is_some(),
        "the privileged tenant's Pod is not in the runtime"
    );
    let labels = runtime_namespace_labels(env, PRIVILEGED).await?;
    ensure!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str)
            == Some("privileged"),
        "runtime namespace {PRIVILEGED}: {labels:?}"
    );

    delete_workloads(&client, NS, &["root", "hijack", "relabel"]).await?;
    delete_workloads(&client, PRIVILEGED, &["root"]).await?;
    delete_policy(&client, PRIVILEGED).await?;
    delete_namespaces(&client, &[NS, PRIVILEGED]).await
}

/// When the runtime's tenant guard was made, and when the Service it should have refused:
/// what tells a guard that is missing from one that came too late.
async fn guard_report(env: &Environment, ns: &str, service: &str) -> Result<String> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    let created = |meta: &kube::api::ObjectMeta| {
        meta.creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default()
    };
    let policy = Api::<ValidatingAdmissionPolicy>::all(eu_west.clone())
        .get_opt("qleetos-tenant-guard")
        .await?
        .map(|p| format!("created {}, status {:?}", created(&p.metadata), p.status));
    let binding = Api::<ValidatingAdmissionPolicyBinding>::all(eu_west.clone())
        .get_opt("qleetos-tenant-guard")
        .await?
        .map(|b| format!("created {}", created(&b.metadata)));
    let applied = Api::<Service>::namespaced(eu_west, ns)
        .get_opt(service)
        .await?
        .map(|s| format!("created {}", created(&s.metadata)));
    Ok(format!(
        "on eu-west: ValidatingAdmissionPolicy qleetos-tenant-guard: {policy:?}; binding: \
         {binding:?}; Service {ns}/{service}: {applied:?}"
    ))
}

/// No RoleBinding `qleetos-tenant` was made in runtime namespace `ns` on any runtime.
async fn no_tenant_binding(env: &Environment, ns: &str) -> Result<()> {
    for (spec, cluster) in &env.runtimes {
        let bindings: Api<RoleBinding> = Api::namespaced(cluster.client().await?, ns);
        ensure!(
            bindings.get_opt("qleetos-tenant").await?.is_none(),
            "a qleetos-tenant RoleBinding was made in {ns} on {}",
            spec.name
        );
    }
    Ok(())
}

/// No ConfigMap `name` in runtime namespace `ns` on any runtime.
async fn no_config_map(env: &Environment, ns: &str, name: &str) -> Result<()> {
    for (spec, cluster) in &env.runtimes {
        let maps: Api<ConfigMap> = Api::namespaced(cluster.client().await?, ns);
        ensure!(
            maps.get_opt(name).await?.is_none(),
            "ConfigMap {ns}/{name} reached {}",
            spec.name
        );
    }
    Ok(())
}

/// A support-service profile's namespace, and a namespace QleetOS did not make for the
/// tenant, are never a tenant's: not as the namespace named like its management namespace,
/// not through a pattern of its policy, not through an exact entry (TargetNamespace,
/// NamespaceOwner), and no tenant RoleBinding is made there.
pub async fn support_and_foreign_namespaces_are_never_tenant_targets(
    env: &Environment,
) -> Result<()> {
    const DNS_SUPPORT: &str = "external-dns";
    const TLS_SUPPORT: &str = "cert-manager";
    const PATTERN: &str = "ht-c";
    const EXACT: &str = "ht-fo";
    const FOREIGN: &str = "ht-foreign";
    const SQUAT: &str = "ht-squat";
    let client = env.management_client().await?;
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    // The shared environment has no support services: profiles of its own make these two
    // namespaces ones QleetOS installs into (nothing needs their capabilities, so nothing is).
    let profiles: Api<SupportServiceProfile> = Api::all(client.clone());
    for (name, namespace) in [
        ("ht-reserved-dns", DNS_SUPPORT),
        ("ht-reserved-tls", TLS_SUPPORT),
    ] {
        let mut reserved = profile(
            name,
            name,
            false,
            json!([config_map(&format!("{name}-marker"), None)]),
        );
        reserved["spec"]["namespace"] = json!(namespace);
        apply_profile(&client, &reserved).await?;
        eventually(&format!("profile {name} seen"), TIMEOUT, || async {
            let found = profiles.get(name).await?;
            let seen = found.status.as_ref().and_then(|s| s.observed_generation);
            Ok((seen.is_some() && seen == found.metadata.generation).then_some(()))
        })
        .await?;
    }
    let runtime_namespaces: Api<Namespace> = Api::all(eu_west.clone());
    for (name, labels) in [
        (FOREIGN, json!({})),
        (SQUAT, json!({"qleetos.io/tenant": "ht-squat-elsewhere"})),
    ] {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}});
        runtime_namespaces
            .patch(
                name,
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(&namespace),
            )
            .await?;
    }

    ensure_namespace(&client, DNS_SUPPORT).await?;
    let support = tenant_client(env, DNS_SUPPORT).await?;
    apply_as(
        &support,
        DNS_SUPPORT,
        &in_region("settings", vec![config_map("settings", None)], "eu-west-1"),
    )
    .await?;
    refused(
        &client,
        DNS_SUPPORT,
        "settings",
        "TenancyViolation",
        &["(TargetNamespace)"],
    )
    .await?;

    ensure_namespace(&client, PATTERN).await?;
    apply_policy_for(
        &client,
        PATTERN,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": PATTERN},
            "spec": {"namespaces": [PATTERN], "targetNamespaces": ["$(namespace)", "c*"]}}),
    )
    .await?;
    let pattern = tenant_client(env, PATTERN).await?;
    apply_as(
        &pattern,
        PATTERN,
        &in_region(
            "settings",
            vec![config_map("settings", Some(TLS_SUPPORT))],
            "eu-west-1",
        ),
    )
    .await?;
    refused(
        &client,
        PATTERN,
        "settings",
        "TenancyViolation",
        &["(TargetNamespace)", TLS_SUPPORT],
    )
    .await?;

    ensure_namespace(&client, EXACT).await?;
    apply_policy_for(
        &client,
        EXACT,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": EXACT},
            "spec": {"namespaces": [EXACT], "targetNamespaces": [FOREIGN]}}),
    )
    .await?;
    let exact = tenant_client(env, EXACT).await?;
    apply_as(
        &exact,
        EXACT,
        &in_region(
            "settings",
            vec![config_map("settings", Some(FOREIGN))],
            "eu-west-1",
        ),
    )
    .await?;
    refused(
        &client,
        EXACT,
        "settings",
        "TenancyViolation",
        &["(NamespaceOwner)", FOREIGN],
    )
    .await?;

    ensure_namespace(&client, SQUAT).await?;
    let squat = tenant_client(env, SQUAT).await?;
    apply_as(
        &squat,
        SQUAT,
        &in_region("settings", vec![config_map("settings", None)], "eu-west-1"),
    )
    .await?;
    refused(
        &client,
        SQUAT,
        "settings",
        "TenancyViolation",
        &["(NamespaceOwner)", SQUAT],
    )
    .await?;

    for ns in [DNS_SUPPORT, TLS_SUPPORT, FOREIGN, SQUAT] {
        no_tenant_binding(env, ns).await?;
        no_config_map(env, ns, "settings").await?;
    }
    let squatted = runtime_namespaces.get(SQUAT).await?;
    ensure!(
        squatted
            .labels()
            .get("qleetos.io/tenant")
            .map(String::as_str)
            == Some("ht-squat-elsewhere"),
        "the foreign namespace was relabelled: {:?}",
        squatted.labels()
    );

    delete_workloads(&client, DNS_SUPPORT, &["settings"]).await?;
    delete_workloads(&client, PATTERN, &["settings"]).await?;
    delete_workloads(&client, EXACT, &["settings"]).await?;
    delete_workloads(&client, SQUAT, &["settings"]).await?;
    delete_policy(&client, PATTERN).await?;
    delete_policy(&client, EXACT).await?;
    for name in ["ht-reserved-dns", "ht-reserved-tls"] {
        delete_profile(&client, name).await?;
    }
    for name in [FOREIGN, SQUAT] {
        runtime_namespaces
            .delete(name, &DeleteParams::default())
            .await?;
    }
    delete_namespaces(&client, &[DNS_SUPPORT, PATTERN, EXACT, SQUAT]).await
}

/// With no TenantPolicy a namespace gets the safe default: no cluster on demand, no host,
/// no inline Secret, and nothing of a refused Workload reaches a runtime; a policy allowing
/// inline Secrets lets the same Secret through.
pub async fn no_policy_means_no_provisioning_and_no_hosts(env: &Environment) -> Result<()> {
    const NS: &str = "ht-nopol";
    const INLINE_POLICY: &str = "ht-nopol-inline-secrets";
    const PROFILE: &str = "ht-noprov";
    const REGION: &str = "ht-local-9";
    let client = env.management_client().await?;
    crate::provisioning::apply_runtime_profile(
        &client,
        &crate::provisioning::local_profile(PROFILE, REGION, 1),
    )
    .await?;
    ensure_namespace(&client, NS).await?;
    let tenant = tenant_client(env, NS).await?;

    let mut grow = workload(
        "grow",
        vec![config_map("grow", None)],
        json!({"regions": [REGION], "provision": "IfNeeded"}),
    );
    grow["spec"]["placement"]["runtimeProfile"] = json!(PROFILE);
    apply_as(&tenant, NS, &grow).await?;
    let mut site = in_region("site", web_manifests(1, "nginx:1.27"), "eu-west-1");
    site["spec"]["expose"] =
        json!({"hosts": ["ht-nopol.qleetos.test"], "service": {"name": "web", "port": 80}});
    apply_as(&tenant, NS, &site).await?;
    let secret = |password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "credentials"},
            "type": "Opaque", "stringData": {"password": password}})
    };
    apply_as(
        &tenant,
        NS,
        &in_region("secret", vec![secret("hunter2")], "eu-west-1"),
    )
    .await?;

    refused(
        &client,
        NS,
        "grow",
        "TenancyViolation",
        &["may not provision clusters"],
    )
    .await?;
    refused(
        &client,
        NS,
        "site",
        "TenancyViolation",
        &["may not use host ht-nopol.qleetos.test", "(Host)"],
    )
    .await?;
    refused(
        &client,
        NS,
        "secret",
        "TenancyViolation",
        &["(InlineSecret)"],
    )
    .await?;
    let runtimes = Api::<KubernetesRuntime>::all(client.clone())
        .list(&Default::default())
        .await?
        .items;
    let provisioned: Vec<String> = runtimes
        .iter()
        .filter(|r| r.spec.region == REGION)
        .map(|r| r.name_any())
        .collect();
    ensure!(
        provisioned.is_empty(),
        "runtimes were made for a tenant that may not provision: {provisioned:?}"
    );
    nothing_in_runtimes(env, NS).await?;

    apply_policy_for(
        &client,
        NS,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": INLINE_POLICY},
            "spec": {"namespaces": [NS], "allowInlineSecrets": true}}),
    )
    .await?;
    apply_as(
        &tenant,
        NS,
        &in_region("secret", vec![secret("correct horse")], "eu-west-1"),
    )
    .await?;
    wait_ready_within(&client, NS, "secret", TIMEOUT).await?;
    let eu_west = env.runtime("eu-west").context("eu-west")?.client().await?;
    let applied = Api::<Secret>::namespaced(eu_west, NS)
        .get("credentials")
        .await?;
    let password = applied
        .data
        .unwrap_or_default()
        .get("password")
        .map(|p| p.0.clone());
    ensure!(
        password.as_deref() == Some(b"correct horse".as_slice()),
        "the allowed Secret holds {password:?}"
    );

    delete_workloads(&client, NS, &["grow", "site", "secret"]).await?;
    delete_policy(&client, INLINE_POLICY).await?;
    crate::provisioning::delete_runtime_profile(&client, PROFILE).await?;
    delete_namespaces(&client, &[NS]).await
}

/// A policy's limits cap what a tenant asks for: too many manifests are refused whole; of
/// more placements than allowed, one is served and the other refused.
pub async fn limits_cap_a_tenant(env: &Environment) -> Result<()> {
    const NS: &str = "ht-limits";
    let client = env.management_client().await?;
    ensure_namespace(&client, NS).await?;
    apply_policy_for(
        &client,
        NS,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": NS},
            "spec": {"namespaces": [NS], "limits": {"maxManifests": 2, "maxPlacements": 1}}}),
    )
    .await?;
    let tenant = tenant_client(env, NS).await?;
    let three = (1..=3)
        .map(|i| config_map(&format!("many-{i}"), None))
        .collect();
    apply_as(&tenant, NS, &in_region("many", three, "eu-west-1")).await?;
    refused(&client, NS, "many", "LimitExceeded", &["maxManifests"]).await?;
    nothing_in_runtimes(env, NS).await?;
    delete_workloads(&client, NS, &["many"]).await?;

    let two = vec![config_map("spread-1", None), config_map("spread-2", None)];
    apply_as(
        &tenant,
        NS,
        &workload(
            "spread",
            two,
            json!({"regions": ["eu-west-1", "us-east-1"]}),
        ),
    )
    .await?;
    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    let (served, capped) = eventually(
        "one placement served and one LimitExceeded",
        TIMEOUT,
        || async {
            let found = workloads.get("spread").await?;
            let status = found.status.clone().unwrap_or_default();
            ensure!(
                status.observed_generation == found.metadata.generation,
                "status of an older generation"
            );
            let ready: Vec<_> = status.placements.iter().filter(|p| p.ready).collect();
            let capped: Vec<_> = status
                .placements
                .iter()
                .filter(|p| !p.ready && p.reason == "LimitExceeded")
                .collect();
            match (ready.as_slice(), capped.as_slice()) {
                ([ready], [capped]) if status.placements.len() == 2 => {
                    Ok(Some(((*ready).clone(), (*capped).clone())))
                }
                _ => bail!("placements: {:?}", status.placements),
            }
        },
    )
    .await?;
    ensure!(
        capped.message.contains("maxPlacements"),
        "LimitExceeded message: {}",
        capped.message
    );
    let served_on = env.runtime(&served.runtime).context("served runtime")?;
    let capped_on = env.runtime(&capped.runtime).context("capped runtime")?;
    for name in ["spread-1", "spread-2"] {
        ensure!(
            Api::<ConfigMap>::namespaced(served_on.client().await?, NS)
                .get_opt(name)
                .await?
                .is_some(),
            "{name} missing on {}",
            served.runtime
        );
        ensure!(
            Api::<ConfigMap>::namespaced(capped_on.client().await?, NS)
                .get_opt(name)
                .await?
                .is_none(),
            "{name} reached {}, over the limit",
            capped.runtime
        );
    }

    delete_workloads(&client, NS, &["spread"]).await?;
    delete_policy(&client, NS).await?;
    delete_namespaces(&client, &[NS]).await
}
