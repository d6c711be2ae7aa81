//! `qleetos-env story`: the layers of a Workload deployed into an empty region, each printed
//! as it becomes true, with the time since the Workload was created.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use qleetos_crds::{
    Conditions, DependencyState, KubernetesRuntime, ProvisioningPhase, SupportService, Workload,
    WorkloadServiceDependency,
};
use qleetos_e2e::{exposure, fleet, jsonrpc};

use crate::{State, client_from, rpc_urls};

/// How often each layer is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What the story is about and where to look.
pub struct Story<'a> {
    pub dir: &'a std::path::Path,
    pub state: &'a State,
    pub management: Client,
    pub namespace: String,
    pub workload: String,
    pub timeout: Duration,
}

/// What the earlier layers found, for the later ones.
#[derive(Default)]
struct Found {
    runtime: String,
    cluster: Option<Client>,
    host: String,
    ca: Vec<u8>,
    https_port: u16,
}

impl Story<'_> {
    pub async fn tell(&self) -> Result<()> {
        let workloads: Api<Workload> = Api::namespaced(self.management.clone(), &self.namespace);
        let workload = workloads
            .get(&self.workload)
            .await
            .with_context(|| format!("Workload {}/{}", self.namespace, self.workload))?;
        let created = workload
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .context("creation time")?;
        println!(
            "{}/{}: in region(s) {} with no infrastructure, applied at {created}",
            self.namespace,
            self.workload,
            workload.spec.placement.regions.join(", ")
        );
        let mut found = Found::default();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut previous = 0.0;
        for (step, what) in STEPS.iter().enumerate() {
            let line = loop {
                match self.step(step, &workload, &mut found).await {
                    Ok(Some(line)) => break line,
                    Ok(None) => {}
                    Err(e) => tracing::debug!(step = what, error = format!("{e:#}"), "not yet"),
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("{what}: not after {:?}", self.timeout);
                }
                tokio::time::sleep(POLL).await;
            };
            let elapsed = elapsed_since(created);
            println!(
                "[{elapsed:>6.1}s  +{:>5.1}s] {what}: {line}",
                (elapsed - previous).max(0.0)
            );
            previous = elapsed;
        }
        Ok(())
    }

    async fn step(
        &self,
        step: usize,
        workload: &Workload,
        found: &mut Found,
    ) -> Result<Option<String>> {
        match step {
            0 => self.cluster(workload, found).await,
            1 => self.support_services(workload, found).await,
            2 => self.rpc_node(found).await,
            3 => self.certificate(found).await,
            4 => self.dns(found).await,
            5 => self.https(found).await,
            6 => self.rpc_answer(found).await,
            _ => self.app_ready().await,
        }
    }

    async fn cluster(&self, workload: &Workload, found: &mut Found) -> Result<Option<String>> {
        let runtimes = Api::<KubernetesRuntime>::all(self.management.clone())
            .list(&ListParams::default())
            .await?;
        let regions = &workload.spec.placement.regions;
        let Some(runtime) = runtimes.items.into_iter().find(|r| {
            let status = r.status.clone().unwrap_or_default();
            r.profile().is_some()
                && regions.contains(&r.spec.region)
                && status.is_ready()
                && status.provisioning.map(|p| p.phase) == Some(ProvisioningPhase::Provisioned)
        }) else {
            return Ok(None);
        };
        let status = runtime.status.clone().unwrap_or_default();
        found.runtime = runtime.name_any();
        Ok(Some(format!(
            "runtime {} in {} from profile {} (kwokctl), Kubernetes {}, {} nodes",
            found.runtime,
            runtime.spec.region,
            runtime.profile().unwrap_or_default(),
            status.server_version.unwrap_or_default(),
            status.node_count.unwrap_or_default()
        )))
    }

    async fn support_services(&self, workload: &Workload, found: &Found) -> Result<Option<String>> {
        let expose = workload.spec.expose.as_ref();
        let wanted = 1
            + usize::from(expose.is_some_and(|e| e.tls))
            + usize::from(expose.is_some_and(|e| e.dns));
        let services = Api::<SupportService>::all(self.management.clone())
            .list(&ListParams::default())
            .await?;
        let on_runtime: Vec<_> = services
            .items
            .iter()
            .filter(|s| s.spec.runtime_ref.name == found.runtime && s.spec.service.is_none())
            .collect();
        let ready = on_runtime
            .iter()
            .all(|s| s.state() == DependencyState::Ready);
        if on_runtime.len() < wanted || !ready {
            return Ok(None);
        }
        // A charted service shows its chart and the version rendered.
        let names: Vec<_> = on_runtime
            .iter()
            .map(
                |s| match s.status.as_ref().and_then(|status| status.chart.as_ref()) {
                    Some(chart) => format!(
                        "{} (chart {} {})",
                        s.spec.profile_ref.name, chart.name, chart.version
                    ),
                    None => s.spec.profile_ref.name.clone(),
                },
            )
            .collect();
        Ok(Some(format!(
            "{} Ready on {}",
            names.join(", "),
            found.runtime
        )))
    }

    async fn rpc_node(&self, found: &Found) -> Result<Option<String>> {
        let dependencies =
            Api::<WorkloadServiceDependency>::namespaced(self.management.clone(), &self.namespace)
                .list(&ListParams::default())
                .await?;
        let ready = !dependencies.items.is_empty()
            && dependencies.items.iter().all(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.condition(qleetos_crds::READY))
                    .is_some_and(|c| c.is_true())
            });
        if !ready {
            return Ok(None);
        }
        let names: Vec<_> = dependencies
            .items
            .iter()
            .map(|d| format!("{} (profile {})", d.name_any(), d.spec.profile_ref.name))
            .collect();
        Ok(Some(format!(
            "{} Ready on {}",
            names.join(", "),
            found.runtime
        )))
    }

    async fn certificate(&self, found: &mut Found) -> Result<Option<String>> {
        let Some(runtime) = fleet::read_published(self.dir)
            .runtimes
            .remove(&found.runtime)
        else {
            return Ok(None);
        };
        let cluster = client_from(&runtime.kubeconfig).await?;
        found.https_port = runtime.https_port;
        let ingresses = Api::<Ingress>::namespaced(cluster.clone(), &self.namespace)
            .list(&ListParams::default())
            .await?;
        let Some((host, secret)) = ingresses.items.iter().find_map(tls_route) else {
            return Ok(None);
        };
        let (line, ca) = exposure::certificate(&cluster, &self.namespace, &secret).await?;
        let Some(ca) = ca else { return Ok(None) };
        (found.host, found.ca, found.cluster) = (host, ca, Some(cluster));
        Ok(Some(line))
    }

    async fn dns(&self, found: &Found) -> Result<Option<String>> {
        let port = self.state.dns_port.context("no DNS server")?;
        let answers = qleetos_e2e::dns::query(port, &found.host, "A").await?;
        Ok((!answers.is_empty()).then(|| {
            format!(
                "{} A {} (bind9 on 127.0.0.1:{port}, written by external-dns)",
                found.host,
                answers.join(", ")
            )
        }))
    }

    async fn https(&self, found: &Found) -> Result<Option<String>> {
        let outcome = exposure::https_request(&found.host, found.https_port, &found.ca).await?;
        Ok(outcome
            .0
            .then(|| exposure::https_outcome(&found.host, found.https_port, outcome)))
    }

    async fn rpc_answer(&self, found: &Found) -> Result<Option<String>> {
        let cluster = found.cluster.clone().context("no cluster")?;
        let published = fleet::read_published(self.dir)
            .runtimes
            .remove(&found.runtime);
        for (secret, url) in rpc_urls(&cluster, &self.namespace).await? {
            let Some(&address) = published.as_ref().and_then(|r| r.rpc_nodes.get(&url)) else {
                continue;
            };
            let block = jsonrpc::block_number(&url, Some(address)).await?;
            let chain = jsonrpc::chain_id(&url, Some(address)).await?;
            return Ok(Some(format!(
                "eth_blockNumber {block}, chain id {chain} from {} (Secret {secret}; anvil on {address})",
                crate::shown_url(&url)
            )));
        }
        Ok(None)
    }

    async fn app_ready(&self) -> Result<Option<String>> {
        let workload = Api::<Workload>::namespaced(self.management.clone(), &self.namespace)
            .get(&self.workload)
            .await?;
        let status = workload.status.unwrap_or_default();
        let current = status.observed_generation == workload.metadata.generation;
        Ok((current && status.is_ready()).then(|| {
            let placements: Vec<_> = status
                .placements
                .iter()
                .map(|p| format!("{} ({})", p.runtime, p.region))
                .collect();
            format!(
                "Workload {} Ready on {}",
                self.workload,
                placements.join(", ")
            )
        }))
    }
}

const STEPS: [&str; 8] = [
    "cluster provisioned",
    "support services installed",
    "RPC node Ready",
    "certificate issued",
    "DNS answer",
    "HTTPS through Traefik",
    "RPC answer",
    "app Ready",
];

/// The first host of `ingress` with a TLS Secret, and that Secret.
fn tls_route(ingress: &Ingress) -> Option<(String, String)> {
    let spec = ingress.spec.as_ref()?;
    let tls = spec.tls.as_ref()?.first()?;
    Some((
        tls.hosts.as_ref()?.first()?.clone(),
        tls.secret_name.clone()?,
    ))
}

fn elapsed_since(created: k8s_openapi::jiff::Timestamp) -> f64 {
    k8s_openapi::jiff::Timestamp::now()
        .duration_since(created)
        .as_secs_f64()
}
