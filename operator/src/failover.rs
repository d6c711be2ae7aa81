//! Failover of `OnePerRegion` placements: off a runtime unreachable for longer than the
//! Workload's tolerance, and back (or not) once it recovers. Pure: no client, no I/O.
//!
//! A failover placement is an ordinary placement that records the runtime it stands in for
//! (`replaces`); that record, kept on its WorkloadInstance, is all the state failover needs.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use qleetos_crds::{Failover, KubernetesRuntime, Placement, PlacementStrategy, Recovery};

use crate::error::Result;
use crate::placement::{Rank, Selected, candidates, name_of, select, selected_of};

/// One of the Workload's existing instances, as the planner needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub runtime: String,
    /// The runtime it stands in for, on a failover placement.
    pub replaces: Option<String>,
    /// Ready with the Workload's current spec.
    pub ready: bool,
    /// Being deleted: neither kept nor chosen again until it is gone.
    pub terminating: bool,
}

/// Where the Workload runs now, and when to look again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sorted by runtime name.
    pub selected: Vec<Selected>,
    /// A runtime is unreachable, not for long enough yet: reconcile again after this.
    pub recheck_in: Option<Duration>,
    /// Lost homes with no runtime that could stand in for them, now or soon.
    pub stranded: Vec<Stranded>,
}

/// A home runtime down for the whole tolerance, with every runtime its placement may move to
/// down as well (or none at all): with clusters on demand, one is provisioned for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranded {
    pub home: String,
    /// Where it may move, in order of preference: its own region, then the policy's.
    pub regions: Vec<String>,
}

/// What the planner makes of a runtime's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Ready,
    /// Not Ready, but not unreachable for the whole tolerance either.
    Uncertain,
    /// Unreachable for at least the tolerance.
    Down,
}

/// The runtimes `placement` selects among `runtimes`, with failover applied when the
/// placement asks for it; `existing` are the Workload's instances.
pub fn plan(
    placement: &Placement,
    runtimes: &[KubernetesRuntime],
    existing: &[Assignment],
    now: DateTime<Utc>,
    default_after: Duration,
    rank: &Rank,
) -> Result<Plan> {
    // A placement being removed (moved off by a rebalance, say) does not hold its region.
    let homes_now: BTreeSet<String> = existing
        .iter()
        .filter(|a| a.replaces.is_none() && !a.terminating)
        .map(|a| a.runtime.clone())
        .collect();
    let homes = select(placement, runtimes, &homes_now, rank)?;
    let policy = match (&placement.failover, placement.strategy) {
        (Some(policy), PlacementStrategy::OnePerRegion) => policy,
        _ => {
            return Ok(Plan {
                selected: homes,
                recheck_in: None,
                stranded: Vec::new(),
            });
        }
    };
    let taken = homes
        .iter()
        .map(|s| s.runtime.clone())
        .chain(
            existing
                .iter()
                .filter(|a| a.terminating)
                .map(|a| a.runtime.clone()),
        )
        .collect();
    let mut planner = Planner {
        placement,
        policy,
        runtimes,
        existing,
        now,
        after: policy.tolerance().unwrap_or(default_after),
        taken,
        plan: Plan::default(),
    };
    for home in homes {
        planner.serve(home)?;
    }
    planner.plan.selected.sort();
    Ok(planner.plan)
}

struct Planner<'a> {
    placement: &'a Placement,
    policy: &'a Failover,
    runtimes: &'a [KubernetesRuntime],
    existing: &'a [Assignment],
    now: DateTime<Utc>,
    after: Duration,
    /// Runtimes that cannot take a new failover placement: every home, and those whose
    /// instance is still being deleted.
    taken: BTreeSet<String>,
    plan: Plan,
}

