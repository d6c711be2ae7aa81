//! Which cached WorkloadInstances each owner (a Workload, by uid) has, kept beside the
//! instance watch cache, so a Workload finds its instances without scanning every instance
//! (a scan per reconcile made N Workloads cost O(N²)).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};
use qleetos_crds::WorkloadInstance;

type Reference = ObjectRef<WorkloadInstance>;

#[derive(Default)]
struct Index {
    by_owner: HashMap<String, HashSet<Reference>>,
    owners_of: HashMap<Reference, Vec<String>>,
}

impl Index {
    fn forget(&mut self, reference: &Reference) {
        for owner in self.owners_of.remove(reference).unwrap_or_default() {
            if let Some(owned) = self.by_owner.get_mut(&owner) {
                owned.remove(reference);
                if owned.is_empty() {
                    self.by_owner.remove(&owner);
                }
            }
        }
    }

    fn record(&mut self, instance: &WorkloadInstance) {
        let reference = ObjectRef::from_obj(instance);
        self.forget(&reference);
        let owners: Vec<String> = instance
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|owner| owner.uid.clone())
            .collect();
        for owner in &owners {
            self.by_owner
                .entry(owner.clone())
                .or_default()
                .insert(reference.clone());
        }
        self.owners_of.insert(reference, owners);
    }
}

/// Instance references by owner uid, updated from the instance watch's events.
#[derive(Clone, Default)]
pub struct OwnerIndex {
    index: Arc<Mutex<Index>>,
}

impl std::fmt::Debug for OwnerIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerIndex").finish_non_exhaustive()
    }
}

impl OwnerIndex {
    /// An instance was created or changed.
    pub fn applied(&self, instance: &WorkloadInstance) {
        self.lock().record(instance);
    }

    /// An instance is gone.
    pub fn deleted(&self, instance: &WorkloadInstance) {
        self.lock().forget(&ObjectRef::from_obj(instance));
    }

    /// The watch listed everything again: the index follows the cache.
    pub fn rebuild(&self, cache: &Store<WorkloadInstance>) {
        let mut index = Index::default();
        for instance in cache.state() {
            index.record(&instance);
        }
        *self.lock() = index;
    }

    /// The cached instances naming `owner_uid` among their owners.
    pub fn owned_by(
        &self,
        owner_uid: &str,
        cache: &Store<WorkloadInstance>,
    ) -> Vec<Arc<WorkloadInstance>> {
        let references: Vec<Reference> = self
            .lock()
            .by_owner
            .get(owner_uid)
            .map(|owned| owned.iter().cloned().collect())
            .unwrap_or_default();
        references
            .iter()
            .filter_map(|reference| cache.get(reference))
            .filter(|instance| {
                instance
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|owner| owner.uid == owner_uid)
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::{reflector, watcher::Event};
    use qleetos_crds::{RuntimeRef, WorkloadInstanceSpec};

    use super::*;

    fn instance(name: &str, owner: &str) -> WorkloadInstance {
        let mut instance = WorkloadInstance::new(
            name,
            WorkloadInstanceSpec {
                workload_ref: None,
                runtime_ref: RuntimeRef { name: "eu".into() },
                manifests: Vec::new(),
                chart: None,
                images: Default::default(),
                expose: None,
                needs: Vec::new(),
            },
        );
        instance.metadata.namespace = Some("team".into());
        instance.metadata.owner_references = Some(vec![OwnerReference {
            uid: owner.into(),
            ..OwnerReference::default()
        }]);
        instance
    }

    fn names(found: &[Arc<WorkloadInstance>]) -> Vec<String> {
        let mut names: Vec<String> = found
            .iter()
            .map(|i| i.metadata.name.clone().unwrap_or_default())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn follows_the_instances_of_each_owner() {
        let (cache, mut writer) = reflector::store();
        let index = OwnerIndex::default();
        let (eu, us, other) = (
            instance("a-eu", "a"),
            instance("a-us", "a"),
            instance("b", "b"),
        );
        for i in [&eu, &us, &other] {
            writer.apply_watcher_event(&Event::Apply(i.clone()));
            index.applied(i);
        }
        assert_eq!(names(&index.owned_by("a", &cache)), ["a-eu", "a-us"]);

        writer.apply_watcher_event(&Event::Delete(us.clone()));
        index.deleted(&us);
        let moved = instance("a-eu", "b");
        writer.apply_watcher_event(&Event::Apply(moved.clone()));
        index.applied(&moved);
        assert!(index.owned_by("a", &cache).is_empty());
        assert_eq!(names(&index.owned_by("b", &cache)), ["a-eu", "b"]);
    }

    #[test]
    fn a_relist_rebuilds_it_from_the_cache() {
        let (cache, mut writer) = reflector::store();
        let index = OwnerIndex::default();
        index.applied(&instance("gone", "a"));
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(instance("kept", "a")));
        writer.apply_watcher_event(&Event::InitDone);
        index.rebuild(&cache);
        assert_eq!(names(&index.owned_by("a", &cache)), ["kept"]);
    }
}
