//! What the drift watches last saw of the objects QleetOS applied in each runtime (their
//! metadata), so a pass can tell an object nobody changed since QleetOS applied it from one
//! that drifted, without asking the runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use qleetos_crds::{AppliedObject, Manifest};
use serde_json::Value;

use crate::render::{INSTANCE_ANNOTATION, INSTANCE_UID_LABEL};

/// How long a pass waits for a runtime's watches to finish their first list.
const READY_PATIENCE: Duration = Duration::from_secs(5);

/// The watched kinds' caches of one runtime.
#[derive(Clone)]
pub struct LiveObjects {
    pub deployments: Store<PartialObjectMeta<Deployment>>,
    pub stateful_sets: Store<PartialObjectMeta<StatefulSet>>,
    pub daemon_sets: Store<PartialObjectMeta<DaemonSet>>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    /// The watched objects by the uid of the instance that applied them.
    pub owned: OwnedIndex,
    /// When the watches started: passes wait for their first list until a little after.
    pub started: Instant,
    /// Whether every watch listed once (see [`LiveObjects::ready`]).
    pub listed: Arc<OnceCell<bool>>,
}

impl std::fmt::Debug for LiveObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveObjects").finish_non_exhaustive()
    }
}

fn get<K: kube::Resource<DynamicType = ()> + Clone>(
    store: &Store<PartialObjectMeta<K>>,
    object: &AppliedObject,
) -> Option<ObjectMeta> {
    let mut reference = ObjectRef::new(&object.name);
    if let Some(namespace) = &object.namespace {
        reference = reference.within(namespace);
    }
    store.get(&reference).map(|found| found.metadata.clone())
}

/// The kinds the drift watches cache, one store each.
enum WatchedKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Service,
    ConfigMap,
}

impl WatchedKind {
    fn of(object: &AppliedObject) -> Option<Self> {
        match (object.group(), object.kind.as_str()) {
            ("apps", "Deployment") => Some(Self::Deployment),
            ("apps", "StatefulSet") => Some(Self::StatefulSet),
            ("apps", "DaemonSet") => Some(Self::DaemonSet),
            ("", "Service") => Some(Self::Service),
            ("", "ConfigMap") => Some(Self::ConfigMap),
            _ => None,
        }
    }
}

impl LiveObjects {
    /// Caches that listed nothing, sharing `owned`: for tests.
    #[cfg(test)]
    pub(crate) fn empty(owned: OwnedIndex) -> Self {
        use kube::runtime::reflector;
        Self {
            deployments: reflector::store().0,
            stateful_sets: reflector::store().0,
            daemon_sets: reflector::store().0,
            services: reflector::store().0,
            config_maps: reflector::store().0,
            owned,
            started: tokio::time::Instant::now(),
            listed: std::sync::Arc::default(),
        }
    }

    /// The last seen metadata of `object`, when its kind is watched and it exists.
    pub fn meta(&self, object: &AppliedObject) -> Option<ObjectMeta> {
        match WatchedKind::of(object)? {
            WatchedKind::Deployment => get(&self.deployments, object),
            WatchedKind::StatefulSet => get(&self.stateful_sets, object),
            WatchedKind::DaemonSet => get(&self.daemon_sets, object),
            WatchedKind::Service => get(&self.services, object),
            WatchedKind::ConfigMap => get(&self.config_maps, object),
        }
    }

    /// Whether QleetOS's caches hold every object of `object`'s kind that QleetOS applied in
    /// this runtime.
    pub fn watches(object: &AppliedObject) -> bool {
        WatchedKind::of(object).is_some()
    }

    /// The watched objects there now that are labelled as applied by the instance with uid
    /// `uid` and named `namespace/name` (`instance`): what that instance applied, recorded or
    /// not (a pass that stopped before its status was written).
    pub fn applied_by(&self, uid: &str, instance: &str) -> Vec<AppliedObject> {
        self.owned
            .of(uid)
            .into_iter()
            .filter(|object| {
                self.meta(object)
                    .is_some_and(|meta| labelled_as_applied_by(&meta, uid, instance))
            })
            .collect()
    }

    /// Whether every watch has listed its objects once, waiting for that until a little
    /// after the watches started (an unreachable runtime does not hold every pass). One
    /// caller at a time waits on the stores: a store's own wait wakes just the latest of
    /// concurrent waiters.
    pub async fn ready(&self) -> bool {
        let listed = self.listed.get_or_init(|| async {
            self.deployments.wait_until_ready().await.is_ok()
                && self.stateful_sets.wait_until_ready().await.is_ok()
                && self.daemon_sets.wait_until_ready().await.is_ok()
                && self.services.wait_until_ready().await.is_ok()
                && self.config_maps.wait_until_ready().await.is_ok()
        });
        tokio::time::timeout_at(self.started + READY_PATIENCE, listed)
            .await
            .is_ok_and(|listed| *listed)
    }
}

