use super::*;

const GIB: i64 = 1 << 30;

fn cpu(millicores: i64) -> Resources {
    Resources {
        cpu_millicores: millicores,
        memory_bytes: GIB,
    }
}

fn member(name: &str, empty: Option<bool>) -> Member {
    Member {
        machine: format!("machine-{name}"),
        node: empty.map(|empty| ReadyNode {
            name: name.to_owned(),
            empty,
        }),
    }
}

fn group(min: i32, max: i32, members: Vec<Member>) -> Group {
    Group {
        min,
        max,
        replicas: i32::try_from(members.len()).expect("a few members"),
        members,
        template: Some(Resources {
            cpu_millicores: 32_000,
            memory_bytes: 64 * GIB,
        }),
    }
}

#[test]
fn pods_that_do_not_fit_grow_the_group_by_the_nodes_they_need() {
    let one = group(1, 5, vec![member("a", Some(false))]);
    assert_eq!(scale_up_to(&one, &[cpu(20_000), cpu(20_000)]), Some(3));
    assert_eq!(
        scale_up_to(&one, &[cpu(16_000), cpu(16_000), cpu(8_000)]),
        Some(3),
        "first fit, largest first: 16+16 on one node, 8 on the next"
    );
}

#[test]
fn growth_stops_at_the_maximum() {
    let one = group(1, 2, vec![member("a", Some(false))]);
    assert_eq!(scale_up_to(&one, &[cpu(20_000); 4]), Some(2));
    let full = group(
        1,
        2,
        vec![member("a", Some(false)), member("b", Some(false))],
    );
    assert_eq!(scale_up_to(&full, &[cpu(20_000)]), None);
}

#[test]
fn no_growth_while_machines_are_on_their_way_or_for_pods_no_node_can_hold() {
    let mut growing = group(1, 5, vec![member("a", Some(false)), member("b", None)]);
    assert_eq!(
        scale_up_to(&growing, &[cpu(20_000)]),
        None,
        "b has no node yet"
    );
    growing.members.pop();
    growing.replicas = 2;
    assert_eq!(
        scale_up_to(&growing, &[cpu(20_000)]),
        None,
        "a machine is missing"
    );

    let one = group(1, 5, vec![member("a", Some(false))]);
    assert_eq!(scale_up_to(&one, &[cpu(64_000)]), None);
    let unknown = Group {
        template: None,
        ..one
    };
    assert_eq!(scale_up_to(&unknown, &[cpu(1_000)]), None);
}

#[test]
fn an_empty_node_goes_once_unneeded_for_long_enough_and_never_below_the_minimum() {
    let start = Instant::now();
    let unneeded = Duration::from_secs(5);
    let three = group(
        1,
        3,
        vec![
            member("a", Some(false)),
            member("b", Some(true)),
            member("c", Some(true)),
        ],
    );
    let mut empty = EmptySince::default();
    empty.observe(&three, start);
    assert_eq!(empty.removable(&three, start, unneeded), None);
    let later = start + unneeded;
    let first = empty.removable(&three, later, unneeded).expect("b or c");
    assert_ne!(first.machine, "machine-a", "a holds pods");

    let at_min = group(2, 3, three.members[..2].to_vec());
    assert_eq!(empty.removable(&at_min, later, unneeded), None);
}

#[test]
fn a_node_that_holds_a_pod_again_starts_its_wait_over() {
    let start = Instant::now();
    let unneeded = Duration::from_secs(5);
    let idle = group(
        1,
        3,
        vec![member("a", Some(false)), member("b", Some(true))],
    );
    let busy = group(
        1,
        3,
        vec![member("a", Some(false)), member("b", Some(false))],
    );
    let mut empty = EmptySince::default();
    empty.observe(&idle, start);
    empty.observe(&busy, start + Duration::from_secs(3));
    empty.observe(&idle, start + Duration::from_secs(4));
    assert_eq!(
        empty.removable(&idle, start + unneeded, unneeded),
        None,
        "empty again only since 4 s"
    );
    assert!(
        empty
            .removable(&idle, start + Duration::from_secs(9), unneeded)
            .is_some()
    );
}
