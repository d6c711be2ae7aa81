//! Whether a Workload has rolled out its current generation everywhere: the pure evaluation
//! behind the gateway's `POST .../images?wait=` and `qleetctl wait`.

use crate::{Conditions, PlacementStatus, READY, Reason, Workload};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Rollout state of a Workload at one moment, with one entry per placement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutReport {
    /// True when the status describes the current generation, the Workload is Ready and
    /// every placement is Ready with it.
    pub rolled_out: bool,
    /// The Workload's `metadata.generation`.
    pub generation: i64,
    /// The generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Ready condition's reason (`Pending` before the first status).
    pub reason: String,
    /// The Ready condition's message.
    pub message: String,
    /// Ready placements over desired placements, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_placements: Option<String>,
    /// One entry per selected runtime.
    pub placements: Vec<PlacementStatus>,
}

/// Evaluates the Workload's status against its current generation.
pub fn evaluate(workload: &Workload) -> RolloutReport {
    let generation = workload.metadata.generation.unwrap_or_default();
    let status = workload.status.clone().unwrap_or_default();
    let ready = status.condition(READY);
    let current = status.observed_generation == Some(generation);
    let rolled_out = current
        && ready.is_some_and(|c| c.is_true())
        && !status.placements.is_empty()
        && status.placements.iter().all(|p| p.ready);
    let (reason, message) = match (ready, current) {
        (Some(c), true) => (c.reason.clone(), c.message.clone()),
        (_, false) => (
            Reason::Progressing.to_string(),
            format!(
                "generation {generation} not observed yet (status is of generation {})",
                status
                    .observed_generation
                    .map_or_else(|| "none".to_owned(), |g| g.to_string())
            ),
        ),
        (None, true) => (Reason::Pending.to_string(), String::new()),
    };
    RolloutReport {
        rolled_out,
        generation,
        observed_generation: status.observed_generation,
        reason,
        message,
        ready_placements: status.ready_placements.clone(),
        placements: status.placements,
    }
}

#[cfg(test)]
mod tests {
    use crate::{Condition, WorkloadStatus};
    use serde_json::json;

    use super::*;

    fn workload(generation: i64, status: Option<WorkloadStatus>) -> Workload {
        let mut w: Workload = serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": "web", "namespace": "a", "generation": generation},
            "spec": {"manifests": [], "placement": {"regions": ["eu"]}}
        }))
        .expect("workload");
        w.status = status;
        w
    }

    fn placement(runtime: &str, ready: bool) -> PlacementStatus {
        PlacementStatus {
            runtime: runtime.into(),
            region: "eu".into(),
            instance: format!("web-{runtime}"),
            ready,
            reason: if ready {
                "AllPlacementsReady"
            } else {
                "Progressing"
            }
            .into(),
            message: String::new(),
            urls: Vec::new(),
            replaces: None,
            ..Default::default()
        }
    }

    fn status(observed: i64, ready: bool, placements: Vec<PlacementStatus>) -> WorkloadStatus {
        WorkloadStatus {
            conditions: vec![Condition::ready(
                ready,
                if ready {
                    Reason::AllPlacementsReady
                } else {
                    Reason::Progressing
                },
                "m",
            )],
            observed_generation: Some(observed),
            placements,
            ready_placements: None,
            ..Default::default()
        }
    }

    #[test]
    fn rolled_out_when_current_ready_everywhere() {
        let w = workload(
            3,
            Some(status(
                3,
                true,
                vec![placement("eu", true), placement("us", true)],
            )),
        );
        let report = evaluate(&w);
        assert!(report.rolled_out);
        assert_eq!(report.placements.len(), 2);
        assert_eq!(report.reason, "AllPlacementsReady");
    }

    #[test]
    fn stale_status_is_not_rolled_out_even_if_ready() {
        let w = workload(4, Some(status(3, true, vec![placement("eu", true)])));
        let report = evaluate(&w);
        assert!(!report.rolled_out);
        assert_eq!(report.reason, "Progressing");
        assert!(
            report.message.contains("generation 4"),
            "{}",
            report.message
        );
    }

    #[test]
    fn one_unready_placement_blocks() {
        let w = workload(
            3,
            Some(status(
                3,
                true,
                vec![placement("eu", true), placement("us", false)],
            )),
        );
        assert!(!evaluate(&w).rolled_out);
        let w = workload(3, Some(status(3, false, vec![placement("eu", true)])));
        assert!(!evaluate(&w).rolled_out);
    }

    #[test]
    fn no_status_or_no_placements_is_not_rolled_out() {
        assert!(!evaluate(&workload(1, None)).rolled_out);
        assert!(!evaluate(&workload(1, Some(status(1, true, vec![])))).rolled_out);
    }
}
