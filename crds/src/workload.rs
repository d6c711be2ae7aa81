use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::chart::Chart;
use crate::condition::{Condition, Conditions};
use crate::expose::Expose;
use crate::manifest::Manifest;
use crate::staged::{StagedRolloutStatus, WorkloadRollout};

/// What a developer applies: the workload's Kubernetes objects, the images CI updates, and
/// where it runs. QleetOS creates one WorkloadInstance per selected runtime.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "Workload",
    doc = "A workload: its Kubernetes objects, the images CI updates and where it runs. QleetOS places one WorkloadInstance on each selected runtime and reports their health here.",
    plural = "workloads",
    namespaced,
    shortname = "wl",
    category = "qleetos",
    status = "WorkloadStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Placements",
        type_ = "string",
        json_path = ".status.readyPlacements",
        description = "ready placements / desired placements"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(crate::chart::ONE_SOURCE_RULE).message(crate::chart::ONE_SOURCE_MESSAGE))]
#[x_kube(validation = Rule::new(crate::chart::CHART_IMAGES_RULE).message(crate::chart::CHART_IMAGES_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// The Kubernetes objects making up the workload (Deployments, Services, ConfigMaps, any
    /// kind the runtime serves). Namespaced objects without `metadata.namespace` go to the
    /// namespace of the same name as this Workload's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::manifest::manifest_list_schema")]
    pub manifests: Vec<Manifest>,
    /// A Helm chart instead of `manifests`: QleetOS renders it for each runtime and applies
    /// the result as it applies manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<Chart>,
    /// Container name → image. Overrides the image of every container (and init container)
    /// with that name in every pod template of the manifests; with a `chart`, image key →
    /// image, written where `chart.images` says. CI updates these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Which runtimes (workload clusters) the workload runs on.
    pub placement: Placement,
    /// How the workload is reached: hosts, the Service behind them, TLS, DNS. QleetOS
    /// installs what the runtime lacks for it (ingress controller, cert-manager, DNS) and
    /// generates the route, certificate and DNS record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
    /// Further capabilities the workload needs in its runtime (any a SupportServiceProfile
    /// provides, e.g. `monitoring`); installed before the manifests are applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(inner(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ))]
    pub needs: Vec<String>,
    /// How a change reaches the placements: in waves gated on health (see
    /// `qleetctl rollout status workload NAME`). Absent: every placement at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<WorkloadRollout>,
    /// `Required`: a change is planned first and applied only once that plan is approved
    /// (`qleetctl approve NAME`, the gateway's `.../approve`, or annotation
    /// `qleetos.io/approve-plan: "<generation>"`); placements keep the approved revision
    /// meanwhile. A TenantPolicy with `requirePlanApproval` requires it for its namespaces.
    #[serde(default, skip_serializing_if = "crate::plan::Approval::is_auto")]
    pub approval: crate::plan::Approval,
    /// Earlier revisions kept for rollbacks (`qleetctl history`), beyond those in use
    /// (default 10).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: u32,
}

fn default_history_limit() -> u32 {
    10
}

/// What a revision of a Workload holds: everything its instances are rendered from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadTemplate {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Manifest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<Chart>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
}

impl WorkloadSpec {
    /// What a revision of this spec holds.
    pub fn template(&self) -> WorkloadTemplate {
        WorkloadTemplate {
            manifests: self.manifests.clone(),
            chart: self.chart.clone(),
            images: self.images.clone(),
            expose: self.expose.clone(),
            needs: self.needs.clone(),
        }
    }

    /// This spec with a revision's template in place of its own (a rollback); placement,
    /// rollout and history limit stay.
    pub fn with_template(&self, template: WorkloadTemplate) -> WorkloadSpec {
        WorkloadSpec {
            manifests: template.manifests,
            chart: template.chart,
            images: template.images,
            expose: template.expose,
            needs: template.needs,
            ..self.clone()
        }
    }

    /// The `keys` an image update may not set: with manifests, those naming no container of
    /// any pod template (the override would change nothing); with a chart, those naming no
    /// entry of `chart.images`.
    pub fn unmatched_image_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a String>,
    ) -> Vec<String> {
        match &self.chart {
            Some(chart) => keys
                .into_iter()
                .filter(|key| !chart.images.contains_key(*key))
                .cloned()
                .collect(),
            None => crate::manifest::unmatched_image_keys(&self.manifests, keys),
        }
    }

    /// A one-line explanation of [`Self::unmatched_image_keys`], naming the keys that exist.
    pub fn describe_unmatched_image_keys(&self, unmatched: &[String]) -> String {
        let Some(chart) = &self.chart else {
            return crate::manifest::describe_unmatched_image_keys(&self.manifests, unmatched);
        };
        let known: Vec<&str> = chart.images.keys().map(String::as_str).collect();
        format!(
            "spec.images names no entry of spec.chart.images: {}; entries are: {}",
            unmatched.join(", "),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    }
}

