//! Reads rollout health from workload controllers' status and sums it up, including why a
//! rollout cannot progress (the controller's failure conditions, pod-level errors). Pure but
//! for [`add_pod_failure`], which lists a workload's pods.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
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
    let (reason, message) = match failure_of(object) {
        Some(failure) if !healthy => (Some(failure.reason), Some(failure.message)),
        _ => (None, None),
    };
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
        reason,
        message,
    })
}

/// Why a rollout cannot progress, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

/// Container waiting reasons that mean the pod will not start without a change.
pub const FAILING_WAIT_REASONS: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The controller's failure conditions: `ReplicaFailure` (or any `...Failure` condition that is
/// True) and `Progressing=False` with `ProgressDeadlineExceeded`, joined in one failure named
/// after the first.
pub fn failure_of(object: &Value) -> Option<Failure> {
    let conditions = object["status"]["conditions"].as_array()?;
    let failures: Vec<Failure> = conditions.iter().filter_map(failed_condition).collect();
    let first = failures.first()?.reason.clone();
    let message = failures
        .iter()
        .map(|f| f.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Some(Failure {
        reason: first,
        message,
    })
}

fn failed_condition(condition: &Value) -> Option<Failure> {
    let type_ = condition["type"].as_str()?;
    let status = condition["status"].as_str()?;
    let reason = condition["reason"].as_str().unwrap_or_default();
    let failed = (type_.ends_with("Failure") && status == "True")
        || (type_ == "Progressing" && status == "False" && reason == "ProgressDeadlineExceeded");
    if !failed {
        return None;
    }
    let name = if type_ == "Progressing" {
        reason
    } else {
        type_
    };
    let detail = condition["message"].as_str().unwrap_or_default();
    Some(Failure {
        reason: name.to_owned(),
        message: format!("{name} ({reason}): {detail}"),
    })
}

/// The first container of `pod` waiting for a reason that needs a change to clear, e.g. an
/// image that cannot be pulled or a container that keeps crashing.
pub fn pod_failure(pod: &Value) -> Option<Failure> {
    let status = &pod["status"];
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|key| status[*key].as_array())
        .flatten()
        .find_map(|container| {
            let waiting = &container["state"]["waiting"];
            let reason = waiting["reason"].as_str()?;
            if !FAILING_WAIT_REASONS.contains(&reason) {
                return None;
            }
            let container_name = container["name"].as_str().unwrap_or_default();
            let detail = waiting["message"].as_str().unwrap_or_default();
            Some(Failure {
                reason: reason.to_owned(),
                message: format!("pod {name} container {container_name}: {reason}: {detail}")
                    .trim_end_matches([' ', ':'])
                    .to_owned(),
            })
        })
}

/// The label selector of a workload controller (`spec.selector`) in list-query syntax.
pub fn selector_query(object: &Value) -> Option<String> {
    let selector = &object["spec"]["selector"];
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| Some(format!("{key}={}", value.as_str()?)))
        .collect();
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = expression["key"].as_str()?;
        let values: Vec<&str> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match expression["operator"].as_str()? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    (!terms.is_empty()).then(|| terms.join(","))
}

/// When `health` is not healthy and its controller reports no failure, looks at its pods and
/// records the first pod-level error. Listing failures are only logged: pods are a hint.
pub async fn add_pod_failure(client: &kube::Client, live: &Value, health: &mut ResourceHealth) {
    if health.healthy || health.reason.is_some() {
        return;
    }
    let Some(selector) = selector_query(live) else {
        return;
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &health.namespace);
    let listed = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(listed) => listed,
        Err(error) => {
            tracing::debug!(%error, workload = %health.name, "could not list pods");
            return;
        }
    };
    let failure = listed
        .items
        .iter()
        .filter_map(|pod| serde_json::to_value(pod).ok())
        .find_map(|pod| pod_failure(&pod));
    if let Some(failure) = failure {
        health.reason = Some(failure.reason);
        health.message = Some(failure.message);
    }
}

