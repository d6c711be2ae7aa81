//! Issue 4 scenarios: the REST gateway as CI uses it — bearer tokens checked by TokenReview,
//! RBAC through impersonation, CRUD matching kubectl, the image hook's `?wait=`, schema-driven
//! fuzzing and an unreachable management API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use libtest_mimic::{Failed, Trial};
use qleetos_e2e::environment::{Environment, RuntimeSpec, ensure_namespace};
use qleetos_e2e::gateway::GatewayProcess;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;

use crate::plan::{
    approval_holds_a_change_until_its_plan_is_approved,
    plans_change_nothing_show_field_diffs_and_never_secret_values,
};
use crate::support::*;

const SCHEMATHESIS_VERSION: &str = "4.32.5";
const FIELD_MANAGER: &str = "qleetos-e2e";

use crate::harness::SharedEnv;
type GatewayScenario =
    for<'a> fn(
        &'a Environment,
        &'a GatewayProcess,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// The gateway of the shared environment, started by the first trial that needs it.
static SHARED_GATEWAY: OnceCell<std::result::Result<GatewayProcess, String>> =
    OnceCell::const_new();

pub(crate) async fn shared_gateway(env: &Environment) -> Result<&'static GatewayProcess> {
    let gateway = SHARED_GATEWAY
        .get_or_init(|| async {
            GatewayProcess::start_for(env)
                .await
                .map_err(|e| format!("{e:#}"))
        })
        .await;
    gateway
        .as_ref()
        .map_err(|e| anyhow::anyhow!("gateway did not start: {e}"))
}

macro_rules! gateway_trials {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|env, gw| Box::pin($name(env, gw))) as GatewayScenario)),*]
    };
}

/// Every gateway trial: those sharing the environment, and one with an environment of its own.
pub fn trials(runtime: &Arc<Runtime>, env: &SharedEnv, dir: &Path) -> Vec<Trial> {
    let mut trials: Vec<Trial> = gateway_trials![
        gateway_rbac_limits_image_updates,
        gateway_rejects_missing_and_invalid_tokens,
        gateway_crud_round_trips_match_kubectl,
        gateway_wait_reports_rollout_success_and_timeout,
        gateway_survives_schemathesis_fuzzing,
        plans_change_nothing_show_field_diffs_and_never_secret_values,
        approval_holds_a_change_until_its_plan_is_approved,
    ]
    .into_iter()
    .map(|(name, scenario)| {
        let (runtime, env) = (runtime.clone(), env.clone());
        Trial::test(name, move || {
            let env = env
                .as_ref()
                .as_ref()
                .map_err(|e| Failed::from(format!("environment did not start: {e}")))?;
            runtime
                .block_on(async {
                    let gateway = shared_gateway(env).await?;
                    scenario(env, gateway).await
                })
                .map_err(|e| Failed::from(format!("{e:#}")))
        })
    })
    .collect();
    trials.push(crate::harness::own_trial(
        "gateway_answers_503_while_management_api_is_down",
        runtime,
        unreachable_management_api(dir.join("gateway-unreachable")),
    ));
    trials
}

// ---------------------------------------------------------------- helpers

fn http() -> reqwest::Client {
    qleetos_e2e::http::client_builder()
        .timeout(Duration::from_secs(180))
        .build()
        .expect("reqwest client")
}

/// One call to the gateway with a bearer token (or none); returns status and JSON body.
pub(crate) async fn call(
    gateway: &GatewayProcess,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<(&str, Value)>,
) -> Result<(StatusCode, Value)> {
    let mut request = http().request(method.clone(), format!("{}{path}", gateway.base_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, body)) = body {
        request = request
            .header("content-type", content_type)
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = response.status();
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, json))
}

pub(crate) const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

