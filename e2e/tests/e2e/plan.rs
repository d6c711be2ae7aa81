//! Plans (issue 27): `qleetctl plan` and the gateway's `.../plan` compute what applying a
//! Workload would do with the real operator and runtimes, and change nothing anywhere. A
//! Workload in an empty region plans the cluster to provision, the support services to
//! and back-end services to install and the objects to create (a WorkloadServiceDependency
//! planned beside the Workload); an applied Workload plans as unchanged; an image change
//! shows the field diff the runtime's server-side dry run (as the tenant) produced; a Secret's
//! values never appear; the tenancy fence refuses what it would refuse on apply; RBAC decides
//! who may plan.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use qleetos_crds::{
    PlanAction, PlannedPlacement, ServiceProfile, SupportService, SupportServiceProfile,
    TenantPolicy, WorkloadPlan, WorkloadPlanStatus,
};
use qleetos_e2e::environment::Environment;
use qleetos_e2e::gateway::GatewayProcess;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::gateway::{JSON, call, service_account_token};
use crate::provisioning::{apply_runtime_profile, delete_runtime_profile, local_profile};
use crate::qleetctl::expect;
use crate::support::*;

const NS: &str = "plan-e2e";
const POLICY: &str = "e2e-plan";
const PLAN_LABEL: &str = "qleetos.test/plan";
const PROFILE: &str = "plan-local";
const EMPTY_REGION: &str = "plan-south-1";
const PLANNED_RUNTIME: &str = "plan-local-plan-south-1";
const CAPABILITY: &str = "plan-widgets";
const LEDGER: &str = "plan-ledger";
const PASSWORD: &str = "s3cr3t-plan-value";
const NEW_PASSWORD: &str = "n3w-plan-value";

pub async fn plans_change_nothing_show_field_diffs_and_never_secret_values(
    env: &Environment,
    gateway: &GatewayProcess,
) -> Result<()> {
    let client = env.management_client().await?;
    set_up(&client).await?;
    plans_an_empty_region(env, &client).await?;

    apply_workload(&client, NS, &shop("nginx:1.0", PASSWORD, true, json!({}))).await?;
    wait_workload_ready(&client, NS, "shop").await?;
    let rules = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get"]},
        {"apiGroups": ["qleetos.io"], "resources": ["workloadplans"],
         "verbs": ["create", "get", "delete"]}]);
    let token = service_account_token(&client, NS, "planner", rules, None).await?;
    let (applied, body) = gateway_plan(gateway, &token, None, "the applied spec").await?;
    ensure!(
        applied.summary.as_deref() == Some("no change"),
        "the applied spec plans as unchanged: {body}"
    );

    plans_an_image_change(env, gateway, &token).await?;
    refuses_what_apply_would_refuse(gateway, &token).await?;

    let rules =
        json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get"]}]);
    let reader = service_account_token(&client, NS, "reader", rules, None).await?;
    let path = format!("/v1/namespaces/{NS}/workloads/shop/plan");
    let (code, body) = call(gateway, Some(&reader), Method::POST, &path, None).await?;
    ensure!(
        code == StatusCode::FORBIDDEN,
        "planning needs create on workloadplans: {code} {body}"
    );

    delete_workload(&client, NS, "shop").await?;
    eventually("shop's instances removed", TIMEOUT, || async {
        Ok(instances_of(&client, NS, "shop")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    tear_down(&client).await
}

/// A namespace of its own with a TenantPolicy allowing inline Secrets and clusters on demand,
/// a runtime profile for an empty region and a support profile no runtime has installed.
async fn set_up(client: &Client) -> Result<()> {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NS, "labels": {PLAN_LABEL: "true"}}});
    Api::<Namespace>::all(client.clone())
        .patch(
            NS,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&namespace),
        )
        .await?;
    let policy = json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
        "metadata": {"name": POLICY},
        "spec": {"namespaceSelector": {"matchLabels": {PLAN_LABEL: "true"}},
                 "allowInlineSecrets": true}});
    Api::<TenantPolicy>::all(client.clone())
        .patch(
            POLICY,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&policy),
        )
        .await?;
    policy_selects(client, POLICY, NS).await?;
    apply_runtime_profile(client, &local_profile(PROFILE, EMPTY_REGION, 1)).await?;
    let widgets = json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "SupportServiceProfile",
        "metadata": {"name": CAPABILITY},
        "spec": {"provides": [CAPABILITY], "namespace": CAPABILITY, "manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "widgets"}}]}});
    Api::<SupportServiceProfile>::all(client.clone())
        .patch(
            CAPABILITY,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&widgets),
        )
        .await?;
    let ledger = json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "ServiceProfile",
        "metadata": {"name": LEDGER},
        "spec": {"manifests": [{"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "$(service.name)"}}],
                 "connection": {"values": {"LEDGER_URL": "http://$(service.name):9000"}}}});
    Api::<ServiceProfile>::all(client.clone())
        .patch(
            LEDGER,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&ledger),
        )
        .await?;
    Ok(())
}

