use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use qleetos_crds::{
    Fit, KubernetesRuntime, OverflowPool, Placement, PlacementPreferences, Preference, Resources,
    RuntimeCapacity,
};

use super::*;
use crate::placement::test_runtime;

const CPU: i64 = 1000;

/// A runtime in `region` with `cpus` allocatable, `used` requested and a node-hour price.
fn runtime(name: &str, region: &str, cpus: i64, used: i64, price: &str) -> KubernetesRuntime {
    let mut runtime = test_runtime(name, region);
    runtime.status = Some(qleetos_crds::KubernetesRuntimeStatus {
        capacity: Some(RuntimeCapacity {
            allocatable: cpu(cpus),
            requested: cpu(used),
            cost_per_node_hour: Some(price.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    });
    runtime
}

fn anywhere() -> Placement {
    Placement::default()
}

fn cpu(cpus: i64) -> Resources {
    Resources {
        cpu_millicores: cpus * CPU,
        memory_bytes: 0,
    }
}

fn prefer(prefer: &[Preference]) -> PlacementPreferences {
    PlacementPreferences {
        prefer: prefer.to_vec(),
        ..Default::default()
    }
}

fn fleet() -> Vec<KubernetesRuntime> {
    vec![
        runtime("big", "eu", 96, 10, "0.30"),
        runtime("cheap", "eu", 32, 20, "0.05"),
        runtime("mid", "eu", 64, 0, "0.10"),
    ]
}

fn order(shaped: &Shaped) -> Vec<&str> {
    let mut names: Vec<_> = shaped.rank.iter().map(|(n, p)| (*p, n.as_str())).collect();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

fn names(runtimes: &[KubernetesRuntime]) -> Vec<&str> {
    runtimes.iter().map(crate::placement::name_of).collect()
}

#[test]
fn pack_spread_and_cheapest_order_the_runtimes_that_fit() {
    let none = BTreeSet::new();
    let free = Commitments::default();
    let packed = shape(
        &anywhere(),
        &prefer(&[Preference::Pack]),
        cpu(4),
        fleet(),
        &none,
        &free,
    );
    assert_eq!(order(&packed), ["cheap", "mid", "big"]);
    let spread = shape(
        &anywhere(),
        &prefer(&[Preference::Spread]),
        cpu(4),
        fleet(),
        &none,
        &free,
    );
    // Free shares: big 86/96, cheap 12/32, mid 64/64.
    assert_eq!(order(&spread), ["mid", "big", "cheap"]);
    let cheapest = shape(
        &anywhere(),
        &prefer(&[Preference::Cheapest]),
        cpu(4),
        fleet(),
        &none,
        &free,
    );
    assert_eq!(order(&cheapest), ["cheap", "mid", "big"]);
}

#[test]
fn a_runtime_without_room_is_left_out_unless_the_workload_runs_there() {
    let free = Commitments::default();
    let shaped = shape(
        &anywhere(),
        &prefer(&[]),
        cpu(20),
        fleet(),
        &BTreeSet::new(),
        &free,
    );
    assert_eq!(names(&shaped.allowed), ["big", "mid"]);
    let here = BTreeSet::from(["cheap".to_owned()]);
    let shaped = shape(&anywhere(), &prefer(&[]), cpu(20), fleet(), &here, &free);
    assert_eq!(names(&shaped.allowed), ["big", "cheap", "mid"]);
    let ignoring = PlacementPreferences {
        fit: Fit::Ignore,
        ..prefer(&[])
    };
    let shaped = shape(
        &anywhere(),
        &ignoring,
        cpu(500),
        fleet(),
        &BTreeSet::new(),
        &free,
    );
    assert_eq!(shaped.allowed.len(), 3);
}

#[test]
fn what_qleetos_committed_counts_when_the_runtime_has_not_measured_it_yet() {
    let committed = Commitments([("mid".to_owned(), cpu(60))].into());
    let shaped = shape(
        &anywhere(),
        &prefer(&[]),
        cpu(10),
        fleet(),
        &BTreeSet::new(),
        &committed,
    );
    assert_eq!(names(&shaped.allowed), ["big", "cheap"]);
}

#[test]
fn overflow_uses_the_first_pool_with_room_and_names_the_profile_to_provision() {
    let mut fleet = fleet();
    fleet[1].metadata.labels = Some([("pool".to_owned(), "own".to_owned())].into());
    let own = OverflowPool {
        runtime_selector: Some(LabelSelector {
            match_labels: Some([("pool".to_owned(), "own".to_owned())].into()),
            match_expressions: None,
        }),
        ..Default::default()
    };
    let burst = OverflowPool {
        runtime_profile: Some("burst".into()),
        ..Default::default()
    };
    let preferences = PlacementPreferences {
        overflow: vec![own, burst],
        ..prefer(&[])
    };
    let free = Commitments::default();
    let fits_own = shape(
        &anywhere(),
        &preferences,
        cpu(8),
        fleet.clone(),
        &BTreeSet::new(),
        &free,
    );
    assert_eq!(names(&fits_own.allowed), ["cheap"]);
    // Neither the own pool nor any burst runtime has room: provision from burst.
    let too_big = shape(
        &anywhere(),
        &preferences,
        cpu(20),
        fleet,
        &BTreeSet::new(),
        &free,
    );
    assert!(too_big.allowed.is_empty());
    assert_eq!(too_big.short.len(), 1);
    assert_eq!(too_big.short[0].overflow_profile.as_deref(), Some("burst"));
    assert!(
        too_big.short[0]
            .message
            .contains("cheap has 12.00 CPU, 0.00 GiB free"),
        "{:?}",
        too_big.short
    );
}

#[test]
fn only_the_regions_the_placement_asks_for_can_be_short_of_room() {
    let placement = Placement {
        regions: vec!["eu".into()],
        ..Placement::default()
    };
    let mut runtimes = fleet();
    runtimes.push(runtime("us-full", "us", 8, 8, "0.01"));
    let shaped = shape(
        &placement,
        &prefer(&[]),
        cpu(4),
        runtimes,
        &BTreeSet::new(),
        &Commitments::default(),
    );
    assert!(shaped.short.is_empty(), "{:?}", shaped.short);
    // Left for a failover to use, not weighed.
    assert!(names(&shaped.allowed).contains(&"us-full"));
}
