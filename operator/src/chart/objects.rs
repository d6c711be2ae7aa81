//! From `helm template`'s output to manifests in apply order, with the Helm hooks QleetOS
//! honours: `pre-install`/`pre-upgrade` hooks are applied before the chart's other objects and
//! `post-install`/`post-upgrade` hooks after them, each in `helm.sh/hook-weight` order; test,
//! delete and rollback hooks are left out (QleetOS has no release to test, delete or roll
//! back: removal is its own ordered teardown).

use qleetos_crds::{Chart, Manifest};
use serde::Deserialize;
use serde_json::Value;

use super::not_rendered;
use crate::error::Result;

const HOOK_ANNOTATION: &str = "helm.sh/hook";
const HOOK_WEIGHT_ANNOTATION: &str = "helm.sh/hook-weight";

/// When an object is applied relative to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Namespaces and CRDs: what everything else needs served first.
    Foundation,
    PreHook,
    Main,
    PostHook,
}

/// The rendered objects in apply order, without the hooks QleetOS does not run.
pub fn in_apply_order(chart: &Chart, rendered: &str) -> Result<Vec<Manifest>> {
    let mut objects = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(rendered).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| not_rendered(chart, format!("document #{index} is not YAML: {e}")))?;
        let Value::Object(object) = value else {
            continue;
        };
        let manifest = Manifest(object);
        if manifest.kind().is_none() || manifest.api_version().is_none() {
            return Err(not_rendered(
                chart,
                format!("document #{index} is not a Kubernetes object (no apiVersion or kind)"),
            ));
        }
        if let Some(phase) = phase_of(&manifest) {
            objects.push((
                phase,
                weight_of(&manifest),
                install_rank(manifest.kind().unwrap_or_default()),
                objects.len(),
                manifest,
            ));
        }
    }
    objects.sort_by_key(|(phase, weight, rank, position, _)| (*phase, *weight, *rank, *position));
    Ok(objects.into_iter().map(|(.., manifest)| manifest).collect())
}

fn annotation<'a>(manifest: &'a Manifest, key: &str) -> Option<&'a str> {
    manifest
        .0
        .get("metadata")?
        .get("annotations")?
        .get(key)?
        .as_str()
}

/// The phase of an object; `None` for hooks QleetOS does not run.
fn phase_of(manifest: &Manifest) -> Option<Phase> {
    let Some(hooks) = annotation(manifest, HOOK_ANNOTATION) else {
        return Some(match manifest.kind() {
            Some("Namespace" | "CustomResourceDefinition") => Phase::Foundation,
            _ => Phase::Main,
        });
    };
    let hooks: Vec<&str> = hooks.split(',').map(str::trim).collect();
    if hooks
        .iter()
        .any(|h| matches!(*h, "pre-install" | "pre-upgrade"))
    {
        Some(Phase::PreHook)
    } else if hooks
        .iter()
        .any(|h| matches!(*h, "post-install" | "post-upgrade"))
    {
        Some(Phase::PostHook)
    } else {
        None
    }
}

/// Whether the applier waits for `manifest` to complete before what follows it: a Job that is
/// a pre/post install or upgrade hook.
pub fn is_awaited_hook(manifest: &Manifest) -> bool {
    manifest.kind() == Some("Job")
        && annotation(manifest, HOOK_ANNOTATION).is_some()
        && matches!(phase_of(manifest), Some(Phase::PreHook | Phase::PostHook))
}

fn weight_of(manifest: &Manifest) -> i64 {
    annotation(manifest, HOOK_WEIGHT_ANNOTATION)
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0)
}

/// Helm's install order of kinds: what others refer to comes first; other kinds last.
fn install_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicationController",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "IngressClass",
        "Ingress",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chart() -> Chart {
        serde_json::from_value(
            json!({"repository": "https://r", "name": "web", "version": "1.0.0"}),
        )
        .expect("chart")
    }

    const RENDERED: &str = r#"---
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-test
  annotations: {helm.sh/hook: test}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations: {"helm.sh/hook": "pre-install,pre-upgrade", "helm.sh/hook-weight": "5"}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: schema
  annotations: {"helm.sh/hook": "pre-install", "helm.sh/hook-weight": "-1"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cleanup
  annotations: {helm.sh/hook: pre-delete}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: notify
  annotations: {helm.sh/hook: post-install}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
apiVersion: v1
kind: Service
metadata: {name: web}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
"#;

    fn names(manifests: &[Manifest]) -> Vec<&str> {
        manifests
            .iter()
            .map(|m| m.name().unwrap_or_default())
            .collect()
    }

    #[test]
    fn crds_first_then_pre_hooks_by_weight_then_install_order_then_post_hooks() {
        let manifests = in_apply_order(&chart(), RENDERED).expect("parsed");
        assert_eq!(
            names(&manifests),
            [
                "widgets.example.com",
                "schema",
                "migrate",
                "web",
                "web",
                "w",
                "notify"
            ]
        );
        assert_eq!(manifests[3].kind(), Some("Service"));
        assert_eq!(manifests[4].kind(), Some("Deployment"));
    }

    #[test]
    fn install_and_upgrade_hook_jobs_are_awaited_and_nothing_else() {
        let manifests = in_apply_order(&chart(), RENDERED).expect("parsed");
        let awaited: Vec<&str> = manifests
            .iter()
            .filter(|m| is_awaited_hook(m))
            .map(|m| m.name().unwrap_or_default())
            .collect();
        assert_eq!(awaited, ["schema", "migrate", "notify"]);
    }

    #[test]
    fn a_document_that_is_not_an_object_of_kubernetes_is_an_error() {
        let error = in_apply_order(&chart(), "---\napiVersion: v1\nkind: A\n---\nfoo: bar\n")
            .expect_err("invalid");
        assert_eq!(error.reason().as_str(), "ChartRenderFailed");
        assert!(error.to_string().contains("document #1"), "{error}");
    }
}
