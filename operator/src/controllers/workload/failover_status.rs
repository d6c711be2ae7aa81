//! How a Workload records and tells about failover: the annotation that marks a failover
//! instance, the home placement's reason while it is stood in for, the `FailedOver`
//! condition, and the Events and metric of each step.

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use qleetos_crds::Reason;
use qleetos_crds::{
    Condition, ConditionStatus, KubernetesRuntime, PlacementStatus, WorkloadInstance,
};

use crate::failover::Assignment;

/// On a failover WorkloadInstance: the runtime it stands in for.
pub const REPLACES_ANNOTATION: &str = "qleetos.io/replaces";
/// Condition type telling whether placements run on a stand-in runtime; also its reason
/// and the Event reason ([`Reason::FailedOver`]) once they do.
pub const FAILED_OVER: &str = Reason::FailedOver.as_str();

pub fn replaces_of(instance: &WorkloadInstance) -> Option<String> {
    instance.annotations().get(REPLACES_ANNOTATION).cloned()
}

/// What the planner needs of an instance; `ready` means Ready with the current spec.
pub fn assignment(instance: &WorkloadInstance, generation: Option<i64>) -> Assignment {
    let rendered_from_current = instance
        .spec
        .workload_ref
        .as_ref()
        .is_some_and(|r| r.generation == generation);
    Assignment {
        runtime: instance.spec.runtime_ref.name.clone(),
        replaces: replaces_of(instance),
        ready: rendered_from_current && instance.is_ready_at_current_generation(),
        terminating: instance.metadata.deletion_timestamp.is_some(),
    }
}

fn stand_in_for<'p>(
    home: &PlacementStatus,
    placements: &'p [PlacementStatus],
) -> Option<&'p PlacementStatus> {
    placements
        .iter()
        .find(|p| p.replaces.as_deref() == Some(home.runtime.as_str()))
}

/// Whether a Ready stand-in serves `placement`'s region: it then does not count for the
/// Workload's readiness.
pub fn is_covered(placement: &PlacementStatus, placements: &[PlacementStatus]) -> bool {
    placement.replaces.is_none() && stand_in_for(placement, placements).is_some_and(|p| p.ready)
}

/// Says, on each home placement that has a stand-in while its runtime is unreachable, since
/// when and where the workload runs instead.
pub fn mark_homes(
    placements: &mut [PlacementStatus],
    runtime: impl Fn(&str) -> Option<std::sync::Arc<KubernetesRuntime>>,
) {
    let snapshot = placements.to_vec();
    for home in placements.iter_mut().filter(|p| p.replaces.is_none()) {
        let Some(stand_in) = stand_in_for(home, &snapshot) else {
            continue;
        };
        let since = runtime(&home.runtime).and_then(|r| r.unreachable_since());
        let Some(since) = since else {
            if !home.ready {
                home.message = format!(
                    "returning from {} ({}) once Ready here: {}",
                    stand_in.runtime, stand_in.region, home.message
                );
            }
            continue;
        };
        let (reason, now_on) = if stand_in.ready {
            (Reason::FailedOver, "now on")
        } else {
            (Reason::FailingOver, "moving to")
        };
        home.ready = false;
        home.reason = reason.to_string();
        home.message = format!(
            "runtime {} ({}) unreachable since {}; {now_on} {} ({})",
            home.runtime,
            home.region,
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            stand_in.runtime,
            stand_in.region
        );
    }
}

/// The `FailedOver` condition of a Workload whose placement has a failover policy.
pub fn condition(placements: &[PlacementStatus]) -> Condition {
    let stand_ins: Vec<&PlacementStatus> =
        placements.iter().filter(|p| p.replaces.is_some()).collect();
    if stand_ins.is_empty() {
        return Condition::new(
            FAILED_OVER,
            ConditionStatus::False,
            Reason::OnOriginalRuntimes,
            "every placement runs on a runtime of its own region",
        );
    }
    let moves = stand_ins
        .iter()
        .map(|p| {
            let home = p.replaces.as_deref().unwrap_or_default();
            format!("{home} -> {} ({})", p.runtime, p.region)
        })
        .collect::<Vec<_>>()
        .join(", ");
    if stand_ins.iter().all(|p| p.ready) {
        Condition::new(
            FAILED_OVER,
            ConditionStatus::True,
            Reason::FailedOver,
            moves,
        )
    } else {
        let message = format!("{moves}: not Ready there yet");
        Condition::new(
            FAILED_OVER,
            ConditionStatus::False,
            Reason::FailingOver,
            message,
        )
    }
}