async fn tear_down(client: &Client) -> Result<()> {
    Api::<ServiceProfile>::all(client.clone())
        .delete(LEDGER, &Default::default())
        .await?;
    Api::<SupportServiceProfile>::all(client.clone())
        .delete(CAPABILITY, &Default::default())
        .await?;
    delete_runtime_profile(client, PROFILE).await?;
    Api::<TenantPolicy>::all(client.clone())
        .delete(POLICY, &Default::default())
        .await?;
    Ok(())
}

/// Workload `shop`: a Deployment, a Service and a Secret (and a ConfigMap, `with_settings`),
/// in eu-west-1 only; `spec` is merged over that.
fn shop(image: &str, password: &str, with_settings: bool, spec: Value) -> Value {
    let mut manifests = web_manifests(1, image);
    manifests.push(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-db"},
        "stringData": {"password": password, "user": "shop"}}),
    );
    if with_settings {
        manifests.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "shop-settings"}, "data": {"theme": "dark"}}));
    }
    let mut workload = workload("shop", manifests, json!({"regions": ["eu-west-1"]}));
    workload["metadata"]["namespace"] = json!(NS);
    if let (Some(target), Some(extra)) = (workload["spec"].as_object_mut(), spec.as_object()) {
        target.extend(extra.clone());
    }
    workload
}

/// A new Workload in eu-west-1 and an empty region: the cluster to provision, the support
/// service to install on both and the objects to create; nothing created anywhere.
async fn plans_an_empty_region(env: &Environment, client: &Client) -> Result<()> {
    let placement = json!({"placement": {"regions": ["eu-west-1", EMPTY_REGION],
        "provision": "IfNeeded"}, "needs": [CAPABILITY]});
    let file = env.dir().join("plan-shop.yaml");
    let ledger = json!({"apiVersion": "qleetos.io/v1alpha1", "kind": "WorkloadServiceDependency",
        "metadata": {"name": "ledger", "namespace": NS},
        "spec": {"workloads": ["shop"], "profileRef": {"name": LEDGER}}});
    let shop = shop("nginx:1.0", PASSWORD, true, placement);
    std::fs::write(&file, format!("{shop}\n---\n{ledger}\n"))?;
    let file = file.to_string_lossy();
    let kubeconfig = env.management.kubeconfig_path();
    let run = expect(kubeconfig, &["plan", "-f", &file, "-o", "json"], 0).await?;
    never_shows_the_password(&run.stdout, "qleetctl plan -o json")?;
    let plan: Value = serde_json::from_str(&run.stdout).context("the plan as JSON")?;
    ensure!(
        plan["kind"] == "WorkloadPlan" && plan.get("spec").is_none(),
        "{plan}"
    );
    let status: WorkloadPlanStatus = serde_json::from_value(plan["status"].clone())?;
    let new = placement_on(&status, PLANNED_RUNTIME)?;
    ensure!(
        new.action == PlanAction::Provision && new.profile.as_deref() == Some(PROFILE),
        "the empty region's cluster is provisioned from {PROFILE}: {new:?}"
    );
    let eu = placement_on(&status, "eu-west")?;
    for placement in [new, eu] {
        let services: Vec<_> = placement
            .support_services
            .iter()
            .map(|s| (s.profile.as_str(), s.dependency.as_deref(), s.action))
            .collect();
        ensure!(
            services
                == [
                    (CAPABILITY, None, PlanAction::Install),
                    (LEDGER, Some("ledger"), PlanAction::Install)
                ],
            "the support service and the back-end service are installed: {placement:?}"
        );
    }
    // Where the runtime exists, the dry run also creates the ledger's connection Secret.
    for (placement, expected) in [
        (new, &["ConfigMap", "Deployment", "Secret", "Service"][..]),
        (
            eu,
            &["ConfigMap", "Deployment", "Secret", "Secret", "Service"][..],
        ),
    ] {
        let mut created: Vec<_> = placement
            .objects
            .iter()
            .filter(|o| o.action == PlanAction::Create)
            .map(|o| o.kind.as_str())
            .collect();
        created.sort_unstable();
        ensure!(
            created == expected,
            "every object is created on {}: {placement:?}",
            placement.runtime
        );
    }
    let message = eu.message.as_deref().unwrap_or_default();
    ensure!(
        message.contains("back-end services not running yet (ledger)"),
        "eu-west says what is not known yet: {eu:?}"
    );
    let table = expect(kubeconfig, &["plan", "-f", &file], 0).await?.stdout;
    let heading =
        format!("runtime {PLANNED_RUNTIME} ({EMPTY_REGION}): provision from profile {PROFILE}");
    ensure!(
        table.contains(&heading) && table.contains("install   back-end service"),
        "the tree: {table}"
    );
    never_shows_the_password(&table, "qleetctl plan")?;
    nothing_was_created(env, client).await
}

