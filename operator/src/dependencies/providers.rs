//! Which SupportServiceProfile provides a capability, and the order services must be
//! installed in. Pure: reads the profiles it is given.

use std::sync::Arc;

use qleetos_crds::SupportServiceProfile;

use crate::error::{Error, Result};

/// The profile providing `capability`: the only one, or the one marked `default`. Profiles
/// being deleted provide nothing new.
pub fn provider_of(
    capability: &str,
    profiles: &[Arc<SupportServiceProfile>],
) -> Result<Arc<SupportServiceProfile>> {
    let candidates: Vec<&Arc<SupportServiceProfile>> = profiles
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.spec.provides.iter().any(|c| c == capability))
        .collect();
    let defaults: Vec<&&Arc<SupportServiceProfile>> =
        candidates.iter().filter(|p| p.spec.default).collect();
    match (candidates.as_slice(), defaults.as_slice()) {
        ([], _) => Err(Error::NoProvider {
            capability: capability.to_owned(),
        }),
        ([only], _) => Ok(Arc::clone(only)),
        (_, [chosen]) => Ok(Arc::clone(chosen)),
        (_, none_or_many) => Err(Error::AmbiguousProvider {
            capability: capability.to_owned(),
            profiles: names(&candidates),
            why: if none_or_many.is_empty() {
                "none is the default"
            } else {
                "more than one is the default"
            },
        }),
    }
}

fn names(profiles: &[&Arc<SupportServiceProfile>]) -> String {
    let mut names: Vec<&str> = profiles
        .iter()
        .map(|p| p.metadata.name.as_deref().unwrap_or_default())
        .collect();
    names.sort_unstable();
    names.join(", ")
}

/// The profiles `profile` needs first (its `requires`, resolved), checking the whole chain
/// below it for cycles and missing providers.
pub fn required_by(
    profile: &SupportServiceProfile,
    profiles: &[Arc<SupportServiceProfile>],
) -> Result<Vec<Arc<SupportServiceProfile>>> {
    let name = profile.metadata.name.clone().unwrap_or_default();
    check_chain(profile, profiles, &mut vec![name])?;
    profile
        .spec
        .requires
        .iter()
        .map(|capability| provider_of(capability, profiles))
        .collect()
}

fn check_chain(
    profile: &SupportServiceProfile,
    profiles: &[Arc<SupportServiceProfile>],
    path: &mut Vec<String>,
) -> Result<()> {
    for capability in &profile.spec.requires {
        let next = provider_of(capability, profiles)?;
        let next_name = next.metadata.name.clone().unwrap_or_default();
        if path.contains(&next_name) {
            path.push(next_name);
            return Err(Error::DependencyCycle(path.join(" → ")));
        }
        path.push(next_name);
        check_chain(&next, profiles, path)?;
        path.pop();
    }
    Ok(())
}

/// Name of the SupportService installing `profile` into `runtime`.
pub fn support_service_name(profile: &str, runtime: &str) -> String {
    crate::names::cut_with_hash(&format!("{profile}.{runtime}"), 253)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qleetos_crds::SupportServiceProfileSpec;

    fn profile(
        name: &str,
        provides: &[&str],
        requires: &[&str],
        default: bool,
    ) -> Arc<SupportServiceProfile> {
        let spec: SupportServiceProfileSpec = serde_json::from_value(serde_json::json!({
            "provides": provides,
            "requires": requires,
            "default": default,
            "namespace": name,
            "manifests": [],
        }))
        .expect("valid spec");
        Arc::new(SupportServiceProfile::new(name, spec))
    }

    #[test]
    fn the_only_provider_is_chosen() {
        let profiles = vec![profile("cert-manager", &["tls"], &[], false)];
        let chosen = provider_of("tls", &profiles).expect("provided");
        assert_eq!(chosen.metadata.name.as_deref(), Some("cert-manager"));
    }

    #[test]
    fn a_missing_capability_names_it() {
        let error = provider_of("dns", &[]).expect_err("nothing provides dns");
        assert_eq!(error.reason().as_str(), "NoSupportServiceProfile");
        assert!(error.to_string().contains("`dns`"), "{error}");
    }

    #[test]
    fn two_providers_need_exactly_one_default() {
        let mut profiles = vec![
            profile("traefik", &["ingress"], &[], false),
            profile("nginx", &["ingress"], &[], false),
        ];
        let error = provider_of("ingress", &profiles).expect_err("ambiguous");
        assert_eq!(error.reason().as_str(), "AmbiguousSupportServiceProfile");
        assert!(error.to_string().contains("nginx, traefik"), "{error}");
        profiles.push(profile("haproxy", &["ingress"], &[], true));
        let chosen = provider_of("ingress", &profiles).expect("default chosen");
        assert_eq!(chosen.metadata.name.as_deref(), Some("haproxy"));
        profiles.push(profile("envoy", &["ingress"], &[], true));
        let error = provider_of("ingress", &profiles).expect_err("two defaults");
        assert!(error.to_string().contains("more than one"), "{error}");
    }

    #[test]
    fn requirements_resolve_and_cycles_are_named() {
        let profiles = vec![
            profile("traefik", &["ingress"], &["tls"], false),
            profile("cert-manager", &["tls"], &[], false),
        ];
        let needed = required_by(&profiles[0], &profiles).expect("resolves");
        assert_eq!(needed[0].metadata.name.as_deref(), Some("cert-manager"));
        let cyclic = vec![
            profile("a", &["x"], &["y"], false),
            profile("b", &["y"], &["x"], false),
        ];
        let error = required_by(&cyclic[0], &cyclic).expect_err("cycle");
        assert_eq!(
            error.to_string(),
            "support services need each other in a cycle: a → b → a"
        );
    }

    #[test]
    fn support_service_names_fit_and_stay_distinct() {
        assert_eq!(
            support_service_name("cert-manager", "eu-west"),
            "cert-manager.eu-west"
        );
        let long = support_service_name(&"p".repeat(200), &"r".repeat(200));
        assert!(long.len() <= 253, "{}", long.len());
        assert_ne!(
            long,
            support_service_name(&"p".repeat(200), &"r".repeat(201))
        );
    }
}
