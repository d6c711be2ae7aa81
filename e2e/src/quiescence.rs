//! Whether an operator replica has caught up with its work: nothing of a Qleet left in NATS,
//! and every message it received handled.

use crate::error::Error;
use crate::nats::NatsServer;
use crate::operator::OperatorProcess;

/// The value of the first sample of `series` (its name and labels, as exposed) in a Prometheus
/// text exposition; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Whether `operator` has nothing of the Qleets `kinds` (`workload`, `workloadinstance`) left:
/// no message of theirs pending or unacknowledged in NATS, every message it received handled.
pub async fn idle(
    nats: &NatsServer,
    operator: &OperatorProcess,
    kinds: &[&str],
) -> Result<bool, Error> {
    let report: serde_json::Value = serde_json::from_str(&nats.jetstream_report().await?)
        .map_err(|error| Error::Setup(format!("NATS /jsz is not JSON: {error}")))?;
    let consumers: Vec<&serde_json::Value> = report["account_details"][0]["stream_detail"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|stream| stream["consumer_detail"].as_array().into_iter().flatten())
        .collect();
    let text = operator.metrics().await?;
    for kind in kinds {
        let name = format!("qleet-{kind}");
        let Some(consumer) = consumers.iter().find(|c| c["name"] == name.as_str()) else {
            return Err(Error::Setup(format!("consumer {name} not in NATS /jsz")));
        };
        let waiting = consumer["num_pending"].as_u64().unwrap_or(u64::MAX)
            + consumer["num_ack_pending"].as_u64().unwrap_or(u64::MAX);
        let count = |outcome: &str| {
            metric(
                &text,
                &format!(r#"qleetos_messages_total{{controller="{kind}",outcome="{outcome}"}}"#),
            )
        };
        if waiting != 0 || count("received") != count("handled") {
            return Ok(false);
        }
    }
    Ok(true)
}
