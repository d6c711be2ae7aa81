use qleetos_crds::WorkloadStatus;

use super::*;
use crate::testing::{runtime, workload};

fn on(runtime: &str, ready: bool) -> Assignment {
    Assignment {
        runtime: runtime.to_owned(),
        ready,
        ..Assignment::default()
    }
}

fn chosen(runtime: &str) -> Selected {
    Selected {
        runtime: runtime.to_owned(),
        region: "eu-west".to_owned(),
        replaces: None,
    }
}

fn names(selected: &[Selected]) -> Vec<&str> {
    selected.iter().map(|s| s.runtime.as_str()).collect()
}

fn allowed() -> Vec<KubernetesRuntime> {
    vec![runtime("burst", "eu-west"), runtime("own", "eu-west")]
}

#[test]
fn only_a_new_annotation_value_starts_a_rebalance() {
    let mut web = workload("team", "web", &["eu-west"]);
    assert_eq!(step(&web), Step::Idle);
    web.metadata
        .annotations
        .get_or_insert_default()
        .insert(REBALANCE_ANNOTATION.to_owned(), "t1".to_owned());
    assert_eq!(step(&web), Step::Start("t1".to_owned()));

    let moving = RebalanceStatus {
        requested: "t1".to_owned(),
        to: vec!["own".to_owned()],
        ..RebalanceStatus::default()
    };
    web.status = Some(WorkloadStatus {
        rebalance: Some(moving.clone()),
        ..WorkloadStatus::default()
    });
    assert_eq!(step(&web), Step::Moving(moving.clone()));
    let done = RebalanceStatus {
        state: RebalanceState::Done,
        ..moving
    };
    web.status.as_mut().expect("status").rebalance = Some(done);
    assert_eq!(step(&web), Step::Idle, "t1 is answered");
}

#[test]
fn starting_records_what_moves_or_that_nothing_does() {
    let moving = start("t1", &[chosen("own")], &[on("burst", true)]);
    assert_eq!(moving.state, RebalanceState::Moving);
    assert_eq!(
        (moving.from, moving.to),
        (vec!["burst".into()], vec!["own".into()])
    );

    let still = start("t1", &[chosen("own")], &[on("own", true)]);
    assert_eq!(still.state, RebalanceState::Done);
    assert!(still.from.is_empty());

    let nowhere = start("t1", &[], &[on("burst", true)]);
    assert_eq!(
        nowhere.state,
        RebalanceState::Failed,
        "never moves to nothing"
    );
    assert!(nowhere.from.is_empty());
}

#[test]
fn the_runtime_left_stays_until_the_new_placement_is_ready() {
    let status = start("t1", &[chosen("own")], &[on("burst", true)]);
    let (selected, moving) = advance(&status, &allowed(), &[on("burst", true)]);
    assert_eq!(names(&selected.expect("placed")), ["burst", "own"]);
    assert_eq!(moving.state, RebalanceState::Moving);
    assert!(moving.message.expect("message").contains("waiting for own"));

    let not_yet = [on("burst", true), on("own", false)];
    let (selected, _) = advance(&status, &allowed(), &not_yet);
    assert_eq!(names(&selected.expect("placed")), ["burst", "own"]);

    let ready = [on("burst", true), on("own", true)];
    let (selected, done) = advance(&status, &allowed(), &ready);
    assert_eq!(names(&selected.expect("placed")), ["own"]);
    assert_eq!(done.state, RebalanceState::Done);
    assert_eq!(done.message.as_deref(), Some("moved from burst to own"));
}

#[test]
fn a_target_that_went_away_fails_the_rebalance_and_placement_goes_on_as_usual() {
    let status = start("t1", &[chosen("gone")], &[on("burst", true)]);
    let (selected, failed) = advance(&status, &allowed(), &[on("burst", true)]);
    assert_eq!(selected, None);
    assert_eq!(failed.state, RebalanceState::Failed);
    assert!(
        failed
            .message
            .expect("message")
            .contains("runtime gone is gone")
    );
}
