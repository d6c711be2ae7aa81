//! Helm charts as the source of a Workload's and a support service's objects: fetched from
//! the real chart repository of the environment, rendered by the pinned helm for each
//! runtime, applied, corrected, upgraded and removed by QleetOS's own applier.

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use qleetos_crds::{
    Conditions, SupportService, SupportServiceProfile, TenantPolicy, WorkloadInstance,
};
use qleetos_e2e::charts::{ChartRepository, OciRegistry};
use qleetos_e2e::environment::{Environment, ensure_namespace};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::gateway::{
    JSON, call, ensure_status, service_account_token, shared_gateway, wait_runtime_image,
};
use crate::support::*;

const RUNTIMES: [&str; 2] = ["eu-west", "us-east"];

/// A Workload `web` of the test chart `web` at `version`, its image key `web` mapped to the
/// chart's `image.repository` and `image.tag`.
fn charted_web(repository: &str, version: &str, values: Value, placement: Value) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "web"},
        "spec": {
            "chart": {
                "repository": repository, "name": "web", "version": version, "values": values,
                "images": {"web": {"repository": "image.repository", "tag": "image.tag"}}
            },
            "images": {"web": "registry.local/web:1"},
            "placement": placement
        }
    })
}

/// A TenantPolicy letting management namespace `namespace` render charts from `repositories`
/// (no namespace may by default), once the operator has it in force.
pub(crate) async fn allow_charts(
    client: &Client,
    namespace: &str,
    repositories: &[&str],
) -> Result<()> {
    ensure_namespace(client, namespace).await?;
    let name = format!("{namespace}-charts");
    let policy = json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
        "metadata": {"name": name},
        "spec": {"namespaces": [namespace], "chartRepositories": repositories}
    });
    let api: Api<TenantPolicy> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("e2e-test").force(),
        &Patch::Apply(&policy),
    )
    .await?;
    policy_selects(client, &name, namespace).await
}

pub async fn charted_workload_runs_in_two_regions_and_leaves_nothing(
    env: &Environment,
) -> Result<()> {
    let (ns, client) = ("charted-web", env.management_client().await?);
    let repository = ChartRepository::get().await?;
    allow_charts(&client, ns, &[&repository.url]).await?;
    let placement = json!({"regions": ["eu-west-1", "us-east-1"]});
    apply_workload(
        &client,
        ns,
        &charted_web(&repository.url, "1.0.0", json!({"port": 9090}), placement),
    )
    .await?;
    wait_workload_ready(&client, ns, "web").await?;

    for runtime in RUNTIMES {
        let runtime_client = env.runtime(runtime).context("runtime")?.client().await?;
        let image = deployment_image(&runtime_client, ns).await?;
        ensure!(
            image.as_deref() == Some("registry.local/web:1"),
            "{runtime} runs {image:?}"
        );
        let services: Api<Service> = Api::namespaced(runtime_client.clone(), ns);
        let port = services
            .get("web")
            .await?
            .spec
            .and_then(|s| s.ports)
            .and_then(|p| p.first().and_then(|p| p.target_port.clone()));
        ensure!(
            format!("{port:?}").contains("9090"),
            "{runtime}: the values did not reach the Service: {port:?}"
        );
        let version = runtime_client.apiserver_version().await?.git_version;
        let rendered_for: Api<ConfigMap> = Api::namespaced(runtime_client, ns);
        let data = rendered_for
            .get("web-rendered-for")
            .await?
            .data
            .unwrap_or_default();
        ensure!(
            data.get("kubeVersion") == Some(&version),
            "{runtime}: rendered for {data:?}, runtime is {version}"
        );
    }
    for instance in instances_of(&client, ns, "web").await? {
        let chart = instance
            .status
            .and_then(|s| s.chart)
            .context("no chart in the instance status")?;
        ensure!(chart.name == "web" && chart.version == "1.0.0", "{chart:?}");
        ensure!(
            chart.digest.starts_with("sha256:") && chart.digest.len() == 71,
            "{chart:?}"
        );
        ensure!(
            chart.objects == 3,
            "3 objects rendered, status says {chart:?}"
        );
    }

    // CI's image hook changes the rendered release (the value the chart reads).
    let gateway = shared_gateway(env).await?;
    let rules = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get", "patch"]}]);
    let token = service_account_token(&client, ns, "ci-bot", rules, None).await?;
    let path = format!("/v1/namespaces/{ns}/workloads/web/images?wait=120s");
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &path,
        Some((JSON, json!({"images": {"web": "registry.local/web:2"}}))),
    )
    .await?;
    ensure_status(
        status,
        StatusCode::OK,
        &answer,
        "image update of a charted Workload",
    )?;
    let (status, answer) = call(
        gateway,
        Some(&token),
        Method::POST,
        &path,
        Some((JSON, json!({"images": {"sidecar": "x:1"}}))),
    )
    .await?;
    ensure_status(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        &answer,
        "an image key the chart does not map",
    )?;
    ensure!(answer.to_string().contains("chart.images"), "{answer}");
    for runtime in RUNTIMES {
        wait_runtime_image(env, runtime, ns, "registry.local/web:2").await?;
    }

    // Drift: a hand edit in one runtime is corrected back to the rendered release.
    let eu = env.runtime("eu-west").context("runtime")?.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(eu.clone(), ns);
    let edit = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "registry.local/hand-edited:0"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(edit))
        .await?;
    wait_runtime_image(env, "eu-west", ns, "registry.local/web:2").await?;

    delete_workload(&client, ns, "web").await?;
    for runtime in RUNTIMES {
        let runtime_client = env.runtime(runtime).context("runtime")?.client().await?;
        eventually(
            &format!("nothing of the chart left in {runtime}"),
            TIMEOUT,
            || async {
                let left = chart_objects_in(&runtime_client, ns).await?;
                if left.is_empty() {
                    return Ok(Some(()));
                }
                bail!("still there: {left:?}")
            },
        )
        .await?;
    }
    Ok(())
}

