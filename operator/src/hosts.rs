//! Hostnames as owned resources. Every name a tenant's objects would put into a route, a
//! certificate or a DNS record is found here, whether it comes from `expose` or from a raw
//! manifest, so a raw object is no way around the fence. A host belongs to at most one
//! management namespace at a time: the one whose claim is oldest, derived from the live
//! Workloads (never from a stored record). Pure: no client, no I/O.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use qleetos_crds::{Expose, Manifest};
use serde_json::Value;

/// Annotations external-dns publishes names from, on any object.
const DNS_ANNOTATIONS: [&str; 3] = [
    "external-dns.alpha.kubernetes.io/hostname",
    "external-dns.kubernetes.io/hostname",
    "external-dns.alpha.kubernetes.io/internal-hostname",
];

/// Label prefixes only QleetOS sets: its ownership and DNS publication labels, and the Pod
/// Security levels of the namespaces it creates.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["qleetos.io/", "pod-security.kubernetes.io/"];

/// A host in the form names are compared in: lower case, no trailing dot.
pub fn normalize(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether grant `pattern` covers `host`: the same name, or for `*.domain` any name below
/// `domain` (the wildcard `*.domain` itself included).
pub fn pattern_covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => pattern == host,
    }
}

/// Whether two hosts can name the same thing: equal, or one a wildcard matching the other.
pub fn overlap(a: &str, b: &str) -> bool {
    a == b || wildcard_matches(a, b) || wildcard_matches(b, a)
}

fn wildcard_matches(wildcard: &str, host: &str) -> bool {
    wildcard.starts_with("*.") && pattern_covers(wildcard, host)
}

/// Every host `manifest` would route, certify or publish, normalized.
pub fn of_manifest(manifest: &Manifest) -> BTreeSet<String> {
    let spec = manifest.0.get("spec").unwrap_or(&Value::Null);
    let mut hosts: Vec<String> = Vec::new();
    let group = manifest
        .api_version()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(group, _)| group);
    match (group, manifest.kind().unwrap_or_default()) {
        ("networking.k8s.io" | "extensions", "Ingress") => {
            hosts.extend(strings_at(&spec["rules"], &["host"]));
            hosts.extend(strings_at(&spec["tls"], &["hosts"]));
        }
        ("gateway.networking.k8s.io", "Gateway" | "ListenerSet") => {
            hosts.extend(strings_at(&spec["listeners"], &["hostname"]));
        }
        ("gateway.networking.k8s.io", _) => hosts.extend(strings(&spec["hostnames"])),
        ("cert-manager.io", "Certificate") => {
            hosts.extend(strings(&spec["dnsNames"]));
            hosts.extend(spec["commonName"].as_str().map(str::to_owned));
        }
        ("externaldns.k8s.io", "DNSEndpoint") => {
            hosts.extend(strings_at(&spec["endpoints"], &["dnsName"]));
        }
        ("traefik.io" | "traefik.containo.us", _) => {
            for rule in strings_at(&spec["routes"], &["match"]) {
                hosts.extend(traefik_hosts(&rule));
            }
        }
        _ => {}
    }
    let annotations = manifest
        .0
        .get("metadata")
        .map_or(&Value::Null, |m| &m["annotations"]);
    for key in DNS_ANNOTATIONS {
        if let Some(names) = annotations[key].as_str() {
            hosts.extend(names.split(',').map(str::to_owned));
        }
    }
    hosts
        .iter()
        .map(|h| normalize(h))
        .filter(|h| !h.is_empty())
        .collect()
}

/// Every host a Workload (or instance) claims: its `expose` hosts and those of its manifests.
pub fn claimed(expose: Option<&Expose>, manifests: &[Manifest]) -> BTreeSet<String> {
    let mut hosts: BTreeSet<String> = expose
        .map(|e| e.hosts.iter().map(|h| normalize(h)).collect())
        .unwrap_or_default();
    for manifest in manifests {
        hosts.extend(of_manifest(manifest));
    }
    hosts
}

