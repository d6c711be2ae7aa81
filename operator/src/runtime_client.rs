//! Dynamic access to one runtime: discovery of kinds, ownership-checked server-side apply,
//! get and owned delete, as the operator or impersonating a tenant.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{
    DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope, pinned_kind};
use kube::{Api, Client, Config, ResourceExt};
use qleetos_crds::{AppliedObject, AppliedRevision, FIELD_MANAGER, Manifest};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::render::{
    ADOPT_ANNOTATION, INSTANCE_ANNOTATION, INSTANCE_UID_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use crate::tenancy::{TENANT_BINDING, TENANT_GROUP};

mod capabilities;
mod dry_run;
mod kept;
mod tenant_space;

pub use capabilities::Capabilities;
pub use dry_run::DryRun;
pub use tenant_space::{TENANT_GUARD, TENANT_LABEL, TenantNamespace};

type KindCache = HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>;

/// A client of one runtime with its discovery cache.
#[derive(Clone)]
pub struct RuntimeClient {
    name: String,
    client: Client,
    config: Option<Config>,
    kinds: Arc<Mutex<KindCache>>,
    tenants: Arc<Mutex<HashMap<String, Client>>>,
    /// Namespaces and tenant bindings known to be in place, so a pass does not ask again;
    /// forgotten when an apply is refused for a missing namespace or permission.
    ensured: Arc<Mutex<HashSet<String>>>,
    capabilities: capabilities::CachedCapabilities,
}

impl std::fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One rendered manifest resolved against the runtime's discovery: where it goes.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub object: AppliedObject,
    resource: ApiResource,
}

/// Who applies an object and what it may take over.
#[derive(Debug, Clone, Copy)]
pub struct Ownership<'a> {
    /// uid of the WorkloadInstance applying the object (its ownership label value).
    pub owner_uid: &'a str,
    /// The instance's own field manager.
    pub field_manager: &'a str,
    /// Whether the object is already this instance's (recorded in its inventory with a uid).
    pub known: bool,
    /// Whether an existing object QleetOS did not create may be taken over.
    pub adopt: bool,
}

/// What deleting an owned object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Gone,
    Pending,
    /// The live object is not this instance's (another owner, or re-created): left alone.
    NotOurs(String),
}

impl RuntimeClient {
    pub fn new(name: &str, client: Client) -> Self {
        Self {
            name: name.to_owned(),
            client,
            config: None,
            kinds: Arc::default(),
            tenants: Arc::default(),
            ensured: Arc::default(),
            capabilities: Arc::default(),
        }
    }

