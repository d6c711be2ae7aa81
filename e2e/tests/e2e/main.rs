//! End-to-end tests against real kube-apiservers, etcd, kwok and the real operator binary.
//! One shared environment (a management cluster and two workload clusters) serves the
//! scenarios that can run side by side; disruptive ones start an environment of their own.

mod autoscaling;
mod browser;
mod capacity;
mod chart;
mod chart_gateway;
mod chart_lifecycle;
mod chart_nats;
mod charted;
mod cluster_api_env;
mod console;
mod credentials;
mod dependencies;
mod examples;
mod failover;
mod found;
mod foundation;
mod gateway;
mod hard_tenancy;
mod harness;
mod inventory;
mod node_scaling;
mod ownership;
mod plan;
mod provisioning;
mod provisioning_capi;
mod qleetctl;
mod queue;
mod quiet;
mod replicated;
mod services;
mod staged;
mod staged_workload;
mod standins;
mod support;
mod tenancy;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use libtest_mimic::{Arguments, Trial};
use qleetos_e2e::environment::{Environment, RuntimeSpec, default_runtimes};
use qleetos_e2e::operator::OperatorOptions;
use tokio::runtime::Runtime;

macro_rules! shared {
    ($($module:ident::$name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|env| Box::pin($module::$name(env))) as harness::Scenario)),*]
    };
}

fn main() {
    let args = Arguments::from_args();
    if let (false, Err(error)) = (args.list, qleetos_e2e::host::check_limits()) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    let runtime = Arc::new(Runtime::new().expect("tokio runtime"));
    install_interrupt_handler(&runtime);
    let dir = tempfile::Builder::new()
        .prefix("qleetos-e2e-")
        .tempdir()
        .expect("temp dir");
    let shared_env = runtime.block_on(start_environment(
        dir.path().join("shared"),
        default_runtimes(),
    ));
    let shared_env = Arc::new(shared_env.map_err(|e| format!("{e:#}")));

    let mut trials: Vec<Trial> = shared![
        foundation::runtimes_report_version_and_nodes,
        foundation::deploys_only_to_the_matching_runtime,
        foundation::places_one_instance_per_region_and_rolls_images,
        foundation::removing_a_manifest_prunes_it,
        foundation::deleting_a_workload_removes_everything,
        inventory::unrecorded_objects_are_found_again,
        foundation::invalid_manifests_report_the_api_server_message,
        foundation::schema_rejects_malformed_workloads,
        tenancy::tenant_cannot_escalate_or_leave_its_namespace,
        tenancy::runtime_rbac_fences_the_tenant_identity,
        tenancy::hand_made_instances_and_empty_selectors_stay_inside_the_policy,
        tenancy::two_workloads_rendering_one_object_conflict,
        tenancy::unlabelled_objects_are_adopted_only_when_allowed,
        tenancy::malformed_tenant_policies_are_rejected_at_admission,
        ownership::api_version_changes_and_autoscaling_keep_the_live_objects,
        ownership::the_longest_workload_name_is_placed_and_deleted,
        ownership::deleting_a_runtime_in_use_moves_its_workloads,
        ownership::an_abandoned_runtime_lets_its_placements_go,
        standins::cert_manager_stand_in_issues_a_certificate,
        chart::chart_ships_the_default_profiles,
        examples::examples_match_their_operators_crds,
        qleetctl::qleetctl_reports_and_drives_workloads,
        charted::charted_workload_runs_in_two_regions_and_leaves_nothing,
        charted::charted_support_service_comes_with_its_crds_and_goes_with_its_last_user,
        charted::charted_sources_that_fail_say_why_and_apply_nothing,
        charted::charted_workloads_use_only_the_repositories_their_namespace_may,
        charted::charted_workloads_claim_the_hosts_their_charts_render,
        charted::charted_workload_from_an_oci_registry_over_plain_http,
    ]
    .into_iter()
    .map(|(name, scenario)| harness::shared_trial(name, &runtime, &shared_env, scenario))
    .collect();
    trials.extend(gateway::trials(&runtime, &shared_env, dir.path()));
    trials.extend(credentials::trials(&runtime, &shared_env, dir.path()));
    trials.extend(found::trials(&runtime, &shared_env));
    let (hard_tenancy_trials, hard_tenancy_env) =
        hard_tenancy::trials(&runtime, &shared_env, dir.path());
    trials.extend(hard_tenancy_trials);
    let (queue_trials, queue_env) = queue::trials(&runtime, &shared_env, dir.path());
    trials.extend(queue_trials);
    let (replicated_trials, replicated_env) = replicated::trials(&runtime, dir.path());
    trials.extend(replicated_trials);
    let (dependency_trials, dependency_env) = dependencies::trials(&runtime, dir.path());
    trials.extend(dependency_trials);
    trials.push(harness::own_trial(
        "qleetctl_up_and_down_drive_the_local_environment",
        &runtime,
        qleetctl::qleetctl_up_and_down_drive_the_local_environment(dir.path().join("qleetctl-up")),
    ));
    trials.push(harness::own_trial(
        "cluster_api_provisions_a_real_local_cluster_and_removes_it",
        &runtime,
        cluster_api_env::cluster_api_provisions_a_real_local_cluster_and_removes_it(
            dir.path().join("cluster-api"),
        ),
    ));
    trials.push(harness::own_trial(
        "chart_nats_cluster_carries_the_operator_and_gateway",
        &runtime,
        chart_nats_in_own_environment(dir.path().join("chart-nats")),
    ));
    trials.push(harness::own_trial(
        "chart_installs_upgrades_and_uninstalls_cleanly",
        &runtime,
        chart_lifecycle::chart_installs_upgrades_and_uninstalls_cleanly(
            dir.path().join("chart-lifecycle"),
        ),
    ));
    trials.push(harness::own_trial(
        "staged_rollouts_of_profiles_and_workloads_halt_on_a_failing_wave_and_roll_back",
        &runtime,
        staged::in_own_environment(dir.path().join("staged")),
    ));
    trials.push(harness::own_trial(
        "an_autoscaler_scales_what_qleetos_applies",
        &runtime,
        autoscaling::in_own_environment(dir.path().join("autoscaling")),
    ));
    trials.push(harness::own_trial(
        "nodes_of_a_cluster_api_cluster_follow_the_pods",
        &runtime,
        node_scaling::in_own_environment(dir.path().join("node-scaling")),
    ));
    trials.push(harness::own_trial(
        "capacity_and_cost_decide_placement_and_overflow",
        &runtime,
        capacity::in_own_environment(dir.path().join("capacity")),
    ));
    trials.push(harness::own_trial(
        "a_lost_runtime_fails_over_and_returns_or_stays",
        &runtime,
        failover_in_own_environment(dir.path().join("failover")),
    ));
    trials.push(harness::own_trial(
        "unreachable_runtime_recovers",
        &runtime,
        unreachable_runtime_in_own_environment(dir.path().join("unreachable")),
    ));

    let conclusion = libtest_mimic::run(&args, trials);
    runtime.block_on(queue_env.stop());
    runtime.block_on(replicated_env.stop());
    runtime.block_on(dependency_env.stop());
    runtime.block_on(hard_tenancy_env.stop());
    if let Ok(Ok(env)) = Arc::try_unwrap(shared_env) {
        runtime.block_on(env.stop());
    }
    if conclusion.has_failed() {
        eprintln!("environment logs kept in {}", dir.keep().display());
    }
    conclusion.exit();
}

