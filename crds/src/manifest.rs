use std::borrow::Cow;
use std::collections::BTreeSet;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One Kubernetes object of any kind, embedded in a QleetOS resource and preserved as written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(transparent)]
pub struct Manifest(pub Map<String, Value>);

impl Manifest {
    pub fn api_version(&self) -> Option<&str> {
        self.0.get("apiVersion").and_then(Value::as_str)
    }

    pub fn kind(&self) -> Option<&str> {
        self.0.get("kind").and_then(Value::as_str)
    }

    pub fn name(&self) -> Option<&str> {
        self.metadata_str("name")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata_str("namespace")
    }

    fn metadata_str(&self, key: &str) -> Option<&str> {
        self.0.get("metadata")?.get(key)?.as_str()
    }
}

/// The fields holding containers in a pod spec, wherever a pod spec appears in an object.
pub const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Names of every container (and init or ephemeral container) of every pod template in
/// `manifests`, the names `images` keys can refer to.
pub fn container_names(manifests: &[Manifest]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for manifest in manifests {
        collect_container_names(&manifest.0, &mut names);
    }
    names
}

fn collect_container_names(object: &Map<String, Value>, names: &mut BTreeSet<String>) {
    for key in CONTAINER_LISTS {
        if let Some(Value::Array(containers)) = object.get(key) {
            let named = containers.iter().filter_map(|c| c.get("name")?.as_str());
            names.extend(named.map(str::to_owned));
        }
    }
    for value in object.values() {
        match value {
            Value::Object(child) => collect_container_names(child, names),
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_object)
                .for_each(|child| collect_container_names(child, names)),
            _ => {}
        }
    }
}

/// The `images` keys that name no container of any pod template in `manifests`: an override
/// for them would silently change nothing.
pub fn unmatched_image_keys<'a>(
    manifests: &[Manifest],
    image_keys: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let names = container_names(manifests);
    image_keys
        .into_iter()
        .filter(|key| !names.contains(*key))
        .cloned()
        .collect()
}

/// A one-line explanation of unmatched image keys, naming the containers that exist.
pub fn describe_unmatched_image_keys(manifests: &[Manifest], unmatched: &[String]) -> String {
    let names = container_names(manifests);
    let existing = if names.is_empty() {
        "the manifests have no pod template".to_owned()
    } else {
        format!(
            "containers are: {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    format!(
        "spec.images names no container of any pod template: {}; {existing}",
        unmatched.join(", ")
    )
}

/// CEL: the identity of manifest `m` as QleetOS applies it, `[kind, API group, namespace, name]`
/// (the version is not part of it: `policy/v1beta1` and `policy/v1` name the same object; an
/// absent namespace is the default one).
const IDENTITY: &str = "[has(m.kind) ? m.kind : '', \
    has(m.apiVersion) && m.apiVersion.contains('/') ? m.apiVersion.split('/')[0] : '', \
    has(m.metadata) && has(m.metadata.namespace) ? m.metadata.namespace : '', \
    has(m.metadata) && has(m.metadata.name) ? m.metadata.name : '']";

/// The rule that no object appears twice in one manifest list. The identities are computed once
/// (bound to `ids` by a one-element list) and compared as lists, which keeps the API server's
/// cost estimate for 200 manifests far below its limit.
fn unique_objects_rule() -> String {
    format!("[self.map(m, {IDENTITY})].all(ids, ids.all(id, ids.exists_one(other, other == id)))")
}

fn unique_objects_message() -> String {
    format!(
        "'{UNIQUE_OBJECTS_MESSAGE}; listed more than once: ' + [self.map(m, {IDENTITY})].map(ids, \
         ids.filter(id, ids.filter(other, other == id).size() > 1)[0])\
         .map(id, id[0] + (id[1] == '' ? '' : '.' + id[1]) + ' ' + (id[2] == '' ? '' : id[2] + '/') + id[3])[0]"
    )
}

/// What the API server answers when a list holds the same object twice (followed by the object).
pub const UNIQUE_OBJECTS_MESSAGE: &str = "rule unique-manifests: each object (kind, API group, namespace and name; the version in apiVersion does not count) may appear only once in manifests";

/// Schema of a list of up to 200 manifests (at least one unless a chart is the source) in which every object appears once (CEL).
pub(crate) fn manifest_list_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_MANIFESTS,
        "items": generator.subschema_for::<Manifest>(),
        "x-kubernetes-validations": [{
            "rule": unique_objects_rule(),
            "messageExpression": unique_objects_message(),
            "message": UNIQUE_OBJECTS_MESSAGE
        }]
    })
}