    /// A client built from `config`, able to derive impersonating clients for tenants.
    pub fn from_config(name: &str, config: Config) -> Result<Self, kube::Error> {
        let client = Client::try_from(config.clone())?;
        Ok(Self {
            config: Some(config),
            ..Self::new(name, client)
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether both handles share one connection (the pool rebuilds it when the
    /// kubeconfig Secret changes).
    pub fn same_as(&self, other: &RuntimeClient) -> bool {
        Arc::ptr_eq(&self.kinds, &other.kinds)
    }

    /// The same runtime reached as `user` (group `qleetos:tenants`) through impersonation,
    /// so the runtime's RBAC for that identity decides what it may write. Shares discovery.
    pub fn as_tenant(&self, user: &str) -> Result<RuntimeClient> {
        let Some(config) = &self.config else {
            return Err(Error::ApplyFailed(format!(
                "runtime {} has no client configuration to impersonate tenants with",
                self.name
            )));
        };
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let client = match tenants.get(user) {
            Some(client) => client.clone(),
            None => {
                let mut config = config.clone();
                config.auth_info.impersonate = Some(user.to_owned());
                config.auth_info.impersonate_groups = Some(vec![TENANT_GROUP.to_owned()]);
                let client = Client::try_from(config).map_err(|e| self.unreachable(e))?;
                tenants.insert(user.to_owned(), client.clone());
                client
            }
        };
        Ok(RuntimeClient {
            client,
            config: None,
            tenants: Arc::default(),
            ..self.clone()
        })
    }

    /// Where `manifest` goes: its kind's resource and scope, and namespaced objects without
    /// a namespace put into `default_namespace`.
    pub async fn resolve(&self, manifest: &Manifest, default_namespace: &str) -> Result<Resolved> {
        let api_version = manifest.api_version().unwrap_or_default().to_owned();
        let kind = manifest.kind().unwrap_or_default().to_owned();
        let (resource, capabilities) = self.discover(&api_version, &kind).await?;
        let namespace = match capabilities.scope {
            Scope::Namespaced => Some(manifest.namespace().unwrap_or(default_namespace).to_owned()),
            Scope::Cluster => None,
        };
        let object = AppliedObject {
            api_version,
            kind,
            namespace,
            name: manifest.name().unwrap_or_default().to_owned(),
            uid: None,
            applied: None,
        };
        Ok(Resolved { object, resource })
    }

    /// Applies one resolved manifest with server-side apply (strict field validation) under
    /// the instance's field manager, refusing to take over an object QleetOS did not create
    /// for this instance. Returns the object with the live uid.
    pub async fn apply_owned(
        &self,
        resolved: &Resolved,
        manifest: &Manifest,
        ownership: &Ownership<'_>,
    ) -> Result<AppliedObject> {
        let api = self.api_with(&resolved.resource, resolved.object.namespace.as_deref());
        let mut force = ownership.known;
        if !force {
            let live = api.get_opt(&resolved.object.name).await.map_err(|e| {
                self.forget_ensured_on(&e);
                self.api_error(&resolved.object, "reading", e)
            })?;
            if let Some(live) = live {
                self.check_takeover(resolved, manifest, ownership, &live)?;
                force = true;
            }
        }
        let object = applied_form(manifest, resolved.object.namespace.as_deref());
        let digest = digest_of(&object);
        let mut params = PatchParams::apply(ownership.field_manager).validation_strict();
        params.force = force;
        let applied = api
            .patch(
                &resolved.object.name,
                &params,
                &Patch::Apply(Value::Object(object)),
            )
            .await
            .map_err(|e| match e {
                kube::Error::Api(status) if status.code == 409 => {
                    self.conflict(&resolved.object, &status.message)
                }
                other => {
                    self.forget_ensured_on(&other);
                    self.api_error(&resolved.object, "applying", other)
                }
            })?;
        Ok(AppliedObject {
            uid: applied.uid(),
            applied: Some(AppliedRevision {
                digest,
                resource_version: applied.resource_version().unwrap_or_default(),
                generation: applied.metadata.generation,
            }),
            ..resolved.object.clone()
        })
    }

    /// Refuses to take over a live object that is not this instance's, unless QleetOS did not
    /// create it and it may be adopted (or retaken after a `keep`).
    fn check_takeover(
        &self,
        resolved: &Resolved,
        manifest: &Manifest,
        ownership: &Ownership<'_>,
        live: &DynamicObject,
    ) -> Result<()> {
        let ours = owner_uid_of(live) == Some(ownership.owner_uid);
        // Only objects QleetOS did not create: another instance's stay a conflict.
        let adoptable = owner_uid_of(live).is_none()
            && ((ownership.adopt && wants_adoption(manifest)) || kept::retaken(manifest, live));
        if !ours && !adoptable {
            return Err(self.conflict(&resolved.object, &describe_owner(live)));
        }
        Ok(())
    }

    /// Reads an applied object back; `None` when it no longer exists.
    pub async fn get(&self, object: &AppliedObject) -> Result<Option<DynamicObject>> {
        let api = self.api_for(object).await?;
        self.read(&api, object).await
    }

    /// `None` also when the object's kind is no longer served (its CRD was removed, taking
    /// every object of the kind with it); the cached discovery of the kind is dropped then.
    async fn read(
        &self,
        api: &Api<DynamicObject>,
        object: &AppliedObject,
    ) -> Result<Option<DynamicObject>> {
        match api.get_opt(&object.name).await {
            Ok(found) => Ok(found),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.forget_kind(&object.api_version, &object.kind);
                Ok(None)
            }
            Err(error) => Err(self.api_error(object, "reading", error)),
        }
    }

    fn forget_kind(&self, api_version: &str, kind: &str) {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&GroupVersionKind::gvk(group, version, kind));
    }

    /// Deletes an object this instance applied (dependents in the background), only when the
    /// live object still carries the instance's ownership label, with a uid precondition.
    pub async fn delete_owned(&self, object: &AppliedObject, owner_uid: &str) -> Result<Deletion> {
        let api = match self.api_for(object).await {
            Ok(api) => api,
            Err(Error::UnknownKind { .. }) => return Ok(Deletion::Gone),
            Err(other) => return Err(other),
        };
        let Some(live) = self.read(&api, object).await? else {
            return Ok(Deletion::Gone);
        };
        let recorded_uid_differs = object
            .uid
            .as_ref()
            .is_some_and(|u| live.uid().as_ref() != Some(u));
        if owner_uid_of(&live) != Some(owner_uid) || recorded_uid_differs {
            return Ok(Deletion::NotOurs(describe_owner(&live)));
        }
        if kept::is_kept(&live) {
            return self.let_go(&api, object).await;
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: live.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&object.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Deletion::Gone),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                return Ok(Deletion::NotOurs("an object re-created meanwhile".into()));
            }
            Err(e) => return Err(self.api_error(object, "deleting", e)),
        }
        Ok(match self.get(object).await? {
            None => Deletion::Gone,
            Some(_) => Deletion::Pending,
        })
    }

