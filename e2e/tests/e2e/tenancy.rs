//! Issue 7 scenarios, written as an attacker or a careless tenant would act: escaping the
//! namespace, escalating privileges, bypassing placement, taking over objects.

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use qleetos_crds::{Conditions, TenantPolicy, WorkloadInstance};
use qleetos_e2e::environment::{Environment, ensure_namespace};
use serde_json::{Value, json};

use crate::support::*;

fn config_map(name: &str, namespace: Option<&str>, value: &str) -> Value {
    let mut manifest = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"value": value}
    });
    if let Some(namespace) = namespace {
        manifest["metadata"]["namespace"] = json!(namespace);
    }
    manifest
}

fn eu() -> Value {
    json!({"runtimeSelector": {"matchLabels": {"qleetos.io/zone": "eu"}}})
}

pub async fn apply_policy(client: &Client, policy: Value) -> Result<()> {
    let api: Api<TenantPolicy> = Api::all(client.clone());
    let name = policy["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    api.patch(
        &name,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&policy),
    )
    .await?;
    Ok(())
}

/// The only instance of a Workload, once it reports `reason` at its current generation.
async fn instance_with_reason(
    client: &Client,
    namespace: &str,
    workload: &str,
    reason: &str,
) -> Result<WorkloadInstance> {
    eventually(
        &format!("instance of {namespace}/{workload} with reason {reason}"),
        TIMEOUT,
        || async {
            let instances = instances_of(client, namespace, workload).await?;
            let [instance] = instances.as_slice() else {
                bail!("{} instances", instances.len());
            };
            let status = instance.status.clone().unwrap_or_default();
            match status.condition(qleetos_crds::READY) {
                Some(c)
                    if c.reason == reason
                        && status.observed_generation == instance.metadata.generation =>
                {
                    Ok(Some(instance.clone()))
                }
                other => bail!("Ready condition {other:?}"),
            }
        },
    )
    .await
}

fn ready_message(instance: &WorkloadInstance) -> String {
    instance
        .status
        .as_ref()
        .and_then(|s| s.condition(qleetos_crds::READY))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Warning Events about `name` in `namespace` of the management cluster.
async fn warnings_about(client: &Client, namespace: &str, name: &str) -> Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    Ok(events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

pub async fn tenant_cannot_escalate_or_leave_its_namespace(env: &Environment) -> Result<()> {
    let (ns, client) = ("team-escape", env.management_client().await?);
    ensure_namespace(&client, "team-other").await?;
    let escalate = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "team-escape-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]
    });
    let manifests = vec![
        config_map("harmless", None, "ok"),
        escalate,
        config_map("in-kube-system", Some("kube-system"), "pwned"),
        config_map("in-other-tenant", Some("team-other"), "pwned"),
    ];
    apply_workload(&client, ns, &workload("escape", manifests, eu())).await?;
    let instance = instance_with_reason(&client, ns, "escape", "TenancyViolation").await?;
    let message = ready_message(&instance);
    for expected in [
        "ClusterRoleBinding",
        "ClusterScopedKind",
        "kube-system",
        "team-other",
        "TargetNamespace",
        "nothing applied",
    ] {
        ensure!(
            message.contains(expected),
            "violation message lacks {expected:?}: {message}"
        );
    }
    wait_workload_not_ready(&client, ns, "escape", "PlacementFailed").await?;
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    ensure!(
        Api::<ClusterRoleBinding>::all(eu_west.clone())
            .get_opt("team-escape-admin")
            .await?
            .is_none(),
        "the ClusterRoleBinding reached the runtime"
    );
    for (namespace, name) in [
        ("kube-system", "in-kube-system"),
        ("team-other", "in-other-tenant"),
        (ns, "harmless"),
    ] {
        ensure!(
            Api::<ConfigMap>::namespaced(eu_west.clone(), namespace)
                .get_opt(name)
                .await?
                .is_none(),
            "ConfigMap {namespace}/{name} was applied (a violation must apply nothing)"
        );
    }
    let warnings = warnings_about(&client, ns, &instance.name_any()).await?;
    ensure!(
        warnings
            .iter()
            .any(|e| e.reason.as_deref() == Some("TenancyViolation")),
        "no TenancyViolation Warning Event on the instance: {warnings:?}"
    );
    delete_workload(&client, ns, "escape").await?;
    Ok(())
}

