//! What an instance applied without recording it: a pass that stopped (crash, timeout, a
//! failed status write) after applying an object of a watched kind and before writing its
//! status. The runtime's drift caches still show the object with the instance's label, so
//! the next pass prunes it when it is no longer wanted, and the cleanup removes it.

use std::collections::BTreeSet;

use qleetos_crds::{AppliedObject, WorkloadInstance};

use crate::applier::inventory;
use crate::applier::live::LiveObjects;
use crate::context::key_of;

/// The recorded inventory plus the objects the caches show the instance applied, in the
/// namespaces it uses (its own, its manifests', its recorded objects'): a label in another
/// namespace never makes the instance delete there.
pub(super) fn with_observed(
    recorded: Vec<AppliedObject>,
    live: Option<&LiveObjects>,
    instance: &WorkloadInstance,
) -> Vec<AppliedObject> {
    let Some(live) = live else {
        return recorded;
    };
    let uid = instance.metadata.uid.as_deref().unwrap_or_default();
    let observed = live.applied_by(uid, &key_of(instance));
    merge(recorded, observed, &namespaces_used(instance))
}

/// Whether a later pass finds `object` again without a record, so it need not be recorded
/// before it is applied: the runtime's caches are there, they hold its kind, and it is in the
/// instance's own namespace, which [`with_observed`] always searches (a chart's or a
/// manifest's other namespaces may be unknown to the cleanup until recorded).
pub(super) fn found_again(
    live: Option<&LiveObjects>,
    instance: &WorkloadInstance,
    object: &AppliedObject,
) -> bool {
    live.is_some()
        && LiveObjects::watches(object)
        && object.namespace.is_some()
        && object.namespace == instance.metadata.namespace
}

fn namespaces_used(instance: &WorkloadInstance) -> BTreeSet<String> {
    let own = instance.metadata.namespace.iter().cloned();
    let manifests = instance
        .spec
        .manifests
        .iter()
        .filter_map(|m| m.namespace().map(str::to_owned));
    let recorded = instance
        .status
        .iter()
        .flat_map(|s| s.applied_objects.iter())
        .filter_map(|o| o.namespace.clone());
    own.chain(manifests).chain(recorded).collect()
}

/// `recorded`, with every `observed` object in `namespaces` it lacks; the recorded entries
/// win (they keep what was applied).
fn merge(
    recorded: Vec<AppliedObject>,
    observed: Vec<AppliedObject>,
    namespaces: &BTreeSet<String>,
) -> Vec<AppliedObject> {
    let missing: Vec<AppliedObject> = observed
        .into_iter()
        .filter(|o| {
            o.namespace
                .as_ref()
                .is_some_and(|ns| namespaces.contains(ns))
        })
        .filter(|o| inventory::find(&recorded, o).is_none())
        .collect();
    if missing.is_empty() {
        return recorded;
    }
    inventory::merged(missing.into_iter().chain(recorded))
}

#[cfg(test)]
mod tests {
    use qleetos_crds::AppliedRevision;

    use super::*;

    fn config_map(namespace: &str, name: &str) -> AppliedObject {
        AppliedObject {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some(namespace.into()),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            applied: None,
        }
    }

    #[test]
    fn an_unrecorded_object_joins_the_inventory() {
        let mut kept = config_map("shop", "a");
        kept.applied = Some(AppliedRevision {
            digest: "sha256:1".into(),
            resource_version: "7".into(),
            generation: None,
        });
        let namespaces = BTreeSet::from(["shop".to_owned()]);
        let merged = merge(
            vec![kept.clone()],
            vec![config_map("shop", "a"), config_map("shop", "b")],
            &namespaces,
        );
        assert_eq!(merged, vec![kept, config_map("shop", "b")]);
    }

    #[test]
    fn only_watched_objects_in_the_instance_namespace_skip_the_record_first() {
        let instance = crate::testing::instance("shop", "web", "eu");
        let live = LiveObjects::empty(crate::applier::live::OwnedIndex::default());
        let found = |object: &AppliedObject| found_again(Some(&live), &instance, object);
        assert!(found(&config_map("shop", "a")));
        assert!(!found(&config_map("elsewhere", "a")), "another namespace");
        let secret = AppliedObject {
            kind: "Secret".into(),
            ..config_map("shop", "s")
        };
        assert!(!found(&secret), "a kind the caches do not hold");
        assert!(
            !found_again(None, &instance, &config_map("shop", "a")),
            "no caches for the runtime"
        );
    }

    #[test]
    fn labels_in_namespaces_the_instance_does_not_use_are_ignored() {
        let namespaces = BTreeSet::from(["shop".to_owned()]);
        let merged = merge(
            Vec::new(),
            vec![config_map("other-tenant", "x")],
            &namespaces,
        );
        assert!(merged.is_empty());
    }
}
