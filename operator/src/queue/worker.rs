//! A Qleet's consumer loop: pull notifications, lock the object, reconcile it from the
//! current API state, then ack, or requeue through the broker with a delay.
//!
//! Each of the `concurrency` slots pulls one message at a time and reconciles it before
//! pulling the next, so nothing waits in this replica's buffer: a replica that stops or dies
//! holds only the messages it is working on. An error of one slot's pull stream (a missed
//! heartbeat, a reconnect) only makes that idle slot pull again; reconciles in flight in the
//! other slots go on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::pull;
use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use qleetos_crds::notification::{Cause, Notification, QleetKind, Queued};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use super::Broker;
use super::lock::{Lock, Refresh};
use super::retry::{self, Backoff, Outcome, RetryRecord, Settle};
use crate::context::{Cached, Caches, Context, Next};
use crate::error::{Error, Result};
use crate::fence::Fence;

/// How long a reconcile waits for this replica's watch cache to catch up with the change
/// behind its notification before reading the object from the API server instead.
const CACHE_PATIENCE: Duration = Duration::from_secs(2);
/// Delay before retrying a message whose object another reconcile holds: short at first
/// (most reconciles take milliseconds), doubling with each delivery up to `LOCK_RETRY_MAX`.
const LOCK_RETRY: Duration = Duration::from_millis(50);
const LOCK_RETRY_MAX: Duration = Duration::from_secs(1);
/// A pull request's lifetime at the server, and the idle heartbeat that proves it alive.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
/// Pause before pulling again after a pull stream error.
const PULL_AGAIN_AFTER: Duration = Duration::from_secs(1);

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

/// The kind a Qleet owns: a resource with its own work queue and watch cache.
pub trait QleetKindOf: QleetResource + Queued + Cached {}

impl<K: QleetResource + Queued + Cached> QleetKindOf for K {}

/// One Qleet: how to reach its kind's API, and its reconcile.
pub struct Qleet<K: QleetKindOf> {
    /// The API of the kind, for a namespace or cluster-wide.
    pub api: fn(kube::Client, Option<&str>) -> Api<K>,
    pub reconcile: fn(Arc<K>, Arc<Context>) -> ReconcileFuture,
}

impl<K: QleetKindOf> Qleet<K> {
    pub fn kind(&self) -> QleetKind {
        K::QLEET
    }

    /// The kind's watch cache, read instead of the API server once it has caught up.
    fn cache<'a>(&self, caches: &'a Caches) -> &'a Store<K> {
        K::store(caches)
    }
}

impl<K: QleetKindOf> std::fmt::Debug for Qleet<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qleet").field("kind", &K::QLEET).finish()
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

/// How a reconcile under a lock ended.
enum Reconciled {
    Finished(Result<Next>),
    /// The lock was lost; the reconcile was dropped before it finished.
    Aborted,
}

impl Worker {
    /// Consumes the Qleet's work queue until `shutdown`; then stops pulling, lets the
    /// reconciles in flight finish (each is bounded by the reconcile timeout) and returns.
    pub async fn run<K>(self, qleet: Qleet<K>, shutdown: CancellationToken)
    where
        K: QleetKindOf,
    {
        let slots =
            (0..self.concurrency.max(1)).map(|_| self.pull_and_reconcile(&qleet, &shutdown));
        futures::future::join_all(slots).await;
        tracing::info!(kind = qleet.kind().token(), replica = %self.holder, "work queue drained");
    }

