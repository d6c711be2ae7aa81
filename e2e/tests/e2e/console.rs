//! Issue 11: the web console in a real browser (headless chromium through chromedriver). A
//! developer logs in with a token and sees a Workload whose support service is still
//! installing, then Ready without reloading the page; sets an image that reaches the runtime;
//! a reader is not offered that action; a user of another namespace sees nothing of this one.
//! Screenshots are kept in `target/e2e-artefacts/console/`.

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use qleetos_crds::{KubernetesRuntime, Workload};
use qleetos_e2e::environment::Environment;
use qleetos_e2e::gateway::GatewayProcess;
use serde_json::{Value, json};

use crate::browser::{Browser, artefacts_dir};
use crate::dependencies::{
    apply_profile, delete_profile, open_gate, operator_running, profile, wait_gone,
};
use crate::gateway::service_account_token;
use crate::support::*;

const NS: &str = "dep-console";
const OTHER_NS: &str = "dep-console-other";
const GATE: &str = "console-gate";

pub async fn console_shows_workloads_dependencies_and_only_what_rbac_allows(
    env: &mut Environment,
) -> Result<()> {
    operator_running(env).await?;
    let client = env.management_client().await?;
    let mut gateway = GatewayProcess::start(
        env.dir(),
        env.management.kubeconfig_path(),
        Some(&env.nats_url()),
        &[],
    )
    .await?;
    let browser = Browser::start(env.dir(), artefacts_dir("console")).await?;
    let outcome = scenario(env, &client, &browser, &gateway.base_url()).await;
    if outcome.is_err() {
        browser.screenshot("failed").await?;
    }
    let closed = browser.close().await;
    gateway.stop().await;
    outcome?;
    closed?;
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    Api::<Deployment>::namespaced(runtime, GATE)
        .delete("gate", &DeleteParams::default())
        .await?;
    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    delete_workload(&client, NS, "shop").await?;
    wait_gone(&workloads, "shop").await?;
    delete_profile(&client, GATE).await?;
    nothing_left_on_eu_west(env).await
}

/// The profile's namespace and the Workload's objects are gone from the runtime. (Other trials
/// of this environment keep their tenants' namespaces there, so the check names its own.)
async fn nothing_left_on_eu_west(env: &Environment) -> Result<()> {
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    let namespaces = Api::<Namespace>::all(runtime.clone());
    let deployments = Api::<Deployment>::namespaced(runtime.clone(), NS);
    let services = Api::<Service>::namespaced(runtime, NS);
    eventually(
        "nothing of the console trial left on eu-west",
        TIMEOUT,
        || async {
            let gate = namespaces.get_opt(GATE).await?;
            let left = deployments.list(&Default::default()).await?.items.len()
                + services.list(&Default::default()).await?.items.len();
            Ok((gate.is_none() && left == 0).then_some(()))
        },
    )
    .await
}

