//! The inventory of what an owner applied: entries keyed by group/kind/namespace/name (the
//! API version is not part of an object's identity), merged without losing any, and put in
//! teardown order. Pure.

use qleetos_crds::AppliedObject;

/// `entries` with one entry per object identity, the later entry winning, sorted.
pub fn merged(entries: impl IntoIterator<Item = AppliedObject>) -> Vec<AppliedObject> {
    let mut merged: Vec<AppliedObject> = Vec::new();
    for entry in entries {
        match merged.iter_mut().find(|e| e.same_object(&entry)) {
            Some(existing) => *existing = entry,
            None => merged.push(entry),
        }
    }
    merged.sort_by(|a, b| a.identity().cmp(&b.identity()));
    merged
}

/// `previous` plus every `wanted` object not in it, when one of those is not `found_again`
/// (see [`super::with_pending`]).
pub fn with_pending(
    previous: &[AppliedObject],
    wanted: Vec<AppliedObject>,
    found_again: impl Fn(&AppliedObject) -> bool,
) -> Option<Vec<AppliedObject>> {
    let new: Vec<AppliedObject> = wanted
        .into_iter()
        .filter(|o| find(previous, o).is_none())
        .collect();
    new.iter()
        .any(|o| !found_again(o))
        .then(|| merged(previous.iter().cloned().chain(new)))
}

/// The entry of `inventory` for the same object as `object`, whatever its API version.
pub fn find<'a>(
    inventory: &'a [AppliedObject],
    object: &AppliedObject,
) -> Option<&'a AppliedObject> {
    inventory.iter().find(|e| e.same_object(object))
}

/// Whether `object` is recorded as applied by its owner (a uid was read back).
pub fn is_known(inventory: &[AppliedObject], object: &AppliedObject) -> bool {
    find(inventory, object).is_some_and(|e| e.uid.is_some())
}

/// `objects` in the order they are removed: what runs first (workload controllers and
/// their autoscalers), then what routes to them, then what they consume (configuration,
/// storage, identities), then RBAC, then custom resource definitions, namespaces last.
/// Custom resources go with the routing tier, before their definitions.
pub fn teardown_order(mut objects: Vec<AppliedObject>) -> Vec<AppliedObject> {
    objects.sort_by_key(|o| teardown_tier(&o.kind));
    objects
}

/// The teardown tier of a kind: lower tiers are removed first.
pub fn teardown_tier(kind: &str) -> u8 {
    match kind {
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job"
        | "CronJob"
        | "Pod"
        | "HorizontalPodAutoscaler"
        | "PodDisruptionBudget" => 0,
        "ConfigMap" | "Secret" | "PersistentVolumeClaim" | "ServiceAccount" => 2,
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => 3,
        "CustomResourceDefinition" => 4,
        "Namespace" => 5,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(api_version: &str, kind: &str, name: &str, uid: Option<&str>) -> AppliedObject {
        AppliedObject {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some("team-a".into()),
            name: name.into(),
            uid: uid.map(str::to_owned),
            applied: None,
        }
    }

    #[test]
    fn an_api_version_change_is_the_same_entry() {
        let old = object("policy/v1beta1", "PodDisruptionBudget", "web", Some("u1"));
        let new = object("policy/v1", "PodDisruptionBudget", "web", Some("u1"));
        let inventory = merged([old.clone(), new.clone()]);
        assert_eq!(inventory, vec![new.clone()]);
        assert!(is_known(&[old], &new));
        let other_group = object("example.com/v1", "PodDisruptionBudget", "web", None);
        assert!(find(&inventory, &other_group).is_none());
    }

    #[test]
    fn objects_found_again_need_no_record_first() {
        let recorded = object("v1", "ConfigMap", "old", Some("u1"));
        let config = object("v1", "ConfigMap", "c", None);
        let secret = object("v1", "Secret", "s", None);
        let watched = |o: &AppliedObject| o.kind == "ConfigMap";
        let previous = std::slice::from_ref(&recorded);
        assert_eq!(with_pending(previous, vec![config.clone()], watched), None);
        assert_eq!(
            with_pending(
                previous,
                vec![recorded.clone(), config.clone(), secret.clone()],
                watched
            ),
            Some(vec![config.clone(), recorded.clone(), secret]),
            "one object that must be recorded first takes every new one with it"
        );
        assert_eq!(
            with_pending(previous, vec![config.clone()], |_| false),
            Some(vec![config, recorded])
        );
    }

    #[test]
    fn pending_entries_are_not_known() {
        let pending = object("v1", "ConfigMap", "c", None);
        assert!(!is_known(std::slice::from_ref(&pending), &pending));
        assert!(find(std::slice::from_ref(&pending), &pending).is_some());
    }

    #[test]
    fn teardown_removes_workloads_first_and_namespaces_last() {
        let inventory = vec![
            object("v1", "Namespace", "ns", None),
            object("v1", "ConfigMap", "config", None),
            object("v1", "Service", "web", None),
            object(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "crd",
                None,
            ),
            object("example.com/v1", "Widget", "w", None),
            object("apps/v1", "Deployment", "web", None),
            object("rbac.authorization.k8s.io/v1", "RoleBinding", "rb", None),
        ];
        let kinds: Vec<String> = teardown_order(inventory)
            .into_iter()
            .map(|o| o.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "Deployment",
                "Service",
                "Widget",
                "ConfigMap",
                "RoleBinding",
                "CustomResourceDefinition",
                "Namespace"
            ]
        );
    }
}
