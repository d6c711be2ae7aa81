//! The test environment's node-group autoscaler: a stand-in for the cluster-autoscaler's
//! Cluster API provider, which cannot be built here (the module proxy refuses
//! `k8s.io/autoscaler/cluster-autoscaler`; docs/design.md). It keeps the
//! cluster-autoscaler's contract with Cluster API, so what QleetOS writes is what it reads:
//!
//! - a node group is a MachineDeployment carrying both
//!   `cluster.x-k8s.io/cluster-api-autoscaler-node-group-{min,max}-size` annotations; its
//!   nodes are those whose `spec.providerID` is one of its Machines';
//! - pods the scheduler marked `Unschedulable` grow the first group whose node (the
//!   `capacity.cluster-autoscaler.kubernetes.io/{cpu,memory}` annotations, else a member's
//!   allocatable) can hold them, by as many nodes as they need, up to `max`, through the
//!   MachineDeployment's scale subresource;
//! - a node empty (DaemonSet and mirror pods aside) for `scale_down_unneeded` is tainted,
//!   its Machine gets `cluster.x-k8s.io/delete-machine`, and the group shrinks by one, never
//!   below `min`.
//!
//! Cluster API and the environment's provider then create and remove the Machines and Nodes.

mod decide;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use qleetos_crds::Resources;
use qleetos_operator::capacity;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::error::Error;
use decide::{EmptySince, Group, Member, ReadyNode};

pub const MIN_SIZE: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
pub const MAX_SIZE: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";
const CAPACITY_CPU: &str = "capacity.cluster-autoscaler.kubernetes.io/cpu";
const CAPACITY_MEMORY: &str = "capacity.cluster-autoscaler.kubernetes.io/memory";
const DELETE_MACHINE: &str = "cluster.x-k8s.io/delete-machine";
const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";
/// The taint the cluster-autoscaler puts on a node it is removing.
const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
const FIELD_MANAGER: &str = "qleetos-node-scaler";

/// How often the scaler looks, and how long a node stays empty before it goes (the
/// cluster-autoscaler's `--scan-interval` and `--scale-down-unneeded-time`).
#[derive(Debug, Clone, Copy)]
pub struct NodeScalerSettings {
    pub scan_interval: Duration,
    pub scale_down_unneeded: Duration,
}

impl Default for NodeScalerSettings {
    fn default() -> Self {
        NodeScalerSettings {
            scan_interval: Duration::from_secs(1),
            scale_down_unneeded: Duration::from_secs(5),
        }
    }
}

/// The running scaler; dropping it stops it.
#[derive(Debug)]
pub struct NodeScaler {
    task: JoinHandle<()>,
}

impl NodeScaler {
    /// Scans every node group of the management cluster `management` until stopped.
    pub fn start(management: Client, settings: NodeScalerSettings) -> Self {
        let mut scaler = Scaler {
            management,
            settings,
            workload_clients: HashMap::new(),
            empty_since: EmptySince::default(),
        };
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(settings.scan_interval);
            loop {
                ticks.tick().await;
                if let Err(error) = scaler.scan().await {
                    tracing::warn!(%error, "node scaler: scan failed");
                }
            }
        });
        NodeScaler { task }
    }
}

impl Drop for NodeScaler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Cluster API Cluster: namespace and name.
type ClusterKey = (String, String);

struct Scaler {
    management: Client,
    settings: NodeScalerSettings,
    workload_clients: HashMap<ClusterKey, Client>,
    empty_since: EmptySince,
}

/// A MachineDeployment with the autoscaler's bounds.
struct NodeGroup {
    name: String,
    min: i32,
    max: i32,
    replicas: i32,
    capacity: Option<Resources>,
}

impl Scaler {
    async fn scan(&mut self) -> Result<(), Error> {
        let mut by_cluster: BTreeMap<ClusterKey, Vec<NodeGroup>> = BTreeMap::new();
        for deployment in super::api(&self.management, None, "MachineDeployment")
            .list(&ListParams::default())
            .await?
        {
            let cluster = deployment.labels().get(CLUSTER_NAME_LABEL).cloned();
            if let (Some(group), Some(cluster)) = (node_group(&deployment), cluster) {
                let key = (deployment.namespace().unwrap_or_default(), cluster);
                by_cluster.entry(key).or_default().push(group);
            }
        }
        for (key, groups) in by_cluster {
            if let Err(error) = self.scan_cluster(&key, &groups).await {
                tracing::warn!(cluster = key.1, %error, "node scaler: cannot scan the cluster");
                self.workload_clients.remove(&key);
            }
        }
        Ok(())
    }

