//! A Helm chart as the source of a Workload's or a profile's objects, and what QleetOS
//! resolved and rendered from it. QleetOS renders the chart for each runtime itself (with
//! that runtime's Kubernetes version and API versions) and applies the result with its own
//! applier, as it applies plain manifests: there is no Helm release in the runtime.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a chart comes from, which version, and the values it is rendered with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.repository.startsWith('https://') || self.repository.startsWith('http://') || self.repository.startsWith('oci://')").message("repository must be an https:// (or http://) chart repository or an oci:// registry reference"))]
#[x_kube(validation = Rule::new("!has(self.plainHttp) || !self.plainHttp || self.repository.startsWith('oci://')").message("plainHttp applies to oci:// registries only: a classic repository's URL scheme says how it is reached"))]
#[x_kube(validation = Rule::new("!has(self.plainHttp) || !self.plainHttp || !has(self.credentialsSecret)").message("credentials are never sent over plain HTTP: drop plainHttp or credentialsSecret"))]
#[serde(rename_all = "camelCase")]
pub struct Chart {
    /// A classic chart repository (`https://charts.example.com/stable`, serving `index.yaml`)
    /// or an OCI registry path (`oci://registry.example.com/charts`; the chart is
    /// `<path>/<name>`).
    #[schemars(length(min = 1, max = 512))]
    pub repository: String,
    /// The chart's name in the repository, e.g. `external-dns`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The exact version, e.g. `1.20.0`. With `versionRange: true`, a semver range
    /// (`~1.20`, `>=1.2.0 <2.0.0`) resolved to the newest matching version of a classic
    /// repository; the version chosen is recorded in status.
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
    /// Whether `version` is a range. Default false: a range must be asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub version_range: bool,
    /// `.Release.Name` in the templates; default: the name of the object that uses the chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 53),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub release_name: Option<String>,
    /// Values, as in a values file. In profiles, string values may use the profile's
    /// `$(...)` variables, replaced per runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "values_schema")]
    pub values: Option<Map<String, Value>>,
    /// Image key → where its image goes in the values. A Workload's `images` (and the CI
    /// image hook) set these keys; each path is dotted, e.g. `image.tag`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 32))]
    pub images: BTreeMap<String, ImageValues>,
    /// A Secret in QleetOS's system namespace with `username` and `password` for a private
    /// repository. Its `repository` key must equal `repository`: the credentials are sent
    /// there and nowhere else. A Workload may use it only when the Secret's annotation
    /// `qleetos.io/chart-namespaces` lists the Workload's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// Reach the `oci://` registry over plain HTTP instead of TLS (`helm pull --plain-http`),
    /// for a registry on a private network; never with `credentialsSecret`. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain_http: bool,
}

/// Where one image goes in a chart's values: the whole reference, or its repository and tag.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.reference) != (has(self.repository) || has(self.tag))").message("set either reference, or repository and/or tag"))]
#[serde(rename_all = "camelCase")]
pub struct ImageValues {
    /// Path of a value taking the whole reference, e.g. `image` for `registry/web:2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = VALUE_PATH))]
    pub reference: Option<String>,
    /// Path of a value taking the reference without its tag, e.g. `image.repository`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = VALUE_PATH))]
    pub repository: Option<String>,
    /// Path of a value taking the tag (or `@digest`), e.g. `image.tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = VALUE_PATH))]
    pub tag: Option<String>,
}

/// Exactly one source of objects: a non-empty `manifests` or a `chart`.
pub const ONE_SOURCE_RULE: &str =
    "has(self.chart) != (has(self.manifests) && size(self.manifests) > 0)";
pub const ONE_SOURCE_MESSAGE: &str = "set either manifests (one or more) or chart, not both";

/// With a chart, every `images` key must name an entry of `chart.images`.
pub const CHART_IMAGES_RULE: &str = "!has(self.chart) || !has(self.images) || self.images.all(k, has(self.chart.images) && k in self.chart.images)";
pub const CHART_IMAGES_MESSAGE: &str = "with a chart, each images key must name an entry of chart.images (where its image goes in the values)";