    async fn pull_and_reconcile<K>(&self, qleet: &Qleet<K>, shutdown: &CancellationToken)
    where
        K: QleetKindOf,
    {
        let kind = qleet.kind().token();
        let mut messages = None;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = self.next_message(qleet.kind(), &mut messages) => next,
            };
            match next {
                Ok(message) => self.handle(qleet, message).await,
                Err(error) => {
                    messages = None;
                    self.ctx.metrics.queue_interrupted(kind);
                    tracing::warn!(kind, %error, "work queue interrupted; pulling again (reconciles in flight go on)");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(PULL_AGAIN_AFTER) => {}
                    }
                }
            }
        }
    }

    async fn next_message(
        &self,
        kind: QleetKind,
        messages: &mut Option<pull::Stream>,
    ) -> Result<Message> {
        let stream = match messages {
            Some(stream) => stream,
            None => messages.insert(self.subscribe(kind).await?),
        };
        match stream.next().await {
            Some(Ok(message)) => Ok(message),
            Some(Err(error)) => Err(Error::broker(error)),
            None => Err(Error::Broker("the pull stream ended".into())),
        }
    }

    /// A pull stream asking for one message at a time, and only while it is polled.
    async fn subscribe(&self, kind: QleetKind) -> Result<pull::Stream> {
        self.broker
            .consumer(kind)
            .await?
            .stream()
            .max_messages_per_batch(1)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(Error::broker)
    }

    async fn handle<K>(&self, qleet: &Qleet<K>, message: Message)
    where
        K: QleetKindOf,
    {
        let controller = qleet.kind().token();
        self.ctx.metrics.message(controller, "received");
        self.handle_received(qleet, &message).await;
        self.ctx.metrics.message(controller, "handled");
    }

    async fn handle_received<K>(&self, qleet: &Qleet<K>, message: &Message)
    where
        K: QleetKindOf,
    {
        let controller = qleet.kind().token();
        let Ok(notification) = serde_json::from_slice::<Notification>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "dropping a message that is not a notification");
            self.settle(controller, message, AckKind::Term).await;
            return;
        };
        let span = reconcile_span(controller, &notification, message);
        self.handle_notification(qleet, &notification, message)
            .instrument(span)
            .await;
    }

    async fn handle_notification<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
        message: &Message,
    ) where
        K: QleetKindOf,
    {
        let controller = qleet.kind().token();
        let Some(lock) = self
            .lock_or_requeue(controller, notification, message)
            .await
        else {
            return;
        };
        let revision = lock.revision();
        let (reconciled, lock) = self
            .reconcile_holding(qleet, notification, message, lock)
            .await;
        let outcome = match reconciled {
            Reconciled::Finished(result) => {
                self.conclude(qleet, notification, message, &result).await;
                outcome_text(&result)
            }
            Reconciled::Aborted => {
                self.ctx.metrics.reconcile_aborted(controller, "LockLost");
                self.settle(controller, message, AckKind::Nak(Some(LOCK_RETRY_MAX)))
                    .await;
                "aborted: lock lost".into()
            }
        };
        let release = lock.release(&self.broker.locks).await;
        self.ctx.metrics.lock_released(controller, release.label());
        tracing::info!(
            replica = %self.holder,
            lock_revision = revision,
            lock = ?release,
            %outcome,
            "reconciled"
        );
    }

    /// Takes the object's lock, or NAKs the message for a quick retry.
    async fn lock_or_requeue(
        &self,
        controller: &'static str,
        notification: &Notification,
        message: &Message,
    ) -> Option<Lock> {
        match Lock::acquire(&self.broker.locks, notification.lock_key(), &self.holder).await {
            Ok(Some(lock)) => return Some(lock),
            Ok(None) => self.ctx.metrics.lock_contended(controller),
            Err(error) => tracing::warn!(%error, "could not take the lock"),
        }
        let delay = lock_retry_delay(message.info().map_or(1, |info| info.delivered));
        self.settle(controller, message, AckKind::Nak(Some(delay)))
            .await;
        None
    }

    /// Runs the reconcile under the lock until it finishes or times out, while the lock and
    /// the message's ack deadline are refreshed; a lost lock drops the reconcile at once, so
    /// it writes nothing more.
    async fn reconcile_holding<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
        message: &Message,
        mut lock: Lock,
    ) -> (Reconciled, Lock)
    where
        K: QleetKindOf,
    {
        let started = Instant::now();
        let timeout = self.ctx.settings.reconcile_timeout;
        let work = tokio::time::timeout(timeout, self.reconcile_current(qleet, notification));
        let reconciled = tokio::select! {
            outcome = work => Reconciled::Finished(outcome.unwrap_or(Err(Error::Timeout(timeout)))),
            () = self.hold(&mut lock, message) => Reconciled::Aborted,
        };
        if let Reconciled::Finished(result) = &reconciled {
            self.ctx
                .metrics
                .observe(qleet.kind().token(), started, result);
        }
        (reconciled, lock)
    }

    /// Refreshes the lock and the message's ack deadline every third of the lock TTL;
    /// returns only when the lock is no longer ours.
    async fn hold(&self, lock: &mut Lock, message: &Message) {
        let every = self.broker.options().lock_ttl / 3;
        loop {
            tokio::time::sleep(every).await;
            match lock.refresh(&self.broker.locks).await {
                Ok(Refresh::Held) => {}
                Ok(Refresh::Lost) => {
                    tracing::error!(subject = %message.subject, "lock lost while reconciling; aborting the reconcile");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not refresh the lock; it may still be ours")
                }
            }
            if let Err(error) = message.ack_with(AckKind::Progress).await {
                tracing::debug!(%error, "could not extend the message's ack deadline");
            }
        }
    }

    /// Reads the object named by the notification and reconciles it. A deleted object is
    /// done, and so is a notification for an earlier object of the same name (deleted and
    /// re-created): the new object has its own notifications, and its lock is its own uid.
    async fn reconcile_current<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
    ) -> Result<Next>
    where
        K: QleetKindOf,
    {
        match self.current_object(qleet, notification).await? {
            Some(object) => (qleet.reconcile)(object, self.ctx.clone()).await,
            None => Ok(Next::Done),
        }
    }

    /// The object the notification names: from this replica's watch cache once the cache
    /// has caught up with the change behind the notification, otherwise from the API server.
    async fn current_object<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
    ) -> Result<Option<Arc<K>>>
    where
        K: QleetKindOf,
    {
        if let Some(object) = self.cached_object(qleet, notification).await {
            self.ctx.metrics.object_read(qleet.kind().token(), "cache");
            return Ok(Some(object));
        }
        self.ctx.metrics.object_read(qleet.kind().token(), "api");
        let api = (qleet.api)(self.ctx.client.clone(), notification.namespace.as_deref());
        match api
            .get_opt(&notification.name)
            .await
            .map_err(Error::Management)?
        {
            Some(object) if is_current(notification, &object) => Ok(Some(Arc::new(object))),
            Some(_) => {
                tracing::info!(object = %notification.subject(), uid = %notification.uid, "notification for an earlier object of that name; done");
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn cached_object<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
    ) -> Option<Arc<K>>
    where
        K: QleetKindOf,
    {
        let fence = fence_of::<K>(notification);
        if let Some(fence) = &fence
            && !self.ctx.fences.reached(fence, CACHE_PATIENCE).await
        {
            return None;
        }
        let mut reference = ObjectRef::new(&notification.name);
        if let Some(namespace) = &notification.namespace {
            reference = reference.within(namespace);
        }
        let object = qleet.cache(&self.ctx.caches).get(&reference)?;
        let own_change = fence.is_some_and(|fence| fence.kind == K::kind(&()));
        let fresh = !own_change || version_of(&*object) >= version_of_notification(notification);
        (is_current(notification, &*object) && fresh).then_some(object)
    }

    /// Acks a converged object; requeues one that wants another look or failed, through
    /// the broker, keeping a single retry-carrying message per object and counting its
    /// failures in a row. Runs under the object's lock, so records are not raced.
    async fn conclude<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
        message: &Message,
        result: &Result<Next>,
    ) where
        K: QleetKindOf,
    {
        let controller = qleet.kind().token();
        let key = notification.lock_key();
        let outcome = match result {
            Ok(Next::Done) => Outcome::Converged,
            Ok(Next::After(delay)) => Outcome::Again(*delay),
            Err(_) => Outcome::Failed,
        };
        let record = match outcome {
            Outcome::Converged => RetryRecord::default(),
            _ => self.retry_record(&key).await,
        };
        let sequence = message.info().ok().map(|info| info.stream_sequence);
        let plan = retry::plan(record, sequence, outcome, self.backoff());
        if let Err(error) = result {
            let failures = plan.record.map_or(1, |record| record.failures);
            self.report_failure(qleet, notification, error, failures)
                .await;
        }
        self.store_retry_record(&key, plan.record).await;
        match plan.settle {
            Settle::Ack => {
                if outcome == Outcome::Converged {
                    self.observe_latency(controller, message);
                }
                self.settle(controller, message, AckKind::Ack).await;
            }
            Settle::Requeue(delay) => {
                self.settle(controller, message, AckKind::Nak(Some(delay)))
                    .await;
            }
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.ctx.settings.base_backoff,
            max: self.ctx.settings.max_backoff,
        }
    }

    async fn retry_record(&self, key: &str) -> RetryRecord {
        match self.broker.retries.get(key).await {
            Ok(Some(value)) => RetryRecord::decode(&value),
            Ok(None) => RetryRecord::default(),
            Err(error) => {
                tracing::warn!(%error, "could not read the retry record; counting from zero");
                RetryRecord::default()
            }
        }
    }

    async fn store_retry_record(&self, key: &str, record: Option<RetryRecord>) {
        let stored = match record {
            Some(record) => self
                .broker
                .retries
                .put(key, record.encode())
                .await
                .map(drop)
                .map_err(Error::broker),
            None => self.broker.retries.delete(key).await.map_err(Error::broker),
        };
        if let Err(error) = stored {
            tracing::warn!(%error, "could not store the retry record");
        }
    }

    async fn report_failure<K>(
        &self,
        qleet: &Qleet<K>,
        notification: &Notification,
        error: &Error,
        attempt: u32,
    ) where
        K: QleetKindOf,
    {
        tracing::warn!(kind = qleet.kind().token(), object = %notification.subject(), attempt, reason = error.reason().as_str(), %error, "reconcile failed");
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

/// The delay before the `delivered`-th delivery's retry when the lock is held.
fn lock_retry_delay(delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 10)).unwrap_or(10);
    (LOCK_RETRY * 2u32.pow(doublings)).min(LOCK_RETRY_MAX)
}

