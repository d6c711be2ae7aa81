//! Turns a WorkloadInstance's manifests into the objects to apply: image overrides and the
//! labels that mark QleetOS ownership. Pure: no client, no I/O.

use std::collections::BTreeMap;

use qleetos_crds::Manifest;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Label on every object QleetOS applies to a runtime.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "qleetos";
/// Label carrying the uid of the WorkloadInstance that applied the object.
pub const INSTANCE_UID_LABEL: &str = "qleetos.io/instance-uid";
/// Annotation carrying `<namespace>/<name>` of the WorkloadInstance that applied the object.
pub const INSTANCE_ANNOTATION: &str = "qleetos.io/instance";
/// Manifest annotation asking to take over an existing object QleetOS did not create (only
/// honoured where a TenantPolicy allows adoption).
pub const ADOPT_ANNOTATION: &str = "qleetos.io/adopt";

/// The field manager of one instance's server-side applies, so two owners' overlapping
/// fields surface as conflicts instead of silently changing hands.
pub fn field_manager(instance_uid: &str) -> String {
    format!("qleetos-{instance_uid}")
}

/// Who owns the rendered objects.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// Renders every manifest, failing on the first one that is not a Kubernetes object.
/// Workloads scaled by a HorizontalPodAutoscaler of the same manifests lose `spec.replicas`,
/// so applying them never scales back what the autoscaler chose.
pub fn render(
    manifests: &[Manifest],
    images: &BTreeMap<String, String>,
    owner: &Owner<'_>,
) -> Result<Vec<Manifest>> {
    let mut rendered = manifests
        .iter()
        .enumerate()
        .map(|(index, manifest)| render_one(index, manifest, images, owner))
        .collect::<Result<Vec<_>>>()?;
    let autoscaled = autoscaled_targets(&rendered);
    for manifest in &mut rendered {
        let key = (
            manifest.kind().unwrap_or_default().to_owned(),
            manifest.name().unwrap_or_default().to_owned(),
            manifest.namespace().map(str::to_owned),
        );
        if autoscaled.contains(&key)
            && let Some(Value::Object(spec)) = manifest.0.get_mut("spec")
        {
            spec.remove("replicas");
        }
    }
    Ok(rendered)
}

/// (kind, name, namespace) of every object a HorizontalPodAutoscaler among `manifests` scales.
fn autoscaled_targets(manifests: &[Manifest]) -> Vec<(String, String, Option<String>)> {
    manifests
        .iter()
        .filter(|m| m.kind() == Some("HorizontalPodAutoscaler"))
        .filter_map(|hpa| {
            let target = hpa.0.get("spec")?.get("scaleTargetRef")?;
            Some((
                target.get("kind")?.as_str()?.to_owned(),
                target.get("name")?.as_str()?.to_owned(),
                hpa.namespace().map(str::to_owned),
            ))
        })
        .collect()
}

fn render_one(
    index: usize,
    manifest: &Manifest,
    images: &BTreeMap<String, String>,
    owner: &Owner<'_>,
) -> Result<Manifest> {
    for (field, value) in [
        ("apiVersion", manifest.api_version()),
        ("kind", manifest.kind()),
        ("metadata.name", manifest.name()),
    ] {
        if value.is_none_or(str::is_empty) {
            return Err(Error::invalid_manifest(
                index,
                manifest,
                &format!("{field} is required"),
            ));
        }
    }
    let mut object = manifest.0.clone();
    override_images(&mut object, images);
    mark_owned(&mut object, owner);
    Ok(Manifest(object))
}

/// Sets the image of every container named in `images`, wherever a pod spec appears in the
/// object (Deployments, StatefulSets, Jobs, CronJobs, Pods, and custom kinds embedding pods).
pub fn override_images(object: &mut Map<String, Value>, images: &BTreeMap<String, String>) {
    if images.is_empty() {
        return;
    }
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(containers)) = object.get_mut(key) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                let name = container.get("name").and_then(Value::as_str);
                if let Some(image) = name.and_then(|n| images.get(n)) {
                    container.insert("image".into(), Value::String(image.clone()));
                }
            }
        }
    }
    for value in object.values_mut() {
        match value {
            Value::Object(child) => override_images(child, images),
            Value::Array(items) => items
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .for_each(|child| override_images(child, images)),
            _ => {}
        }
    }
}

