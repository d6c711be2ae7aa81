//! Revisions of a SupportServiceProfile: each distinct spec (everything but `rollout`) is a
//! revision kept in QleetOS's namespace by the engine ([`crate::engine::revisions`]), so a
//! rollout can install an earlier one in some runtimes and `qleetctl rollout undo` can return
//! to one.

use kube::{Resource, ResourceExt};
use qleetos_crds::{SupportServiceProfile, SupportServiceProfileSpec};
use serde_json::Value;

use crate::context::Context;
use crate::engine::revisions::{Revision, Revisioned, hash_of};
use crate::error::{Error, Result};

/// What a revision holds: the spec without `rollout`.
fn template(spec: &SupportServiceProfileSpec) -> Value {
    let held = SupportServiceProfileSpec {
        rollout: None,
        ..spec.clone()
    };
    serde_json::to_value(held).unwrap_or_default()
}

/// The hash a profile's spec is recorded under.
pub fn spec_hash(spec: &SupportServiceProfileSpec) -> String {
    hash_of(&template(spec))
}

/// Where the profile's revisions are kept.
pub fn revisioned<'a>(profile: &'a SupportServiceProfile, ctx: &Context) -> Revisioned<'a> {
    let name = profile.meta().name.as_deref().unwrap_or_default();
    Revisioned {
        api: kube::Api::namespaced(ctx.client.clone(), &ctx.settings.system_namespace),
        name,
        uid: profile.meta().uid.as_deref().unwrap_or_default(),
        owner: profile.controller_owner_ref(&()).unwrap_or_default(),
        label: (
            crate::dependencies::PROFILE_LABEL,
            crate::names::label_value(name),
        ),
        history_limit: 10,
    }
}

/// The revision holding the profile's current spec, recorded when it is new.
pub async fn record(profile: &SupportServiceProfile, ctx: &Context) -> Result<Revision> {
    let status = profile.status.clone().unwrap_or_default();
    let known = status.revision.zip(status.revision_hash.as_deref());
    revisioned(profile, ctx)
        .record(template(&profile.spec), known)
        .await
}

/// The spec revision `number` of `profile` held, with the profile's current `rollout`;
/// `None` when there is no such revision.
pub async fn spec_of(
    profile: &SupportServiceProfile,
    number: i64,
    ctx: &Context,
) -> Result<Option<SupportServiceProfileSpec>> {
    let Some(held) = revisioned(profile, ctx).template(number).await? else {
        return Ok(None);
    };
    let spec: SupportServiceProfileSpec =
        serde_json::from_value(held).map_err(|e| Error::InvalidServiceProfile {
            profile: profile.name_any(),
            problem: format!("revision {number} cannot be read back: {e}"),
        })?;
    Ok(Some(SupportServiceProfileSpec {
        rollout: profile.spec.rollout.clone(),
        ..spec
    }))
}
