//! Staged rollouts: how a new revision (of a SupportServiceProfile) reaches its runtimes in
//! waves, each gated on health in every runtime of the wave plus a bake time, with runtimes
//! that may be pinned to a revision; and the labels of the ControllerRevisions that keep
//! revisions.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Labels every ControllerRevision QleetOS keeps with its owner's uid (names may be reused).
pub const OWNER_UID_LABEL: &str = "qleetos.io/owner-uid";
/// Labels a ControllerRevision with the hash of the template it holds.
pub const HASH_LABEL: &str = "qleetos.io/revision-hash";

/// The annotation `qleetctl rollout resume` sets (to a fresh token) on a profile whose rollout
/// halted: the halted wave is tried again, its deadline counted anew.
pub const RESUME_ANNOTATION: &str = "qleetos.io/resume-rollout";
/// Annotation pausing a rollout (any value): no wave starts while it is there.
pub const PAUSE_ANNOTATION: &str = "qleetos.io/pause-rollout";

/// How a change of the profile reaches the runtimes it is installed in. Absent: every runtime
/// gets a change at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileRollout {
    /// Waves in order (e.g. a canary region first); a runtime matching none of them is in a
    /// last wave of its own. A wave matching no runtime is skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub waves: Vec<RuntimeSelection>,
    /// How long every runtime of a wave must stay healthy at the new revision before the next
    /// wave starts (default 60).
    #[serde(default = "default_bake_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub bake_seconds: u32,
    /// How long a wave may take to become healthy before the rollout halts (default 600).
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: u32,
    /// Runtimes held at a revision whatever the latest is; they take part in no wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub pinned: Vec<Pin>,
}

fn default_bake_seconds() -> u32 {
    60
}

fn default_progress_deadline() -> u32 {
    600
}

/// How a change of a Workload (a new revision) reaches its placements. Absent: every
/// placement gets a change at once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRollout {
    /// Waves of placements in order (e.g. a canary region first); a placement matching none
    /// is in a last wave of its own. A wave matching no placement is skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub waves: Vec<RuntimeSelection>,
    /// How long every placement of a wave must stay Ready at the new revision before the next
    /// wave starts (default 60).
    #[serde(default = "default_bake_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub bake_seconds: u32,
    /// How long a wave may take to become Ready before the rollout halts (default 600).
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: u32,
    /// What a failed wave does: `Halt` (default) leaves the placements already moved on the new
    /// revision; `Rollback` returns them to the stable one.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// At most this many placements of the wave in progress are moving to the new revision or
    /// not healthy on it at once; the others of the wave follow, in runtime-name order, as
    /// they become healthy. Absent: the whole wave at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_unavailable: Option<u32>,
}

/// What a failed wave does to the placements already moved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum OnFailure {
    #[default]
    Halt,
    Rollback,
}

/// Runtimes chosen by name, region and labels: each list given must contain the runtime's
/// (name, region) and every label must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.percent) ? !((has(self.names) && size(self.names) > 0) || (has(self.regions) && size(self.regions) > 0) || (has(self.matchLabels) && size(self.matchLabels) > 0)) : ((has(self.names) && size(self.names) > 0) || (has(self.regions) && size(self.regions) > 0) || (has(self.matchLabels) && size(self.matchLabels) > 0))").message("a runtime selection needs names, regions or matchLabels, or a percent alone"))]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSelection {
    /// KubernetesRuntime names.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[schemars(inner(length(min = 1, max = 253)))]
    pub names: Vec<String>,
    /// Regions.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[schemars(inner(length(min = 1, max = 63)))]
    pub regions: Vec<String>,
    /// Labels the KubernetesRuntime must carry.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// In a wave, instead of the fields above: the share of all runtimes (rounded up) the
    /// waves up to this one reach, taken in name order from those no other wave names.
    /// Ignored in a pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<u32>,
}

impl RuntimeSelection {
    /// Whether the runtime is selected by name, region and labels (never by a percent).
    pub fn matches(&self, name: &str, region: &str, labels: &BTreeMap<String, String>) -> bool {
        self.percent.is_none()
            && (self.names.is_empty() || self.names.iter().any(|n| n == name))
            && (self.regions.is_empty() || self.regions.iter().any(|r| r == region))
            && self
                .match_labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
    }
}

