//! The one lifecycle of every dependency QleetOS creates on demand (a provisioned cluster, a
//! support service, a back-end service): created on first need, its users derived from the
//! live objects on every pass, marked unused when the last one goes, retired once its
//! retention allows, and torn down in order (refused while in use, what was installed on
//! it first, then its own objects).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kube::api::Api;
use kube::core::ClusterResourceScope;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use qleetos_crds::Reason;
use qleetos_crds::SupportService;
use serde::de::DeserializeOwned;

use super::writes::delete_if_present;
use crate::context::{Context, Next};
use crate::error::Result;

/// What becomes of a dependency nobody uses any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Kept until deleted by hand.
    Keep,
    /// Removed once unused for this long.
    RemoveAfter(Duration),
}

/// A kind of dependency the engine runs: a cluster-scoped object of the management cluster.
/// Its provider supplies what differs between kinds; the engine decides when it is retired
/// and in which order it is torn down.
pub trait Dependency:
    Resource<DynamicType = (), Scope = ClusterResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
{
    /// What users call it in messages, e.g. `cluster`.
    const NOUN: &'static str;

    /// Who needs it now, from the live objects (never from a stored list), sorted.
    fn users(&self, ctx: &Context) -> Vec<String>;

    /// What refuses its teardown: by default its users.
    fn removal_blocked_by(&self, ctx: &Context) -> Vec<String> {
        self.users(ctx)
    }

    /// When the last pass found it unused, as recorded in its status.
    fn unused_since(&self) -> Option<&str>;

    /// The support services installed on it, removed before it is (a cluster's).
    fn installed_on_it(&self, _ctx: &Context) -> Vec<Arc<SupportService>> {
        Vec::new()
    }

    /// Removes what the provider made for it (installed objects, a cluster); `Some` with
    /// what it still waits on, `None` once everything is gone.
    fn remove_own(&self, ctx: &Context) -> impl Future<Output = Result<Option<String>>> + Send;
}

/// Where a dependency stands with its users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub users: Vec<String>,
    /// Since when nobody uses it (RFC 3339, seconds); `None` while in use.
    pub unused_since: Option<String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; look again after this long (its retention may run out then).
    Keep(Option<Duration>),
    /// Unused for its whole retention: delete it now.
    Retire,
}

impl Use {
    /// `next`, or sooner when the retention runs out before.
    pub fn next(&self, next: Next) -> Next {
        match (self.verdict, next) {
            (Verdict::Keep(Some(left)), Next::After(after)) => Next::After(left.min(after)),
            (Verdict::Keep(Some(left)), Next::Done) => Next::After(left),
            _ => next,
        }
    }
}

/// Tracks `users` against the unused mark of the last pass, at `now`. A dependency is never
/// retired on the pass that first finds it unused, however short its retention: a user that
/// has just asked for it (a new runtime's status, an instance's first pass) may not have
/// reached the watch cache yet; the next pass looks again.
pub fn track(
    users: Vec<String>,
    marked: Option<&str>,
    retention: Retention,
    now: DateTime<Utc>,
) -> Use {
    if !users.is_empty() {
        return Use {
            users,
            unused_since: None,
            verdict: Verdict::Keep(None),
        };
    }
    let since = marked
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let first_pass = since.is_none();
    let since = since.unwrap_or(now);
    let unused_since = Some(since.to_rfc3339_opts(SecondsFormat::Secs, true));
    let Retention::RemoveAfter(grace) = retention else {
        return Use {
            users,
            unused_since,
            verdict: Verdict::Keep(None),
        };
    };
    let elapsed = (now - since).to_std().unwrap_or_default();
    let verdict = if first_pass {
        Verdict::Keep(Some(grace + Duration::from_secs(1)))
    } else if elapsed >= grace {
        Verdict::Retire
    } else {
        // One second more than what is left, so the next pass finds it run out.
        Verdict::Keep(Some(grace - elapsed + Duration::from_secs(1)))
    };
    Use {
        users,
        unused_since,
        verdict,
    }
}

/// Where `dependency` stands with its users now.
pub fn track_use<D: Dependency>(dependency: &D, ctx: &Context, retention: Retention) -> Use {
    track(
        dependency.users(ctx),
        dependency.unused_since(),
        retention,
        Utc::now(),
    )
}

