//! What the environment's summary shows of a workload's exposure in one runtime: the URL of
//! each host its Ingresses route, the address the ingress controller published, the
//! certificate the Secret of its route holds (issuer, validity), what DNS answers, and what
//! an HTTPS request through the ingress controller gets.

use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::error::Error;
use crate::issued::IssuedCertificate;

/// Label QleetOS puts on everything it applies.
const MANAGED: &str = "app.kubernetes.io/managed-by=qleetos";

/// Where the environment answers on 127.0.0.1: its DNS server, and the runtime's ingress
/// controller's HTTPS entry point.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalPorts {
    pub dns: Option<u16>,
    pub https: Option<u16>,
}

/// One line per fact, for the Ingresses QleetOS applied in `namespace`.
pub async fn describe(
    runtime: &Client,
    namespace: &str,
    ports: LocalPorts,
) -> Result<Vec<String>, Error> {
    let ingresses = Api::<Ingress>::namespaced(runtime.clone(), namespace)
        .list(&ListParams::default().labels(MANAGED))
        .await?;
    let mut lines = Vec::new();
    for ingress in &ingresses {
        lines.extend(describe_ingress(runtime, namespace, ingress, ports).await?);
    }
    Ok(lines)
}

async fn describe_ingress(
    runtime: &Client,
    namespace: &str,
    ingress: &Ingress,
    ports: LocalPorts,
) -> Result<Vec<String>, Error> {
    let spec = ingress.spec.clone().unwrap_or_default();
    let tls = spec.tls.clone().unwrap_or_default();
    let address = published_address(ingress);
    let mut lines = Vec::new();
    for host in spec.rules.iter().flatten().filter_map(|r| r.host.clone()) {
        let secret = tls
            .iter()
            .find(|t| t.hosts.iter().flatten().any(|h| *h == host))
            .and_then(|t| t.secret_name.clone());
        let scheme = if secret.is_some() { "https" } else { "http" };
        lines.push(format!(
            "{scheme}://{host}/ (Ingress {}, class {}, address {})",
            ingress.name_any(),
            spec.ingress_class_name.as_deref().unwrap_or("default"),
            address.as_deref().unwrap_or("not published yet")
        ));
        let mut ca = None;
        if let Some(secret) = secret {
            let (line, issuing_ca) = certificate(runtime, namespace, &secret).await?;
            lines.push(format!("  certificate: {line}"));
            ca = issuing_ca;
        }
        if let (Some(port), Some(ca)) = (ports.https, ca) {
            lines.push(format!("  HTTPS: {}", https_probe(&host, port, &ca).await?));
        }
        let published =
            ingress.labels().get("qleetos.io/dns").map(String::as_str) == Some("published");
        if !published {
            lines.push("  DNS: not published (the Workload's expose.dns is off)".to_owned());
        } else if let Some(port) = ports.dns {
            let answers = crate::dns::query(port, &host, "A").await?;
            let answer = if answers.is_empty() {
                "no record yet".to_owned()
            } else {
                answers.join(", ")
            };
            lines.push(format!(
                "  DNS (bind9 on 127.0.0.1:{port}): {host} A {answer}"
            ));
        }
    }
    Ok(lines)
}

fn published_address(ingress: &Ingress) -> Option<String> {
    let balancer = ingress.status.as_ref()?.load_balancer.as_ref()?;
    let first = balancer.ingress.as_ref()?.first()?;
    first.ip.clone().or_else(|| first.hostname.clone())
}

/// What the route's Secret holds, and the CA that issued it (PEM) when the Secret says.
pub async fn certificate(
    runtime: &Client,
    namespace: &str,
    secret: &str,
) -> Result<(String, Option<Vec<u8>>), Error> {
    let Some(found) = Api::<Secret>::namespaced(runtime.clone(), namespace)
        .get_opt(secret)
        .await?
    else {
        return Ok((format!("Secret {secret} not issued yet"), None));
    };
    let data = found.data.unwrap_or_default();
    let Some(pem) = data.get("tls.crt").filter(|pem| !pem.0.is_empty()) else {
        return Ok((format!("Secret {secret} holds no certificate yet"), None));
    };
    let issued = IssuedCertificate::from_pem(&pem.0)?;
    let line = format!(
        "Secret {secret}, issued by {} for {}, valid until {}{}",
        issued.issuer,
        issued.dns_names.join(", "),
        issued.not_after,
        if issued.valid_now {
            ""
        } else {
            " (NOT valid now)"
        }
    );
    Ok((line, data.get("ca.crt").map(|ca| ca.0.clone())))
}

/// A real HTTPS request to `host` through the ingress controller on 127.0.0.1:`port` (curl,
/// trusting only `ca`): whether the certificate served verifies, and the HTTP status. The
/// controller takes a moment to serve a freshly issued certificate, so this tries a few times.
async fn https_probe(host: &str, port: u16, ca: &[u8]) -> Result<String, Error> {
    let mut outcome = (false, String::new());
    for _ in 0..5 {
        outcome = https_request(host, port, ca).await?;
        if outcome.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Ok(https_outcome(host, port, outcome))
}

/// One HTTPS request to `host` through the ingress controller on 127.0.0.1:`port`, trusting
/// only `ca`: whether the certificate served verified, and the HTTP status (`000`: none).
pub async fn https_request(host: &str, port: u16, ca: &[u8]) -> Result<(bool, String), Error> {
    let ca_file = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("cannot create", Path::new("a temporary file"), e))?;
    std::fs::write(ca_file.path(), ca).map_err(|e| Error::io("cannot write", ca_file.path(), e))?;
    curl(
        host,
        port,
        ca_file.path(),
        &format!("https://{host}:{port}/"),
    )
    .await
}

/// What [`https_request`]'s outcome means, in words.
pub fn https_outcome(host: &str, port: u16, (verified, status): (bool, String)) -> String {
    let url = format!("https://{host}:{port}/");
    let tls = if verified {
        "certificate verified against its issuer's CA"
    } else {
        "certificate NOT verified"
    };
    let answer = match status.as_str() {
        "000" | "" => "no HTTP answer within 3 s".to_owned(),
        code => format!("HTTP {code} from behind the route"),
    };
    format!(
        "{url} through the ingress controller: {tls}, {answer} (kwok simulates the pods: no \
         container of the workload answers)"
    )
}

/// Whether curl verified the certificate, and the HTTP status it got (`000`: none).
async fn curl(host: &str, port: u16, ca: &Path, url: &str) -> Result<(bool, String), Error> {
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--output", "/dev/null", "--max-time", "3"])
        .args(["--write-out", "%{ssl_verify_result} %{http_code}"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(url)
        .output()
        .await
        .map_err(|e| Error::io("cannot run", Path::new("curl"), e))?;
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    let (verified, status) = written.split_once(' ').unwrap_or(("", ""));
    Ok((
        verified == "0" && output.status.code() != Some(60),
        status.to_owned(),
    ))
}