/// No runtime, support service, instance or runtime namespace came from the plans, and the
/// plans themselves are gone.
async fn nothing_was_created(env: &Environment, client: &Client) -> Result<()> {
    let runtimes: Api<qleetos_crds::KubernetesRuntime> = Api::all(client.clone());
    ensure!(
        runtimes.get_opt(PLANNED_RUNTIME).await?.is_none(),
        "a plan provisioned a runtime"
    );
    let services: Api<SupportService> = Api::all(client.clone());
    let installed: Vec<_> = services
        .list(&Default::default())
        .await?
        .into_iter()
        .filter(|s| [CAPABILITY, LEDGER].contains(&s.spec.profile_ref.name.as_str()))
        .collect();
    ensure!(installed.is_empty(), "a plan installed {installed:?}");
    ensure!(
        instances_of(client, NS, "shop").await?.is_empty(),
        "a plan placed shop"
    );
    let eu = eu_west(env).await?;
    let namespaces: Api<Namespace> = Api::all(eu);
    ensure!(
        namespaces.get_opt(NS).await?.is_none(),
        "a plan created namespace {NS} in eu-west"
    );
    let plans: Api<WorkloadPlan> = Api::namespaced(client.clone(), NS);
    ensure!(
        plans.list(&Default::default()).await?.items.is_empty(),
        "qleetctl left its plans"
    );
    Ok(())
}

/// A new image, a new password and the ConfigMap removed: the image's field diff, the
/// password's key without its value, the ConfigMap deleted, the Service unchanged; the
/// runtime still runs the old image and holds the old password.
async fn plans_an_image_change(
    env: &Environment,
    gateway: &GatewayProcess,
    token: &str,
) -> Result<()> {
    let changed = shop("nginx:1.1", NEW_PASSWORD, false, json!({}));
    let (status, body) = gateway_plan(gateway, token, Some(changed), "an image change").await?;
    never_shows_the_password(&body.to_string(), "the gateway's plan")?;
    let eu = placement_on(&status, "eu-west")?;
    let object = |kind: &str| {
        eu.objects
            .iter()
            .find(|o| o.kind == kind)
            .with_context(|| format!("no {kind} in {eu:?}"))
    };
    let deployment = object("Deployment")?;
    let image = deployment
        .changes
        .iter()
        .find(|c| c.path == "spec.template.spec.containers[0].image")
        .with_context(|| format!("no image change in {deployment:?}"))?;
    ensure!(
        deployment.action == PlanAction::Update
            && image.before.as_deref() == Some("\"nginx:1.0\"")
            && image.after.as_deref() == Some("\"nginx:1.1\""),
        "the image's field diff: {deployment:?}"
    );
    let secret = object("Secret")?;
    let keys: Vec<_> = secret
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.after.as_deref()))
        .collect();
    ensure!(
        secret.action == PlanAction::Update && keys == [("data.password", Some("(redacted)"))],
        "the password's key, never its value: {secret:?}"
    );
    ensure!(object("ConfigMap")?.action == PlanAction::Delete, "{eu:?}");
    ensure!(object("Service")?.action == PlanAction::Unchanged, "{eu:?}");
    let runtime = eu_west(env).await?;
    ensure!(
        deployment_image(&runtime, NS).await?.as_deref() == Some("nginx:1.0"),
        "the plan changed the image"
    );
    let live = Api::<Secret>::namespaced(runtime, NS)
        .get("shop-db")
        .await?;
    let password = live
        .data
        .unwrap_or_default()
        .remove("password")
        .map(|b| b.0);
    ensure!(
        password.as_deref() == Some(PASSWORD.as_bytes()),
        "the plan changed the Secret"
    );
    Ok(())
}

