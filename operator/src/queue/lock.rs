//! Per-object reconcile locks in a NATS key-value bucket. Taking a lock is an atomic
//! create; the holder refreshes it while it works (the bucket's max age is the lock TTL);
//! releasing deletes it only if it is still the holder's revision, which proves nobody else
//! held it meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use bytes::Bytes;

use crate::error::{Error, Result};

/// Numbers the acquisitions of this process, so a lock's value names one acquisition.
static ACQUISITIONS: AtomicU64 = AtomicU64::new(0);

/// How long a release NATS refuses at once (no responders while a replicated bucket elects a
/// leader) is tried again: about a leader election. A try that itself timed out (NATS frozen
/// or gone) has used this up, so such a release is not held up further.
const RELEASE_RETRY_FOR: Duration = Duration::from_secs(4);
const RELEASE_RETRY_FIRST_DELAY: Duration = Duration::from_millis(250);

/// A held lock.
#[derive(Debug)]
pub struct Lock {
    key: String,
    /// `<replica>#<acquisition>`: tells this acquisition from any other, even of the same
    /// replica.
    holder: Bytes,
    revision: u64,
}

/// What a refresh found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Still ours, with a new lifetime.
    Held,
    /// The key expired or another holder has it: whatever we do now may overlap theirs.
    Lost,
}

/// How a release went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The lock was still ours: nobody else held it while we worked.
    Clean,
    /// The lock had expired or was taken over; counted as an error in the metrics.
    Lost,
    /// NATS did not answer (or a retry found the key changed, perhaps by our own delete that
    /// landed unanswered); a key still there expires with its TTL.
    Unconfirmed,
}

impl Release {
    /// The `outcome` label of `qleetos_lock_releases_total`.
    pub fn label(self) -> &'static str {
        match self {
            Release::Clean => "clean",
            Release::Lost => "lost",
            Release::Unconfirmed => "unconfirmed",
        }
    }
}

impl Lock {
    /// Takes the lock on `key`, or `None` when another holder has it.
    pub async fn acquire(store: &kv::Store, key: String, replica: &str) -> Result<Option<Lock>> {
        let acquisition = ACQUISITIONS.fetch_add(1, Ordering::Relaxed);
        let holder = Bytes::from(format!("{replica}#{acquisition}"));
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

    /// Extends the lock's lifetime. `Err` is a transient failure (NATS did not answer): the
    /// lock may still be ours, and the next refresh tells.
    pub async fn refresh(&mut self, store: &kv::Store) -> Result<Refresh> {
        match store
            .update(&self.key, self.holder.clone(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                Ok(Refresh::Held)
            }
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                Ok(self.adopt_landed_update(store).await)
            }
            Err(error) => Err(Error::broker(error)),
        }
    }

    /// After a revision mismatch: an earlier refresh whose answer timed out may have landed,
    /// in which case the key still holds this acquisition's value at a newer revision.
    async fn adopt_landed_update(&mut self, store: &kv::Store) -> Refresh {
        match store.entry(&self.key).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && entry.value == self.holder =>
            {
                self.revision = entry.revision;
                Refresh::Held
            }
            _ => Refresh::Lost,
        }
    }

    pub async fn release(mut self, store: &kv::Store) -> Release {
        let mut outcome = self.delete(store).await;
        if outcome == Release::Lost && self.adopt_landed_update(store).await == Refresh::Held {
            outcome = self.delete(store).await;
        }
        if outcome == Release::Lost {
            tracing::error!(key = %self.key, "lock was lost while reconciling");
        }
        outcome
    }

    /// Deletes the key at our revision. A refusal (a replicated bucket electing a new leader
    /// after losing a server) is retried for [`RELEASE_RETRY_FOR`], since a lock left to
    /// expire holds its object for a whole TTL; after a retry, a revision mismatch may be our
    /// own delete that landed unanswered, so it is reported as unconfirmed, not lost.
    async fn delete(&self, store: &kv::Store) -> Release {
        let give_up_at = tokio::time::Instant::now() + RELEASE_RETRY_FOR;
        let mut delay = RELEASE_RETRY_FIRST_DELAY;
        let mut retried = false;
        loop {
            let error = match store
                .delete_expect_revision(&self.key, Some(self.revision))
                .await
            {
                Ok(()) => return Release::Clean,
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => {
                    return if retried {
                        Release::Unconfirmed
                    } else {
                        Release::Lost
                    };
                }
                Err(error) => error,
            };
            if tokio::time::Instant::now() + delay > give_up_at {
                tracing::warn!(key = %self.key, %error, "could not release the lock; it expires with its TTL");
                return Release::Unconfirmed;
            }
            tracing::debug!(key = %self.key, %error, "releasing the lock again");
            tokio::time::sleep(delay).await;
            delay *= 2;
            retried = true;
        }
    }
}