impl<'a> Planner<'a> {
    /// Decides who serves the region of `home`: the home runtime, a replacement, or both
    /// (while one of them is not Ready yet).
    fn serve(&mut self, home: Selected) -> Result<()> {
        let home_health = self.health(&home.runtime);
        let replacement = match self.replacement_for(&home) {
            Some(runtime) if self.usable(runtime, &home)? => Some(runtime),
            _ => None,
        };
        match (home_health, replacement) {
            (Health::Down, kept) => {
                let target = match kept {
                    Some(runtime) => Some(runtime),
                    None => self.first_target(&home)?,
                };
                if target.is_none() && self.only_lost_targets(&home)? {
                    self.plan.stranded.push(Stranded {
                        home: home.runtime.clone(),
                        regions: self.regions_for(&home),
                    });
                }
                let placed_home = self.has_instance_on(&home.runtime);
                if placed_home || target.is_none() {
                    self.plan.selected.push(home.clone());
                }
                if let Some(target) = target {
                    self.push_replacement(target, &home);
                }
            }
            (_, None) => self.plan.selected.push(home),
            (health, Some(replacement)) => match (health, self.policy.on_recovery) {
                (Health::Ready, Recovery::Return) if self.home_is_ready(&home) => {
                    self.plan.selected.push(home);
                }
                (Health::Ready, Recovery::Stay) => self.push_replacement(replacement, &home),
                _ => {
                    self.plan.selected.push(home.clone());
                    self.push_replacement(replacement, &home);
                }
            },
        }
        Ok(())
    }

    fn push_replacement(&mut self, runtime: &'a KubernetesRuntime, home: &Selected) {
        self.taken.insert(name_of(runtime).to_owned());
        self.plan.selected.push(Selected {
            replaces: Some(home.runtime.clone()),
            ..selected_of(runtime)
        });
    }

    /// The runtime of the existing failover placement serving `home`'s region.
    fn replacement_for(&self, home: &Selected) -> Option<&'a KubernetesRuntime> {
        let serves_region = |replaced: &str| {
            replaced == home.runtime
                || self
                    .runtime(replaced)
                    .is_some_and(|r| r.spec.region == home.region)
        };
        self.existing
            .iter()
            .filter(|a| !a.terminating)
            .filter(|a| a.replaces.as_deref().is_some_and(serves_region))
            .find_map(|a| self.runtime(&a.runtime))
            .filter(|r| !self.taken.contains(name_of(r)))
    }

    /// Whether `runtime` may carry `home`'s failover placement: allowed for it, not down.
    fn usable(&mut self, runtime: &KubernetesRuntime, home: &Selected) -> Result<bool> {
        let allowed = self
            .targets_for(home)?
            .iter()
            .any(|r| name_of(r) == name_of(runtime));
        Ok(allowed && self.health(name_of(runtime)) != Health::Down)
    }

    /// The first Ready runtime free for a failover placement of `home`: its own region
    /// first, then the policy's regions in order.
    fn first_target(&self, home: &Selected) -> Result<Option<&'a KubernetesRuntime>> {
        let mut targets = self.targets_for(home)?;
        targets.retain(|r| r.is_ready() && !self.taken.contains(name_of(r)));
        Ok(targets.into_iter().next())
    }

    /// Whether every runtime `home` may move to is down too (or there is none): no runtime
    /// that is merely not Ready yet, such as one being provisioned, is worth waiting for.
    fn only_lost_targets(&mut self, home: &Selected) -> Result<bool> {
        let targets = self.targets_for(home)?;
        Ok(targets
            .iter()
            .all(|r| self.taken.contains(name_of(r)) || self.health(name_of(r)) == Health::Down))
    }

    fn regions_for(&self, home: &Selected) -> Vec<String> {
        let mut regions = vec![home.region.clone()];
        for region in &self.policy.regions {
            if !regions.contains(region) {
                regions.push(region.clone());
            }
        }
        regions
    }

    /// The runtimes `home`'s placement may move to, in order of preference.
    fn targets_for(&self, home: &Selected) -> Result<Vec<&'a KubernetesRuntime>> {
        let regions = self.regions_for(home);
        let widened = Placement {
            regions: regions.clone(),
            ..self.placement.clone()
        };
        let mut targets = candidates(&widened, self.runtimes)?;
        targets.retain(|r| name_of(r) != home.runtime);
        targets.sort_by_key(|r| {
            let rank = regions.iter().position(|region| *region == r.spec.region);
            (rank, name_of(r).to_owned())
        });
        Ok(targets)
    }

    fn health(&mut self, name: &str) -> Health {
        let Some(runtime) = self.runtime(name) else {
            return Health::Down;
        };
        if runtime.is_ready() {
            return Health::Ready;
        }
        let Some(since) = runtime.unreachable_since() else {
            return Health::Uncertain;
        };
        // Condition times are whole seconds: the outage may have begun up to one second
        // after `since`, so that second does not count (never move before the tolerance).
        let down_for = (self.now - since)
            .to_std()
            .unwrap_or_default()
            .saturating_sub(Duration::from_secs(1));
        if down_for >= self.after {
            return Health::Down;
        }
        let wait = self.after - down_for;
        self.plan.recheck_in = Some(self.plan.recheck_in.map_or(wait, |w| w.min(wait)));
        Health::Uncertain
    }

    fn has_instance_on(&self, runtime: &str) -> bool {
        self.existing
            .iter()
            .any(|a| a.runtime == runtime && a.replaces.is_none())
    }

    fn home_is_ready(&self, home: &Selected) -> bool {
        self.existing
            .iter()
            .any(|a| a.runtime == home.runtime && a.replaces.is_none() && a.ready)
    }

    fn runtime(&self, name: &str) -> Option<&'a KubernetesRuntime> {
        self.runtimes.iter().find(|r| name_of(r) == name)
    }
}

