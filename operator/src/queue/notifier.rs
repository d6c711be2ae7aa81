//! Watches every kind a Qleet reacts to, fills the caches, and publishes what the Qleets'
//! [`Triggers`](super::triggers::Triggers) say each change means; plus the periodic resync
//! of every Qleet's objects and the intervals Qleets ask for. Every replica runs it:
//! message ids make one change one message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::context::PublishAckFuture;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use qleetos_crds::WorkloadInstance;
use qleetos_crds::notification::{Cause, Notification, QleetKind};
use std::any::Any;
use tokio::sync::{mpsc, watch};

use super::Broker;
use super::triggers::{Change, OwnQleet, Registry, Target};
use super::worker::QleetResource;
use crate::context::{CacheWriters, Context, WatchInto};

/// How many publishes may wait for JetStream's acknowledgement at once.
const PUBLISHES_IN_FLIGHT: usize = 1024;

/// Publishes notifications, many in flight at once, and remembers when some could not be
/// sent (NATS down or refusing), so a resync catches up.
#[derive(Debug, Clone)]
pub struct Publisher {
    broker: Broker,
    missed: Arc<AtomicBool>,
    acks: mpsc::Sender<(PublishAckFuture, String)>,
}

impl Publisher {
    /// A publisher, with the task that collects its acknowledgements.
    pub fn new(broker: Broker) -> Self {
        let missed = Arc::new(AtomicBool::new(false));
        let (acks, pending) = mpsc::channel(PUBLISHES_IN_FLIGHT);
        tokio::spawn(collect_acks(pending, missed.clone()));
        Self {
            broker,
            missed,
            acks,
        }
    }

    /// Sends `notification`; its acknowledgement is awaited in the background, so a watch
    /// loop does not wait one round trip per notification.
    pub async fn send(&self, notification: Notification) {
        match self.broker.send(&notification).await {
            Ok(ack) => {
                if self.acks.send((ack, notification.subject())).await.is_err() {
                    self.missed.store(true, Ordering::Relaxed);
                }
            }
            Err(error) => {
                tracing::warn!(subject = %notification.subject(), %error, "could not publish; will resync once NATS is back");
                self.missed.store(true, Ordering::Relaxed);
            }
        }
    }

    fn take_missed(&self) -> bool {
        self.missed.swap(false, Ordering::Relaxed)
    }
}