/// One failover step between two statuses of a Workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The stand-in on `to` became Ready in place of `home`.
    Moved {
        home: String,
        to: String,
        region: String,
    },
    /// The workload is back on `home`; the stand-in on `from` is removed.
    Returned { home: String, from: String },
    /// `home` is back, the workload stays on `on` and leaves `home`.
    Stayed { home: String, on: String },
}

/// The failover steps between `previous` and `current` placements, each told once.
pub fn steps(previous: &[PlacementStatus], current: &[PlacementStatus]) -> Vec<Step> {
    let mut steps = Vec::new();
    for stand_in in current.iter().filter(|p| p.ready) {
        let Some(home) = stand_in.replaces.clone() else {
            continue;
        };
        let was_ready = previous
            .iter()
            .any(|p| p.runtime == stand_in.runtime && p.replaces == stand_in.replaces && p.ready);
        if !was_ready {
            steps.push(Step::Moved {
                home,
                to: stand_in.runtime.clone(),
                region: stand_in.region.clone(),
            });
        }
    }
    let is_home = |placements: &[PlacementStatus], runtime: &str| {
        placements
            .iter()
            .any(|p| p.runtime == runtime && p.replaces.is_none())
    };
    for stand_in in previous.iter().filter(|p| p.replaces.is_some()) {
        let home = stand_in.replaces.clone().unwrap_or_default();
        let still = current
            .iter()
            .find(|p| p.replaces.as_deref() == Some(&home));
        match still {
            None if is_home(current, &home) => steps.push(Step::Returned {
                home,
                from: stand_in.runtime.clone(),
            }),
            Some(now) if is_home(previous, &home) && !is_home(current, &home) => {
                steps.push(Step::Stayed {
                    home,
                    on: now.runtime.clone(),
                })
            }
            _ => {}
        }
    }
    steps
}

/// How long `runtime` has been unreachable, for an Event note (`2m10s`).
pub fn unreachable_for(runtime: Option<&KubernetesRuntime>, now: DateTime<Utc>) -> String {
    let Some(since) = runtime.and_then(KubernetesRuntime::unreachable_since) else {
        return "a while".into();
    };
    let seconds = (now - since).num_seconds().max(0);
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(runtime: &str, replaces: Option<&str>, ready: bool) -> PlacementStatus {
        PlacementStatus {
            runtime: runtime.into(),
            region: format!("{runtime}-region"),
            replaces: replaces.map(Into::into),
            ready,
            reason: "RolledOut".into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_step_is_told_once() {
        let before = [placement("eu", None, true)];
        let moving = [
            placement("eu", None, false),
            placement("us", Some("eu"), false),
        ];
        let moved = [
            placement("eu", None, false),
            placement("us", Some("eu"), true),
        ];
        assert_eq!(steps(&before, &moving), []);
        let step = Step::Moved {
            home: "eu".into(),
            to: "us".into(),
            region: "us-region".into(),
        };
        assert_eq!(steps(&moving, &moved), [step]);
        assert_eq!(steps(&moved, &moved), []);
        let returned = [placement("eu", None, true)];
        let step = Step::Returned {
            home: "eu".into(),
            from: "us".into(),
        };
        assert_eq!(steps(&moved, &returned), [step]);
        let stayed = [placement("us", Some("eu"), true)];
        let step = Step::Stayed {
            home: "eu".into(),
            on: "us".into(),
        };
        assert_eq!(steps(&moved, &stayed), [step]);
        assert_eq!(steps(&stayed, &stayed), []);
    }

    #[test]
    fn a_home_is_covered_only_by_a_ready_stand_in() {
        let moving = [
            placement("eu", None, false),
            placement("us", Some("eu"), false),
        ];
        assert!(!is_covered(&moving[0], &moving));
        let moved = [
            placement("eu", None, false),
            placement("us", Some("eu"), true),
        ];
        assert!(is_covered(&moved[0], &moved));
        assert!(!is_covered(&moved[1], &moved));
    }

    #[test]
    fn the_condition_names_every_move() {
        let moved = [
            placement("eu", None, false),
            placement("us", Some("eu"), true),
        ];
        let condition = condition(&moved);
        assert!(condition.is_true());
        assert_eq!(condition.message, "eu -> us (us-region)");
        let home = super::condition(&[placement("eu", None, true)]);
        assert_eq!(home.reason, "OnOriginalRuntimes");
    }
}
