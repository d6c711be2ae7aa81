use k8s_openapi::api::core::v1::{Node, Pod};
use qleetos_crds::{Manifest, Resources};
use serde_json::json;

use super::*;

fn manifests(list: serde_json::Value) -> Vec<Manifest> {
    serde_json::from_value(list).unwrap_or_else(|e| panic!("{e}"))
}

fn container(cpu: &str, memory: &str) -> serde_json::Value {
    json!({"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu, "memory": memory}}})
}

#[test]
fn a_workload_requests_its_pod_templates_times_their_replicas() {
    let web = manifests(json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"replicas": 3, "template": {"spec": {"containers": [
             container("250m", "128Mi"), container("0.5", "64Mi")]}}}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
         "spec": {"template": {"spec": {"containers": [
             {"name": "m", "image": "x", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
    ]));
    assert_eq!(
        request_of(&web),
        Resources {
            cpu_millicores: 3 * 750 + 1000,
            memory_bytes: 3 * 192 * (1 << 20) + (1 << 30),
        }
    );
}

#[test]
fn an_autoscaled_template_counts_at_its_minimum_and_init_containers_at_their_largest() {
    let scaled = manifests(json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"template": {"spec": {
             "initContainers": [container("2", "1Gi")],
             "containers": [container("1", "2Gi")]}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": "web"},
         "spec": {"minReplicas": 2, "maxReplicas": 5,
                  "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}},
    ]));
    // Per pod: CPU 2 (the init container), memory 2Gi (the container).
    assert_eq!(
        request_of(&scaled),
        Resources {
            cpu_millicores: 4000,
            memory_bytes: 4 << 30,
        }
    );
}

#[test]
fn a_runtime_holds_its_nodes_allocatable_and_its_unfinished_pods_requests() {
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}}}))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        allocatable(&[node.clone(), node]),
        Resources {
            cpu_millicores: 64_000,
            memory_bytes: 512 << 30,
        }
    );
    let pod = |phase: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [container("100m", "1Mi")]}, "status": {"phase": phase}}))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        requested(&[pod("Running"), pod("Pending"), pod("Succeeded")]),
        Resources {
            cpu_millicores: 200,
            memory_bytes: 2 << 20,
        }
    );
}
