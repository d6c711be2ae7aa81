//! The NATS JetStream layer: durable work queues per Qleet kind, per-object locks in a
//! key-value bucket, publishing of notifications, and the workers that consume them.
//!
//! Names (created at start-up when absent):
//! - streams `QLEETOS_WORKLOAD`, `QLEETOS_WORKLOADINSTANCE`, `QLEETOS_KUBERNETESRUNTIME`
//!   (work-queue retention, subjects `qleetos.work.<kind>.>`, 2-minute duplicate window);
//! - one durable pull consumer per stream, `qleet-<kind>`, shared by every replica;
//! - key-value bucket `qleetos-locks` (`<kind>.<uid>` → holder, TTL longer than a reconcile);
//! - key-value bucket `qleetos-retries` (`<kind>.<uid>` → the stream sequence of the one
//!   message that carries the object's pending retry, so retries never pile up).

pub mod drift;
pub mod lock;
pub mod notifier;
pub mod worker;

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use async_nats::jetstream::{self, kv, stream};
use qleetos_crds::notification::{LOCK_BUCKET, NatsAuth, Notification, QleetKind, redact_url};

use crate::error::{Error, Result};

/// Bucket of retry carriers.
pub const RETRY_BUCKET: &str = "qleetos-retries";
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
const RETRY_TTL: Duration = Duration::from_secs(3600);

/// How to reach NATS. Debug shows the URL without user information and no secret.
#[derive(Clone)]
pub struct BrokerOptions {
    pub url: String,
    pub auth: NatsAuth,
    pub name: String,
    /// How long a message may stay unacknowledged before redelivery (refreshed while a
    /// reconcile runs).
    pub ack_wait: Duration,
    /// Lifetime of a lock not refreshed by its holder.
    pub lock_ttl: Duration,
}

impl std::fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth)
            .field("name", &self.name)
            .field("ack_wait", &self.ack_wait)
            .field("lock_ttl", &self.lock_ttl)
            .finish()
    }
}

/// A connected broker with every stream, consumer and bucket in place.
#[derive(Clone)]
pub struct Broker {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    pub(crate) locks: kv::Store,
    pub(crate) retries: kv::Store,
    options: BrokerOptions,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &redact_url(&self.options.url))
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Connects (retrying in the background while NATS is down) and creates what is absent.
    pub async fn connect(options: BrokerOptions) -> Result<Self> {
        let mut connect = async_nats::ConnectOptions::new()
            .name(&options.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move { tracing::info!(%event, "NATS connection event") });
        connect = with_auth(connect, &options.auth).await?;
        let client = connect.connect(&options.url).await.map_err(Error::broker)?;
        let jetstream = jetstream::new(client.clone());
        let (locks, retries) = loop {
            match ensure_layout(&jetstream, &options).await {
                Ok(buckets) => break buckets,
                Err(error) => {
                    tracing::warn!(%error, "NATS JetStream not ready; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        Ok(Self {
            client,
            jetstream,
            locks,
            retries,
            options,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    pub fn options(&self) -> &BrokerOptions {
        &self.options
    }

    /// Publishes a notification; JetStream drops it when the same message id was seen
    /// within the duplicate window.
    pub async fn publish(&self, notification: &Notification) -> Result<()> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", notification.message_id().as_str());
        let payload = serde_json::to_vec(notification).map_err(Error::broker)?;
        let ack = self
            .jetstream
            .publish_with_headers(notification.subject(), headers, payload.into())
            .await
            .map_err(Error::broker)?;
        ack.await.map_err(Error::broker)?;
        Ok(())
    }

    pub(crate) async fn consumer(&self, kind: QleetKind) -> Result<PullConsumer> {
        let stream = self
            .jetstream
            .get_stream(kind.stream())
            .await
            .map_err(Error::broker)?;
        stream
            .get_consumer(&kind.consumer())
            .await
            .map_err(Error::broker)
    }
}

/// Applies the configured credentials and TLS CA to the connection options.
async fn with_auth(
    mut connect: async_nats::ConnectOptions,
    auth: &NatsAuth,
) -> Result<async_nats::ConnectOptions> {
    if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
        connect = connect.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &auth.token {
        connect = connect.token(token.expose().to_owned());
    }
    if let Some(path) = &auth.credentials_file {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|e| Error::Broker(format!("reading {}: {}", path.display(), e.kind())))?;
    }
    if let Some(path) = &auth.tls_ca {
        connect = connect
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    Ok(connect)
}

async fn ensure_layout(
    js: &jetstream::Context,
    options: &BrokerOptions,
) -> Result<(kv::Store, kv::Store)> {
    for kind in QleetKind::ALL {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: kind.stream().to_owned(),
                subjects: vec![kind.subjects()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(Error::broker)?;
        stream
            .get_or_create_consumer(
                &kind.consumer(),
                pull::Config {
                    durable_name: Some(kind.consumer()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(Error::broker)?;
    }
    let locks = bucket(js, LOCK_BUCKET, options.lock_ttl).await?;
    let retries = bucket(js, RETRY_BUCKET, RETRY_TTL).await?;
    Ok((locks, retries))
}

async fn bucket(js: &jetstream::Context, name: &str, ttl: Duration) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age: ttl,
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(Error::broker)
}

#[cfg(test)]
mod tests {
    use qleetos_crds::notification::Sensitive;

    use super::*;

    #[test]
    fn options_debug_shows_no_credential() {
        let options = BrokerOptions {
            url: "nats://qleet:hunter2@nats:4222".into(),
            auth: NatsAuth {
                token: Some(Sensitive::new("t0ken")),
                ..NatsAuth::default()
            },
            name: "replica".into(),
            ack_wait: Duration::from_secs(90),
            lock_ttl: Duration::from_secs(75),
        };
        let debug = format!("{options:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("t0ken"),
            "{debug}"
        );
        assert!(debug.contains("nats://***@nats:4222"), "{debug}");
    }
}
