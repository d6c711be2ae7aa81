//! Which runtimes a Workload's placement makes QleetOS provision: one per region the
//! placement allows provisioning in and no allowed runtime serves, made from the named (or
//! the region's default) KubernetesRuntimeProfile. The runtime's name is derived from the
//! profile and region, so every Workload needing that region gets the same cluster: the
//! first create wins and the others find it. The same engine provisions a stand-in for a
//! lost runtime when a failover policy has nowhere else to go.

use std::collections::BTreeMap;

use kube::api::Api;
use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeProfile, KubernetesRuntimeSpec, NameRef, Placement,
    Provisioning, RuntimeConnection, RuntimeProvisioning,
};

use super::{PROFILE_LABEL, kubeconfig_ref};
use crate::context::Context;
use crate::engine::writes::create_or_get;
use crate::error::{Error, Result};
use crate::failover::Stranded;
use crate::placement::{selector_matches, unserved_regions};
use crate::tenancy::Fence;

/// The runtimes provisioned (or being provisioned) for the regions of `placement` that
/// none of `allowed` serves; created when missing. Empty when the placement does not
/// allow provisioning.
pub async fn provision_unserved(
    ctx: &Context,
    placement: &Placement,
    fence: &Fence,
    allowed: &[KubernetesRuntime],
) -> Result<Vec<KubernetesRuntime>> {
    let mut provisioned = Vec::new();
    for wanted in wanted_for_unserved(ctx, placement, fence, allowed)? {
        let why = "no runtime serves the region";
        if let Some((runtime, _)) = find_or_create(ctx, wanted, why).await? {
            provisioned.push(runtime);
        }
    }
    Ok(provisioned)
}

/// The runtimes [`provision_unserved`] would provision, without creating any (for a plan):
/// one per unserved region, each from its profile and allowed by the fence.
pub fn wanted_for_unserved(
    ctx: &Context,
    placement: &Placement,
    fence: &Fence,
    allowed: &[KubernetesRuntime],
) -> Result<Vec<KubernetesRuntime>> {
    if placement.provision != Provisioning::IfNeeded {
        return Ok(Vec::new());
    }
    let regions = unserved_regions(placement, allowed)?;
    if regions.is_empty() {
        return Ok(Vec::new());
    }
    let profiles = live_profiles(ctx);
    let mut wanted = Vec::new();
    for region in regions {
        let profile = profile_for(placement, region, &profiles)?;
        let runtime = runtime_for(ctx, &profile, region);
        check_allowed(placement, fence, &profile, &runtime, region)?;
        wanted.push(runtime);
    }
    Ok(wanted)
}

/// The runtime of `profile` in `region` a placement overflows to when nothing earlier has
/// room, as [`provision_overflow`] would make it (created nowhere).
pub fn wanted_overflow(
    ctx: &Context,
    placement: &Placement,
    fence: &Fence,
    region: &str,
    profile: &str,
) -> Result<KubernetesRuntime> {
    let named = Placement {
        runtime_profile: Some(profile.to_owned()),
        ..placement.clone()
    };
    let profile = profile_for(&named, region, &live_profiles(ctx))?;
    let runtime = runtime_for(ctx, &profile, region);
    check_allowed(placement, fence, &profile, &runtime, region)?;
    Ok(runtime)
}

/// The overflow runtime of `profile` in `region`, created when missing (`true`: by this
/// call); `None` while one of its name is being deleted.
pub async fn provision_overflow(
    ctx: &Context,
    placement: &Placement,
    fence: &Fence,
    region: &str,
    profile: &str,
) -> Result<Option<(KubernetesRuntime, bool)>> {
    let wanted = wanted_overflow(ctx, placement, fence, region, profile)?;
    find_or_create(ctx, wanted, "nothing earlier in the overflow list has room").await
}

/// A runtime provisioned (or found being provisioned) to stand in for a lost one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandIn {
    pub home: String,
    pub runtime: String,
    pub region: String,
    /// Created by this call (not found from an earlier one).
    pub created: bool,
}

