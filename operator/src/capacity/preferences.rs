//! Placement preferences: which of the allowed runtimes a Workload may use once capacity and
//! cost are weighed, in what order, and where nothing has room. Pure: no client, no I/O.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Selector, SelectorExt};
use qleetos_crds::{
    Fit, KubernetesRuntime, OverflowPool, Placement, PlacementPreferences, Preference, Resources,
};

use super::Commitments;
use crate::placement::{Rank, candidates, name_of};

/// The runtimes left to the placement, their order, and the regions with no room.
#[derive(Debug, Default)]
pub struct Shaped {
    /// The current runtimes (placements stay where they are) and, in each region, those of
    /// the first pool with room that have room.
    pub allowed: Vec<KubernetesRuntime>,
    pub rank: Rank,
    /// Regions where no pool has room: the overflow profile to provision there, if any.
    pub short: Vec<Shortfall>,
}

/// A region where nothing the placement may use has room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub region: String,
    /// The first pool's profile (after the pools already full) to provision from.
    pub overflow_profile: Option<String>,
    /// What was requested and what each runtime had free, for the Workload's status.
    pub message: String,
}

/// What is free on `runtime` once its measured requests, or what QleetOS committed there
/// if that is more, are taken; `None` before its capacity is measured.
pub fn free_on(runtime: &KubernetesRuntime, commitments: &Commitments) -> Option<Resources> {
    let capacity = runtime.status.as_ref()?.capacity.as_ref()?;
    if capacity.allocatable.is_zero() {
        return None;
    }
    let used = capacity.requested.max(commitments.on(name_of(runtime)));
    Some(capacity.allocatable.minus(used))
}

/// Shapes `allowed` for a workload requesting `request` under `preferences`. Only the
/// runtimes `placement` selects from are weighed; the others (where a failover may go) are
/// left as they are.
pub fn shape(
    placement: &Placement,
    preferences: &PlacementPreferences,
    request: Resources,
    allowed: Vec<KubernetesRuntime>,
    current: &BTreeSet<String>,
    commitments: &Commitments,
) -> Shaped {
    let (allowed, elsewhere): (Vec<_>, Vec<_>) = allowed.into_iter().partition(|runtime| {
        candidates(placement, std::slice::from_ref(runtime)).is_ok_and(|c| !c.is_empty())
    });
    let free: BTreeMap<String, Option<Resources>> = allowed
        .iter()
        .map(|r| (name_of(r).to_owned(), free_on(r, commitments)))
        .collect();
    let has_room = |runtime: &KubernetesRuntime| {
        let name = name_of(runtime);
        current.contains(name)
            || preferences.fit == Fit::Ignore
            || free[name].is_some_and(|f| f.holds(request))
    };
    let mut by_region: BTreeMap<String, Vec<(usize, KubernetesRuntime)>> = BTreeMap::new();
    for runtime in allowed {
        if let Some(pool) = pool_of(&preferences.overflow, &runtime) {
            by_region
                .entry(runtime.spec.region.clone())
                .or_default()
                .push((pool, runtime));
        }
    }
    let mut shaped = Shaped::default();
    for (region, runtimes) in by_region {
        let first_with_room = runtimes
            .iter()
            .filter(|(_, r)| has_room(r))
            .map(|(pool, _)| *pool)
            .min();
        let Some(pool) = first_with_room else {
            shaped
                .short
                .push(shortfall(preferences, &region, request, &runtimes, &free));
            continue;
        };
        shaped.allowed.extend(
            runtimes
                .into_iter()
                .filter(|(p, r)| current.contains(name_of(r)) || (*p == pool && has_room(r)))
                .map(|(_, r)| r),
        );
    }
    shaped.rank = rank(&preferences.prefer, &shaped.allowed, &free);
    shaped.allowed.extend(elsewhere);
    shaped
}

/// The index of the first pool `runtime` belongs to (0 when there are none).
fn pool_of(pools: &[OverflowPool], runtime: &KubernetesRuntime) -> Option<usize> {
    if pools.is_empty() {
        return Some(0);
    }
    pools.iter().position(|pool| in_pool(pool, runtime))
}

fn in_pool(pool: &OverflowPool, runtime: &KubernetesRuntime) -> bool {
    let labels = runtime.metadata.labels.clone().unwrap_or_default();
    let selected = pool.runtime_selector.clone().is_none_or(|selector| {
        Selector::try_from(selector).is_ok_and(|selector| selector.matches(&labels))
    });
    selected
        && pool
            .runtime_profile
            .as_deref()
            .is_none_or(|p| runtime.profile() == Some(p))
        && pool
            .provider
            .as_deref()
            .is_none_or(|p| runtime.spec.provider == p)
}

fn shortfall(
    preferences: &PlacementPreferences,
    region: &str,
    request: Resources,
    runtimes: &[(usize, KubernetesRuntime)],
    free: &BTreeMap<String, Option<Resources>>,
) -> Shortfall {
    // The first pool with a profile whose runtime in the region has not been measured full
    // (not there yet, or still being provisioned): one measured without room would gain
    // none by being provisioned again.
    let overflow_profile = preferences
        .overflow
        .iter()
        .filter_map(|pool| pool.runtime_profile.as_ref())
        .find(|profile| {
            !runtimes
                .iter()
                .any(|(_, r)| r.profile() == Some(profile.as_str()) && free[name_of(r)].is_some())
        })
        .cloned();
    let each: Vec<String> = runtimes
        .iter()
        .map(|(_, r)| match free[name_of(r)] {
            Some(room) => format!("{} has {room} free", name_of(r)),
            None => format!("{} has not reported its capacity yet", name_of(r)),
        })
        .collect();
    Shortfall {
        region: region.to_owned(),
        overflow_profile,
        message: format!(
            "no runtime in {region} has room for {request}: {}",
            each.join("; ")
        ),
    }
}

/// The order of `runtimes` under `prefer` (then by name).
fn rank(
    prefer: &[Preference],
    runtimes: &[KubernetesRuntime],
    free: &BTreeMap<String, Option<Resources>>,
) -> Rank {
    let key = |runtime: &KubernetesRuntime| -> Vec<i64> {
        let room = free[name_of(runtime)].unwrap_or_default();
        prefer
            .iter()
            .map(|preference| match preference {
                Preference::Pack => room.cpu_millicores,
                Preference::Spread => -free_share(runtime, room),
                Preference::Cheapest => node_hour_price(runtime),
            })
            .collect()
    };
    let mut ordered: Vec<(Vec<i64>, &str)> =
        runtimes.iter().map(|r| (key(r), name_of(r))).collect();
    ordered.sort();
    ordered
        .into_iter()
        .enumerate()
        .map(|(position, (_, name))| (name.to_owned(), position))
        .collect()
}

/// The share of its allocatable CPU `room` is, in millionths (0 when unknown): spreading
/// evens out the runtimes' use, whatever their size.
fn free_share(runtime: &KubernetesRuntime, room: Resources) -> i64 {
    let allocatable = runtime
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .map_or(0, |c| c.allocatable.cpu_millicores);
    match allocatable {
        0 => 0,
        total => room.cpu_millicores.saturating_mul(1_000_000) / total,
    }
}

/// The node-hour price in millionths (no price: dearer than any).
fn node_hour_price(runtime: &KubernetesRuntime) -> i64 {
    runtime
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.cost_per_node_hour.as_deref())
        .and_then(|p| p.parse::<f64>().ok())
        .map_or(i64::MAX, |p| (p * 1e6).round() as i64)
}

#[cfg(test)]
#[path = "preferences_tests.rs"]
mod tests;