async fn scenario(env: &Environment, client: &Client, browser: &Browser, base: &str) -> Result<()> {
    let tokens = Tokens::issue(client).await?;
    apply_profile(client, &gated_profile()).await?;
    let mut shop = workload(
        "shop",
        web_manifests(1, "nginx:1.27"),
        json!({"regions": ["eu-west-1"]}),
    );
    shop["spec"]["needs"] = json!([GATE]);
    shop["spec"]["rollout"] = json!({"waves": [{"regions": ["eu-west-1"]}], "bakeSeconds": 1});
    apply_workload(client, NS, &shop).await?;

    browser.open(&format!("{base}/ui/")).await?;
    log_in(browser, &tokens.developer, NS).await?;
    browser
        .find_text("#who", &format!("system:serviceaccount:{NS}:developer"))
        .await?;
    browser.find(r#"tr[data-workload="shop"]"#).await?;
    browser.click(r#"tr[data-workload="shop"] a"#).await?;
    shows_the_installing_dependency(browser).await?;
    browser.screenshot("1-dependency-installing").await?;

    // Marks the page: a reload or new page would lose it.
    browser.run("window.stillTheSamePage = true;").await?;
    open_gate(env, GATE).await?;
    graph_shows(browser, "Ready", "Ready").await?;
    browser.find(r#"#live[data-live="true"]"#).await?;
    let same = browser
        .run("return window.stillTheSamePage === true;")
        .await?;
    ensure!(same == Value::Bool(true), "the page was reloaded");
    browser.screenshot("2-ready").await?;

    sets_an_image_and_reports_a_refusal(env, browser).await?;
    plans_an_image_change_and_shows_the_rollout(browser).await?;
    approves_a_pending_plan(client, browser).await?;
    shows_capacity_and_cost(client, browser).await?;
    a_reader_is_not_offered_the_image_update(browser, &tokens.reader).await?;
    another_namespace_sees_nothing(browser, &tokens.outsider).await
}

/// Waits until the graph shows the gated support service and the workload in these states.
async fn graph_shows(browser: &Browser, gate: &str, workload: &str) -> Result<()> {
    let gate = format!(r#".node[data-capability="{GATE}"][data-state="{gate}"]"#);
    browser.find(&gate).await?;
    let workload = format!(r#".node[data-kind="Workload"][data-state="{workload}"]"#);
    browser.find(&workload).await?;
    Ok(())
}

async fn shows_the_installing_dependency(browser: &Browser) -> Result<()> {
    graph_shows(browser, "Installing", "Waiting").await?;
    browser
        .find_text(".waits", "Waits on console-gate (Installing")
        .await?;
    let cluster = browser
        .find_text(
            r#".node[data-kind="Runtime"][data-state="Ready"]"#,
            "eu-west",
        )
        .await?
        .text()
        .await?;
    ensure!(
        cluster.contains("region eu-west-1") && cluster.contains("v1.36"),
        "cluster node: {cluster}"
    );
    Ok(())
}

async fn sets_an_image_and_reports_a_refusal(env: &Environment, browser: &Browser) -> Result<()> {
    browser.fill("#image-container", "web").await?;
    browser.fill("#image-value", "nginx:1.28").await?;
    browser.click("#images-submit").await?;
    browser
        .find_text("#images-result", "Set web=nginx:1.28")
        .await?;
    let runtime = env.runtime("eu-west").context("eu-west")?.client().await?;
    eventually("nginx:1.28 on eu-west", TIMEOUT, || async {
        let image = deployment_image(&runtime, NS).await?;
        Ok((image.as_deref() == Some("nginx:1.28")).then_some(()))
    })
    .await?;
    browser.find_text("#images-now", "web=nginx:1.28").await?;
    browser.screenshot("3-image-set").await?;

    browser.fill("#image-container", "nosuch").await?;
    browser.fill("#image-value", "busybox").await?;
    browser.click("#images-submit").await?;
    browser.find_text("#images-result", "Not changed").await?;
    browser.find_text("#images-result", "nosuch").await?;
    Ok(())
}

/// The plan of the next image, before setting it: the Deployment's image field from the
/// running image to the new one, in eu-west; and the rollout's one wave, complete.
async fn plans_an_image_change_and_shows_the_rollout(browser: &Browser) -> Result<()> {
    browser.find(r#"#rollout[data-phase="Complete"]"#).await?;
    browser
        .find_text(r#"#rollout tr[data-wave="1"]"#, "eu-west")
        .await?;
    browser.fill("#image-container", "web").await?;
    browser.fill("#image-value", "nginx:1.29").await?;
    browser.click("#images-plan").await?;
    let deployment = browser
        .find_text(
            r#"#plan li[data-kind="Deployment"][data-action="Update"]"#,
            "update",
        )
        .await?
        .text()
        .await?;
    ensure!(
        deployment.contains("spec.template.spec.containers[0].image")
            && deployment.contains("\"nginx:1.28\"")
            && deployment.contains("\"nginx:1.29\""),
        "the plan's image diff: {deployment}"
    );
    browser.find_text("#plan", "1 update").await?;
    browser
        .run("document.getElementById('plan').scrollIntoView();")
        .await?;
    browser.screenshot("3b-plan-and-rollout").await?;
    Ok(())
}

/// A Workload requiring approval shows its pending plan; Approve applies it.
async fn approves_a_pending_plan(client: &Client, browser: &Browser) -> Result<()> {
    // Objects of their own: shop's are named `web`.
    let mut manifests = web_manifests(1, "nginx:1.27");
    for manifest in &mut manifests {
        manifest["metadata"]["name"] = json!("gated");
    }
    let mut gated = workload("gated", manifests, json!({"regions": ["eu-west-1"]}));
    gated["spec"]["approval"] = json!("Required");
    apply_workload(client, NS, &gated).await?;
    let base = browser.run("return location.origin;").await?;
    let page = format!(
        "{}/ui/#/namespaces/{NS}/workloads/gated",
        base.as_str().unwrap_or_default()
    );
    browser.open(&page).await?;
    browser
        .find_text("#approval h2", "Plan of generation 1 waits for approval")
        .await?;
    browser
        .find_text(r#"#pending-plan li[data-kind="Deployment"]"#, "create")
        .await?;
    browser.click("#approve").await?;
    browser
        .find_text("#approve-result", "Approved the plan of generation 1")
        .await?;
    browser.screenshot("3c-approved").await?;
    wait_workload_ready(client, NS, "gated").await?;
    delete_workload(client, NS, "gated").await
}

/// The runtimes page shows each runtime's CPU use and cost (eu-west priced for the while),
/// and the totals.
async fn shows_capacity_and_cost(client: &Client, browser: &Browser) -> Result<()> {
    let runtimes: Api<KubernetesRuntime> = Api::all(client.clone());
    let priced = json!({"spec": {"cost": {"perNodeHour": "0.25", "perClusterHour": "0.10"}}});
    runtimes
        .patch("eu-west", &PatchParams::default(), &Patch::Merge(&priced))
        .await?;
    browser.click("#nav-runtimes").await?;
    let shown = async {
        browser
            .find_text(r#"tr[data-runtime="eu-west"] td.cost"#, "0.3500")
            .await?;
        browser
            .find_text(r#"tr[data-runtime="eu-west"] td.cpu"#, " / 32")
            .await?;
        browser
            .find_text("#runtimes-total", "costing 0.3500 per hour")
            .await?;
        browser.screenshot("3d-runtimes-cost").await
    }
    .await;
    let unpriced = json!({"spec": {"cost": null}});
    runtimes
        .patch("eu-west", &PatchParams::default(), &Patch::Merge(&unpriced))
        .await?;
    shown.map(|_| ())
}

async fn a_reader_is_not_offered_the_image_update(browser: &Browser, token: &str) -> Result<()> {
    browser.click("#logout").await?;
    log_in(browser, token, NS).await?;
    browser.click(r#"tr[data-workload="shop"] a"#).await?;
    browser
        .find(r#".node[data-kind="Workload"][data-state="Ready"]"#)
        .await?;
    browser.find("#images-readonly").await?;
    let offered = browser
        .run("return document.getElementById('images') !== null;")
        .await?;
    ensure!(
        offered == Value::Bool(false),
        "a reader sees the image form"
    );
    Ok(())
}

async fn another_namespace_sees_nothing(browser: &Browser, token: &str) -> Result<()> {
    browser.click("#logout").await?;
    log_in(browser, token, NS).await?;
    browser.find_text("#view-error", "forbidden").await?;
    let listed = browser.source().await?;
    browser.screenshot("4-other-namespace-list").await?;
    let base = browser.run("return location.origin;").await?;
    let detail = format!(
        "{}/ui/#/namespaces/{NS}/workloads/shop",
        base.as_str().unwrap_or_default()
    );
    browser.open(&detail).await?;
    browser.find_text("#view-error", "forbidden").await?;
    let described = browser.source().await?;
    browser.screenshot("5-other-namespace-detail").await?;
    ensure!(
        !listed.contains("shop"),
        "a user of {OTHER_NS} sees shop: {listed}"
    );
    for page in [&listed, &described] {
        for secret in [GATE, "nginx", "eu-west", "generation"] {
            ensure!(
                !page.contains(secret),
                "a user of {OTHER_NS} sees {secret:?} of {NS}: {page}"
            );
        }
    }
    // The same user does see their own namespace.
    browser.fill("#namespace", OTHER_NS).await?;
    browser
        .run("document.getElementById('namespace').dispatchEvent(new Event('change'));")
        .await?;
    browser
        .find_text("#view-state", "No Workloads in this namespace.")
        .await?;
    Ok(())
}

async fn log_in(browser: &Browser, token: &str, namespace: &str) -> Result<()> {
    browser.fill("#token", token).await?;
    browser.fill("#login-namespace", namespace).await?;
    browser.click("#login-submit").await?;
    browser.find("#workloads").await?;
    Ok(())
}

/// Held Installing until the test creates the Deployment its health check waits for.
fn gated_profile() -> Value {
    let manifests = json!([{"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": GATE}, "data": {"k": "v"}}]);
    let mut gated = profile(GATE, GATE, false, manifests);
    gated["spec"]["healthChecks"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
        "name": "gate", "namespace": GATE, "type": "Available"}]);
    gated
}

/// A developer (read and patch Workloads, read runtimes), a reader (read only) and a user of
/// another namespace.
struct Tokens {
    developer: String,
    reader: String,
    outsider: String,
}

impl Tokens {
    async fn issue(client: &Client) -> Result<Self> {
        let read = ["get", "list", "watch"];
        let kinds = ["workloads", "workloadinstances"];
        let rule = |verbs: &[&str]| json!([{"apiGroups": ["qleetos.io"], "resources": kinds, "verbs": verbs}]);
        let runtimes = json!([{"apiGroups": ["qleetos.io"], "resources": ["kubernetesruntimes"],
            "verbs": ["get", "list"]}]);
        let write = ["get", "list", "watch", "patch"];
        let mut developer = rule(&write);
        developer
            .as_array_mut()
            .context("rules")?
            .push(json!({"apiGroups": ["qleetos.io"],
            "resources": ["workloadplans"], "verbs": ["create", "get", "delete"]}));
        Ok(Self {
            developer: service_account_token(client, NS, "developer", developer, Some(runtimes))
                .await?,
            reader: service_account_token(client, NS, "reader", rule(&read), None).await?,
            outsider: service_account_token(client, OTHER_NS, "outsider", rule(&write), None)
                .await?,
        })
    }
}

pub fn scenarios() -> Vec<(&'static str, crate::harness::Exclusive)> {
    vec![(
        "console_shows_workloads_dependencies_and_only_what_rbac_allows",
        |env| Box::pin(console_shows_workloads_dependencies_and_only_what_rbac_allows(env)),
    )]
}