/// Most manifests one Workload or WorkloadInstance may hold.
pub const MAX_MANIFESTS: usize = 200;

impl JsonSchema for Manifest {
    fn schema_name() -> Cow<'static, str> {
        "Manifest".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // apiVersion, kind and metadata are declared with their Kubernetes length limits so that
        // CEL rules over a list of manifests can read them at a bounded cost.
        let limited = |description: &str, max: u32| json!({"type": "string", "maxLength": max, "description": description});
        json_schema!({
            "description": "A Kubernetes object of any kind (apiVersion, kind, metadata and the rest), applied to the runtime as written after image overrides.",
            "type": "object",
            "x-kubernetes-embedded-resource": true,
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": {
                "apiVersion": limited("`<group>/<version>`, or `v1` for the core group.", 317),
                "kind": limited("Kind of the object, e.g. `Deployment`.", 63),
                "metadata": {
                    "type": "object",
                    "description": "The object's metadata, kept as written (labels, annotations, ...).",
                    "properties": {
                        "name": limited("Name of the object.", 253),
                        "generateName": limited("Name prefix; QleetOS needs `name`.", 253),
                        "namespace": limited(
                            "Namespace in the runtime; absent means the namespace named like the Workload's.",
                            63
                        )
                    }
                }
            },
            "x-kubernetes-validations": [{
                "rule": "has(self.metadata.name) && self.metadata.name != ''",
                "message": "every manifest needs metadata.name"
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(value: Value) -> Manifest {
        serde_json::from_value(value).expect("manifest")
    }

    fn fixtures() -> Vec<Manifest> {
        vec![
            manifest(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"template": {"spec": {
                    "initContainers": [{"name": "migrate", "image": "m:1"}],
                    "containers": [{"name": "web", "image": "w:1"}, {"name": "proxy", "image": "p:1"}]
                }}}
            })),
            manifest(json!({
                "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
                "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                    "containers": [{"name": "report", "image": "r:1"}]
                }}}}}
            })),
            manifest(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "containers"},
                "data": {"containers": "not a list"}}),
            ),
        ]
    }

    #[test]
    fn container_names_cover_every_pod_template() {
        let names: Vec<String> = container_names(&fixtures()).into_iter().collect();
        assert_eq!(names, ["migrate", "proxy", "report", "web"]);
    }

    #[test]
    fn image_keys_naming_no_container_are_listed() {
        let keys = [
            "web".to_owned(),
            "wbe".to_owned(),
            "report".to_owned(),
            "db".to_owned(),
        ];
        let unmatched = unmatched_image_keys(&fixtures(), &keys);
        assert_eq!(unmatched, ["wbe", "db"]);
        let message = describe_unmatched_image_keys(&fixtures(), &unmatched);
        assert!(message.contains("pod template: wbe, db;"), "{message}");
        assert!(
            message.contains("containers are: migrate, proxy, report, web"),
            "{message}"
        );
    }

    #[test]
    fn manifests_without_pods_say_so() {
        let config = vec![fixtures().remove(2)];
        let unmatched = unmatched_image_keys(&config, &["web".to_owned()]);
        assert_eq!(unmatched, ["web"]);
        assert!(describe_unmatched_image_keys(&config, &unmatched).contains("no pod template"));
    }

    #[test]
    fn list_schema_carries_the_uniqueness_rule_and_bounds() {
        let schema = schemars::SchemaGenerator::default().into_root_schema_for::<Holder>();
        let list = &schema.as_value()["properties"]["manifests"];
        assert_eq!(list["maxItems"], 200);
        assert!(
            list.get("minItems").is_none(),
            "a chart may replace the manifests"
        );
        let rule = &list["x-kubernetes-validations"][0];
        assert!(
            rule["rule"]
                .as_str()
                .is_some_and(|r| r.contains("exists_one"))
        );
        assert!(
            rule["messageExpression"]
                .as_str()
                .is_some_and(|m| m.contains(UNIQUE_OBJECTS_MESSAGE))
        );
        assert_eq!(
            list["items"]["properties"]["metadata"]["properties"]["namespace"]["maxLength"],
            63
        );
    }

    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Holder {
        #[schemars(schema_with = "manifest_list_schema")]
        manifests: Vec<Manifest>,
    }
}
