use super::*;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
}

fn gates() -> Gates {
    Gates {
        waves: 3,
        bake: Duration::from_secs(30),
        deadline: Duration::from_secs(300),
        rollback: false,
        max_unavailable: None,
    }
}

fn member(name: &str, wave: usize, installed: i64, health: Health) -> Member {
    Member {
        name: name.to_owned(),
        wave,
        pinned: None,
        installed: Some(installed),
        health,
    }
}

/// Three runtimes in three waves, all healthy at revision `installed`.
fn fleet(installed: [i64; 3]) -> Vec<Member> {
    ["canary", "second", "third"]
        .iter()
        .zip(installed)
        .enumerate()
        .map(|(wave, (name, revision))| member(name, wave, revision, Health::Healthy))
        .collect()
}

fn resume(token: &str) -> Controls<'_> {
    Controls {
        resume: Some(token),
        paused: false,
    }
}

const PAUSED: Controls<'static> = Controls {
    resume: None,
    paused: true,
};

fn complete_at(revision: i64) -> StagedRolloutStatus {
    step(
        None,
        revision,
        &fleet([revision; 3]),
        gates(),
        Controls::default(),
        at(0),
    )
    .status
}

#[test]
fn the_first_revision_is_complete_without_waves() {
    let first = step(None, 1, &fleet([1; 3]), gates(), Controls::default(), at(0));
    assert_eq!(first.status.phase, RolloutPhase::Complete);
    assert!(first.assigned.values().all(|r| *r == 1));
    assert_eq!(first.event, None, "nothing rolled out yet: nothing to tell");
}

#[test]
fn a_new_revision_reaches_only_the_first_wave() {
    let step = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        gates(),
        Controls::default(),
        at(10),
    );
    assert_eq!(step.status.phase, RolloutPhase::Progressing);
    assert_eq!((step.status.revision, step.status.stable_revision), (2, 1));
    assert_eq!(step.assigned["canary"], 2);
    assert_eq!((step.assigned["second"], step.assigned["third"]), (1, 1));
    assert!(step.status.message.contains("canary to install revision 2"));
}

#[test]
fn a_healthy_wave_bakes_before_the_next_starts() {
    let started = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        gates(),
        Controls::default(),
        at(0),
    );
    let members = fleet([2, 1, 1]);
    let baking = step(
        Some(&started.status),
        2,
        &members,
        gates(),
        Controls::default(),
        at(10),
    );
    assert_eq!(baking.status.phase, RolloutPhase::Baking);
    assert_eq!(baking.next, Some(Duration::from_secs(30)));
    assert_eq!(baking.assigned["second"], 1, "not before the bake time");
    let next = step(
        Some(&baking.status),
        2,
        &members,
        gates(),
        Controls::default(),
        at(41),
    );
    assert_eq!(next.status.wave, 2);
    assert_eq!(next.assigned["second"], 2);
    assert_eq!(next.assigned["third"], 1);
    assert_eq!(next.event.map(|e| e.0), Some(Reason::WaveStarted));
}

#[test]
fn a_member_failing_during_the_bake_restarts_it() {
    let started = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        gates(),
        Controls::default(),
        at(0),
    );
    let baking = step(
        Some(&started.status),
        2,
        &fleet([2, 1, 1]),
        gates(),
        Controls::default(),
        at(10),
    );
    let mut wobbling = fleet([2, 1, 1]);
    wobbling[0].health = Health::Progressing("1/2 available".into());
    let waiting = step(
        Some(&baking.status),
        2,
        &wobbling,
        gates(),
        Controls::default(),
        at(20),
    );
    assert_eq!(waiting.status.phase, RolloutPhase::Progressing);
    assert_eq!(waiting.status.healthy_since, None);
    let again = step(
        Some(&waiting.status),
        2,
        &fleet([2, 1, 1]),
        gates(),
        Controls::default(),
        at(45),
    );
    assert_eq!(
        again.status.phase,
        RolloutPhase::Baking,
        "the bake starts over"
    );
}