/// A ServiceAccount with `rules` in `namespace` (a Role) and `cluster_rules` (a ClusterRole),
/// and a fresh token for it.
pub(crate) async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
    rules: Value,
    cluster_rules: Option<Value>,
) -> Result<String> {
    ensure_namespace(client, namespace).await?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let sa_api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    sa_api
        .patch(name, &params, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}})))
        .await?;
    let subject = json!([{"kind": "ServiceAccount", "name": name, "namespace": namespace}]);
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": namespace}, "rules": rules});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": namespace}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}, "subjects": subject});
    apply_dynamic(client, "roles", Some(namespace), &role).await?;
    apply_dynamic(client, "rolebindings", Some(namespace), &binding).await?;
    if let Some(rules) = cluster_rules {
        let cluster_name = format!("{namespace}-{name}");
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": cluster_name}, "rules": rules});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": cluster_name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name}, "subjects": subject});
        apply_dynamic(client, "clusterroles", None, &role).await?;
        apply_dynamic(client, "clusterrolebindings", None, &binding).await?;
    }
    token_for(client, namespace, name).await
}

/// A fresh one-hour token of an existing ServiceAccount.
pub(crate) async fn token_for(client: &Client, namespace: &str, name: &str) -> Result<String> {
    let sa_api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = sa_api
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    token
        .status
        .and_then(|s| s.token)
        .context("TokenRequest returned no token")
}

/// Server-side apply of an RBAC object (`plural` e.g. `clusterroles`).
pub(crate) async fn apply_dynamic(
    client: &Client,
    plural: &str,
    namespace: Option<&str>,
    object: &Value,
) -> Result<()> {
    let kind = object["kind"].as_str().context("kind")?;
    let gvk = kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind);
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<kube::api::DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let name = object["metadata"]["name"].as_str().context("name")?;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// Image of container `web` of Deployment `web` in `runtime`, polled until it is `want`.
pub(crate) async fn wait_runtime_image(
    env: &Environment,
    runtime: &str,
    ns: &str,
    want: &str,
) -> Result<()> {
    let client = env.runtime(runtime).context("runtime")?.client().await?;
    eventually(&format!("{want} in {runtime}"), TIMEOUT, || async {
        let image = deployment_image(&client, ns).await?;
        if image.as_deref() == Some(want) {
            return Ok(Some(()));
        }
        bail!("{runtime} runs {image:?}")
    })
    .await
}

fn rv(object: &Value) -> Result<u64> {
    Ok(object["metadata"]["resourceVersion"]
        .as_str()
        .context("resourceVersion")?
        .parse()?)
}

pub(crate) fn ensure_status(
    status: StatusCode,
    want: StatusCode,
    body: &Value,
    what: &str,
) -> Result<()> {
    ensure!(
        status == want,
        "{what}: expected {want}, got {status}: {body}"
    );
    Ok(())
}

// ---------------------------------------------------------------- scenarios

