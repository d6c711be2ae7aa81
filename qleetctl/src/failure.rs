//! Why a command failed, and the exit code that tells a script so.

/// A failed command; the message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TimedOut(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::NotFound(_) => 3,
            Failure::Forbidden(_) => 4,
            Failure::TimedOut(_) => 5,
        }
    }

    /// An API error about `what` (e.g. `workload demo/web`), classified by its HTTP status.
    pub fn api(error: kube::Error, what: &str) -> Failure {
        let kube::Error::Api(status) = &error else {
            return Failure::Other(anyhow::Error::new(error).context(format!("reading {what}")));
        };
        match status.code {
            404 => Failure::NotFound(format!("{what} not found")),
            401 => Failure::Forbidden(format!(
                "the management cluster did not accept your credentials ({what}): renew them in your kubeconfig"
            )),
            403 => Failure::Forbidden(format!(
                "{}; ask your cluster admin for a Role granting it",
                status.message
            )),
            400 | 409 | 422 => Failure::Usage(format!("{what}: {}", status.message)),
            _ => Failure::Other(anyhow::Error::new(error).context(what.to_owned())),
        }
    }
}