/// For each stranded home of a placement that allows provisioning: a runtime in the first
/// of its regions a profile serves, named `<profile>-<region>`, or
/// `<profile>-<region>-failover` when a runtime of that name exists already (it is lost,
/// or the home would not be stranded). The names are fixed, so every reconcile and every
/// Workload stranded in that region finds the same one.
pub async fn provision_stand_ins(
    ctx: &Context,
    placement: &Placement,
    fence: &Fence,
    stranded: &[Stranded],
) -> Result<Vec<StandIn>> {
    if placement.provision != Provisioning::IfNeeded || stranded.is_empty() {
        return Ok(Vec::new());
    }
    let profiles = live_profiles(ctx);
    let mut stand_ins = Vec::new();
    for lost in stranded {
        let Some((profile, region)) = lost
            .regions
            .iter()
            .find_map(|r| profile_for(placement, r, &profiles).ok().map(|p| (p, r)))
        else {
            continue;
        };
        let profile_name = profile.metadata.name.clone().unwrap_or_default();
        let mut name = runtime_name(&profile_name, region);
        if ctx.caches.runtime(&name).is_some() {
            name = runtime_name(&profile_name, &format!("{region}-failover"));
        }
        let wanted = runtime_named(ctx, &profile, region, name);
        check_allowed(placement, fence, &profile, &wanted, region)?;
        let why = format!(
            "runtime {} is lost and nothing can stand in for it",
            lost.home
        );
        if let Some((runtime, created)) = find_or_create(ctx, wanted, &why).await? {
            stand_ins.push(StandIn {
                home: lost.home.clone(),
                runtime: runtime.metadata.name.clone().unwrap_or_default(),
                region: region.clone(),
                created,
            });
        }
    }
    Ok(stand_ins)
}

fn live_profiles(ctx: &Context) -> Vec<KubernetesRuntimeProfile> {
    ctx.caches
        .runtime_profiles
        .state()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (**p).clone())
        .collect()
}

