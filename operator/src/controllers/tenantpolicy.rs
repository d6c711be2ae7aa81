//! TenantPolicy Qleet: writes each policy's status, the management namespaces it selects or
//! why its selector is invalid. What a policy change means for Workloads and instances is in
//! their Qleets' triggers.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use qleetos_crds::Reason;
use qleetos_crds::{Condition, TenantPolicy, TenantPolicyStatus};

use super::{apply_status_if_changed, name_of};
use crate::context::{Context, Next};
use crate::error::Result;
use crate::queue::triggers::{Target, Triggers};
use crate::queue::worker::Qleet;
use crate::tenancy::selected_namespaces;

pub const CONTROLLER: &str = "tenantpolicy";

/// The TenantPolicy Qleet.
pub fn qleet() -> Qleet<TenantPolicy> {
    Qleet {
        api: |client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes, and a namespace created, deleted or relabelled (it may select it).
pub fn notified_by() -> Triggers {
    Triggers::of::<TenantPolicy>().watches::<PartialObjectMeta<Namespace>>(|ctx, change| {
        if !change.deleted && !change.differs(|namespace| namespace.metadata.labels.clone()) {
            return Vec::new();
        }
        Target::all(ctx.caches.policies.state(), |_| true)
    })
}

/// Writes the policy's status when its selection or validity changed.
pub async fn reconcile(policy: Arc<TenantPolicy>, ctx: Arc<Context>) -> Result<Next> {
    ctx.caches.ready().await?;
    let namespaces: Vec<(String, BTreeMap<String, String>)> = ctx
        .caches
        .namespaces
        .state()
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            (name, n.metadata.labels.clone().unwrap_or_default())
        })
        .collect();
    let status = status_of(&policy, &namespaces);
    let api: Api<TenantPolicy> = Api::all(ctx.client.clone());
    let metrics = (&*ctx.metrics, CONTROLLER);
    let current = policy.status.as_ref();
    apply_status_if_changed(&api, &name_of(&*policy)?, current, &status, metrics).await?;
    Ok(Next::Done)
}

fn status_of(
    policy: &TenantPolicy,
    namespaces: &[(String, BTreeMap<String, String>)],
) -> TenantPolicyStatus {
    let generation = policy.metadata.generation;
    let previous = policy.status.clone().unwrap_or_default();
    let pairs = namespaces
        .iter()
        .map(|(name, labels)| (name.as_str(), labels));
    let (ready, selected) = match selected_namespaces(&policy.spec, pairs) {
        Ok(selected) => (
            Condition::ready(
                true,
                Reason::Accepted,
                format!("in force for {} management namespace(s)", selected.len()),
            ),
            selected,
        ),
        Err(message) => (
            Condition::ready(false, Reason::InvalidSelector, message),
            Vec::new(),
        ),
    };
    TenantPolicyStatus {
        conditions: qleetos_crds::merged(
            &previous.conditions,
            vec![ready.with_generation(generation)],
        ),
        observed_generation: generation,
        selected_namespaces: selected,
    }
}

#[cfg(test)]
mod tests {
    use qleetos_crds::TenantPolicySpec;

    use super::*;

    #[test]
    fn an_unchanged_policy_gets_the_status_it_has() {
        let spec = TenantPolicySpec {
            namespaces: vec!["team-a".into()],
            ..serde_json::from_value(serde_json::json!({})).expect("an empty spec")
        };
        let mut policy = TenantPolicy::new("team-a", spec);
        policy.metadata.generation = Some(3);
        let namespaces = vec![("team-a".to_owned(), BTreeMap::new())];
        let first = status_of(&policy, &namespaces);
        assert_eq!(first.selected_namespaces, ["team-a"]);
        policy.status = Some(first.clone());
        assert_eq!(
            status_of(&policy, &namespaces),
            first,
            "would be rewritten on every pass"
        );
    }
}
