//! The objects QleetOS generates for a workload's `expose`: the Ingress routing its hosts
//! to its Service, the cert-manager Certificate whose Secret the Ingress serves, and the
//! annotations the DNS (or any other) provider asks for. Pure: no client, no I/O.

use std::collections::BTreeMap;

use qleetos_crds::{Expose, HealthCheck, Manifest, WorkloadObjects};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Label on the routes whose hosts QleetOS has the DNS provider publish; the shipped
/// external-dns profile selects only these (`--label-filter`), and tenants may not set it.
pub const DNS_LABEL: &str = "qleetos.io/dns";
pub const DNS_PUBLISHED: &str = "published";

/// What each needed capability's provider contributes, by capability.
pub type Contributions = BTreeMap<String, WorkloadObjects>;

/// The generated manifests, and the conditions that must be True before they are ready.
#[derive(Debug, Default)]
pub struct Generated {
    pub manifests: Vec<Manifest>,
    pub checks: Vec<HealthCheck>,
}

/// Generates the route (and certificate) named `name` for `expose`, checking that its
/// Service and port are among `manifests`; they go to the Service's namespace, which is
/// `default_namespace` when the manifest names none.
pub fn generate(
    name: &str,
    expose: &Expose,
    manifests: &[Manifest],
    contributions: &Contributions,
    default_namespace: &str,
) -> Result<Generated> {
    let namespace = service_namespace(expose, manifests)?;
    let secret = format!("{name}-tls");
    let issuer = expose
        .tls
        .then(|| {
            contributions
                .get("tls")
                .and_then(|c| c.certificate_issuer.clone())
        })
        .flatten();
    let mut generated = Generated::default();
    generated.manifests.push(ingress(
        name,
        namespace.as_deref(),
        expose,
        contributions,
        &secret,
    ));
    if let Some(issuer) = issuer {
        generated.manifests.push(object(json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": with_namespace(json!({ "name": secret }), namespace.as_deref()),
            "spec": {
                "secretName": secret,
                "dnsNames": expose.hosts,
                "issuerRef": { "group": "cert-manager.io", "kind": issuer.kind, "name": issuer.name },
            },
        })));
        generated.checks.push(HealthCheck {
            api_version: "cert-manager.io/v1".to_owned(),
            kind: "Certificate".to_owned(),
            name: secret,
            namespace: Some(namespace.unwrap_or_else(|| default_namespace.to_owned())),
            type_: "Ready".to_owned(),
        });
    }
    Ok(generated)
}

fn ingress(
    name: &str,
    namespace: Option<&str>,
    expose: &Expose,
    contributions: &Contributions,
    secret: &str,
) -> Manifest {
    let hosts = expose.hosts.join(",");
    let annotations: BTreeMap<String, String> = contributions
        .values()
        .flat_map(|c| c.ingress_annotations.iter())
        .map(|(key, value)| (key.clone(), value.replace("$(hosts)", &hosts)))
        .collect();
    let paths: Vec<Value> = expose
        .paths_or_root()
        .iter()
        .map(|path| {
            json!({
                "path": path,
                "pathType": "Prefix",
                "backend": { "service": { "name": expose.service.name, "port": { "number": expose.service.port } } },
            })
        })
        .collect();
    let rules: Vec<Value> = expose
        .hosts
        .iter()
        .map(|host| json!({ "host": host, "http": { "paths": paths } }))
        .collect();
    let mut spec = json!({ "rules": rules });
    if let Some(class) = contributions
        .get("ingress")
        .and_then(|c| c.ingress_class_name.clone())
    {
        spec["ingressClassName"] = json!(class);
    }
    if expose.tls {
        spec["tls"] = json!([{ "hosts": expose.hosts, "secretName": secret }]);
    }
    let mut metadata = with_namespace(json!({ "name": name }), namespace);
    if expose.dns {
        metadata["labels"] = json!({ DNS_LABEL: DNS_PUBLISHED });
    }
    if !annotations.is_empty() {
        metadata["annotations"] = json!(annotations);
    }
    object(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }))
}

fn object(value: Value) -> Manifest {
    match value {
        Value::Object(map) => Manifest(map),
        _ => Manifest(serde_json::Map::new()),
    }
}

fn with_namespace(mut metadata: Value, namespace: Option<&str>) -> Value {
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    metadata
}

/// Why `expose` cannot be served by `manifests`, if it cannot: checked before anything is
/// installed for it.
pub fn validate(expose: &Expose, manifests: &[Manifest]) -> Result<()> {
    service_namespace(expose, manifests).map(drop)
}

