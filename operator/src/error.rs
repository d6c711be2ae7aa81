use qleetos_crds::{Manifest, Reason};

use crate::kubeconfig::KubeconfigProblem;

/// Everything a Qleet's reconcile can fail with. `reason()` is the CamelCase reason used in
/// conditions, Events and the failures metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("management cluster API: {0}")]
    Management(#[source] kube::Error),

    #[error("KubernetesRuntime {0} does not exist; create it or change the placement")]
    RuntimeNotFound(String),

    /// No KubernetesRuntimeProfile can provision a cluster for a placement.
    #[error("cannot provision a runtime in region {region}: {detail}")]
    NoRuntimeProfile { region: String, detail: String },

    /// The provider could not create or remove a cluster; `message` is the provider's own.
    #[error("provisioning runtime {runtime}: {message}")]
    Provisioning { runtime: String, message: String },

    #[error("kubeconfig Secret {namespace}/{name} of runtime {runtime} not found")]
    SecretNotFound {
        runtime: String,
        namespace: String,
        name: String,
    },

    /// Never carries the kubeconfig's content: `problem` is one of a fixed set of messages.
    #[error(
        "the kubeconfig of runtime {runtime} in Secret {namespace}/{name} key `{key}` {problem}"
    )]
    InvalidKubeconfig {
        runtime: String,
        namespace: String,
        name: String,
        key: String,
        problem: KubeconfigProblem,
    },

    #[error(
        "runtime {runtime} refers to a kubeconfig Secret in namespace {namespace}; QleetOS reads kubeconfig Secrets only from its own namespace {allowed}: create the Secret there and point kubeconfigSecretRef.namespace at it"
    )]
    ForbiddenSecretNamespace {
        runtime: String,
        namespace: String,
        allowed: String,
    },

    #[error("runtime {runtime} is unreachable: {source}")]
    RuntimeUnreachable {
        runtime: String,
        #[source]
        source: kube::Error,
    },

    #[error("manifest #{index} is invalid: {reason}")]
    InvalidManifest { index: usize, reason: String },

    #[error(
        "runtime {runtime} does not serve {api_version} {kind}; install its CRD or fix the manifest"
    )]
    UnknownKind {
        runtime: String,
        api_version: String,
        kind: String,
    },

    #[error("chart {chart}: {problem}")]
    ChartUnavailable { chart: String, problem: String },

    #[error("chart {chart} did not render: {problem}")]
    ChartRender { chart: String, problem: String },

    #[error("{0}")]
    ApplyFailed(String),

    #[error("{0}")]
    Conflict(String),

    #[error("{0}")]
    TenancyViolation(String),

    #[error("still deleting {0}")]
    CleanupPending(String),

    #[error("finalizer: {0}")]
    Finalizer(String),

    #[error("spec.placement.runtimeSelector is invalid: {0}")]
    InvalidSelector(String),

    #[error("{0}")]
    Cache(String),

    #[error("NATS: {0}")]
    Broker(String),

    #[error("reconcile did not finish within {0:?}")]
    Timeout(std::time::Duration),

    #[error("{0} is missing metadata.{1}")]
    MissingMetadata(&'static str, &'static str),

    #[error(
        "no SupportServiceProfile provides `{capability}`; ask operations for one, or remove the need"
    )]
    NoProvider { capability: String },

    #[error(
        "several SupportServiceProfiles provide `{capability}` ({profiles}) and {why}; operations must mark exactly one `default: true`"
    )]
    AmbiguousProvider {
        capability: String,
        profiles: String,
        why: &'static str,
    },

    #[error("support services need each other in a cycle: {0}")]
    DependencyCycle(String),

    #[error("spec.expose: {0}")]
    InvalidExpose(String),

    #[error("WorkloadServiceDependency {dependency}: {problem}")]
    InvalidServiceDependency { dependency: String, problem: String },

    #[error("ServiceProfile {profile}: {problem}")]
    InvalidServiceProfile { profile: String, problem: String },

    #[error(
        "revision {revision} of {kind} {name} does not exist (never recorded, or pruned); `kubectl get controllerrevisions -l qleetos.io/owner-uid=<its uid>` lists those kept"
    )]
    RevisionNotFound {
        kind: &'static str,
        name: String,
        revision: i64,
    },

    #[error("background task {0} stopped")]
    TaskStopped(&'static str),

    #[error("reconciles in flight did not finish within {0:?} of shutdown")]
    DrainTimeout(std::time::Duration),
}

impl Error {
    /// CamelCase reason for conditions, Events and metrics labels.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Management(_) => Reason::ManagementApiError,
            Error::RuntimeNotFound(_) => Reason::RuntimeNotFound,
            Error::NoRuntimeProfile { .. } => Reason::NoRuntimeProfile,
            Error::Provisioning { .. } => Reason::ProvisioningFailed,
            Error::SecretNotFound { .. } => Reason::KubeconfigSecretNotFound,
            Error::InvalidKubeconfig { problem, .. } if problem.is_refusal() => {
                Reason::ForbiddenKubeconfigFeature
            }
            Error::InvalidKubeconfig { .. } => Reason::InvalidKubeconfig,
            Error::ForbiddenSecretNamespace { .. } => Reason::ForbiddenSecretNamespace,
            Error::RuntimeUnreachable { .. } => Reason::RuntimeUnreachable,
            Error::InvalidManifest { .. } => Reason::InvalidManifest,
            Error::UnknownKind { .. } => Reason::UnknownKind,
            Error::ChartUnavailable { .. } => Reason::ChartUnavailable,
            Error::ChartRender { .. } => Reason::ChartRenderFailed,
            Error::ApplyFailed(_) => Reason::ApplyFailed,
            Error::Conflict(_) => Reason::Conflict,
            Error::TenancyViolation(_) => Reason::TenancyViolation,
            Error::CleanupPending(_) => Reason::CleanupPending,
            Error::Finalizer(_) => Reason::FinalizerFailed,
            Error::InvalidSelector(_) => Reason::InvalidPlacement,
            Error::Cache(_) => Reason::CacheNotReady,
            Error::Broker(_) => Reason::BrokerUnavailable,
            Error::Timeout(_) => Reason::ReconcileTimeout,
            Error::MissingMetadata(..) => Reason::MissingMetadata,
            Error::NoProvider { .. } => Reason::NoSupportServiceProfile,
            Error::AmbiguousProvider { .. } => Reason::AmbiguousSupportServiceProfile,
            Error::DependencyCycle(_) => Reason::DependencyCycle,
            Error::InvalidExpose(_) => Reason::InvalidExpose,
            Error::InvalidServiceDependency { .. } => Reason::InvalidServiceDependency,
            Error::InvalidServiceProfile { .. } => Reason::InvalidServiceProfile,
            Error::RevisionNotFound { .. } => Reason::RevisionNotFound,
            Error::TaskStopped(_) => Reason::BackgroundTaskStopped,
            Error::DrainTimeout(_) => Reason::DrainTimeout,
        }
    }

    pub(crate) fn invalid_manifest(index: usize, manifest: &Manifest, what: &str) -> Self {
        let kind = manifest.kind().unwrap_or("<no kind>");
        let name = manifest.name().unwrap_or("<no name>");
        Error::InvalidManifest {
            index,
            reason: format!("{kind} {name}: {what}"),
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(error: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match error {
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            F::AddFinalizer(inner) | F::RemoveFinalizer(inner) => Error::Management(inner),
            other => Error::Finalizer(other.to_string()),
        }
    }
}

impl Error {
    pub(crate) fn broker(error: impl std::fmt::Display) -> Self {
        Error::Broker(error.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