    async fn scan_cluster(&mut self, key: &ClusterKey, groups: &[NodeGroup]) -> Result<(), Error> {
        let Some(workload) = self.workload_client(key).await? else {
            return Ok(());
        };
        let nodes = Api::<Node>::all(workload.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let pods = Api::<Pod>::all(workload.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let machines = super::api(&self.management, Some(&key.0), "Machine")
            .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={}", key.1)))
            .await?
            .items;
        let views: Vec<Group> = groups
            .iter()
            .map(|group| view(group, &machines, &nodes, &pods))
            .collect();
        let waiting: Vec<&Pod> = pods.iter().filter(|pod| unschedulable(pod)).collect();
        if !waiting.is_empty() {
            let pending: Vec<Resources> = waiting
                .iter()
                .map(|pod| capacity::requested(std::slice::from_ref(*pod)))
                .collect();
            if let Some(note) = self.grow(key, groups, &views, &pending).await? {
                let recorder = recorder(&workload);
                for pod in waiting {
                    publish(&recorder, "TriggeredScaleUp", &note, pod.object_ref(&())).await;
                }
            }
            return Ok(());
        }
        let now = Instant::now();
        for (group, view) in groups.iter().zip(&views) {
            self.empty_since.observe(view, now);
            let unneeded = self.settings.scale_down_unneeded;
            if let Some(member) = self.empty_since.removable(view, now, unneeded) {
                self.remove(key, group, member, &workload).await?;
            }
        }
        Ok(())
    }

    /// Grows the first group that can hold the waiting pods; returns what it did, as the
    /// cluster-autoscaler tells the pods.
    async fn grow(
        &self,
        key: &ClusterKey,
        groups: &[NodeGroup],
        views: &[Group],
        pending: &[Resources],
    ) -> Result<Option<String>, Error> {
        let Some((group, target)) = groups
            .iter()
            .zip(views)
            .find_map(|(group, view)| Some((group, decide::scale_up_to(view, pending)?)))
        else {
            return Ok(None);
        };
        tracing::info!(
            cluster = key.1,
            group = group.name,
            from = group.replicas,
            to = target,
            pending = pending.len(),
            "node scaler: scaling up for unschedulable pods"
        );
        self.scale(key, group, target).await?;
        Ok(Some(format!(
            "pod triggered scale-up: MachineDeployment {}/{} {}->{target} (max: {})",
            key.0, group.name, group.replicas, group.max
        )))
    }

    async fn remove(
        &self,
        key: &ClusterKey,
        group: &NodeGroup,
        member: &Member,
        workload: &Client,
    ) -> Result<(), Error> {
        let node = member.node.as_ref().map(|n| n.name.as_str()).unwrap_or("");
        tracing::info!(
            cluster = key.1,
            group = group.name,
            machine = member.machine,
            node,
            "node scaler: removing an empty node"
        );
        let taint =
            json!({"spec": {"taints": [{"key": TO_BE_DELETED_TAINT, "effect": "NoSchedule"}]}});
        let tainted = Api::<Node>::all(workload.clone())
            .patch(node, &patch_params(), &Patch::Merge(taint))
            .await?;
        let note = format!(
            "empty for {:?}: removing its Machine {}",
            self.settings.scale_down_unneeded, member.machine
        );
        let reference = tainted.object_ref(&());
        publish(&recorder(workload), "ScaleDown", &note, reference).await;
        let mark = json!({"metadata": {"annotations": {DELETE_MACHINE: "qleetos-node-scaler"}}});
        super::api(&self.management, Some(&key.0), "Machine")
            .patch(&member.machine, &patch_params(), &Patch::Merge(mark))
            .await?;
        self.scale(key, group, group.replicas - 1).await
    }

    async fn scale(&self, key: &ClusterKey, group: &NodeGroup, replicas: i32) -> Result<(), Error> {
        let body = json!({"spec": {"replicas": replicas}});
        super::api(&self.management, Some(&key.0), "MachineDeployment")
            .patch_scale(&group.name, &patch_params(), &Patch::Merge(body))
            .await?;
        Ok(())
    }

    /// A client for the cluster from Cluster API's `<cluster>-kubeconfig` Secret; `None`
    /// until the Secret exists.
    async fn workload_client(&mut self, key: &ClusterKey) -> Result<Option<Client>, Error> {
        if let Some(client) = self.workload_clients.get(key) {
            return Ok(Some(client.clone()));
        }
        let secrets: Api<Secret> = Api::namespaced(self.management.clone(), &key.0);
        let secret = secrets
            .get_opt(&super::kubeconfig_secret_name(&key.1))
            .await?;
        let Some(bytes) = secret.and_then(|s| s.data?.remove("value")) else {
            return Ok(None);
        };
        let yaml = String::from_utf8(bytes.0)
            .map_err(|_| Error::Setup(format!("kubeconfig of {} is not UTF-8", key.1)))?;
        let kubeconfig = Kubeconfig::from_yaml(&yaml)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let client = Client::try_from(config)?;
        self.workload_clients.insert(key.clone(), client.clone());
        Ok(Some(client))
    }
}

fn recorder(workload: &Client) -> Recorder {
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: None,
    };
    Recorder::new(workload.clone(), reporter)
}

/// Records a Normal Event on `reference`; a failure is only logged.
async fn publish(
    recorder: &Recorder,
    reason: &str,
    note: &str,
    reference: k8s_openapi::api::core::v1::ObjectReference,
) {
    let event = Event {
        type_: EventType::Normal,
        reason: reason.to_owned(),
        note: Some(note.to_owned()),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &reference).await {
        tracing::warn!(%error, reason, "node scaler: cannot record an Event");
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn node_group(deployment: &DynamicObject) -> Option<NodeGroup> {
    let annotations = deployment.annotations();
    let bound = |key: &str| annotations.get(key)?.parse::<i32>().ok();
    let capacity = capacity_annotations(deployment);
    Some(NodeGroup {
        name: deployment.name_any(),
        min: bound(MIN_SIZE)?,
        max: bound(MAX_SIZE)?,
        replicas: deployment.data["spec"]["replicas"]
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0),
        capacity,
    })
}

/// The node size the MachineDeployment declares, as the cluster-autoscaler reads it for a
/// group scaled to zero.
fn capacity_annotations(deployment: &DynamicObject) -> Option<Resources> {
    let annotations = deployment.annotations();
    let allocatable = [("cpu", CAPACITY_CPU), ("memory", CAPACITY_MEMORY)]
        .into_iter()
        .map(|(resource, key)| Some((resource.to_owned(), Quantity(annotations.get(key)?.clone()))))
        .collect::<Option<BTreeMap<_, _>>>()?;
    // Read as a node of that size would be, with the same quantity parsing.
    let node = Node {
        status: Some(NodeStatus {
            allocatable: Some(allocatable),
            ..NodeStatus::default()
        }),
        ..Node::default()
    };
    Some(capacity::allocatable(std::slice::from_ref(&node)))
}

/// The group's Machines with their Ready Nodes, and the size of one of its nodes.
fn view(group: &NodeGroup, machines: &[DynamicObject], nodes: &[Node], pods: &[Pod]) -> Group {
    let by_provider_id: HashMap<&str, &Node> = nodes
        .iter()
        .filter_map(|node| Some((node.spec.as_ref()?.provider_id.as_deref()?, node)))
        .collect();
    let mut template = group.capacity;
    let members = machines
        .iter()
        .filter(|m| m.labels().get(DEPLOYMENT_NAME_LABEL) == Some(&group.name))
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .map(|machine| {
            let node = machine.data["spec"]["providerID"]
                .as_str()
                .and_then(|id| by_provider_id.get(id))
                .filter(|node| ready(node));
            if let Some(node) = node {
                template.get_or_insert_with(|| capacity::allocatable(std::slice::from_ref(node)));
            }
            Member {
                machine: machine.name_any(),
                node: node.map(|node| ReadyNode {
                    name: node.name_any(),
                    empty: !pods.iter().any(|pod| holds(pod, &node.name_any())),
                }),
            }
        })
        .collect();
    Group {
        min: group.min,
        max: group.max,
        replicas: group.replicas,
        members,
        template,
    }
}

fn ready(node: &Node) -> bool {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether `pod` keeps node `node` in use: bound to it, not finished, neither a DaemonSet's
/// pod nor a mirror pod.
fn holds(pod: &Pod, node: &str) -> bool {
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    let daemon = pod.owner_references().iter().any(|o| o.kind == "DaemonSet");
    let mirror = pod
        .annotations()
        .contains_key("kubernetes.io/config.mirror");
    bound && !finished && !daemon && !mirror
}

/// Pending, and the scheduler said no node has room.
fn unschedulable(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Pending")
        && status.conditions.iter().flatten().any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
}
