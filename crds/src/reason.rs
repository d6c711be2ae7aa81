//! Every reason QleetOS writes into a condition or an Event, each with its [`Class`]: whether
//! it means "wait, this converges by itself", "failed, someone must act" or "done".
//!
//! The operator takes a [`Reason`], never a string, so a new reason must be declared here
//! (with its class) before it can be written. Status fields stay strings (the CRD schema does
//! not change); what is read back from an object goes through [`Reason::parse`] or
//! [`class_of`].

use std::fmt;

/// What a reason means for whoever reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A normal wait: it converges without anyone acting.
    Waiting,
    /// Something is wrong and someone (the user, operations) must act.
    Failed,
    /// The object is where it should be.
    Done,
}

impl Class {
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Waiting => "Waiting",
            Class::Failed => "Failed",
            Class::Done => "Done",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares [`Reason`] from `Name => Class,` lines; the text of each reason is its name.
macro_rules! reasons {
    ($($name:ident => $class:ident,)*) => {
        /// A condition or Event reason; its text ([`Reason::as_str`]) is the variant's name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason {
            $($name,)*
        }

        impl Reason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The CamelCase text written into conditions and Events.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            pub const fn class(self) -> Class {
                match self {
                    $(Reason::$name => Class::$class,)*
                }
            }
        }
    };
}

reasons! {
    // Normal waits.
    Pending => Waiting,
    Progressing => Waiting,
    Provisioning => Waiting,
    Deprovisioning => Waiting,
    Deleting => Waiting,
    Removing => Waiting,
    InUse => Waiting,
    Installing => Waiting,
    Waiting => Waiting,
    NoBoundWorkload => Waiting,
    RuntimeDeleting => Waiting,
    WaitingForRuntime => Waiting,
    WaitingForSupportService => Waiting,
    WaitingForService => Waiting,
    WaitingForWorkloads => Waiting,
    FailingOver => Waiting,
    WaveStarted => Waiting,
    WaitingForHook => Waiting,
    PlanPendingApproval => Waiting,
    RolloutPaused => Waiting,
    Baking => Waiting,
    Rebalancing => Waiting,

    // Where it should be.
    RolledOut => Done,
    AllPlacementsReady => Done,
    FailedOver => Done,
    OnOriginalRuntimes => Done,
    FailedBack => Done,
    StayedAfterFailover => Done,
    PlacementRecovered => Done,
    Recovered => Done,
    Reachable => Done,
    Provisioned => Done,
    Deprovisioned => Done,
    Installed => Done,
    Valid => Done,
    Bound => Done,
    Accepted => Done,
    Idle => Done,
    RuntimeAbandoned => Done,
    RolloutComplete => Done,
    PlanComputed => Done,
    PlanApproved => Done,
    Overflow => Done,
    Rebalanced => Done,

    // Failures of a reconcile (`Error::reason()` in the operator).
    ManagementApiError => Failed,
    RuntimeNotFound => Failed,
    NoRuntimeProfile => Failed,
    ProvisioningFailed => Failed,
    KubeconfigSecretNotFound => Failed,
    ForbiddenKubeconfigFeature => Failed,
    InvalidKubeconfig => Failed,
    ForbiddenSecretNamespace => Failed,
    RuntimeUnreachable => Failed,
    InvalidManifest => Failed,
    ChartUnavailable => Failed,
    ChartRenderFailed => Failed,
    UnknownKind => Failed,
    ApplyFailed => Failed,
    Conflict => Failed,
    TenancyViolation => Failed,
    CleanupPending => Failed,
    FinalizerFailed => Failed,
    InvalidPlacement => Failed,
    CacheNotReady => Failed,
    BrokerUnavailable => Failed,
    ReconcileTimeout => Failed,
    MissingMetadata => Failed,
    NoSupportServiceProfile => Failed,
    AmbiguousSupportServiceProfile => Failed,
    DependencyCycle => Failed,
    InvalidExpose => Failed,
    InvalidServiceDependency => Failed,
    InvalidServiceProfile => Failed,
    BackgroundTaskStopped => Failed,
    DrainTimeout => Failed,

    // Other failures someone must act on.
    PlacementFailed => Failed,
    NoMatchingRuntime => Failed,
    InsufficientCapacity => Failed,
    UnknownImageContainer => Failed,
    RolloutFailed => Failed,
    LimitExceeded => Failed,
    HostConflict => Failed,
    ProfileNotFound => Failed,
    InstallFailed => Failed,
    InvalidParameters => Failed,
    InvalidRuntimeProfile => Failed,
    InvalidSelector => Failed,
    RuntimeGone => Failed,
    RuntimeNotReady => Failed,
    RolloutHalted => Failed,
    RevisionNotFound => Failed,
    PlanFailed => Failed,
    PlanStale => Failed,
}

