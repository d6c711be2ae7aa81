//! Rebalancing: placing a running Workload anew under its placement preferences (issue 28).
//! Placements never move by themselves when capacity or prices change; a rebalance is asked
//! for explicitly, after a plan (`WorkloadPlan.spec.rebalance`) showed what it would move and
//! which runtimes it would leave with nothing to run (a provisioned one is then retired after
//! its idle time).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a Workload asking QleetOS to place it anew under its placement preferences;
/// each new value asks again (`qleetctl rebalance --apply` writes the time).
pub const REBALANCE_ANNOTATION: &str = "qleetos.io/rebalance";

/// Where a rebalance stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RebalanceState {
    /// The new placements are being made; the ones left stay until those are Ready.
    #[default]
    Moving,
    /// Every new placement is Ready and the ones left are removed (or nothing had to move).
    Done,
    /// A runtime it was moving to went away or is no longer allowed; the Workload was placed
    /// as usual instead.
    Failed,
}

/// The last rebalance asked for, in the Workload's status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// The `qleetos.io/rebalance` value this answers.
    pub requested: String,
    pub state: RebalanceState,
    /// The runtimes the Workload leaves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
    /// Every runtime the Workload runs on once moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// What it did, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
