//! Hosts have owners: the trials that need the real cert-manager, Traefik and external-dns
//! with a bind9 server on eu-west.

use super::*;

/// The default support-service profiles, and the environment's fleet: the real Traefik,
/// external-dns (writing into a bind9 server of its own) and cert-manager standing in for
/// their pods on each runtime where QleetOS installs them.
#[derive(Debug)]
struct Exposure {
    dns: DnsServer,
    /// The HTTPS port of eu-west's Traefik.
    https: u16,
    stand_ins: StandIns,
}

impl Exposure {
    async fn start(env: &Environment, tag: &str) -> Result<Self> {
        apply_default_profiles(env, 5).await?;
        let dns = DnsServer::start(&env.dir().join(format!("dns-{tag}"))).await?;
        let stand_ins = StandIns::start(env, tag, Some(&dns)).await?;
        let https = stand_ins.https_port("eu-west").await?;
        Ok(Self {
            dns,
            https,
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
        self.stand_ins.stop().await;
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
        https: https_get(host, exposure.https, &ca).await?,
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
    let exposure = Exposure::start(env, "hosts").await?;
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
    let exposure = Exposure::start(env, "records").await?;
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
