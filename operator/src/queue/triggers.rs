//! What notifies a Qleet, declared by the Qleet next to its reconcile, the way
//! kube-runtime's `Controller::owns` and `watches` read:
//!
//! ```text
//! Triggers::of::<Workload>()   // its own objects' intent changes
//!     .owns::<WorkloadInstance>()                   // any change of an object it owns
//!     .watches::<KubernetesRuntime>(|ctx, change| ...) // related objects, mapped to its own
//! ```
//!
//! The notifier runs one watch per kind and asks the [`Registry`] of every Qleet's triggers
//! which notifications a change makes.

use std::any::{Any, TypeId};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use kube::{Resource, ResourceExt};
use qleetos_crds::notification::{Cause, Notification, QleetKind, Queued};

use super::worker::QleetResource;
use crate::context::{Context, Settings};

/// One change a watch saw: the object as this replica last saw it (none the first time) and
/// as it is now; `deleted` when it is gone.
#[derive(Debug)]
pub struct Change<'a, K> {
    pub before: Option<&'a K>,
    pub after: &'a K,
    pub deleted: bool,
}

impl<K: Resource> Change<'_, K> {
    /// Whether `view` of the object changed (always, the first time it is seen).
    pub fn differs<T: PartialEq>(&self, view: impl Fn(&K) -> T) -> bool {
        self.before.map(&view) != Some(view(self.after))
    }

    /// Whether what a Qleet acts on changed: spec, labels, annotations or deletion, and
    /// finalizers while the object is being deleted. Status writes (a Qleet's own output) are
    /// not intent, and neither is a Qleet adding its finalizer to a live object (it goes on
    /// with the object it patched).
    pub fn intent_changed(&self) -> bool {
        self.differs(intent)
    }
}

fn intent<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    let deleting = meta.deletion_timestamp.is_some();
    deleting.hash(&mut hasher);
    if deleting {
        meta.finalizers.hash(&mut hasher);
    }
    hasher.finish()
}

/// The objects of kind `owner_kind` that `object` names in its owner references.
fn owners<C: Resource>(owner_kind: &str, object: &C) -> Vec<Target> {
    let namespace = object.namespace();
    object
        .owner_references()
        .iter()
        .filter(|owner| owner.kind == owner_kind)
        .map(|owner| Target {
            namespace: namespace.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
            resource_version: String::new(),
        })
        .collect()
}

/// An object of the Qleet's own kind to notify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

impl Target {
    pub fn of<K: Resource>(object: &K) -> Self {
        let meta = object.meta();
        Self {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        }
    }

    /// Every object of `objects` that `wanted` keeps.
    pub fn all<K: Resource>(
        objects: impl IntoIterator<Item = Arc<K>>,
        wanted: impl Fn(&K) -> bool,
    ) -> Vec<Self> {
        objects
            .into_iter()
            .filter(|object| wanted(object))
            .map(|object| Self::of(&*object))
            .collect()
    }

    pub fn notification(self, kind: QleetKind, cause: Cause) -> Notification {
        Notification {
            kind,
            namespace: self.namespace,
            name: self.name,
            uid: self.uid,
            resource_version: self.resource_version,
            cause,
        }
    }
}