/// A one-line description of the rollouts that cannot progress, or `None` when none reports a
/// failure.
pub fn describe_failures(health: &[ResourceHealth]) -> Option<String> {
    let failures: Vec<String> = health
        .iter()
        .filter(|h| !h.healthy && h.reason.is_some())
        .map(|h| {
            format!(
                "{} {}/{}: {}",
                h.kind,
                h.namespace,
                h.name,
                h.message.as_deref().unwrap_or_default()
            )
        })
        .collect();
    (!failures.is_empty()).then(|| failures.join("; "))
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
            let object = if h.namespace.is_empty() {
                format!("{} {}", h.kind, h.name)
            } else {
                format!("{} {}/{}", h.kind, h.namespace, h.name)
            };
            match (&h.reason, &h.message) {
                (None, Some(waiting)) => format!("{object}: {waiting}"),
                _ => format!(
                    "{object}: {}/{} updated, {}/{} available",
                    h.updated, h.desired, h.available, h.desired
                ),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How many of the objects judged are healthy, by kind: `2/3 Deployments available`.
pub fn summarize(health: &[ResourceHealth]) -> String {
    let mut kinds: Vec<&str> = health.iter().map(|h| h.kind.as_str()).collect();
    kinds.dedup();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
        .iter()
        .map(|kind| {
            let of_kind: Vec<&ResourceHealth> = health.iter().filter(|h| h.kind == *kind).collect();
            let ready = of_kind.iter().filter(|h| h.healthy).count();
            format!("{ready}/{} {kind}s ready", of_kind.len())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The health of an object judged by one of its conditions (e.g. a Certificate's `Ready`).
pub fn condition_health(live: &Value, check: &qleetos_crds::HealthCheck) -> ResourceHealth {
    let conditions = live["status"]["conditions"].as_array();
    let condition = conditions
        .into_iter()
        .flatten()
        .find(|c| c["type"].as_str() == Some(check.type_.as_str()));
    let healthy = condition.is_some_and(|c| c["status"].as_str() == Some("True"));
    let message = match condition {
        _ if healthy => None,
        Some(c) => Some(format!(
            "{} is {} ({})",
            check.type_,
            c["status"].as_str().unwrap_or("Unknown"),
            c["message"].as_str().unwrap_or_default()
        )),
        None => Some(format!("no {} condition yet", check.type_)),
    };
    ResourceHealth {
        kind: check.kind.clone(),
        namespace: check.namespace.clone().unwrap_or_default(),
        name: check.name.clone(),
        desired: 1,
        updated: 1,
        available: i64::from(healthy),
        healthy,
        reason: None,
        message,
    }
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
    fn replica_failure_is_read_from_the_deployment() {
        let d = deployment(
            1,
            json!({"observedGeneration": 2, "replicas": 0, "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "no"},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": "updating"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "pods \"web-1\" is forbidden: image must not have leading or trailing whitespace"}
            ]}),
        );
        let health = health_of(&d).expect("deployment");
        assert!(!health.healthy);
        assert_eq!(health.reason.as_deref(), Some("ReplicaFailure"));
        let described = describe_failures(&[health]).expect("a failure");
        assert!(
            described
                .starts_with("Deployment team/web: ReplicaFailure (FailedCreate): pods \"web-1\""),
            "{described}"
        );
    }

    #[test]
    fn progress_deadline_exceeded_is_a_failure() {
        let d = deployment(
            1,
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": "ReplicaSet \"web-1\" has timed out progressing."}
            ]}),
        );
        let health = health_of(&d).expect("deployment");
        assert_eq!(health.reason.as_deref(), Some("ProgressDeadlineExceeded"));
        assert!(
            health
                .message
                .as_deref()
                .is_some_and(|m| m.contains("has timed out progressing"))
        );
    }

    #[test]
    fn a_progressing_or_healthy_rollout_reports_no_failure() {
        let progressing = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
                   "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}),
        );
        let health = health_of(&progressing).expect("deployment");
        assert_eq!(health.reason, None);
        assert_eq!(describe_failures(&[health]), None);
        let stale_failure = deployment(
            1,
            json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                   "conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"}]}),
        );
        assert_eq!(health_of(&stale_failure).expect("deployment").reason, None);
    }

    #[test]
    fn pod_level_errors_are_found_in_container_statuses() {
        let pod = json!({
            "metadata": {"name": "web-abc"},
            "status": {
                "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0}}}],
                "containerStatuses": [
                    {"name": "sidecar", "state": {"waiting": {"reason": "ContainerCreating"}}},
                    {"name": "web", "state": {"waiting": {"reason": "ImagePullBackOff",
                     "message": "Back-off pulling image \"nginx:nope\""}}}
                ]
            }
        });
        let failure = pod_failure(&pod).expect("a pod failure");
        assert_eq!(failure.reason, "ImagePullBackOff");
        assert_eq!(
            failure.message,
            "pod web-abc container web: ImagePullBackOff: Back-off pulling image \"nginx:nope\""
        );
        let crashing_init = json!({"metadata": {"name": "p"}, "status": {"initContainerStatuses": [
            {"name": "migrate", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(
            pod_failure(&crashing_init).expect("failure").message,
            "pod p container migrate: CrashLoopBackOff"
        );
        let starting = json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [
            {"name": "web", "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_failure(&starting), None);
    }

    #[test]
    fn selectors_become_list_queries() {
        let d = json!({"spec": {"selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }}});
        assert_eq!(
            selector_query(&d).as_deref(),
            Some("app=web,tier in (a,b),!canary")
        );
        assert_eq!(selector_query(&json!({"spec": {}})), None);
    }

    #[test]
    fn other_kinds_have_no_health() {
        assert!(
            health_of(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}))
                .is_none()
        );
    }
}
