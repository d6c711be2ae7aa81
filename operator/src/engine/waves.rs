//! A revision rolled out in waves: each wave's members get the new revision once the waves
//! before it are healthy and baked; a failed wave halts the rollout and the members of later
//! waves keep the stable revision. Pure: the caller reads members' health and writes the
//! assignments and the status this decides.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use qleetos_crds::Reason;
use qleetos_crds::staged::{RolloutPhase, RuntimeSelection, StagedRolloutStatus};

/// One member of a rollout (a runtime a profile is installed in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Its wave, from 0; ignored when pinned.
    pub wave: usize,
    /// The revision a pin holds it at.
    pub pinned: Option<i64>,
    /// The revision it last installed (or tried to), when its status is current.
    pub installed: Option<i64>,
    pub health: Health,
}

/// How a member is doing at the revision it installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Progressing(String),
    Failed(String),
}

/// Puts the members no wave selected by name, region or labels (those in wave `waves.len()`)
/// into the percentage waves: a wave with `percent: p` is filled, in name order, until the
/// waves up to it hold `p`% of the members not pinned (rounded up).
pub fn fill_percent_waves(members: &mut [Member], waves: &[RuntimeSelection]) {
    let percents: Vec<Option<u32>> = waves.iter().map(|w| w.percent).collect();
    let rest = percents.len();
    let total = members.iter().filter(|m| m.pinned.is_none()).count();
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|a, b| members[*a].name.cmp(&members[*b].name));
    for (wave, percent) in percents.iter().enumerate() {
        let Some(percent) = percent else { continue };
        let target = (total * *percent as usize).div_ceil(100);
        for &index in &order {
            let reached = members
                .iter()
                .filter(|m| m.pinned.is_none() && m.wave <= wave)
                .count();
            if reached >= target {
                break;
            }
            let member = &mut members[index];
            if member.pinned.is_none() && member.wave == rest {
                member.wave = wave;
            }
        }
    }
}

/// The gates between waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gates {
    /// Number of waves.
    pub waves: usize,
    pub bake: Duration,
    pub deadline: Duration,
    /// Whether a halt returns the members already moved to the stable revision.
    pub rollback: bool,
    /// At most this many members of the wave in progress moving or unhealthy at once.
    pub max_unavailable: Option<usize>,
}

impl Gates {
    /// The gates of `selections` waves over `members`: a last wave is added when some member
    /// not pinned matches none of them.
    pub fn new(
        selections: usize,
        members: &[Member],
        bake_seconds: u32,
        deadline_seconds: u32,
        rollback: bool,
    ) -> Self {
        let rest = members
            .iter()
            .any(|m| m.pinned.is_none() && m.wave == selections);
        Gates {
            waves: (selections + usize::from(rest)).max(1),
            bake: Duration::from_secs(u64::from(bake_seconds)),
            deadline: Duration::from_secs(u64::from(deadline_seconds)),
            rollback,
            max_unavailable: None,
        }
    }
}

/// What one pass decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub status: StagedRolloutStatus,
    /// The revision each member should run.
    pub assigned: BTreeMap<String, i64>,
    /// When to look again without being notified (a bake or a deadline ending).
    pub next: Option<Duration>,
    /// A transition worth an Event.
    pub event: Option<(Reason, String)>,
}

/// What the object asks of its rollout by annotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controls<'a> {
    /// The resume token it carries: a new one tries a halted wave again.
    pub resume: Option<&'a str>,
    /// No wave starts while paused.
    pub paused: bool,
}

impl<'a> Controls<'a> {
    /// The controls an object's annotations hold.
    pub fn of(annotations: &'a BTreeMap<String, String>) -> Self {
        use qleetos_crds::staged::{PAUSE_ANNOTATION, RESUME_ANNOTATION};
        Controls {
            resume: annotations.get(RESUME_ANNOTATION).map(String::as_str),
            paused: annotations.contains_key(PAUSE_ANNOTATION),
        }
    }
}