type Map<W> = dyn Fn(&Context, &Change<'_, W>) -> Vec<Target> + Send + Sync;

struct Rule {
    watched: TypeId,
    /// The change itself is the target's own (cause `Change`), not a related object's.
    own: bool,
    /// A `Box<Map<W>>` for the watched type `W`.
    map: Box<dyn Any + Send + Sync>,
}

/// What notifies one Qleet.
pub struct Triggers {
    kind: QleetKind,
    own_type: TypeId,
    own_kind: String,
    rules: Vec<Rule>,
    every: Option<fn(&Settings) -> Duration>,
}

impl std::fmt::Debug for Triggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triggers")
            .field("kind", &self.kind)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl Triggers {
    /// The triggers of the Qleet of `K`, starting with its own objects' intent changes (and
    /// every resync).
    pub fn of<K: QleetResource + Queued>() -> Self {
        let triggers = Self {
            kind: K::QLEET,
            own_type: TypeId::of::<K>(),
            own_kind: K::kind(&()).into_owned(),
            rules: Vec::new(),
            every: None,
        };
        triggers.rule::<K>(true, |_, change| {
            if change.deleted || !change.intent_changed() {
                return Vec::new();
            }
            vec![Target::of(change.after)]
        })
    }

    /// Any change of a `C`, status and deletion included, notifies the objects of this
    /// Qleet's kind named in its owner references.
    pub fn owns<C: QleetResource>(self) -> Self {
        let owner_kind = self.own_kind.clone();
        self.rule::<C>(false, move |_, change| owners(&owner_kind, change.after))
    }

    /// Like [`owns`](Self::owns), but only a change of what `view` shows of the owned object
    /// (or its deletion) notifies: the owner hears only what it reads.
    pub fn owns_changes_of<C: QleetResource, T: PartialEq + 'static>(
        self,
        view: fn(&C) -> T,
    ) -> Self {
        let owner_kind = self.own_kind.clone();
        self.rule::<C>(false, move |_, change| {
            if !change.deleted && !change.differs(view) {
                return Vec::new();
            }
            owners(&owner_kind, change.after)
        })
    }

    /// Changes of a `W` notify the objects of this Qleet's kind that `map` names.
    pub fn watches<W: QleetResource>(
        self,
        map: impl Fn(&Context, &Change<'_, W>) -> Vec<Target> + Send + Sync + 'static,
    ) -> Self {
        self.rule::<W>(false, map)
    }

    /// Also notifies every object of this Qleet's kind each `interval` of the settings.
    pub fn every(mut self, interval: fn(&Settings) -> Duration) -> Self {
        self.every = Some(interval);
        self
    }

    fn rule<W: QleetResource>(
        mut self,
        own: bool,
        map: impl Fn(&Context, &Change<'_, W>) -> Vec<Target> + Send + Sync + 'static,
    ) -> Self {
        let map: Box<Map<W>> = Box::new(map);
        self.rules.push(Rule {
            watched: TypeId::of::<W>(),
            own,
            map: Box::new(map),
        });
        self
    }
}

/// Every Qleet's triggers.
#[derive(Debug)]
pub struct Registry {
    qleets: Vec<Triggers>,
}

/// The Qleet whose own kind a watched type is, with its periodic interval.
#[derive(Debug, Clone, Copy)]
pub struct OwnQleet {
    pub kind: QleetKind,
    pub every: Option<fn(&Settings) -> Duration>,
}

impl Registry {
    pub fn new(qleets: Vec<Triggers>) -> Self {
        Self { qleets }
    }

    /// The notifications one change of a `W` makes, for every Qleet.
    pub fn notifications<W: QleetResource>(
        &self,
        ctx: &Context,
        change: &Change<'_, W>,
    ) -> Vec<Notification> {
        let mut notifications = Vec::new();
        for triggers in &self.qleets {
            for rule in triggers
                .rules
                .iter()
                .filter(|rule| rule.watched == TypeId::of::<W>())
            {
                let Some(map) = rule.map.downcast_ref::<Box<Map<W>>>() else {
                    continue;
                };
                let cause = if rule.own {
                    Cause::Change
                } else {
                    Cause::Related {
                        object: related_object(change.after),
                    }
                };
                notifications.extend(
                    map(ctx, change)
                        .into_iter()
                        .map(|target| target.notification(triggers.kind, cause.clone())),
                );
            }
        }
        notifications
    }

    /// The Qleet that owns objects of `W`, if any.
    pub fn own_qleet<W: QleetResource>(&self) -> Option<OwnQleet> {
        self.qleets
            .iter()
            .find(|triggers| triggers.own_type == TypeId::of::<W>())
            .map(|triggers| OwnQleet {
                kind: triggers.kind,
                every: triggers.every,
            })
    }
}

/// Names a related object by kind, uid and resourceVersion: one change, one message id.
pub fn related_object<K: Resource<DynamicType = ()>>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}:{}",
        K::kind(&()),
        meta.uid.as_deref().unwrap_or_default(),
        meta.resource_version.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;
    use qleetos_crds::{KubernetesRuntime, Workload, WorkloadInstance};
    use serde_json::json;

    use super::*;
    use crate::context::caches;

    /// A context whose caches hold `workloads`; its client is never called.
    fn context_with(workloads: &[Workload]) -> Context {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let settings = crate::testing::settings();
        let (caches, mut writers) = caches();
        for workload in workloads {
            writers
                .workloads
                .apply_watcher_event(&Event::Apply(workload.clone()));
        }
        Context::new(client, settings, Arc::default(), caches)
    }

    fn workload(name: &str, generation: i64) -> Workload {
        serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"),
                         "generation": generation, "resourceVersion": "1"},
            "spec": {"placement": {}, "manifests": []},
        }))
        .expect("a Workload")
    }

    fn runtime(ready: bool, probed_at: &str) -> KubernetesRuntime {
        serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntime",
            "metadata": {"name": "eu", "uid": "uid-eu", "generation": 1, "resourceVersion": probed_at},
            "spec": {"provider": "local", "region": "eu-west",
                     "connection": {"kubeconfigSecretRef": {"name": "eu", "namespace": "qleetos-system"}}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                       "reason": "Probed", "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z"}]},
        }))
        .expect("a KubernetesRuntime")
    }

    fn kinds(notifications: &[Notification]) -> Vec<(QleetKind, String)> {
        notifications
            .iter()
            .map(|n| (n.kind, n.name.clone()))
            .collect()
    }

    #[tokio::test]
    async fn own_objects_notify_on_intent_only() {
        let ctx = context_with(&[]);
        let registry = Registry::new(vec![Triggers::of::<Workload>()]);
        let (before, after) = (workload("shop", 1), workload("shop", 2));
        let changed = Change {
            before: Some(&before),
            after: &after,
            deleted: false,
        };
        let notifications = registry.notifications(&ctx, &changed);
        assert_eq!(
            kinds(&notifications),
            [(QleetKind::Workload, "shop".into())]
        );
        assert_eq!(notifications[0].cause, Cause::Change);
        let status_only = Change {
            before: Some(&after),
            after: &after,
            deleted: false,
        };
        assert!(registry.notifications(&ctx, &status_only).is_empty());
        let deleted = Change {
            before: Some(&before),
            after: &after,
            deleted: true,
        };
        assert!(registry.notifications(&ctx, &deleted).is_empty());
    }

    #[tokio::test]
    async fn an_owned_object_notifies_its_owner_of_the_qleets_kind() {
        let ctx = context_with(&[]);
        let registry = Registry::new(vec![Triggers::of::<Workload>().owns::<WorkloadInstance>()]);
        let instance: WorkloadInstance = serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadInstance",
            "metadata": {"name": "shop-eu", "namespace": "team", "uid": "i1", "resourceVersion": "7",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "c1"},
                    {"apiVersion": "qleetos.io/v1alpha1", "kind": "Workload", "name": "shop", "uid": "w1"}]},
            "spec": {"workloadRef": {"name": "shop"}, "runtimeRef": {"name": "eu"}, "manifests": []},
        }))
        .expect("a WorkloadInstance");
        let change = Change {
            before: Some(&instance),
            after: &instance,
            deleted: true,
        };
        let notifications = registry.notifications(&ctx, &change);
        assert_eq!(
            kinds(&notifications),
            [(QleetKind::Workload, "shop".into())]
        );
        assert_eq!(notifications[0].uid, "w1");
        assert_eq!(
            notifications[0].cause,
            Cause::Related {
                object: "WorkloadInstance/i1:7".into()
            }
        );
    }

    #[tokio::test]
    async fn the_workload_qleet_hears_runtime_changes_that_move_placements_only() {
        let ctx = context_with(&[workload("shop", 1), workload("blog", 1)]);
        let registry = crate::controllers::triggers();
        let (ready, probed_again, lost) =
            (runtime(true, "1"), runtime(true, "2"), runtime(false, "3"));
        let probe = Change {
            before: Some(&ready),
            after: &probed_again,
            deleted: false,
        };
        let workloads = |notifications: Vec<Notification>| {
            let mut names: Vec<String> = notifications
                .into_iter()
                .filter(|n| n.kind == QleetKind::Workload)
                .map(|n| n.name)
                .collect();
            names.sort();
            names
        };
        assert!(workloads(registry.notifications(&ctx, &probe)).is_empty());
        let readiness = Change {
            before: Some(&probed_again),
            after: &lost,
            deleted: false,
        };
        assert_eq!(
            workloads(registry.notifications(&ctx, &readiness)),
            ["blog", "shop"]
        );
        let own = registry
            .own_qleet::<KubernetesRuntime>()
            .expect("the runtime Qleet");
        assert_eq!(own.kind, QleetKind::KubernetesRuntime);
        assert_eq!(
            own.every.map(|every| every(&ctx.settings)),
            Some(Duration::from_secs(30))
        );
    }
}
