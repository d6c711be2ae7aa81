//! The QleetOS environment: a management cluster with the QleetOS CRDs, workload clusters
//! registered as KubernetesRuntimes, and operator processes. Used by the tests and by
//! `qleetos-env` (`make env-up`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::conditions;
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use qleetos_crds::admission::WORKLOAD_FINALIZER;
use qleetos_crds::{
    KubernetesRuntime, KubernetesRuntimeSpec, RuntimeConnection, SecretKeyRef, TenantPolicy,
};

use crate::binaries::Binaries;
use crate::cluster::{Cluster, ClusterSpec};
use crate::error::Error;
use crate::nats::{NatsServer, NatsUser};
use crate::operator::{OperatorOptions, OperatorProcess};

/// Namespace of the runtime kubeconfig Secrets in the management cluster.
pub const SYSTEM_NAMESPACE: &str = "qleetos-system";
const FIELD_MANAGER: &str = "qleetos-e2e";
/// The field manager of the lab label, apart from [`FIELD_MANAGER`] so that a later
/// [`ensure_namespace`] of the same namespace (e.g. by a helper applying a Workload) keeps it.
const LAB_FIELD_MANAGER: &str = "qleetos-e2e-lab";
/// The TenantPolicy the environment applies at start, and the label of the management
/// namespaces it selects ([`ensure_lab_namespace`]).
pub const LAB_POLICY: &str = "e2e-lab";
pub const LAB_LABEL: &str = "qleetos.io/e2e-lab";
/// The hosts the lab policy grants: the zone of the test DNS server.
pub const LAB_HOSTS: &str = "*.qleetos.test";
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// A workload cluster to start and how to register it.
#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    pub name: String,
    pub region: String,
    pub provider: String,
    pub labels: BTreeMap<String, String>,
    pub fake_nodes: usize,
    /// What operations say the runtime costs.
    pub cost: Option<qleetos_crds::Cost>,
    /// Simulated resource usage and metrics-server (see `ClusterSpec::metrics`).
    pub metrics: bool,
}

impl RuntimeSpec {
    /// A runtime of `nodes` kwok nodes priced `per_node_hour` (and 0.10 per cluster-hour).
    pub fn priced(name: &str, region: &str, nodes: usize, per_node_hour: &str) -> Self {
        let mut spec = Self::new(name, region, &[]);
        spec.fake_nodes = nodes;
        spec.cost = Some(qleetos_crds::Cost {
            per_node_hour: Some(per_node_hour.to_owned()),
            per_cluster_hour: Some("0.10".to_owned()),
        });
        spec
    }

    pub fn new(name: &str, region: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_owned(),
            region: region.to_owned(),
            provider: "local".to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            fake_nodes: 1,
            cost: None,
            metrics: false,
        }
    }
}

/// The default local setup: two workload clusters in two regions.
pub fn default_runtimes() -> Vec<RuntimeSpec> {
    vec![
        RuntimeSpec::new(
            "eu-west",
            "eu-west-1",
            &[("tier", "prod"), ("qleetos.io/zone", "eu")],
        ),
        RuntimeSpec::new(
            "us-east",
            "us-east-1",
            &[("tier", "prod"), ("qleetos.io/zone", "us")],
        ),
    ]
}

/// Running clusters and operators; everything stops when this is dropped.
#[derive(Debug)]
pub struct Environment {
    dir: PathBuf,
    pub management: Cluster,
    pub runtimes: Vec<(RuntimeSpec, Cluster)>,
    pub nats: NatsServer,
    /// The other servers of a NATS cluster (none with a single server).
    pub nats_peers: Vec<NatsServer>,
    operators: Vec<OperatorProcess>,
    operators_started: usize,
}

impl Environment {
    /// Starts the management cluster and every runtime in parallel, installs the CRDs and
    /// registers each runtime with its kubeconfig Secret.
    pub async fn start(dir: &Path, runtimes: Vec<RuntimeSpec>) -> Result<Self, Error> {
        Self::start_with_nats_auth(dir, runtimes, None).await
    }

