//! What QleetOS has committed to each runtime: the requests of the instances placed there
//! (from the management caches), and the placements this operator decided whose instances
//! the caches may not show yet (a reservation, kept until they do or for a minute).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qleetos_crds::{Resources, WorkloadInstance};

use super::request_of;

/// How long a reservation stands for an instance the caches do not show yet.
const RESERVATION_TTL: Duration = Duration::from_secs(60);

/// Requests committed per runtime.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commitments(pub BTreeMap<String, Resources>);

impl Commitments {
    /// The instances' requests (but those of workload `except`) and the reservations of
    /// other workloads for placements the instances do not show yet.
    pub fn of<'a>(
        instances: impl IntoIterator<Item = &'a WorkloadInstance>,
        reservations: &Reservation,
        except: &str,
    ) -> Self {
        let mut committed: BTreeMap<String, Resources> = BTreeMap::new();
        let mut placed: Vec<(String, String)> = Vec::new();
        for instance in instances {
            let owner = owner_uid(instance);
            placed.push((instance.spec.runtime_ref.name.clone(), owner.clone()));
            if owner == except {
                continue;
            }
            let entry = committed
                .entry(instance.spec.runtime_ref.name.clone())
                .or_default();
            *entry = entry.plus(request_of(&instance.spec.manifests));
        }
        for (runtime, workload, request) in reservations.current() {
            let shown = placed.iter().any(|(r, w)| *r == runtime && *w == workload);
            if workload != except && !shown {
                let entry = committed.entry(runtime).or_default();
                *entry = entry.plus(request);
            }
        }
        Commitments(committed)
    }

    pub fn on(&self, runtime: &str) -> Resources {
        self.0.get(runtime).copied().unwrap_or_default()
    }
}

fn owner_uid(instance: &WorkloadInstance) -> String {
    instance
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Workload")
        .map(|o| o.uid.clone())
        .unwrap_or_default()
}

/// A runtime's reservations: workload uid → its request and when it was reserved.
type ByWorkload = HashMap<String, (Resources, Instant)>;

/// This operator's placements not yet in the caches: runtime → workload uid → request.
#[derive(Debug, Default)]
pub struct Reservation {
    table: Mutex<HashMap<String, ByWorkload>>,
    /// Held through a check-and-reserve (the table's own lock is taken inside the check).
    reserving: Mutex<()>,
}

impl Reservation {
    fn current(&self) -> Vec<(String, String, Resources)> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        table.retain(|_, by_workload| {
            by_workload.retain(|_, (_, at)| now.duration_since(*at) < RESERVATION_TTL);
            !by_workload.is_empty()
        });
        table
            .iter()
            .flat_map(|(runtime, by_workload)| {
                by_workload
                    .iter()
                    .map(|(workload, (request, _))| (runtime.clone(), workload.clone(), *request))
            })
            .collect()
    }

    /// Reserves `request` on each of `runtimes` for `workload` unless one of them no longer
    /// holds it once the others' commitments are counted (`fits` says); false then, and
    /// nothing is reserved. One lock: two passes cannot both take the last room.
    pub fn reserve_if(
        &self,
        workload: &str,
        runtimes: &[String],
        request: Resources,
        fits: impl FnOnce(&Reservation) -> bool,
    ) -> bool {
        let _guard = self.reserving.lock().unwrap_or_else(|e| e.into_inner());
        if !fits(self) {
            return false;
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        for by_workload in table.values_mut() {
            by_workload.remove(workload);
        }
        for runtime in runtimes {
            table
                .entry(runtime.clone())
                .or_default()
                .insert(workload.to_owned(), (request, Instant::now()));
        }
        true
    }
}