/// The cache version a reconcile of `notification` must see: the notification's own
/// resourceVersion, or the related object's for a change of a related object. Drift (a
/// runtime's object changed) has none: its object's latest cached state is what counts.
fn fence_of<K: QleetResource>(notification: &Notification) -> Option<Fence> {
    match &notification.cause {
        Cause::Related { object } => {
            let (kind, rest) = object.split_once('/')?;
            let (_, version) = rest.rsplit_once(':')?;
            Fence::at(kind, version)
        }
        Cause::Drift { .. } => None,
        Cause::Change | Cause::Resync { .. } | Cause::Probe { .. } => {
            Fence::at(&K::kind(&()), &notification.resource_version)
        }
    }
}

fn version_of<K: Resource>(object: &K) -> u64 {
    let version = object
        .meta()
        .resource_version
        .as_deref()
        .unwrap_or_default();
    version.parse().unwrap_or(0)
}

fn version_of_notification(notification: &Notification) -> u64 {
    notification.resource_version.parse().unwrap_or(0)
}

/// The span every log line of one reconcile belongs to: which object, of which kind, why
/// (the trigger) and which delivery of the notification it is.
fn reconcile_span(kind: &'static str, notification: &Notification, message: &Message) -> Span {
    let object = match &notification.namespace {
        Some(namespace) => format!("{namespace}/{}", notification.name),
        None => notification.name.clone(),
    };
    tracing::info_span!(
        "reconcile",
        kind,
        %object,
        uid = %notification.uid,
        trigger = notification.cause.label(),
        attempt = message.info().map_or(1, |info| info.delivered),
    )
}

