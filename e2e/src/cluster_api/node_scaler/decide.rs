//! The node scaler's decisions, apart from any API: how far a node group grows for the pods
//! that wait, and which of its nodes may go.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use qleetos_crds::Resources;

/// A node group as one scan sees it.
#[derive(Debug, Clone)]
pub struct Group {
    pub min: i32,
    pub max: i32,
    /// The MachineDeployment's `spec.replicas`.
    pub replicas: i32,
    /// Its Machines, each with its Node once the Node exists and is Ready.
    pub members: Vec<Member>,
    /// What one new node offers: the MachineDeployment's capacity annotations, else a
    /// member's allocatable.
    pub template: Option<Resources>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub machine: String,
    pub node: Option<ReadyNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyNode {
    pub name: String,
    /// No pod on it but DaemonSet and mirror pods, and none that finished.
    pub empty: bool,
}

impl Group {
    /// Every replica has its Machine and every Machine a Ready Node: nothing is on its way.
    pub fn settled(&self) -> bool {
        self.members.len() == usize::try_from(self.replicas).unwrap_or(0)
            && self.members.iter().all(|m| m.node.is_some())
    }
}

/// The replica count that gives room to the `pending` pods (their requests), bounded by
/// `max`; `None` while the group is still changing, at its maximum, or of no help (no pod
/// fits one of its nodes).
pub fn scale_up_to(group: &Group, pending: &[Resources]) -> Option<i32> {
    if !group.settled() || group.replicas >= group.max {
        return None;
    }
    let template = group.template?;
    let needed = nodes_for(pending, template);
    (needed > 0).then(|| group.replicas.saturating_add(needed).min(group.max))
}

/// New nodes of size `template` the pods need, packed first-fit, largest CPU first; pods
/// larger than a node count for nothing.
fn nodes_for(pending: &[Resources], template: Resources) -> i32 {
    let mut pods: Vec<Resources> = pending
        .iter()
        .copied()
        .filter(|pod| fits(*pod, template))
        .collect();
    pods.sort_by_key(|pod| std::cmp::Reverse(pod.cpu_millicores));
    let mut free: Vec<Resources> = Vec::new();
    for pod in pods {
        match free.iter_mut().find(|room| fits(pod, **room)) {
            Some(room) => *room = minus(*room, pod),
            None => free.push(minus(template, pod)),
        }
    }
    i32::try_from(free.len()).unwrap_or(i32::MAX)
}

fn fits(pod: Resources, room: Resources) -> bool {
    pod.cpu_millicores <= room.cpu_millicores && pod.memory_bytes <= room.memory_bytes
}

fn minus(room: Resources, pod: Resources) -> Resources {
    Resources {
        cpu_millicores: room.cpu_millicores - pod.cpu_millicores,
        memory_bytes: room.memory_bytes - pod.memory_bytes,
    }
}

/// Since when each node has been seen empty; a node that holds a pod again starts over.
#[derive(Debug, Default)]
pub struct EmptySince(HashMap<String, Instant>);

impl EmptySince {
    /// Records the group's nodes as seen at `now`.
    pub fn observe(&mut self, group: &Group, now: Instant) {
        for node in group.members.iter().filter_map(|m| m.node.as_ref()) {
            if node.empty {
                self.0.entry(node.name.clone()).or_insert(now);
            } else {
                self.0.remove(&node.name);
            }
        }
    }

    /// The Machine to remove: one whose node has been empty for `unneeded`, while the group
    /// is settled and above its minimum. The longest-empty goes first.
    pub fn removable<'g>(
        &self,
        group: &'g Group,
        now: Instant,
        unneeded: Duration,
    ) -> Option<&'g Member> {
        if !group.settled() || group.replicas <= group.min {
            return None;
        }
        group
            .members
            .iter()
            .filter_map(|member| {
                let node = member.node.as_ref()?;
                let since = self.0.get(&node.name)?;
                (node.empty && now.duration_since(*since) >= unneeded).then_some((since, member))
            })
            .min_by_key(|(since, _)| **since)
            .map(|(_, member)| member)
    }
}

#[cfg(test)]
mod tests;
