//! Small helpers to read and write the provider's schemaless objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::ResourceExt;
use kube::api::{DynamicObject, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::{Context, FIELD_MANAGER, Kind};
use crate::error::Error;

/// `obj.<section>.<path...>`, e.g. `field(obj, "status", &["initialization"])`.
pub(super) fn field<'a>(obj: &'a DynamicObject, section: &str, path: &[&str]) -> Option<&'a Value> {
    path.iter()
        .try_fold(obj.data.get(section)?, |value, key| value.get(key))
}

/// A condition of type `type_` with status True, keeping the transition time of the one
/// `obj` already has when that one is True too.
pub(super) fn true_condition(obj: &DynamicObject, type_: &str, reason: &str) -> Value {
    let existing = field(obj, "status", &["conditions"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_ && c["status"] == "True");
    let since = existing
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    json!({
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": "",
        "lastTransitionTime": since,
        "observedGeneration": obj.metadata.generation.unwrap_or_default(),
    })
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Merges `changes` into `obj.<section>` (`spec` through the object, `status` through its
/// status subresource), unless every field of `changes` already has that value.
pub(super) async fn merge(
    context: &Context,
    kind: Kind,
    obj: &DynamicObject,
    section: &str,
    changes: Map<String, Value>,
) -> Result<(), Error> {
    let current = obj.data.get(section);
    let unchanged = changes
        .iter()
        .all(|(key, value)| current.and_then(|c| c.get(key)) == Some(value));
    if unchanged {
        return Ok(());
    }
    let api = context.api(kind, obj);
    let params = PatchParams::apply(FIELD_MANAGER);
    let mut body = Map::new();
    body.insert(section.to_owned(), Value::Object(changes));
    let patch = Patch::Merge(Value::Object(body));
    let name = obj.name_any();
    if section == "status" {
        api.patch_status(&name, &params, &patch).await?;
    } else {
        api.patch(&name, &params, &patch).await?;
    }
    tracing::debug!(kind = kind.kind, name, section, "patched");
    Ok(())
}

/// A controller reference to `obj`, for the Secrets the provider creates.
pub(super) fn owned_by(kind: Kind, obj: &DynamicObject) -> OwnerReference {
    OwnerReference {
        api_version: kind.api_resource().api_version,
        kind: kind.kind.to_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `value` as a JSON object (the `json!` literals passed to [`merge`]).
pub(super) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
