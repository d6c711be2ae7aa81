//! The NATS JetStream layer: durable work queues per Qleet kind, per-object locks in a
//! key-value bucket, publishing of notifications, and the workers that consume them.
//!
//! Names (created at start-up when absent, and updated in place to the operator's flags
//! when present, keeping their data; each stored on `--nats-replicas` servers of a NATS
//! cluster, so a one-server layout is scaled up in place when the flag grows):
//! - one stream per Qleet kind, `QLEETOS_<KIND>` (e.g. `QLEETOS_WORKLOAD`; work-queue
//!   retention, subjects `qleetos.work.<kind>.<namespace>.<name>`, at most one message per
//!   subject, so per object (two objects of one name never live at once): the newest;
//!   2-minute duplicate window);
//! - one durable pull consumer per stream, `qleet-<kind>`, shared by every replica (ack wait
//!   = reconcile timeout + a margin, extended while a reconcile runs);
//! - key-value bucket `qleetos-locks` (`<kind>.<uid>` → holder, TTL `--lock-ttl`, refreshed
//!   every third of it while a reconcile runs);
//! - key-value bucket `qleetos-retries` (`<kind>.<uid>` → the object's [`retry::RetryRecord`]:
//!   the one message carrying its pending retry and its failures in a row).

pub mod drift;
pub mod lock;
pub mod notifier;
pub mod retry;
pub mod triggers;
pub mod worker;

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::{Context as JetStream, PublishAckFuture};
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use async_nats::jetstream::{self, kv, stream};
use qleetos_crds::notification::{
    LOCK_BUCKET, NatsAuth, Notification, QleetKind, redact_url, server_urls,
};

use crate::error::{Error, Result};

/// Bucket of retry carriers.
pub const RETRY_BUCKET: &str = "qleetos-retries";
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
const RETRY_TTL: Duration = Duration::from_secs(3600);
/// What a message's ack deadline adds to the reconcile timeout: a message waits this long at
/// most, unacknowledged and not progressing, before another replica gets it.
pub const ACK_WAIT_MARGIN: Duration = Duration::from_secs(5);
const MAX_ACK_PENDING: i64 = 20_000;
/// How long a consumer update waits for its stream to reach its new replica count.
const SCALE_WAIT: Duration = Duration::from_secs(60);

/// How to reach NATS. Debug shows the URL without user information and no secret.
#[derive(Clone)]
pub struct BrokerOptions {
    pub url: String,
    pub auth: NatsAuth,
    pub name: String,
    /// How long a message may stay unacknowledged before redelivery (extended while a
    /// reconcile runs).
    pub ack_wait: Duration,
    /// Lifetime of a lock not refreshed by its holder; a replica that dies holding locks
    /// delays their objects this long.
    pub lock_ttl: Duration,
    /// Servers each stream and bucket is stored on (1 for a single server, 3 for a cluster
    /// that survives the loss of one).
    pub replicas: usize,
}

impl BrokerOptions {
    /// The ack deadline for reconciles bounded by `reconcile_timeout`.
    pub fn ack_wait_for(reconcile_timeout: Duration) -> Duration {
        reconcile_timeout + ACK_WAIT_MARGIN
    }
}

impl std::fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth)
            .field("name", &self.name)
            .field("ack_wait", &self.ack_wait)
            .field("lock_ttl", &self.lock_ttl)
            .field("replicas", &self.replicas)
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
        let servers = server_urls(&options.url);
        let client = connect
            .connect(servers.as_slice())
            .await
            .map_err(Error::broker)?;
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

    /// Sends whatever the client still buffers (acks, NAKs): called before the process exits.
    pub async fn flush(&self) {
        if let Err(error) = self.client.flush().await {
            tracing::warn!(%error, "could not flush the NATS connection");
        }
    }

    /// Publishes a notification; JetStream drops it when the same message id was seen
    /// within the duplicate window.
    pub async fn publish(&self, notification: &Notification) -> Result<()> {
        match self.send(notification).await?.await {
            Ok(_) => Ok(()),
            Err(error) if is_duplicate_in_flight(&error) => Ok(()),
            Err(error) => Err(Error::broker(error)),
        }
    }

    /// Sends a notification without waiting for JetStream's acknowledgement: the returned
    /// future resolves to it, so many publishes can be in flight at once.
    pub async fn send(&self, notification: &Notification) -> Result<PublishAckFuture> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", notification.message_id().as_str());
        let payload = serde_json::to_vec(notification).map_err(Error::broker)?;
        self.jetstream
            .publish_with_headers(notification.subject(), headers, payload.into())
            .await
            .map_err(Error::broker)
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

