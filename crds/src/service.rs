//! Back-end services: what operations define (`ServiceProfile`) and what a developer asks for
//! (`WorkloadServiceDependency`). QleetOS installs each service into the runtime namespace of
//! the workloads it serves, as a `SupportService` of the same dependency engine.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chart::Chart;
use crate::condition::{Condition, Conditions};
use crate::manifest::Manifest;
use crate::support::{HealthCheck, NameRef};

/// One kind of back-end service (an RPC node, a database through its operator, a key pair
/// from cert-manager): its parameters, what it needs first, its objects, how its readiness
/// is judged and the connection details it exports.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "ServiceProfile",
    doc = "A kind of back-end service workloads can depend on: typed parameters, the support services it needs first, the objects installed into the dependency's runtime namespace, readiness, and the connection details it exports. Defined by operations.",
    plural = "serviceprofiles",
    shortname = "sp",
    category = "qleetos",
    status = "ServiceProfileStatus",
    printcolumn(name = "Requires", type_ = "string", json_path = ".spec.requires"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.parameters.all(p, self.parameters.exists_one(q, q.name == p.name))").message("parameter names must be unique"))]
#[x_kube(validation = Rule::new(crate::chart::ONE_SOURCE_RULE).message(crate::chart::ONE_SOURCE_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct ServiceProfileSpec {
    /// The parameters a dependency may set. A dependency setting one not listed here, or
    /// of another type, is rejected at admission.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub parameters: Vec<ParameterSpec>,
    /// Capabilities (SupportServiceProfiles) installed and Ready in the runtime first, e.g.
    /// the database operator, or `tls` for cert-manager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(inner(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    ))]
    pub requires: Vec<String>,
    /// Where the objects are created: `Runtime` (default), into the workloads' runtime
    /// namespace; `Management`, into the dependency's namespace of the management cluster,
    /// for operators that run there (e.g. Crossplane claims). Either way the connection
    /// Secret is written next to the workload in its runtime.
    #[serde(default)]
    pub target: ServiceTarget,
    /// The service's objects, all namespaced: they are installed into the dependency's
    /// runtime namespace (cluster-wide parts belong in a SupportServiceProfile it requires).
    /// String values may use `$(service.name)`, `$(service.namespace)`,
    /// `$(parameters.<name>)` and `$(runtime.name|region|provider)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::manifest::manifest_list_schema")]
    pub manifests: Vec<Manifest>,
    /// A Helm chart instead of `manifests`; its string values may use the same variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<Chart>,
    /// Conditions beyond rollouts that must be `True` (e.g. a database `Cluster`'s `Ready`);
    /// names may use the variables. Every Deployment, StatefulSet and DaemonSet among the
    /// manifests must also be available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub health_checks: Vec<HealthCheck>,
    /// The connection details given to the workloads.
    #[serde(default)]
    pub connection: ConnectionSpec,
    /// How long a service nobody uses stays installed (default 0: removed at once).
    #[serde(default)]
    #[schemars(range(min = 0, max = 604800))]
    pub grace_period_seconds: u32,
}

/// The cluster a ServiceProfile's objects go to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceTarget {
    #[default]
    Runtime,
    Management,
}

/// One parameter of a ServiceProfile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterSpec {
    /// Name, used as `$(parameters.<name>)`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_]*$"))]
    pub name: String,
    /// `string`, `integer`, `number` or `boolean`.
    #[serde(rename = "type")]
    pub type_: ParameterType,
    /// What it means, for people writing dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// The value used when a dependency does not set it; a parameter without one is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "scalar_schema")]
    pub default: Option<Value>,
}

/// The type of a parameter's value.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    String,
    Integer,
    Number,
    Boolean,
}

impl ParameterType {
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
        }
    }
}

fn scalar_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

fn parameters_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true },
    })
}

/// What a service exports to the workloads it serves, as one Secret per dependency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Keys copied from a Secret the service (or its operator) writes in its namespace, e.g.
    /// CloudNativePG's `$(service.name)-app`. The service is Ready only once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_secret: Option<SecretExport>,
    /// Values rendered from the service, e.g. `RPC_URL: http://$(service.name).$(service.namespace).svc:8545`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
}

/// A Secret of the service whose keys the connection copies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretExport {
    /// Its name in the service's namespace; may use the variables.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The keys copied; empty: every key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// Whether the profile is usable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProfileStatus {
    /// `Ready` is True when the profile's variables and parameters are consistent.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Conditions for ServiceProfileStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// The prefixes of the variables a ServiceProfile's manifests may use.
pub const SERVICE_VARIABLE_PREFIXES: [&str; 3] = ["service.", "parameters.", "runtime."];

impl ServiceProfileSpec {
    /// The dependency's parameters completed with the defaults, or every problem found: an
    /// undeclared parameter, a wrong type, a required one missing.
    pub fn resolve_parameters(
        &self,
        given: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>, String> {
        let mut problems = Vec::new();
        let declared: Vec<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
        for name in given.keys() {
            if !declared.contains(&name.as_str()) {
                problems.push(format!(
                    "parameter {name} is not declared (declared: {})",
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ));
            }
        }
        let mut resolved = BTreeMap::new();
        for parameter in &self.parameters {
            match given.get(&parameter.name).or(parameter.default.as_ref()) {
                Some(value) if parameter.type_.accepts(value) => {
                    resolved.insert(parameter.name.clone(), value.clone());
                }
                Some(value) => problems.push(format!(
                    "parameter {} must be {} (got {value})",
                    parameter.name,
                    parameter.type_.word()
                )),
                None => problems.push(format!("parameter {} is required", parameter.name)),
            }
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems.join("; "))
        }
    }
}

