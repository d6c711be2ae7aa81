//! What an instance asks for that its namespace may not have, checked before anything is
//! created for it in any runtime (support services included): hosts it was not granted or
//! another namespace holds, manifests no tenant may write (CertificateRequests, QleetOS's
//! own labels, inline Secrets unless allowed), and the namespace's caps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use qleetos_crds::Reason;
use qleetos_crds::{Workload, WorkloadInstance};

use super::Hold;
use crate::context::{Context, Next};
use crate::hosts::{self, Claim};
use crate::tenancy::Fence;

/// How often an instance whose host another namespace holds looks again (the holder may go).
const HOST_RETRY: Duration = Duration::from_secs(15);

/// Every check, in the order a user fixes them.
pub(super) fn admit(
    instance: &WorkloadInstance,
    ctx: &Context,
    fence: &Fence,
) -> Result<(), Box<Hold>> {
    check_limits(instance, ctx, fence)?;
    check_manifests(instance, fence)?;
    check_hosts(instance, ctx, fence)
}

fn refused(reason: Reason, problems: &[String]) -> Box<Hold> {
    Hold::refused(reason, format!("nothing applied: {}", problems.join("; ")))
}

fn check_manifests(instance: &WorkloadInstance, fence: &Fence) -> Result<(), Box<Hold>> {
    let mut problems = Vec::new();
    for (index, manifest) in instance.spec.manifests.iter().enumerate() {
        let name = format!(
            "{} {}",
            manifest.kind().unwrap_or_default(),
            manifest.name().unwrap_or_default()
        );
        if let Some((rule, why)) = hosts::forbidden_in_manifest(manifest) {
            problems.push(format!("manifest #{index}: {name}: {why} ({rule})"));
        }
        let is_secret = manifest.kind() == Some("Secret") && manifest.api_version() == Some("v1");
        if is_secret && !fence.allows_inline_secrets() {
            problems.push(format!(
                "manifest #{index}: {name}: a Secret written in a Workload is readable by anyone who may read Workloads; refer to a Secret that exists in the runtime namespace (a service dependency's connection Secret, or one your secret tooling writes there), or ask operations for a TenantPolicy with allowInlineSecrets (InlineSecret)"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(refused(Reason::TenancyViolation, &problems))
    }
}

fn check_limits(
    instance: &WorkloadInstance,
    ctx: &Context,
    fence: &Fence,
) -> Result<(), Box<Hold>> {
    let limits = fence.limits();
    let manifests = instance.spec.manifests.len();
    if let Some(max) = limits.max_manifests
        && manifests > usize::try_from(max).unwrap_or(0)
    {
        let message = format!(
            "the Workload has {manifests} manifests; namespace {} may have at most {max} per Workload (TenantPolicy limits.maxManifests)",
            fence.namespace()
        );
        return Err(refused(Reason::LimitExceeded, &[message]));
    }
    let Some(max) = limits.max_placements else {
        return Ok(());
    };
    let position = placement_position(instance, ctx);
    if position >= usize::try_from(max).unwrap_or(0) {
        let message = format!(
            "namespace {} may have at most {max} placements (TenantPolicy limits.maxPlacements); this one is past the cap",
            fence.namespace()
        );
        return Err(refused(Reason::LimitExceeded, &[message]));
    }
    Ok(())
}

/// How many instances of the namespace came before this one (oldest first), so the cap
/// keeps the placements that were there first.
fn placement_position(instance: &WorkloadInstance, ctx: &Context) -> usize {
    let namespace = instance.namespace().unwrap_or_default();
    let key = |i: &WorkloadInstance| {
        (
            i.metadata.creation_timestamp.as_ref().map(|t| t.0),
            i.name_any(),
        )
    };
    let mine = key(instance);
    ctx.caches
        .instances
        .state()
        .iter()
        .filter(|i| i.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|i| i.metadata.uid != instance.metadata.uid && key(i) < mine)
        .count()
}

fn check_hosts(instance: &WorkloadInstance, ctx: &Context, fence: &Fence) -> Result<(), Box<Hold>> {
    let claimed = hosts::claimed(instance.spec.expose.as_ref(), &instance.spec.manifests);
    if claimed.is_empty() {
        return Ok(());
    }
    let refused_hosts: Vec<String> = claimed
        .iter()
        .filter_map(|h| fence.check_host(h).err())
        .map(|v| v.to_string())
        .collect();
    if !refused_hosts.is_empty() {
        return Err(refused(Reason::TenancyViolation, &refused_hosts));
    }
    let namespace = fence.namespace().to_owned();
    let owner = workload_of(instance, ctx);
    let mine = Claim {
        namespace: &namespace,
        name: &owner.1,
        created: owner.0.as_ref(),
        hosts: claimed,
    };
    let others = other_claims(ctx, &mine);
    let others: Vec<Claim<'_>> = others.iter().map(OwnedClaim::borrow).collect();
    let taken = hosts::taken(&mine, &others);
    if taken.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = taken
        .iter()
        .map(|host| format!("host {host} is served by another namespace"))
        .collect();
    let mut hold = refused(Reason::HostConflict, &problems);
    hold.next = Next::After(HOST_RETRY);
    Err(hold)
}

/// The claim's time and name: the instance's Workload's (placements of one Workload claim
/// when it was created, not when each was placed), or the instance's own when made by hand.
fn workload_of(instance: &WorkloadInstance, ctx: &Context) -> (Option<Time>, String) {
    let namespace = instance.namespace().unwrap_or_default();
    let workload = instance.spec.workload_ref.as_ref().and_then(|w| {
        ctx.caches
            .workloads
            .get(&ObjectRef::<Workload>::new(&w.name).within(&namespace))
    });
    match workload {
        Some(w) => (w.metadata.creation_timestamp.clone(), w.name_any()),
        None => (
            instance.metadata.creation_timestamp.clone(),
            instance.name_any(),
        ),
    }
}

struct OwnedClaim {
    namespace: String,
    name: String,
    created: Option<Time>,
    hosts: BTreeSet<String>,
}

impl OwnedClaim {
    fn borrow(&self) -> Claim<'_> {
        Claim {
            namespace: &self.namespace,
            name: &self.name,
            created: self.created.as_ref(),
            hosts: self.hosts.clone(),
        }
    }
}

/// The claims of other namespaces' Workloads (and hand-made instances) on hosts overlapping
/// `mine`, each kept only for the hosts its own namespace was granted: a claim the fence
/// refuses takes nothing from anyone.
fn other_claims(ctx: &Context, mine: &Claim<'_>) -> Vec<OwnedClaim> {
    let workloads = ctx.caches.workloads.state();
    let instances = ctx.caches.instances.state();
    let rendered = rendered_hosts(&instances);
    let by_hand = instances.iter().filter(|i| i.spec.workload_ref.is_none());
    let claimants = workloads
        .iter()
        .map(|w| (&w.metadata, w.spec.expose.as_ref(), &w.spec.manifests))
        .chain(by_hand.map(|i| (&i.metadata, i.spec.expose.as_ref(), &i.spec.manifests)));
    let mut claims = Vec::new();
    for (metadata, expose, manifests) in claimants {
        let namespace = metadata.namespace.clone().unwrap_or_default();
        if namespace == mine.namespace {
            continue;
        }
        let name = metadata.name.clone().unwrap_or_default();
        let charted = rendered
            .get(&(namespace.clone(), name.clone()))
            .into_iter()
            .flatten();
        let overlapping: BTreeSet<String> = hosts::claimed(expose, manifests)
            .into_iter()
            .chain(charted.cloned())
            .filter(|h| mine.hosts.iter().any(|m| hosts::overlap(h, m)))
            .collect();
        claims.extend(granted_claim(
            ctx,
            OwnedClaim {
                namespace,
                name,
                created: metadata.creation_timestamp.clone(),
                hosts: overlapping,
            },
        ));
    }
    claims
}

/// (namespace, Workload or hand-made instance) → the hosts its charts rendered, from its
/// instances' status: a chart's hosts are only known once rendered.
fn rendered_hosts(instances: &[Arc<WorkloadInstance>]) -> BTreeMap<(String, String), Vec<String>> {
    let mut rendered: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for instance in instances {
        let Some(chart) = instance.status.as_ref().and_then(|s| s.chart.as_ref()) else {
            continue;
        };
        let owner = instance
            .spec
            .workload_ref
            .as_ref()
            .map_or_else(|| instance.name_any(), |w| w.name.clone());
        let key = (instance.namespace().unwrap_or_default(), owner);
        rendered
            .entry(key)
            .or_default()
            .extend(chart.hosts.iter().cloned());
    }
    rendered
}

/// `claim` with only the hosts its own namespace was granted; `None` when none is left.
fn granted_claim(ctx: &Context, mut claim: OwnedClaim) -> Option<OwnedClaim> {
    if claim.hosts.is_empty() {
        return None;
    }
    let fence = ctx
        .caches
        .fence(&claim.namespace, &ctx.settings.system_namespace);
    claim.hosts.retain(|h| fence.check_host(h).is_ok());
    (!claim.hosts.is_empty()).then_some(claim)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use qleetos_crds::TenantPolicy;
    use serde_json::json;

    use super::*;

    fn instance(manifests: serde_json::Value) -> WorkloadInstance {
        serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadInstance",
            "metadata": {"name": "web-eu", "namespace": "team-a"},
            "spec": {"runtimeRef": {"name": "eu"}, "manifests": manifests}
        }))
        .expect("instance")
    }

    fn fence(policies: &[TenantPolicy]) -> Fence {
        Fence::for_namespace(policies, "team-a", &BTreeMap::new(), "qleetos-system")
    }

    fn message(hold: &Hold) -> &str {
        &hold.condition.message
    }

    #[test]
    fn inline_secrets_wait_for_a_policy_allowing_them() {
        let secret =
            instance(json!([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}}]));
        let hold = check_manifests(&secret, &fence(&[])).expect_err("refused");
        assert_eq!(hold.condition.reason, "TenancyViolation");
        assert!(
            message(&hold).contains("manifest #0: Secret db"),
            "{}",
            message(&hold)
        );
        assert!(
            message(&hold).ends_with("(InlineSecret)"),
            "{}",
            message(&hold)
        );
        let allowing: TenantPolicy = serde_json::from_value(json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": "inline"},
            "spec": {"namespaces": ["team-a"], "allowInlineSecrets": true}
        }))
        .expect("policy");
        assert!(check_manifests(&secret, &fence(&[allowing])).is_ok());
    }

    #[test]
    fn reserved_labels_and_certificate_requests_name_their_rule() {
        let manifests = instance(json!([
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
             "metadata": {"name": "route", "labels": {"qleetos.io/dns": "published"}}},
            {"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest", "metadata": {"name": "csr"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fine"}}
        ]));
        let hold = check_manifests(&manifests, &fence(&[])).expect_err("refused");
        let text = message(&hold);
        assert!(
            text.starts_with("nothing applied: manifest #0: Ingress route"),
            "{text}"
        );
        assert!(text.contains("(ReservedLabel)"), "{text}");
        assert!(
            text.contains("manifest #1: CertificateRequest csr"),
            "{text}"
        );
        assert!(!text.contains("ConfigMap"), "{text}");
    }
}