/// A replicated stream's answer to a message id it is still storing from another publisher
/// (every replica's watches publish the same change under the same id): the message is being
/// stored, which is all a publisher wants.
pub(crate) fn is_duplicate_in_flight(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)
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

/// Creates the streams, consumers and buckets, or updates them in place to `options`
/// (ack wait, lock TTL, replicas), keeping their messages and keys. Every stream is updated
/// first, so streams scaled to more replicas catch up side by side.
async fn ensure_layout(js: &JetStream, options: &BrokerOptions) -> Result<(kv::Store, kv::Store)> {
    for &kind in QleetKind::ALL {
        js.create_or_update_stream(work_stream(kind, options.replicas))
            .await
            .map_err(Error::broker)?;
    }
    for &kind in QleetKind::ALL {
        let consumer = consumer_once_scaled(js, kind, options).await?;
        tracing::info!(
            consumer = %kind.consumer(),
            ack_wait = ?consumer.cached_info().config.ack_wait,
            replicas = options.replicas,
            "work queue in place"
        );
    }
    let locks = bucket(js, LOCK_BUCKET, options.lock_ttl, options.replicas).await?;
    let retries = bucket(js, RETRY_BUCKET, RETRY_TTL, options.replicas).await?;
    Ok((locks, retries))
}

/// Creates or updates the consumer of `kind`'s stream. A stream just scaled up takes a
/// while to have its new replicas, and JetStream refuses a consumer with more replicas than
/// its stream has until then: that refusal is retried for up to [`SCALE_WAIT`].
async fn consumer_once_scaled(
    js: &JetStream,
    kind: QleetKind,
    options: &BrokerOptions,
) -> Result<PullConsumer> {
    let deadline = tokio::time::Instant::now() + SCALE_WAIT;
    loop {
        match js
            .create_consumer_on_stream(work_consumer(kind, options), kind.stream())
            .await
        {
            Ok(consumer) => return Ok(consumer),
            Err(error)
                if is_stream_not_scaled_yet(&error) && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(
                    stream = kind.stream(),
                    "waiting for the stream's new replicas"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(Error::broker(error)),
        }
    }
}

/// JetStream's refusal of a consumer with more replicas than its stream has (yet).
fn is_stream_not_scaled_yet(error: &stream::ConsumerError) -> bool {
    matches!(
        error.kind(),
        stream::ConsumerErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::CONSUMER_REPLICAS_EXCEEDS_STREAM
    )
}

fn work_stream(kind: QleetKind, replicas: usize) -> stream::Config {
    stream::Config {
        name: kind.stream().to_owned(),
        subjects: vec![kind.subjects()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        // One pending message per object (its subject): a burst of changes is one reconcile,
        // and a new change replaces a message waiting out a retry delay.
        max_messages_per_subject: 1,
        num_replicas: replicas,
        ..Default::default()
    }
}

fn work_consumer(kind: QleetKind, options: &BrokerOptions) -> pull::Config {
    pull::Config {
        durable_name: Some(kind.consumer()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        // As many as its stream: set explicitly so a stream scaled in place takes its
        // consumer along.
        num_replicas: options.replicas,
        ..Default::default()
    }
}

async fn bucket(js: &JetStream, name: &str, ttl: Duration, replicas: usize) -> Result<kv::Store> {
    let store = js
        .create_or_update_key_value(kv::Config {
            bucket: name.to_owned(),
            history: 1,
            max_age: ttl,
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(Error::broker)?;
    tracing::info!(bucket = name, ttl = ?ttl, replicas, "key-value bucket in place");
    Ok(store)
}

#[cfg(test)]
mod tests {
    use qleetos_crds::notification::Sensitive;

    use super::*;

    fn publish_refused(code: u64, description: &str) -> jetstream::context::PublishError {
        let answer: jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 409, "err_code": code, "description": description
        }))
        .expect("a JetStream error answer");
        jetstream::context::PublishError::with_source(
            jetstream::context::PublishErrorKind::Other,
            answer,
        )
    }

    #[test]
    fn a_duplicate_still_being_stored_is_not_a_failed_publish() {
        assert!(is_duplicate_in_flight(&publish_refused(
            10158,
            "duplicate message id is in process"
        )));
        assert!(!is_duplicate_in_flight(&publish_refused(
            10071,
            "wrong last sequence"
        )));
        assert!(!is_duplicate_in_flight(
            &jetstream::context::PublishError::new(jetstream::context::PublishErrorKind::TimedOut)
        ));
    }

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
            replicas: 3,
        };
        let debug = format!("{options:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("t0ken"),
            "{debug}"
        );
        assert!(debug.contains("nats://***@nats:4222"), "{debug}");
    }
}
