//! The applier every layer applies objects into a runtime through: server-side apply under
//! the owner's field manager with ownership checks, an inventory that never loses an applied
//! object, pruning and removal of owned objects only (in teardown order), and rollout health.

mod hooks;
pub mod inventory;
pub mod live;

use qleetos_crds::{AppliedObject, Manifest, ResourceHealth};

use crate::error::{Error, Result};
use crate::health::{WATCHED_KINDS, add_pod_failure, health_of};
use crate::runtime_client::{
    Deletion, Ownership, Resolved, RuntimeClient, applied_form, describe, digest_of,
};
use live::LiveObjects;

/// One object an owner wants in the runtime.
#[derive(Debug, Clone)]
pub struct Desired {
    pub manifest: Manifest,
    pub resolved: Resolved,
}

/// Who applies, and what it may take over.
#[derive(Debug, Clone)]
pub struct Applier<'a> {
    /// The identity objects are applied as (a tenant's impersonating client, or the operator).
    pub client: &'a RuntimeClient,
    /// The owner's uid, the value of the ownership label.
    pub owner_uid: &'a str,
    pub field_manager: String,
    /// Whether manifests annotated for adoption may take over objects QleetOS did not create.
    pub adopt: bool,
    /// The runtime's live-object caches: an object they show unchanged since its last apply,
    /// with its manifest unchanged too, is not applied again.
    pub live: Option<&'a LiveObjects>,
}

/// What one pass produced, whether or not it fully succeeded.
#[derive(Debug)]
pub struct Outcome {
    /// Everything the owner may have in the runtime now: the next pass's `previous`.
    pub inventory: Vec<AppliedObject>,
    /// What this pass applied.
    pub applied: Vec<AppliedObject>,
    pub failure: Option<Error>,
    /// Set when the pass stopped at a Helm hook Job that has not completed yet: what comes
    /// after it waits for the next pass, and nothing is pruned.
    pub waiting: Option<String>,
}

/// Where a pass stopped at a hook Job: what is kept of what follows it, and why.
struct Stop {
    kept: Vec<AppliedObject>,
    state: std::result::Result<String, Error>,
}

impl Stop {
    /// The previous entries of the objects after the hook stay recorded (not pruned, not lost).
    fn new(
        rest: &[Desired],
        previous: &[AppliedObject],
        state: std::result::Result<String, Error>,
    ) -> Self {
        let kept = rest
            .iter()
            .filter_map(|d| inventory::find(previous, &d.resolved.object).cloned())
            .collect();
        Stop { kept, state }
    }

    fn outcome(self, previous: &[AppliedObject], applied: Vec<AppliedObject>) -> Outcome {
        // Nothing is pruned while the chart is half applied: whatever was recorded stays.
        let unpruned = previous.iter().cloned().chain(self.kept);
        let inventory = inventory::merged(unpruned.chain(applied.iter().cloned()));
        let (waiting, failure) = match self.state {
            Ok(waiting) => (Some(waiting), None),
            Err(error) => (None, Some(error)),
        };
        Outcome {
            inventory,
            applied,
            failure,
            waiting,
        }
    }
}

/// The inventory to record before applying `desired`: `previous` plus every desired object
/// not in it yet (without a uid), or `None` when nothing new needs it. Recording it first
/// means a pass that stops half-way (crash, timeout) leaves no applied object unrecorded.
/// Objects `found_again` says a later pass finds without a record (the drift watches' caches
/// keep them by their owner's label) need no record first: when they are all that is new,
/// nothing is written.
pub fn with_pending(
    previous: &[AppliedObject],
    desired: &[Desired],
    found_again: impl Fn(&AppliedObject) -> bool,
) -> Option<Vec<AppliedObject>> {
    let wanted: Vec<AppliedObject> = desired.iter().map(|d| d.resolved.object.clone()).collect();
    inventory::with_pending(previous, wanted, found_again)
}