async fn gateway_rbac_limits_image_updates(
    env: &Environment,
    gateway: &GatewayProcess,
) -> Result<()> {
    let client = env.management_client().await?;
    let (ns, other) = ("gw-rbac-a", "gw-rbac-b");
    let placement = json!({"runtimeSelector": {"matchLabels": {"qleetos.io/zone": "eu"}}});
    for namespace in [ns, other] {
        apply_workload(
            &client,
            namespace,
            &workload("web", web_manifests(1, "nginx:1.27"), placement.clone()),
        )
        .await?;
    }
    wait_workload_ready(&client, ns, "web").await?;
    let rules = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get", "patch"]}]);
    let token = service_account_token(&client, ns, "ci-bot", rules, None).await?;

    let path = format!("/v1/namespaces/{ns}/workloads/web/images?wait=120s");
    let body = json!({"images": {"web": "nginx:1.29"}});
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &path,
        Some((JSON, body.clone())),
    )
    .await?;
    ensure_status(
        status,
        StatusCode::OK,
        &answer,
        "image update in the allowed namespace",
    )?;
    ensure!(
        answer["rollout"]["rolledOut"] == true,
        "not rolled out: {answer}"
    );
    ensure!(
        answer["generation"].as_i64() >= Some(2),
        "generation: {answer}"
    );
    wait_runtime_image(env, "eu-west", ns, "nginx:1.29").await?;
    let metrics = http()
        .get(format!("{}/metrics", gateway.base_url()))
        .send()
        .await?
        .text()
        .await?;
    let published = r#"qleetos_gateway_notifications_total{result="published"} "#;
    ensure!(
        metrics
            .lines()
            .any(|l| l.strip_prefix(published).is_some_and(|n| n.trim() != "0")),
        "the gateway published no NATS notification after its writes"
    );

    let path = format!("/v1/namespaces/{other}/workloads/web/images");
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &path,
        Some((JSON, body)),
    )
    .await?;
    ensure_status(
        status,
        StatusCode::FORBIDDEN,
        &answer,
        "image update in another namespace",
    )?;
    let message = answer["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("system:serviceaccount:gw-rbac-a:ci-bot") && message.contains("forbidden"),
        "the RBAC message names the caller: {answer}"
    );
    ensure!(
        answer["reason"] == "Forbidden" && answer["code"] == 403,
        "{answer}"
    );
    let (status, answer) = call(gateway, Some(&token), Method::GET, "/v1/runtimes", None).await?;
    ensure_status(status, StatusCode::FORBIDDEN, &answer, "listing runtimes")?;
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::DELETE,
        "/v1/runtimes/eu-west",
        None,
    )
    .await?;
    ensure_status(status, StatusCode::FORBIDDEN, &answer, "deleting a runtime")?;
    let image = deployment_image(
        &env.runtime("eu-west").context("eu-west")?.client().await?,
        other,
    )
    .await?;
    ensure!(
        image.as_deref() == Some("nginx:1.27"),
        "the other namespace changed: {image:?}"
    );
    Ok(())
}

async fn gateway_rejects_missing_and_invalid_tokens(
    env: &Environment,
    gateway: &GatewayProcess,
) -> Result<()> {
    let client = env.management_client().await?;
    let path = "/v1/namespaces/gw-auth/workloads";
    let (status, answer) = call(gateway, None, Method::GET, path, None).await?;
    ensure_status(status, StatusCode::UNAUTHORIZED, &answer, "no token")?;
    ensure!(answer["reason"] == "Unauthorized", "{answer}");
    let invalid = format!("invalid-token-{}", std::process::id());
    let (status, answer) = call(gateway, Some(&invalid), Method::GET, path, None).await?;
    ensure_status(status, StatusCode::UNAUTHORIZED, &answer, "invalid token")?;
    ensure!(
        !answer.to_string().contains(&invalid),
        "token echoed: {answer}"
    );
    // A real token that RBAC refuses, and one with a typo in its signature.
    let token = service_account_token(&client, "gw-auth", "reader", json!([]), None).await?;
    let (status, answer) = call(gateway, Some(&token), Method::GET, path, None).await?;
    ensure_status(
        status,
        StatusCode::FORBIDDEN,
        &answer,
        "valid token without permission",
    )?;
    let tampered = format!("{}x", token);
    let (status, answer) = call(gateway, Some(&tampered), Method::GET, path, None).await?;
    ensure_status(status, StatusCode::UNAUTHORIZED, &answer, "tampered token")?;
    let log = std::fs::read_to_string(gateway.log_path())?;
    ensure!(
        log.contains("caller authenticated"),
        "the log captured no request (wrong file?)"
    );
    for secret in [&invalid, &token, &tampered] {
        ensure!(
            !log.contains(secret.as_str()),
            "a token appears in {}",
            gateway.log_path().display()
        );
    }
    // Even the JWT's signature part alone must not appear.
    let signature = token.rsplit('.').next().unwrap_or_default();
    ensure!(
        signature.len() > 20 && !log.contains(signature),
        "token signature in the log"
    );
    Ok(())
}

