//! The dependency engine against real runtimes: support services installed on first need
//! with the real cert-manager controller standing in for its pod, reused, rolled out,
//! removed after the grace period with nothing left behind; bad input reported.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use qleetos_crds::{
    Conditions, DependencyState, SupportService, SupportServiceProfile, TenantPolicy, Workload,
    WorkloadInstance,
};
use qleetos_e2e::dns::DnsServer;
use qleetos_e2e::environment::{Environment, RuntimeSpec};
use qleetos_e2e::fleet::{self, Fleet, FleetConfig, PublishedRuntime};
use qleetos_e2e::http::Responder;
use qleetos_e2e::issued::IssuedCertificate;
use qleetos_e2e::operator::OperatorOptions;
use serde_json::{Value, json};

use crate::support::{
    TIMEOUT, apply_lab_workload, apply_workload, delete_workload, eventually, instances_of,
    kubectl, wait_workload_ready,
};

const HOST: &str = "shop.qleetos.test";
/// Installing cert-manager (CRDs, controller start, CA issuance) takes a while here.
pub(crate) const INSTALL_TIMEOUT: Duration = Duration::from_secs(240);

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The runtimes of the dependency environment.
pub fn runtimes() -> Vec<RuntimeSpec> {
    vec![
        RuntimeSpec::new("eu-west", "eu-west-1", &[]),
        RuntimeSpec::new("us-east", "us-east-1", &[]),
    ]
}

/// This environment's scenarios share one operator, started by the first.
pub(crate) async fn operator_running(env: &mut Environment) -> Result<()> {
    if env.operators().is_empty() {
        env.start_operator(OperatorOptions::default()).await?;
    }
    Ok(())
}

/// Applies the default profiles with a short removal grace period.
pub(crate) async fn apply_default_profiles(env: &Environment, grace_seconds: u32) -> Result<()> {
    let profiles = examples().join("support-services");
    kubectl(
        env.management.kubeconfig_path(),
        &["apply", "-f", profiles.to_str().context("path")?],
    )
    .await?;
    let client = env.management_client().await?;
    let api: Api<SupportServiceProfile> = Api::all(client);
    for name in ["cert-manager", "traefik", "external-dns"] {
        let patch = json!({"spec": {"gracePeriodSeconds": grace_seconds}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// The web example whose Service leads out of the cluster to a process of the test on
/// 127.0.0.1:`port` (kwok's pods answer nothing), so a request through the ingress
/// controller reaches something real.
pub(crate) fn web_workload_behind(name: &str, host: &str, region: &str, port: u16) -> Value {
    let mut workload = web_workload(name, host, region);
    workload["spec"]["expose"]["service"]["port"] = json!(port);
    workload["spec"]["manifests"][1]["spec"] =
        json!({"type": "ExternalName", "externalName": "127.0.0.1", "ports": [{"port": port}]});
    workload
}

fn web_workload(name: &str, host: &str, region: &str) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name},
        "spec": {
            "placement": {"regions": [region]},
            "expose": {"hosts": [host], "service": {"name": name, "port": 80}, "tls": true, "dns": true},
            "manifests": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                          "template": {"metadata": {"labels": {"app": name}},
                                       "spec": {"containers": [{"name": name, "image": "nginx:1.27"}]}}}},
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                 "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}
            ]
        }
    })
}

/// The environment's fleet of stand-ins (what `make run` runs): for every runtime of the
/// environment, the real cert-manager, Traefik (publishing [`INGRESS_ADDRESS`]), external-dns
/// (into `dns`, when given) and anvil for every RPC node, each running while QleetOS has
/// installed it there.
#[derive(Debug)]
pub(crate) struct StandIns {
    fleet: Fleet,
    dir: PathBuf,
}

impl StandIns {
    /// Starts the fleet; it logs under `<env dir>/fleet-<tag>/`.
    pub(crate) async fn start(
        env: &Environment,
        tag: &str,
        dns: Option<&DnsServer>,
    ) -> Result<Self> {
        let dir = env.dir().join(format!("fleet-{tag}"));
        let fleet = Fleet::start(FleetConfig {
            dir: dir.clone(),
            management_kubeconfig: env.management.kubeconfig_path().to_owned(),
            runtime_selector: None,
            dns: dns.map(DnsServer::updates),
            ingress_address: INGRESS_ADDRESS.to_owned(),
        })
        .await?;
        Ok(Self { fleet, dir })
    }