fn labelled_as_applied_by(meta: &ObjectMeta, uid: &str, instance: &str) -> bool {
    let label = meta.labels.as_ref().and_then(|l| l.get(INSTANCE_UID_LABEL));
    let annotation = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(INSTANCE_ANNOTATION));
    label.map(String::as_str) == Some(uid) && annotation.map(String::as_str) == Some(instance)
}

/// Which watched objects each instance applied, by the uid in their label, kept by the drift
/// watches. It may hold objects that are gone or relabelled: [`LiveObjects::applied_by`]
/// checks each against its cache.
#[derive(Clone, Debug, Default)]
pub struct OwnedIndex(Arc<Mutex<HashMap<String, Vec<AppliedObject>>>>);

impl OwnedIndex {
    pub fn record(&self, uid: &str, object: AppliedObject) {
        let mut index = self.lock();
        let objects = index.entry(uid.to_owned()).or_default();
        objects.retain(|known| !known.same_object(&object));
        objects.push(object);
    }

    pub fn forget(&self, uid: &str, object: &AppliedObject) {
        let mut index = self.lock();
        if let Some(objects) = index.get_mut(uid) {
            objects.retain(|known| !known.same_object(object));
            if objects.is_empty() {
                index.remove(uid);
            }
        }
    }

    fn of(&self, uid: &str) -> Vec<AppliedObject> {
        self.lock().get(uid).cloned().unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<AppliedObject>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The live-object caches of every watched runtime, by runtime name.
#[derive(Clone)]
pub struct LiveRegistry {
    runtimes: Arc<Mutex<HashMap<String, LiveObjects>>>,
    /// Whether the drift watches have been started once for every reachable runtime.
    supervised: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for LiveRegistry {
    fn default() -> Self {
        Self {
            runtimes: Arc::default(),
            supervised: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

impl std::fmt::Debug for LiveRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRegistry").finish_non_exhaustive()
    }
}

impl LiveRegistry {
    pub fn get(&self, runtime: &str) -> Option<LiveObjects> {
        self.lock().get(runtime).cloned()
    }

    /// The caches of `runtime` once they have listed what is there. Right after start-up it
    /// first waits (a little) for the drift watches to be started, so a restarted operator
    /// does not re-apply objects nobody changed only because it has not looked yet.
    pub async fn ready(&self, runtime: &str) -> Option<LiveObjects> {
        let mut supervised = self.supervised.subscribe();
        let started = supervised.wait_for(|done| *done);
        let _ = tokio::time::timeout(READY_PATIENCE, started).await;
        let live = self.get(runtime)?;
        live.ready().await.then_some(live)
    }

    /// Every reachable runtime has had its drift watches started once.
    pub fn mark_supervised(&self) {
        self.supervised.send_replace(true);
    }

    pub fn insert(&self, runtime: &str, live: LiveObjects) {
        self.lock().insert(runtime.to_owned(), live);
    }

    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|runtime, _| keep(runtime));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveObjects>> {
        self.runtimes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether the live object is still the one QleetOS applied from the manifest whose digest is
/// `digest`: the same object (uid) at the recorded resourceVersion, or, for kinds with a
/// generation, at the recorded generation with every label and annotation of the manifest
/// still in place (controllers updating its status or adding their own annotations are not
/// drift).
pub fn unchanged_since_applied(
    recorded: &AppliedObject,
    live: &ObjectMeta,
    manifest: &Manifest,
    digest: &str,
) -> bool {
    let Some(applied) = &recorded.applied else {
        return false;
    };
    if applied.digest != digest || recorded.uid.is_none() || live.uid != recorded.uid {
        return false;
    }
    if live.resource_version.as_deref() == Some(applied.resource_version.as_str()) {
        return true;
    }
    applied.generation.is_some()
        && live.generation == applied.generation
        && metadata_intact(manifest, "labels", live.labels.as_ref())
        && metadata_intact(manifest, "annotations", live.annotations.as_ref())
}

fn metadata_intact(
    manifest: &Manifest,
    field: &str,
    live: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    let wanted = manifest
        .0
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object);
    wanted.is_none_or(|wanted| {
        wanted.iter().all(|(key, value)| {
            live.and_then(|live| live.get(key)).map(String::as_str) == value.as_str()
        })
    })
}

/// Whether a watch event shows `object` exactly as QleetOS recorded it after applying it (its
/// own write coming back), which is no drift.
pub fn is_recorded(inventory: &[AppliedObject], object: &AppliedObject, version: &str) -> bool {
    inventory.iter().any(|entry| {
        entry.same_object(object)
            && entry.uid == object.uid
            && entry
                .applied
                .as_ref()
                .is_some_and(|applied| applied.resource_version == version)
    })
}

#[cfg(test)]
mod tests {
    use qleetos_crds::AppliedRevision;
    use serde_json::json;

    use super::*;

    fn recorded(version: &str, generation: Option<i64>) -> AppliedObject {
        AppliedObject {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("team".into()),
            name: "web".into(),
            uid: Some("u1".into()),
            applied: Some(AppliedRevision {
                digest: "d1".into(),
                resource_version: version.into(),
                generation,
            }),
        }
    }

    fn live(version: &str, generation: Option<i64>, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            uid: Some("u1".into()),
            resource_version: Some(version.into()),
            generation,
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    fn manifest() -> Manifest {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}}
        }))
        .expect("a manifest")
    }