/// Why a raw manifest may not be written by a tenant at all, whatever it names: a
/// CertificateRequest carries its names inside a CSR QleetOS does not read, and the labels
/// only QleetOS sets (DNS publication, tenancy, Pod Security) would let an object pass for
/// one QleetOS generated.
pub fn forbidden_in_manifest(manifest: &Manifest) -> Option<(&'static str, String)> {
    let group = manifest
        .api_version()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(group, _)| group);
    if group == "cert-manager.io" && manifest.kind() == Some("CertificateRequest") {
        return Some((
            "HostBearingKind",
            "a CertificateRequest's names are inside its CSR and cannot be checked against the namespace's hosts; declare a Certificate (or use expose.tls) instead".to_owned(),
        ));
    }
    let labels = manifest.0.get("metadata")?.get("labels")?.as_object()?;
    let reserved: Vec<&str> = labels
        .keys()
        .filter(|k| RESERVED_LABEL_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(String::as_str)
        .collect();
    (!reserved.is_empty()).then(|| {
        (
            "ReservedLabel",
            format!(
                "labels {} are set by QleetOS only; remove them from the manifest",
                reserved.join(", ")
            ),
        )
    })
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The strings (or string lists) at `path` inside each item of the list `items`.
fn strings_at(items: &Value, path: &[&str]) -> Vec<String> {
    let Some(items) = items.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .flat_map(|item| {
            let found = path.iter().fold(item, |value, key| &value[*key]);
            match found {
                Value::String(text) => vec![text.clone()],
                list => strings(list),
            }
        })
        .collect()
}

/// The names in a Traefik rule's `Host(...)` and `HostSNI(...)` matchers.
fn traefik_hosts(rule: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for matcher in ["Host(", "HostSNI(", "HostRegexp("] {
        let mut rest = rule;
        while let Some(start) = rest.find(matcher) {
            let after = &rest[start + matcher.len()..];
            let end = after.find(')').unwrap_or(after.len());
            hosts.extend(
                after[..end]
                    .split(',')
                    .map(|h| h.trim().trim_matches(|c| c == '`' || c == '"').to_owned()),
            );
            rest = &after[end..];
        }
    }
    hosts
}

/// One Workload's (or hand-made instance's) claim on hosts.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub created: Option<&'a Time>,
    pub hosts: BTreeSet<String>,
}

impl Claim<'_> {
    /// Older first; ties (one-second timestamps) broken by namespace and name, so every
    /// replica and every pass decides alike.
    fn precedes(&self, other: &Claim<'_>) -> bool {
        (self.created.map(|t| t.0), self.namespace, self.name)
            < (other.created.map(|t| t.0), other.namespace, other.name)
    }
}