pub async fn runtime_rbac_fences_the_tenant_identity(env: &Environment) -> Result<()> {
    let (ns, client) = ("team-fenced", env.management_client().await?);
    apply_policy(
        &client,
        json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": "team-fenced-cluster-kinds"},
            "spec": {
                "namespaces": [ns],
                "clusterKinds": [{"group": "rbac.authorization.k8s.io", "kind": "ClusterRoleBinding"}]
            }
        }),
    )
    .await?;
    let escalate = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "team-fenced-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]
    });
    let manifests = vec![config_map("settings", None, "v1"), escalate];
    apply_workload(&client, ns, &workload("fenced", manifests, eu())).await?;
    let instance = instance_with_reason(&client, ns, "fenced", "ApplyFailed").await?;
    let message = ready_message(&instance);
    ensure!(
        message.contains("forbidden") && message.contains("qleetos:tenant:team-fenced"),
        "the runtime's RBAC did not refuse the tenant identity: {message}"
    );
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    ensure!(
        Api::<ClusterRoleBinding>::all(eu_west.clone())
            .get_opt("team-fenced-admin")
            .await?
            .is_none(),
        "the ClusterRoleBinding reached the runtime"
    );
    let settings = Api::<ConfigMap>::namespaced(eu_west, ns)
        .get_opt("settings")
        .await?;
    ensure!(
        settings.is_some(),
        "the tenant's own ConfigMap was not applied as the tenant"
    );
    delete_workload(&client, ns, "fenced").await?;
    Api::<TenantPolicy>::all(client)
        .delete("team-fenced-cluster-kinds", &Default::default())
        .await?;
    Ok(())
}

pub async fn hand_made_instances_and_empty_selectors_stay_inside_the_policy(
    env: &Environment,
) -> Result<()> {
    let (ns, client) = ("team-eu-only", env.management_client().await?);
    apply_policy(
        &client,
        json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": "team-eu-only"},
            "spec": {"namespaces": [ns], "runtimes": {"regions": ["eu-west-1"]}}
        }),
    )
    .await?;
    ensure_namespace(&client, ns).await?;
    let hand_made: WorkloadInstance = serde_json::from_value(json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadInstance",
        "metadata": {"name": "sneaky", "namespace": ns},
        "spec": {"runtimeRef": {"name": "us-east"}, "manifests": [config_map("sneaky", None, "x")]}
    }))?;
    let instances: Api<WorkloadInstance> = Api::namespaced(client.clone(), ns);
    instances.create(&PostParams::default(), &hand_made).await?;
    let refused = eventually("hand-made instance refused", TIMEOUT, || async {
        let instance = instances.get("sneaky").await?;
        let status = instance.status.clone().unwrap_or_default();
        Ok(status
            .condition(qleetos_crds::READY)
            .filter(|c| c.reason == "TenancyViolation")
            .map(|c| c.message.clone()))
    })
    .await?;
    ensure!(
        refused.contains("us-east") && refused.contains("regions eu-west-1"),
        "runtime violation message: {refused}"
    );
    let us_east = env.runtime("us-east").expect("us-east").client().await?;
    ensure!(
        Api::<ConfigMap>::namespaced(us_east.clone(), ns)
            .get_opt("sneaky")
            .await?
            .is_none(),
        "the hand-made instance reached a forbidden runtime"
    );

    apply_workload(
        &client,
        ns,
        &workload(
            "everywhere",
            vec![config_map("everywhere", None, "x")],
            json!({"runtimeSelector": {}, "strategy": "AllMatching"}),
        ),
    )
    .await?;
    wait_workload_ready(&client, ns, "everywhere").await?;
    let placed = placed_on(&instances_of(&client, ns, "everywhere").await?);
    ensure!(
        placed.iter().all(|r| r != "us-east") && placed.contains(&"eu-west".to_owned()),
        "runtimeSelector {{}} placed outside the policy: {placed:?}"
    );
    ensure!(
        Api::<ConfigMap>::namespaced(us_east, ns)
            .get_opt("everywhere")
            .await?
            .is_none(),
        "runtimeSelector {{}} reached us-east"
    );
    instances.delete("sneaky", &Default::default()).await?;
    delete_workload(&client, ns, "everywhere").await?;
    Api::<TenantPolicy>::all(client)
        .delete("team-eu-only", &Default::default())
        .await?;
    Ok(())
}

