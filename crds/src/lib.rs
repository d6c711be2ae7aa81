//! QleetOS custom resources (API group `qleetos.io`, version `v1alpha1`).
//!
//! Every kind carries the standard `status.conditions` with a `Ready` condition and
//! `status.observedGeneration`, so `kubectl wait --for=condition=Ready` works on all of them.

// kube-derive takes one `printcolumn(...)` per column, which clippy mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod admission;
mod capacity;
mod chart;
mod condition;
mod duration;
mod expose;
mod generate;
mod instance;
mod manifest;
pub mod notification;
pub mod plan;
mod reason;
mod rebalance;
pub mod rollout;
mod runtime;
mod runtime_profile;
mod service;
pub mod staged;
mod support;
pub mod template;
mod tenancy;
mod workload;

pub use capacity::{
    Cost, Fit, OverflowPool, PlacementPreferences, Preference, Resources, RuntimeCapacity,
};
pub use chart::{Chart, ChartStatus, ImageValues, split_image};
pub use condition::{Condition, ConditionStatus, Conditions, READY, merged, upsert};
pub use duration::parse_duration;
pub use expose::{Expose, ServicePort};
pub use generate::{GenerateError, all_crds, render_admission_file, render_crd_files};
pub use instance::{
    AppliedObject, AppliedRevision, DependencyStatus, ResourceHealth, RuntimeRef, WorkloadInstance,
    WorkloadInstanceSpec, WorkloadInstanceStatus, WorkloadRef,
};
pub use manifest::{
    CONTAINER_LISTS, MAX_MANIFESTS, Manifest, UNIQUE_OBJECTS_MESSAGE, container_names,
    describe_unmatched_image_keys, unmatched_image_keys,
};
pub use plan::{
    Approval, ApprovalState, ApprovalStatus, FieldChange, PlanAction, PlannedObject,
    PlannedPlacement, PlannedService, PlannedServiceDependency, WorkloadPlan, WorkloadPlanSpec,
    WorkloadPlanStatus,
};
pub use reason::{Class, Reason, class_of};
pub use rebalance::{REBALANCE_ANNOTATION, RebalanceState, RebalanceStatus};
pub use runtime::{
    DeletionPolicy, KubernetesRuntime, KubernetesRuntimeSpec, KubernetesRuntimeStatus,
    ProvisioningPhase, ProvisioningStatus, REACHABLE, RuntimeConnection, RuntimeProvisioning,
    SecretKeyRef,
};
pub use runtime_profile::{
    Autoscaling, ClusterApiSettings, IdleAction, IdlePolicy, KubernetesRuntimeProfile,
    KubernetesRuntimeProfileSpec, KubernetesRuntimeProfileStatus, NodePool, ProvisioningProvider,
    TopologyVariable,
};
pub use service::{
    ConnectionSpec, Injection, InjectionMode, ParameterSpec, ParameterType,
    SERVICE_VARIABLE_PREFIXES, SecretExport, ServiceBinding, ServiceProfile, ServiceProfileSpec,
    ServiceProfileStatus, ServiceTarget, ServiceUnit, Sharing, WorkloadServiceDependency,
    WorkloadServiceDependencySpec, WorkloadServiceDependencyStatus,
};
pub use support::{
    DependencyState, HealthCheck, IssuerRef, NameRef, RemovalPolicy, SupportService,
    SupportServiceProfile, SupportServiceProfileSpec, SupportServiceProfileStatus,
    SupportServiceSpec, SupportServiceStatus, WorkloadObjects,
};
pub use tenancy::{
    KindRule, PodSecurityLevel, RuntimeRule, TenantLimits, TenantPolicy, TenantPolicySpec,
    TenantPolicyStatus,
};
pub use workload::{
    Failover, Placement, PlacementStatus, PlacementStrategy, Provisioning, Recovery, ReplicaCount,
    Workload, WorkloadSpec, WorkloadStatus, WorkloadTemplate,
};

/// The API group of every QleetOS kind.
pub const GROUP: &str = "qleetos.io";
/// The field manager QleetOS uses for every server-side apply.
pub const FIELD_MANAGER: &str = "qleetos";
