//! `events`: the Kubernetes Events about a Workload and about its WorkloadInstances, oldest
//! first, as `kubectl events` would show them for each object.

use std::io::Write;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use qleetos_crds::{Workload, WorkloadInstance};

use crate::failure::Failure;
use crate::output::{Format, ago, objects, table};

/// The label the operator puts on the instances it makes for a Workload (its name, cut to
/// 63 characters with a hash when longer: the owner reference finds those).
const WORKLOAD_LABEL: &str = "qleetos.io/workload";

pub async fn workload(
    client: &Client,
    namespace: &str,
    name: &str,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let what = format!("workload {namespace}/{name}");
    let workload = Api::<Workload>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| Failure::api(e, &what))?;
    let instances = Api::<WorkloadInstance>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map_err(|e| Failure::api(e, &format!("workload instances in {namespace}")))?;
    let mut subjects = vec![("Workload", name.to_owned())];
    subjects.extend(
        instances
            .items
            .iter()
            .filter(|i| belongs_to(i, &workload))
            .map(|i| ("WorkloadInstance", i.name_any())),
    );
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut events = Vec::new();
    for (kind, object) in subjects {
        events.extend(about(&api, kind, &object).await?);
    }
    sort_oldest_first(&mut events);
    show(out, format, &events)
}

/// The Events whose involved object is `kind` `name`.
async fn about(api: &Api<Event>, kind: &str, name: &str) -> Result<Vec<Event>, Failure> {
    let params = ListParams::default().fields(&involving(kind, name));
    let list = api
        .list(&params)
        .await
        .map_err(|e| Failure::api(e, &format!("events of {kind} {name}")))?;
    Ok(list.items)
}

fn involving(kind: &str, name: &str) -> String {
    format!("involvedObject.kind={kind},involvedObject.name={name}")
}

/// Whether the operator made `instance` for `workload`: it is owned by it, or labelled
/// with its name.
fn belongs_to(instance: &WorkloadInstance, workload: &Workload) -> bool {
    let owned = instance.owner_references().iter().any(|owner| {
        owner.kind == "Workload"
            && workload
                .metadata
                .uid
                .as_ref()
                .is_some_and(|uid| *uid == owner.uid)
    });
    let labelled = instance
        .labels()
        .get(WORKLOAD_LABEL)
        .is_some_and(|value| Some(value) == workload.metadata.name.as_ref());
    owned || labelled
}

/// When the Event last happened: its series' last occurrence, else the first of
/// `lastTimestamp`, `eventTime`, `firstTimestamp` and its creation that is set.
fn last_seen(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or(event.last_timestamp.as_ref().map(|t| t.0))
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.first_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Oldest first; Events without any time first of all.
fn sort_oldest_first(events: &mut [Event]) {
    events.sort_by_key(last_seen);
}

fn show(out: &mut dyn Write, format: Format, events: &[Event]) -> Result<(), Failure> {
    match format {
        Format::Json | Format::Yaml => objects(out, format, events),
        Format::Table | Format::Wide if events.is_empty() => {
            writeln!(out, "No events.").context("writing the output")?;
            Ok(())
        }
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = events.iter().map(row).collect();
            table(
                out,
                &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
                &rows,
            )
        }
    }
}

