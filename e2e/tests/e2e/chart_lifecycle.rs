//! The chart's whole life with the real Helm CLI (issue 11): `helm lint`, `helm install
//! --wait` into a real kube-apiserver whose kwok nodes run the pods (operator, gateway, three
//! NATS servers on statically provisioned volumes), `helm upgrade` with changed values (the
//! generated NATS password survives it, so the servers are not restarted; the gateway's
//! Ingress and the ServiceMonitors are switched on and pass the real ServiceMonitor CRD's
//! schema, and each names a Service and port that exist), and `helm uninstall`, after which
//! nothing of QleetOS is left but its CRDs (the Helm convention).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use qleetos_e2e::binaries;
use qleetos_e2e::cluster::{Cluster, ClusterSpec};
use serde_json::{Value, json};

use crate::support::{eventually, kubectl};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/qleetos");
const RELEASE: &str = "qleetos";
const NAMESPACE: &str = "qleetos-system";
/// The StorageClass name of the volumes the trial provisions by hand (no provisioner runs).
const STORAGE_CLASS: &str = "trial-static";
const NATS_SERVERS: usize = 3;
const WAIT: &str = "180s";

/// Runs on a cluster of its own: the chart installs cluster-wide objects.
pub async fn chart_installs_upgrades_and_uninstalls_cleanly(dir: PathBuf) -> Result<()> {
    let cluster = Cluster::start(ClusterSpec::workload("helm-target", 3), &dir)
        .await
        .context("starting the cluster to install into")?;
    let helm = Helm::new(cluster.kubeconfig_path(), &dir).await?;
    let result = lifecycle(&helm, cluster.kubeconfig_path()).await;
    cluster.stop().await;
    result
}

async fn lifecycle(helm: &Helm, kubeconfig: &Path) -> Result<()> {
    helm.run(&["lint", CHART, "--strict"]).await?;
    provide_volumes(kubeconfig).await?;
    install_service_monitor_crd(kubeconfig).await?;
    let storage = format!("nats.install.storage.storageClassName={STORAGE_CLASS}");
    helm.run(&[
        "install",
        RELEASE,
        CHART,
        "-n",
        NAMESPACE,
        "--create-namespace",
        "--set",
        &storage,
        "--wait",
        "--timeout",
        WAIT,
    ])
    .await?;
    let crds = crd_names(kubeconfig).await?;
    ensure!(
        crds.len() == chart_crd_count()?,
        "the chart's CRDs installed: {crds:?}"
    );
    ensure_running(kubeconfig, "qleetos-operator", 1).await?;
    ensure_running(kubeconfig, "qleetos-gateway", 1).await?;
    let nats_pods = ensure_running(kubeconfig, "qleetos-nats", NATS_SERVERS).await?;
    let password = nats_password(kubeconfig).await?;
    ensure!(
        disruption_budgets(kubeconfig).await? == ["qleetos-nats"],
        "with one operator and one gateway only NATS has a disruption budget"
    );

    helm.run(&[
        "upgrade",
        RELEASE,
        CHART,
        "-n",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "operator.replicas=2",
        "--set",
        "gateway.ingress.enabled=true,gateway.ingress.className=traefik",
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prometheus",
        "--wait",
        "--timeout",
        WAIT,
    ])
    .await?;
    ensure_running(kubeconfig, "qleetos-operator", 2).await?;
    ensure!(
        nats_password(kubeconfig).await? == password,
        "an upgrade must keep the NATS password the servers and clients share"
    );
    let after_upgrade = ensure_running(kubeconfig, "qleetos-nats", NATS_SERVERS).await?;
    ensure!(
        after_upgrade == nats_pods,
        "an upgrade that changes nothing of NATS must not restart its servers"
    );
    ensure!(
        disruption_budgets(kubeconfig).await? == ["qleetos-nats", "qleetos-operator"],
        "two operator replicas get a disruption budget"
    );
    scrape_and_ingress_targets_exist(kubeconfig).await?;

    helm.run(&[
        "uninstall",
        RELEASE,
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout",
        WAIT,
    ])
    .await?;
    eventually("nothing of QleetOS left", Duration::from_secs(120), || {
        leftovers(kubeconfig)
    })
    .await?;
    ensure!(
        crd_names(kubeconfig).await? == crds,
        "helm uninstall keeps the CRDs (and so every QleetOS object stored in them)"
    );
    Ok(())
}

