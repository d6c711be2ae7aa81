use chrono::{SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Reason;

/// The condition type every QleetOS kind reports.
pub const READY: &str = "Ready";

/// Whether a condition holds, in the standard Kubernetes spelling.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// One observation of the object's state, in the standard Kubernetes condition shape.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition: True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason for the condition's last transition.
    pub reason: String,
    /// Human-readable explanation, including what to do when something is wrong.
    #[serde(default)]
    pub message: String,
    /// When the condition last changed status (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status,
            reason: reason.as_str().to_owned(),
            message: message.into(),
            last_transition_time: now_rfc3339(),
            observed_generation: None,
        }
    }

    pub fn ready(
        status: impl Into<ConditionStatus>,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self::new(READY, status.into(), reason, message)
    }

    #[must_use]
    pub fn with_generation(mut self, generation: Option<i64>) -> Self {
        self.observed_generation = generation;
        self
    }

    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Helpers on a status's condition list.
pub trait Conditions {
    fn conditions(&self) -> &[Condition];

    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_)
    }

    fn is_ready(&self) -> bool {
        self.condition(READY).is_some_and(Condition::is_true)
    }
}

impl Conditions for Vec<Condition> {
    fn conditions(&self) -> &[Condition] {
        self
    }
}

/// Puts `new` into `conditions`, keeping the previous transition time when the status did
/// not change, so `lastTransitionTime` means what Kubernetes users expect.
pub fn upsert(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// Merges `new` conditions into `previous`, as [`upsert`] does for each.
pub fn merged(previous: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    let mut conditions = previous.to_vec();
    for condition in new {
        upsert(&mut conditions, condition);
    }
    conditions
}

pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = vec![Condition {
            last_transition_time: "2020-01-01T00:00:00Z".into(),
            ..Condition::ready(true, Reason::Valid, "")
        }];
        upsert(
            &mut conditions,
            Condition::ready(true, Reason::Bound, "fine"),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(conditions[0].reason, "Bound");
    }

    #[test]
    fn upsert_moves_transition_time_when_status_changes() {
        let mut conditions = vec![Condition {
            last_transition_time: "2020-01-01T00:00:00Z".into(),
            ..Condition::ready(true, Reason::Valid, "")
        }];
        upsert(
            &mut conditions,
            Condition::ready(false, Reason::ApplyFailed, "why"),
        );
        assert_ne!(conditions[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert!(!conditions.is_ready());
    }
}