fn mark_owned(object: &mut Map<String, Value>, owner: &Owner<'_>) {
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    insert_string(metadata, "labels", MANAGED_BY_LABEL, MANAGED_BY_VALUE);
    insert_string(metadata, "labels", INSTANCE_UID_LABEL, owner.uid);
    let instance = format!("{}/{}", owner.namespace, owner.name);
    insert_string(metadata, "annotations", INSTANCE_ANNOTATION, &instance);
}

fn insert_string(metadata: &mut Map<String, Value>, map: &str, key: &str, value: &str) {
    let entry = metadata
        .entry(map)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Some(entries) = entry.as_object_mut() {
        entries.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn manifest(value: Value) -> Manifest {
        match value {
            Value::Object(map) => Manifest(map),
            other => panic!("not an object: {other}"),
        }
    }

    fn owner() -> Owner<'static> {
        Owner {
            namespace: "team-a",
            name: "web-eu",
            uid: "1234",
        }
    }

    fn deployment() -> Manifest {
        manifest(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"template": {"spec": {
                "initContainers": [{"name": "migrate", "image": "db:1"}],
                "containers": [{"name": "web", "image": "web:1"}, {"name": "sidecar", "image": "side:1"}]
            }}}
        }))
    }

    #[test]
    fn overrides_only_named_containers_including_init_containers() {
        let images = BTreeMap::from([
            ("web".into(), "web:2".into()),
            ("migrate".into(), "db:2".into()),
        ]);
        let rendered = render(&[deployment()], &images, &owner()).expect("renders");
        let pod = &rendered[0].0["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "web:2");
        assert_eq!(pod["containers"][1]["image"], "side:1");
        assert_eq!(pod["initContainers"][0]["image"], "db:2");
    }

    #[test]
    fn overrides_images_in_cronjob_job_templates() {
        let cron = manifest(json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "tick", "image": "t:1"}]}}}}}
        }));
        let images = BTreeMap::from([("tick".into(), "t:9".into())]);
        let rendered = render(&[cron], &images, &owner()).expect("renders");
        assert_eq!(
            rendered[0].0["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
            "t:9"
        );
    }

    #[test]
    fn marks_ownership_and_keeps_user_labels() {
        let rendered = render(&[deployment()], &BTreeMap::new(), &owner()).expect("renders");
        let metadata = &rendered[0].0["metadata"];
        assert_eq!(metadata["labels"]["app"], "web");
        assert_eq!(metadata["labels"][MANAGED_BY_LABEL], MANAGED_BY_VALUE);
        assert_eq!(metadata["labels"][INSTANCE_UID_LABEL], "1234");
        assert_eq!(
            metadata["annotations"][INSTANCE_ANNOTATION],
            "team-a/web-eu"
        );
    }

    #[test]
    fn autoscaled_workloads_lose_their_replicas() {
        let mut scaled = deployment();
        scaled.0["spec"]["replicas"] = json!(3);
        let hpa = manifest(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5}
        }));
        let rendered = render(&[scaled.clone(), hpa], &BTreeMap::new(), &owner()).expect("renders");
        assert!(rendered[0].0["spec"].get("replicas").is_none());
        let alone = render(&[scaled], &BTreeMap::new(), &owner()).expect("renders");
        assert_eq!(alone[0].0["spec"]["replicas"], 3);
    }

    #[test]
    fn rejects_manifest_without_kind_naming_its_index() {
        let bad = manifest(json!({"apiVersion": "v1", "metadata": {"name": "x"}}));
        let error = render(&[deployment(), bad], &BTreeMap::new(), &owner()).expect_err("invalid");
        assert_eq!(error.reason().as_str(), "InvalidManifest");
        assert!(error.to_string().contains("#1"), "{error}");
        assert!(error.to_string().contains("kind is required"), "{error}");
    }
}