/// One pass of the rollout of `latest` over `members`, from the `previous` status, at `now`,
/// as the object's `controls` ask.
pub fn step(
    previous: Option<&StagedRolloutStatus>,
    latest: i64,
    members: &[Member],
    gates: Gates,
    controls: Controls<'_>,
    now: DateTime<Utc>,
) -> Step {
    let mut step = step_waves(previous, latest, members, gates, controls, now);
    if let Some(max) = gates.max_unavailable {
        limit_unavailable(&mut step, members, max);
    }
    step
}

/// Within the wave in progress, members already on the new revision keep it; of the others,
/// in name order, only as many move as `max` leaves room for beside those unhealthy on it
/// (while paused: beside all on it; none while halted).
fn limit_unavailable(step: &mut Step, members: &[Member], max: usize) {
    let status = &step.status;
    if matches!(
        status.phase,
        RolloutPhase::Complete | RolloutPhase::RolledBack
    ) {
        return;
    }
    let wave = status.wave.saturating_sub(1) as usize;
    let mut in_wave: Vec<&Member> = members
        .iter()
        .filter(|m| m.pinned.is_none() && m.wave == wave)
        .collect();
    in_wave.sort_by(|a, b| a.name.cmp(&b.name));
    let on_revision = |m: &&Member| m.installed == Some(status.revision);
    let unavailable = in_wave
        .iter()
        .filter(|m| on_revision(m) && m.health != Health::Healthy)
        .count();
    let moved = in_wave.iter().filter(|m| on_revision(m)).count();
    let mut room = match status.phase {
        RolloutPhase::Progressing | RolloutPhase::Baking => max.saturating_sub(unavailable),
        // Paused: the batch in flight (at most `max`) completes, no further one starts.
        RolloutPhase::Paused => max.saturating_sub(moved),
        _ => 0,
    };
    for member in in_wave.iter().filter(|m| !on_revision(m)) {
        if room > 0 {
            room -= 1;
        } else {
            step.assigned
                .insert(member.name.clone(), status.stable_revision);
        }
    }
}

fn step_waves(
    previous: Option<&StagedRolloutStatus>,
    latest: i64,
    members: &[Member],
    gates: Gates,
    controls: Controls<'_>,
    now: DateTime<Utc>,
) -> Step {
    let mut status = match previous {
        Some(previous) if previous.revision == latest => previous.clone(),
        Some(previous) => started(latest, stable_of(previous), now),
        None => started(latest, latest, now),
    };
    status.waves = u32::try_from(gates.waves).unwrap_or(u32::MAX);
    let mut event = previous
        .filter(|p| p.revision != latest && latest != status.stable_revision)
        .map(|_| {
            let note = format!(
                "revision {latest}: wave 1 of {} started (runtimes not reached stay on revision {})",
                status.waves, status.stable_revision
            );
            (Reason::WaveStarted, note)
        });
    if let Some(token) = controls
        .resume
        .filter(|t| status.resumed.as_deref() != Some(*t))
    {
        status.resumed = Some(token.to_owned());
        if is_halted(status.phase) {
            status.phase = RolloutPhase::Progressing;
            status.wave_started_at = Some(stamp(now));
            status.healthy_since = None;
            event = Some((
                Reason::WaveStarted,
                format!(
                    "resumed: wave {} of {} tried again",
                    status.wave, status.waves
                ),
            ));
        }
    }
    if status.revision == status.stable_revision {
        return finished(status, members, previous, event);
    }
    if is_halted(status.phase) {
        return at_rest(status, members, event);
    }
    if controls.paused {
        return paused(status, members, event);
    }
    if status.phase == RolloutPhase::Paused {
        // The pause does not count against the wave's deadline or bake.
        status.phase = RolloutPhase::Progressing;
        status.wave_started_at = Some(stamp(now));
        status.healthy_since = None;
    }
    advance(status, members, gates, now, event)
}

