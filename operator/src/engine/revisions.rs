//! Revisions of what an object declares: each distinct template is kept as a
//! ControllerRevision (the way Deployments, StatefulSets and DaemonSets keep theirs), named
//! `<owner>.r<N>`, numbered from 1, labelled with the owner's uid and the template's hash and
//! owned by the object. A template equal to an earlier revision (a rollback) is that revision
//! again, not a new one. Staged rollouts install earlier revisions from these records.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::writes::{create_or_get, delete_if_present};
use crate::error::{Error, Result};

pub use qleetos_crds::staged::{HASH_LABEL, OWNER_UID_LABEL, revision_name};

/// The object whose revisions these are, and where they are kept.
#[derive(Debug)]
pub struct Revisioned<'a> {
    pub api: Api<ControllerRevision>,
    pub name: &'a str,
    pub uid: &'a str,
    pub owner: OwnerReference,
    /// A label naming the object for people (`qleetos.io/profile=<name>`).
    pub label: (&'static str, String),
    /// Revisions kept beyond those in use.
    pub history_limit: usize,
}

/// A revision: its number and the hash of its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub number: i64,
    pub hash: String,
    /// Revisions beyond the history limit once this pass recorded a new one, oldest first:
    /// pruned unless in use.
    pub beyond_limit: Vec<(i64, String)>,
}

/// The hash a template is recorded under.
pub fn hash_of(template: &Value) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Revisioned<'_> {
    fn selector(&self) -> String {
        format!("{OWNER_UID_LABEL}={}", self.uid)
    }

    /// The revision holding `template`; `known` is the (number, hash) the object's status
    /// records, which spares the lookup while the template is unchanged.
    pub async fn record(&self, template: Value, known: Option<(i64, &str)>) -> Result<Revision> {
        let hash = hash_of(&template);
        if let Some((number, recorded)) = known
            && recorded == hash
        {
            return Ok(Revision {
                number,
                hash,
                beyond_limit: Vec::new(),
            });
        }
        let existing = self.list().await?;
        if let Some(same) = existing
            .iter()
            .find(|r| r.labels().get(HASH_LABEL) == Some(&hash))
        {
            return Ok(Revision {
                number: same.revision,
                hash,
                beyond_limit: Vec::new(),
            });
        }
        let number = existing.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
        create_or_get(&self.api, &self.snapshot(template, number, &hash)).await?;
        tracing::info!(owner = %self.name, revision = number, "recorded a new revision");
        let mut kept: Vec<(i64, String)> = existing
            .iter()
            .map(|r| (r.revision, r.name_any()))
            .collect();
        kept.sort();
        kept.truncate((kept.len() + 1).saturating_sub(self.history_limit));
        Ok(Revision {
            number,
            hash,
            beyond_limit: kept,
        })
    }

    fn snapshot(&self, template: Value, number: i64, hash: &str) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(revision_name(self.name, number)),
                labels: Some(
                    [
                        (OWNER_UID_LABEL.to_owned(), self.uid.to_owned()),
                        (HASH_LABEL.to_owned(), hash.to_owned()),
                        (self.label.0.to_owned(), self.label.1.clone()),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![self.owner.clone()]),
                ..Default::default()
            },
            data: Some(RawExtension(template)),
            revision: number,
        }
    }

    /// Keeps `template` as revision `number` (a template leaving the spec, so it can be
    /// rolled back to); nothing when that revision is kept already.
    pub async fn keep(&self, template: Value, number: i64) -> Result<()> {
        let hash = hash_of(&template);
        create_or_get(&self.api, &self.snapshot(template, number, &hash)).await?;
        Ok(())
    }

    /// The revision `template` would be: the number of a kept revision holding the same
    /// template (a rollback), else one past `latest` and every kept one; with what is beyond
    /// the history limit.
    pub async fn number_for(&self, template: &Value, latest: i64) -> Result<Revision> {
        let hash = hash_of(template);
        let existing = self.list().await?;
        let same = existing
            .iter()
            .find(|r| r.labels().get(HASH_LABEL) == Some(&hash));
        let number = same.map_or_else(
            || {
                existing
                    .iter()
                    .map(|r| r.revision)
                    .max()
                    .unwrap_or(0)
                    .max(latest)
                    + 1
            },
            |r| r.revision,
        );
        let mut kept: Vec<(i64, String)> = existing
            .iter()
            .map(|r| (r.revision, r.name_any()))
            .collect();
        kept.sort();
        kept.truncate(kept.len().saturating_sub(self.history_limit));
        Ok(Revision {
            number,
            hash,
            beyond_limit: kept,
        })
    }

    async fn list(&self) -> Result<Vec<ControllerRevision>> {
        let params = ListParams::default().labels(&self.selector());
        Ok(self
            .api
            .list(&params)
            .await
            .map_err(Error::Management)?
            .items)
    }

    /// The template revision `number` holds; `None` when there is no such revision of this
    /// object.
    pub async fn template(&self, number: i64) -> Result<Option<Value>> {
        let name = revision_name(self.name, number);
        let Some(found) = self.api.get_opt(&name).await.map_err(Error::Management)? else {
            return Ok(None);
        };
        if found.labels().get(OWNER_UID_LABEL).map(String::as_str) != Some(self.uid) {
            return Ok(None);
        }
        Ok(Some(found.data.map(|d| d.0).unwrap_or_default()))
    }

    /// Deletes the revisions beyond the history limit, never one in `in_use`.
    pub async fn prune(&self, revision: &Revision, in_use: &BTreeSet<i64>) -> Result<()> {
        for (number, name) in &revision.beyond_limit {
            if !in_use.contains(number) {
                delete_if_present(&self.api, name).await?;
            }
        }
        Ok(())
    }

    /// Deletes every revision of an object being deleted.
    pub async fn remove_all(&self) -> Result<()> {
        let params = ListParams::default().labels(&self.selector());
        self.api
            .delete_collection(&DeleteParams::default(), &params)
            .await
            .map_err(Error::Management)?;
        Ok(())
    }
}
