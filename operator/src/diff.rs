//! The fields that differ between a live object and what an apply would make of it, as a plan
//! shows them: server-maintained metadata and `status` left out, a Secret's values redacted.

use qleetos_crds::FieldChange;
use qleetos_crds::plan::REDACTED;
use serde_json::{Map, Value};

/// At most this many changes are listed per object; the last entry says how many more.
const MAX_CHANGES: usize = 40;
/// A value longer than this is cut, with `…`.
const MAX_VALUE: usize = 200;
/// Metadata the API server maintains: it changes on every write, not by the manifest.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "uid",
    "selfLink",
];

/// The changed fields from `before` to `after` (both whole objects), in path order.
pub fn changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    let secret = after.get("kind").and_then(Value::as_str) == Some("Secret");
    let mut found = Vec::new();
    let (before, after) = (comparable(before), comparable(after));
    walk("", &before, &after, &mut found);
    let mut changes: Vec<FieldChange> = found
        .into_iter()
        .map(|(path, b, a)| {
            let hidden = secret && is_secret_value(&path);
            FieldChange {
                before: b.map(|v| shown(v, hidden)),
                after: a.map(|v| shown(v, hidden)),
                path,
            }
        })
        .collect();
    if changes.len() > MAX_CHANGES {
        let more = changes.len() - MAX_CHANGES;
        changes.truncate(MAX_CHANGES);
        changes.push(FieldChange {
            path: format!("… and {more} more field(s)"),
            before: None,
            after: None,
        });
    }
    changes
}

/// The object without `status` and server-maintained metadata.
fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in SERVER_METADATA {
                metadata.remove(*key);
            }
        }
    }
    object
}

type Found<'a> = Vec<(String, Option<&'a Value>, Option<&'a Value>)>;

fn walk<'a>(path: &str, before: &'a Value, after: &'a Value, found: &mut Found<'a>) {
    if before == after {
        return;
    }
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => walk_maps(path, b, a, found),
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() => {
            for (index, (b, a)) in b.iter().zip(a).enumerate() {
                walk(&format!("{path}[{index}]"), b, a, found);
            }
        }
        _ => found.push((path.to_owned(), Some(before), Some(after))),
    }
}

fn walk_maps<'a>(
    path: &str,
    before: &'a Map<String, Value>,
    after: &'a Map<String, Value>,
    found: &mut Found<'a>,
) {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let child = join(path, key);
        match (before.get(key), after.get(key)) {
            (Some(b), Some(a)) => walk(&child, b, a, found),
            (b, a) => found.push((child, b, a)),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    let simple = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (path.is_empty(), simple) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

/// A Secret's values, and its annotations (kubectl's last-applied-configuration annotation
/// holds the whole Secret, values included).
fn is_secret_value(path: &str) -> bool {
    ["data", "stringData", "metadata.annotations"]
        .iter()
        .any(|field| {
            path == *field
                || path.starts_with(&format!("{field}."))
                || path.starts_with(&format!("{field}["))
        })
}

fn shown(value: &Value, hidden: bool) -> String {
    if hidden {
        return REDACTED.to_owned();
    }
    let text = value.to_string();
    match text.char_indices().nth(MAX_VALUE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(image: &str, resource_version: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "resourceVersion": resource_version, "generation": 3,
                "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": image}]}}},
            "status": {"readyReplicas": 2}})
    }

    #[test]
    fn an_image_change_is_one_field_and_server_metadata_is_not_a_change() {
        let changes = changes(&deployment("web:1", "10"), &deployment("web:2", "11"));
        assert_eq!(
            changes,
            vec![FieldChange {
                path: "spec.template.spec.containers[0].image".into(),
                before: Some("\"web:1\"".into()),
                after: Some("\"web:2\"".into()),
            }]
        );
        assert!(super::changes(&deployment("a", "1"), &deployment("a", "2")).is_empty());
    }

    #[test]
    fn added_and_removed_fields_have_one_side_and_odd_keys_are_quoted() {
        let before = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        let after = json!({"metadata": {"annotations": {"team": "a"}}});
        let paths: Vec<(String, bool, bool)> = changes(&before, &after)
            .into_iter()
            .map(|c| (c.path, c.before.is_some(), c.after.is_some()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("metadata.annotations".into(), false, true),
                ("metadata.labels".into(), true, false)
            ]
        );
        let before = json!({"metadata": {"labels": {"app.kubernetes.io/name": "a"}}});
        let after = json!({"metadata": {"labels": {"app.kubernetes.io/name": "b"}}});
        assert_eq!(
            changes(&before, &after)[0].path,
            "metadata.labels[\"app.kubernetes.io/name\"]"
        );
    }

    #[test]
    fn a_secret_shows_which_keys_change_never_their_values() {
        let secret = |password: &str| {
            json!({"kind": "Secret", "metadata": {"name": "db"},
                "data": {"password": password, "user": "YWRtaW4="}, "type": "Opaque"})
        };
        let changes = changes(&secret("czNjcjN0"), &secret("bjN3"));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "data.password");
        assert_eq!(changes[0].before.as_deref(), Some(REDACTED));
        assert_eq!(changes[0].after.as_deref(), Some(REDACTED));
        let text = serde_json::to_string(&changes).unwrap_or_default();
        assert!(!text.contains("czNjcjN0") && !text.contains("bjN3"));

        let applied = |password: &str| {
            let mut secret = secret(password);
            let last = json!({"kind": "Secret", "stringData": {"password": password}}).to_string();
            secret["metadata"]["annotations"] =
                json!({"kubectl.kubernetes.io/last-applied-configuration": last});
            secret
        };
        let changes = super::changes(&applied("s3cr3t"), &applied("n3w"));
        let text = serde_json::to_string(&changes).unwrap_or_default();
        assert!(!text.contains("s3cr3t") && !text.contains("n3w"), "{text}");
        assert!(
            changes
                .iter()
                .any(|c| c.path.starts_with("metadata.annotations"))
        );
    }

    #[test]
    fn many_changes_are_cut_with_a_count() {
        let before: Map<String, Value> = (0..50).map(|i| (format!("k{i}"), json!(i))).collect();
        let after: Map<String, Value> = (0..50).map(|i| (format!("k{i}"), json!(-i))).collect();
        let changes = changes(&json!({"data": before}), &json!({"data": after}));
        assert_eq!(changes.len(), MAX_CHANGES + 1);
        assert_eq!(changes[MAX_CHANGES].path, "… and 9 more field(s)");
    }
}
