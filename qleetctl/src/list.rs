//! `get` and `status`: Workloads, runtimes and service dependencies as tables or objects.

use std::io::Write;

use anyhow::Context as _;
use kube::api::{Api, ListParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource};
use qleetos_crds::{
    Condition, Conditions, KubernetesRuntime, READY, Workload, WorkloadServiceDependency,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Kind;
use crate::failure::Failure;
use crate::output::{Format, age, held_by, objects, table};

pub async fn get(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
    name: Option<&str>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match kind {
        Kind::Workloads => {
            let items: Vec<Workload> = fetch(scoped(client, namespace), name, "workload").await?;
            show(
                out,
                format,
                &items,
                workload_rows(&items, format, namespace.is_none()),
            )
        }
        Kind::Runtimes => {
            let items: Vec<KubernetesRuntime> =
                fetch(Api::all(client.clone()), name, "runtime").await?;
            show(out, format, &items, runtime_rows(&items, format))
        }
        Kind::Dependencies => {
            let items: Vec<WorkloadServiceDependency> =
                fetch(scoped(client, namespace), name, "service dependency").await?;
            show(
                out,
                format,
                &items,
                dependency_rows(&items, namespace.is_none()),
            )
        }
    }
}

/// Every runtime, then every Workload the caller may list: what `make run` ends with.
pub async fn status(client: &Client, out: &mut dyn Write) -> Result<(), Failure> {
    let runtimes: Vec<KubernetesRuntime> = fetch(Api::all(client.clone()), None, "runtime").await?;
    show(
        out,
        Format::Table,
        &runtimes,
        runtime_rows(&runtimes, Format::Table),
    )?;
    writeln!(out).context("writing the output")?;
    let workloads: Vec<Workload> = fetch(scoped(client, None), None, "workload").await?;
    show(
        out,
        Format::Wide,
        &workloads,
        workload_rows(&workloads, Format::Wide, true),
    )?;
    let ready = workloads.iter().filter(|w| is_ready(w)).count();
    let cost = total_cost(&runtimes).map_or_else(String::new, |c| format!(", {c:.4} per hour"));
    writeln!(
        out,
        "\n{} runtimes ({} ready{cost}), {} workloads ({ready} ready)",
        runtimes.len(),
        runtimes
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.is_ready()))
            .count(),
        workloads.len()
    )
    .context("writing the output")?;
    Ok(())
}

/// The API for a namespaced kind: in `namespace`, or across every namespace (`None`).
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// One named object, or every object the API lists.
async fn fetch<K>(api: Api<K>, name: Option<&str>, what: &str) -> Result<Vec<K>, Failure>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match name {
        Some(name) => {
            let object = api
                .get(name)
                .await
                .map_err(|e| Failure::api(e, &format!("{what} {name}")))?;
            Ok(vec![object])
        }
        None => {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| Failure::api(e, &format!("listing {what}s")))?;
            Ok(list.items)
        }
    }
}

fn show<T: Serialize>(
    out: &mut dyn Write,
    format: Format,
    items: &[T],
    (header, rows): (Vec<&str>, Vec<Vec<String>>),
) -> Result<(), Failure> {
    match format {
        Format::Json | Format::Yaml => objects(out, format, items),
        Format::Table | Format::Wide => table(out, &header, &rows),
    }
}

fn is_ready(workload: &Workload) -> bool {
    workload
        .status
        .as_ref()
        .and_then(|s| s.condition(READY))
        .is_some_and(|c| c.is_true())
}

/// The Ready condition's status, `Unknown` before the first status.
fn ready_status(ready: Option<&Condition>) -> String {
    ready.map_or_else(|| "Unknown".to_owned(), |c| format!("{:?}", c.status))
}

/// The Ready reason, `failed: ` before it when the object is not Ready because of a failure.
fn ready_reason(ready: Option<&Condition>) -> String {
    ready.map_or_else(String::new, |c| {
        if !c.is_true() && held_by(&c.reason) == "failed" {
            format!("failed: {}", c.reason)
        } else {
            c.reason.clone()
        }
    })
}