/// A dotted path of value keys.
const VALUE_PATH: &str = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$";

/// What QleetOS resolved and rendered from a chart for one runtime.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChartStatus {
    /// The chart's name.
    pub name: String,
    /// The version rendered (the resolved one when `version` is a range).
    pub version: String,
    /// `sha256:` digest of the chart archive rendered.
    pub digest: String,
    /// How many objects the chart rendered (hooks QleetOS honours included).
    pub objects: i64,
    /// The hosts the rendered objects name (Ingress rules, certificates, DNS records...): a
    /// charted Workload's claim on them, as a Workload's manifests make theirs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

fn values_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Values, as in a values file.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl Chart {
    /// The values with every image of `images` written where `self.images` says; keys of
    /// `images` that name no entry are ignored (admission rejects them).
    pub fn values_with_images(&self, images: &BTreeMap<String, String>) -> Map<String, Value> {
        let mut values = self.values.clone().unwrap_or_default();
        for (key, image) in images {
            let Some(paths) = self.images.get(key) else {
                continue;
            };
            let (repository, tag) = split_image(image);
            if let Some(path) = &paths.reference {
                set_path(&mut values, path, image);
            }
            if let Some(path) = &paths.repository {
                set_path(&mut values, path, repository);
            }
            if let (Some(path), Some(tag)) = (&paths.tag, tag) {
                set_path(&mut values, path, tag);
            }
        }
        values
    }
}

/// `registry:5000/web:2` → (`registry:5000/web`, `2`); `web@sha256:…` → (`web`, `@sha256:…`).
pub fn split_image(image: &str) -> (&str, Option<&str>) {
    if let Some(at) = image.find('@') {
        return (&image[..at], Some(&image[at..]));
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => {
            let split = last_slash + colon;
            (&image[..split], Some(&image[split + 1..]))
        }
        None => (image, None),
    }
}

fn set_path(values: &mut Map<String, Value>, path: &str, value: &str) {
    let mut keys = path.split('.').peekable();
    let mut node = values;
    while let Some(key) = keys.next() {
        if keys.peek().is_none() {
            node.insert(key.to_owned(), Value::String(value.to_owned()));
            return;
        }
        let child = node
            .entry(key.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(child) = child else {
            return;
        };
        node = child;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chart(values: Value, images: Value) -> Chart {
        serde_json::from_value(json!({
            "repository": "https://charts.example.com", "name": "web", "version": "1.0.0",
            "values": values, "images": images
        }))
        .expect("chart")
    }

    #[test]
    fn images_go_to_their_value_paths() {
        let chart = chart(
            json!({"image": {"repository": "old", "tag": "1", "pullPolicy": "Always"}, "sidecar": "s:1"}),
            json!({"web": {"repository": "image.repository", "tag": "image.tag"}, "side": {"reference": "sidecar"}}),
        );
        let images = BTreeMap::from([
            ("web".to_owned(), "registry:5000/team/web:2.1".to_owned()),
            ("side".to_owned(), "s:2".to_owned()),
            ("unknown".to_owned(), "x:1".to_owned()),
        ]);
        let values = Value::Object(chart.values_with_images(&images));
        assert_eq!(
            values,
            json!({"image": {"repository": "registry:5000/team/web", "tag": "2.1", "pullPolicy": "Always"}, "sidecar": "s:2"})
        );
    }

    #[test]
    fn paths_are_created_and_scalars_replaced() {
        let chart = chart(
            json!({"image": "flat"}),
            json!({"web": {"tag": "image.tag"}}),
        );
        let images = BTreeMap::from([("web".to_owned(), "web@sha256:abc".to_owned())]);
        let values = Value::Object(chart.values_with_images(&images));
        assert_eq!(values, json!({"image": {"tag": "@sha256:abc"}}));
    }

    #[test]
    fn image_references_split_at_the_tag_not_the_registry_port() {
        assert_eq!(
            split_image("registry:5000/web"),
            ("registry:5000/web", None)
        );
        assert_eq!(split_image("web:1"), ("web", Some("1")));
        assert_eq!(split_image("a/b@sha256:0"), ("a/b", Some("@sha256:0")));
    }
}