    /// What the fleet runs for `runtime`, once it watches it and `ready` holds.
    pub(crate) async fn runtime_when(
        &self,
        runtime: &str,
        what: &str,
        ready: impl Fn(&PublishedRuntime) -> bool,
    ) -> Result<PublishedRuntime> {
        eventually(
            &format!("the fleet's {what} on {runtime}"),
            TIMEOUT,
            || async {
                let published = fleet::read_published(&self.dir).runtimes.remove(runtime);
                Ok(published.filter(|r| ready(r)))
            },
        )
        .await
    }

    /// The HTTPS port of `runtime`'s Traefik (on 127.0.0.1).
    pub(crate) async fn https_port(&self, runtime: &str) -> Result<u16> {
        let published = self.runtime_when(runtime, "Traefik", |_| true).await?;
        Ok(published.https_port)
    }

    /// Where the anvil of the RPC node whose connection Secret says `url` listens.
    pub(crate) async fn rpc_node(&self, runtime: &str, url: &str) -> Result<SocketAddr> {
        let published = self
            .runtime_when(runtime, "anvil for the RPC node", |r| {
                r.rpc_nodes.contains_key(url)
            })
            .await?;
        Ok(published.rpc_nodes[url])
    }

    /// Waits until none of `components` runs on `runtime` (QleetOS removed them) and none of
    /// the processes that ran for them is left.
    pub(crate) async fn wait_stopped(&self, runtime: &str, components: &[&str]) -> Result<()> {
        let published = self
            .runtime_when(runtime, &format!("{components:?} stopped"), |r| {
                components.iter().all(|c| !r.pids.contains_key(*c))
            })
            .await?;
        let left: Vec<_> = published
            .pids
            .iter()
            .filter(|(component, pid)| {
                components.contains(&component.as_str()) && fleet::alive(**pid)
            })
            .collect();
        ensure!(left.is_empty(), "stand-in processes left: {left:?}");
        Ok(())
    }

    /// Stops every stand-in, waiting until their processes have exited.
    pub(crate) async fn stop(self) {
        self.fleet.stop().await;
    }
}

async fn support_services(client: &Client) -> Result<Vec<SupportService>> {
    Ok(Api::<SupportService>::all(client.clone())
        .list(&Default::default())
        .await?
        .items)
}

/// The runtime-wide admission guard QleetOS keeps in every runtime it deploys tenants to.
const TENANT_GUARD: [&str; 2] = [
    "validatingadmissionpolicy.admissionregistration.k8s.io/qleetos-tenant-guard",
    "validatingadmissionpolicybinding.admissionregistration.k8s.io/qleetos-tenant-guard",
];

/// Every object in `runtime` QleetOS labelled as its own, of any kind the runtime lists,
/// except the tenants' runtime namespaces and their `qleetos-tenant` RoleBindings, which
/// stay by design when a Workload goes (docs/design.md, "What is kept"), and the
/// ValidatingAdmissionPolicy `qleetos-tenant-guard` and its binding, which guard every runtime
/// QleetOS has deployed tenants to.
pub(crate) async fn managed_objects_left(env: &Environment, runtime: &str) -> Result<Vec<String>> {
    let kubeconfig = env.runtime(runtime).context("runtime")?.kubeconfig_path();
    let kinds = kubectl(kubeconfig, &["api-resources", "--verbs=list", "-o", "name"]).await?;
    let kinds: Vec<&str> = kinds.lines().filter(|k| !k.starts_with("events")).collect();
    let listed = kubectl(
        kubeconfig,
        &[
            "get",
            &kinds.join(","),
            "-A",
            "-l",
            "app.kubernetes.io/managed-by=qleetos",
            "-o",
            "name",
        ],
    )
    .await?;
    Ok(listed
        .lines()
        .filter(|o| {
            !o.starts_with("namespace/dep-")
                && *o != "rolebinding.rbac.authorization.k8s.io/qleetos-tenant"
                && !TENANT_GUARD.contains(o)
        })
        .map(str::to_owned)
        .collect())
}