#[cfg(test)]
mod tests {
    use qleetos_crds::{Condition, ConditionStatus, KubernetesRuntimeStatus, REACHABLE};

    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    /// A runtime Ready, or unreachable for `down_for` seconds.
    fn runtime(name: &str, region: &str, down_for: Option<i64>) -> KubernetesRuntime {
        let mut runtime = crate::placement::test_runtime(name, region);
        let since = down_for.map(|s| (now() - chrono::Duration::seconds(s)).to_rfc3339());
        let reachable = Condition {
            last_transition_time: since.clone().unwrap_or_else(|| now().to_rfc3339()),
            ..Condition::new(
                REACHABLE,
                ConditionStatus::from(down_for.is_none()),
                qleetos_crds::Reason::Reachable,
                "",
            )
        };
        let ready = Condition {
            type_: qleetos_crds::READY.into(),
            ..reachable.clone()
        };
        runtime.status = Some(KubernetesRuntimeStatus {
            conditions: vec![reachable, ready],
            ..Default::default()
        });
        runtime
    }

    fn placement(failover: Option<Failover>) -> Placement {
        Placement {
            regions: vec!["eu".into()],
            failover,
            ..Default::default()
        }
    }

    fn to_us(on_recovery: Recovery) -> Option<Failover> {
        Some(Failover {
            regions: vec!["us".into()],
            on_recovery,
            ..Default::default()
        })
    }

    fn on(runtime: &str, replaces: Option<&str>, ready: bool) -> Assignment {
        Assignment {
            runtime: runtime.into(),
            replaces: replaces.map(Into::into),
            ready,
            terminating: false,
        }
    }

    fn placed(plan: &Plan) -> Vec<(String, Option<String>)> {
        plan.selected
            .iter()
            .map(|s| (s.runtime.clone(), s.replaces.clone()))
            .collect()
    }

    fn run(placement: &Placement, runtimes: &[KubernetesRuntime], existing: &[Assignment]) -> Plan {
        plan(placement, runtimes, existing, now(), AFTER, &Rank::new()).expect("valid placement")
    }

    fn pair(runtime: &str, replaces: Option<&str>) -> (String, Option<String>) {
        (runtime.into(), replaces.map(Into::into))
    }

    #[test]
    fn without_a_policy_a_placement_waits_for_its_runtime() {
        let runtimes = [
            runtime("eu-1", "eu", Some(600)),
            runtime("us-1", "us", None),
        ];
        let plan = run(&placement(None), &runtimes, &[on("eu-1", None, true)]);
        assert_eq!(placed(&plan), [pair("eu-1", None)]);
        assert_eq!(plan.recheck_in, None);
    }