/// Whether `object` is the one `notification` was sent for, not a namesake created after
/// it was deleted.
fn is_current<K: Resource>(notification: &Notification, object: &K) -> bool {
    object.meta().uid.as_deref() == Some(notification.uid.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_retries_start_short_and_stay_bounded() {
        assert_eq!(lock_retry_delay(1), Duration::from_millis(50));
        assert_eq!(lock_retry_delay(3), Duration::from_millis(200));
        assert_eq!(lock_retry_delay(1000), LOCK_RETRY_MAX);
        assert_eq!(lock_retry_delay(0), Duration::from_millis(50));
    }

    #[test]
    fn a_change_fences_its_own_kind_and_a_related_change_the_related_kind() {
        let mut notification = Notification {
            kind: QleetKind::Workload,
            namespace: Some("team".into()),
            name: "web".into(),
            uid: "u1".into(),
            resource_version: "42".into(),
            cause: Cause::Change,
        };
        assert_eq!(
            fence_of::<qleetos_crds::Workload>(&notification),
            Fence::at("Workload", "42")
        );
        notification.cause = Cause::Related {
            object: "WorkloadInstance/i1:77".into(),
        };
        assert_eq!(
            fence_of::<qleetos_crds::Workload>(&notification),
            Fence::at("WorkloadInstance", "77")
        );
        notification.cause = Cause::Drift {
            runtime: "eu".into(),
            object: "o1:9".into(),
        };
        assert_eq!(fence_of::<qleetos_crds::Workload>(&notification), None);
    }

    #[test]
    fn a_namesake_created_after_the_notification_is_not_current() {
        let notification = Notification {
            kind: QleetKind::Workload,
            namespace: Some("team".into()),
            name: "web".into(),
            uid: "old".into(),
            resource_version: "1".into(),
            cause: Cause::Change,
        };
        let mut object = k8s_openapi::api::core::v1::ConfigMap::default();
        object.metadata.uid = Some("new".into());
        assert!(!is_current(&notification, &object));
        object.metadata.uid = Some("old".into());
        assert!(is_current(&notification, &object));
        object.metadata.uid = None;
        assert!(!is_current(&notification, &object));
    }
}