/// The web example on a runtime with no support services: everything it needs is installed
/// once, the real cert-manager issues its certificate, a second workload reuses the
/// services, and once the last one goes they are removed with nothing left in the runtime.
pub async fn web_workload_gets_its_support_services_and_a_real_certificate(
    env: &mut Environment,
) -> Result<()> {
    operator_running(env).await?;
    let client = env.management_client().await?;
    apply_default_profiles(env, 5).await?;
    let dns = DnsServer::start(&env.dir().join("dns")).await?;
    let stand_ins = StandIns::start(env, "web", Some(&dns)).await?;
    let outcome = web_workload_with_its_stand_ins(env, &client, &dns, &stand_ins).await;
    stand_ins.stop().await;
    outcome
}

async fn web_workload_with_its_stand_ins(
    env: &Environment,
    client: &Client,
    dns: &DnsServer,
    stand_ins: &StandIns,
) -> Result<()> {
    let (ns, client) = ("dep-web", client.clone());
    let https_port = stand_ins.https_port("eu-west").await?;
    let token = format!("qleetos-shop-{}", std::process::id());
    let backend = Responder::start(&token).await?;
    let shop_workload = web_workload_behind("shop", HOST, "eu-west-1", backend.port);
    apply_lab_workload(&client, ns, &shop_workload).await?;
    let shop = wait_ready_within(&client, ns, "shop", INSTALL_TIMEOUT).await?;
    let placement = &shop.status.as_ref().context("status")?.placements[0];
    ensure!(
        placement.urls == [format!("https://{HOST}/")],
        "urls: {:?}",
        placement.urls
    );
    let installed = support_services(&client).await?;
    let mut names: Vec<String> = installed
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    names.sort();
    ensure!(
        names
            == [
                "cert-manager.eu-west",
                "external-dns.eu-west",
                "traefik.eu-west"
            ],
        "support services: {names:?}"
    );
    ensure!(
        installed
            .iter()
            .all(|s| s.state() == DependencyState::Ready),
        "not all Ready"
    );
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let ca = check_route_and_certificate(&runtime, ns).await?;
    workload_applied_after_its_certificate(&runtime, ns, "shop").await?;
    let answer = eventually("an HTTPS answer through Traefik", TIMEOUT, || async {
        Ok(https_get(HOST, https_port, &ca).await.ok())
    })
    .await?;
    ensure!(
        answer == token,
        "the backend answered {answer:?}, not {token:?}"
    );
    eventually(
        &format!("{HOST} resolving to {INGRESS_ADDRESS}"),
        TIMEOUT,
        || async { Ok((dns.query(HOST, "A").await? == [INGRESS_ADDRESS]).then_some(())) },
    )
    .await?;

    apply_lab_workload(
        &client,
        ns,
        &web_workload("blog", "blog.qleetos.test", "eu-west-1"),
    )
    .await?;
    wait_ready_within(&client, ns, "blog", INSTALL_TIMEOUT).await?;
    let again = support_services(&client).await?;
    ensure!(
        same_uids(&installed, &again),
        "support services were re-created for the second workload"
    );

    delete_workload(&client, ns, "shop").await?;
    wait_gone(&Api::<Workload>::namespaced(client.clone(), ns), "shop").await?;
    eventually(&format!("{HOST} removed from DNS"), TIMEOUT, || async {
        Ok(dns.query(HOST, "A").await?.is_empty().then_some(()))
    })
    .await?;
    // The services took note that shop went: blog still uses each of them, shop none.
    let user = |s: &SupportService, workload: &str| {
        s.status
            .iter()
            .flat_map(|s| &s.users)
            .any(|u| u.starts_with(&format!("{ns}/{workload}-")))
    };
    let kept = eventually(
        "the support services used by blog, not shop",
        TIMEOUT,
        || async {
            let services = support_services(&client).await?;
            let noted = services.iter().all(|s| user(s, "blog") && !user(s, "shop"));
            Ok(noted.then_some(services))
        },
    )
    .await?;
    ensure!(
        same_uids(&installed, &kept)
            && kept.iter().all(|s| s.metadata.deletion_timestamp.is_none()
                && s.status.as_ref().is_some_and(|s| s.unused_since.is_none())),
        "support services went while blog still needs them"
    );

    delete_workload(&client, ns, "blog").await?;
    eventually("every support service removed", INSTALL_TIMEOUT, || async {
        Ok(support_services(&client).await?.is_empty().then_some(()))
    })
    .await?;
    let left = managed_objects_left(env, "eu-west").await?;
    ensure!(left.is_empty(), "objects left in the runtime: {left:?}");
    stand_ins
        .wait_stopped("eu-west", &["cert-manager", "external-dns", "traefik"])
        .await?;
    for name in ["cert-manager", "traefik", "external-dns"] {
        delete_profile(&client, name).await?;
    }
    Ok(())
}