#[test]
fn a_failed_wave_halts_and_later_waves_keep_the_stable_revision() {
    let mut members = fleet([2, 2, 1]);
    let mut status = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        gates(),
        Controls::default(),
        at(0),
    )
    .status;
    status.wave = 2;
    members[1].health = Health::Failed("ErrImagePull".into());
    let halted = step(
        Some(&status),
        2,
        &members,
        gates(),
        Controls::default(),
        at(50),
    );
    assert_eq!(halted.status.phase, RolloutPhase::Halted);
    assert!(halted.status.message.contains("second: ErrImagePull"));
    assert_eq!(halted.assigned["third"], 1);
    assert_eq!(
        halted.assigned["second"], 2,
        "the failed wave is left to inspect"
    );
    assert_eq!(halted.event.map(|e| e.0), Some(Reason::RolloutHalted));
    let still = step(
        Some(&halted.status),
        2,
        &fleet([2, 2, 1]),
        gates(),
        Controls::default(),
        at(60),
    );
    assert_eq!(
        still.status.phase,
        RolloutPhase::Halted,
        "a halt waits for a person"
    );
    assert_eq!(still.event, None);
}

#[test]
fn a_wave_past_its_deadline_halts() {
    let started = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        gates(),
        Controls::default(),
        at(0),
    );
    let mut slow = fleet([2, 1, 1]);
    slow[0].health = Health::Progressing("0/1 available".into());
    let halted = step(
        Some(&started.status),
        2,
        &slow,
        gates(),
        Controls::default(),
        at(301),
    );
    assert_eq!(halted.status.phase, RolloutPhase::Halted);
    assert!(halted.status.message.contains("not healthy within 300s"));
}

#[test]
fn a_resume_tries_the_halted_wave_again_once_per_token() {
    let started = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        gates(),
        Controls::default(),
        at(0),
    );
    let mut failing = fleet([2, 1, 1]);
    failing[0].health = Health::Failed("CrashLoopBackOff".into());
    let halted = step(
        Some(&started.status),
        2,
        &failing,
        gates(),
        Controls::default(),
        at(5),
    );
    let resumed = step(
        Some(&halted.status),
        2,
        &fleet([2, 1, 1]),
        gates(),
        resume("t1"),
        at(9),
    );
    assert_eq!(resumed.status.phase, RolloutPhase::Baking);
    assert_eq!(resumed.status.resumed.as_deref(), Some("t1"));
    let mut failing_again = halted.status.clone();
    failing_again.resumed = Some("t1".into());
    let same_token = step(
        Some(&failing_again),
        2,
        &failing,
        gates(),
        resume("t1"),
        at(20),
    );
    assert_eq!(same_token.status.phase, RolloutPhase::Halted);
}

#[test]
fn returning_to_the_stable_revision_is_not_staged() {
    let mut members = fleet([2, 2, 1]);
    members[1].health = Health::Failed("ErrImagePull".into());
    let mut status = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        gates(),
        Controls::default(),
        at(0),
    )
    .status;
    status.wave = 2;
    let halted = step(
        Some(&status),
        2,
        &members,
        gates(),
        Controls::default(),
        at(5),
    )
    .status;
    let undone = step(
        Some(&halted),
        1,
        &members,
        gates(),
        Controls::default(),
        at(6),
    );
    assert_eq!(undone.status.phase, RolloutPhase::Complete);
    assert!(undone.assigned.values().all(|r| *r == 1));
    assert_eq!(undone.event.map(|e| e.0), Some(Reason::RolloutComplete));
}

