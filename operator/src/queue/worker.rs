//! A Qleet's consumer loop: pull notifications, lock the object, reconcile it from the
//! current API state, then ack, or requeue through the broker with a delay.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use futures::{StreamExt, TryStreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::events::EventType;
use qleetos_crds::notification::{Notification, QleetKind};
use serde::de::DeserializeOwned;

use super::Broker;
use super::lock::{Lock, Release};
use crate::backoff;
use crate::context::{Context, Next};
use crate::error::{Error, Result};

/// Delay before retrying a message whose object another replica is reconciling.
const LOCK_RETRY: Duration = Duration::from_millis(500);

/// What a Qleet's kind must be: a typed resource the worker can read and share.
pub trait QleetResource:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> QleetResource for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

pub type ReconcileFuture = Pin<Box<dyn Future<Output = Result<Next>> + Send>>;

/// One Qleet: the kind it owns, how to reach that kind's API, and its reconcile.
pub struct Qleet<K> {
    pub kind: QleetKind,
    /// The API of the kind, for a namespace or cluster-wide.
    pub api: fn(kube::Client, Option<&str>) -> Api<K>,
    pub reconcile: fn(Arc<K>, Arc<Context>) -> ReconcileFuture,
}

impl<K> std::fmt::Debug for Qleet<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qleet").field("kind", &self.kind).finish()
    }
}

/// Everything a worker needs.
#[derive(Debug, Clone)]
pub struct Worker {
    pub broker: Broker,
    pub ctx: Arc<Context>,
    pub concurrency: usize,
    pub holder: String,
}

impl Worker {
    /// Consumes the Qleet's work queue until the process stops, resubscribing after errors.
    pub async fn run<K>(self, qleet: Qleet<K>)
    where
        K: QleetResource,
    {
        loop {
            if let Err(error) = self.consume(&qleet).await {
                tracing::warn!(kind = qleet.kind.token(), %error, "work queue interrupted; resubscribing");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn consume<K>(&self, qleet: &Qleet<K>) -> Result<()>
    where
        K: QleetResource,
    {
        let consumer = self.broker.consumer(qleet.kind).await?;
        let batch = self.concurrency.max(1);
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(Error::broker)?;
        messages
            .map(|message| message.map_err(Error::broker))
            .try_for_each_concurrent(batch, |message| async move {
                self.handle(qleet, message).await;
                Ok(())
            })
            .await
    }

    async fn handle<K>(&self, qleet: &Qleet<K>, message: Message)
    where
        K: QleetResource,
    {
        let controller = qleet.kind.token();
        let metrics = &self.ctx.metrics;
        metrics.message(controller, "received");
        let Ok(notification) = serde_json::from_slice::<Notification>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "dropping a message that is not a notification");
            self.settle(controller, &message, AckKind::Term).await;
            return;
        };
        let lock =
            match Lock::acquire(&self.broker.locks, notification.lock_key(), &self.holder).await {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    metrics.lock_contended(controller);
                    self.settle(controller, &message, AckKind::Nak(Some(LOCK_RETRY)))
                        .await;
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not take the lock");
                    self.settle(controller, &message, AckKind::Nak(Some(LOCK_RETRY)))
                        .await;
                    return;
                }
            };
        let revision = lock.revision();
        let (result, lock) = self
            .reconcile_holding(qleet, &notification, &message, lock)
            .await;
        let release = lock.release(&self.broker.locks).await;
        metrics.lock_released(controller, release == Release::Clean);
        tracing::info!(
            kind = controller,
            object = %notification.subject(),
            uid = %notification.uid,
            replica = %self.holder,
            lock_revision = revision,
            lock = ?release,
            outcome = %outcome_text(&result),
            "reconciled"
        );
        self.conclude(qleet, &notification, &message, result).await;
    }