/// The workload's own objects wait for its generated ones: its Deployment was created no
/// earlier than its certificate became Ready.
async fn workload_applied_after_its_certificate(
    runtime: &Client,
    ns: &str,
    name: &str,
) -> Result<()> {
    let gvk = kube::api::GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, "certificates");
    let certificate =
        Api::<kube::api::DynamicObject>::namespaced_with(runtime.clone(), ns, &resource)
            .get(&format!("{name}-tls"))
            .await?;
    let ready_at = certificate.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .map(|c| c["lastTransitionTime"].clone())
        .context("the certificate has no Ready=True condition")?;
    let ready_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
        serde_json::from_value(ready_at)?;
    let deployment = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(runtime.clone(), ns)
        .get(name)
        .await?;
    let created = deployment
        .metadata
        .creation_timestamp
        .context("no creationTimestamp")?
        .0;
    ensure!(
        created.as_second() >= ready_at.0.as_second(),
        "Deployment {name} created at {created}, before its certificate was Ready at {}",
        ready_at.0
    );
    Ok(())
}

/// The address the Traefik stand-in publishes in the Ingresses it serves (external-dns
/// writes it into DNS); requests reach Traefik on 127.0.0.1.
pub(crate) const INGRESS_ADDRESS: &str = "192.0.2.10";