/// The web chart's objects still in runtime namespace `ns`.
async fn chart_objects_in(client: &Client, ns: &str) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    left.extend(
        deployments
            .list(&Default::default())
            .await?
            .items
            .iter()
            .map(|d| format!("Deployment {}", d.name_any())),
    );
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    left.extend(
        services
            .list(&Default::default())
            .await?
            .items
            .iter()
            .map(|s| format!("Service {}", s.name_any())),
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let managed = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=qleetos");
    left.extend(
        config_maps
            .list(&managed)
            .await?
            .items
            .iter()
            .map(|c| format!("ConfigMap {}", c.name_any())),
    );
    Ok(left)
}

fn widgets_profile(repository: &str) -> Value {
    json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "SupportServiceProfile",
        "metadata": {"name": "widgets"},
        "spec": {
            "provides": ["widgets"], "namespace": "widgets-system", "gracePeriodSeconds": 0,
            "chart": {
                "repository": repository, "name": "widgets", "version": "~0.3.0", "versionRange": true,
                "values": {"runtime": "$(runtime.name)"}
            }
        }
    })
}

pub async fn charted_support_service_comes_with_its_crds_and_goes_with_its_last_user(
    env: &Environment,
) -> Result<()> {
    let (ns, client) = ("charted-widgets", env.management_client().await?);
    let repository = ChartRepository::get().await?;
    let profiles: Api<SupportServiceProfile> = Api::all(client.clone());
    let profile = widgets_profile(&repository.url);
    profiles
        .patch(
            "widgets",
            &PatchParams::apply("e2e-test").force(),
            &Patch::Apply(&profile),
        )
        .await?;
    let mut user = workload(
        "user",
        web_manifests(1, "nginx:1.27"),
        json!({"regions": ["eu-west-1"]}),
    );
    user["spec"]["needs"] = json!(["widgets"]);
    apply_workload(&client, ns, &user).await?;
    wait_workload_ready(&client, ns, "user").await?;

    let eu = env.runtime("eu-west").context("runtime")?.client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(eu.clone());
    let crd = crds.get("widgets.qleetos.test").await?;
    let gvk = GroupVersionKind::gvk("qleetos.test", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(eu.clone(), "widgets-system", &ApiResource::from_gvk(&gvk));
    let jobs: Api<Job> = Api::namespaced(eu.clone(), "widgets-system");
    let migrate = jobs.get("widgets-migrate").await?;
    let migrated = migrate
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone())
        .context("the pre-install hook Job has not completed")?;
    let started = migrate.creation_timestamp().context("created")?;
    // Its pod takes 3 s (kwok's `qleetos.test/complete-after`): applied without waiting,
    // the Widgets would be older than its completion.
    ensure!(
        migrated.0.as_second() - started.0.as_second() >= 2,
        "the hook Job did not take its time: created {started:?}, completed {migrated:?}"
    );
    for name in ["alpha", "beta"] {
        let widget = widgets.get(name).await?;
        ensure!(
            widget
                .creation_timestamp()
                .is_some_and(|t| t.0 >= migrated.0),
            "Widget {name} applied before the pre-install hook Job completed"
        );
        ensure!(
            widget.data["spec"]["size"] == "eu-west",
            "the runtime variable did not reach the values: {:?}",
            widget.data
        );
        ensure!(
            widget.creation_timestamp() >= crd.creation_timestamp(),
            "Widget {name} before its CRD"
        );
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(eu.clone(), "widgets-system");
    for hook in ["widgets-prepared", "widgets-announced"] {
        ensure!(
            config_maps.get_opt(hook).await?.is_some(),
            "hook {hook} not applied"
        );
    }
    ensure!(
        config_maps.get_opt("widgets-farewell").await?.is_none(),
        "a pre-delete hook was applied"
    );
    let pods: Api<Pod> = Api::namespaced(eu.clone(), "widgets-system");
    ensure!(
        pods.get_opt("widgets-test").await?.is_none(),
        "a test hook was applied"
    );
    let service = support_service_on(&client, "widgets", "eu-west").await?;
    let chart = service
        .status
        .and_then(|s| s.chart)
        .context("no chart in the SupportService status")?;
    ensure!(chart.version == "0.3.0", "the range resolved to {chart:?}");
    ensure!(
        chart.objects == 8,
        "8 objects rendered (CRD, 2 Widgets, Deployment, 3 hooks, ClusterRole): {chart:?}"
    );

    delete_workload(&client, ns, "user").await?;
    let namespaces: Api<Namespace> = Api::all(eu.clone());
    eventually(
        "the widgets service removed from eu-west",
        TIMEOUT,
        || async {
            let crd_left = crds.get_opt("widgets.qleetos.test").await?.is_some();
            let namespace_left = namespaces.get_opt("widgets-system").await?.is_some();
            if !crd_left && !namespace_left {
                return Ok(Some(()));
            }
            bail!("CRD left: {crd_left}, namespace left: {namespace_left}")
        },
    )
    .await?;
    let roles: Api<ClusterRole> = Api::all(eu.clone());
    let kept = roles
        .get("widgets-viewer")
        .await
        .context("the kept ClusterRole was deleted")?;
    ensure!(
        !kept.labels().contains_key("qleetos.io/instance-uid"),
        "the kept object is still owned: {:?}",
        kept.labels()
    );
    ensure!(
        kept.annotations()
            .get("qleetos.io/kept")
            .map(String::as_str)
            == Some("true"),
        "{:?}",
        kept.annotations()
    );
    roles
        .delete("widgets-viewer", &DeleteParams::default())
        .await?;
    profiles.delete("widgets", &DeleteParams::default()).await?;
    Ok(())
}

async fn support_service_on(
    client: &Client,
    profile: &str,
    runtime: &str,
) -> Result<SupportService> {
    let api: Api<SupportService> = Api::all(client.clone());
    eventually(
        &format!("SupportService of {profile} on {runtime}"),
        TIMEOUT,
        || async {
            let found = api
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .find(|s| s.spec.profile_ref.name == profile && s.spec.runtime_ref.name == runtime);
            Ok(found)
        },
    )
    .await
}

pub async fn charted_sources_that_fail_say_why_and_apply_nothing(env: &Environment) -> Result<()> {
    let (ns, client) = ("charted-bad", env.management_client().await?);
    let repository = ChartRepository::get().await?;
    allow_charts(&client, ns, &[&repository.url, "http://127.0.0.1:9/charts"]).await?;
    let placement = json!({"regions": ["eu-west-1"]});
    let cases = [
        (
            "no-chart",
            {
                let mut w = charted_web(&repository.url, "1.0.0", json!({}), placement.clone());
                w["spec"]["chart"]["name"] = json!("nosuch");
                w
            },
            "ChartUnavailable",
            "no chart named nosuch",
        ),
        (
            "no-version",
            charted_web(&repository.url, "9.9.9", json!({}), placement.clone()),
            "ChartUnavailable",
            "no version matches \"9.9.9\"",
        ),
        (
            "unreachable",
            charted_web(
                "http://127.0.0.1:9/charts",
                "1.0.0",
                json!({}),
                placement.clone(),
            ),
            "ChartUnavailable",
            "cannot reach http://127.0.0.1:9/charts/index.yaml",
        ),
        (
            "template-error",
            charted_web(
                &repository.url,
                "1.0.0",
                json!({"refuse": true}),
                placement.clone(),
            ),
            "ChartRenderFailed",
            "refuse is set: this release will not render",
        ),
        (
            "values-error",
            charted_web(
                &repository.url,
                "1.1.0",
                json!({"replicaCount": "many"}),
                placement.clone(),
            ),
            "ChartRenderFailed",
            "/replicaCount",
        ),
    ];
    for (name, mut workload, _, _) in cases.clone() {
        workload["metadata"]["name"] = json!(name);
        apply_workload(&client, ns, &workload).await?;
    }
    for (name, _, reason, message) in cases.clone() {
        let instance = eventually(
            &format!("{name}: Ready=False {reason}"),
            TIMEOUT,
            || async {
                let instances = instances_of(&client, ns, name).await?;
                let found = instances.into_iter().find(|i| {
                    i.status
                        .as_ref()
                        .and_then(|s| s.condition(qleetos_crds::READY))
                        .is_some_and(|c| c.reason == reason)
                });
                Ok(found)
            },
        )
        .await?;
        let ready = instance
            .status
            .as_ref()
            .and_then(|s| s.condition(qleetos_crds::READY))
            .cloned()
            .context("ready")?;
        ensure!(ready.message.contains(message), "{name}: {}", ready.message);
        ensure!(
            ready.message.starts_with("nothing applied"),
            "{name}: {}",
            ready.message
        );
        ensure!(applied_count(&instance) == 0, "{name}: objects applied");
    }
    let eu = env.runtime("eu-west").context("runtime")?.client().await?;
    let left = chart_objects_in(&eu, ns).await?;
    ensure!(left.is_empty(), "half-applied: {left:?}");
    for (name, ..) in &cases {
        delete_workload(&client, ns, name).await?;
    }
    Ok(())
}

fn applied_count(instance: &WorkloadInstance) -> i64 {
    instance.status.as_ref().map_or(0, |s| s.applied_count)
}

/// A namespace no TenantPolicy lets render charts: its chart is refused before the operator
/// fetches anything, whatever the URL (here one only the operator's network would reach).
pub async fn charted_workloads_use_only_the_repositories_their_namespace_may(
    env: &Environment,
) -> Result<()> {
    let (ns, client) = ("charted-unlisted", env.management_client().await?);
    let placement = json!({"regions": ["eu-west-1"]});
    let workload = charted_web(
        "http://169.254.169.254/latest",
        "1.0.0",
        json!({}),
        placement,
    );
    apply_workload(&client, ns, &workload).await?;
    let instance = eventually(
        "the chart refused by the tenancy fence",
        TIMEOUT,
        || async {
            let instances = instances_of(&client, ns, "web").await?;
            Ok(instances.into_iter().find(|i| {
                i.status
                    .as_ref()
                    .and_then(|s| s.condition(qleetos_crds::READY))
                    .is_some_and(|c| c.reason == "TenancyViolation")
            }))
        },
    )
    .await?;
    let ready = instance
        .status
        .as_ref()
        .and_then(|s| s.condition(qleetos_crds::READY))
        .cloned()
        .context("ready")?;
    ensure!(
        ready
            .message
            .contains("may not render charts from http://169.254.169.254/latest")
            && ready.message.contains("(ChartRepository)"),
        "{}",
        ready.message
    );
    ensure!(
        instance.status.and_then(|s| s.chart).is_none(),
        "a chart was rendered"
    );
    delete_workload(&client, ns, "web").await
}

/// Hosts a chart renders are claimed like those of manifests: another namespace granted the
/// same names cannot take them while the charted Workload holds them.
pub async fn charted_workloads_claim_the_hosts_their_charts_render(
    env: &Environment,
) -> Result<()> {
    let (holder, taker) = ("charted-host-a", "charted-host-b");
    let client = env.management_client().await?;
    let repository = ChartRepository::get().await?;
    lab_namespace(&client, holder).await?;
    allow_charts(&client, holder, &[&repository.url]).await?;
    let host = "charted-web.qleetos.test";
    let placement = json!({"regions": ["eu-west-1"]});
    apply_workload(
        &client,
        holder,
        &charted_web(
            &repository.url,
            "1.0.0",
            json!({"host": host}),
            placement.clone(),
        ),
    )
    .await?;
    wait_workload_ready(&client, holder, "web").await?;
    let instances = instances_of(&client, holder, "web").await?;
    let chart = instances
        .first()
        .and_then(|i| i.status.clone())
        .and_then(|s| s.chart)
        .context("chart status")?;
    ensure!(chart.hosts == [host], "rendered hosts: {chart:?}");

    let mut taking = workload("web", web_manifests(1, "nginx:1.27"), placement);
    taking["spec"]["expose"] = json!({"hosts": [host], "service": {"name": "web", "port": 80}});
    apply_lab_workload(&client, taker, &taking).await?;
    let message = eventually(
        "the second claim on the charted host refused",
        TIMEOUT,
        || async {
            let instances = instances_of(&client, taker, "web").await?;
            Ok(instances.iter().find_map(|i| {
                let ready = i.status.as_ref()?.condition(qleetos_crds::READY)?;
                (ready.reason == "HostConflict").then(|| ready.message.clone())
            }))
        },
    )
    .await?;
    ensure!(
        message.contains(&format!("host {host} is served by another namespace")),
        "{message}"
    );
    delete_workload(&client, taker, "web").await?;
    delete_workload(&client, holder, "web").await
}

/// A chart from an OCI registry: the test chart pushed by the real `helm push` to a real
/// registry (plain HTTP on loopback), pulled by QleetOS with `plainHttp: true`, rendered and
/// applied; the CRD refuses `plainHttp` for a classic repository; deleting the Workload
/// leaves nothing of the chart.
pub async fn charted_workload_from_an_oci_registry_over_plain_http(
    env: &Environment,
) -> Result<()> {
    let (ns, client) = ("charted-oci", env.management_client().await?);
    let dir = env.dir().join("oci-registry");
    std::fs::create_dir_all(&dir)?;
    let registry = OciRegistry::start(&dir).await?;
    let archive = ChartRepository::get().await?.dir.join("web-1.0.0.tgz");
    registry.push(&archive, &dir).await?;
    let repository = registry.repository();
    allow_charts(&client, ns, &[&repository]).await?;

    let placement = json!({"regions": ["eu-west-1"]});
    let mut web = charted_web(&repository, "1.0.0", json!({}), placement.clone());
    let mut refused = charted_web("https://charts.example.com/", "1.0.0", json!({}), placement);
    refused["spec"]["chart"]["plainHttp"] = json!(true);
    let message = apply_workload(&client, ns, &refused)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        message.contains("plainHttp applies to oci:// registries only"),
        "plainHttp with a classic repository: {message:?}"
    );
    web["spec"]["chart"]["plainHttp"] = json!(true);
    apply_workload(&client, ns, &web).await?;
    wait_workload_ready(&client, ns, "web").await?;

    let runtime = env.runtime("eu-west").context("runtime")?.client().await?;
    let image = deployment_image(&runtime, ns).await?;
    ensure!(
        image.as_deref() == Some("registry.local/web:1"),
        "eu-west runs {image:?}"
    );
    for instance in instances_of(&client, ns, "web").await? {
        let chart = instance.status.and_then(|s| s.chart);
        let chart = chart.context("no chart in the instance status")?;
        ensure!(chart.name == "web" && chart.version == "1.0.0", "{chart:?}");
    }

    delete_workload(&client, ns, "web").await?;
    eventually(
        "nothing of the OCI chart left in eu-west",
        TIMEOUT,
        || async {
            let left = chart_objects_in(&runtime, ns).await?;
            Ok(left.is_empty().then_some(()))
        },
    )
    .await
}