    #[test]
    fn a_placement_being_removed_does_not_hold_its_region() {
        let runtimes = [runtime("eu-1", "eu", None), runtime("eu-2", "eu", None)];
        let leaving = Assignment {
            terminating: true,
            ..on("eu-1", None, true)
        };
        let plan = run(
            &placement(None),
            &runtimes,
            &[leaving, on("eu-2", None, true)],
        );
        assert_eq!(placed(&plan), [pair("eu-2", None)]);
    }

    #[test]
    fn within_the_tolerance_nothing_moves_and_a_recheck_is_due_when_it_ends() {
        let runtimes = [runtime("eu-1", "eu", Some(20)), runtime("us-1", "us", None)];
        let policy = placement(to_us(Recovery::Return));
        let plan = run(&policy, &runtimes, &[on("eu-1", None, true)]);
        assert_eq!(placed(&plan), [pair("eu-1", None)]);
        // 60 s tolerance, 20 s down, and the second a condition time may be early.
        assert_eq!(plan.recheck_in, Some(Duration::from_secs(41)));
    }

    #[test]
    fn past_the_tolerance_the_own_region_is_tried_before_the_policy_regions() {
        let mut runtimes = vec![runtime("eu-1", "eu", Some(90)), runtime("us-1", "us", None)];
        let policy = placement(to_us(Recovery::Return));
        let existing = [on("eu-1", None, true)];
        let plan = run(&policy, &runtimes, &existing);
        assert_eq!(
            placed(&plan),
            [pair("eu-1", None), pair("us-1", Some("eu-1"))]
        );
        runtimes.push(runtime("eu-2", "eu", None));
        let plan = run(&policy, &runtimes, &existing);
        assert_eq!(
            placed(&plan),
            [pair("eu-1", None), pair("eu-2", Some("eu-1"))]
        );
    }

    #[test]
    fn a_lost_home_with_every_target_lost_is_stranded_in_its_regions_in_order() {
        let runtimes = [
            runtime("eu-1", "eu", Some(90)),
            runtime("us-1", "us", Some(600)),
        ];
        let policy = placement(to_us(Recovery::Return));
        let plan = run(&policy, &runtimes, &[on("eu-1", None, true)]);
        assert_eq!(placed(&plan), [pair("eu-1", None)]);
        assert_eq!(
            plan.stranded,
            [Stranded {
                home: "eu-1".into(),
                regions: vec!["eu".into(), "us".into()],
            }]
        );
        let nowhere = run(
            &placement(Some(Failover::default())),
            &runtimes[..1],
            &[on("eu-1", None, true)],
        );
        assert_eq!(
            nowhere.stranded.len(),
            1,
            "no target at all is stranded too"
        );
    }

    #[test]
    fn a_target_not_ready_yet_is_waited_for_rather_than_provisioning_another() {
        let runtimes = [
            runtime("eu-1", "eu", Some(90)),
            runtime("us-1", "us", Some(10)),
        ];
        let policy = placement(to_us(Recovery::Return));
        let plan = run(&policy, &runtimes, &[on("eu-1", None, true)]);
        assert_eq!(placed(&plan), [pair("eu-1", None)]);
        assert!(plan.stranded.is_empty(), "{:?}", plan.stranded);
        let healthy = [runtime("eu-1", "eu", Some(90)), runtime("us-1", "us", None)];
        assert!(
            run(&policy, &healthy, &[on("eu-1", None, true)])
                .stranded
                .is_empty()
        );
    }

    #[test]
    fn a_region_outside_the_policy_is_never_a_target() {
        let runtimes = [runtime("eu-1", "eu", Some(90)), runtime("ap-1", "ap", None)];
        let policy = placement(to_us(Recovery::Return));
        let plan = run(&policy, &runtimes, &[on("eu-1", None, true)]);
        assert_eq!(placed(&plan), [pair("eu-1", None)]);
    }

    #[test]
    fn a_runtime_that_is_another_region_s_home_is_not_a_target() {
        let runtimes = [runtime("eu-1", "eu", Some(90)), runtime("us-1", "us", None)];
        let policy = Placement {
            regions: vec!["eu".into(), "us".into()],
            ..placement(to_us(Recovery::Return))
        };
        let existing = [on("eu-1", None, true), on("us-1", None, true)];
        let plan = run(&policy, &runtimes, &existing);
        assert_eq!(placed(&plan), [pair("eu-1", None), pair("us-1", None)]);
    }