/// `GET https://<host>:<port>/` with the real curl, resolving the host to 127.0.0.1 and
/// trusting only `ca` (PEM): succeeds only when the certificate served is one `ca` issued
/// for `host`.
pub(crate) async fn https_get(host: &str, port: u16, ca: &[u8]) -> Result<String> {
    let ca_file = tempfile::NamedTempFile::new()?;
    std::fs::write(ca_file.path(), ca)?;
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "5"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca_file.path())
        .arg(format!("https://{host}:{port}/"))
        .output()
        .await
        .context("running curl (install it with `apt-get install curl`)")?;
    ensure!(
        output.status.success(),
        "curl https://{host}:{port}/: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Checks the generated Ingress and the issued certificate; returns the issuing CA (PEM).
async fn check_route_and_certificate(runtime: &Client, ns: &str) -> Result<Vec<u8>> {
    let ingress = Api::<Ingress>::namespaced(runtime.clone(), ns)
        .get("shop")
        .await?;
    let spec = ingress.spec.context("ingress spec")?;
    ensure!(
        spec.ingress_class_name.as_deref() == Some("traefik"),
        "class: {:?}",
        spec.ingress_class_name
    );
    let tls = spec.tls.unwrap_or_default();
    ensure!(
        tls.first().and_then(|t| t.secret_name.as_deref()) == Some("shop-tls"),
        "tls: {tls:?}"
    );
    let annotations = ingress.metadata.annotations.unwrap_or_default();
    ensure!(
        annotations
            .get("external-dns.kubernetes.io/hostname")
            .map(String::as_str)
            == Some(HOST),
        "annotations: {annotations:?}"
    );
    let secret = Api::<Secret>::namespaced(runtime.clone(), ns)
        .get("shop-tls")
        .await?;
    let data = secret.data.unwrap_or_default();
    let crt = data
        .get("tls.crt")
        .context("no tls.crt in Secret shop-tls")?;
    let issued = IssuedCertificate::from_pem(&crt.0)?;
    println!(
        "certificate for {:?} issued by {}",
        issued.dns_names, issued.issuer
    );
    ensure!(
        issued.valid_now,
        "the certificate is not valid now: {issued:?}"
    );
    ensure!(
        issued.dns_names.iter().any(|n| n == HOST),
        "SANs {:?} lack {HOST}",
        issued.dns_names
    );
    ensure!(
        issued.issuer.contains("QleetOS local CA (eu-west)"),
        "issuer: {}",
        issued.issuer
    );
    let ca = data.get("ca.crt").context("no ca.crt in Secret shop-tls")?;
    Ok(ca.0.clone())
}

fn same_uids(before: &[SupportService], after: &[SupportService]) -> bool {
    let uids = |s: &[SupportService]| {
        let mut uids: Vec<String> = s.iter().filter_map(|s| s.metadata.uid.clone()).collect();
        uids.sort();
        uids
    };
    uids(before) == uids(after)
}

pub(crate) async fn wait_ready_within(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<Workload> {
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    eventually(&format!("Workload {ns}/{name} Ready"), timeout, || async {
        let workload = api.get(name).await?;
        let status = workload.status.clone().unwrap_or_default();
        if status.is_ready() && status.observed_generation == workload.metadata.generation {
            return Ok(Some(workload));
        }
        let ready = status
            .condition("Ready")
            .map(|c| format!("{}: {}", c.reason, c.message));
        anyhow::bail!("not Ready: {ready:?}")
    })
    .await
}

pub(crate) async fn wait_gone<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(&format!("{name} gone"), INSTALL_TIMEOUT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// The instance of `workload`'s only placement, once its Ready condition has `reason`.
async fn wait_instance_reason(
    client: &Client,
    ns: &str,
    workload: &str,
    reason: &str,
) -> Result<WorkloadInstance> {
    eventually(
        &format!("{ns}/{workload} instance with reason {reason}"),
        TIMEOUT,
        || async {
            let instances = instances_of(client, ns, workload).await?;
            let found = instances.into_iter().find(|i| {
                i.status
                    .as_ref()
                    .and_then(|s| s.condition("Ready"))
                    .is_some_and(|c| c.reason == reason)
            });
            Ok(found)
        },
    )
    .await
}

fn ready_message(instance: &WorkloadInstance) -> String {
    instance
        .status
        .as_ref()
        .and_then(|s| s.condition("Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

pub(crate) fn profile(name: &str, provides: &str, default: bool, manifests: Value) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "SupportServiceProfile",
        "metadata": {"name": name},
        "spec": {"provides": [provides], "default": default, "namespace": name,
                 "gracePeriodSeconds": 0, "manifests": manifests}
    })
}

pub(crate) async fn apply_profile(client: &Client, profile: &Value) -> Result<()> {
    let api: Api<SupportServiceProfile> = Api::all(client.clone());
    let name = profile["metadata"]["name"].as_str().context("name")?;
    api.patch(
        name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(profile),
    )
    .await?;
    Ok(())
}

fn config_map(name: &str, version: &str) -> Value {
    json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"version": version}}])
}

fn needing(name: &str, needs: &[&str], region: &str) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name},
        "spec": {
            "placement": {"regions": [region]},
            "needs": needs,
            "manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}]
        }
    })
}