pub async fn two_workloads_rendering_one_object_conflict(env: &Environment) -> Result<()> {
    let (ns, client) = ("team-overlap", env.management_client().await?);
    apply_workload(
        &client,
        ns,
        &workload("first", vec![config_map("shared", None, "first")], eu()),
    )
    .await?;
    wait_workload_ready(&client, ns, "first").await?;
    apply_workload(
        &client,
        ns,
        &workload("second", vec![config_map("shared", None, "second")], eu()),
    )
    .await?;
    let instance = instance_with_reason(&client, ns, "second", "Conflict").await?;
    let message = ready_message(&instance);
    ensure!(
        message.contains("ConfigMap team-overlap/shared")
            && message.contains("belongs to WorkloadInstance team-overlap/first"),
        "conflict message does not name the owner: {message}"
    );
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(eu_west, ns);
    let live = config_maps.get("shared").await?;
    ensure!(
        live.data
            .unwrap_or_default()
            .get("value")
            .map(String::as_str)
            == Some("first"),
        "the second Workload overwrote the first one's object"
    );
    apply_policy(
        &client,
        json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": "team-overlap-adopt"},
            "spec": {"namespaces": [ns], "allowAdoption": true}
        }),
    )
    .await?;
    let mut adopt = config_map("shared", None, "second");
    adopt["metadata"]["annotations"] = json!({"qleetos.io/adopt": "true"});
    apply_workload(&client, ns, &workload("second", vec![adopt], eu())).await?;
    instance_with_reason(&client, ns, "second", "Conflict").await?;
    let live = config_maps.get("shared").await?;
    ensure!(
        live.data
            .unwrap_or_default()
            .get("value")
            .map(String::as_str)
            == Some("first"),
        "adoption took over another instance's object"
    );
    Api::<TenantPolicy>::all(client.clone())
        .delete("team-overlap-adopt", &Default::default())
        .await?;
    delete_workload(&client, ns, "second").await?;
    eventually("second Workload gone", TIMEOUT, || async {
        Ok(instances_of(&client, ns, "second")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    ensure!(
        config_maps.get_opt("shared").await?.is_some(),
        "deleting the conflicting Workload removed the other one's object"
    );
    delete_workload(&client, ns, "first").await?;
    Ok(())
}

pub async fn unlabelled_objects_are_adopted_only_when_allowed(env: &Environment) -> Result<()> {
    let (ns, client) = ("team-legacy", env.management_client().await?);
    let eu_west = env.runtime("eu-west").expect("eu-west").client().await?;
    ensure_namespace(&eu_west, ns).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(eu_west.clone(), ns);
    let legacy: ConfigMap = serde_json::from_value(config_map("legacy", Some(ns), "hand-made"))?;
    config_maps.create(&PostParams::default(), &legacy).await?;

    apply_workload(
        &client,
        ns,
        &workload(
            "takeover",
            vec![config_map("legacy", None, "qleetos")],
            eu(),
        ),
    )
    .await?;
    // The runtime namespace was made by hand, not by QleetOS for this tenant: refused whole.
    let instance = instance_with_reason(&client, ns, "takeover", "TenancyViolation").await?;
    ensure!(
        ready_message(&instance).contains("(NamespaceOwner)"),
        "namespace owner message: {}",
        ready_message(&instance)
    );
    let namespace = Api::<Namespace>::all(eu_west.clone()).get(ns).await?;
    ensure!(
        !namespace.labels().contains_key("qleetos.io/tenant"),
        "a namespace QleetOS did not create was labelled as the tenant's: {:?}",
        namespace.metadata.labels
    );
    // Named exactly with adoption allowed, the namespace becomes the tenant's; the object in
    // it is still not taken over without its own opt-in.
    apply_policy(
        &client,
        json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": "team-legacy-namespace"},
            "spec": {"namespaces": [ns], "targetNamespaces": [ns], "allowAdoption": true}
        }),
    )
    .await?;
    let instance = instance_with_reason(&client, ns, "takeover", "Conflict").await?;
    ensure!(
        ready_message(&instance).contains("not created by QleetOS"),
        "conflict message: {}",
        ready_message(&instance)
    );
    Api::<TenantPolicy>::all(client.clone())
        .delete("team-legacy-namespace", &Default::default())
        .await?;
    let live = config_maps.get("legacy").await?;
    ensure!(
        live.data
            .clone()
            .unwrap_or_default()
            .get("value")
            .map(String::as_str)
            == Some("hand-made")
            && !live.labels().contains_key("qleetos.io/instance-uid"),
        "the unlabelled object was taken over: {:?}",
        live.metadata
    );

    apply_policy(
        &client,
        json!({
            "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
            "metadata": {"name": "team-legacy-adopt"},
            "spec": {"namespaces": [ns], "allowAdoption": true}
        }),
    )
    .await?;
    let mut adopt = config_map("legacy", None, "qleetos");
    adopt["metadata"]["annotations"] = json!({"qleetos.io/adopt": "true"});
    apply_workload(&client, ns, &workload("takeover", vec![adopt], eu())).await?;
    wait_workload_ready(&client, ns, "takeover").await?;
    let adopted = config_maps.get("legacy").await?;
    ensure!(
        adopted
            .data
            .unwrap_or_default()
            .get("value")
            .map(String::as_str)
            == Some("qleetos"),
        "the adopted object was not updated"
    );
    delete_workload(&client, ns, "takeover").await?;
    eventually(
        "adopted object removed with its Workload",
        TIMEOUT,
        || async { Ok(config_maps.get_opt("legacy").await?.is_none().then_some(())) },
    )
    .await?;
    Api::<TenantPolicy>::all(client)
        .delete("team-legacy-adopt", &Default::default())
        .await?;
    Ok(())
}

pub async fn malformed_tenant_policies_are_rejected_at_admission(env: &Environment) -> Result<()> {
    let client = env.management_client().await?;
    let cases = [
        (
            json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
                   "metadata": {"name": "selects-nothing"}, "spec": {"targetNamespaces": ["team-a"]}}),
            "a TenantPolicy needs namespaces or a namespaceSelector",
        ),
        (
            json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
                   "metadata": {"name": "bad-target"}, "spec": {"namespaces": ["team-a"], "targetNamespaces": ["Team_A/*"]}}),
            "targetNamespaces",
        ),
    ];
    for (policy, expected) in cases {
        match apply_policy(&client, policy.clone()).await {
            Ok(()) => bail!("{} was accepted", policy["metadata"]["name"]),
            Err(error) => {
                let text = format!("{error:#}");
                ensure!(text.contains(expected), "expected {expected:?} in: {text}");
            }
        }
    }
    Ok(())
}