/// Prometheus Operator's real ServiceMonitor CRD (`e2e/scripts/operator-crds.sh`), so the API
/// server checks the chart's ServiceMonitors against its schema.
async fn install_service_monitor_crd(kubeconfig: &Path) -> Result<()> {
    let crds = crate::examples::operator_crds().await?;
    let path = crds
        .get("service-monitor")
        .context("operator-crds.sh printed no service-monitor line")?;
    let path = path.to_string_lossy();
    kubectl(kubeconfig, &["apply", "--server-side", "-f", &path]).await?;
    kubectl(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
            "--timeout=60s",
        ],
    )
    .await?;
    Ok(())
}

/// Each ServiceMonitor selects exactly one of the release's Services, which has the port the
/// endpoint scrapes; the Ingress sends to the gateway Service's port.
async fn scrape_and_ingress_targets_exist(kubeconfig: &Path) -> Result<()> {
    let services = get(kubeconfig, &["services", "-n", NAMESPACE]).await?;
    let monitors = get(kubeconfig, &["servicemonitors", "-n", NAMESPACE]).await?;
    ensure!(
        names(&monitors) == ["qleetos-gateway", "qleetos-operator"],
        "ServiceMonitors: {:?}",
        names(&monitors)
    );
    for monitor in &monitors {
        ensure!(
            monitor["metadata"]["labels"]["release"] == "prometheus",
            "the labels Prometheus selects by are missing: {monitor}"
        );
        let wanted = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .context("matchLabels")?;
        let selected: Vec<&Value> = services
            .iter()
            .filter(|s| {
                wanted
                    .iter()
                    .all(|(k, v)| s["metadata"]["labels"][k.as_str()] == *v)
            })
            .collect();
        ensure!(
            selected.len() == 1,
            "{monitor} selects {} Services",
            selected.len()
        );
        let port = &monitor["spec"]["endpoints"][0]["port"];
        ensure!(
            has_port(selected[0], port),
            "Service {} has no port {port}",
            selected[0]["metadata"]["name"]
        );
    }
    let ingresses = get(kubeconfig, &["ingresses", "-n", NAMESPACE]).await?;
    let backend = &ingresses
        .first()
        .context("no Ingress")?
        .pointer("/spec/rules/0/http/paths/0/backend/service")
        .cloned()
        .unwrap_or_default();
    let gateway = services
        .iter()
        .find(|s| s["metadata"]["name"] == backend["name"])
        .with_context(|| format!("the Ingress sends to no Service: {backend}"))?;
    ensure!(
        has_port(gateway, &backend["port"]["name"]),
        "the gateway Service has no port {}",
        backend["port"]
    );
    Ok(())
}

fn has_port(service: &Value, name: &Value) -> bool {
    service["spec"]["ports"]
        .as_array()
        .is_some_and(|ports| ports.iter().any(|p| p["name"] == *name))
}