#[test]
fn a_newer_revision_during_a_halt_starts_from_the_stable_one() {
    let mut status = complete_at(1);
    status = step(
        Some(&status),
        2,
        &fleet([1; 3]),
        gates(),
        Controls::default(),
        at(0),
    )
    .status;
    status.phase = RolloutPhase::Halted;
    let fixed = step(
        Some(&status),
        3,
        &fleet([2, 1, 1]),
        gates(),
        Controls::default(),
        at(9),
    );
    assert_eq!(
        (fixed.status.revision, fixed.status.stable_revision),
        (3, 1)
    );
    assert_eq!(fixed.status.wave, 1);
    assert_eq!(fixed.assigned["canary"], 3);
    assert_eq!(fixed.assigned["second"], 1);
}

#[test]
fn pinned_members_keep_their_revision_and_gate_nothing() {
    let mut members = fleet([2, 1, 1]);
    members[2].pinned = Some(1);
    members[2].health = Health::Failed("old and broken".into());
    let two_waves = Gates {
        waves: 2,
        ..gates()
    };
    let mut status = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        two_waves,
        Controls::default(),
        at(0),
    )
    .status;
    status.wave = 2;
    members[1].installed = Some(2);
    let done = step(
        Some(&status),
        2,
        &members,
        Gates {
            bake: Duration::ZERO,
            ..two_waves
        },
        Controls::default(),
        at(5),
    );
    assert_eq!(done.status.phase, RolloutPhase::Complete);
    assert_eq!(done.assigned["third"], 1);
    assert_eq!(done.assigned["second"], 2);
}

#[test]
fn empty_waves_are_skipped() {
    let members = vec![member("only", 2, 1, Health::Healthy)];
    let step = step(
        Some(&complete_at(1)),
        2,
        &members,
        gates(),
        Controls::default(),
        at(0),
    );
    assert_eq!(step.status.wave, 3);
    assert_eq!(step.assigned["only"], 2);
}

#[test]
fn with_rollback_a_failed_wave_returns_every_member_to_the_stable_revision() {
    let rollback = Gates {
        rollback: true,
        ..gates()
    };
    let mut members = fleet([2, 2, 1]);
    let mut status = step(
        Some(&complete_at(1)),
        2,
        &fleet([1; 3]),
        rollback,
        Controls::default(),
        at(0),
    )
    .status;
    status.wave = 2;
    members[1].health = Health::Failed("ErrImagePull".into());
    let back = step(
        Some(&status),
        2,
        &members,
        rollback,
        Controls::default(),
        at(5),
    );
    assert_eq!(back.status.phase, RolloutPhase::RolledBack);
    assert!(
        back.assigned.values().all(|r| *r == 1),
        "{:?}",
        back.assigned
    );
    assert!(
        back.status
            .message
            .contains("every member is back on revision 1")
    );
    let still = step(
        Some(&back.status),
        2,
        &fleet([1; 3]),
        rollback,
        Controls::default(),
        at(9),
    );
    assert_eq!(
        still.status.phase,
        RolloutPhase::RolledBack,
        "until resumed or changed"
    );
}

#[test]
fn a_paused_rollout_keeps_the_waves_reached_and_the_pause_does_not_count() {
    let members = fleet([1, 1, 1]);
    let paused = step(Some(&complete_at(1)), 2, &members, gates(), PAUSED, at(0));
    assert_eq!(paused.status.phase, RolloutPhase::Paused);
    assert_eq!(
        paused.assigned["canary"], 2,
        "the wave reached keeps the revision"
    );
    assert_eq!(
        (paused.assigned["second"], paused.assigned["third"]),
        (1, 1)
    );
    assert_eq!(
        paused.event.as_ref().map(|e| e.0),
        Some(Reason::RolloutPaused)
    );
    assert_eq!(paused.next, None);

    let moved = vec![
        member("canary", 0, 2, Health::Healthy),
        member("second", 1, 1, Health::Healthy),
        member("third", 2, 1, Health::Healthy),
    ];
    let still = step(Some(&paused.status), 2, &moved, gates(), PAUSED, at(1000));
    assert_eq!(still.status.phase, RolloutPhase::Paused);
    assert_eq!(still.assigned["second"], 1, "no wave starts while paused");
    assert_eq!(still.event, None, "told once");

    // Far past the deadline: the pause does not count, the wave bakes from now.
    let resumed = step(
        Some(&still.status),
        2,
        &moved,
        gates(),
        Controls::default(),
        at(2000),
    );
    assert_eq!(resumed.status.phase, RolloutPhase::Baking);
    let done = step(
        Some(&resumed.status),
        2,
        &moved,
        gates(),
        Controls::default(),
        at(2031),
    );
    assert_eq!(
        done.assigned["second"], 2,
        "the next wave starts after the bake"
    );
}

