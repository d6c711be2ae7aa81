//! Dynamic access to one runtime: discovery of kinds, server-side apply, get and delete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope, pinned_kind};
use kube::{Api, Client};
use qleetos_crds::{AppliedObject, FIELD_MANAGER, Manifest};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::render::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

type KindCache = HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>;

/// A client of one runtime with its discovery cache.
#[derive(Clone)]
pub struct RuntimeClient {
    name: String,
    client: Client,
    kinds: Arc<Mutex<KindCache>>,
}

impl std::fmt::Debug for RuntimeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RuntimeClient {
    pub fn new(name: &str, client: Client) -> Self {
        Self {
            name: name.to_owned(),
            client,
            kinds: Arc::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether both handles share one connection (the pool rebuilds it when the
    /// kubeconfig Secret changes).
    pub fn same_as(&self, other: &RuntimeClient) -> bool {
        Arc::ptr_eq(&self.kinds, &other.kinds)
    }

    /// Applies one rendered manifest with server-side apply (strict field validation), putting
    /// namespaced objects without a namespace into `default_namespace`.
    pub async fn apply(
        &self,
        manifest: &Manifest,
        default_namespace: &str,
    ) -> Result<AppliedObject> {
        let target = self.target_of(manifest, default_namespace).await?;
        let mut object = manifest.0.clone();
        if let Some(namespace) = &target.object.namespace {
            if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
                metadata.insert("namespace".into(), Value::String(namespace.clone()));
            }
            self.ensure_namespace(namespace).await?;
        }
        let params = PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict();
        target
            .api
            .patch(
                &target.object.name,
                &params,
                &Patch::Apply(Value::Object(object)),
            )
            .await
            .map_err(|e| self.api_error(&target.object, "applying", e))?;
        Ok(target.object)
    }

    /// Reads an applied object back; `None` when it no longer exists.
    pub async fn get(&self, object: &AppliedObject) -> Result<Option<DynamicObject>> {
        let api = self.api_for(object).await?;
        api.get_opt(&object.name)
            .await
            .map_err(|e| self.api_error(object, "reading", e))
    }

    /// Deletes an applied object (dependents in the background). Returns true once it is gone.
    pub async fn delete(&self, object: &AppliedObject) -> Result<bool> {
        let api = match self.api_for(object).await {
            Ok(api) => api,
            Err(Error::UnknownKind { .. }) => return Ok(true),
            Err(other) => return Err(other),
        };
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&object.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(true),
            Err(e) => return Err(self.api_error(object, "deleting", e)),
        }
        Ok(self.get(object).await?.is_none())
    }

    async fn ensure_namespace(&self, name: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if namespaces
            .get_opt(name)
            .await
            .map_err(|e| self.unreachable(e))?
            .is_some()
        {
            return Ok(());
        }
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.to_owned());
        namespace.metadata.labels =
            Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())].into());
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    async fn target_of(&self, manifest: &Manifest, default_namespace: &str) -> Result<Target> {
        let api_version = manifest.api_version().unwrap_or_default().to_owned();
        let kind = manifest.kind().unwrap_or_default().to_owned();
        let (resource, capabilities) = self.resolve(&api_version, &kind).await?;
        let namespace = match capabilities.scope {
            Scope::Namespaced => Some(manifest.namespace().unwrap_or(default_namespace).to_owned()),
            Scope::Cluster => None,
        };
        let api = match &namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let object = AppliedObject {
            api_version,
            kind,
            namespace,
            name: manifest.name().unwrap_or_default().to_owned(),
        };
        Ok(Target { api, object })
    }

    async fn api_for(&self, object: &AppliedObject) -> Result<Api<DynamicObject>> {
        let (resource, _) = self.resolve(&object.api_version, &object.kind).await?;
        Ok(match &object.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        })
    }

    async fn resolve(
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

struct Target {
    api: Api<DynamicObject>,
    object: AppliedObject,
}

/// `Kind namespace/name` or `Kind name` for cluster-scoped objects.
pub fn describe(object: &AppliedObject) -> String {
    match &object.namespace {
        Some(ns) => format!("{} {ns}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}