fn row(event: &Event) -> Vec<String> {
    let object = &event.involved_object;
    vec![
        ago(last_seen(event)),
        event.type_.clone().unwrap_or_default(),
        event.reason.clone().unwrap_or_default(),
        format!(
            "{}/{}",
            object.kind.clone().unwrap_or_default(),
            object.name.clone().unwrap_or_default()
        ),
        // One line per Event, whatever the note says.
        event
            .message
            .clone()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    ]
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EventSeries, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
    use kube::api::ObjectMeta;
    use qleetos_crds::{RuntimeRef, WorkloadInstanceSpec};

    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap_or_else(|e| panic!("{e}"))
    }

    fn event(reason: &str) -> Event {
        Event {
            reason: Some(reason.into()),
            ..Event::default()
        }
    }

    fn reasons(events: &[Event]) -> Vec<&str> {
        events.iter().filter_map(|e| e.reason.as_deref()).collect()
    }

    #[test]
    fn events_sort_by_when_they_last_happened() {
        let mut repeated = event("Repeated");
        repeated.event_time = Some(MicroTime(at(100)));
        repeated.series = Some(EventSeries {
            count: Some(3),
            last_observed_time: Some(MicroTime(at(400))),
        });
        let mut recorded = event("Recorded");
        recorded.event_time = Some(MicroTime(at(200)));
        let mut legacy = event("Legacy");
        legacy.first_timestamp = Some(Time(at(50)));
        legacy.last_timestamp = Some(Time(at(300)));
        let mut first_only = event("FirstOnly");
        first_only.first_timestamp = Some(Time(at(250)));
        let timeless = event("Timeless");
        let mut events = vec![repeated, recorded, legacy, first_only, timeless];
        sort_oldest_first(&mut events);
        assert_eq!(
            reasons(&events),
            ["Timeless", "Recorded", "FirstOnly", "Legacy", "Repeated"]
        );
    }

    #[test]
    fn a_row_shows_the_object_and_a_one_line_message() {
        let mut warning = event("UnknownImageContainer");
        warning.type_ = Some("Warning".into());
        warning.message = Some("no container\nnamed  sidecar".into());
        warning.involved_object = ObjectReference {
            kind: Some("Workload".into()),
            name: Some("web".into()),
            ..ObjectReference::default()
        };
        let row = row(&warning);
        assert_eq!(row[0], "<unknown>");
        assert_eq!(
            row[1..],
            [
                "Warning",
                "UnknownImageContainer",
                "Workload/web",
                "no container named sidecar"
            ]
        );
    }

    #[test]
    fn without_events_the_table_says_so() {
        let mut out = Vec::new();
        show(&mut out, Format::Table, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(String::from_utf8_lossy(&out), "No events.\n");
    }

    #[test]
    fn field_selectors_name_the_kind_and_the_object() {
        assert_eq!(
            involving("WorkloadInstance", "web-eu-west"),
            "involvedObject.kind=WorkloadInstance,involvedObject.name=web-eu-west"
        );
    }

    fn workload(name: &str, uid: &str) -> Workload {
        let spec = serde_json::json!({"manifests": [], "placement": {}});
        let spec = serde_json::from_value(spec).unwrap_or_else(|e| panic!("{e}"));
        let mut workload = Workload::new(name, spec);
        workload.metadata.uid = Some(uid.into());
        workload
    }

    fn instance(name: &str, label: Option<&str>, owner_uid: Option<&str>) -> WorkloadInstance {
        let mut instance = WorkloadInstance::new(
            name,
            WorkloadInstanceSpec {
                workload_ref: None,
                runtime_ref: RuntimeRef {
                    name: "eu-west".into(),
                },
                manifests: Vec::new(),
                chart: None,
                images: Default::default(),
                expose: None,
                needs: Vec::new(),
            },
        );
        instance.metadata = ObjectMeta {
            name: Some(name.into()),
            labels: label.map(|l| [(WORKLOAD_LABEL.to_owned(), l.to_owned())].into()),
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "qleetos.io/v1alpha1".into(),
                    kind: "Workload".into(),
                    name: "whatever".into(),
                    uid: uid.into(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        };
        instance
    }

    #[test]
    fn instances_belong_by_owner_or_by_label() {
        let web = workload("web", "uid-web");
        assert!(belongs_to(&instance("a", Some("web"), None), &web));
        assert!(belongs_to(&instance("b", None, Some("uid-web")), &web));
        assert!(!belongs_to(&instance("c", Some("web-2"), None), &web));
        assert!(!belongs_to(&instance("d", None, Some("uid-other")), &web));
        assert!(!belongs_to(&instance("e", None, None), &web));
    }
}