/// Holds the rollout where it is: the waves reached keep the new revision.
fn paused(
    mut status: StagedRolloutStatus,
    members: &[Member],
    mut event: Option<(Reason, String)>,
) -> Step {
    let message = format!(
        "paused at wave {} of {} (annotation qleetos.io/pause-rollout): later waves stay on revision {}; `qleetctl rollout resume` continues",
        status.wave, status.waves, status.stable_revision
    );
    if status.phase != RolloutPhase::Paused {
        event = Some((Reason::RolloutPaused, message.clone()));
    }
    status.phase = RolloutPhase::Paused;
    status.message = message;
    at_rest(status, members, event)
}

/// Walks the waves from the current one while each is healthy and baked.
fn advance(
    mut status: StagedRolloutStatus,
    members: &[Member],
    gates: Gates,
    now: DateTime<Utc>,
    mut event: Option<(Reason, String)>,
) -> Step {
    loop {
        let wave = status.wave.saturating_sub(1) as usize;
        if wave >= gates.waves {
            let before = status.clone();
            return finished(status, members, Some(&before), event);
        }
        let in_wave: Vec<&Member> = members
            .iter()
            .filter(|m| m.pinned.is_none() && m.wave == wave)
            .collect();
        if in_wave.is_empty() {
            status.wave += 1;
            status.wave_started_at = Some(stamp(now));
            continue;
        }
        let verdict = judge(&in_wave, status.revision);
        let started = parse(status.wave_started_at.as_deref()).unwrap_or(now);
        match verdict {
            Verdict::Failed(why) => {
                status.phase = halt_phase(gates);
                status.healthy_since = None;
                status.message = format!(
                    "halted at wave {} of {}: {why}; {}",
                    status.wave,
                    status.waves,
                    after_halt(gates, status.stable_revision)
                );
                event = Some((Reason::RolloutHalted, status.message.clone()));
                return at_rest(status, members, event);
            }
            Verdict::Waiting(what) => {
                status.healthy_since = None;
                let spent = elapsed(started, now);
                if spent >= gates.deadline {
                    status.phase = halt_phase(gates);
                    status.message = format!(
                        "halted at wave {} of {}: not healthy within {}s ({what}); {}",
                        status.wave,
                        status.waves,
                        gates.deadline.as_secs(),
                        after_halt(gates, status.stable_revision)
                    );
                    event = Some((Reason::RolloutHalted, status.message.clone()));
                    return at_rest(status, members, event);
                }
                status.phase = RolloutPhase::Progressing;
                status.message = format!(
                    "wave {} of {}: waiting for {what}",
                    status.wave, status.waves
                );
                let next = Some(gates.deadline - spent);
                let assigned = assignments(&status, members);
                return Step {
                    status,
                    assigned,
                    next,
                    event,
                };
            }
            Verdict::Healthy => {
                let since = parse(status.healthy_since.as_deref()).unwrap_or(now);
                let baked = elapsed(since, now);
                if baked < gates.bake {
                    status.phase = RolloutPhase::Baking;
                    status.healthy_since = Some(stamp(since));
                    status.message = format!(
                        "wave {} of {}: healthy, baking for {}s",
                        status.wave,
                        status.waves,
                        gates.bake.as_secs()
                    );
                    let next = Some(gates.bake - baked);
                    let assigned = assignments(&status, members);
                    return Step {
                        status,
                        assigned,
                        next,
                        event,
                    };
                }
                status.wave += 1;
                status.wave_started_at = Some(stamp(now));
                status.healthy_since = None;
                status.phase = RolloutPhase::Progressing;
                if (status.wave as usize) <= gates.waves {
                    event = Some((
                        Reason::WaveStarted,
                        format!(
                            "revision {}: wave {} of {} started",
                            status.revision, status.wave, status.waves
                        ),
                    ));
                }
            }
        }
    }
}

