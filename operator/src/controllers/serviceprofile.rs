//! ServiceProfile Qleet: checks that a profile's variables and parameter defaults are
//! consistent and reports it; on deletion, removes its unused services and waits, naming
//! the users, while any is still needed.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use qleetos_crds::Reason;
use qleetos_crds::template::{
    TENANT_VARIABLE_PREFIX, Variables, unknown_variables, variable_names,
};
use qleetos_crds::{
    Condition, SERVICE_VARIABLE_PREFIXES, ServiceProfile, ServiceProfileSpec, ServiceProfileStatus,
    SupportService,
};

use super::apply_status;
use super::profile::{installed_from, retire_unused};
use crate::context::{Context, Next};
use crate::error::Result;
use crate::finalizer::{self, Phase};
use crate::queue::triggers::{Target, Triggers};
use crate::queue::worker::Qleet;

#[cfg(test)]
#[path = "serviceprofile_tests.rs"]
mod reconcile_tests;

/// Held until no service of the profile is left.
pub const FINALIZER: &str = "qleetos.io/services";

/// The ServiceProfile Qleet.
pub fn qleet() -> Qleet<ServiceProfile> {
    Qleet {
        api: |client, _| Api::all(client),
        reconcile: |object, ctx| Box::pin(reconcile(object, ctx)),
    }
}

/// Its own changes, and its services' (a deletion waits for them).
pub fn notified_by() -> Triggers {
    Triggers::of::<ServiceProfile>().watches::<SupportService>(|ctx, change| {
        if change.after.spec.service.is_none() {
            return Vec::new();
        }
        let profile = ObjectRef::new(&change.after.spec.profile_ref.name);
        ctx.caches
            .service_profiles
            .get(&profile)
            .map(|profile| vec![Target::of(&*profile)])
            .unwrap_or_default()
    })
}

pub async fn reconcile(profile: Arc<ServiceProfile>, ctx: Arc<Context>) -> Result<Next> {
    let api: Api<ServiceProfile> = Api::all(ctx.client.clone());
    ctx.caches.ready().await?;
    let name = profile.metadata.name.clone().unwrap_or_default();
    match finalizer::phase(&api, FINALIZER, profile).await? {
        Phase::Apply(profile) => {
            let ready = match problems(&profile.spec) {
                None => Condition::ready(
                    true,
                    Reason::Valid,
                    format!(
                        "installed {} time(s)",
                        installed_from(&name, true, &ctx).len()
                    ),
                ),
                Some(problems) => Condition::ready(false, Reason::InvalidServiceProfile, problems),
            };
            write(&profile, &ctx, ready).await?;
            Ok(Next::Done)
        }
        Phase::Cleanup(profile) => {
            let services = installed_from(&name, true, &ctx);
            if services.is_empty() {
                finalizer::release(&api, FINALIZER, &*profile).await?;
                return Ok(Next::Done);
            }
            let waiting = retire_unused(&services, &ctx).await?;
            write(&profile, &ctx, waiting).await?;
            Ok(Next::After(ctx.settings.progress_poll))
        }
        Phase::Gone => Ok(Next::Done),
    }
}

