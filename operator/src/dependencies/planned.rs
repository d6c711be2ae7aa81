//! What [`super::ensure`] would do for a plan, without creating anything: the support
//! services a placement needs on a runtime (and, through each profile's `requires`, theirs),
//! each marked `Install` when the runtime does not have it yet.

use std::collections::BTreeSet;

use kube::runtime::reflector::ObjectRef;
use qleetos_crds::{PlanAction, PlannedService};

use super::generated::Contributions;
use super::{provider_of, required_by, support_service_name};
use crate::context::Context;
use crate::error::Result;

/// The services `capabilities` need on `runtime`, required ones first, and what each
/// contributes to the generated objects.
pub fn services(
    ctx: &Context,
    capabilities: &[String],
    runtime: &str,
) -> Result<(Vec<PlannedService>, Contributions)> {
    let profiles = ctx.caches.profiles.state();
    let mut planned = Vec::new();
    let mut seen = BTreeSet::new();
    let mut contributions = Contributions::new();
    for capability in capabilities {
        let profile = provider_of(capability, &profiles)?;
        contributions.insert(capability.clone(), profile.spec.workload_objects.clone());
        let mut chain = vec![(capability.clone(), profile)];
        while let Some((capability, profile)) = chain.pop() {
            let name = profile.metadata.name.clone().unwrap_or_default();
            if !seen.insert(name.clone()) {
                continue;
            }
            for (required, provider) in profile
                .spec
                .requires
                .iter()
                .zip(required_by(&profile, &profiles)?)
            {
                chain.push((required.clone(), provider));
            }
            planned.push(service(ctx, capability, name, runtime));
        }
    }
    planned.reverse();
    Ok((planned, contributions))
}

fn service(ctx: &Context, capability: String, profile: String, runtime: &str) -> PlannedService {
    let name = support_service_name(&profile, runtime);
    let installed = ctx
        .caches
        .support_services
        .get(&ObjectRef::new(&name))
        .is_some_and(|s| s.metadata.deletion_timestamp.is_none());
    PlannedService {
        capability,
        profile,
        dependency: None,
        name,
        action: if installed {
            PlanAction::Unchanged
        } else {
            PlanAction::Install
        },
    }
}
