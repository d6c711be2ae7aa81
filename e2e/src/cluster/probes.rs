//! Readiness checks used while a cluster starts, and the fake kwok nodes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeStatus, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::args::KWOK_NODE_ANNOTATION;
use crate::error::Error;

const ETCD_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// True once etcd answers `GET /health` with `"health":"true"`.
pub(crate) async fn etcd_healthy(port: u16) -> Result<bool, Error> {
    tokio::task::spawn_blocking(move || etcd_health_blocking(port))
        .await
        .map_err(|e| Error::io("etcd health check", "/health", std::io::Error::other(e)))?
        .map_err(|e| Error::io("etcd health check", format!("127.0.0.1:{port}/health"), e))
}

fn etcd_health_blocking(port: u16) -> std::io::Result<bool> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, ETCD_PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(ETCD_PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(ETCD_PROBE_TIMEOUT))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.contains("\"health\":\"true\""))
}

/// True once kube-apiserver's `/readyz` answers `ok`.
pub(crate) async fn apiserver_ready(client: &Client) -> Result<bool, Error> {
    let mut request = http::Request::new(Vec::new());
    *request.uri_mut() = http::Uri::from_static("/readyz");
    Ok(client.request_text(request).await?.trim() == "ok")
}

/// True once the service-account controller created `default/default`
/// (until then the apiserver rejects pods in namespace `default`).
pub(crate) async fn default_service_account_exists(client: &Client) -> Result<bool, Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    Ok(accounts.get_opt("default").await?.is_some())
}

/// True once every named node reports condition Ready=True.
pub(crate) async fn nodes_ready(client: &Client, names: &[String]) -> Result<bool, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in names {
        let Some(node) = nodes.get_opt(name).await? else {
            return Ok(false);
        };
        if !is_ready(&node) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Names of the fake nodes of a cluster.
/// Creates or updates the Service and APIService of `objects` (server-side apply).
pub(crate) async fn apply_all(client: &Client, objects: &[serde_json::Value]) -> Result<(), Error> {
    let params = PatchParams::apply("qleetos-e2e").force();
    for object in objects {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        match object["kind"].as_str() {
            Some("Service") => {
                Api::<Service>::namespaced(client.clone(), "kube-system")
                    .patch(name, &params, &Patch::Apply(object))
                    .await?;
            }
            _ => {
                Api::<APIService>::all(client.clone())
                    .patch(name, &params, &Patch::Apply(object))
                    .await?;
            }
        }
    }
    Ok(())
}

/// Whether the aggregator reaches metrics-server: `v1beta1.metrics.k8s.io` is Available.
pub(crate) async fn metrics_api_available(client: &Client) -> Result<bool, Error> {
    let service = Api::<APIService>::all(client.clone())
        .get("v1beta1.metrics.k8s.io")
        .await?;
    Ok(service
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True"))
}

pub(crate) fn fake_node_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("kwok-node-{i}")).collect()
}

/// Creates untainted fake nodes that kwok manages (it makes them Ready).
pub(crate) async fn create_fake_nodes(client: &Client, names: &[String]) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    for name in names {
        nodes
            .create(&PostParams::default(), &fake_node(name))
            .await?;
        tracing::debug!(node = name, "created fake node");
    }
    Ok(())
}

/// Node annotation naming a node's resource-metrics path on its "kubelet" (kwok).
const RESOURCE_METRICS_PATH: &str = "metrics.k8s.io/resource-metrics-path";

/// An untainted Node that kwok makes Ready and keeps Ready.
pub(crate) fn fake_node(name: &str) -> Node {
    // Where metrics-server reads the node's resource metrics from kwok (clusters with metrics).
    let metrics_path = format!("/metrics/nodes/{name}/metrics/resource");
    let labels = [
        ("type", "kwok"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name),
    ];
    let resources: BTreeMap<String, Quantity> =
        [("cpu", "32"), ("memory", "256Gi"), ("pods", "110")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
            .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(to_map(&labels)),
            annotations: Some(to_map(&[
                KWOK_NODE_ANNOTATION,
                (RESOURCE_METRICS_PATH, &metrics_path),
            ])),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            ..NodeStatus::default()
        }),
    }
}

fn to_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
