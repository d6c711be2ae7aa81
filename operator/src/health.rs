//! Reads rollout health from workload controllers' status and sums it up. Pure.

use qleetos_crds::ResourceHealth;
use serde_json::Value;

/// Kinds whose rollout QleetOS waits for (group `apps`).
pub const WATCHED_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

/// Rollout health of a Deployment, StatefulSet or DaemonSet as read from the runtime; `None`
/// for any other object.
pub fn health_of(object: &Value) -> Option<ResourceHealth> {
    let api_version = object["apiVersion"].as_str()?;
    if !api_version.starts_with("apps/") {
        return None;
    }
    let kind = object["kind"].as_str()?;
    let counts = match kind {
        "Deployment" => replica_counts(object, "availableReplicas"),
        "StatefulSet" => replica_counts(object, "readyReplicas"),
        "DaemonSet" => daemon_counts(object),
        _ => return None,
    };
    let observed = int(&object["status"]["observedGeneration"]);
    let generation = int(&object["metadata"]["generation"]);
    let healthy = observed >= generation
        && counts.updated == counts.desired
        && counts.available == counts.desired
        && counts.total <= counts.desired;
    Some(ResourceHealth {
        kind: kind.to_owned(),
        namespace: object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        desired: counts.desired,
        updated: counts.updated,
        available: counts.available,
        healthy,
    })
}

struct Counts {
    desired: i64,
    updated: i64,
    available: i64,
    /// Pods of any revision; more than desired means old pods are still around.
    total: i64,
}

fn replica_counts(object: &Value, available_field: &str) -> Counts {
    let status = &object["status"];
    Counts {
        desired: object["spec"]["replicas"].as_i64().unwrap_or(1),
        updated: int(&status["updatedReplicas"]),
        available: int(&status[available_field]),
        total: int(&status["replicas"]),
    }
}

fn daemon_counts(object: &Value) -> Counts {
    let status = &object["status"];
    Counts {
        desired: int(&status["desiredNumberScheduled"]),
        updated: int(&status["updatedNumberScheduled"]),
        available: int(&status["numberAvailable"]),
        total: int(&status["currentNumberScheduled"]),
    }
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// A one-line description of what is not yet healthy, for conditions.
pub fn describe_unhealthy(health: &[ResourceHealth]) -> String {
    health
        .iter()
        .filter(|h| !h.healthy)
        .map(|h| {
            format!(
                "{} {}/{}: {}/{} updated, {}/{} available",
                h.kind, h.namespace, h.name, h.updated, h.desired, h.available, h.desired
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(replicas: i64, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "team", "generation": 2},
            "spec": {"replicas": replicas},
            "status": status
        })
    }

    #[test]
    fn deployment_rolled_out_is_healthy() {
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        let health = health_of(&d).expect("deployment");
        assert!(health.healthy);
        assert_eq!((health.desired, health.available), (2, 2));
    }

    #[test]
    fn deployment_with_old_pods_left_is_not_healthy() {
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert!(!health_of(&d).expect("deployment").healthy);
    }

    #[test]
    fn deployment_not_yet_observed_is_not_healthy() {
        let d = deployment(
            1,
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
        );
        assert!(!health_of(&d).expect("deployment").healthy);
    }

    #[test]
    fn statefulset_counts_ready_replicas() {
        let s = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "team", "generation": 1},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2}
        });
        let health = health_of(&s).expect("statefulset");
        assert!(!health.healthy);
        assert!(
            describe_unhealthy(&[health])
                .contains("StatefulSet team/db: 3/3 updated, 2/3 available")
        );
    }

    #[test]
    fn daemonset_uses_scheduled_numbers() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "team", "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                       "updatedNumberScheduled": 2, "numberAvailable": 2}
        });
        assert!(health_of(&d).expect("daemonset").healthy);
    }

    #[test]
    fn other_kinds_have_no_health() {
        assert!(
            health_of(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}))
                .is_none()
        );
    }
}