/// The namespace of the exposed Service's manifest (`None`: the default one), or why the
/// Service or its port is not among the manifests.
fn service_namespace(expose: &Expose, manifests: &[Manifest]) -> Result<Option<String>> {
    let services: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.kind() == Some("Service") && m.api_version() == Some("v1"))
        .collect();
    let wanted = &expose.service;
    let Some(service) = services
        .iter()
        .find(|m| m.name() == Some(wanted.name.as_str()))
    else {
        let known: Vec<&str> = services.iter().filter_map(|m| m.name()).collect();
        return Err(Error::InvalidExpose(format!(
            "service {} is not among the manifests (Services there: {}); add it or name one of them",
            wanted.name,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let ports = service_ports(service);
    if !ports.contains(&i64::from(wanted.port)) {
        let listed: Vec<String> = ports.iter().map(i64::to_string).collect();
        return Err(Error::InvalidExpose(format!(
            "Service {} has no port {} (its ports: {})",
            wanted.name,
            wanted.port,
            if listed.is_empty() {
                "none".to_owned()
            } else {
                listed.join(", ")
            }
        )));
    }
    Ok(service.namespace().map(str::to_owned))
}

fn service_ports(service: &Manifest) -> Vec<i64> {
    service
        .0
        .get("spec")
        .and_then(|spec| spec.get("ports"))
        .and_then(Value::as_array)
        .map(|ports| ports.iter().filter_map(|p| p["port"].as_i64()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qleetos_crds::IssuerRef;

    fn expose(tls: bool) -> Expose {
        serde_json::from_value(json!({
            "hosts": ["web.example.test"],
            "service": { "name": "web", "port": 80 },
            "tls": tls,
            "dns": true,
        }))
        .expect("valid expose")
    }

    fn service(name: &str, port: i64) -> Manifest {
        object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name },
            "spec": { "ports": [{ "port": port }] },
        }))
    }

    fn contributions() -> Contributions {
        let mut all = Contributions::new();
        all.insert(
            "ingress".into(),
            WorkloadObjects {
                ingress_class_name: Some("traefik".into()),
                ..Default::default()
            },
        );
        all.insert(
            "tls".into(),
            WorkloadObjects {
                certificate_issuer: Some(IssuerRef {
                    kind: "ClusterIssuer".into(),
                    name: "qleetos-ca".into(),
                }),
                ..Default::default()
            },
        );
        all.insert(
            "dns".into(),
            WorkloadObjects {
                ingress_annotations: [(
                    "external-dns.kubernetes.io/hostname".into(),
                    "$(hosts)".into(),
                )]
                .into(),
                ..Default::default()
            },
        );
        all
    }

    #[test]
    fn tls_generates_a_certificate_served_by_the_ingress() {
        let generated = generate(
            "web",
            &expose(true),
            &[service("web", 80)],
            &contributions(),
            "team",
        )
        .expect("generated");
        let ingress = &Value::Object(generated.manifests[0].0.clone());
        assert_eq!(ingress["spec"]["ingressClassName"], "traefik");
        assert_eq!(ingress["spec"]["tls"][0]["secretName"], "web-tls");
        assert_eq!(
            ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"],
            80
        );
        assert_eq!(
            ingress["metadata"]["annotations"]["external-dns.kubernetes.io/hostname"],
            "web.example.test"
        );
        let certificate = &Value::Object(generated.manifests[1].0.clone());
        assert_eq!(certificate["spec"]["dnsNames"][0], "web.example.test");
        assert_eq!(certificate["spec"]["issuerRef"]["name"], "qleetos-ca");
        assert_eq!(generated.checks[0].name, "web-tls");
        assert_eq!(generated.checks[0].namespace.as_deref(), Some("team"));
    }

    #[test]
    fn only_routes_asking_for_dns_carry_the_publication_label() {
        let with_dns = expose(false);
        let generated = generate(
            "web",
            &with_dns,
            &[service("web", 80)],
            &contributions(),
            "team",
        )
        .expect("generated");
        assert_eq!(
            generated.manifests[0].0["metadata"]["labels"][DNS_LABEL],
            DNS_PUBLISHED
        );
        let mut without_dns = expose(false);
        without_dns.dns = false;
        let generated = generate(
            "web",
            &without_dns,
            &[service("web", 80)],
            &contributions(),
            "team",
        )
        .expect("generated");
        assert!(generated.manifests[0].0["metadata"].get("labels").is_none());
    }

    #[test]
    fn plain_http_has_no_certificate() {
        let generated = generate(
            "web",
            &expose(false),
            &[service("web", 80)],
            &contributions(),
            "team",
        )
        .expect("generated");
        assert_eq!(generated.manifests.len(), 1);
        assert!(generated.manifests[0].0["spec"].get("tls").is_none());
    }

    #[test]
    fn a_service_or_port_not_in_the_manifests_is_named() {
        let missing = generate(
            "web",
            &expose(true),
            &[service("api", 80)],
            &contributions(),
            "team",
        )
        .expect_err("no Service web");
        assert_eq!(missing.reason().as_str(), "InvalidExpose");
        assert!(
            missing.to_string().contains("Services there: api"),
            "{missing}"
        );
        let wrong_port = generate(
            "web",
            &expose(true),
            &[service("web", 8080)],
            &contributions(),
            "team",
        )
        .expect_err("no port 80");
        assert!(
            wrong_port.to_string().contains("its ports: 8080"),
            "{wrong_port}"
        );
    }
}