async fn unreachable_runtime_in_own_environment(dir: PathBuf) -> Result<()> {
    let spec = vec![RuntimeSpec::new(
        "eu-west",
        "eu-west-1",
        &[("qleetos.io/zone", "eu")],
    )];
    let mut env = start_environment(dir, spec).await?;
    let result = foundation::unreachable_runtime_recovers(&mut env).await;
    env.stop().await;
    result
}

/// Without an operator of the environment's own: the trial starts one on the chart's NATS.
async fn chart_nats_in_own_environment(dir: PathBuf) -> Result<()> {
    let spec = vec![RuntimeSpec::new("eu-west", "eu-west-1", &[])];
    let mut env = Environment::start(&dir, spec)
        .await
        .context("starting the test clusters")?;
    let result = chart_nats::chart_nats_cluster_carries_the_operator_and_gateway(&mut env).await;
    env.stop().await;
    result
}

async fn failover_in_own_environment(dir: PathBuf) -> Result<()> {
    let mut env = start_environment(dir, default_runtimes()).await?;
    let result = failover::a_lost_runtime_fails_over_and_returns_or_stays(&mut env).await;
    env.stop().await;
    result
}

async fn start_environment(dir: PathBuf, runtimes: Vec<RuntimeSpec>) -> Result<Environment> {
    let mut env = Environment::start(&dir, runtimes)
        .await
        .context("starting the test clusters")?;
    env.start_operator(OperatorOptions::default())
        .await
        .context("starting qleetos-operator")?;
    Ok(env)
}

fn install_interrupt_handler(runtime: &Runtime) {
    runtime.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            qleetos_e2e::process::kill_all_children();
            std::process::exit(130);
        }
    });
}