    /// Runs the reconcile under the lock, refreshing the lock and the message's ack
    /// deadline until it finishes or times out.
    async fn reconcile_holding<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
        message: &Message,
        mut lock: Lock,
    ) -> (Result<Next>, Lock)
    where
        K: QleetResource,
    {
        let started = Instant::now();
        let timeout = self.ctx.settings.reconcile_timeout;
        let refresh_every = self.broker.options().lock_ttl / 3;
        let work = tokio::time::timeout(timeout, self.reconcile_current(qleet, notification));
        tokio::pin!(work);
        let result = loop {
            tokio::select! {
                outcome = &mut work => break outcome.unwrap_or(Err(Error::Timeout(timeout))),
                () = tokio::time::sleep(refresh_every) => {
                    if let Err(error) = lock.refresh(&self.broker.locks).await {
                        tracing::warn!(%error, "could not refresh the lock");
                    }
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        };
        self.ctx
            .metrics
            .observe(qleet.kind.token(), started, &result);
        (result, lock)
    }

    /// Reads the object named by the notification and reconciles it; a deleted object is done.
    async fn reconcile_current<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
    ) -> Result<Next>
    where
        K: QleetResource,
    {
        let api = (qleet.api)(self.ctx.client.clone(), notification.namespace.as_deref());
        match api
            .get_opt(&notification.name)
            .await
            .map_err(Error::Management)?
        {
            Some(object) => (qleet.reconcile)(Arc::new(object), self.ctx.clone()).await,
            None => Ok(Next::Done),
        }
    }

    /// Acks a converged object; requeues one that wants another look or failed, through
    /// the broker, keeping a single retry-carrying message per object.
    async fn conclude<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
        message: &Message,
        result: Result<Next>,
    ) where
        K: QleetResource,
    {
        let controller = qleet.kind.token();
        let settings = &self.ctx.settings;
        let delay = match &result {
            Ok(Next::Done) => None,
            Ok(Next::After(delay)) => Some(*delay),
            Err(error) => {
                let attempt = message.info().map(|i| i.delivered).unwrap_or(1);
                let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
                self.report_failure(qleet, notification, error, attempt)
                    .await;
                Some(backoff::delay(
                    attempt,
                    settings.base_backoff,
                    settings.max_backoff,
                ))
            }
        };
        let Some(delay) = delay else {
            self.clear_retry(notification).await;
            self.observe_latency(controller, message);
            self.settle(controller, message, AckKind::Ack).await;
            return;
        };
        if self.carry_retry(notification, message).await {
            self.settle(controller, message, AckKind::Nak(Some(delay)))
                .await;
        } else {
            self.settle(controller, message, AckKind::Ack).await;
        }
    }

    /// Makes this message the object's retry carrier unless another message already is.
    async fn carry_retry(&self, notification: &Notification, message: &Message) -> bool {
        let Ok(info) = message.info() else {
            return true;
        };
        let mine = info.stream_sequence.to_string();
        let key = notification.lock_key();
        match self.broker.retries.get(&key).await {
            Ok(Some(carrier)) if carrier.as_ref() != mine.as_bytes() => false,
            Ok(_) => {
                let _ = self.broker.retries.put(&key, mine.into()).await;
                true
            }
            Err(_) => true,
        }
    }

    async fn clear_retry(&self, notification: &Notification) {
        let _ = self.broker.retries.delete(notification.lock_key()).await;
    }

    async fn report_failure<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
        error: &Error,
        attempt: u32,
    ) where
        K: QleetResource,
    {
        tracing::warn!(kind = qleet.kind.token(), object = %notification.subject(), attempt, reason = error.reason(), %error, "reconcile failed");
        if attempt != 1 && !attempt.is_multiple_of(10) {
            return;
        }
        let api = (qleet.api)(self.ctx.client.clone(), notification.namespace.as_deref());
        if let Ok(Some(object)) = api.get_opt(&notification.name).await {
            let note = format!("{error} (attempt {attempt}; retrying with backoff)");
            self.ctx
                .event(&object, EventType::Warning, error.reason(), note)
                .await;
        }
    }

    fn observe_latency(&self, controller: &'static str, message: &Message) {
        if let Ok(info) = message.info() {
            let elapsed = chrono::Utc::now() - info.published;
            self.ctx
                .metrics
                .notification_done(controller, elapsed.as_seconds_f64().max(0.0));
        }
    }

    async fn settle(&self, controller: &'static str, message: &Message, kind: AckKind) {
        let outcome = match kind {
            AckKind::Ack => "acked",
            AckKind::Nak(_) => "naked",
            AckKind::Term => "terminated",
            _ => "other",
        };
        match message.ack_with(kind).await {
            Ok(()) => self.ctx.metrics.message(controller, outcome),
            Err(error) => {
                tracing::warn!(%error, "could not settle message; it will be redelivered")
            }
        }
    }
}

fn outcome_text(result: &Result<Next>) -> String {
    match result {
        Ok(Next::Done) => "done".into(),
        Ok(Next::After(delay)) => format!("again in {delay:?}"),
        Err(error) => format!("failed: {}", error.reason()),
    }
}

/// Keeps the queue-depth gauges current.
pub async fn report_queue_depth(broker: Broker, ctx: Arc<Context>, kinds: Vec<QleetKind>) {
    loop {
        for kind in &kinds {
            if let Ok(consumer) = broker.consumer(*kind).await {
                let info = consumer.cached_info();
                ctx.metrics.set_queue_depth(
                    kind.token(),
                    info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0),
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