impl ParameterType {
    pub fn word(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Number => "a number",
            Self::Boolean => "a boolean",
        }
    }
}

/// A developer's request: the workloads named here need a service of a profile, and reach
/// it through a connection Secret in their namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "qleetos.io",
    version = "v1alpha1",
    kind = "WorkloadServiceDependency",
    doc = "A back-end service (from a ServiceProfile) that some Workloads of this namespace need. QleetOS installs it into each runtime they are placed on, before them, and injects its connection Secret into their pods.",
    plural = "workloadservicedependencies",
    namespaced,
    shortname = "wsd",
    category = "qleetos",
    status = "WorkloadServiceDependencyStatus",
    printcolumn(
        name = "Profile",
        type_ = "string",
        json_path = ".spec.profileRef.name"
    ),
    printcolumn(name = "Sharing", type_ = "string", json_path = ".spec.sharing"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
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
#[x_kube(validation = Rule::new("!has(self.secretName) || size(self.workloads) == 1").message("secretName needs exactly one workload: each workload gets its own connection Secret, <dependency>-<workload> by default"))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadServiceDependencySpec {
    /// Names of the Workloads (in this namespace) the service serves.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(inner(length(min = 1, max = 253)))]
    pub workloads: Vec<String>,
    /// The ServiceProfile. Changing it installs the new service, moves the workloads to it,
    /// then removes the old one.
    pub profile_ref: NameRef,
    /// Values for the profile's parameters; checked against the profile at admission.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "parameters_schema")]
    pub parameters: BTreeMap<String, Value>,
    /// `Shared` (default): one service per runtime and namespace for every dependency with
    /// the same profile and parameters. `Dedicated`: one per workload.
    #[serde(default)]
    pub sharing: Sharing,
    /// The connection Secret written into the workload's runtime namespace (one per
    /// workload, so only with a single workload); default `<dependency>-<workload>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
    /// How the Secret reaches the pods (default: `envFrom` into every container).
    #[serde(default)]
    pub inject: Injection,
}

/// One service per runtime and namespace, or one per workload.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Sharing {
    #[default]
    Shared,
    Dedicated,
}

/// How a connection Secret reaches the workload's containers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.mountPath) || self.mode == 'Volume'").message("mountPath is only used with mode Volume"))]
#[serde(rename_all = "camelCase")]
pub struct Injection {
    /// `Env` (default): `envFrom` the Secret. `Volume`: mount it at `mountPath`.
    #[serde(default)]
    pub mode: InjectionMode,
    /// Names of the containers that get it; empty: every container of every pod template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub containers: Vec<String>,
    /// Where the Secret is mounted in `Volume` mode (default `/var/run/qleetos/<dependency>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"^/"))]
    pub mount_path: Option<String>,
}

/// `envFrom` or a mounted volume.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum InjectionMode {
    #[default]
    Env,
    Volume,
}

/// Where the dependency stands on each runtime its workloads are placed on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadServiceDependencyStatus {
    /// `Ready` is True when the service is Ready and injected on every placement of every
    /// bound workload; `NoBoundWorkload` when none of them exists.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The named Workloads that exist.
    #[serde(default)]
    pub bound_workloads: Vec<String>,
    /// One entry per placement of a bound workload.
    #[serde(default)]
    pub services: Vec<ServiceBinding>,
}

impl Conditions for WorkloadServiceDependencyStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// The service one placement of a bound workload uses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBinding {
    /// The workload.
    pub workload: String,
    /// The runtime.
    pub runtime: String,
    /// The SupportService installing the service.
    pub support_service: String,
    /// `Pending`, `Installing`, `Ready`, `Failed` or `Removing`.
    pub state: crate::support::DependencyState,
    /// What the service reports.
    #[serde(default)]
    pub message: String,
}

/// What a SupportService installed from a ServiceProfile serves: which runtime namespace,
/// under which name, with which parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUnit {
    /// The runtime namespace it is installed into (the workloads' namespace).
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Its name there, `$(service.name)`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The parameters, defaults included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "parameters_schema")]
    pub parameters: BTreeMap<String, Value>,
    /// The workload it is dedicated to; absent for a shared service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_to: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn profile() -> ServiceProfileSpec {
        serde_json::from_value(json!({
            "parameters": [
                { "name": "chainId", "type": "integer", "default": 31337 },
                { "name": "network", "type": "string" },
            ],
            "manifests": [{ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "x" } }],
        }))
        .expect("profile")
    }

    #[test]
    fn defaults_fill_in_and_given_values_win() {
        let given = BTreeMap::from([("network".to_owned(), json!("dev"))]);
        let resolved = profile().resolve_parameters(&given).expect("valid");
        assert_eq!(resolved["chainId"], 31337);
        assert_eq!(resolved["network"], "dev");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let given = BTreeMap::from([
            ("chainId".to_owned(), json!("1")),
            ("colour".to_owned(), json!("red")),
        ]);
        let problems = profile().resolve_parameters(&given).expect_err("invalid");
        assert!(problems.contains("parameter colour is not declared (declared: chainId, network)"));
        assert!(problems.contains("parameter chainId must be an integer"));
        assert!(problems.contains("parameter network is required"));
    }
}