/// What is wrong with the profile: a variable no parameter declares (a typo would ship as
/// literal text), or a default of the wrong type.
pub fn problems(spec: &ServiceProfileSpec) -> Option<String> {
    let mut known = Variables::default();
    for name in [
        "service.name",
        "service.namespace",
        "runtime.name",
        "runtime.region",
        "runtime.provider",
    ] {
        known.insert(name, "");
    }
    for parameter in &spec.parameters {
        known.insert(format!("parameters.{}", parameter.name), "");
    }
    let texts = serde_json::json!({
        "manifests": spec.manifests,
        "healthChecks": spec.health_checks,
        "connection": spec.connection,
    });
    let mut problems: Vec<String> = unknown_variables(&texts, &SERVICE_VARIABLE_PREFIXES, &known)
        .into_iter()
        .filter(|v| !v.starts_with("$(runtime.labels."))
        .map(|v| format!("{v} is not a known variable"))
        .collect();
    problems.extend(tenant_chosen_targets(spec));
    for parameter in &spec.parameters {
        if let Some(default) = &parameter.default
            && !parameter.type_.accepts(default)
        {
            problems.push(format!(
                "the default of parameter {} must be {} (got {default})",
                parameter.name,
                parameter.type_.word()
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// A `$(parameters.…)` in a field naming what QleetOS reads with its own identity (the
/// exported Secret, a health check's object): a tenant's value may not choose it, and it is
/// not expanded there.
fn tenant_chosen_targets(spec: &ServiceProfileSpec) -> Vec<String> {
    let mut fields = Vec::new();
    if let Some(export) = &spec.connection.from_secret {
        fields.push((
            "connection.fromSecret.name".to_owned(),
            &export.name,
            "Secret",
        ));
    }
    for (i, check) in spec.health_checks.iter().enumerate() {
        fields.push((format!("healthChecks[{i}].name"), &check.name, "object"));
        if let Some(namespace) = &check.namespace {
            fields.push((
                format!("healthChecks[{i}].namespace"),
                namespace,
                "namespace",
            ));
        }
    }
    fields
        .into_iter()
        .flat_map(|(field, text, what)| {
            variable_names(text)
                .into_iter()
                .filter(|name| name.starts_with(TENANT_VARIABLE_PREFIX))
                .map(move |name| {
                    format!(
                        "{field} may not use $({name}): a tenant's parameter cannot choose \
                         which {what} QleetOS reads"
                    )
                })
        })
        .collect()
}

async fn write(profile: &ServiceProfile, ctx: &Context, ready: Condition) -> Result<()> {
    let previous = profile.status.clone().unwrap_or_default();
    let status = ServiceProfileStatus {
        conditions: qleetos_crds::merged(
            &previous.conditions,
            vec![ready.with_generation(profile.metadata.generation)],
        ),
        observed_generation: profile.metadata.generation,
    };
    if status == previous {
        return Ok(());
    }
    let api: Api<ServiceProfile> = Api::all(ctx.client.clone());
    apply_status(
        &api,
        profile.metadata.name.as_deref().unwrap_or_default(),
        &status,
    )
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn typos_in_variables_and_mistyped_defaults_are_reported() {
        let spec: ServiceProfileSpec = serde_json::from_value(json!({
            "parameters": [{ "name": "port", "type": "integer", "default": "8545" }],
            "manifests": [{ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "$(service.nmae)" },
                            "spec": { "ports": [{ "port": "$(parameters.port)" }] } }],
            "connection": { "values": { "URL": "http://$(service.name):$(parameters.prot) $(runtime.labels.tier)" } },
        }))
        .expect("spec");
        let problems = problems(&spec).expect("problems");
        assert!(
            problems.contains("$(service.nmae) is not a known variable"),
            "{problems}"
        );
        assert!(
            problems.contains("$(parameters.prot) is not a known variable"),
            "{problems}"
        );
        assert!(!problems.contains("runtime.labels"), "{problems}");
        assert!(
            problems.contains("the default of parameter port must be an integer"),
            "{problems}"
        );
    }

    #[test]
    fn a_parameter_naming_the_secret_or_a_checked_object_is_reported() {
        let spec: ServiceProfileSpec = serde_json::from_value(json!({
            "parameters": [{ "name": "x", "type": "string" }, { "name": "ns", "type": "string" }],
            "manifests": [{ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "$(parameters.x)" } }],
            "healthChecks": [{ "apiVersion": "v1", "kind": "Pod", "name": "$(service.name)-$(parameters.x)",
                               "namespace": "$(parameters.ns)", "type": "Ready" }],
            "connection": { "fromSecret": { "name": "$(parameters.x)" } },
        }))
        .expect("spec");
        let problems = problems(&spec).expect("problems");
        assert!(
            problems.contains(
                "connection.fromSecret.name may not use $(parameters.x): a tenant's parameter \
                 cannot choose which Secret QleetOS reads"
            ),
            "{problems}"
        );
        assert!(
            problems.contains("healthChecks[0].name may not use $(parameters.x)"),
            "{problems}"
        );
        assert!(
            problems.contains("healthChecks[0].namespace may not use $(parameters.ns)"),
            "{problems}"
        );
        assert_eq!(problems.matches("may not use").count(), 3, "{problems}");
    }

    #[test]
    fn a_consistent_profile_has_no_problems() {
        let spec: ServiceProfileSpec = serde_json::from_value(json!({
            "parameters": [{ "name": "port", "type": "integer", "default": 8545 }],
            "manifests": [{ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "$(service.name)" } }],
        }))
        .expect("spec");
        assert_eq!(problems(&spec), None);
    }
}
