//! Command lines of the processes that make up a test cluster.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::certs::CertPaths;

/// Service CIDR of every test cluster; its first address is in the serving certificate.
pub(crate) const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Pod IPs kwok hands out.
const POD_CIDR: &str = "10.244.0.1/16";
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Seconds kwok's node leases last; kwok renews them, which keeps fake nodes Ready.
const NODE_LEASE_SECONDS: &str = "40";
/// Annotation (and value) that marks the nodes kwok manages.
pub(crate) const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// Loopback ports of a cluster, chosen once at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
}

/// Files a cluster's processes read or write.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub certs: CertPaths,
    pub kubeconfig: PathBuf,
    pub kwok_stages: PathBuf,
    pub etcd_data: PathBuf,
}

/// Arguments of each component, computed once so restarts use the very same ones.
#[derive(Debug, Clone)]
pub(crate) struct ComponentArgs {
    pub etcd: Vec<OsString>,
    pub apiserver: Vec<OsString>,
    pub controller_manager: Vec<OsString>,
    pub scheduler: Vec<OsString>,
    pub kwok: Vec<OsString>,
}

impl ComponentArgs {
    pub(crate) fn new(cluster_name: &str, layout: &Layout, ports: Ports) -> Self {
        ComponentArgs {
            etcd: etcd(layout, ports),
            apiserver: apiserver(layout, ports),
            controller_manager: controller_manager(cluster_name, layout),
            scheduler: scheduler(layout),
            kwok: kwok(layout),
        }
    }
}

pub(crate) fn flag(name: &str, value: impl AsRef<OsStr>) -> OsString {
    let mut flag = OsString::from(format!("--{name}="));
    flag.push(value.as_ref());
    flag
}

pub(crate) fn path_flag(name: &str, path: &Path) -> OsString {
    flag(name, path.as_os_str())
}

fn etcd(layout: &Layout, ports: Ports) -> Vec<OsString> {
    let client_url = format!("http://127.0.0.1:{}", ports.etcd_client);
    let peer_url = format!("http://127.0.0.1:{}", ports.etcd_peer);
    vec![
        flag("name", "etcd"),
        path_flag("data-dir", &layout.etcd_data),
        flag("listen-client-urls", &client_url),
        flag("advertise-client-urls", &client_url),
        flag("listen-peer-urls", &peer_url),
        flag("initial-advertise-peer-urls", &peer_url),
        flag("initial-cluster", format!("etcd={peer_url}")),
        flag("initial-cluster-state", "new"),
        flag("logger", "zap"),
        flag("log-level", "warn"),
    ]
}

fn apiserver(layout: &Layout, ports: Ports) -> Vec<OsString> {
    let certs = &layout.certs;
    vec![
        flag(
            "etcd-servers",
            format!("http://127.0.0.1:{}", ports.etcd_client),
        ),
        flag("bind-address", "127.0.0.1"),
        flag("advertise-address", "127.0.0.1"),
        flag("secure-port", ports.apiserver.to_string()),
        // The default reconciler rejects 127.0.0.1 as an endpoint address every few seconds.
        flag("endpoint-reconciler-type", "none"),
        flag("authorization-mode", "Node,RBAC"),
        path_flag("client-ca-file", &certs.ca_cert),
        path_flag("tls-cert-file", &certs.serving_cert),
        path_flag("tls-private-key-file", &certs.serving_key),
        path_flag("service-account-key-file", &certs.service_account_pub),
        path_flag(
            "service-account-signing-key-file",
            &certs.service_account_key,
        ),
        flag("service-account-issuer", SERVICE_ACCOUNT_ISSUER),
        flag("api-audiences", SERVICE_ACCOUNT_ISSUER),
        flag("service-cluster-ip-range", SERVICE_CIDR),
        // With WatchList on, the apiserver turns every watch from resourceVersion ""/"0"
        // into a streaming watch-list, which needs etcd >= 3.5 (RequestWatchProgress);
        // against Debian's etcd 3.4 such watches would fail once before clients fall back.
        flag("feature-gates", "WatchList=false"),
        flag("allow-privileged", "true"),
        flag("profiling", "false"),
    ]
}

fn controller_manager(cluster_name: &str, layout: &Layout) -> Vec<OsString> {
    let certs = &layout.certs;
    vec![
        path_flag("kubeconfig", &layout.kubeconfig),
        flag("cluster-name", cluster_name),
        path_flag(
            "service-account-private-key-file",
            &certs.service_account_key,
        ),
        path_flag("root-ca-file", &certs.ca_cert),
        path_flag("cluster-signing-cert-file", &certs.ca_cert),
        path_flag("cluster-signing-key-file", &certs.ca_key),
        flag("use-service-account-credentials", "false"),
        flag("controllers", "*"),
        flag("leader-elect", "false"),
        flag("bind-address", "127.0.0.1"),
        // 0 disables the controller manager's own HTTPS endpoint; nothing here needs it.
        flag("secure-port", "0"),
        flag("profiling", "false"),
    ]
}

fn scheduler(layout: &Layout) -> Vec<OsString> {
    vec![
        path_flag("kubeconfig", &layout.kubeconfig),
        flag("leader-elect", "false"),
        flag("bind-address", "127.0.0.1"),
        flag("secure-port", "0"),
        flag("profiling", "false"),
    ]
}

fn kwok(layout: &Layout) -> Vec<OsString> {
    let (key, value) = KWOK_NODE_ANNOTATION;
    vec![
        path_flag("kubeconfig", &layout.kubeconfig),
        path_flag("config", &layout.kwok_stages),
        flag("manage-all-nodes", "false"),
        flag(
            "manage-nodes-with-annotation-selector",
            format!("{key}={value}"),
        ),
        flag("node-lease-duration-seconds", NODE_LEASE_SECONDS),
        flag("cidr", POD_CIDR),
    ]
}
