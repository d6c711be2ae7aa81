//! Chooses the runtimes a Workload runs on. Pure: no client, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Selector, SelectorExt};
use qleetos_crds::{KubernetesRuntime, Placement, PlacementStrategy};

use crate::error::{Error, Result};

/// One runtime chosen for a Workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Selected {
    pub runtime: String,
    pub region: String,
    /// On a failover placement: the unreachable runtime it stands in for.
    pub replaces: Option<String>,
}

/// An order of preference among runtimes (lower first), from placement preferences; a
/// runtime it does not list comes after those it does.
pub type Rank = BTreeMap<String, usize>;

/// The runtimes `placement` selects among `runtimes`, sorted by runtime name.
///
/// With `OnePerRegion`, a region keeps the runtime it already has (`current`) while that
/// runtime still matches, so a runtime going briefly unready does not move the workload;
/// otherwise the first Ready runtime in `rank` order (then by name) is taken, or the first
/// if none is Ready.
pub fn select(
    placement: &Placement,
    runtimes: &[KubernetesRuntime],
    current: &BTreeSet<String>,
    rank: &Rank,
) -> Result<Vec<Selected>> {
    let candidates = candidates(placement, runtimes)?;
    let mut selected: Vec<Selected> = match placement.strategy {
        PlacementStrategy::AllMatching => candidates.iter().map(|r| selected_of(r)).collect(),
        PlacementStrategy::OnePerRegion => one_per_region(&candidates, current, rank),
    };
    selected.sort();
    Ok(selected)
}

/// The regions of `placement` where none of `runtimes` is a candidate.
pub fn unserved_regions<'a>(
    placement: &'a Placement,
    runtimes: &[KubernetesRuntime],
) -> Result<Vec<&'a str>> {
    let candidates = candidates(placement, runtimes)?;
    Ok(placement
        .regions
        .iter()
        .map(String::as_str)
        .filter(|region| !candidates.iter().any(|r| r.spec.region == *region))
        .collect())
}

/// Whether `labels` satisfy the placement's runtime selector (absent: any labels do).
pub fn selector_matches(placement: &Placement, labels: &BTreeMap<String, String>) -> Result<bool> {
    let Some(selector) = placement.runtime_selector.clone() else {
        return Ok(true);
    };
    let selector =
        Selector::try_from(selector).map_err(|e| Error::InvalidSelector(e.to_string()))?;
    Ok(selector.matches(labels))
}

/// The runtimes `placement` may use: not being deleted, in its regions (any, when it lists
/// none), matching its selector.
pub(crate) fn candidates<'a>(
    placement: &Placement,
    runtimes: &'a [KubernetesRuntime],
) -> Result<Vec<&'a KubernetesRuntime>> {
    let selector: Option<Selector> = placement
        .runtime_selector
        .clone()
        .map(Selector::try_from)
        .transpose()
        .map_err(|e| Error::InvalidSelector(e.to_string()))?;
    let regions: BTreeSet<&str> = placement.regions.iter().map(String::as_str).collect();
    let no_labels = BTreeMap::new();
    Ok(runtimes
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .filter(|r| regions.is_empty() || regions.contains(r.spec.region.as_str()))
        .filter(|r| {
            let labels = r.metadata.labels.as_ref().unwrap_or(&no_labels);
            selector.as_ref().is_none_or(|s| s.matches(labels))
        })
        .collect())
}

fn one_per_region(
    candidates: &[&KubernetesRuntime],
    current: &BTreeSet<String>,
    rank: &Rank,
) -> Vec<Selected> {
    let mut by_region: BTreeMap<&str, Vec<&KubernetesRuntime>> = BTreeMap::new();
    for runtime in candidates {
        by_region
            .entry(runtime.spec.region.as_str())
            .or_default()
            .push(runtime);
    }
    by_region
        .into_values()
        .filter_map(|mut in_region| {
            in_region.sort_by_key(|r| {
                (
                    !is_current(r, current),
                    !r.is_ready(),
                    rank.get(name_of(r)).copied().unwrap_or(usize::MAX),
                    name_of(r).to_owned(),
                )
            });
            in_region.first().map(|r| selected_of(r))
        })
        .collect()
}

fn is_current(runtime: &KubernetesRuntime, current: &BTreeSet<String>) -> bool {
    current.contains(name_of(runtime))
}

pub(crate) fn name_of(runtime: &KubernetesRuntime) -> &str {
    runtime.metadata.name.as_deref().unwrap_or_default()
}