    /// Binds ClusterRole `role` to tenant `user` in runtime namespace `namespace`
    /// (RoleBinding `qleetos-tenant`), as the operator; writes only when the binding is
    /// missing or different.
    pub async fn ensure_tenant_binding(
        &self,
        namespace: &str,
        role: &str,
        user: &str,
    ) -> Result<()> {
        let key = format!("binding/{namespace}/{role}/{user}");
        if self.is_ensured(&key) {
            return Ok(());
        }
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": TENANT_BINDING, "namespace": namespace,
                         "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .map_err(|e| Error::ApplyFailed(format!("tenant RoleBinding: {e}")))?;
        let bindings = Api::<RoleBinding>::namespaced(self.client.clone(), namespace);
        let live = bindings
            .get_opt(TENANT_BINDING)
            .await
            .map_err(|e| self.unreachable(e))?;
        if live.is_none_or(|live| !binds_the_same(&live, &binding)) {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            bindings
                .patch(TENANT_BINDING, &params, &Patch::Apply(&binding))
                .await
                .map_err(|e| match e {
                    kube::Error::Api(status) => Error::ApplyFailed(format!(
                        "binding ClusterRole {role} to the tenant in namespace {namespace} on runtime {}: {}",
                        self.name, status.message
                    )),
                    other => self.unreachable(other),
                })?;
        }
        self.remember_ensured(key);
        Ok(())
    }