impl Applier<'_> {
    /// Applies every desired object, then prunes what `previous` holds and is no longer
    /// desired. `unresolved` are manifests the runtime cannot resolve yet (kind not served):
    /// their previous entries are kept.
    pub async fn converge(
        &self,
        desired: &[Desired],
        unresolved: &[Manifest],
        previous: &[AppliedObject],
    ) -> Outcome {
        let mut applied = Vec::new();
        let mut kept = Vec::new();
        let mut failure = None;
        for (index, wanted) in desired.iter().enumerate() {
            let object = &wanted.resolved.object;
            if let Some(unchanged) = self.unchanged(wanted, previous) {
                applied.push(unchanged.clone());
                if let Some(stop) = self
                    .hook_gate(wanted, &desired[index + 1..], previous)
                    .await
                {
                    return stop.outcome(previous, applied);
                }
                continue;
            }
            let ownership = Ownership {
                owner_uid: self.owner_uid,
                field_manager: &self.field_manager,
                known: inventory::is_known(previous, object),
                adopt: self.adopt,
            };
            match self
                .client
                .apply_owned(&wanted.resolved, &wanted.manifest, &ownership)
                .await
            {
                Ok(object) => {
                    applied.push(object);
                    if let Some(stop) = self
                        .hook_gate(wanted, &desired[index + 1..], previous)
                        .await
                    {
                        return stop.outcome(previous, applied);
                    }
                }
                Err(error @ Error::RuntimeUnreachable { .. }) => {
                    let pending = desired.iter().map(|d| d.resolved.object.clone());
                    let inventory = previous.iter().cloned().chain(pending).chain(applied);
                    return Outcome {
                        inventory: inventory::merged(inventory),
                        applied: Vec::new(),
                        failure: Some(error),
                        waiting: None,
                    };
                }
                Err(error) => {
                    let keep_pending = !matches!(error, Error::Conflict(_));
                    if let Some(entry) = inventory::find(previous, object)
                        && (entry.uid.is_some() || keep_pending)
                    {
                        kept.push(entry.clone());
                    }
                    failure.get_or_insert(error);
                }
            }
        }
        let unwanted = previous.iter().filter(|entry| {
            !desired.iter().any(|d| d.resolved.object.same_object(entry))
                && !unresolved.iter().any(|m| might_be(m, entry))
        });
        let still_wanted = previous
            .iter()
            .filter(|entry| unresolved.iter().any(|m| might_be(m, entry)));
        kept.extend(still_wanted.cloned());
        let (left, prune_failure) = self.prune(unwanted.cloned().collect()).await;
        kept.extend(left);
        Outcome {
            inventory: inventory::merged(kept.into_iter().chain(applied.iter().cloned())),
            applied,
            failure: failure.or(prune_failure),
            waiting: None,
        }
    }

    /// After a Helm hook Job (`helm.sh/hook` pre/post install or upgrade) is applied: `None`
    /// once it has completed, else where the pass stops (waiting for it, or failed).
    async fn hook_gate(
        &self,
        wanted: &Desired,
        rest: &[Desired],
        previous: &[AppliedObject],
    ) -> Option<Stop> {
        if !crate::chart::is_awaited_hook(&wanted.manifest) {
            return None;
        }
        let object = &wanted.resolved.object;
        let live = match self.client.get(object).await {
            Ok(live) => live,
            Err(error) => return Some(Stop::new(rest, previous, Err(error))),
        };
        let status = live.map(|l| l.data["status"].clone()).unwrap_or_default();
        let job = format!("hook Job {}", describe(object));
        let state = match hooks::job_state(&status) {
            hooks::JobState::Complete => return None,
            hooks::JobState::Running => Ok(format!(
                "{job} has not completed yet; the rest of the chart follows it"
            )),
            hooks::JobState::Failed(why) => Err(Error::ApplyFailed(format!("{job} failed: {why}"))),
        };
        Some(Stop::new(rest, previous, state))
    }

    /// The inventory entry of `wanted` when the live object is still as this owner last applied
    /// it from the same manifest: nothing to write.
    fn unchanged<'p>(
        &self,
        wanted: &Desired,
        previous: &'p [AppliedObject],
    ) -> Option<&'p AppliedObject> {
        let recorded = inventory::find(previous, &wanted.resolved.object)?;
        let live = self.live?.meta(recorded)?;
        let form = applied_form(
            &wanted.manifest,
            wanted.resolved.object.namespace.as_deref(),
        );
        live::unchanged_since_applied(recorded, &live, &wanted.manifest, &digest_of(&form))
            .then_some(recorded)
    }

    /// Deletes owned objects no longer wanted, in teardown order; returns what must stay in
    /// the inventory (not yet gone, or not deletable now).
    async fn prune(&self, unwanted: Vec<AppliedObject>) -> (Vec<AppliedObject>, Option<Error>) {
        let mut left = Vec::new();
        let mut failure = None;
        for object in inventory::teardown_order(unwanted) {
            match self.client.delete_owned(&object, self.owner_uid).await {
                Ok(Deletion::Gone) => tracing::info!(object = %describe(&object), "pruned"),
                Ok(Deletion::NotOurs(owner)) => {
                    tracing::info!(object = %describe(&object), %owner, "not pruned: no longer ours");
                }
                Ok(Deletion::Pending) => left.push(object),
                Err(error) => {
                    left.push(object);
                    failure.get_or_insert(error);
                }
            }
        }
        (left, failure)
    }

    /// Removes every owned object of `inventory`, one teardown tier at a time: a tier is
    /// only started once the tiers before it are gone. Returns what remains.
    pub async fn remove(&self, inventory: &[AppliedObject]) -> Result<Vec<AppliedObject>> {
        let ordered = inventory::teardown_order(inventory.to_vec());
        let mut remaining = Vec::new();
        for object in ordered {
            let tier = inventory::teardown_tier(&object.kind);
            if remaining
                .iter()
                .any(|r: &AppliedObject| inventory::teardown_tier(&r.kind) < tier)
            {
                remaining.push(object);
                continue;
            }
            match self.client.delete_owned(&object, self.owner_uid).await? {
                Deletion::Gone | Deletion::NotOurs(_) => {}
                Deletion::Pending => remaining.push(object),
            }
        }
        Ok(remaining)
    }
}

