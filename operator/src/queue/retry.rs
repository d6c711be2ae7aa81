//! An object's retry record in the `qleetos-retries` bucket: which message carries its
//! pending retry (so retries never pile up) and how many of its reconciles failed in a row.
//! Backoff grows with those failures only: JetStream's delivery count also counts
//! redeliveries caused by lock contention and rollout polling, which are not failures.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backoff;

/// The value stored under `<kind>.<uid>`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryRecord {
    /// Stream sequence of the message carrying the object's pending retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<u64>,
    /// Reconciles that failed since the last one that succeeded.
    #[serde(default)]
    pub failures: u32,
}

impl RetryRecord {
    /// Reads a stored record; a bare sequence number is the format before failures were
    /// counted, and anything unreadable counts as no record.
    pub fn decode(bytes: &[u8]) -> Self {
        if let Ok(record) = serde_json::from_slice(bytes) {
            return record;
        }
        let carrier = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        Self {
            carrier,
            failures: 0,
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// How a reconcile ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Converged: nothing to retry.
    Converged,
    /// Succeeded but wants another look after this long (a rollout in progress).
    Again(Duration),
    /// Failed: retry with backoff.
    Failed,
}

/// What becomes of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// NAK with this delay: the message carries the object's retry.
    Requeue(Duration),
}

/// The decision for one concluded reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The record to store; `None` deletes it.
    pub record: Option<RetryRecord>,
    pub settle: Settle,
}

/// Retry delays: `base` doubling per failure, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// Decides how to settle the message `sequence` (when known) after `outcome`, given the
/// object's current record. A success resets the failure count; a failure adds one and
/// backs off by the new count. A newer message already carrying the retry keeps carrying
/// it, and this one is acked; an older carrier is gone (the stream keeps one message per
/// object), so this one takes over.
pub fn plan(
    record: RetryRecord,
    sequence: Option<u64>,
    outcome: Outcome,
    backoff: Backoff,
) -> Plan {
    let (failures, delay) = match outcome {
        Outcome::Converged => {
            return Plan {
                record: None,
                settle: Settle::Ack,
            };
        }
        Outcome::Again(delay) => (0, delay),
        Outcome::Failed => {
            let failures = record.failures.saturating_add(1);
            (
                failures,
                backoff::delay(failures, backoff.base, backoff.max),
            )
        }
    };
    // A stream keeps one message per object: a newer carrier replaced this message, and an
    // older one was replaced by it.
    let carried_elsewhere =
        matches!((record.carrier, sequence), (Some(carrier), Some(mine)) if carrier > mine);
    let carrier = if carried_elsewhere {
        record.carrier
    } else {
        sequence
    };
    Plan {
        record: Some(RetryRecord { carrier, failures }),
        settle: if carried_elsewhere {
            Settle::Ack
        } else {
            Settle::Requeue(delay)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };
    const POLL: Duration = Duration::from_millis(250);

    /// Runs outcomes through one carrier message and returns the delays chosen.
    fn delays(outcomes: &[Outcome]) -> Vec<Option<Duration>> {
        let mut record = RetryRecord::default();
        outcomes
            .iter()
            .map(|outcome| {
                let plan = plan(record, Some(7), *outcome, BACKOFF);
                record = plan.record.unwrap_or_default();
                match plan.settle {
                    Settle::Requeue(delay) => Some(delay),
                    Settle::Ack => None,
                }
            })
            .collect()
    }

    #[test]
    fn consecutive_failures_double_the_delay() {
        use Outcome::Failed;
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            delays(&[Failed, Failed, Failed, Failed, Failed]),
            [secs(1), secs(2), secs(4), secs(8), secs(8)]
        );
    }

    #[test]
    fn rollout_polling_neither_counts_nor_keeps_old_failures() {
        use Outcome::{Again, Failed};
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            delays(&[Failed, Failed, Again(POLL), Again(POLL), Failed]),
            [secs(1), secs(2), Some(POLL), Some(POLL), secs(1)]
        );
    }

    #[test]
    fn convergence_deletes_the_record() {
        let record = RetryRecord {
            carrier: Some(7),
            failures: 5,
        };
        let plan = plan(record, Some(7), Outcome::Converged, BACKOFF);
        assert_eq!(plan.record, None);
        assert_eq!(plan.settle, Settle::Ack);
    }

    #[test]
    fn a_failure_counts_even_when_a_newer_message_carries_the_retry() {
        let record = RetryRecord {
            carrier: Some(9),
            failures: 2,
        };
        let plan = plan(record, Some(3), Outcome::Failed, BACKOFF);
        assert_eq!(plan.settle, Settle::Ack);
        assert_eq!(
            plan.record,
            Some(RetryRecord {
                carrier: Some(9),
                failures: 3
            })
        );
    }

    #[test]
    fn a_message_that_replaced_the_carrier_carries_the_retry() {
        let record = RetryRecord {
            carrier: Some(3),
            failures: 2,
        };
        let plan = plan(record, Some(9), Outcome::Failed, BACKOFF);
        assert_eq!(plan.settle, Settle::Requeue(Duration::from_secs(4)));
        assert_eq!(
            plan.record,
            Some(RetryRecord {
                carrier: Some(9),
                failures: 3
            })
        );
    }

    #[test]
    fn redeliveries_do_not_count_only_failures_do() {
        // However often the carrier was delivered (contention NAKs, polls), the third
        // failure backs off by the third step.
        let record = RetryRecord {
            carrier: Some(7),
            failures: 2,
        };
        let plan = plan(record, Some(7), Outcome::Failed, BACKOFF);
        assert_eq!(plan.settle, Settle::Requeue(Duration::from_secs(4)));
    }

    #[test]
    fn records_round_trip_and_the_old_format_is_read() {
        let record = RetryRecord {
            carrier: Some(42),
            failures: 3,
        };
        assert_eq!(RetryRecord::decode(&record.encode()), record);
        assert_eq!(
            RetryRecord::decode(b"42"),
            RetryRecord {
                carrier: Some(42),
                failures: 0
            }
        );
        assert_eq!(RetryRecord::decode(b"garbage"), RetryRecord::default());
    }
}
