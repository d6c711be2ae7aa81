//! Admission policies of QleetOS, evaluated in the API server (CEL: no webhook to run).
//!
//! - A WorkloadServiceDependency's parameters are checked against its ServiceProfile's
//!   declared parameters by a ValidatingAdmissionPolicy whose params are the ServiceProfiles.
//!   Each admission is evaluated against every ServiceProfile; the expressions only judge
//!   the one the dependency names.
//! - A new Workload gets the Workload Qleet's finalizer from a MutatingAdmissionPolicy, so
//!   the Qleet does not spend a write adding it. Where the policy is not installed (or the
//!   API server predates `admissionregistration.k8s.io/v1` MutatingAdmissionPolicy, 1.36) the
//!   Qleet adds the finalizer itself, as before.

use serde_json::{Value, json};

/// Name of the parameters policy and of its binding.
pub const PARAMETERS_POLICY: &str = "qleetos-service-parameters";
/// Name of the Workload finalizer policy and of its binding.
pub const WORKLOAD_FINALIZER_POLICY: &str = "qleetos-workload-finalizer";
/// Held on a Workload until its WorkloadInstances are gone.
pub const WORKLOAD_FINALIZER: &str = "qleetos.io/instances";

const MINE: &str = "params.metadata.name == object.spec.profileRef.name";

/// The admission policies and their bindings, in install order.
pub fn admission_objects() -> Vec<Value> {
    vec![
        parameters_policy(),
        parameters_binding(),
        workload_finalizer_policy(),
        workload_finalizer_binding(),
    ]
}

/// Adds [`WORKLOAD_FINALIZER`] to every Workload created. `finalizers` is a set, so the
/// apply configuration keeps the finalizers the Workload came with. `Ignore`: a policy that
/// cannot run leaves the finalizer to the Qleet rather than refusing the Workload.
fn workload_finalizer_policy() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": { "name": WORKLOAD_FINALIZER_POLICY },
        "spec": {
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "Never",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": ["qleetos.io"],
                    "apiVersions": ["v1alpha1"],
                    "operations": ["CREATE"],
                    "resources": ["workloads"],
                }],
            },
            "mutations": [{
                "patchType": "ApplyConfiguration",
                "applyConfiguration": {
                    "expression": format!(
                        "Object{{metadata: Object.metadata{{finalizers: [\"{WORKLOAD_FINALIZER}\"]}}}}"
                    ),
                },
            }],
        },
    })
}

fn workload_finalizer_binding() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": { "name": WORKLOAD_FINALIZER_POLICY },
        "spec": { "policyName": WORKLOAD_FINALIZER_POLICY },
    })
}

fn parameters_policy() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": { "name": PARAMETERS_POLICY },
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": { "apiVersion": "qleetos.io/v1alpha1", "kind": "ServiceProfile" },
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": ["qleetos.io"],
                    "apiVersions": ["v1alpha1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["workloadservicedependencies"],
                }],
            },
            "variables": [
                { "name": "mine", "expression": MINE },
                { "name": "declared", "expression": "has(params.spec.parameters) ? params.spec.parameters : []" },
                { "name": "given", "expression": "has(object.spec.parameters) ? object.spec.parameters : {}" },
                { "name": "undeclared", "expression": "variables.given.filter(k, !variables.declared.exists(p, p.name == k))" },
                { "name": "mistyped", "expression": MISTYPED },
                { "name": "missing", "expression": "variables.declared.filter(p, !has(p.default) && !(p.name in variables.given)).map(p, p.name)" },
            ],
            "validations": [
                {
                    "expression": "!variables.mine || size(variables.undeclared) == 0",
                    "messageExpression": "'spec.parameters: ' + variables.undeclared.join(', ') + ' not declared by ServiceProfile ' + params.metadata.name + ' (declared: ' + (size(variables.declared) == 0 ? 'none' : variables.declared.map(p, p.name).join(', ')) + ')'",
                    "reason": "Invalid",
                },
                {
                    "expression": "!variables.mine || size(variables.mistyped) == 0",
                    "messageExpression": "'spec.parameters: wrong type for ' + variables.mistyped.join(', ') + ' (ServiceProfile ' + params.metadata.name + ')'",
                    "reason": "Invalid",
                },
                {
                    "expression": "!variables.mine || size(variables.missing) == 0",
                    "messageExpression": "'spec.parameters: ' + variables.missing.join(', ') + ' required by ServiceProfile ' + params.metadata.name",
                    "reason": "Invalid",
                },
            ],
        },
    })
}

/// `name (must be <type>)` for every given parameter whose value has another type.
const MISTYPED: &str = "variables.declared.filter(p, p.name in variables.given && !(\
    p.type == 'string' ? type(variables.given[p.name]) == string : \
    p.type == 'integer' ? type(variables.given[p.name]) == int : \
    p.type == 'boolean' ? type(variables.given[p.name]) == bool : \
    (type(variables.given[p.name]) == int || type(variables.given[p.name]) == double)\
    )).map(p, p.name + ' (must be ' + p.type + ')')";

fn parameters_binding() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": { "name": PARAMETERS_POLICY },
        "spec": {
            "policyName": PARAMETERS_POLICY,
            "validationActions": ["Deny"],
            // Every ServiceProfile is a param; with none at all the dependency is allowed
            // (its profile may come later) and reported `ProfileNotFound` instead.
            "paramRef": { "selector": {}, "parameterNotFoundAction": "Allow" },
        },
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, ValidatingAdmissionPolicy,
        ValidatingAdmissionPolicyBinding,
    };

    use super::*;

    #[test]
    fn the_objects_are_well_formed_kubernetes_objects() {
        let objects = admission_objects();
        let policy: ValidatingAdmissionPolicy =
            serde_json::from_value(objects[0].clone()).expect("policy");
        let binding: ValidatingAdmissionPolicyBinding =
            serde_json::from_value(objects[1].clone()).expect("binding");
        let validations = policy.spec.and_then(|s| s.validations).unwrap_or_default();
        assert_eq!(validations.len(), 3);
        assert_eq!(binding.spec.policy_name, PARAMETERS_POLICY);
        let policy: MutatingAdmissionPolicy =
            serde_json::from_value(objects[2].clone()).expect("mutating policy");
        let binding: MutatingAdmissionPolicyBinding =
            serde_json::from_value(objects[3].clone()).expect("mutating binding");
        let mutations = policy.spec.and_then(|s| s.mutations).unwrap_or_default();
        let expression = mutations[0]
            .apply_configuration
            .as_ref()
            .and_then(|a| a.expression.as_deref());
        assert_eq!(
            expression,
            Some(r#"Object{metadata: Object.metadata{finalizers: ["qleetos.io/instances"]}}"#)
        );
        assert_eq!(
            binding.spec.and_then(|s| s.policy_name).as_deref(),
            Some(WORKLOAD_FINALIZER_POLICY)
        );
    }
}
