//! The state of a Helm hook Job, read from its status: the phases after it wait until it
//! completes, and a failed hook fails the pass with the Job's own message.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Complete,
    Running,
    Failed(String),
}

/// `Complete` (or `SuccessCriteriaMet`) True: done; `Failed` True: failed with its reason and
/// message; anything else is still running.
pub fn job_state(status: &Value) -> JobState {
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let is_true = |type_: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == type_ && c["status"] == "True")
    };
    if is_true("Complete")
        .or_else(|| is_true("SuccessCriteriaMet"))
        .is_some()
    {
        return JobState::Complete;
    }
    match is_true("Failed") {
        Some(failed) => JobState::Failed(format!(
            "{}: {}",
            failed["reason"].as_str().unwrap_or("Failed"),
            failed["message"].as_str().unwrap_or_default()
        )),
        None => JobState::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_is_complete_failed_or_running_by_its_conditions() {
        let complete = json!({"conditions": [{"type": "Complete", "status": "True"}]});
        assert_eq!(job_state(&complete), JobState::Complete);
        let failed = json!({"conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
        assert_eq!(
            job_state(&failed),
            JobState::Failed(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );
        assert_eq!(job_state(&json!({"active": 1})), JobState::Running);
        let suspended = json!({"conditions": [{"type": "Complete", "status": "False"}]});
        assert_eq!(job_state(&suspended), JobState::Running);
    }
}
