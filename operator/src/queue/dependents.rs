//! Notifications of the dependency engine: who must look again when a profile, a support
//! service or an instance needing one changes.
//!
//! - SupportServiceProfile: its own Qleet; every SupportService installed from it (a
//!   changed profile rolls out to every runtime); every instance with needs (a new profile
//!   may provide what one waits for).
//! - SupportService: its own Qleet; its profile (which lists where it is installed); the
//!   instances and services on its runtime that may depend on it.
//! - WorkloadInstance with needs: the services on its runtime (their users changed).

use std::collections::HashMap;

use futures::Stream;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use qleetos_crds::notification::{Cause, Notification, QleetKind};
use qleetos_crds::{SupportService, SupportServiceProfile, WorkloadInstance};

use super::notifier::{Publisher, for_each, intent, notification_for, related_object, watched};
use crate::context::Context;

/// Watches profiles and support services (filling their caches) and notifies on changes.
pub async fn run(
    publisher: &Publisher,
    ctx: &Context,
    profiles: Writer<SupportServiceProfile>,
    services: Writer<SupportService>,
) {
    let client = ctx.client.clone();
    tokio::join!(
        profiles_changed(publisher, ctx, watched(Api::all(client.clone()), profiles)),
        services_changed(publisher, ctx, watched(Api::all(client), services)),
    );
}

async fn profiles_changed(
    publisher: &Publisher,
    ctx: &Context,
    stream: impl Stream<Item = Result<SupportServiceProfile, watcher::Error>>,
) {
    let mut seen = HashMap::new();
    for_each(stream, |profile| {
        let changed = seen.insert(profile.uid().unwrap_or_default(), intent(&profile))
            != Some(intent(&profile));
        async move {
            if !changed {
                return;
            }
            let name = profile.name_any();
            let cause = related(&profile);
            send(
                publisher,
                QleetKind::SupportServiceProfile,
                &profile,
                Cause::Change,
            )
            .await;
            for service in ctx.caches.support_services.state() {
                if service.spec.profile_ref.name == name {
                    send(
                        publisher,
                        QleetKind::SupportService,
                        &*service,
                        cause.clone(),
                    )
                    .await;
                }
            }
            notify_instances_where(publisher, ctx, &cause, |i| {
                !i.spec.capabilities().is_empty()
            })
            .await;
        }
    })
    .await;
}

async fn services_changed(
    publisher: &Publisher,
    ctx: &Context,
    stream: impl Stream<Item = Result<SupportService, watcher::Error>>,
) {
    let mut seen = HashMap::new();
    for_each(stream, |service| {
        let own_change = seen.insert(service.uid().unwrap_or_default(), intent(&service))
            != Some(intent(&service));
        async move {
            if own_change {
                send(
                    publisher,
                    QleetKind::SupportService,
                    &service,
                    Cause::Change,
                )
                .await;
            }
            let cause = related(&service);
            let runtime = &service.spec.runtime_ref.name;
            if let Some(profile) =
                ctx.caches
                    .profiles
                    .get(&kube::runtime::reflector::ObjectRef::new(
                        &service.spec.profile_ref.name,
                    ))
            {
                send(
                    publisher,
                    QleetKind::SupportServiceProfile,
                    &*profile,
                    cause.clone(),
                )
                .await;
            }
            for other in crate::dependencies::services_on(ctx, runtime) {
                if other.uid() != service.uid() {
                    send(publisher, QleetKind::SupportService, &*other, cause.clone()).await;
                }
            }
            notify_instances_where(publisher, ctx, &cause, |i| {
                &i.spec.runtime_ref.name == runtime && depends(i)
            })
            .await;
        }
    })
    .await;
}

/// Any change of an instance that needs something (or did) notifies the services on its
/// runtime, whose users are derived from the instances.
pub async fn instance_changed(publisher: &Publisher, ctx: &Context, instance: &WorkloadInstance) {
    if !depends(instance) {
        return;
    }
    let cause = related(instance);
    for service in crate::dependencies::services_on(ctx, &instance.spec.runtime_ref.name) {
        send(
            publisher,
            QleetKind::SupportService,
            &*service,
            cause.clone(),
        )
        .await;
    }
}

/// Re-notifies every profile and support service.
pub async fn resync(publisher: &Publisher, ctx: &Context, cause: &Cause) {
    for profile in ctx.caches.profiles.state() {
        send(
            publisher,
            QleetKind::SupportServiceProfile,
            &*profile,
            cause.clone(),
        )
        .await;
    }
    for service in ctx.caches.support_services.state() {
        send(
            publisher,
            QleetKind::SupportService,
            &*service,
            cause.clone(),
        )
        .await;
    }
}

async fn notify_instances_where(
    publisher: &Publisher,
    ctx: &Context,
    cause: &Cause,
    wanted: impl Fn(&WorkloadInstance) -> bool,
) {
    for instance in ctx.caches.instances.state() {
        if wanted(&instance) {
            send(
                publisher,
                QleetKind::WorkloadInstance,
                &*instance,
                cause.clone(),
            )
            .await;
        }
    }
}

fn depends(instance: &WorkloadInstance) -> bool {
    !instance.spec.capabilities().is_empty()
        || instance
            .status
            .as_ref()
            .is_some_and(|s| !s.dependencies.is_empty())
}

fn related<K: Resource<DynamicType = ()>>(object: &K) -> Cause {
    Cause::Related {
        object: related_object(object),
    }
}

async fn send<K: Resource>(publisher: &Publisher, kind: QleetKind, object: &K, cause: Cause) {
    let notification: Notification = notification_for(kind, object, cause);
    publisher.send(notification).await;
}