    #[test]
    fn return_keeps_the_replacement_until_the_home_instance_is_ready() {
        let runtimes = [runtime("eu-1", "eu", None), runtime("us-1", "us", None)];
        let policy = placement(to_us(Recovery::Return));
        let recovering = [on("eu-1", None, false), on("us-1", Some("eu-1"), true)];
        let plan = run(&policy, &runtimes, &recovering);
        assert_eq!(
            placed(&plan),
            [pair("eu-1", None), pair("us-1", Some("eu-1"))]
        );
        let recovered = [on("eu-1", None, true), on("us-1", Some("eu-1"), true)];
        assert_eq!(
            placed(&run(&policy, &runtimes, &recovered)),
            [pair("eu-1", None)]
        );
    }

    #[test]
    fn stay_keeps_the_replacement_and_leaves_the_recovered_runtime() {
        let runtimes = [runtime("eu-1", "eu", None), runtime("us-1", "us", None)];
        let policy = placement(to_us(Recovery::Stay));
        let recovered = [on("eu-1", None, false), on("us-1", Some("eu-1"), true)];
        let stayed = [pair("us-1", Some("eu-1"))];
        assert_eq!(placed(&run(&policy, &runtimes, &recovered)), stayed);
        let settled = [on("us-1", Some("eu-1"), true)];
        assert_eq!(placed(&run(&policy, &runtimes, &settled)), stayed);
    }

    #[test]
    fn a_replacement_that_goes_down_hands_back_to_a_ready_home() {
        let runtimes = [runtime("eu-1", "eu", None), runtime("us-1", "us", Some(90))];
        let policy = placement(to_us(Recovery::Stay));
        let settled = [on("us-1", Some("eu-1"), true)];
        assert_eq!(
            placed(&run(&policy, &runtimes, &settled)),
            [pair("eu-1", None)]
        );
    }

    #[test]
    fn a_flapping_home_keeps_its_replacement_without_moving_again() {
        let runtimes = [
            runtime("eu-1", "eu", Some(5)),
            runtime("us-1", "us", None),
            runtime("us-2", "us", None),
        ];
        let policy = placement(to_us(Recovery::Return));
        let existing = [on("eu-1", None, false), on("us-2", Some("eu-1"), true)];
        let plan = run(&policy, &runtimes, &existing);
        assert_eq!(
            placed(&plan),
            [pair("eu-1", None), pair("us-2", Some("eu-1"))]
        );
    }

    #[test]
    fn a_terminating_instance_s_runtime_is_not_chosen_until_it_is_gone() {
        let runtimes = [
            runtime("eu-1", "eu", Some(90)),
            runtime("us-1", "us", None),
            runtime("us-2", "us", None),
        ];
        let policy = placement(to_us(Recovery::Return));
        let leaving = Assignment {
            terminating: true,
            ..on("us-1", Some("eu-1"), true)
        };
        let plan = run(&policy, &runtimes, &[on("eu-1", None, false), leaving]);
        assert_eq!(
            placed(&plan),
            [pair("eu-1", None), pair("us-2", Some("eu-1"))]
        );
    }

    #[test]
    fn a_new_workload_whose_home_is_down_goes_straight_to_the_replacement() {
        let runtimes = [runtime("eu-1", "eu", Some(90)), runtime("us-1", "us", None)];
        let policy = placement(to_us(Recovery::Return));
        assert_eq!(
            placed(&run(&policy, &runtimes, &[])),
            [pair("us-1", Some("eu-1"))]
        );
    }

    #[test]
    fn the_workload_s_own_tolerance_wins_over_the_default() {
        let runtimes = [runtime("eu-1", "eu", Some(90)), runtime("us-1", "us", None)];
        let policy = placement(Some(Failover {
            after: Some("5m".into()),
            ..to_us(Recovery::Return).expect("policy")
        }));
        let plan = run(&policy, &runtimes, &[on("eu-1", None, true)]);
        assert_eq!(placed(&plan), [pair("eu-1", None)]);
        assert_eq!(plan.recheck_in, Some(Duration::from_secs(211)));
    }
}
