//! After each successful write the gateway publishes the object's notification to NATS
//! JetStream, so a Qleet starts reconciling without waiting for its watch. Best effort: when
//! NATS is down (or the stream does not exist yet) the write still succeeds and the operator's
//! watchers pick the change up.

use std::time::Duration;

use async_nats::jetstream;
use qleetos_crds::notification::{Cause, NatsAuth, Notification, QleetKind, server_urls};
use serde_json::Value;
use tracing::Instrument as _;

use crate::metrics::Metrics;

const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Pauses before the second and third attempt: a connection still being established or a
/// replicated stream electing its leader is over within seconds. The message id makes a
/// repeat that the stream already stored a no-op.
const RETRY_PAUSES: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];

/// Publishes notifications; a no-op without `--nats-url`.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    jetstream: Option<jetstream::Context>,
}

impl Notifier {
    /// Connects in the background (the gateway serves even while NATS is down).
    pub async fn connect(
        url: Option<&str>,
        auth: &NatsAuth,
    ) -> Result<Self, async_nats::ConnectError> {
        let Some(url) = url else {
            return Ok(Self::default());
        };
        let options = async_nats::ConnectOptions::new()
            .name("qleetos-api-gateway")
            .retry_on_initial_connect();
        let servers = server_urls(url);
        let client = with_auth(options, auth)
            .await?
            .connect(servers.as_slice())
            .await?;
        Ok(Self {
            jetstream: Some(jetstream::new(client)),
        })
    }

    /// Publishes the change notification of `object` without delaying the response.
    pub fn publish(&self, kind: QleetKind, object: &Value, metrics: &Metrics) {
        let Some(jetstream) = self.jetstream.clone() else {
            return;
        };
        let Some(notification) = change_notification(kind, object) else {
            return;
        };
        let metrics = metrics.clone();
        let task = async move {
            let result = publish_with_retries(&jetstream, &notification).await;
            match result {
                Ok(()) => metrics.notification("published"),
                Err(error) => {
                    metrics.notification("failed");
                    tracing::debug!(subject = notification.subject(), %error, "notification not published; the operator's watch will pick the change up");
                }
            }
        };
        // In the request's span, so its log line names the request.
        tokio::spawn(task.in_current_span());
    }
}

/// Applies the configured credentials and TLS CA to the connection options.
async fn with_auth(
    mut options: async_nats::ConnectOptions,
    auth: &NatsAuth,
) -> Result<async_nats::ConnectOptions, async_nats::ConnectError> {
    if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &auth.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(path) = &auth.credentials_file {
        options = options.credentials_file(path).await.map_err(|e| {
            let reason = format!("reading {}: {}", path.display(), e.kind());
            async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, reason)
        })?;
    }
    if let Some(path) = &auth.tls_ca {
        options = options
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    Ok(options)
}

async fn publish_with_retries(
    jetstream: &jetstream::Context,
    n: &Notification,
) -> Result<(), String> {
    let mut result = publish(jetstream, n).await;
    for pause in RETRY_PAUSES {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(pause).await;
        result = publish(jetstream, n).await;
    }
    result
}

async fn publish(jetstream: &jetstream::Context, n: &Notification) -> Result<(), String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", n.message_id().as_str());
    let payload = serde_json::to_vec(n).map_err(|e| e.to_string())?;
    let ack = jetstream
        .publish_with_headers(n.subject(), headers, payload.into())
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(ACK_TIMEOUT, ack)
        .await
        .map_err(|_| "no acknowledgement in time".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The `Change` notification naming an object the API server returned.
pub fn change_notification(kind: QleetKind, object: &Value) -> Option<Notification> {
    let metadata = object.get("metadata")?;
    let field = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(Notification {
        kind,
        namespace: field("namespace"),
        name: field("name")?,
        uid: field("uid")?,
        resource_version: field("resourceVersion")?,
        cause: Cause::Change,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn notification_names_the_written_object() {
        let object = json!({"metadata": {"name": "web", "namespace": "team-a", "uid": "u1", "resourceVersion": "7"}});
        let n = change_notification(QleetKind::Workload, &object).expect("complete metadata");
        assert_eq!(n.subject(), "qleetos.work.workload.team-a.web");
        assert_eq!(n.message_id(), "u1:7");
        assert!(
            change_notification(QleetKind::Workload, &json!({"metadata": {"name": "x"}})).is_none()
        );
    }
}