/// Runtimes held at one revision of the profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// The runtimes.
    pub runtimes: RuntimeSelection,
    /// The revision they stay on (`status.revision` names the latest).
    #[schemars(range(min = 1))]
    pub revision: i64,
}

/// Where a rollout is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RolloutPhase {
    /// A wave is being installed and is not healthy everywhere yet.
    #[default]
    Progressing,
    /// Every runtime of the wave is healthy; the next wave starts after the bake time.
    Baking,
    /// A wave failed: the rollout stops there until resumed or rolled back; runtimes of later
    /// waves stay on the stable revision.
    Halted,
    /// Every runtime not pinned runs the revision.
    Complete,
    /// A wave failed and every member is back on the stable revision (`onFailure: Rollback`).
    RolledBack,
    /// Paused by annotation `qleetos.io/pause-rollout`: the waves reached keep the revision,
    /// no further wave starts until it is removed (`qleetctl rollout resume`).
    Paused,
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Progressing => "Progressing",
            Self::Baking => "Baking",
            Self::Halted => "Halted",
            Self::Complete => "Complete",
            Self::RolledBack => "RolledBack",
            Self::Paused => "Paused",
        })
    }
}

/// The rollout of the latest revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StagedRolloutStatus {
    pub phase: RolloutPhase,
    /// The revision being rolled out.
    pub revision: i64,
    /// The revision runtimes not reached yet keep (the last one rolled out everywhere).
    pub stable_revision: i64,
    /// The wave in progress, from 1; `waves + 1` once complete.
    pub wave: u32,
    /// Number of waves (the implicit last one included when some runtime is in none).
    pub waves: u32,
    /// When the wave in progress started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<String>,
    /// Since when every runtime of the wave has been healthy (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<String>,
    /// What it waits on, or why it halted.
    #[serde(default)]
    pub message: String,
    /// The last `qleetos.io/resume-rollout` token acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<String>,
}

/// One runtime's place in the rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRevision {
    /// The KubernetesRuntime.
    pub runtime: String,
    /// Its wave, from 1; absent when pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
    /// Whether a pin holds it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// The revision it should run.
    pub revision: i64,
    /// The revision its SupportService last installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_revision: Option<i64>,
    /// The SupportService's state (`Ready`, `Failed`...).
    pub state: String,
}

/// The revision a rollback returns to: `to` when given, else the stable revision while a
/// rollout is under way, else the one before the `latest`.
pub fn rollback_target(
    to: Option<i64>,
    latest: Option<i64>,
    rollout: Option<&StagedRolloutStatus>,
) -> Option<i64> {
    to.or_else(|| {
        rollout
            .filter(|r| r.phase != RolloutPhase::Complete)
            .map(|r| r.stable_revision)
    })
    .or_else(|| latest.map(|r| r - 1))
    .filter(|r| *r >= 1)
}

/// The ControllerRevision holding revision `number` of object `owner`.
pub fn revision_name(owner: &str, number: i64) -> String {
    let owner: String = owner.chars().take(230).collect();
    format!("{owner}.r{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_needs_every_given_list_to_match() {
        let labels: BTreeMap<String, String> = [("tier".to_owned(), "prod".to_owned())].into();
        let by_region = RuntimeSelection {
            regions: vec!["eu-west-1".into()],
            ..Default::default()
        };
        assert!(by_region.matches("a", "eu-west-1", &labels));
        assert!(!by_region.matches("a", "us-east-1", &labels));
        let both = RuntimeSelection {
            regions: vec!["eu-west-1".into()],
            match_labels: [("tier".to_owned(), "dev".to_owned())].into(),
            ..Default::default()
        };
        assert!(!both.matches("a", "eu-west-1", &labels));
    }

    #[test]
    fn a_rollback_goes_to_the_stable_revision_while_rolling_out() {
        let halted = StagedRolloutStatus {
            phase: RolloutPhase::Halted,
            revision: 5,
            stable_revision: 3,
            ..Default::default()
        };
        assert_eq!(rollback_target(None, Some(5), Some(&halted)), Some(3));
        assert_eq!(rollback_target(Some(2), Some(5), Some(&halted)), Some(2));
        assert_eq!(rollback_target(None, Some(5), None), Some(4));
        assert_eq!(
            rollback_target(None, Some(1), None),
            None,
            "nothing before 1"
        );
    }
}