/// Awaits publish acknowledgements, many at once: each waits up to JetStream's ack timeout
/// from when it is awaited, so after a lost connection the missing ones must time out side by
/// side, not one after the other (which held the watch loops for minutes). A missing one
/// marks a miss.
async fn collect_acks(
    mut pending: mpsc::Receiver<(PublishAckFuture, String)>,
    missed: Arc<AtomicBool>,
) {
    futures::stream::poll_fn(|cx| pending.poll_recv(cx))
        .for_each_concurrent(PUBLISHES_IN_FLIGHT, |(ack, subject)| {
            let missed = missed.clone();
            async move {
                match ack.await {
                    Ok(_) => {}
                    Err(error) if super::is_duplicate_in_flight(&error) => {
                        tracing::debug!(%subject, "published by another replica at the same moment");
                    }
                    Err(error) => {
                    tracing::warn!(%subject, %error, "a publish was not acknowledged; will resync once NATS is back");
                    missed.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
        .await;
}

/// Runs every watch and ticker until the process stops.
pub async fn run(
    publisher: Publisher,
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    writers: CacheWriters,
) {
    let (resync_sender, resyncs) = watch::channel(None);
    let notifier = Notifier {
        publisher: publisher.clone(),
        ctx: ctx.clone(),
        registry,
        resyncs,
    };
    tokio::join!(
        writers.watch_all(&notifier, &ctx),
        resync(&publisher, &ctx, resync_sender),
    );
}

struct Notifier {
    publisher: Publisher,
    ctx: Arc<Context>,
    registry: Arc<Registry>,
    /// The cause of the latest resync of every Qleet's objects.
    resyncs: watch::Receiver<Option<Cause>>,
}

impl WatchInto for Notifier {
    /// Watches `api` into `writer`'s cache and publishes the notifications of each change;
    /// when `K` is a Qleet's own kind, also every object of it on each resync and interval.
    async fn watch<K: QleetResource>(&self, api: Api<K>, writer: Writer<K>) {
        self.watch_kind(api, writer).await;
    }
}

impl Notifier {
    async fn watch_kind<K: QleetResource>(&self, api: Api<K>, writer: Writer<K>) {
        let store = writer.as_reader();
        let own = self.registry.own_qleet::<K>();
        let events = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(forget_managed_fields)
            .reflect(writer);
        let mut events = std::pin::pin!(events);
        let mut last_seen = HashMap::new();
        let mut resyncs = self.resyncs.clone();
        let mut ticks = own.and_then(|own| own.every).map(|every| {
            let every = every(&self.ctx.settings);
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => self.observe(event, &store, &mut last_seen).await,
                    Some(Err(error)) => tracing::warn!(kind = %K::kind(&()), %error, "watch error; retrying with backoff"),
                    None => return,
                },
                Ok(()) = resyncs.changed(), if own.is_some() => {
                    let cause = resyncs.borrow_and_update().clone();
                    if let (Some(own), Some(cause)) = (own, cause) {
                        self.notify_every(own, &store, cause).await;
                    }
                },
                period = tick(&mut ticks) => {
                    if let Some(own) = own {
                        self.notify_every(own, &store, Cause::Probe { period }).await;
                    }
                },
            }
        }
    }

    /// Turns one watch event into changes. `last_seen` shares the cache's objects.
    async fn observe<K: QleetResource>(
        &self,
        event: watcher::Event<K>,
        store: &Store<K>,
        last_seen: &mut HashMap<String, Arc<K>>,
    ) {
        let initial = matches!(event, watcher::Event::InitApply(_));
        // Before the fence moves: a reconcile that passes it must find the index current.
        self.index_instances(&event, store);
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                if !initial {
                    self.advance_fence(&object);
                }
                let current = store
                    .get(&ObjectRef::from_obj(&object))
                    .unwrap_or_else(|| Arc::new(object));
                let before = last_seen.insert(current.uid().unwrap_or_default(), current.clone());
                self.dispatch(before.as_deref(), &current, false).await;
            }
            watcher::Event::Delete(object) => {
                self.advance_fence(&object);
                let before = last_seen.remove(&object.uid().unwrap_or_default());
                self.dispatch(before.as_deref(), &object, true).await;
            }
            watcher::Event::InitDone => {
                // The cache holds the listed objects only now.
                for object in store.state() {
                    self.advance_fence(&*object);
                }
                // Objects deleted while the watch was down went without a Delete event.
                let gone: Vec<Arc<K>> = last_seen
                    .values()
                    .filter(|object| store.get(&ObjectRef::from_obj(&***object)).is_none())
                    .cloned()
                    .collect();
                for object in gone {
                    last_seen.remove(&object.uid().unwrap_or_default());
                    self.dispatch(Some(&*object), &object, true).await;
                }
            }
            watcher::Event::Init => {}
        }
    }

    /// Keeps the owner index of the instance cache in step with it (other kinds: nothing).
    fn index_instances<K: QleetResource>(&self, event: &watcher::Event<K>, store: &Store<K>) {
        let index = &self.ctx.caches.instances_by_owner;
        match event {
            watcher::Event::Apply(object) => as_instance(object)
                .into_iter()
                .for_each(|i| index.applied(i)),
            watcher::Event::Delete(object) => as_instance(object)
                .into_iter()
                .for_each(|i| index.deleted(i)),
            watcher::Event::InitDone => {
                if let Some(cache) = (store as &dyn Any).downcast_ref::<Store<WorkloadInstance>>() {
                    index.rebuild(cache);
                }
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }

    /// Tells reconciles waiting on this kind's cache that it reached `object`'s version.
    fn advance_fence<K: QleetResource>(&self, object: &K) {
        let version = object.meta().resource_version.as_deref();
        self.ctx.fences.observed(&K::kind(&()), version);
    }

    async fn dispatch<K: QleetResource>(&self, before: Option<&K>, after: &K, deleted: bool) {
        let change = Change {
            before,
            after,
            deleted,
        };
        for notification in self.registry.notifications(&self.ctx, &change) {
            self.publisher.send(notification).await;
        }
    }

    async fn notify_every<K: QleetResource>(&self, own: OwnQleet, store: &Store<K>, cause: Cause) {
        for object in store.state() {
            let notification = Target::of(&*object).notification(own.kind, cause.clone());
            self.publisher.send(notification).await;
        }
    }
}

/// The period number of the next tick, or never without ticks.
async fn tick(ticks: &mut Option<tokio::time::Interval>) -> u64 {
    match ticks {
        Some(interval) => {
            let period = interval.period();
            interval.tick().await;
            period_number(period)
        }
        None => std::future::pending().await,
    }
}

fn period_number(interval: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() / interval.as_secs().max(1)
}

/// Asks for a resync of every Qleet's objects each resync interval, and at once after
/// publishes were missed (NATS was down), so nothing that changed meanwhile is left behind.
async fn resync(publisher: &Publisher, ctx: &Context, resyncs: watch::Sender<Option<Cause>>) {
    let interval = ctx.settings.resync;
    let mut next_resync = tokio::time::Instant::now() + interval;
    let mut catch_ups = CatchUps::default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let catch_up = publisher.broker.is_connected() && catch_ups.due(|| publisher.take_missed());
        if !catch_up && tokio::time::Instant::now() < next_resync {
            continue;
        }
        next_resync = tokio::time::Instant::now() + interval;
        let period = if catch_up {
            period_number(Duration::from_secs(1))
        } else {
            period_number(interval)
        };
        tracing::info!(catch_up, "resync: notifying every object");
        resyncs.send_replace(Some(Cause::Resync { period }));
    }
}

/// Paces the catch-up resyncs after missed publishes: the first comes at once, and while each
/// one misses again (connected to a NATS server whose streams are still electing a leader)
/// the next waits twice as long, up to [`CATCH_UP_MAX_WAIT`], rather than re-notifying every
/// object every second. A check that finds nothing missed resets the pace.
#[derive(Debug)]
struct CatchUps {
    not_before: tokio::time::Instant,
    wait: Duration,
}

const CATCH_UP_FIRST_WAIT: Duration = Duration::from_secs(1);
const CATCH_UP_MAX_WAIT: Duration = Duration::from_secs(8);

impl Default for CatchUps {
    fn default() -> Self {
        Self {
            not_before: tokio::time::Instant::now(),
            wait: CATCH_UP_FIRST_WAIT,
        }
    }
}

impl CatchUps {
    /// Whether a catch-up is due now; `missed` takes the miss flag and is only asked when the
    /// pace allows one.
    fn due(&mut self, missed: impl FnOnce() -> bool) -> bool {
        let now = tokio::time::Instant::now();
        if now < self.not_before {
            return false;
        }
        if !missed() {
            self.wait = CATCH_UP_FIRST_WAIT;
            return false;
        }
        self.not_before = now + self.wait;
        self.wait = (self.wait * 2).min(CATCH_UP_MAX_WAIT);
        true
    }
}

/// The notification pointing at `object` for its own Qleet.
pub fn notification_for<K: Resource>(kind: QleetKind, object: &K, cause: Cause) -> Notification {
    Target::of(object).notification(kind, cause)
}

fn as_instance<K: 'static>(object: &K) -> Option<&WorkloadInstance> {
    (object as &dyn Any).downcast_ref::<WorkloadInstance>()
}

/// Nothing a Qleet reads from its caches is in `managedFields`, often the larger part of an
/// object's metadata: caches keep objects without them.
pub(crate) fn forget_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn catch_ups_slow_down_while_they_keep_missing_and_reset_once_quiet() {
        let mut catch_ups = CatchUps::default();
        assert!(catch_ups.due(|| true), "the first catch-up comes at once");
        assert!(
            !catch_ups.due(|| panic!("the miss flag is not taken before the pace allows")),
            "not twice in the same instant"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            catch_ups.due(|| true),
            "one second later, while still missing"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!catch_ups.due(|| true), "then it waits two seconds");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(catch_ups.due(|| true));
        for _ in 0..5 {
            tokio::time::advance(CATCH_UP_MAX_WAIT).await;
            assert!(
                catch_ups.due(|| true),
                "never more than {CATCH_UP_MAX_WAIT:?} apart"
            );
        }
        tokio::time::advance(CATCH_UP_MAX_WAIT).await;
        assert!(!catch_ups.due(|| false), "nothing missed: no catch-up");
        assert!(
            catch_ups.due(|| true),
            "and the next miss is caught up at once"
        );
    }
}
