//! WorkloadPlan: what applying a Workload would do, computed by the operator without changing
//! anything anywhere (issue 27). `qleetctl plan` and the gateway's `.../plan` create one as the
//! caller, read its status and delete it; QleetOS deletes the ones nobody deleted after
//! `ttlSecondsAfterComputed`.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::{Condition, Conditions};
use crate::service::WorkloadServiceDependencySpec;
use crate::workload::WorkloadSpec;

/// How long a computed plan is kept by default.
pub const DEFAULT_PLAN_TTL_SECONDS: u32 = 900;
/// What a plan shows in place of a Secret's value.
pub const REDACTED: &str = "(redacted)";

/// Annotation on a Workload approving the plan of the generation it names.
pub const APPROVE_ANNOTATION: &str = "qleetos.io/approve-plan";

/// Whether a Workload's changes wait for an approved plan.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Approval {
    /// Every change is applied as it comes.
    #[default]
    Auto,
    /// A change is planned, and applied once the plan is approved.
    Required,
}

impl Approval {
    pub fn is_auto(&self) -> bool {
        *self == Approval::Auto
    }
}

/// Where a Workload's approval stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ApprovalState {
    /// The plan of `generation` waits for approval; nothing of it is applied.
    #[default]
    Pending,
    /// The plan of `generation` was approved and is applied.
    Approved,
}

/// The plan of a Workload's generation and what was approved, in the Workload's status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    pub state: ApprovalState,
    /// The Workload generation the plan belongs to.
    pub generation: i64,
    /// The plan's counts, e.g. `1 update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The plan (while it is pending), as a WorkloadPlan's status holds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<PlannedPlacement>,
    /// The last generation whose plan was approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_generation: Option<i64>,
    /// The revision that generation is: what placements run while a newer plan waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_revision: Option<i64>,
    /// What to do, or why an approval was refused (a stale generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A request to plan a Workload: its name and the spec it would have.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "WorkloadPlan",
    doc = "What applying a Workload would change, computed without changing anything: the placements (runtimes to use or provision), the support services to install and, per runtime, each object to create, update (with the fields that change) or delete, checked by a server-side dry run as the tenant. Secret values never appear.",
    plural = "workloadplans",
    namespaced,
    shortname = "wlplan",
    category = "qleetos",
    status = "WorkloadPlanStatus",
    printcolumn(name = "Workload", type_ = "string", json_path = ".spec.workloadName"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Summary", type_ = "string", json_path = ".status.summary"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPlanSpec {
    /// The Workload the plan is for, in the plan's namespace; it need not exist yet.
    #[schemars(length(min = 1, max = 253))]
    pub workload_name: String,
    /// The Workload's spec as it would be applied.
    pub workload: WorkloadSpec,
    /// WorkloadServiceDependencies of the plan's namespace as they would be applied: each
    /// replaces the live one of its name for the plan (the others stay as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub service_dependencies: Vec<PlannedServiceDependency>,
    /// Plan a rebalance of the live Workload: placed anew under its placement preferences,
    /// its current placements not kept. Shows the placements that would move, and the
    /// runtimes left with no Workload (a provisioned one is retired after its idle time).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebalance: bool,
    /// Seconds the computed plan is kept before QleetOS deletes it.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1, max = 86400))]
    pub ttl_seconds_after_computed: u32,
}

/// A WorkloadServiceDependency as it would be applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedServiceDependency {
    /// Its name in the plan's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    pub spec: WorkloadServiceDependencySpec,
}

fn default_ttl() -> u32 {
    DEFAULT_PLAN_TTL_SECONDS
}

impl WorkloadPlan {
    /// A request to plan Workload `workload` of `namespace` with `spec`, named by the API
    /// server from the Workload's name (cut to 40 characters), kept for the default time.
    pub fn request(namespace: &str, workload: &str, spec: WorkloadSpec) -> Self {
        let prefix = workload
            .char_indices()
            .nth(40)
            .map_or(workload, |(at, _)| &workload[..at]);
        let mut plan = WorkloadPlan::new(
            "",
            WorkloadPlanSpec {
                workload_name: workload.to_owned(),
                workload: spec,
                service_dependencies: Vec::new(),
                rebalance: false,
                ttl_seconds_after_computed: DEFAULT_PLAN_TTL_SECONDS,
            },
        );
        plan.metadata = kube::api::ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        };
        plan
    }
}