/// Each kind of bad input gets its own condition, and nothing of the Workload is applied.
pub async fn bad_dependency_input_is_reported(env: &mut Environment) -> Result<()> {
    operator_running(env).await?;
    let (ns, client) = ("dep-bad", env.management_client().await?);
    apply_workload(
        &client,
        ns,
        &needing("lonely", &["monitoring"], "eu-west-1"),
    )
    .await?;
    let lonely = wait_instance_reason(&client, ns, "lonely", "NoSupportServiceProfile").await?;
    ensure!(
        ready_message(&lonely).contains("`monitoring`"),
        "{}",
        ready_message(&lonely)
    );

    apply_profile(
        &client,
        &profile("cache-a", "cache", false, config_map("a", "1")),
    )
    .await?;
    apply_profile(
        &client,
        &profile("cache-b", "cache", false, config_map("b", "1")),
    )
    .await?;
    apply_workload(&client, ns, &needing("torn", &["cache"], "eu-west-1")).await?;
    let torn = wait_instance_reason(&client, ns, "torn", "AmbiguousSupportServiceProfile").await?;
    ensure!(
        ready_message(&torn).contains("cache-a, cache-b"),
        "{}",
        ready_message(&torn)
    );

    let mut bad_host = web_workload("badhost", "Not_A_Host", "eu-west-1");
    bad_host["metadata"]["namespace"] = json!(ns);
    let refused = Api::<Workload>::namespaced(client.clone(), ns)
        .create(&Default::default(), &serde_json::from_value(bad_host)?)
        .await
        .err()
        .context("a host that is not a DNS name was accepted")?;
    ensure!(refused.to_string().contains("expose.hosts"), "{refused}");

    let mut wrong_port = web_workload("wrongport", "wrong.qleetos.test", "eu-west-1");
    wrong_port["spec"]["expose"] =
        json!({"hosts": ["wrong.qleetos.test"], "service": {"name": "wrongport", "port": 8080}});
    apply_lab_workload(&client, ns, &wrong_port).await?;
    let wrong = wait_instance_reason(&client, ns, "wrongport", "InvalidExpose").await?;
    ensure!(
        ready_message(&wrong).contains("no port 8080"),
        "{}",
        ready_message(&wrong)
    );

    let broken = json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "broken"}, "data": {"k": "v"}, "spec": {"nonsense": true}}]);
    apply_profile(&client, &profile("broken", "broken", false, broken)).await?;
    apply_workload(&client, ns, &needing("victim", &["broken"], "eu-west-1")).await?;
    let victim = wait_instance_reason(&client, ns, "victim", "WaitingForSupportService").await?;
    let failed = eventually(
        "the broken service Failed with the API server's message",
        TIMEOUT,
        || async {
            let service = Api::<SupportService>::all(client.clone())
                .get("broken.eu-west")
                .await?;
            Ok((service.state() == DependencyState::Failed).then(|| service.message()))
        },
    )
    .await?;
    ensure!(failed.contains("field not declared in schema"), "{failed}");
    let _ = victim;
    let told = eventually("the victim naming the failed service", TIMEOUT, || async {
        let waiting =
            wait_instance_reason(&client, ns, "victim", "WaitingForSupportService").await?;
        let message = ready_message(&waiting);
        Ok(message.contains("is Failed").then_some(message))
    })
    .await?;
    ensure!(told.contains("field not declared in schema"), "{told}");
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let applied = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(runtime, ns)
        .get_opt("victim")
        .await?;
    ensure!(
        applied.is_none(),
        "the workload was applied although its support service failed"
    );

    capability_outside_the_policy_is_refused(&client).await?;
    for name in ["lonely", "torn", "wrongport", "victim"] {
        delete_workload(&client, ns, name).await?;
    }
    for name in ["cache-a", "cache-b", "broken"] {
        delete_profile(&client, name).await?;
    }
    Ok(())
}

