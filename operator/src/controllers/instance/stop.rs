//! How a pass of the instance Qleet stops before converging: a hold (a normal wait, or a
//! refusal the user must fix) written as its Ready condition, or an error retried with
//! backoff. Each step returns `Result<_, Stop>` and the pass goes on with `?`.

use qleetos_crds::{Condition, DependencyStatus, Reason};

use super::RUNTIME_WAIT;
use crate::context::Next;
use crate::error::Error;

/// Why a pass stops.
pub(super) enum Stop {
    /// Nothing is applied now; the hold says why and what to do meanwhile.
    Hold(Box<Hold>),
    /// The pass failed; the worker retries it with backoff.
    Failed(Error),
}

impl From<Box<Hold>> for Stop {
    fn from(hold: Box<Hold>) -> Self {
        Stop::Hold(hold)
    }
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Failed(error)
    }
}

/// Why a pass cannot apply anything now, and what to do meanwhile.
pub(super) struct Hold {
    pub(super) reason: Reason,
    pub(super) condition: Condition,
    pub(super) next: Next,
    /// A problem the user must fix (an Event says so), not a normal wait.
    pub(super) warn: bool,
    /// Where the dependencies stand, when the pass got that far.
    pub(super) dependencies: Vec<DependencyStatus>,
}

impl Hold {
    pub(super) fn waiting(reason: Reason, message: String) -> Box<Self> {
        Box::new(Self {
            reason,
            condition: Condition::ready(false, reason, message),
            next: Next::After(RUNTIME_WAIT),
            warn: false,
            dependencies: Vec::new(),
        })
    }

    pub(super) fn refused(reason: Reason, message: String) -> Box<Self> {
        Box::new(Self {
            reason,
            condition: Condition::ready(false, reason, message),
            next: Next::Done,
            warn: true,
            dependencies: Vec::new(),
        })
    }

    pub(super) fn with_dependencies(
        mut self: Box<Self>,
        dependencies: Vec<DependencyStatus>,
    ) -> Box<Self> {
        self.dependencies = dependencies;
        self
    }
}