fn workload_rows(
    items: &[Workload],
    format: Format,
    namespaces: bool,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let wide = format == Format::Wide;
    let mut header = vec!["NAME", "READY", "PLACEMENTS", "REASON", "AGE"];
    if wide {
        header.extend(["RUNTIMES", "URLS"]);
    }
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    let rows = items
        .iter()
        .map(|w| {
            let status = w.status.clone().unwrap_or_default();
            let ready = status.condition(READY);
            let mut row = vec![
                w.metadata.name.clone().unwrap_or_default(),
                ready_status(ready),
                status.ready_placements.clone().unwrap_or_default(),
                ready_reason(ready),
                age(w.metadata.creation_timestamp.as_ref()),
            ];
            if wide {
                let runtimes: Vec<&str> = status
                    .placements
                    .iter()
                    .map(|p| p.runtime.as_str())
                    .collect();
                let urls: Vec<&str> = status
                    .placements
                    .iter()
                    .flat_map(|p| p.urls.iter().map(String::as_str))
                    .collect();
                row.extend([runtimes.join(","), urls.join(",")]);
            }
            if namespaces {
                row.insert(0, w.metadata.namespace.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    (header, rows)
}

fn runtime_rows(
    items: &[KubernetesRuntime],
    format: Format,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let wide = format == Format::Wide;
    let mut header = vec![
        "NAME", "REGION", "PROVIDER", "READY", "VERSION", "NODES", "CPU USED", "COST/H", "AGE",
    ];
    if wide {
        header.extend(["SUPPORT SERVICES", "MESSAGE"]);
    }
    let rows = items
        .iter()
        .map(|r| {
            let status = r.status.clone().unwrap_or_default();
            let mut row = vec![
                r.metadata.name.clone().unwrap_or_default(),
                r.spec.region.clone(),
                r.spec.provider.clone(),
                status.is_ready().to_string(),
                status.server_version.clone().unwrap_or_default(),
                status.node_count.map(|n| n.to_string()).unwrap_or_default(),
                cpu_used(&status),
                status
                    .capacity
                    .as_ref()
                    .and_then(|c| c.cost_per_hour.clone())
                    .unwrap_or_default(),
                age(r.metadata.creation_timestamp.as_ref()),
            ];
            if wide {
                let services: Vec<String> = status
                    .support_services
                    .iter()
                    .map(|s| format!("{}:{}", s.capability, s.state))
                    .collect();
                row.extend([
                    services.join(","),
                    status.message.clone().unwrap_or_default(),
                ]);
            }
            row
        })
        .collect();
    (header, rows)
}

/// Requested of allocatable CPU, e.g. `34.0/64`.
fn cpu_used(status: &qleetos_crds::KubernetesRuntimeStatus) -> String {
    status.capacity.as_ref().map_or_else(String::new, |c| {
        format!(
            "{:.1}/{:.0}",
            c.requested.cpu_millicores as f64 / 1000.0,
            c.allocatable.cpu_millicores as f64 / 1000.0
        )
    })
}

/// The runtimes' summed cost per hour, when any reports one.
fn total_cost(runtimes: &[KubernetesRuntime]) -> Option<f64> {
    let costs: Vec<f64> = runtimes
        .iter()
        .filter_map(|r| {
            r.status
                .as_ref()?
                .capacity
                .as_ref()?
                .cost_per_hour
                .as_deref()
        })
        .filter_map(|c| c.parse().ok())
        .collect();
    (!costs.is_empty()).then(|| costs.iter().sum())
}

fn dependency_rows(
    items: &[WorkloadServiceDependency],
    namespaces: bool,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let mut header = vec!["NAME", "PROFILE", "WORKLOADS", "READY", "REASON", "AGE"];
    if namespaces {
        header.insert(0, "NAMESPACE");
    }
    let rows = items
        .iter()
        .map(|d| {
            let status = d.status.clone().unwrap_or_default();
            let ready = status.condition(READY);
            let mut row = vec![
                d.metadata.name.clone().unwrap_or_default(),
                d.spec.profile_ref.name.clone(),
                d.spec.workloads.join(","),
                ready_status(ready),
                ready_reason(ready),
                age(d.metadata.creation_timestamp.as_ref()),
            ];
            if namespaces {
                row.insert(0, d.metadata.namespace.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    (header, rows)
}

#[cfg(test)]
mod tests {
    use qleetos_crds::Reason;

    use super::*;

    #[test]
    fn the_reason_column_says_failed_only_for_a_failure() {
        let failed = Condition::ready(false, Reason::PlacementFailed, "a: ApplyFailed");
        assert_eq!(ready_reason(Some(&failed)), "failed: PlacementFailed");
        let waiting = Condition::ready(false, Reason::WaitingForRuntime, "eu is provisioning");
        assert_eq!(ready_reason(Some(&waiting)), "WaitingForRuntime");
        let ready = Condition::ready(true, Reason::AllPlacementsReady, "ready on 1 runtime(s)");
        assert_eq!(ready_reason(Some(&ready)), "AllPlacementsReady");
        assert_eq!(ready_reason(None), "");
    }
}