pub(crate) fn selected_of(runtime: &KubernetesRuntime) -> Selected {
    Selected {
        runtime: name_of(runtime).to_owned(),
        region: runtime.spec.region.clone(),
        replaces: None,
    }
}

/// A registered runtime named `name` in `region`, without labels or status.
#[cfg(test)]
pub(crate) fn test_runtime(name: &str, region: &str) -> KubernetesRuntime {
    use qleetos_crds::{KubernetesRuntimeSpec, RuntimeConnection, SecretKeyRef};
    KubernetesRuntime::new(
        name,
        KubernetesRuntimeSpec {
            deletion_policy: Default::default(),
            provisioning: None,
            provider: "local".into(),
            region: region.into(),
            location: None,
            connection: RuntimeConnection {
                kubeconfig_secret_ref: SecretKeyRef {
                    namespace: "qleetos-system".into(),
                    name: name.into(),
                    key: "kubeconfig".into(),
                },
            },
            cost: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use qleetos_crds::{Condition, KubernetesRuntimeStatus};

    use super::*;

    fn runtime(
        name: &str,
        region: &str,
        labels: &[(&str, &str)],
        ready: bool,
    ) -> KubernetesRuntime {
        let mut runtime = crate::placement::test_runtime(name, region);
        runtime.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        );
        runtime.status = Some(KubernetesRuntimeStatus {
            conditions: vec![Condition::ready(ready, qleetos_crds::Reason::Reachable, "")],
            ..Default::default()
        });
        runtime
    }

    fn fleet() -> Vec<KubernetesRuntime> {
        vec![
            runtime("eu-1", "eu-west", &[("tier", "prod")], true),
            runtime("eu-2", "eu-west", &[("tier", "prod")], true),
            runtime("us-1", "us-east", &[("tier", "prod")], true),
            runtime("dev-1", "us-east", &[("tier", "dev")], true),
        ]
    }

    fn names(selected: &[Selected]) -> Vec<&str> {
        selected.iter().map(|s| s.runtime.as_str()).collect()
    }

    fn by_labels(labels: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            match_expressions: None,
        })
    }

    #[test]
    fn one_per_region_picks_first_ready_runtime_of_each_region() {
        let mut runtimes = fleet();
        runtimes[0] = runtime("eu-1", "eu-west", &[("tier", "prod")], false);
        let placement = Placement {
            runtime_selector: by_labels(&[("tier", "prod")]),
            ..Default::default()
        };
        let selected =
            select(&placement, &runtimes, &BTreeSet::new(), &Rank::new()).expect("valid");
        assert_eq!(names(&selected), ["eu-2", "us-1"]);
    }

    #[test]
    fn one_per_region_keeps_the_current_runtime_while_it_matches() {
        let placement = Placement {
            regions: vec!["eu-west".into()],
            ..Default::default()
        };
        let current = BTreeSet::from(["eu-2".to_owned()]);
        let selected = select(&placement, &fleet(), &current, &Rank::new()).expect("valid");
        assert_eq!(names(&selected), ["eu-2"]);
    }

    #[test]
    fn all_matching_takes_every_runtime_in_listed_regions() {
        let placement = Placement {
            regions: vec!["eu-west".into()],
            strategy: PlacementStrategy::AllMatching,
            ..Default::default()
        };
        let selected = select(&placement, &fleet(), &BTreeSet::new(), &Rank::new()).expect("valid");
        assert_eq!(names(&selected), ["eu-1", "eu-2"]);
    }

    #[test]
    fn selector_expressions_filter_runtimes() {
        let placement = Placement {
            runtime_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["prod".into()]),
                }]),
            }),
            strategy: PlacementStrategy::AllMatching,
            ..Default::default()
        };
        let selected = select(&placement, &fleet(), &BTreeSet::new(), &Rank::new()).expect("valid");
        assert_eq!(names(&selected), ["dev-1"]);
    }

    #[test]
    fn no_match_selects_nothing() {
        let placement = Placement {
            regions: vec!["mars".into()],
            ..Default::default()
        };
        assert!(
            select(&placement, &fleet(), &BTreeSet::new(), &Rank::new())
                .expect("valid")
                .is_empty()
        );
    }

    #[test]
    fn invalid_selector_operator_is_an_error() {
        let placement = Placement {
            runtime_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "Near".into(),
                    values: None,
                }]),
            }),
            ..Default::default()
        };
        let error =
            select(&placement, &fleet(), &BTreeSet::new(), &Rank::new()).expect_err("invalid");
        assert_eq!(error.reason().as_str(), "InvalidPlacement");
    }
}
