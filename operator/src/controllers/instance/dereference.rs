//! The first step of a pass: the runtime the instance targets, what its namespace may do
//! there (the fence), and the clients (the operator's and the tenant's), or why it holds.

use kube::api::Api;
use qleetos_crds::{Conditions, KubernetesRuntime, Reason, WorkloadInstance};

use super::stop::Hold;
use crate::context::Context;
use crate::runtime_client::RuntimeClient;
use crate::tenancy::Fence;

/// Everything a pass needs once the runtime is usable and the fence allows the runtime.
pub(super) struct Plan {
    pub(super) runtime: KubernetesRuntime,
    pub(super) fence: Fence,
    pub(super) operator: RuntimeClient,
    pub(super) tenant: RuntimeClient,
}

/// The runtime, the fence and the clients, or why the pass must hold.
pub(super) async fn plan(instance: &WorkloadInstance, ctx: &Context) -> Result<Plan, Box<Hold>> {
    let runtime_name = &instance.spec.runtime_ref.name;
    let Some(runtime) = find_runtime(ctx, runtime_name).await else {
        return Err(Hold::waiting(
            Reason::RuntimeNotFound,
            format!(
                "KubernetesRuntime {runtime_name} does not exist; create it or change the placement"
            ),
        ));
    };
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    let fence = ctx.caches.fence(namespace, &ctx.settings.system_namespace);
    if !fence.allows_runtime(&runtime) {
        let violation = fence.runtime_violation(runtime_name);
        return Err(Hold::refused(
            Reason::TenancyViolation,
            violation.to_string(),
        ));
    }
    if !runtime.is_ready() {
        return Err(Hold::waiting(
            runtime_wait_reason(&runtime),
            runtime_not_ready(&runtime),
        ));
    }
    let operator = ctx
        .pool
        .client_for(&runtime)
        .await
        .map_err(|e| Hold::waiting(e.reason(), e.to_string()))?;
    let tenant = operator
        .as_tenant(&fence.identity())
        .map_err(|e| Hold::waiting(e.reason(), e.to_string()))?;
    Ok(Plan {
        runtime,
        fence,
        operator,
        tenant,
    })
}

pub(super) async fn find_runtime(ctx: &Context, name: &str) -> Option<KubernetesRuntime> {
    if let Some(runtime) = ctx.caches.runtime(name) {
        return Some((*runtime).clone());
    }
    Api::<KubernetesRuntime>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// The runtime's own failure reason (e.g. `RuntimeUnreachable`, which the Workload reports
/// as a failed placement); `RuntimeDeleting` or `WaitingForRuntime` for normal waits. A
/// reason this operator does not know (another version wrote it) becomes `RuntimeNotReady`,
/// a failure, as an unknown reason always was; the message still names it.
fn runtime_wait_reason(runtime: &KubernetesRuntime) -> Reason {
    if runtime.metadata.deletion_timestamp.is_some() {
        return Reason::RuntimeDeleting;
    }
    match runtime
        .status
        .as_ref()
        .and_then(|s| s.condition(qleetos_crds::READY))
    {
        None => Reason::WaitingForRuntime,
        Some(c) => match Reason::parse(&c.reason) {
            Some(Reason::Provisioning) => Reason::WaitingForRuntime,
            Some(reason) => reason,
            None => Reason::RuntimeNotReady,
        },
    }
}

/// Why the runtime is not Ready; a runtime being provisioned says how far it is
/// (`provisioning eu-1 from profile standard (control plane ready, 0/2 workers)`).
fn runtime_not_ready(runtime: &KubernetesRuntime) -> String {
    let name = runtime.metadata.name.as_deref().unwrap_or_default();
    let ready = runtime
        .status
        .as_ref()
        .and_then(|s| s.condition(qleetos_crds::READY));
    if let Some(condition) = ready.filter(|c| c.reason == Reason::Provisioning) {
        return format!("runtime {name}: {}", condition.message);
    }
    if runtime.status.is_none() && runtime.profile().is_some() {
        return format!(
            "runtime {name}: provisioning {} from profile {}",
            runtime.spec.region,
            runtime.profile().unwrap_or_default()
        );
    }
    let why = ready
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_else(|| "not probed yet".to_owned());
    format!("runtime {name} is not Ready ({why}); nothing is applied until it is")
}
