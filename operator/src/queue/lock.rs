//! Per-object reconcile locks in a NATS key-value bucket. Taking a lock is an atomic
//! create; the holder refreshes it while it works; releasing deletes it only if it is still
//! the holder's revision, which proves nobody else held it meanwhile.

use async_nats::jetstream::kv::{self, CreateErrorKind};
use bytes::Bytes;

use crate::error::{Error, Result};

/// A held lock.
#[derive(Debug)]
pub struct Lock {
    key: String,
    holder: Bytes,
    revision: u64,
}

/// How a release went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The lock was still ours: nobody else held it while we worked.
    Clean,
    /// The lock had expired or was taken over; counted as an error in the metrics.
    Lost,
}

impl Lock {
    /// Takes the lock on `key`, or `None` when another holder has it.
    pub async fn acquire(store: &kv::Store, key: String, holder: &str) -> Result<Option<Lock>> {
        let holder = Bytes::from(holder.to_owned());
        match store.create(&key, holder.clone()).await {
            Ok(revision) => Ok(Some(Lock {
                key,
                holder,
                revision,
            })),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(error) => Err(Error::broker(error)),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Extends the lock's lifetime; fails if it is no longer ours.
    pub async fn refresh(&mut self, store: &kv::Store) -> Result<()> {
        self.revision = store
            .update(&self.key, self.holder.clone(), self.revision)
            .await
            .map_err(Error::broker)?;
        Ok(())
    }

    pub async fn release(self, store: &kv::Store) -> Release {
        match store
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
        {
            Ok(()) => Release::Clean,
            Err(error) => {
                tracing::error!(key = %self.key, %error, "lock was lost while reconciling");
                Release::Lost
            }
        }
    }
}