    /// Like [`start`](Self::start), with a NATS server that requires `nats_auth` of every
    /// client; the operators started later get the credentials.
    pub async fn start_with_nats_auth(
        dir: &Path,
        runtimes: Vec<RuntimeSpec>,
        nats_auth: Option<NatsUser>,
    ) -> Result<Self, Error> {
        let nats_dir = dir.join("nats");
        let nats = async move {
            Ok(vec![
                NatsServer::start_with_auth(&nats_dir, nats_auth).await?,
            ])
        };
        Self::start_with_broker(dir, runtimes, nats).await
    }

    /// Like [`start`](Self::start), with a cluster of `servers` NATS servers; the operators
    /// started later connect to all of them and replicate their streams on all of them.
    pub async fn start_with_nats_cluster(
        dir: &Path,
        runtimes: Vec<RuntimeSpec>,
        servers: usize,
    ) -> Result<Self, Error> {
        let nats_dir = dir.join("nats");
        let nats = async move { NatsServer::start_cluster(&nats_dir, servers).await };
        Self::start_with_broker(dir, runtimes, nats).await
    }

    async fn start_with_broker(
        dir: &Path,
        runtimes: Vec<RuntimeSpec>,
        nats: impl Future<Output = Result<Vec<NatsServer>, Error>>,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let workload_starts = runtimes.iter().map(|r| {
            let spec = ClusterSpec::workload(r.name.clone(), r.fake_nodes);
            let spec = if r.metrics { spec.with_metrics() } else { spec };
            Cluster::start(spec, dir)
        });
        let (management, workloads, nats) = tokio::join!(
            Cluster::start(ClusterSpec::management("management"), dir),
            futures::future::join_all(workload_starts),
            nats
        );
        let management = management?;
        let mut nats = nats?.into_iter();
        let (Some(first), peers) = (nats.next(), nats.collect()) else {
            return Err(Error::Setup("no NATS server started".into()));
        };
        let workloads = workloads.into_iter().collect::<Result<Vec<_>, _>>()?;
        let env = Self {
            dir: dir.to_owned(),
            management,
            runtimes: runtimes.into_iter().zip(workloads).collect(),
            nats: first,
            nats_peers: peers,
            operators: Vec::new(),
            operators_started: 0,
        };
        let client = env.management.client().await?;
        install_crds(&client).await?;
        apply_lab_policy(&client).await?;
        ensure_namespace(&client, SYSTEM_NAMESPACE).await?;
        for (spec, cluster) in &env.runtimes {
            register_runtime(&client, spec, cluster).await?;
        }
        Ok(env)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every NATS server's URL, comma-separated (the form the operator and gateway take).
    pub fn nats_url(&self) -> String {
        self.nats_servers()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every NATS server: the first, then its cluster peers.
    pub fn nats_servers(&self) -> impl Iterator<Item = &NatsServer> {
        std::iter::once(&self.nats).chain(&self.nats_peers)
    }

    pub fn nats_servers_mut(&mut self) -> impl Iterator<Item = &mut NatsServer> {
        std::iter::once(&mut self.nats).chain(&mut self.nats_peers)
    }

    /// What the operator and gateway need to reach NATS: credentials, and as many stream
    /// replicas as there are servers.
    pub fn nats_client_env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let mut env = self.nats.client_env();
        let replicas = (1 + self.nats_peers.len()).to_string();
        env.push(("QLEETOS_NATS_REPLICAS".into(), replicas.into()));
        env
    }

    /// Admin client of the management cluster.
    pub async fn management_client(&self) -> Result<Client, Error> {
        self.management.client().await
    }

    /// The workload cluster registered as runtime `name`.
    pub fn runtime(&self, name: &str) -> Option<&Cluster> {
        self.runtimes
            .iter()
            .find(|(s, _)| s.name == name)
            .map(|(_, c)| c)
    }

    pub fn runtime_mut(&mut self, name: &str) -> Option<&mut Cluster> {
        self.runtimes
            .iter_mut()
            .find(|(s, _)| s.name == name)
            .map(|(_, c)| c)
    }

    /// Starts one more operator process against the management cluster.
    pub async fn start_operator(
        &mut self,
        options: OperatorOptions,
    ) -> Result<&OperatorProcess, Error> {
        let index = self.operators_started;
        self.operators_started += 1;
        let mut options = options;
        options
            .extra_args
            .extend(local_clusters_args(&self.dir).await?);
        let operator = OperatorProcess::start_with_env(
            &self.dir,
            index,
            self.management.kubeconfig_path(),
            &self.nats_url(),
            options,
            self.nats_client_env(),
        )
        .await?;
        self.operators.push(operator);
        Ok(&self.operators[self.operators.len() - 1])
    }

    pub fn operators(&self) -> &[OperatorProcess] {
        &self.operators
    }

    pub fn operators_mut(&mut self) -> &mut [OperatorProcess] {
        &mut self.operators
    }

    /// Stops every operator process (their logs stay on disk).
    pub async fn stop_operators(&mut self) {
        for operator in &mut self.operators {
            operator.stop().await;
        }
        self.operators.clear();
    }

    /// Where the operators' `Local` provider keeps the clusters it provisions.
    pub fn local_clusters_dir(&self) -> PathBuf {
        local_clusters_dir(&self.dir)
    }

    /// Stops the operators, then every cluster (those the operators provisioned too).
    pub async fn stop(mut self) {
        for operator in &mut self.operators {
            operator.stop().await;
        }
        crate::local_clusters::delete_all(&local_clusters_dir(&self.dir)).await;
        for (_, cluster) in self.runtimes {
            cluster.stop().await;
        }
        self.nats.stop().await;
        for server in &mut self.nats_peers {
            server.stop().await;
        }
        self.management.stop().await;
    }
}

/// Where the `Local` provider of an environment started in `dir` keeps its clusters.
pub fn local_clusters_dir(dir: &Path) -> PathBuf {
    dir.join("local-clusters")
}

/// The flags enabling the operator's `Local` provider with the test binaries.
async fn local_clusters_args(dir: &Path) -> Result<Vec<String>, Error> {
    let binaries = Binaries::get().await?;
    let bin_dir = binaries
        .kwokctl
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(vec![
        format!("--local-clusters-bin-dir={}", bin_dir.display()),
        format!("--local-clusters-etcd={}", binaries.etcd.display()),
        format!("--local-clusters-dir={}", local_clusters_dir(dir).display()),
    ])
}

/// How long the API server may take to start applying a new admission policy.
const ADMISSION_POLICY_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies every QleetOS CRD and waits until the API server serves it.
pub async fn install_crds(client: &Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in qleetos_crds::all_crds() {
        let name = crd.name_any();
        crds.patch(&name, &params, &Patch::Apply(&crd)).await?;
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(CRD_ESTABLISH_TIMEOUT, established)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("CRD {name} to be established"),
                timeout: CRD_ESTABLISH_TIMEOUT,
                last_error: None,
            })?
            .map_err(|e| Error::Timeout {
                what: format!("CRD {name} to be established"),
                timeout: CRD_ESTABLISH_TIMEOUT,
                last_error: Some(e.to_string()),
            })?;
    }
    install_admission_policies(client).await
}

