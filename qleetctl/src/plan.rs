//! `plan -f workload.yaml`: what applying a Workload would do, computed by the operator
//! without changing anything. qleetctl creates a WorkloadPlan as the user (so RBAC decides
//! who may plan where), waits for its status, prints it and deletes it.

use std::io::{Read as _, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use qleetos_crds::{
    Conditions, PlanAction, PlannedPlacement, PlannedServiceDependency, READY, WorkloadPlan,
    WorkloadSpec,
};
use serde::Deserialize as _;
use serde_json::Value;

use crate::failure::Failure;
use crate::output::Format;

const POLL: Duration = Duration::from_millis(500);

/// Plans the Workload in `file` (`-`: standard input) and prints the plan.
pub async fn plan(
    client: &Client,
    default_namespace: &str,
    file: &Path,
    format: Format,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let request = read_request(file, default_namespace)?;
    run(client, &request, format, timeout, out).await.map(drop)
}

/// Creates `request`, waits until the operator computed it, deletes it and prints it;
/// returns the computed plan, or fails when it could not be computed.
pub async fn run(
    client: &Client,
    request: &WorkloadPlan,
    format: Format,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<WorkloadPlan, Failure> {
    let namespace = request.metadata.namespace.clone().unwrap_or_default();
    let name = request.spec.workload_name.clone();
    let api: Api<WorkloadPlan> = Api::namespaced(client.clone(), &namespace);
    let what = format!("a plan for workload {namespace}/{name}");
    let created = api
        .create(&PostParams::default(), request)
        .await
        .map_err(|e| Failure::api(e, &what))?;
    let plan_name = created.metadata.name.clone().unwrap_or_default();
    let computed = until_computed(&api, &plan_name, timeout, &what).await;
    // Best effort: the operator deletes it after its TTL anyway.
    let _ = api.delete(&plan_name, &DeleteParams::background()).await;
    let plan = computed?;
    // The spec holds the manifests as given, a Secret's values included: never printed.
    let shown = without_spec(&plan)?;
    match format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&shown).context("encoding JSON")?
        ),
        Format::Yaml => write!(
            out,
            "{}",
            serde_norway::to_string(&shown).context("encoding YAML")?
        ),
        Format::Table | Format::Wide => print_tree(&namespace, &name, &plan, out),
    }
    .context("writing the output")?;
    let ready = plan.status.as_ref().and_then(|s| s.condition(READY));
    match ready {
        Some(condition) if condition.is_true() => Ok(plan.clone()),
        Some(condition) => Err(Failure::Other(anyhow::anyhow!("{}", condition.message))),
        None => Err(Failure::Other(anyhow::anyhow!("{what} has no result"))),
    }
}

/// The plan as printed: its metadata and status, without the spec it was asked with.
fn without_spec(plan: &WorkloadPlan) -> Result<Value, Failure> {
    let mut shown = serde_json::to_value(plan).context("encoding the plan")?;
    if let Some(object) = shown.as_object_mut() {
        object.remove("spec");
    }
    Ok(shown)
}

/// The plan request for `file`: one Workload and, beside it, any WorkloadServiceDependencies
/// of its namespace as they would be applied.
fn read_request(file: &Path, default_namespace: &str) -> Result<WorkloadPlan, Failure> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Usage(format!("reading standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(format!("reading {}: {e}", file.display())))?
    };
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let manifest = Value::deserialize(document)
            .map_err(|e| Failure::Usage(format!("{} is not YAML or JSON: {e}", file.display())))?;
        if !manifest.is_null() {
            documents.push(manifest);
        }
    }
    let (workloads, others): (Vec<_>, Vec<_>) =
        documents.into_iter().partition(|d| d["kind"] == "Workload");
    let [workload] = workloads.as_slice() else {
        return Err(Failure::Usage(format!(
            "{} must hold exactly one Workload (it holds {})",
            file.display(),
            workloads.len()
        )));
    };
    let (namespace, name) = identity(workload, default_namespace)?;
    let spec: WorkloadSpec = serde_json::from_value(workload["spec"].clone())
        .map_err(|e| Failure::Usage(format!("the Workload's spec: {e}")))?;
    let mut request = WorkloadPlan::request(&namespace, &name, spec);
    for other in others {
        request.spec.service_dependencies.push(service_dependency(
            &other,
            &namespace,
            default_namespace,
        )?);
    }
    Ok(request)
}

