//! Writes each TenantPolicy's status: the management namespaces it selects, or why its
//! selector is invalid. The notifier's watches keep the policy and namespace caches current;
//! what a policy change means for Workloads and instances is in their Qleets' triggers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use qleetos_crds::Reason;
use qleetos_crds::{Condition, TenantPolicy, TenantPolicyStatus};

use crate::context::Context;
use crate::controllers::apply_status;
use crate::tenancy::selected_namespaces;

/// How often the statuses are compared with the caches (writes happen only on a difference).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Writes the status of every policy whose selection or validity changed (SSA of the same
/// content from several replicas is harmless).
pub async fn run(ctx: Arc<Context>) {
    if ctx.caches.ready().await.is_err() {
        return;
    }
    loop {
        let namespaces = ctx.caches.namespaces.state();
        let labelled: Vec<(String, BTreeMap<String, String>)> = namespaces
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                (name, n.metadata.labels.clone().unwrap_or_default())
            })
            .collect();
        for policy in ctx.caches.policies.state() {
            let status = status_of(&policy, &labelled);
            if policy.status.as_ref() != Some(&status) {
                let api: Api<TenantPolicy> = Api::all(ctx.client.clone());
                let name = policy.metadata.name.clone().unwrap_or_default();
                if let Err(error) = apply_status(&api, &name, &status).await {
                    tracing::warn!(%error, policy = %name, "writing TenantPolicy status");
                }
            }
        }
        tokio::time::sleep(STATUS_EVERY).await;
    }
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
            "would be rewritten every second"
        );
    }
}
