//! Idempotent writes to the management cluster: what every Qleet does when it creates an
//! object another replica may have created first, or deletes one that may already be gone.

use kube::api::{Api, DeleteParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// What [`create_or_get`] found.
#[derive(Debug)]
pub struct Ensured<K> {
    pub object: K,
    /// Whether this call created it (else another writer had).
    pub created: bool,
}

/// Creates `wanted`, or reads the object of that name when it exists already (another
/// replica, or an earlier pass, created it first).
pub async fn create_or_get<K>(api: &Api<K>, wanted: &K) -> Result<Ensured<K>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), wanted).await {
        Ok(object) => Ok(Ensured {
            object,
            created: true,
        }),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let object = api
                .get(&wanted.name_any())
                .await
                .map_err(Error::Management)?;
            Ok(Ensured {
                object,
                created: false,
            })
        }
        Err(error) => Err(Error::Management(error)),
    }
}

/// Deletes object `name`; one that is already gone is not an error. `true` when a delete
/// was accepted (the object may still be finalizing), `false` when there was nothing.
pub async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(Error::Management(error)),
    }
}