fn identity(manifest: &Value, default_namespace: &str) -> Result<(String, String), Failure> {
    let kind = manifest["kind"].as_str().unwrap_or("document");
    let metadata = &manifest["metadata"];
    let name = metadata["name"]
        .as_str()
        .ok_or_else(|| Failure::Usage(format!("a {kind} has no metadata.name")))?;
    let namespace = metadata["namespace"].as_str().unwrap_or(default_namespace);
    Ok((namespace.to_owned(), name.to_owned()))
}

fn service_dependency(
    manifest: &Value,
    namespace: &str,
    default_namespace: &str,
) -> Result<PlannedServiceDependency, Failure> {
    let kind = manifest["kind"]
        .as_str()
        .unwrap_or("document without a kind");
    if kind != "WorkloadServiceDependency" {
        return Err(Failure::Usage(format!(
            "a plan is for one Workload and its WorkloadServiceDependencies, not a {kind}"
        )));
    }
    let (its_namespace, name) = identity(manifest, default_namespace)?;
    if its_namespace != namespace {
        return Err(Failure::Usage(format!(
            "WorkloadServiceDependency {name} is in namespace {its_namespace}, the Workload in {namespace}"
        )));
    }
    let spec = serde_json::from_value(manifest["spec"].clone())
        .map_err(|e| Failure::Usage(format!("WorkloadServiceDependency {name}'s spec: {e}")))?;
    Ok(PlannedServiceDependency { name, spec })
}