/// A namespace whose TenantPolicy lists the capabilities it may need cannot make QleetOS
/// install anything else: refused, and the profile is not installed for it.
async fn capability_outside_the_policy_is_refused(client: &Client) -> Result<()> {
    let (ns, policy) = ("dep-fenced", "dep-fenced-capabilities");
    crate::tenancy::apply_policy(
        client,
        json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": policy}, "spec": {"namespaces": [ns], "capabilities": ["cache"]}}),
    )
    .await?;
    apply_profile(
        client,
        &profile("audit", "audit", false, config_map("audit", "1")),
    )
    .await?;
    apply_workload(client, ns, &needing("greedy", &["audit"], "eu-west-1")).await?;
    let greedy = wait_instance_reason(client, ns, "greedy", "TenancyViolation").await?;
    let message = ready_message(&greedy);
    ensure!(
        message.contains("may not need audit; allowed: cache") && message.contains(policy),
        "{message}"
    );
    // The refusal reached the Workload too: the instance's pass that refused the need is
    // over, and the Workload summed it up at its current generation.
    let workloads: Api<Workload> = Api::namespaced(client.clone(), ns);
    eventually("the Workload telling the refusal", TIMEOUT, || async {
        let workload = workloads.get("greedy").await?;
        let status = workload.status.clone().unwrap_or_default();
        let told = status.observed_generation == workload.metadata.generation
            && status
                .condition(qleetos_crds::READY)
                .is_some_and(|c| !c.is_true() && c.message.contains("may not need audit"));
        Ok(told.then_some(()))
    })
    .await?;
    let installed = Api::<SupportService>::all(client.clone())
        .get_opt("audit.eu-west")
        .await?;
    ensure!(installed.is_none(), "a refused need installed its profile");
    delete_workload(client, ns, "greedy").await?;
    Api::<TenantPolicy>::all(client.clone())
        .delete(policy, &DeleteParams::default())
        .await?;
    delete_profile(client, "audit").await
}

pub(crate) async fn delete_profile(client: &Client, name: &str) -> Result<()> {
    let api: Api<SupportServiceProfile> = Api::all(client.clone());
    api.delete(name, &DeleteParams::default()).await?;
    wait_gone(&api, name).await
}

/// A changed profile reaches every runtime that has it; deleting a profile in use waits and
/// names its users, and completes once they are gone.
pub async fn profile_upgrade_rolls_out_and_deleting_a_used_profile_waits(
    env: &mut Environment,
) -> Result<()> {
    operator_running(env).await?;
    let (ns, client) = ("dep-upgrade", env.management_client().await?);
    apply_profile(
        &client,
        &profile("echo", "echo", false, config_map("echo", "1")),
    )
    .await?;
    apply_workload(&client, ns, &needing("left", &["echo"], "eu-west-1")).await?;
    apply_workload(&client, ns, &needing("right", &["echo"], "us-east-1")).await?;
    wait_workload_ready(&client, ns, "left").await?;
    wait_workload_ready(&client, ns, "right").await?;
    apply_profile(
        &client,
        &profile("echo", "echo", false, config_map("echo", "2")),
    )
    .await?;
    for runtime in ["eu-west", "us-east"] {
        let cluster = env.runtime(runtime).context("runtime")?.client().await?;
        let maps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster, "echo");
        eventually(&format!("echo v2 on {runtime}"), TIMEOUT, || async {
            let map = maps.get("echo").await?;
            let version = map.data.unwrap_or_default().get("version").cloned();
            Ok((version.as_deref() == Some("2")).then_some(()))
        })
        .await?;
    }
    let api: Api<SupportServiceProfile> = Api::all(client.clone());
    api.delete("echo", &DeleteParams::default()).await?;
    let waiting = eventually(
        "the profile deletion waiting on its users",
        TIMEOUT,
        || async {
            let profile = api.get("echo").await?;
            let ready = profile
                .status
                .as_ref()
                .and_then(|s| s.condition("Ready").cloned());
            Ok(ready.filter(|c| c.reason == "InUse").map(|c| c.message))
        },
    )
    .await?;
    ensure!(
        waiting.contains(&format!("{ns}/left")) && waiting.contains(&format!("{ns}/right")),
        "{waiting}"
    );
    delete_workload(&client, ns, "left").await?;
    delete_workload(&client, ns, "right").await?;
    wait_gone(&api, "echo").await?;
    for runtime in ["eu-west", "us-east"] {
        let left = managed_objects_left(env, runtime).await?;
        ensure!(left.is_empty(), "objects left on {runtime}: {left:?}");
    }
    Ok(())
}