/// The computed plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPlanStatus {
    /// `Ready` is True once the plan is computed (`PlanComputed`), False while it is being
    /// computed or when it could not be (`PlanFailed`, saying why).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the plan was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the plan was computed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_at: Option<String>,
    /// One entry per runtime the Workload would run on.
    #[serde(default)]
    pub placements: Vec<PlannedPlacement>,
    /// Counts of each action, e.g. `1 provision, 2 install, 3 create, 1 refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl Conditions for WorkloadPlanStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// What would happen on one runtime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedPlacement {
    /// The KubernetesRuntime (existing, or the name it would be provisioned under).
    pub runtime: String,
    /// Its region (empty for a placement being left).
    pub region: String,
    /// `Provision` when the runtime does not exist yet, else `Unchanged`.
    pub action: PlanAction,
    /// The KubernetesRuntimeProfile the runtime would be provisioned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// What could not be checked, or why nothing would be applied there (the tenancy fence,
    /// Pod Security, a missing profile), in the words a Workload's status would use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The support services the placement needs on the runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub support_services: Vec<PlannedService>,
    /// The workload's own objects on the runtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<PlannedObject>,
}

/// A support service, or a back-end service, a placement needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedService {
    /// What the workload needs, e.g. `tls`, `ingress`, `dns`; for a back-end service, its
    /// ServiceProfile.
    pub capability: String,
    /// The SupportServiceProfile (or ServiceProfile) providing it.
    pub profile: String,
    /// The WorkloadServiceDependency asking for it (back-end services only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// The SupportService installing it on the runtime.
    pub name: String,
    /// `Install` when it is not on the runtime yet, else `Unchanged`.
    pub action: PlanAction,
}

/// One object of the workload on a runtime.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedObject {
    /// apiVersion of the object, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind of the object, e.g. `Deployment`.
    pub kind: String,
    /// Namespace of the object in the runtime; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the object.
    pub name: String,
    /// What would happen to it.
    pub action: PlanAction,
    /// For `Update`: each changed field (a Secret's values shown as `(redacted)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Why it is `Refused`, or what could not be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One field that would change: its path and its JSON value before and after (absent when
/// the field does not exist on that side).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// The field, e.g. `spec.template.spec.containers[0].image`.
    pub path: String,
    /// Its live value as JSON (absent: the field is added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Its value after the apply as JSON (absent: the field is removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// What a plan says would happen to a runtime, a service or an object.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum PlanAction {
    Provision,
    Install,
    Create,
    Update,
    Delete,
    #[default]
    Unchanged,
    /// The runtime's API server (RBAC, admission, Pod Security) or QleetOS's tenancy fence
    /// would refuse it.
    Refused,
}

impl PlanAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            PlanAction::Provision => "provision",
            PlanAction::Install => "install",
            PlanAction::Create => "create",
            PlanAction::Update => "update",
            PlanAction::Delete => "delete",
            PlanAction::Unchanged => "unchanged",
            PlanAction::Refused => "refused",
        }
    }
}