/// Where a workload runs. At least one of `regions` and `runtimeSelector` is required.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.runtimeSelector) || (has(self.regions) && size(self.regions) > 0)").message("placement needs regions or a runtimeSelector"))]
#[x_kube(validation = Rule::new("!has(self.provision) || self.provision == 'Never' || (has(self.regions) && size(self.regions) > 0)").message("provision: IfNeeded needs regions (where to provision)"))]
#[x_kube(validation = Rule::new("!has(self.failover) || !has(self.strategy) || self.strategy == 'OnePerRegion'").message("failover needs strategy OnePerRegion (AllMatching already runs on every matching runtime)"))]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Label selector over KubernetesRuntime labels; an empty selector matches every runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_selector: Option<LabelSelector>,
    /// Regions the workload runs in; when set, only runtimes in these regions are candidates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub regions: Vec<String>,
    /// How many of the candidate runtimes to use: `OnePerRegion` (default) places one instance
    /// in each region, `AllMatching` places one on every candidate runtime.
    #[serde(default)]
    pub strategy: PlacementStrategy,
    /// `IfNeeded`: in each of `regions` where no allowed runtime matches, QleetOS provisions
    /// one from `runtimeProfile` (or the region's default KubernetesRuntimeProfile); every
    /// Workload needing that region shares it. `Never` (default): only existing runtimes.
    #[serde(default)]
    pub provision: Provisioning,
    /// The KubernetesRuntimeProfile clusters are provisioned from; absent: the default
    /// profile of each region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub runtime_profile: Option<String>,
    /// Keeps the workload running through the loss of a runtime: when a placement's runtime
    /// stays unreachable longer than `after`, QleetOS places the workload on another allowed
    /// runtime (its own region first, then `regions` in order) and reports it Ready once the
    /// replacement is. Absent: a placement waits for its runtime to come back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// Capacity and cost in the choice of runtimes: fit the requested CPU and memory, pack,
    /// spread or prefer the cheapest, and overflow from one pool of runtimes to the next.
    /// Absent: the namespace's TenantPolicy default, else runtimes are taken by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferences: Option<crate::PlacementPreferences>,
}

/// When and where a placement moves off an unreachable runtime, and what happens when that
/// runtime is back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    /// How long the runtime must stay unreachable before the workload moves, e.g. `90s`,
    /// `2m`, `1h`. Absent: the operator's default (`--failover-after`, 2m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,5}(s|m|h)$"))]
    pub after: Option<String>,
    /// Further regions a placement may move to when no other runtime of its own region is
    /// reachable, in order of preference (runtimes there must still match `runtimeSelector`
    /// and the namespace's TenantPolicy). Empty: only other runtimes of the same region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub regions: Vec<String>,
    /// When the original runtime is reachable again: `Return` (default) moves the workload
    /// back once it is Ready there, then removes the replacement; `Stay` keeps the
    /// replacement and removes the workload from the recovered runtime.
    #[serde(default)]
    pub on_recovery: Recovery,
}

impl Failover {
    /// `after` as a duration; `None` when absent or malformed (the schema admits neither
    /// malformed value nor overflow, so `None` means "use the default").
    pub fn tolerance(&self) -> Option<std::time::Duration> {
        let after = self.after.as_deref()?;
        let (digits, unit) = after.split_at(after.len().checked_sub(1)?);
        let count: u64 = digits.parse().ok()?;
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return None,
        };
        Some(std::time::Duration::from_secs(count * seconds))
    }
}

/// What a failed-over placement does when its original runtime is back.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Recovery {
    #[default]
    Return,
    Stay,
}

/// Whether a placement may cause a cluster to be provisioned.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Provisioning {
    #[default]
    Never,
    IfNeeded,
}

/// How many runtimes a placement selects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PlacementStrategy {
    #[default]
    OnePerRegion,
    AllMatching,
}

/// What QleetOS observed of the workload across its placements.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// `Ready` is True when every placement's instance is Ready at the current generation.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One entry per selected runtime.
    #[serde(default)]
    pub placements: Vec<PlacementStatus>,
    /// Ready placements over desired placements, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_placements: Option<String>,
    /// The latest revision (a ControllerRevision in the Workload's namespace holds each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Hash of the template the latest revision holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_hash: Option<String>,
    /// The staged rollout of the latest revision, with `spec.rollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<StagedRolloutStatus>,
    /// The plan waiting for approval, and what was approved last (with required approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::plan::ApprovalStatus>,
    /// The last rebalance asked for with the `qleetos.io/rebalance` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<crate::rebalance::RebalanceStatus>,
}

impl Conditions for WorkloadStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// The state of the workload on one runtime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// Name of the KubernetesRuntime.
    pub runtime: String,
    /// Region of the runtime.
    pub region: String,
    /// Name of the WorkloadInstance carrying the workload to this runtime.
    pub instance: String,
    /// Whether the instance is Ready with the workload's current spec.
    pub ready: bool,
    /// The instance's Ready reason.
    #[serde(default)]
    pub reason: String,
    /// The instance's Ready message.
    #[serde(default)]
    pub message: String,
    /// Where the workload answers on this runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Set on a failover placement: the unreachable runtime it stands in for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// The revision this placement should run, with `spec.rollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Its wave (from 1), with `spec.rollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<u32>,
    /// Replicas of the workload's controllers (Deployments, StatefulSets...) on the runtime,
    /// summed: desired (as an autoscaler set them) and available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaCount>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_tolerance_reads_seconds_minutes_and_hours() {
        let after = |value: &str| {
            Failover {
                after: Some(value.into()),
                ..Default::default()
            }
            .tolerance()
        };
        assert_eq!(after("90s"), Some(std::time::Duration::from_secs(90)));
        assert_eq!(after("2m"), Some(std::time::Duration::from_secs(120)));
        assert_eq!(after("1h"), Some(std::time::Duration::from_secs(3600)));
        assert_eq!(after("2d"), None);
        assert_eq!(after(""), None);
        assert_eq!(Failover::default().tolerance(), None);
    }
}

/// Desired and available replicas of a placement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCount {
    /// Replicas wanted, as the workload or its autoscaler set them.
    pub desired: i64,
    /// Replicas available.
    pub available: i64,
}
