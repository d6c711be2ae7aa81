//! Finalizer handling for the reconcilers: which phase an object is in, and adding or
//! removing our finalizer with optimistic concurrency (a stale write is a 409 and retried).

use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// What the reconcile must do with the object.
#[derive(Debug)]
pub enum Phase<K> {
    /// Converge it; our finalizer is in place.
    Apply(Arc<K>),
    /// It is being deleted and our finalizer still holds it: clean up, then `release`.
    Cleanup(Arc<K>),
    /// It is being deleted and our finalizer is already gone: nothing to do.
    Gone,
}

/// Works out the phase, adding `finalizer` first when the object is live and lacks it. The
/// object may come from a watch cache: when the finalizer patch finds it stale (409), the
/// phase is worked out again from the object read from the API server.
pub async fn phase<K>(api: &Api<K>, finalizer: &str, object: Arc<K>) -> Result<Phase<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match phase_of(api, finalizer, object.clone()).await {
        Err(error) if is_stale(&error) => match fresh_copy(api, &*object).await? {
            Some(fresh) => phase_of(api, finalizer, Arc::new(fresh)).await,
            None => Ok(Phase::Gone),
        },
        other => other,
    }
}

/// Whether a write failed because the object it started from was not the latest.
fn is_stale(error: &Error) -> bool {
    matches!(error, Error::Management(kube::Error::Api(status)) if status.code == 409)
}

/// `object` as the API server has it now; `None` when it is gone (or another object took its
/// name).
async fn fresh_copy<K>(api: &Api<K>, object: &K) -> Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let fresh = api
        .get_opt(&object.name_any())
        .await
        .map_err(Error::Management)?;
    Ok(fresh.filter(|fresh| fresh.uid() == object.uid()))
}

async fn phase_of<K>(api: &Api<K>, finalizer: &str, object: Arc<K>) -> Result<Phase<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let has_finalizer = object.finalizers().iter().any(|f| f == finalizer);
    match (object.meta().deletion_timestamp.is_some(), has_finalizer) {
        (true, true) => Ok(Phase::Cleanup(object)),
        (true, false) => Ok(Phase::Gone),
        (false, true) => Ok(Phase::Apply(object)),
        (false, false) => {
            let mut finalizers = object.finalizers().to_vec();
            finalizers.push(finalizer.to_owned());
            let updated = patch_finalizers(api, &*object, finalizers).await?;
            Ok(Phase::Apply(Arc::new(updated)))
        }
    }
}

/// Removes `finalizer`, letting the API server delete the object; when `object` was stale
/// (409), once more from the object read from the API server.
pub async fn release<K>(api: &Api<K>, finalizer: &str, object: &K) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match release_from(api, finalizer, object).await {
        Err(error) if is_stale(&error) => match fresh_copy(api, object).await? {
            Some(fresh) => release_from(api, finalizer, &fresh).await,
            None => Ok(()),
        },
        other => other,
    }
}

async fn release_from<K>(api: &Api<K>, finalizer: &str, object: &K) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let finalizers = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    match patch_finalizers(api, object, finalizers).await {
        Err(Error::Management(kube::Error::Api(status))) if status.code == 404 => Ok(()),
        other => other.map(|_| ()),
    }
}

async fn patch_finalizers<K>(api: &Api<K>, object: &K, finalizers: Vec<String>) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": object.resource_version()}
    });
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Management)
}
