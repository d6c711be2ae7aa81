//! `qleetos-env teardown`: deletes a sample's namespace and prints each layer as it goes
//! (the app, its RPC node, the support services, then the idle cluster), ending with what is
//! left of it: objects in the management cluster, clusters, processes and folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use qleetos_crds::{KubernetesRuntime, SupportService, Workload, WorkloadServiceDependency};
use qleetos_e2e::environment::local_clusters_dir;
use qleetos_e2e::{fleet, local_clusters};

const POLL: Duration = Duration::from_secs(1);

pub struct Teardown<'a> {
    pub dir: &'a Path,
    pub management: Client,
    pub namespace: String,
    pub timeout: Duration,
}

/// What the namespace's Workloads ran on, read before anything is deleted.
struct Runtime {
    name: String,
    kubeconfig_secret: (String, String),
    stand_in_pids: BTreeMap<String, u32>,
}

impl Teardown<'_> {
    pub async fn run(&self) -> Result<()> {
        let runtimes = self.runtimes().await?;
        let started = Instant::now();
        self.delete().await?;
        let mut previous = 0.0;
        let mut print = |what: &str, line: String| {
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "[{elapsed:>6.1}s  +{:>5.1}s] {what}: {line}",
                elapsed - previous
            );
            previous = elapsed;
        };
        self.wait("app removed", || self.app_gone()).await?;
        print(
            "app removed",
            format!("no Workload left in {}", self.namespace),
        );
        for runtime in &runtimes {
            self.wait("RPC node removed", || self.rpc_nodes_gone(runtime))
                .await?;
            print(
                "RPC node removed",
                format!(
                    "no service dependency, RPC node or anvil left on {}",
                    runtime.name
                ),
            );
            self.wait("idle period over", || self.retiring(runtime))
                .await?;
            print(
                "idle period over",
                format!("runtime {} is being retired", runtime.name),
            );
            self.wait("support services removed", || {
                self.support_services_gone(runtime)
            })
            .await?;
            print(
                "support services removed",
                format!("no SupportService left on {}", runtime.name),
            );
            self.wait("idle cluster removed", || self.cluster_gone(runtime))
                .await?;
            print(
                "idle cluster removed",
                format!("runtime {} and its kwokctl cluster are gone", runtime.name),
            );
        }
        self.count_what_is_left(&runtimes).await
    }

    async fn runtimes(&self) -> Result<Vec<Runtime>> {
        let workloads = Api::<Workload>::namespaced(self.management.clone(), &self.namespace)
            .list(&ListParams::default())
            .await?;
        let published = fleet::read_published(self.dir);
        let mut names: Vec<String> = workloads
            .items
            .iter()
            .flat_map(|w| w.status.iter().flat_map(|s| s.placements.iter()))
            .map(|p| p.runtime.clone())
            .collect();
        names.sort();
        names.dedup();
        let api = Api::<KubernetesRuntime>::all(self.management.clone());
        let mut runtimes = Vec::new();
        for name in names {
            let Some(runtime) = api.get_opt(&name).await? else {
                continue;
            };
            if runtime.profile().is_none() {
                continue; // registered: not the sample's to remove
            }
            let reference = &runtime.spec.connection.kubeconfig_secret_ref;
            runtimes.push(Runtime {
                stand_in_pids: published
                    .runtimes
                    .get(&name)
                    .map(|r| r.pids.clone())
                    .unwrap_or_default(),
                kubeconfig_secret: (reference.namespace.clone(), reference.name.clone()),
                name,
            });
        }
        Ok(runtimes)
    }

    /// The Workloads first, then the service dependencies, then the namespace.
    async fn delete(&self) -> Result<()> {
        let params = DeleteParams::default();
        let workloads = Api::<Workload>::namespaced(self.management.clone(), &self.namespace);
        for workload in workloads.list(&ListParams::default()).await? {
            workloads.delete(&workload.name_any(), &params).await?;
        }
        let dependencies =
            Api::<WorkloadServiceDependency>::namespaced(self.management.clone(), &self.namespace);
        for dependency in dependencies.list(&ListParams::default()).await? {
            dependencies.delete(&dependency.name_any(), &params).await?;
        }
        let namespaces = Api::<Namespace>::all(self.management.clone());
        if namespaces.get_opt(&self.namespace).await?.is_some() {
            namespaces.delete(&self.namespace, &params).await?;
        }
        println!(
            "deleted the Workloads, service dependencies and namespace {}",
            self.namespace
        );
        Ok(())
    }

    async fn wait<F, Fut>(&self, what: &str, mut done: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            match done().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::debug!(step = what, error = format!("{e:#}"), "not yet"),
            }
            if Instant::now() > deadline {
                bail!("{what}: not after {:?}", self.timeout);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn app_gone(&self) -> Result<bool> {
        let workloads = Api::<Workload>::namespaced(self.management.clone(), &self.namespace);
        Ok(workloads
            .list(&ListParams::default())
            .await?
            .items
            .is_empty())
    }

    async fn rpc_nodes_gone(&self, runtime: &Runtime) -> Result<bool> {
        let dependencies =
            Api::<WorkloadServiceDependency>::namespaced(self.management.clone(), &self.namespace);
        let units = self.support_services_on(runtime, true).await?;
        let anvils = fleet::read_published(self.dir)
            .runtimes
            .get(&runtime.name)
            .map_or(0, |r| r.rpc_nodes.len());
        Ok(dependencies
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
            && units == 0
            && anvils == 0)
    }

    /// The runtime is being deleted (or is gone already).
    async fn retiring(&self, runtime: &Runtime) -> Result<bool> {
        let api = Api::<KubernetesRuntime>::all(self.management.clone());
        Ok(api
            .get_opt(&runtime.name)
            .await?
            .is_none_or(|r| r.metadata.deletion_timestamp.is_some()))
    }

    async fn support_services_gone(&self, runtime: &Runtime) -> Result<bool> {
        Ok(self.support_services_on(runtime, false).await? == 0)
    }

    async fn cluster_gone(&self, runtime: &Runtime) -> Result<bool> {
        let api = Api::<KubernetesRuntime>::all(self.management.clone());
        let clusters = local_clusters::clusters(&self.local_clusters());
        Ok(api.get_opt(&runtime.name).await?.is_none() && !clusters.contains(&runtime.name))
    }

    /// SupportServices on `runtime`: those of service dependencies (`units`) or the others.
    async fn support_services_on(&self, runtime: &Runtime, units: bool) -> Result<usize> {
        let services = Api::<SupportService>::all(self.management.clone())
            .list(&ListParams::default())
            .await?;
        Ok(services
            .items
            .iter()
            .filter(|s| {
                s.spec.runtime_ref.name == runtime.name && s.spec.service.is_some() == units
            })
            .count())
    }

    fn local_clusters(&self) -> PathBuf {
        local_clusters_dir(&self.dir.join("clusters"))
    }

    /// Counts what is left, and fails unless it is nothing.
    async fn count_what_is_left(&self, runtimes: &[Runtime]) -> Result<()> {
        let mut objects = usize::from(!self.app_gone().await?);
        objects += usize::from(
            Api::<Namespace>::all(self.management.clone())
                .get_opt(&self.namespace)
                .await?
                .is_some(),
        );
        let (mut clusters, mut processes, mut folders) = (0, 0, 0);
        let local = self.local_clusters();
        // Waits for the fleet to notice, the positive sign that it has stopped its stand-ins.
        for runtime in runtimes {
            self.wait("stand-ins stopped", || async {
                Ok(!fleet::read_published(self.dir)
                    .runtimes
                    .contains_key(&runtime.name))
            })
            .await?;
            objects += self.support_services_on(runtime, true).await?
                + self.support_services_on(runtime, false).await?;
            objects += usize::from(
                Api::<KubernetesRuntime>::all(self.management.clone())
                    .get_opt(&runtime.name)
                    .await?
                    .is_some(),
            );
            let (namespace, secret) = &runtime.kubeconfig_secret;
            objects += usize::from(
                Api::<Secret>::namespaced(self.management.clone(), namespace)
                    .get_opt(secret)
                    .await?
                    .is_some(),
            );
            clusters += usize::from(local_clusters::clusters(&local).contains(&runtime.name));
            processes += local_clusters::processes_of(&local, &runtime.name).len();
            processes += runtime
                .stand_in_pids
                .values()
                .filter(|pid| fleet::alive(**pid))
                .count();
            folders += [
                local.join("clusters").join(&runtime.name),
                self.dir.join("stand-ins").join(&runtime.name),
                self.dir
                    .join("runtimes")
                    .join(format!("{}.kubeconfig", runtime.name)),
            ]
            .iter()
            .filter(|path| path.exists())
            .count();
        }
        println!(
            "left: {objects} objects in the management cluster, {clusters} clusters, \
             {processes} processes (cluster and stand-ins), {folders} folders and files"
        );
        if objects + clusters + processes + folders > 0 {
            bail!("something was left behind");
        }
        Ok(())
    }
}