    fn is_ensured(&self, key: &str) -> bool {
        self.ensured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn remember_ensured(&self, key: String) {
        self.ensured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
    }

    /// A missing namespace (404) or permission (403) may mean a namespace or tenant binding
    /// was removed behind QleetOS's back: the next pass checks them all again.
    fn forget_ensured_on(&self, error: &kube::Error) {
        if matches!(error, kube::Error::Api(status) if status.code == 404 || status.code == 403) {
            self.ensured
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    async fn api_for(&self, object: &AppliedObject) -> Result<Api<DynamicObject>> {
        let (resource, _) = self.discover(&object.api_version, &object.kind).await?;
        Ok(self.api_with(&resource, object.namespace.as_deref()))
    }

    fn api_with(&self, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    async fn discover(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities)> {
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        if let Some(found) = self
            .kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&gvk)
        {
            return Ok(found.clone());
        }
        let found = pinned_kind(&self.client, &gvk).await.map_err(|e| match e {
            kube::Error::Discovery(_) => self.unknown_kind(api_version, kind),
            kube::Error::Api(status) if status.code == 404 => self.unknown_kind(api_version, kind),
            other => self.unreachable(other),
        })?;
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(gvk, found.clone());
        Ok(found)
    }

    fn unknown_kind(&self, api_version: &str, kind: &str) -> Error {
        Error::UnknownKind {
            runtime: self.name.clone(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    fn conflict(&self, object: &AppliedObject, owner: &str) -> Error {
        Error::Conflict(format!(
            "{} on runtime {} exists and is not this instance's: {owner}; remove it, rename the manifest, or (where a TenantPolicy allows adoption) annotate the manifest {ADOPT_ANNOTATION}: \"true\"",
            describe(object),
            self.name
        ))
    }

    fn unreachable(&self, source: kube::Error) -> Error {
        Error::RuntimeUnreachable {
            runtime: self.name.clone(),
            source,
        }
    }

    /// API errors with a status are the runtime rejecting the object; anything else means
    /// the runtime could not be reached.
    fn api_error(&self, object: &AppliedObject, doing: &str, error: kube::Error) -> Error {
        match error {
            kube::Error::Api(status)
                if status.code < 500 || status.code == 500 && !status.message.is_empty() =>
            {
                let location = describe(object);
                Error::ApplyFailed(format!(
                    "{doing} {location} on runtime {}: {}",
                    self.name, status.message
                ))
            }
            other => self.unreachable(other),
        }
    }
}

/// `manifest` as it is applied: with the namespace it was resolved into.
pub fn applied_form(manifest: &Manifest, namespace: Option<&str>) -> Map<String, Value> {
    let mut object = manifest.0.clone();
    if let (Some(namespace), Some(Value::Object(metadata))) =
        (namespace, object.get_mut("metadata"))
    {
        metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
    }
    object
}

/// SHA-256 of an applied form, hex-encoded: tells whether a manifest changed since it was
/// applied.
pub fn digest_of(object: &Map<String, Value>) -> String {
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether a live tenant binding grants what `wanted` does, to the same subjects, with
/// QleetOS's label.
fn binds_the_same(live: &RoleBinding, wanted: &RoleBinding) -> bool {
    live.role_ref == wanted.role_ref
        && live.subjects == wanted.subjects
        && live.labels().get(MANAGED_BY_LABEL) == wanted.labels().get(MANAGED_BY_LABEL)
}

/// The instance uid in an object's ownership label.
fn owner_uid_of(object: &DynamicObject) -> Option<&str> {
    object.labels().get(INSTANCE_UID_LABEL).map(String::as_str)
}

fn wants_adoption(manifest: &Manifest) -> bool {
    manifest
        .0
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(ADOPT_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

/// Who holds a live object: the QleetOS instance named in its annotation, or its field
/// managers when QleetOS did not create it.
fn describe_owner(object: &DynamicObject) -> String {
    if let Some(instance) = object.annotations().get(INSTANCE_ANNOTATION) {
        return format!("it belongs to WorkloadInstance {instance}");
    }
    let managers: Vec<&str> = object
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    if managers.is_empty() {
        "it was not created by QleetOS".to_owned()
    } else {
        format!(
            "it was not created by QleetOS (field managers: {})",
            managers.join(", ")
        )
    }
}

/// `Kind namespace/name` or `Kind name` for cluster-scoped objects.
pub fn describe(object: &AppliedObject) -> String {
    match &object.namespace {
        Some(ns) => format!("{} {ns}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}