async fn kubectl_json(env: &Environment, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    Ok(serde_json::from_str(
        &kubectl(env.management.kubeconfig_path(), &all).await?,
    )?)
}

/// Creates, reads, lists, patches, replaces (also stale), deletes through the gateway and
/// compares each state with kubectl's view.
/// One kind's CRUD round trip: where it lives, an object to create and a patch to apply.
struct RoundTrip<'a> {
    collection: &'a str,
    kubectl_kind: &'a str,
    namespace: Option<&'a str>,
    object: Value,
    patch: Value,
    patched_pointer: &'a str,
}

async fn round_trip(
    env: &Environment,
    gateway: &GatewayProcess,
    token: &str,
    trip: RoundTrip<'_>,
) -> Result<()> {
    let RoundTrip {
        collection,
        kubectl_kind,
        namespace,
        object,
        patch,
        patched_pointer,
    } = trip;
    let name = object["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_owned();
    let mut target = vec![kubectl_kind.to_owned(), name.clone()];
    if let Some(ns) = namespace {
        target.extend(["-n".to_owned(), ns.to_owned()]);
    }
    let target: Vec<&str> = target.iter().map(String::as_str).collect();
    let get_args: Vec<&str> = ["get"].into_iter().chain(target.iter().copied()).collect();
    let item = format!("{collection}/{name}");

    let (status, created) = call(
        gateway,
        Some(token),
        Method::POST,
        collection,
        Some((JSON, object.clone())),
    )
    .await?;
    ensure_status(status, StatusCode::CREATED, &created, "create")?;
    let seen = kubectl_json(env, &get_args).await?;
    ensure!(
        seen["metadata"]["uid"] == created["metadata"]["uid"],
        "uid differs: {seen} vs {created}"
    );
    ensure!(
        seen["spec"] == created["spec"],
        "spec differs: {seen} vs {created}"
    );
    let (status, answer) = call(
        gateway,
        Some(token),
        Method::POST,
        collection,
        Some((JSON, object.clone())),
    )
    .await?;
    ensure_status(status, StatusCode::CONFLICT, &answer, "create again")?;
    ensure!(
        answer["reason"] == "AlreadyExists" && answer["retryResourceVersion"].is_string(),
        "{answer}"
    );

    let (status, got) = call(gateway, Some(token), Method::GET, &item, None).await?;
    ensure_status(status, StatusCode::OK, &got, "get")?;
    let (status, listed) = call(
        gateway,
        Some(token),
        Method::GET,
        &format!("{collection}?labelSelector=gw-crud%3Dyes&limit=1"),
        None,
    )
    .await?;
    ensure_status(status, StatusCode::OK, &listed, "list")?;
    let names: Vec<_> = listed["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|i| i["metadata"]["name"].clone())
        .collect();
    ensure!(
        names == [json!(name.clone())],
        "label-selected list: {names:?}"
    );

    let (status, patched) = call(
        gateway,
        Some(token),
        Method::PATCH,
        &item,
        Some((MERGE, patch)),
    )
    .await?;
    ensure_status(status, StatusCode::OK, &patched, "merge patch")?;
    let seen = kubectl_json(env, &get_args).await?;
    ensure!(
        !seen
            .pointer(patched_pointer)
            .unwrap_or(&Value::Null)
            .is_null(),
        "kubectl misses the patch at {patched_pointer}: {seen}"
    );
    ensure!(
        seen.pointer(patched_pointer) == patched.pointer(patched_pointer),
        "patch differs"
    );

    // Replace from a stale copy: 409 with the version to retry from, then succeed with it.
    let mut stale = got.clone();
    stale["metadata"]["labels"]["replaced"] = json!("yes");
    let (status, conflict) = call(
        gateway,
        Some(token),
        Method::PUT,
        &item,
        Some((JSON, stale.clone())),
    )
    .await?;
    ensure_status(status, StatusCode::CONFLICT, &conflict, "stale replace")?;
    let stale_version = rv(&stale)?;
    let retry_version = conflict["retryResourceVersion"]
        .as_str()
        .context("retryResourceVersion")?;
    ensure!(
        retry_version.parse::<u64>()? > stale_version,
        "retry version {conflict} not newer than {stale_version}"
    );
    // Retrying from the version the 409 names succeeds (retrying again if the operator wrote
    // status in between, as a CI job would).
    let mut fresh = kubectl_json(env, &get_args).await?;
    fresh["metadata"]["resourceVersion"] = json!(retry_version);
    let mut attempts = 0;
    loop {
        fresh["metadata"]["labels"]["replaced"] = json!("yes");
        let (status, answer) = call(
            gateway,
            Some(token),
            Method::PUT,
            &item,
            Some((JSON, fresh.clone())),
        )
        .await?;
        if status == StatusCode::OK {
            break;
        }
        attempts += 1;
        ensure!(
            status == StatusCode::CONFLICT && attempts < 5,
            "replace: {status} {answer}"
        );
        fresh = kubectl_json(env, &get_args).await?;
        fresh["metadata"]["resourceVersion"] = answer["retryResourceVersion"].clone();
    }
    let seen = kubectl_json(env, &get_args).await?;
    ensure!(
        seen["metadata"]["labels"]["replaced"] == "yes",
        "kubectl misses the replace: {seen}"
    );
    let (status, with_status) = call(
        gateway,
        Some(token),
        Method::GET,
        &format!("{item}/status"),
        None,
    )
    .await?;
    ensure_status(status, StatusCode::OK, &with_status, "status")?;

    let (status, deleted) = call(gateway, Some(token), Method::DELETE, &item, None).await?;
    ensure!(
        status == StatusCode::OK || status == StatusCode::ACCEPTED,
        "delete: {status} {deleted}"
    );
    eventually(&format!("{item} gone for kubectl"), TIMEOUT, || async {
        let mut args = get_args.clone();
        args.push("--ignore-not-found");
        let out = kubectl(env.management.kubeconfig_path(), &args).await?;
        Ok(out.trim().is_empty().then_some(()))
    })
    .await?;
    let (status, answer) = call(gateway, Some(token), Method::GET, &item, None).await?;
    ensure_status(status, StatusCode::NOT_FOUND, &answer, "get after delete")?;
    Ok(())
}

async fn gateway_crud_round_trips_match_kubectl(
    env: &Environment,
    gateway: &GatewayProcess,
) -> Result<()> {
    let client = env.management_client().await?;
    let ns = "gw-crud";
    let all = json!([{"apiGroups": ["qleetos.io"], "resources": ["*"], "verbs": ["*"]}]);
    let token = service_account_token(&client, ns, "admin", all.clone(), Some(all)).await?;
    let labels = json!({"gw-crud": "yes"});
    let mut wl = workload(
        "crud-web",
        web_manifests(1, "nginx:1.27"),
        json!({"runtimeSelector": {"matchLabels": {"qleetos.io/zone": "none"}}}),
    );
    wl["metadata"]["labels"] = labels.clone();
    let collection = format!("/v1/namespaces/{ns}/workloads");
    round_trip(
        env,
        gateway,
        &token,
        RoundTrip {
            collection: &collection,
            kubectl_kind: "workload",
            namespace: Some(ns),
            object: wl,
            patch: json!({"spec": {"images": {"web": "nginx:1.28"}}}),
            patched_pointer: "/spec/images/web",
        },
    )
    .await?;

    let instance = json!({"metadata": {"name": "crud-instance", "labels": labels},
        "spec": {"runtimeRef": {"name": "gw-no-such-runtime"}, "manifests": web_manifests(1, "nginx:1.27")}});
    let collection = format!("/v1/namespaces/{ns}/workloadinstances");
    round_trip(
        env,
        gateway,
        &token,
        RoundTrip {
            collection: &collection,
            kubectl_kind: "workloadinstance",
            namespace: Some(ns),
            object: instance,
            patch: json!({"spec": {"images": {"web": "nginx:1.28"}}}),
            patched_pointer: "/spec/images/web",
        },
    )
    .await?;

    let runtime = json!({"metadata": {"name": "gw-crud-runtime", "labels": labels},
        "spec": {"provider": "local", "region": "gw-nowhere-1", "connection": {"kubeconfigSecretRef": {"namespace": ns, "name": "missing"}}}});
    round_trip(
        env,
        gateway,
        &token,
        RoundTrip {
            collection: "/v1/runtimes",
            kubectl_kind: "kubernetesruntime",
            namespace: None,
            object: runtime,
            patch: json!({"spec": {"location": "lab"}}),
            patched_pointer: "/spec/location",
        },
    )
    .await?;

    let configmap =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gw-crud"}});
    let profile = json!({"metadata": {"name": "gw-crud-profile", "labels": labels},
        "spec": {"provides": ["gw-crud"], "namespace": "gw-crud", "manifests": [configmap]}});
    round_trip(
        env,
        gateway,
        &token,
        RoundTrip {
            collection: "/v1/supportserviceprofiles",
            kubectl_kind: "supportserviceprofile",
            namespace: None,
            object: profile,
            patch: json!({"spec": {"gracePeriodSeconds": 60}}),
            patched_pointer: "/spec/gracePeriodSeconds",
        },
    )
    .await?;

    let dependency = json!({"metadata": {"name": "gw-crud-rpc", "labels": labels},
        "spec": {"workloads": ["crud-web"], "profileRef": {"name": "gw-no-such-profile"}}});
    let collection = format!("/v1/namespaces/{ns}/workloadservicedependencies");
    round_trip(
        env,
        gateway,
        &token,
        RoundTrip {
            collection: &collection,
            kubectl_kind: "workloadservicedependency",
            namespace: Some(ns),
            object: dependency,
            patch: json!({"spec": {"sharing": "Dedicated"}}),
            patched_pointer: "/spec/sharing",
        },
    )
    .await?;

    let runtime_profile = json!({"metadata": {"name": "gw-crud-runtimes", "labels": labels},
        "spec": {"provider": "Local", "regions": ["gw-crud-1"], "kubernetesVersion": "v1.36.2"}});
    round_trip(
        env,
        gateway,
        &token,
        RoundTrip {
            collection: "/v1/runtimeprofiles",
            kubectl_kind: "kubernetesruntimeprofile",
            namespace: None,
            object: runtime_profile,
            patch: json!({"spec": {"idle": {"afterSeconds": 60}}}),
            patched_pointer: "/spec/idle/afterSeconds",
        },
    )
    .await?;

    // Bad input: the API server's schema message passes through as 422; malformed JSON is 400.
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &format!("/v1/namespaces/{ns}/workloads"),
        Some((
            JSON,
            json!({"metadata": {"name": "bad"}, "spec": {"manifests": web_manifests(1, "x")}}),
        )),
    )
    .await?;
    ensure_status(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        &answer,
        "workload without placement",
    )?;
    ensure!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("placement"),
        "{answer}"
    );
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &format!("/v1/namespaces/{ns}/workloads"),
        Some((
            JSON,
            json!({"metadata": {"name": "bad"}, "spec": {"bogus": 1}}),
        )),
    )
    .await?;
    ensure!(
        status == StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field: {status} {answer}"
    );
    let response = http()
        .post(format!(
            "{}/v1/namespaces/{ns}/workloads",
            gateway.base_url()
        ))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::BAD_REQUEST,
        "malformed body: {}",
        response.status()
    );
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::PATCH,
        &format!("/v1/namespaces/{ns}/workloads/none"),
        Some(("text/plain", json!({}))),
    )
    .await?;
    ensure_status(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &answer,
        "patch with text/plain",
    )?;
    Ok(())
}