impl WorkloadPlanStatus {
    /// Counts of every action in the plan, in a fixed order, e.g. `1 provision, 3 create`.
    pub fn summarize(placements: &[PlannedPlacement]) -> String {
        let actions = placements.iter().flat_map(|p| {
            std::iter::once(p.action)
                .chain(p.support_services.iter().map(|s| s.action))
                .chain(p.objects.iter().map(|o| o.action))
        });
        let mut counts = std::collections::BTreeMap::<PlanAction, usize>::new();
        for action in actions.filter(|a| *a != PlanAction::Unchanged) {
            *counts.entry(action).or_default() += 1;
        }
        let parts: Vec<String> = counts
            .iter()
            .map(|(action, n)| format!("{n} {}", action.as_str()))
            .collect();
        if parts.is_empty() {
            "no change".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// The generation an approval of `workload` names: `requested`, or the pending plan's; an
/// error saying why when that is not the pending plan of the current generation.
pub fn approval_target(workload: &crate::Workload, requested: Option<i64>) -> Result<i64, String> {
    let generation = workload.metadata.generation.unwrap_or_default();
    let approval = workload.status.as_ref().and_then(|s| s.approval.as_ref());
    let Some(approval) = approval else {
        return Err("the Workload has no plan waiting for approval (approval is not required, or it was not reconciled yet)".to_owned());
    };
    let wanted = requested.unwrap_or(approval.generation);
    if wanted != generation {
        return Err(format!(
            "the plan of generation {wanted} is stale: the Workload is at generation {generation}; review its plan and approve generation {generation}"
        ));
    }
    if approval.generation != generation {
        return Err(format!(
            "the plan of generation {generation} is not computed yet; try again in a moment"
        ));
    }
    if approval.state == ApprovalState::Approved {
        return Err(format!(
            "the plan of generation {generation} is approved already"
        ));
    }
    Ok(generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload_at(generation: i64, approval: Option<ApprovalStatus>) -> crate::Workload {
        let spec = serde_json::from_value(serde_json::json!({"placement": {"regions": ["eu"]}}))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut workload = crate::Workload::new("web", spec);
        workload.metadata.generation = Some(generation);
        workload.status = Some(crate::WorkloadStatus {
            approval,
            ..Default::default()
        });
        workload
    }

    #[test]
    fn only_the_pending_plan_of_the_current_generation_can_be_approved() {
        let pending = |generation| ApprovalStatus {
            generation,
            ..ApprovalStatus::default()
        };
        assert_eq!(
            approval_target(&workload_at(3, Some(pending(3))), None),
            Ok(3)
        );
        assert_eq!(
            approval_target(&workload_at(3, Some(pending(3))), Some(3)),
            Ok(3)
        );
        let stale = approval_target(&workload_at(4, Some(pending(4))), Some(3));
        assert!(stale.is_err_and(|e| e.starts_with("the plan of generation 3 is stale")));
        let not_yet = approval_target(&workload_at(4, Some(pending(3))), None);
        assert!(not_yet.is_err_and(|e| e.contains("stale")));
        let computing = approval_target(&workload_at(4, Some(pending(3))), Some(4));
        assert!(computing.is_err_and(|e| e.contains("not computed yet")));
        assert!(approval_target(&workload_at(1, None), None).is_err());
    }

    #[test]
    fn a_request_is_named_from_its_workload_and_kept_the_default_time() {
        let spec: WorkloadSpec =
            serde_json::from_value(serde_json::json!({"placement": {"regions": ["eu"]}}))
                .unwrap_or_else(|e| panic!("{e}"));
        let long = "w".repeat(60);
        let plan = WorkloadPlan::request("team", &long, spec);
        assert_eq!(
            plan.metadata.generate_name,
            Some(format!("{}-", "w".repeat(40)))
        );
        assert_eq!(plan.metadata.name, None);
        assert_eq!(plan.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(plan.spec.workload_name, long);
        assert_eq!(
            plan.spec.ttl_seconds_after_computed,
            DEFAULT_PLAN_TTL_SECONDS
        );
    }

    #[test]
    fn summary_counts_changes_only() {
        let object = |action| PlannedObject {
            action,
            ..Default::default()
        };
        let placements = vec![PlannedPlacement {
            action: PlanAction::Provision,
            objects: vec![
                object(PlanAction::Create),
                object(PlanAction::Create),
                object(PlanAction::Unchanged),
            ],
            ..Default::default()
        }];
        assert_eq!(
            WorkloadPlanStatus::summarize(&placements),
            "1 provision, 2 create"
        );
        assert_eq!(WorkloadPlanStatus::summarize(&[]), "no change");
    }
}