fn halt_phase(gates: Gates) -> RolloutPhase {
    if gates.rollback {
        RolloutPhase::RolledBack
    } else {
        RolloutPhase::Halted
    }
}

fn after_halt(gates: Gates, stable: i64) -> String {
    if gates.rollback {
        format!("every member is back on revision {stable}")
    } else {
        format!("later waves stay on revision {stable}")
    }
}

enum Verdict {
    Healthy,
    Waiting(String),
    Failed(String),
}

/// A wave is healthy when each of its members runs `revision` and is healthy; it failed when
/// one failed at `revision`.
fn judge(in_wave: &[&Member], revision: i64) -> Verdict {
    let mut waiting = Vec::new();
    for member in in_wave {
        match (&member.health, member.installed == Some(revision)) {
            (Health::Failed(why), true) => {
                return Verdict::Failed(format!("{}: {why}", member.name));
            }
            (Health::Healthy, true) => {}
            (Health::Progressing(why), true) => waiting.push(format!("{}: {why}", member.name)),
            (_, false) => waiting.push(format!("{} to install revision {revision}", member.name)),
        }
    }
    if waiting.is_empty() {
        Verdict::Healthy
    } else {
        Verdict::Waiting(waiting.join("; "))
    }
}

fn is_halted(phase: RolloutPhase) -> bool {
    matches!(phase, RolloutPhase::Halted | RolloutPhase::RolledBack)
}

fn started(revision: i64, stable: i64, now: DateTime<Utc>) -> StagedRolloutStatus {
    StagedRolloutStatus {
        phase: RolloutPhase::Progressing,
        revision,
        stable_revision: stable,
        wave: 1,
        wave_started_at: Some(stamp(now)),
        ..Default::default()
    }
}

/// The revision runtimes not yet reached keep when a newer one starts.
fn stable_of(previous: &StagedRolloutStatus) -> i64 {
    if previous.phase == RolloutPhase::Complete {
        previous.revision
    } else {
        previous.stable_revision
    }
}

fn finished(
    mut status: StagedRolloutStatus,
    members: &[Member],
    previous: Option<&StagedRolloutStatus>,
    event: Option<(Reason, String)>,
) -> Step {
    let was_complete =
        previous.is_none_or(|p| p.phase == RolloutPhase::Complete && p.revision == status.revision);
    status.phase = RolloutPhase::Complete;
    status.stable_revision = status.revision;
    status.wave = status.waves + 1;
    status.wave_started_at = None;
    status.healthy_since = None;
    status.message = format!(
        "revision {} runs in every runtime not pinned",
        status.revision
    );
    let event = if was_complete {
        event
    } else {
        Some((Reason::RolloutComplete, status.message.clone()))
    };
    at_rest(status, members, event)
}

/// A step that waits for no timer: halted, paused or complete.
fn at_rest(
    status: StagedRolloutStatus,
    members: &[Member],
    event: Option<(Reason, String)>,
) -> Step {
    let assigned = assignments(&status, members);
    Step {
        status,
        assigned,
        next: None,
        event,
    }
}

/// Pinned members their pin; members of the waves reached the new revision; the rest the
/// stable one.
fn assignments(status: &StagedRolloutStatus, members: &[Member]) -> BTreeMap<String, i64> {
    let reached = if status.phase == RolloutPhase::RolledBack {
        0
    } else {
        status.wave as usize
    };
    members
        .iter()
        .map(|member| {
            let revision = match member.pinned {
                Some(pinned) => pinned,
                None if status.phase == RolloutPhase::Complete || member.wave < reached => {
                    status.revision
                }
                None => status.stable_revision,
            };
            (member.name.clone(), revision)
        })
        .collect()
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse(at: Option<&str>) -> Option<DateTime<Utc>> {
    at.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or_default()
}

#[cfg(test)]
#[path = "waves_tests.rs"]
mod tests;