async fn gateway_wait_reports_rollout_success_and_timeout(
    env: &Environment,
    gateway: &GatewayProcess,
) -> Result<()> {
    let client = env.management_client().await?;
    let ns = "gw-wait";
    let everywhere =
        json!({"runtimeSelector": {"matchLabels": {"tier": "prod"}}, "strategy": "AllMatching"});
    apply_workload(
        &client,
        ns,
        &workload("web", web_manifests(1, "nginx:1.27"), everywhere.clone()),
    )
    .await?;
    let mut stuck = web_manifests(1, "nginx:1.27");
    stuck[0]["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "1000"}});
    stuck.truncate(1);
    // Its own Deployment: both Workloads share the namespace in eu-west.
    stuck[0]["metadata"]["name"] = json!("stuck");
    stuck[0]["spec"]["selector"]["matchLabels"]["app"] = json!("stuck");
    stuck[0]["spec"]["template"]["metadata"]["labels"]["app"] = json!("stuck");
    apply_workload(
        &client,
        ns,
        &workload(
            "stuck",
            stuck,
            json!({"runtimeSelector": {"matchLabels": {"qleetos.io/zone": "eu"}}}),
        ),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;
    // `watch` too: the SSE watch below needs it (without it the gateway answers 403).
    let rules = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get", "patch", "watch"]}]);
    let token = service_account_token(&client, ns, "ci", rules, None).await?;

    let started = Instant::now();
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &format!("/v1/namespaces/{ns}/workloads/web/images?wait=120s"),
        Some((JSON, json!({"images": {"web": "nginx:1.30"}}))),
    )
    .await?;
    ensure_status(status, StatusCode::OK, &answer, "wait for a good rollout")?;
    let placements = answer["rollout"]["placements"]
        .as_array()
        .context("placements")?;
    ensure!(
        placements.len() == 2 && placements.iter().all(|p| p["ready"] == true),
        "{answer}"
    );
    // Answered as soon as rolled out, and the image really is there.
    for runtime in ["eu-west", "us-east"] {
        let image = deployment_image(
            &env.runtime(runtime).context("runtime")?.client().await?,
            ns,
        )
        .await?;
        ensure!(
            image.as_deref() == Some("nginx:1.30"),
            "{runtime} runs {image:?} after 200"
        );
    }
    ensure!(
        started.elapsed() < Duration::from_secs(120),
        "took the whole wait"
    );

    let started = Instant::now();
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &format!("/v1/namespaces/{ns}/workloads/stuck/images?wait=8s"),
        Some((JSON, json!({"images": {"web": "nginx:1.30"}}))),
    )
    .await?;
    ensure_status(
        status,
        StatusCode::GATEWAY_TIMEOUT,
        &answer,
        "wait for an impossible rollout",
    )?;
    let elapsed = started.elapsed();
    ensure!(
        elapsed >= Duration::from_secs(8) && elapsed < Duration::from_secs(20),
        "waited {elapsed:?}"
    );
    ensure!(answer["rollout"]["rolledOut"] == false, "{answer}");
    let placements = answer["rollout"]["placements"]
        .as_array()
        .context("placements")?;
    ensure!(
        placements
            .iter()
            .any(|p| p["ready"] == false && p["runtime"] == "eu-west"),
        "per-placement report: {answer}"
    );

    // The SSE watch follows the status: the first event carries the current generation.
    let response = http()
        .get(format!(
            "{}/v1/namespaces/{ns}/workloads/web/watch",
            gateway.base_url()
        ))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::OK,
        "watch: {}",
        response.status()
    );
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        text.push_str(&String::from_utf8_lossy(&chunk?));
        if text.contains("\n\n") {
            break;
        }
    }
    ensure!(
        text.contains("event: status") && text.contains("\"readyPlacements\":\"2/2\""),
        "first event: {text}"
    );
    Ok(())
}