/// A manifest for another namespace is outside the fence: every object refused, saying why.
/// A privileged container breaks the namespace's Pod Security level (`baseline`): the
/// runtime's own admission refuses a Pod of the Deployment's template.
async fn refuses_what_apply_would_refuse(gateway: &GatewayProcess, token: &str) -> Result<()> {
    let mut fenced = shop("nginx:1.0", PASSWORD, true, json!({}));
    fenced["spec"]["manifests"]
        .as_array_mut()
        .context("manifests")?
        .push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "escape", "namespace": "kube-system"}}));
    let (status, body) = gateway_plan(gateway, token, Some(fenced), "outside the fence").await?;
    let eu = placement_on(&status, "eu-west")?;
    let message = eu.message.clone().unwrap_or_default();
    ensure!(
        message.starts_with("TenancyViolation") && message.contains("kube-system"),
        "the fence's verdict: {body}"
    );
    ensure!(
        eu.objects.iter().all(|o| o.action == PlanAction::Refused),
        "nothing would be applied: {body}"
    );

    let mut privileged = shop("nginx:1.0", PASSWORD, true, json!({}));
    privileged["spec"]["manifests"][0]["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
        json!({"privileged": true});
    let (status, body) = gateway_plan(gateway, token, Some(privileged), "a privileged pod").await?;
    let eu = placement_on(&status, "eu-west")?;
    let verdicts: Vec<_> = eu
        .objects
        .iter()
        .map(|o| (o.kind.as_str(), o.action))
        .collect();
    ensure!(
        verdicts.contains(&("Deployment", PlanAction::Refused))
            && verdicts.contains(&("Service", PlanAction::Unchanged)),
        "only the Deployment is refused: {body}"
    );
    let deployment = eu
        .objects
        .iter()
        .find(|o| o.kind == "Deployment")
        .context("Deployment")?;
    let message = deployment.message.clone().unwrap_or_default();
    ensure!(
        message.contains("PodSecurity") && message.contains("privileged"),
        "{message}"
    );
    Ok(())
}

/// The gateway's plan of Workload `shop` as `body` would make it (its current spec without).
async fn gateway_plan(
    gateway: &GatewayProcess,
    token: &str,
    body: Option<Value>,
    what: &str,
) -> Result<(WorkloadPlanStatus, Value)> {
    let path = format!("/v1/namespaces/{NS}/workloads/shop/plan");
    let body = body.map(|b| (JSON, b));
    let (code, answer) = call(gateway, Some(token), Method::POST, &path, body).await?;
    ensure!(code == StatusCode::OK, "plan of {what}: {code} {answer}");
    Ok((serde_json::from_value(answer.clone())?, answer))
}

/// A client of runtime eu-west, where the trials' Workloads run.
async fn eu_west(env: &Environment) -> Result<Client> {
    Ok(env
        .runtime("eu-west")
        .context("runtime eu-west")?
        .client()
        .await?)
}

fn placement_on<'a>(status: &'a WorkloadPlanStatus, runtime: &str) -> Result<&'a PlannedPlacement> {
    status
        .placements
        .iter()
        .find(|p| p.runtime == runtime)
        .with_context(|| format!("no placement on {runtime} in {status:?}"))
}

fn never_shows_the_password(text: &str, what: &str) -> Result<()> {
    for secret in [PASSWORD, NEW_PASSWORD] {
        // A ByteString serializes as the base64 the API server stores.
        let encoded = serde_json::to_value(k8s_openapi::ByteString(secret.as_bytes().to_vec()))?;
        let encoded = encoded.as_str().unwrap_or_default();
        ensure!(
            !text.contains(secret) && !text.contains(encoded),
            "{what} shows a Secret's value"
        );
    }
    Ok(())
}

const GATED_NS: &str = "approve-e2e";