fn percent(share: u32) -> RuntimeSelection {
    RuntimeSelection {
        percent: Some(share),
        ..RuntimeSelection::default()
    }
}

#[test]
fn percentage_waves_take_runtimes_in_name_order_up_to_their_share() {
    let rest = |name: &str| member(name, 2, 1, Health::Healthy);
    let mut members = vec![
        rest("d"),
        rest("b"),
        member("a", 0, 1, Health::Healthy),
        rest("c"),
    ];
    members.push(Member {
        pinned: Some(1),
        ..rest("e")
    });
    // Wave 0 names `a`; wave 1 is 75% of the four not pinned: with `a`, two more, b and c.
    let by_name = RuntimeSelection {
        names: vec!["a".into()],
        ..RuntimeSelection::default()
    };
    fill_percent_waves(&mut members, &[by_name, percent(75)]);
    let waves: Vec<(&str, usize)> = members.iter().map(|m| (m.name.as_str(), m.wave)).collect();
    assert_eq!(waves, [("d", 2), ("b", 1), ("a", 0), ("c", 1), ("e", 2)]);

    let mut single: Vec<Member> = ["x", "y", "z"]
        .iter()
        .map(|n| member(n, 1, 1, Health::Healthy))
        .collect();
    fill_percent_waves(&mut single, &[percent(33)]);
    let first: Vec<&str> = single
        .iter()
        .filter(|m| m.wave == 0)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(first, ["x"], "33% of three, rounded up, is one");
}

#[test]
fn max_unavailable_moves_a_wave_a_few_at_a_time() {
    let one_at_a_time = Gates {
        waves: 1,
        max_unavailable: Some(1),
        ..gates()
    };
    let wave = |a: (i64, Health), b: (i64, Health), c: (i64, Health)| {
        vec![
            member("a", 0, a.0, a.1),
            member("b", 0, b.0, b.1),
            member("c", 0, c.0, c.1),
        ]
    };
    let started = step(
        Some(&complete_at(1)),
        2,
        &wave(
            (1, Health::Healthy),
            (1, Health::Healthy),
            (1, Health::Healthy),
        ),
        one_at_a_time,
        Controls::default(),
        at(0),
    );
    let on =
        |step: &Step| -> Vec<i64> { ["a", "b", "c"].iter().map(|n| step.assigned[*n]).collect() };
    assert_eq!(on(&started), [2, 1, 1], "one at a time, by name");

    let progressing = Health::Progressing("starting".into());
    let moving = wave((2, progressing), (1, Health::Healthy), (1, Health::Healthy));
    let held = step(
        Some(&started.status),
        2,
        &moving,
        one_at_a_time,
        Controls::default(),
        at(5),
    );
    assert_eq!(on(&held), [2, 1, 1], "b waits while a is not healthy");

    let healthy = wave(
        (2, Health::Healthy),
        (1, Health::Healthy),
        (1, Health::Healthy),
    );
    let next = step(
        Some(&held.status),
        2,
        &healthy,
        one_at_a_time,
        Controls::default(),
        at(10),
    );
    assert_eq!(on(&next), [2, 2, 1], "b moves once a is healthy");

    let paused = step(
        Some(&held.status),
        2,
        &healthy,
        one_at_a_time,
        PAUSED,
        at(10),
    );
    assert_eq!(on(&paused), [2, 1, 1], "paused: no further batch starts");
}