async fn gateway_survives_schemathesis_fuzzing(
    env: &Environment,
    gateway: &GatewayProcess,
) -> Result<()> {
    let st = which("st").with_context(|| format!("install schemathesis: pip install schemathesis=={SCHEMATHESIS_VERSION} (or scripts/install-python-deps.sh)"))?;
    let client = env.management_client().await?;
    let read = json!([{"apiGroups": ["qleetos.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]);
    let write = json!([{"apiGroups": ["qleetos.io"], "resources": ["*"], "verbs": ["*"]}]);
    let token = service_account_token(&client, "fuzz", "fuzzer", write, Some(read)).await?;
    let before = gateway_requests(gateway).await?;
    let report_dir = env.dir().join("schemathesis");
    std::fs::create_dir_all(&report_dir)?;
    let output = tokio::process::Command::new(st)
        .current_dir(&report_dir)
        .args([
            "--no-color",
            "run",
            &format!("{}/openapi.json", gateway.base_url()),
            "--url",
            &gateway.base_url(),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path-regex",
            "/watch$",
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            "100",
            "--workers",
            "4",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--generation-database",
            "none",
            "--report-dir",
            &report_dir.display().to_string(),
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .context("running schemathesis")?;
    let stdout = String::from_utf8_lossy(&output.stdout).replace(&token, "<token>");
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&token, "<token>");
    std::fs::write(report_dir.join("output.txt"), format!("{stdout}\n{stderr}"))?;
    ensure!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    let sent = gateway_requests(gateway).await? - before;
    ensure!(
        sent >= 1000.0,
        "schemathesis sent only {sent} requests (need 1000):\n{stdout}"
    );
    eprintln!("schemathesis: {sent} requests, no failures");
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// Total requests the gateway counted, from its /metrics.
async fn gateway_requests(gateway: &GatewayProcess) -> Result<f64> {
    let text = http()
        .get(format!("{}/metrics", gateway.base_url()))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("qleetos_gateway_http_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn unreachable_management_api(dir: PathBuf) -> Result<()> {
    let spec = vec![RuntimeSpec::new(
        "eu-west",
        "eu-west-1",
        &[("qleetos.io/zone", "eu")],
    )];
    let mut env = Environment::start(&dir, spec)
        .await
        .context("starting the clusters")?;
    let result = async {
        let gateway = GatewayProcess::start_for(&env).await?;
        let client = env.management_client().await?;
        let read =
            json!([{"apiGroups": ["qleetos.io"], "resources": ["*"], "verbs": ["get", "list"]}]);
        let token =
            service_account_token(&client, "gw-down", "reader", json!([]), Some(read)).await?;
        let (status, answer) =
            call(&gateway, Some(&token), Method::GET, "/v1/runtimes", None).await?;
        ensure_status(status, StatusCode::OK, &answer, "before the outage")?;

        env.management.stop_apiserver().await?;
        for path in ["/v1/runtimes", "/v1/namespaces/a/workloads/web"] {
            let started = Instant::now();
            let (status, answer) = call(&gateway, Some(&token), Method::GET, path, None).await?;
            let elapsed = started.elapsed();
            ensure_status(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                &answer,
                "during the outage",
            )?;
            ensure!(elapsed < Duration::from_secs(5), "503 took {elapsed:?}");
            ensure!(answer["reason"] == "ServiceUnavailable", "{answer}");
        }
        let (status, answer) = call(&gateway, None, Method::GET, "/readyz", None).await?;
        ensure_status(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            &answer,
            "readyz during the outage",
        )?;

        env.management.start_apiserver().await?;
        eventually(
            "the gateway to recover",
            Duration::from_secs(60),
            || async {
                let (status, answer) =
                    call(&gateway, Some(&token), Method::GET, "/v1/runtimes", None).await?;
                if status == StatusCode::OK {
                    return Ok(Some(()));
                }
                bail!("{status} {answer}")
            },
        )
        .await?;
        let (status, _) = call(&gateway, None, Method::GET, "/readyz", None).await?;
        ensure!(status == StatusCode::OK, "readyz after recovery: {status}");
        Ok(())
    }
    .await;
    env.stop().await;
    result
}