/// The real Helm CLI with its own home (no state shared with the user's).
struct Helm {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    async fn new(kubeconfig: &Path, dir: &Path) -> Result<Self> {
        Ok(Helm {
            binary: binaries::helm().await?,
            kubeconfig: kubeconfig.to_owned(),
            home: dir.join("helm-home"),
        })
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let output = tokio::process::Command::new(&self.binary)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .output()
            .await
            .context("running helm")?;
        if !output.status.success() {
            bail!(
                "helm {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// One hostPath volume per NATS server, bound by the PersistentVolume controller.
async fn provide_volumes(kubeconfig: &Path) -> Result<()> {
    let volumes: Vec<Value> = (0..NATS_SERVERS)
        .map(|i| {
            json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": format!("trial-nats-{i}")},
                "spec": {
                    "storageClassName": STORAGE_CLASS,
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": format!("/tmp/trial-nats-{i}")}
                }
            })
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": volumes});
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), list.to_string())?;
    kubectl(kubeconfig, &["apply", "-f", &file.path().to_string_lossy()]).await?;
    Ok(())
}

/// Waits until `replicas` pods of a component are Running and Ready; returns their uids.
async fn ensure_running(
    kubeconfig: &Path,
    component: &str,
    replicas: usize,
) -> Result<BTreeSet<String>> {
    let what = format!("{replicas} running {component} pods");
    eventually(&what, Duration::from_secs(60), || async {
        let pods = get(
            kubeconfig,
            &[
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                &format!("app.kubernetes.io/name={component}"),
            ],
        )
        .await?;
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let ready = live.iter().all(|p| {
            p["status"]["phase"] == "Running"
                && p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        });
        if live.len() != replicas || !ready {
            bail!("{} live pods, all ready: {ready}", live.len());
        }
        Ok(Some(
            live.iter()
                .map(|p| p["metadata"]["uid"].as_str().unwrap_or_default().to_owned())
                .collect(),
        ))
    })
    .await
}

async fn nats_password(kubeconfig: &Path) -> Result<String> {
    let secret = kubectl(
        kubeconfig,
        &[
            "get",
            "secret",
            "qleetos-nats-auth",
            "-n",
            NAMESPACE,
            "-o",
            "json",
        ],
    )
    .await?;
    let secret: Value = serde_json::from_str(&secret)?;
    secret["data"]["password"]
        .as_str()
        .map(str::to_owned)
        .context("no password in Secret qleetos-nats-auth")
}

async fn disruption_budgets(kubeconfig: &Path) -> Result<Vec<String>> {
    Ok(names(&get(kubeconfig, &["pdb", "-n", NAMESPACE]).await?))
}

async fn crd_names(kubeconfig: &Path) -> Result<BTreeSet<String>> {
    Ok(names(&get(kubeconfig, &["crd"]).await?)
        .into_iter()
        .filter(|name| name.ends_with(".qleetos.io"))
        .collect())
}

fn chart_crd_count() -> Result<usize> {
    let dir = Path::new(CHART).join("crds");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        })
        .count())
}

/// Everything of the release still stored: any object in its namespace but what Kubernetes
/// puts in every namespace, and cluster-wide objects named after QleetOS, labelled as part of
/// it or of its own kinds (CRDs excepted).
async fn leftovers(kubeconfig: &Path) -> Result<Option<()>> {
    let mut left = Vec::new();
    for resource in api_resources(kubeconfig, true).await? {
        for name in names(&get(kubeconfig, &[&resource, "-n", NAMESPACE]).await?) {
            let built_in = matches!(
                (resource.as_str(), name.as_str()),
                ("serviceaccounts", "default") | ("configmaps", "kube-root-ca.crt")
            ) || resource.starts_with("events");
            if !built_in {
                left.push(format!("{resource}/{name}"));
            }
        }
    }
    for resource in api_resources(kubeconfig, false).await? {
        // Helm keeps CRDs and the namespace it created.
        if resource == "customresourcedefinitions.apiextensions.k8s.io" || resource == "namespaces"
        {
            continue;
        }
        for object in get(kubeconfig, &[&resource]).await? {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            if name.starts_with("qleetos")
                || resource.ends_with(".qleetos.io")
                || object["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qleetos"
            {
                left.push(format!("{resource}/{name}"));
            }
        }
    }
    // Volumes the NATS servers used are released, not bound to a claim of QleetOS.
    for volume in get(kubeconfig, &["pv"]).await? {
        if volume["status"]["phase"] == "Bound" {
            left.push(format!(
                "persistentvolume {} still bound",
                volume["metadata"]["name"]
            ));
        }
    }
    if left.is_empty() {
        Ok(Some(()))
    } else {
        bail!("left after helm uninstall: {left:?}")
    }
}

async fn api_resources(kubeconfig: &Path, namespaced: bool) -> Result<Vec<String>> {
    let namespaced = format!("--namespaced={namespaced}");
    let out = kubectl(
        kubeconfig,
        &["api-resources", "--verbs=list", &namespaced, "-o", "name"],
    )
    .await?;
    Ok(out.lines().map(str::to_owned).collect())
}

async fn get(kubeconfig: &Path, args: &[&str]) -> Result<Vec<Value>> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let list: Value = serde_json::from_str(&kubectl(kubeconfig, &all).await?)?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn names(items: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}
