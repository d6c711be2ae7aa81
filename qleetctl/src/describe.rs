//! `describe workload`: the Workload's conditions, then a tree of its placements, each with
//! its instance's dependencies (support services, back-end services) and how far each is:
//! what the placement waits on.

use std::io::Write;

use anyhow::Context as _;
use kube::Client;
use kube::api::{Api, ListParams};
use qleetos_crds::{
    Conditions, DependencyState, DependencyStatus, PlacementStatus, READY, Workload,
    WorkloadInstance, WorkloadServiceDependency,
};

use crate::failure::Failure;
use crate::output::held_by;

pub async fn workload(
    client: &Client,
    namespace: &str,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let what = format!("workload {namespace}/{name}");
    let workloads: Api<Workload> = Api::namespaced(client.clone(), namespace);
    let workload = workloads
        .get(name)
        .await
        .map_err(|e| Failure::api(e, &what))?;
    let instances: Api<WorkloadInstance> = Api::namespaced(client.clone(), namespace);
    let status = workload.status.clone().unwrap_or_default();
    let mut text = header(&workload);
    text.push_str("Placements:\n");
    if status.placements.is_empty() {
        text.push_str("  (none yet)\n");
    }
    for (index, placement) in status.placements.iter().enumerate() {
        let last = index + 1 == status.placements.len();
        let dependencies = match instances.get_opt(&placement.instance).await {
            Ok(instance) => instance
                .and_then(|i| i.status)
                .map(|s| s.dependencies)
                .unwrap_or_default(),
            Err(error) => return Err(Failure::api(error, &what)),
        };
        text.push_str(&branch(placement, &dependencies, last));
    }
    text.push_str(&service_dependencies(client, namespace, name).await?);
    out.write_all(text.as_bytes())
        .context("writing the output")?;
    Ok(())
}

fn header(workload: &Workload) -> String {
    let status = workload.status.clone().unwrap_or_default();
    let mut text = format!(
        "Workload {}/{}\nGeneration: {} (status of {})\n",
        workload.metadata.namespace.clone().unwrap_or_default(),
        workload.metadata.name.clone().unwrap_or_default(),
        workload.metadata.generation.unwrap_or_default(),
        status
            .observed_generation
            .map_or_else(|| "none yet".to_owned(), |g| g.to_string()),
    );
    if let Some(ready) = status.condition(READY) {
        text.push_str(&format!(
            "Ready: {:?} ({}) {}\n",
            ready.status, ready.reason, ready.message
        ));
    }
    for condition in status.conditions.iter().filter(|c| c.type_ != READY) {
        text.push_str(&format!(
            "{}: {:?} ({}) {}\n",
            condition.type_, condition.status, condition.reason, condition.message
        ));
    }
    if let Some(rebalance) = &status.rebalance {
        text.push_str(&format!(
            "Rebalance: {:?} ({}) {}\n",
            rebalance.state,
            rebalance.requested,
            rebalance.message.as_deref().unwrap_or_default()
        ));
    }
    if !workload.spec.images.is_empty() {
        let images: Vec<String> = workload
            .spec
            .images
            .iter()
            .map(|(c, i)| format!("{c}={i}"))
            .collect();
        text.push_str(&format!("Images: {}\n", images.join(", ")));
    }
    text
}

/// One placement and, under it, its dependencies.
fn branch(placement: &PlacementStatus, dependencies: &[DependencyStatus], last: bool) -> String {
    let (stem, indent) = if last {
        ("└─", "   ")
    } else {
        ("├─", "│  ")
    };
    let state = if placement.ready {
        "Ready".to_owned()
    } else {
        let held = held_by(&placement.reason);
        format!("{held}: {}: {}", placement.reason, placement.message)
    };
    let mut text = format!(
        "{stem} {} (region {}), instance {}: {state}\n",
        placement.runtime, placement.region, placement.instance
    );
    if let Some(replaced) = &placement.replaces {
        text.push_str(&format!("{indent}   stands in for {replaced}\n"));
    }
    for url in &placement.urls {
        text.push_str(&format!("{indent}   url: {url}\n"));
    }
    for (index, dependency) in dependencies.iter().enumerate() {
        let stem = if index + 1 == dependencies.len() {
            "└─"
        } else {
            "├─"
        };
        let provider = if dependency.name.is_empty() {
            format!("{} (nothing provides it)", dependency.kind)
        } else {
            format!("{} {}", dependency.kind, dependency.name)
        };
        let message = if dependency.message.is_empty() {
            String::new()
        } else {
            format!(": {}", dependency.message)
        };
        let since = match &dependency.since {
            Some(since) if dependency.state != DependencyState::Ready => {
                format!(" since {since}")
            }
            _ => String::new(),
        };
        text.push_str(&format!(
            "{indent}{stem} {}: {provider}, {}{since}{message}\n",
            dependency.capability, dependency.state
        ));
    }
    text
}

/// The WorkloadServiceDependencies that name this Workload.
async fn service_dependencies(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<String, Failure> {
    let api: Api<WorkloadServiceDependency> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Failure::api(e, &format!("service dependencies in {namespace}")))?;
    let mine: Vec<&WorkloadServiceDependency> = list
        .items
        .iter()
        .filter(|d| d.spec.workloads.iter().any(|w| w == name))
        .collect();
    if mine.is_empty() {
        return Ok(String::new());
    }
    let mut text = String::from("Service dependencies:\n");
    for dependency in mine {
        let ready = dependency
            .status
            .as_ref()
            .and_then(|s| s.condition(READY).cloned());
        let state = ready.map_or_else(
            || "no status yet".to_owned(),
            |c| format!("Ready {:?} ({}) {}", c.status, c.reason, c.message),
        );
        text.push_str(&format!(
            "  {} (profile {}): {state}\n",
            dependency.metadata.name.clone().unwrap_or_default(),
            dependency.spec.profile_ref.name
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use qleetos_crds::DependencyState;

    use super::*;

    #[test]
    fn a_waiting_placement_shows_what_it_waits_on() {
        let placement = PlacementStatus {
            runtime: "eu-west".into(),
            region: "eu-west-1".into(),
            instance: "web-eu-west".into(),
            ready: false,
            reason: "WaitingForSupportService".into(),
            message: "tls is Installing".into(),
            ..PlacementStatus::default()
        };
        let dependency = DependencyStatus {
            capability: "tls".into(),
            kind: "SupportService".into(),
            name: "cert-manager".into(),
            state: DependencyState::Installing,
            message: "0/1 Deployments ready".into(),
            dependency: None,
            since: Some("2026-01-01T00:00:00Z".into()),
        };
        assert_eq!(
            branch(&placement, &[dependency], true),
            "└─ eu-west (region eu-west-1), instance web-eu-west: waiting: WaitingForSupportService: tls is Installing\n   └─ tls: SupportService cert-manager, Installing since 2026-01-01T00:00:00Z: 0/1 Deployments ready\n"
        );
    }

    #[test]
    fn a_failed_placement_says_it_failed() {
        let placement = PlacementStatus {
            runtime: "eu-west".into(),
            region: "eu-west-1".into(),
            instance: "web-eu-west".into(),
            ready: false,
            reason: "RuntimeUnreachable".into(),
            message: "runtime eu-west is unreachable".into(),
            ..PlacementStatus::default()
        };
        assert_eq!(
            branch(&placement, &[], true),
            "└─ eu-west (region eu-west-1), instance web-eu-west: failed: RuntimeUnreachable: runtime eu-west is unreachable\n"
        );
    }
}