/// The operator is killed while a support service installs; the restarted one finishes it
/// with exactly one SupportService and one of each object.
pub async fn an_operator_restart_mid_install_converges_without_duplicates(
    env: &mut Environment,
) -> Result<()> {
    operator_running(env).await?;
    let (ns, client) = ("dep-restart", env.management_client().await?);
    let slow = json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "slow"}, "data": {"k": "v"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "slow"},
         "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "slow"}},
                  "template": {"metadata": {"labels": {"app": "slow"}},
                               "spec": {"containers": [{"name": "slow", "image": "busybox"}]}}}}
    ]);
    // Held Installing until the test opens the gate: a health check on a Deployment the
    // profile does not create.
    let mut gated = profile("slow", "slow", false, slow);
    gated["spec"]["healthChecks"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "gate", "namespace": "slow", "type": "Available"}]);
    apply_profile(&client, &gated).await?;
    apply_workload(&client, ns, &needing("patient", &["slow"], "eu-west-1")).await?;
    eventually("the slow service installing", TIMEOUT, || async {
        let service = Api::<SupportService>::all(client.clone())
            .get_opt("slow.eu-west")
            .await?;
        Ok(service
            .filter(|s| s.state() == DependencyState::Installing)
            .map(drop))
    })
    .await?;
    for operator in env.operators_mut() {
        operator.kill();
    }
    env.stop_operators().await;
    env.start_operator(OperatorOptions::default()).await?;
    let gates = open_gate(env, "slow").await?;
    wait_workload_ready(&client, ns, "patient").await?;
    gates.delete("gate", &DeleteParams::default()).await?;
    let services: Vec<SupportService> = support_services(&client)
        .await?
        .into_iter()
        .filter(|s| s.spec.profile_ref.name == "slow")
        .collect();
    ensure!(
        services.len() == 1,
        "{} SupportServices for one profile and runtime",
        services.len()
    );
    let inventory = &services[0]
        .status
        .as_ref()
        .context("status")?
        .applied_objects;
    ensure!(inventory.len() == 3, "inventory: {inventory:?}");
    delete_workload(&client, ns, "patient").await?;
    delete_profile(&client, "slow").await?;
    let left = managed_objects_left(env, "eu-west").await?;
    ensure!(left.is_empty(), "objects left: {left:?}");
    Ok(())
}

/// Creates Deployment `gate` in `namespace` of runtime eu-west, which a profile's health check
/// waits for; returns the API to delete it with.
pub(crate) async fn open_gate(
    env: &Environment,
    namespace: &str,
) -> Result<Api<k8s_openapi::api::apps::v1::Deployment>> {
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let gates = Api::namespaced(runtime, namespace);
    let gate = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gate"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "gate"}},
                 "template": {"metadata": {"labels": {"app": "gate"}},
                              "spec": {"containers": [{"name": "gate", "image": "busybox"}]}}}});
    gates
        .create(&Default::default(), &serde_json::from_value(gate)?)
        .await?;
    Ok(gates)
}

/// The dependency trials: they install cluster-wide objects (CRDs, profiles), so they take
/// turns on an environment of their own.
pub fn trials(
    runtime: &std::sync::Arc<tokio::runtime::Runtime>,
    dir: &std::path::Path,
) -> (Vec<libtest_mimic::Trial>, crate::harness::TakingTurns) {
    let own: [(&str, crate::harness::Exclusive); 4] = [
        (
            "web_workload_gets_its_support_services_and_a_real_certificate",
            |env| Box::pin(web_workload_gets_its_support_services_and_a_real_certificate(env)),
        ),
        ("bad_dependency_input_is_reported", |env| {
            Box::pin(bad_dependency_input_is_reported(env))
        }),
        (
            "profile_upgrade_rolls_out_and_deleting_a_used_profile_waits",
            |env| {
                Box::pin(profile_upgrade_rolls_out_and_deleting_a_used_profile_waits(
                    env,
                ))
            },
        ),
        (
            "an_operator_restart_mid_install_converges_without_duplicates",
            |env| Box::pin(an_operator_restart_mid_install_converges_without_duplicates(env)),
        ),
    ];
    let env = crate::harness::TakingTurns::new(dir.join("dependencies"), runtimes);
    let trials = own
        .into_iter()
        .chain(crate::services::scenarios())
        .chain(crate::provisioning::scenarios())
        .chain(crate::console::scenarios())
        .map(|(name, scenario)| {
            let env = env.clone();
            crate::harness::own_trial(name, runtime, async move { env.run(scenario).await })
        })
        .collect();
    (trials, env)
}