/// The profile named by the placement, or the single default profile of `region`.
pub fn profile_for(
    placement: &Placement,
    region: &str,
    profiles: &[KubernetesRuntimeProfile],
) -> Result<KubernetesRuntimeProfile> {
    let no_profile = |detail: String| Error::NoRuntimeProfile {
        region: region.to_owned(),
        detail,
    };
    let serves = |p: &&KubernetesRuntimeProfile| p.spec.regions.iter().any(|r| r == region);
    if let Some(name) = &placement.runtime_profile {
        let profile = profiles
            .iter()
            .find(|p| p.metadata.name.as_ref() == Some(name))
            .ok_or_else(|| no_profile(format!("KubernetesRuntimeProfile {name} does not exist")))?;
        if !serves(&profile) {
            let detail = format!(
                "KubernetesRuntimeProfile {name} serves regions {}, not {region}",
                profile.spec.regions.join(", ")
            );
            return Err(no_profile(detail));
        }
        return Ok(profile.clone());
    }
    let defaults: Vec<&KubernetesRuntimeProfile> = profiles
        .iter()
        .filter(serves)
        .filter(|p| p.spec.default)
        .collect();
    match defaults.as_slice() {
        [profile] => Ok((*profile).clone()),
        [] => Err(no_profile(
            "no KubernetesRuntimeProfile is the default for it; name one in spec.placement.runtimeProfile or mark one spec.default: true".to_owned(),
        )),
        several => Err(no_profile(format!(
            "several KubernetesRuntimeProfiles are its default ({}); name one in spec.placement.runtimeProfile",
            several
                .iter()
                .filter_map(|p| p.metadata.name.as_deref())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `<profile>-<region>`, a DNS label (Cluster API and kwokctl name clusters by it).
pub fn runtime_name(profile: &str, region: &str) -> String {
    let raw: String = format!("{profile}-{region}")
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    crate::names::cut_with_hash(raw.trim_matches('-'), 63)
}

/// The KubernetesRuntime `profile` makes for `region`.
pub fn runtime_for(
    ctx: &Context,
    profile: &KubernetesRuntimeProfile,
    region: &str,
) -> KubernetesRuntime {
    let profile_name = profile.metadata.name.clone().unwrap_or_default();
    runtime_named(ctx, profile, region, runtime_name(&profile_name, region))
}

fn runtime_named(
    ctx: &Context,
    profile: &KubernetesRuntimeProfile,
    region: &str,
    name: String,
) -> KubernetesRuntime {
    let profile_name = profile.metadata.name.clone().unwrap_or_default();
    let provider = profile
        .spec
        .cluster_api
        .as_ref()
        .and_then(|c| c.infrastructure.clone())
        .unwrap_or_else(|| profile.spec.provider.label().to_owned());
    let mut runtime = KubernetesRuntime::new(
        &name,
        KubernetesRuntimeSpec {
            provider,
            region: region.to_owned(),
            location: None,
            connection: RuntimeConnection {
                kubeconfig_secret_ref: kubeconfig_ref(&name, &ctx.settings.system_namespace),
            },
            provisioning: Some(RuntimeProvisioning {
                profile_ref: NameRef {
                    name: profile_name.clone(),
                },
            }),
            deletion_policy: Default::default(),
            cost: None,
        },
    );
    let mut labels: BTreeMap<String, String> = profile.spec.runtime_labels.clone();
    labels.insert(
        PROFILE_LABEL.to_owned(),
        crate::names::label_value(&profile_name),
    );
    runtime.metadata.labels = Some(labels);
    runtime
}

/// The tenant may provision from the profile and use the runtime, and the placement will
/// select it once it exists (otherwise it would be provisioned for nothing).
fn check_allowed(
    placement: &Placement,
    fence: &Fence,
    profile: &KubernetesRuntimeProfile,
    wanted: &KubernetesRuntime,
    region: &str,
) -> Result<()> {
    let profile_name = profile.metadata.name.as_deref().unwrap_or_default();
    fence
        .check_runtime_profile(profile_name)
        .map_err(|v| Error::TenancyViolation(v.to_string()))?;
    let name = wanted.metadata.name.as_deref().unwrap_or_default();
    if !fence.allows_runtime(wanted) {
        return Err(Error::TenancyViolation(
            fence.runtime_violation(name).to_string(),
        ));
    }
    let labels = wanted.metadata.labels.clone().unwrap_or_default();
    if !selector_matches(placement, &labels)? {
        return Err(Error::NoRuntimeProfile {
            region: region.to_owned(),
            detail: format!(
                "the runtimes of KubernetesRuntimeProfile {profile_name} (labels {labels:?}) would not match spec.placement.runtimeSelector"
            ),
        });
    }
    Ok(())
}

/// The runtime named like `wanted`, created when missing (`true`: by this call); `None`
/// while a runtime of that name is still being deleted (it is provisioned again once it is
/// gone).
async fn find_or_create(
    ctx: &Context,
    wanted: KubernetesRuntime,
    why: &str,
) -> Result<Option<(KubernetesRuntime, bool)>> {
    let name = wanted.metadata.name.clone().unwrap_or_default();
    let api: Api<KubernetesRuntime> = Api::all(ctx.client.clone());
    let existing = match ctx.caches.runtime(&name) {
        Some(cached) => Some((*cached).clone()),
        None => {
            let ensured = create_or_get(&api, &wanted).await?;
            if ensured.created {
                let created = ensured.object;
                tracing::info!(runtime = %name, region = %created.spec.region, "provisioning a runtime: {why}");
                return Ok(Some((created, true)));
            }
            Some(ensured.object)
        }
    };
    Ok(existing
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .map(|r| (r, false)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn profile(name: &str, regions: &[&str], default: bool) -> KubernetesRuntimeProfile {
        serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "KubernetesRuntimeProfile",
            "metadata": { "name": name },
            "spec": { "provider": "Local", "regions": regions, "default": default,
                      "kubernetesVersion": "v1.36.2" },
        }))
        .expect("profile")
    }

    fn placement(profile: Option<&str>) -> Placement {
        Placement {
            regions: vec!["eu-1".into()],
            provision: Provisioning::IfNeeded,
            runtime_profile: profile.map(str::to_owned),
            ..Placement::default()
        }
    }

    #[test]
    fn the_named_profile_or_the_single_default_of_the_region_is_used() {
        let profiles = [
            profile("small", &["eu-1", "us-1"], true),
            profile("large", &["eu-1"], false),
            profile("us-only", &["us-1"], true),
        ];
        let chosen = |p| profile_for(&placement(p), "eu-1", &profiles).map(|p| p.metadata.name);
        assert_eq!(chosen(None).expect("default"), Some("small".into()));
        assert_eq!(chosen(Some("large")).expect("named"), Some("large".into()));
        let wrong_region = chosen(Some("us-only")).expect_err("us only").to_string();
        assert!(
            wrong_region.contains("serves regions us-1, not eu-1"),
            "{wrong_region}"
        );
        let missing = chosen(Some("nope")).expect_err("missing").to_string();
        assert!(missing.contains("nope does not exist"), "{missing}");
    }

    #[test]
    fn no_default_or_several_defaults_are_explained() {
        let none = [profile("large", &["eu-1"], false)];
        let error = profile_for(&placement(None), "eu-1", &none).expect_err("no default");
        assert!(
            error
                .to_string()
                .contains("no KubernetesRuntimeProfile is the default")
        );
        let two = [profile("a", &["eu-1"], true), profile("b", &["eu-1"], true)];
        let error = profile_for(&placement(None), "eu-1", &two).expect_err("two defaults");
        assert!(error.to_string().contains("(a, b)"), "{error}");
    }

    #[test]
    fn runtime_names_are_dns_labels_shared_by_every_workload_of_a_region() {
        assert_eq!(
            runtime_name("standard", "eu-central-1"),
            "standard-eu-central-1"
        );
        assert_eq!(runtime_name("Std", "EU_West.2"), "std-eu-west-2");
        let long = runtime_name(&"p".repeat(60), "eu-central-1");
        assert!(long.len() <= 63, "{long}");
    }
}