impl Reason {
    /// The reason whose text is `text`; `None` for a text QleetOS does not write (another
    /// version's, or someone else's).
    pub fn parse(text: &str) -> Option<Reason> {
        Self::ALL.iter().copied().find(|r| r.as_str() == text)
    }

    pub fn is_failure(self) -> bool {
        self.class() == Class::Failed
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.as_str().to_owned()
    }
}

impl PartialEq<Reason> for String {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Reason> for str {
    fn eq(&self, other: &Reason) -> bool {
        self == other.as_str()
    }
}

/// The class of a reason read back from an object's status. A text QleetOS does not know
/// counts as [`Class::Failed`]: nothing can say it converges by itself, so it is shown and
/// reported as a failure rather than silently waited on.
pub fn class_of(reason: &str) -> Class {
    Reason::parse(reason).map_or(Class::Failed, Reason::class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_text() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
            assert_eq!(reason.to_string(), reason.as_str());
        }
    }

    #[test]
    fn every_text_is_declared_once() {
        let mut texts: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), Reason::ALL.len());
    }

    #[test]
    fn texts_are_the_ones_users_match() {
        assert_eq!(Reason::WaitingForRuntime.as_str(), "WaitingForRuntime");
        assert_eq!(Reason::FailedOver.as_str(), "FailedOver");
        assert_eq!(Reason::ManagementApiError.as_str(), "ManagementApiError");
        assert_eq!(Reason::InvalidPlacement.as_str(), "InvalidPlacement");
    }

    #[test]
    fn known_reasons_have_their_class() {
        for waiting in [
            Reason::Pending,
            Reason::Progressing,
            Reason::WaitingForRuntime,
            Reason::WaitingForSupportService,
            Reason::WaitingForService,
            Reason::RuntimeDeleting,
            Reason::Provisioning,
            Reason::Deleting,
            Reason::FailingOver,
        ] {
            assert_eq!(waiting.class(), Class::Waiting, "{waiting}");
        }
        for done in [
            Reason::RolledOut,
            Reason::FailedOver,
            Reason::AllPlacementsReady,
        ] {
            assert_eq!(done.class(), Class::Done, "{done}");
        }
        for failed in [
            Reason::RuntimeNotFound,
            Reason::HostConflict,
            Reason::TenancyViolation,
            Reason::RuntimeUnreachable,
            Reason::ApplyFailed,
            Reason::RolloutFailed,
        ] {
            assert_eq!(failed.class(), Class::Failed, "{failed}");
        }
    }

    #[test]
    fn a_text_read_back_is_classified_and_an_unknown_one_is_a_failure() {
        assert_eq!(class_of("WaitingForService"), Class::Waiting);
        assert_eq!(class_of("RolledOut"), Class::Done);
        assert_eq!(class_of("HostConflict"), Class::Failed);
        assert_eq!(Reason::parse("SomethingNew"), None);
        assert_eq!(class_of("SomethingNew"), Class::Failed);
        assert_eq!(class_of(""), Class::Failed);
    }
}