async fn until_computed(
    api: &Api<WorkloadPlan>,
    name: &str,
    timeout: Duration,
    what: &str,
) -> Result<WorkloadPlan, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let plan = api.get(name).await.map_err(|e| Failure::api(e, what))?;
        let status = plan.status.as_ref();
        let done = status.is_some_and(|s| {
            s.observed_generation == plan.metadata.generation && s.condition(READY).is_some()
        });
        if done {
            return Ok(plan);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::TimedOut(format!(
                "{what} was not computed within {timeout:?}: is the operator running?"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn print_tree(
    namespace: &str,
    name: &str,
    plan: &WorkloadPlan,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let status = plan.status.clone().unwrap_or_default();
    let summary = status.summary.as_deref().unwrap_or("no result");
    writeln!(out, "Plan for workload {namespace}/{name}: {summary}")?;
    if let Some(ready) = status.condition(READY).filter(|c| !c.is_true()) {
        writeln!(out, "  {}", ready.message)?;
    }
    for placement in &status.placements {
        print_placement(placement, out)?;
    }
    Ok(())
}

fn print_placement(placement: &PlannedPlacement, out: &mut dyn Write) -> std::io::Result<()> {
    let region = if placement.region.is_empty() {
        String::new()
    } else {
        format!(" ({})", placement.region)
    };
    let action = match (placement.action, &placement.profile) {
        (PlanAction::Provision, Some(profile)) => format!(": provision from profile {profile}"),
        (PlanAction::Unchanged, _) => String::new(),
        (action, _) => format!(": {}", action.as_str()),
    };
    writeln!(out, "runtime {}{region}{action}", placement.runtime)?;
    if let Some(message) = &placement.message {
        writeln!(out, "  {message}")?;
    }
    for service in &placement.support_services {
        let action = service.action.as_str();
        match &service.dependency {
            Some(dependency) => writeln!(
                out,
                "  {action:<9} back-end service {} (for {dependency}, from {})",
                service.name, service.profile
            )?,
            None => writeln!(
                out,
                "  {action:<9} support service {} ({} from {})",
                service.name, service.capability, service.profile
            )?,
        }
    }
    for object in &placement.objects {
        let location = match &object.namespace {
            Some(ns) => format!("{ns}/{}", object.name),
            None => object.name.clone(),
        };
        writeln!(
            out,
            "  {:<9} {} {} {location}",
            object.action.as_str(),
            object.api_version,
            object.kind
        )?;
        for change in &object.changes {
            let before = change.before.as_deref().unwrap_or("(absent)");
            let after = change.after.as_deref().unwrap_or("(absent)");
            writeln!(out, "              {}: {before} → {after}", change.path)?;
        }
        if let Some(message) = &object.message {
            writeln!(out, "              {message}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use qleetos_crds::{FieldChange, PlannedObject, PlannedService, WorkloadPlanStatus};

    use super::*;

    #[test]
    fn the_tree_shows_each_runtime_service_object_and_field() {
        let placements = vec![PlannedPlacement {
            runtime: "kwok-eu".into(),
            region: "eu-west-2".into(),
            action: PlanAction::Provision,
            profile: Some("kwok".into()),
            message: Some("cluster not yet provisioned: objects will be created".into()),
            support_services: vec![PlannedService {
                capability: "tls".into(),
                profile: "cert-manager".into(),
                name: "cert-manager.kwok-eu".into(),
                dependency: None,
                action: PlanAction::Install,
            }],
            objects: vec![PlannedObject {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("team".into()),
                name: "web".into(),
                action: PlanAction::Update,
                changes: vec![FieldChange {
                    path: "spec.replicas".into(),
                    before: Some("1".into()),
                    after: Some("2".into()),
                }],
                message: None,
            }],
        }];
        let spec = serde_json::json!({"placement": {"regions": ["eu-west-2"]}});
        let spec = serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}"));
        let mut plan = WorkloadPlan::request("team", "web", spec);
        plan.status = Some(WorkloadPlanStatus {
            summary: Some(WorkloadPlanStatus::summarize(&placements)),
            placements,
            ..Default::default()
        });
        let mut out = Vec::new();
        print_tree("team", "web", &plan, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Plan for workload team/web: 1 provision, 1 install, 1 update\n\
             runtime kwok-eu (eu-west-2): provision from profile kwok\n  \
             cluster not yet provisioned: objects will be created\n  \
             install   support service cert-manager.kwok-eu (tls from cert-manager)\n  \
             update    apps/v1 Deployment team/web\n              \
             spec.replicas: 1 → 2\n"
        );
    }

    fn request_of(text: &str) -> Result<WorkloadPlan, String> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("plan.yaml");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        read_request(&file, "default").map_err(|e| e.to_string())
    }

    const WEB: &str = "kind: Workload\nmetadata: {name: web, namespace: shop}\n\
                       spec: {manifests: [], placement: {regions: [eu-west-1]}}\n";

    #[test]
    fn one_workload_and_its_service_dependencies_can_be_planned() {
        let error = request_of("kind: ConfigMap\nmetadata: {name: x}\n").err();
        assert_eq!(
            error.as_deref().map(|e| e.ends_with("holds 0)")),
            Some(true),
            "{error:?}"
        );
        let chain = "kind: WorkloadServiceDependency\nmetadata: {name: chain, namespace: shop}\n\
                     spec: {workloads: [web], profileRef: {name: ethereum-rpc}}\n";
        let request = request_of(&format!("{WEB}---\n{chain}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(request.spec.service_dependencies[0].name, "chain");
        let elsewhere = chain.replace("namespace: shop", "namespace: other");
        let error = request_of(&format!("{WEB}---\n{elsewhere}")).err();
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("in namespace other")),
            "{error:?}"
        );
        let error = request_of(&format!("{WEB}---\nkind: Secret\nmetadata: {{name: s}}\n")).err();
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.ends_with("not a Secret")),
            "{error:?}"
        );
    }
}