/// Deletes a dependency whose retention ran out, saying why in an Event (`Idle`); its
/// finalizer then tears it down.
pub async fn retire<D: Dependency>(dependency: &D, ctx: &Context, why: String) -> Result<Next> {
    let api: Api<D> = Api::all(ctx.client.clone());
    tracing::info!(name = %dependency.name_any(), kind = %D::kind(&()), "unused for its retention: removing");
    ctx.event(dependency, EventType::Normal, Reason::Idle, why)
        .await;
    delete_if_present(&api, &dependency.name_any()).await?;
    Ok(Next::Done)
}

/// How far a teardown is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// Refused while anything uses it; these do.
    InUse(Vec<String>),
    /// Under way; what it waits on.
    Removing(String),
    Done,
}

/// One teardown pass: nothing while it is in use; then the support services installed on
/// it (deleted, and waited for); then what its provider made.
pub async fn teardown<D: Dependency>(dependency: &D, ctx: &Context) -> Result<Teardown> {
    let users = dependency.removal_blocked_by(ctx);
    if !users.is_empty() {
        return Ok(Teardown::InUse(users));
    }
    let installed = dependency.installed_on_it(ctx);
    if !installed.is_empty() {
        let api: Api<SupportService> = Api::all(ctx.client.clone());
        let mut names = Vec::new();
        for service in &installed {
            if service.metadata.deletion_timestamp.is_none() {
                delete_if_present(&api, &service.name_any()).await?;
            }
            names.push(service.name_any());
        }
        return Ok(Teardown::Removing(format!(
            "removing support services {} before the {}",
            names.join(", "),
            D::NOUN
        )));
    }
    Ok(match dependency.remove_own(ctx).await? {
        Some(waiting) => Teardown::Removing(waiting),
        None => Teardown::Done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    const NOW: &str = "2026-01-01T00:10:00Z";
    const GRACE: Retention = Retention::RemoveAfter(Duration::from_secs(60));

    #[test]
    fn a_used_dependency_is_kept_and_its_mark_cleared() {
        let tracked = track(vec!["ns/a".into()], Some(NOW), GRACE, at(NOW));
        assert_eq!(tracked.unused_since, None);
        assert_eq!(tracked.verdict, Verdict::Keep(None));
    }

    #[test]
    fn the_first_unused_pass_only_marks_it_even_without_grace() {
        let none = Retention::RemoveAfter(Duration::ZERO);
        let tracked = track(Vec::new(), None, none, at(NOW));
        assert_eq!(tracked.unused_since.as_deref(), Some(NOW));
        assert_eq!(tracked.verdict, Verdict::Keep(Some(Duration::from_secs(1))));
    }

    #[test]
    fn it_is_retired_once_unused_for_its_whole_retention() {
        let early = track(Vec::new(), Some("2026-01-01T00:09:30Z"), GRACE, at(NOW));
        assert_eq!(early.verdict, Verdict::Keep(Some(Duration::from_secs(31))));
        assert_eq!(early.unused_since.as_deref(), Some("2026-01-01T00:09:30Z"));
        let late = track(Vec::new(), Some("2026-01-01T00:09:00Z"), GRACE, at(NOW));
        assert_eq!(late.verdict, Verdict::Retire);
    }

    #[test]
    fn a_kept_dependency_records_since_when_it_is_unused_but_never_retires() {
        let tracked = track(
            Vec::new(),
            Some("2020-01-01T00:00:00Z"),
            Retention::Keep,
            at(NOW),
        );
        assert_eq!(
            tracked.unused_since.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        assert_eq!(tracked.verdict, Verdict::Keep(None));
    }

    #[test]
    fn the_retention_left_shortens_the_next_look() {
        let tracked = track(Vec::new(), Some("2026-01-01T00:09:30Z"), GRACE, at(NOW));
        let soon = Duration::from_secs(31);
        assert_eq!(tracked.next(Next::Done), Next::After(soon));
        assert_eq!(
            tracked.next(Next::After(Duration::from_secs(300))),
            Next::After(soon)
        );
        assert_eq!(
            tracked.next(Next::After(Duration::from_secs(5))),
            Next::After(Duration::from_secs(5))
        );
    }
}