/// Resolves every rendered manifest against the runtime's discovery. Manifests of kinds the
/// runtime does not serve yet are returned apart, with the first such error.
pub async fn resolve(
    client: &RuntimeClient,
    rendered: Vec<Manifest>,
    namespace: &str,
) -> Result<(Vec<Desired>, Vec<Manifest>, Option<Error>)> {
    let mut desired = Vec::new();
    let mut unresolved = Vec::new();
    let mut failure = None;
    for manifest in rendered {
        match client.resolve(&manifest, namespace).await {
            Ok(resolved) => desired.push(Desired { manifest, resolved }),
            Err(error @ Error::UnknownKind { .. }) => {
                unresolved.push(manifest);
                failure.get_or_insert(error);
            }
            Err(error) => return Err(error),
        }
    }
    Ok((desired, unresolved, failure))
}

/// Health of the objects judged by a condition, read from the runtime; an object not there
/// yet is unhealthy.
pub async fn read_checks(
    client: &RuntimeClient,
    checks: &[qleetos_crds::HealthCheck],
) -> Result<Vec<ResourceHealth>> {
    let mut health = Vec::new();
    for check in checks {
        let object = AppliedObject {
            api_version: check.api_version.clone(),
            kind: check.kind.clone(),
            namespace: check.namespace.clone(),
            name: check.name.clone(),
            uid: None,
            applied: None,
        };
        let live = match client.get(&object).await {
            Ok(live) => live.map(|l| serde_json::to_value(&l).unwrap_or_default()),
            Err(Error::UnknownKind { .. }) => None,
            Err(error) => return Err(error),
        };
        health.push(crate::health::condition_health(
            &live.unwrap_or_default(),
            check,
        ));
    }
    Ok(health)
}

/// Rollout health of the workload controllers among `applied`, read from the runtime.
pub async fn read_health(
    client: &RuntimeClient,
    applied: &[AppliedObject],
) -> Result<Vec<ResourceHealth>> {
    let mut health = Vec::new();
    for object in applied
        .iter()
        .filter(|o| WATCHED_KINDS.contains(&o.kind.as_str()))
    {
        if let Some(live) = client.get(object).await? {
            let value = serde_json::to_value(&live).unwrap_or_default();
            if let Some(mut rollout) = health_of(&value) {
                add_pod_failure(client.client(), &value, &mut rollout).await;
                health.push(rollout);
            }
        }
    }
    Ok(health)
}

/// Whether a manifest the runtime cannot resolve may be the object of `entry`.
fn might_be(manifest: &Manifest, entry: &AppliedObject) -> bool {
    let group = manifest
        .api_version()
        .and_then(|v| v.split_once('/'))
        .map_or("", |(group, _)| group);
    group == entry.group()
        && manifest.kind() == Some(entry.kind.as_str())
        && manifest.name() == Some(entry.name.as_str())
}