/// The hosts of `mine` that an older claim of another namespace holds. Only claims their own
/// namespace was granted count (`others` must be filtered so): a claim the fence refuses
/// takes nothing from anyone.
pub fn taken<'a>(mine: &Claim<'_>, others: impl IntoIterator<Item = &'a Claim<'a>>) -> Vec<String> {
    let earlier: Vec<&Claim<'_>> = others
        .into_iter()
        .filter(|other| other.namespace != mine.namespace && other.precedes(mine))
        .collect();
    mine.hosts
        .iter()
        .filter(|host| {
            earlier
                .iter()
                .any(|other| other.hosts.iter().any(|theirs| overlap(host, theirs)))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn manifest(value: Value) -> Manifest {
        serde_json::from_value(value).expect("manifest")
    }

    fn time(seconds: i64) -> Time {
        serde_json::from_value(json!(format!(
            "1970-01-01T00:{:02}:{:02}Z",
            seconds / 60,
            seconds % 60
        )))
        .expect("time")
    }

    #[test]
    fn patterns_cover_exact_names_and_everything_below_a_wildcard() {
        assert!(pattern_covers("shop.example.com", "shop.example.com"));
        assert!(!pattern_covers("shop.example.com", "x.shop.example.com"));
        assert!(pattern_covers(
            "*.team-a.example.com",
            "api.team-a.example.com"
        ));
        assert!(pattern_covers(
            "*.team-a.example.com",
            "a.b.team-a.example.com"
        ));
        assert!(pattern_covers(
            "*.team-a.example.com",
            "*.team-a.example.com"
        ));
        assert!(!pattern_covers(
            "*.team-a.example.com",
            "team-a.example.com"
        ));
        assert!(!pattern_covers(
            "*.team-a.example.com",
            "evilteam-a.example.com"
        ));
        assert!(!pattern_covers("shop.example.com", "*.example.com"));
    }

    #[test]
    fn wildcards_overlap_the_names_below_them() {
        assert!(overlap("*.qleetos.test", "shop.qleetos.test"));
        assert!(overlap("shop.qleetos.test", "*.qleetos.test"));
        assert!(overlap("a.qleetos.test", "a.qleetos.test"));
        assert!(!overlap("a.qleetos.test", "b.qleetos.test"));
        assert!(!overlap("*.a.qleetos.test", "b.qleetos.test"));
    }

    #[test]
    fn every_host_bearing_field_is_found() {
        let ingress = manifest(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "i", "annotations": {"external-dns.alpha.kubernetes.io/hostname": "A.qleetos.test., b.qleetos.test"}},
            "spec": {"rules": [{"host": "c.qleetos.test"}], "tls": [{"hosts": ["d.qleetos.test"]}]}
        }));
        let hosts: Vec<String> = of_manifest(&ingress).into_iter().collect();
        assert_eq!(
            hosts,
            [
                "a.qleetos.test",
                "b.qleetos.test",
                "c.qleetos.test",
                "d.qleetos.test"
            ]
        );
        let certificate = manifest(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"},
            "spec": {"dnsNames": ["x.qleetos.test"], "commonName": "y.qleetos.test"}
        }));
        assert_eq!(of_manifest(&certificate).len(), 2);
        let route = manifest(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
            "spec": {"hostnames": ["r.qleetos.test"]}
        }));
        assert!(of_manifest(&route).contains("r.qleetos.test"));
        let gateway = manifest(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "g"},
            "spec": {"listeners": [{"name": "l", "hostname": "*.g.qleetos.test"}]}
        }));
        assert!(of_manifest(&gateway).contains("*.g.qleetos.test"));
        let endpoint = manifest(json!({
            "apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint", "metadata": {"name": "e"},
            "spec": {"endpoints": [{"dnsName": "e.qleetos.test"}]}
        }));
        assert!(of_manifest(&endpoint).contains("e.qleetos.test"));
        let traefik = manifest(json!({
            "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute", "metadata": {"name": "t"},
            "spec": {"routes": [{"match": "Host(`t.qleetos.test`) || Host(`u.qleetos.test`)"}]}
        }));
        assert_eq!(of_manifest(&traefik).len(), 2);
        let config =
            manifest(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
        assert!(of_manifest(&config).is_empty());
    }

    #[test]
    fn certificate_requests_and_reserved_labels_are_refused() {
        let request = manifest(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "metadata": {"name": "r"}
        }));
        assert_eq!(
            forbidden_in_manifest(&request).map(|f| f.0),
            Some("HostBearingKind")
        );
        let labelled = manifest(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "i", "labels": {"qleetos.io/dns": "published", "app": "x"}}
        }));
        let (rule, message) = forbidden_in_manifest(&labelled).expect("refused");
        assert_eq!(rule, "ReservedLabel");
        assert!(message.contains("qleetos.io/dns"), "{message}");
        let plain = manifest(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app": "x"}}
        }));
        assert_eq!(forbidden_in_manifest(&plain), None);
    }

    #[test]
    fn the_oldest_claim_of_another_namespace_holds_a_host() {
        let (t1, t2) = (time(100), time(200));
        let claim = |namespace, created, hosts: &[&str]| Claim {
            namespace,
            name: "w",
            created,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        };
        let victim = claim("web", Some(&t1), &["shop.qleetos.test"]);
        let attacker = claim(
            "team-a",
            Some(&t2),
            &["shop.qleetos.test", "a.qleetos.test"],
        );
        let wildcard = claim("team-b", Some(&t2), &["*.qleetos.test"]);
        assert_eq!(
            taken(&attacker, [&victim, &wildcard]),
            ["shop.qleetos.test"]
        );
        assert_eq!(taken(&wildcard, [&victim]), ["*.qleetos.test"]);
        assert!(taken(&victim, [&attacker, &wildcard]).is_empty());
        let same_namespace = claim("web", Some(&t2), &["shop.qleetos.test"]);
        assert!(taken(&same_namespace, [&victim]).is_empty());
        let tie = claim("aaa", Some(&t1), &["shop.qleetos.test"]);
        assert!(taken(&tie, [&victim]).is_empty());
        assert_eq!(taken(&victim, [&tie]), ["shop.qleetos.test"]);
    }
}