/// Applies QleetOS's admission policies and their bindings (a dependency's parameters
/// against its ServiceProfile; the Workload finalizer set at creation), as the chart does.
pub async fn install_admission_policies(client: &Client) -> Result<(), Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for object in qleetos_crds::admission::admission_objects() {
        let object: DynamicObject = serde_json::from_value(object)
            .map_err(|e| Error::Setup(format!("admission policy: {e}")))?;
        let types = object.types.clone().unwrap_or_default();
        let gvk = GroupVersionKind::try_from(&types)
            .map_err(|e| Error::Setup(format!("admission policy: {e}")))?;
        let resource = ApiResource::from_gvk(&gvk);
        Api::<DynamicObject>::all_with(client.clone(), &resource)
            .patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await?;
    }
    workload_finalizer_enforced(client).await
}

/// Waits until the API server applies the Workload finalizer policy: it compiles a new policy
/// a moment after it is created, and Workloads created before that would not get it. Asks by
/// a dry-run creation, which goes through admission and stores nothing.
async fn workload_finalizer_enforced(client: &Client) -> Result<(), Error> {
    let workloads: Api<qleetos_crds::Workload> = Api::namespaced(client.clone(), "default");
    let probe: qleetos_crds::Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "qleetos-admission-probe"},
        "spec": {"manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}}],
                 "placement": {"regions": ["probe"]}},
    }))
    .map_err(|e| Error::Setup(format!("admission probe: {e}")))?;
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + ADMISSION_POLICY_TIMEOUT;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match workloads.create(&dry_run, &probe).await {
            Ok(created) if created.finalizers().iter().any(|f| f == WORKLOAD_FINALIZER) => {
                return Ok(());
            }
            Ok(created) => last = format!("finalizers {:?}", created.finalizers()),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Timeout {
        what: "the Workload finalizer admission policy to take effect".into(),
        timeout: ADMISSION_POLICY_TIMEOUT,
        last_error: Some(last),
    })
}

pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    namespaces
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&namespace),
        )
        .await?;
    Ok(())
}

/// Creates (or keeps) management namespace `name` labelled `qleetos.io/e2e-lab: "true"`, which
/// the environment's TenantPolicy `e2e-lab` selects: hosts under `qleetos.test` and clusters
/// on demand from any KubernetesRuntimeProfile, which no namespace gets by default. For
/// trials that expose hosts or provision; a namespace testing a restrictive policy must not
/// be one (policies add up).
pub async fn ensure_lab_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {LAB_LABEL: "true"}}
    });
    namespaces
        .patch(
            name,
            &PatchParams::apply(LAB_FIELD_MANAGER).force(),
            &Patch::Apply(&namespace),
        )
        .await?;
    Ok(())
}

/// The cluster-scoped TenantPolicy `e2e-lab`: namespaces labelled by
/// [`ensure_lab_namespace`] may use hosts `*.qleetos.test`; everything else is left absent
/// (any runtime profile, capability and ServiceProfile; their own runtime namespace;
/// namespaced kinds), as with no policy.
pub fn lab_policy() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "qleetos.io/v1alpha1", "kind": "TenantPolicy",
        "metadata": {"name": LAB_POLICY},
        "spec": {
            "namespaceSelector": {"matchLabels": {LAB_LABEL: "true"}},
            "hosts": [LAB_HOSTS],
        }
    })
}

async fn apply_lab_policy(client: &Client) -> Result<(), Error> {
    Api::<TenantPolicy>::all(client.clone())
        .patch(
            LAB_POLICY,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lab_policy()),
        )
        .await?;
    Ok(())
}

/// Deletes the TenantPolicy `e2e-lab` again, for an environment people use (`make run`),
/// where operations' own policies (examples/tenant-policies.yaml) are what counts.
pub async fn delete_lab_policy(client: &Client) -> Result<(), Error> {
    match Api::<TenantPolicy>::all(client.clone())
        .delete(LAB_POLICY, &Default::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Stores the cluster's kubeconfig in a Secret and creates its KubernetesRuntime.
pub async fn register_runtime(
    client: &Client,
    spec: &RuntimeSpec,
    cluster: &Cluster,
) -> Result<(), Error> {
    let secret_name = format!("runtime-{}", spec.name);
    let mut secret = Secret::default();
    secret.metadata.name = Some(secret_name.clone());
    secret.metadata.namespace = Some(SYSTEM_NAMESPACE.to_owned());
    secret.data = Some(
        [(
            "kubeconfig".to_owned(),
            ByteString(cluster.kubeconfig_yaml().into_bytes()),
        )]
        .into(),
    );
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<Secret>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .patch(&secret_name, &params, &Patch::Apply(&secret))
        .await?;
    let mut runtime = KubernetesRuntime::new(
        &spec.name,
        KubernetesRuntimeSpec {
            provider: spec.provider.clone(),
            region: spec.region.clone(),
            location: None,
            deletion_policy: Default::default(),
            provisioning: None,
            cost: spec.cost.clone(),
            connection: RuntimeConnection {
                kubeconfig_secret_ref: SecretKeyRef {
                    namespace: SYSTEM_NAMESPACE.to_owned(),
                    name: secret_name,
                    key: "kubeconfig".to_owned(),
                },
            },
        },
    );
    runtime.metadata.labels = Some(spec.labels.clone());
    Api::<KubernetesRuntime>::all(client.clone())
        .patch(&spec.name, &params, &Patch::Apply(&runtime))
        .await?;
    Ok(())
}