    #[test]
    fn an_object_at_the_recorded_version_and_digest_is_unchanged() {
        let manifest = manifest();
        let at = live("10", None, &[]);
        assert!(unchanged_since_applied(
            &recorded("10", None),
            &at,
            &manifest,
            "d1"
        ));
        assert!(!unchanged_since_applied(
            &recorded("10", None),
            &at,
            &manifest,
            "d2"
        ));
        assert!(!unchanged_since_applied(
            &recorded("9", None),
            &at,
            &manifest,
            "d1"
        ));
        let mut recreated = at.clone();
        recreated.uid = Some("u2".into());
        assert!(!unchanged_since_applied(
            &recorded("10", None),
            &recreated,
            &manifest,
            "d1"
        ));
    }

    #[test]
    fn status_updates_are_not_drift_but_label_changes_are() {
        let manifest = manifest();
        let applied = recorded("10", Some(3));
        let status_moved = live("12", Some(3), &[("app", "web"), ("extra", "x")]);
        assert!(unchanged_since_applied(
            &applied,
            &status_moved,
            &manifest,
            "d1"
        ));
        let relabelled = live("13", Some(3), &[("app", "other")]);
        assert!(!unchanged_since_applied(
            &applied,
            &relabelled,
            &manifest,
            "d1"
        ));
        let spec_changed = live("14", Some(4), &[("app", "web")]);
        assert!(!unchanged_since_applied(
            &applied,
            &spec_changed,
            &manifest,
            "d1"
        ));
    }

    #[test]
    fn an_own_write_coming_back_is_recorded() {
        let inventory = [recorded("10", None)];
        let mut seen = recorded("10", None);
        seen.applied = None;
        assert!(is_recorded(&inventory, &seen, "10"));
        assert!(!is_recorded(&inventory, &seen, "11"));
        seen.uid = Some("other".into());
        assert!(!is_recorded(&inventory, &seen, "10"));
    }

    fn config_map_meta(name: &str, uid: &str, instance: &str) -> PartialObjectMeta<ConfigMap> {
        PartialObjectMeta::<ConfigMap> {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([(INSTANCE_UID_LABEL.to_owned(), uid.to_owned())].into()),
                annotations: Some([(INSTANCE_ANNOTATION.to_owned(), instance.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Default::default()
        }
    }

    fn caches_with(objects: Vec<PartialObjectMeta<ConfigMap>>, owned: &OwnedIndex) -> LiveObjects {
        use kube::runtime::{reflector, watcher};
        let (config_maps, mut writer) = reflector::store();
        for object in objects {
            let applied = AppliedObject {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: object.metadata.namespace.clone(),
                name: object.metadata.name.clone().unwrap_or_default(),
                uid: object.metadata.uid.clone(),
                applied: None,
            };
            let uid = object
                .metadata
                .labels
                .as_ref()
                .map(|l| l[INSTANCE_UID_LABEL].clone());
            owned.record(&uid.unwrap_or_default(), applied);
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        LiveObjects {
            config_maps,
            ..LiveObjects::empty(owned.clone())
        }
    }

    #[test]
    fn what_an_instance_applied_is_found_by_its_label_while_it_is_there() {
        let owned = OwnedIndex::default();
        let live = caches_with(
            vec![
                config_map_meta("a", "i1", "team/web"),
                config_map_meta("b", "i1", "team/web"),
                config_map_meta("c", "i2", "team/api"),
                // A label copied onto another object without the instance's annotation.
                config_map_meta("forged", "i1", "team/other"),
            ],
            &owned,
        );
        let names = |objects: Vec<AppliedObject>| -> Vec<String> {
            objects.into_iter().map(|o| o.name).collect()
        };
        assert_eq!(names(live.applied_by("i1", "team/web")), ["a", "b"]);
        assert_eq!(names(live.applied_by("i2", "team/api")), ["c"]);
        let gone = AppliedObject {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("team".into()),
            name: "b".into(),
            uid: Some("uid-b".into()),
            applied: None,
        };
        owned.forget("i1", &gone);
        assert_eq!(names(live.applied_by("i1", "team/web")), ["a"]);
        assert!(LiveObjects::watches(&gone));
        assert!(!LiveObjects::watches(&AppliedObject {
            kind: "Secret".into(),
            ..gone
        }));
    }
}
