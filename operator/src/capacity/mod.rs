//! Capacity (issue 28): the CPU and memory a workload requests (from its pod templates and
//! replica counts), what a runtime holds (from its nodes and pods), and what QleetOS has
//! committed to each runtime, for placement that fits, packs, spreads or prefers the
//! cheapest.

mod committed;
mod preferences;

pub use committed::{Commitments, Reservation};
pub use preferences::{Shaped, Shortfall, free_on, shape};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;
use qleetos_crds::{Manifest, Resources};
use serde_json::Value;

/// Kinds whose `spec.template` makes `spec.replicas` pods (1 when absent).
const REPLICATED: [&str; 3] = ["Deployment", "StatefulSet", "ReplicaSet"];

/// What `manifests` request: each pod template's containers times its replicas (an
/// autoscaled one at its autoscaler's `minReplicas`), and each Pod and Job's containers once.
pub fn request_of(manifests: &[Manifest]) -> Resources {
    manifests
        .iter()
        .map(|manifest| {
            let kind = manifest.kind().unwrap_or_default();
            let spec = manifest.0.get("spec");
            let pod_spec = match kind {
                "Pod" => spec,
                _ => spec.and_then(|s| s.pointer("/template/spec")),
            };
            let Some(pod_spec) = pod_spec else {
                return Resources::default();
            };
            let replicas = if REPLICATED.contains(&kind) {
                replicas_of(manifest, manifests)
            } else {
                1
            };
            times(pod_request(pod_spec), replicas)
        })
        .fold(Resources::default(), Resources::plus)
}

fn replicas_of(manifest: &Manifest, manifests: &[Manifest]) -> i64 {
    let scaled_by = manifests.iter().find(|m| {
        m.kind() == Some("HorizontalPodAutoscaler")
            && m.0
                .get("spec")
                .and_then(|s| s.pointer("/scaleTargetRef/name"))
                == manifest
                    .name()
                    .map(|n| Value::String(n.to_owned()))
                    .as_ref()
            && m.0
                .get("spec")
                .and_then(|s| s.pointer("/scaleTargetRef/kind"))
                == manifest
                    .kind()
                    .map(|k| Value::String(k.to_owned()))
                    .as_ref()
    });
    let replicas = match scaled_by {
        Some(hpa) => hpa.0.get("spec").and_then(|s| s.get("minReplicas")),
        None => manifest.0.get("spec").and_then(|s| s.get("replicas")),
    };
    replicas.and_then(Value::as_i64).unwrap_or(1).max(0)
}

fn times(resources: Resources, count: i64) -> Resources {
    Resources {
        cpu_millicores: resources.cpu_millicores.saturating_mul(count),
        memory_bytes: resources.memory_bytes.saturating_mul(count),
    }
}

/// A pod's request as the scheduler counts it: its containers' requests (a limit stands for
/// an absent request), or its largest init container's when that is more.
fn pod_request(pod_spec: &Value) -> Resources {
    let containers = |field: &str| -> Vec<Resources> {
        pod_spec
            .get(field)
            .and_then(Value::as_array)
            .map(|list| list.iter().map(container_request).collect())
            .unwrap_or_default()
    };
    let running = containers("containers")
        .into_iter()
        .fold(Resources::default(), Resources::plus);
    containers("initContainers")
        .into_iter()
        .fold(running, Resources::max)
}

fn container_request(container: &Value) -> Resources {
    let amount = |resource: &str| {
        let resources = container.get("resources");
        let of = |field: &str| {
            resources
                .and_then(|r| r.get(field))
                .and_then(|r| r.get(resource))
                .and_then(value_quantity)
        };
        of("requests").or_else(|| of("limits")).unwrap_or(0.0)
    };
    Resources {
        cpu_millicores: (amount("cpu") * 1000.0).round() as i64,
        memory_bytes: amount("memory").round() as i64,
    }
}

fn value_quantity(value: &Value) -> Option<f64> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    quantity(&Quantity(text))
}

fn quantity(quantity: &Quantity) -> Option<f64> {
    ParsedQuantity::try_from(quantity).ok()?.to_bytes_f64()
}

/// The sum of the nodes' allocatable CPU and memory.
pub fn allocatable(nodes: &[Node]) -> Resources {
    nodes
        .iter()
        .filter_map(|node| node.status.as_ref()?.allocatable.as_ref())
        .map(|allocatable| Resources {
            cpu_millicores: allocatable
                .get("cpu")
                .and_then(quantity)
                .map_or(0, |cpu| (cpu * 1000.0).round() as i64),
            memory_bytes: allocatable
                .get("memory")
                .and_then(quantity)
                .map_or(0, |memory| memory.round() as i64),
        })
        .fold(Resources::default(), Resources::plus)
}

/// The sum of the requests of `pods` that have not finished.
pub fn requested(pods: &[Pod]) -> Resources {
    pods.iter()
        .filter(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|pod| serde_json::to_value(pod.spec.as_ref()?).ok())
        .map(|spec| pod_request(&spec))
        .fold(Resources::default(), Resources::plus)
}

#[cfg(test)]
mod tests;