/// `spec.approval: Required`: nothing is placed until the plan is approved (with qleetctl),
/// a change waits as a pending plan showing its image diff while the runtime keeps the
/// approved image, an approval of an older generation is refused (by the gateway, and as an
/// annotation), and approving the current plan through the gateway applies exactly it.
pub async fn approval_holds_a_change_until_its_plan_is_approved(
    env: &Environment,
    gateway: &GatewayProcess,
) -> Result<()> {
    let client = env.management_client().await?;
    let gated = |image: &str| {
        let mut gated = workload(
            "gated",
            web_manifests(1, image),
            json!({"regions": ["eu-west-1"]}),
        );
        gated["spec"]["approval"] = json!("Required");
        gated
    };
    apply_workload(&client, GATED_NS, &gated("nginx:1.0")).await?;
    let pending = pending_plan(&client, 1).await?;
    ensure!(
        pending
            .placements
            .iter()
            .flat_map(|p| &p.objects)
            .all(|o| o.action == PlanAction::Create),
        "the first plan creates everything: {pending:?}"
    );
    ensure!(
        instances_of(&client, GATED_NS, "gated").await?.is_empty(),
        "placed before approval"
    );

    let kubeconfig = env.management.kubeconfig_path();
    let approved = expect(kubeconfig, &["approve", "gated", "-n", GATED_NS], 0).await?;
    ensure!(
        approved
            .stdout
            .contains("approved the plan of generation 1"),
        "{}",
        approved.stdout
    );
    wait_workload_ready(&client, GATED_NS, "gated").await?;
    crate::gateway::wait_runtime_image(env, "eu-west", GATED_NS, "nginx:1.0").await?;

    apply_workload(&client, GATED_NS, &gated("nginx:2.0")).await?;
    let pending = pending_plan(&client, 2).await?;
    let image_change = pending
        .placements
        .iter()
        .flat_map(|p| &p.objects)
        .flat_map(|o| &o.changes)
        .any(|c| {
            c.path.ends_with("containers[0].image") && c.after.as_deref() == Some("\"nginx:2.0\"")
        });
    ensure!(
        image_change,
        "the pending plan shows the image change: {pending:?}"
    );
    let runtime = eu_west(env).await?;
    ensure!(
        deployment_image(&runtime, GATED_NS).await?.as_deref() == Some("nginx:1.0"),
        "the change was applied before approval"
    );

    apply_workload(&client, GATED_NS, &gated("nginx:3.0")).await?;
    pending_plan(&client, 3).await?;
    let rules = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"],
        "verbs": ["get", "patch"]}]);
    let token = service_account_token(&client, GATED_NS, "approver", rules, None).await?;
    let path = format!("/v1/namespaces/{GATED_NS}/workloads/gated/approve");
    let stale = Some((JSON, json!({"generation": 2})));
    let (code, body) = call(gateway, Some(&token), Method::POST, &path, stale).await?;
    ensure!(
        code == StatusCode::CONFLICT && body.to_string().contains("generation 2 is stale"),
        "a stale approval is refused: {code} {body}"
    );
    let annotation =
        json!({"metadata": {"annotations": {qleetos_crds::plan::APPROVE_ANNOTATION: "2"}}});
    let workloads: Api<qleetos_crds::Workload> = Api::namespaced(client.clone(), GATED_NS);
    workloads
        .patch("gated", &PatchParams::default(), &Patch::Merge(&annotation))
        .await?;
    eventually("the stale annotation refused", TIMEOUT, || async {
        let approval = workloads
            .get("gated")
            .await?
            .status
            .and_then(|s| s.approval);
        let message = approval.and_then(|a| a.message).unwrap_or_default();
        Ok(message
            .starts_with("the approval of generation 2 is stale")
            .then_some(()))
    })
    .await?;
    ensure!(
        deployment_image(&runtime, GATED_NS).await?.as_deref() == Some("nginx:1.0"),
        "a stale approval applied a change"
    );

    let (code, body) = call(gateway, Some(&token), Method::POST, &path, None).await?;
    ensure!(
        code == StatusCode::OK && body["generation"] == 3,
        "approve: {code} {body}"
    );
    crate::gateway::wait_runtime_image(env, "eu-west", GATED_NS, "nginx:3.0").await?;
    wait_workload_ready(&client, GATED_NS, "gated").await?;

    delete_workload(&client, GATED_NS, "gated").await?;
    eventually("gated's instances removed", TIMEOUT, || async {
        Ok(instances_of(&client, GATED_NS, "gated")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await
}

/// The plan pending in Workload `gated`'s status for `generation`, once the operator made it.
async fn pending_plan(client: &Client, generation: i64) -> Result<qleetos_crds::ApprovalStatus> {
    let workloads: Api<qleetos_crds::Workload> = Api::namespaced(client.clone(), GATED_NS);
    eventually(
        &format!("the plan of generation {generation} pending"),
        TIMEOUT,
        || async {
            let approval = workloads
                .get("gated")
                .await?
                .status
                .and_then(|s| s.approval);
            Ok(approval.filter(|a| {
                a.generation == generation && a.state == qleetos_crds::ApprovalState::Pending
            }))
        },
    )
    .await
}
