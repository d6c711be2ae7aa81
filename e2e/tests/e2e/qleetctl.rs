//! The real `qleetctl` binary against the environment (issue 11): each verb's output and
//! exit code, including not found (3), forbidden (4), a timed-out wait (5) and refused input
//! (2) that changes nothing; and `qleetctl up`/`down` driving a local environment of its own.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};
use qleetos_e2e::cluster::free_port;
use qleetos_e2e::environment::Environment;
use qleetos_e2e::operator::workspace_binary;
use serde_json::{Value, json};

use crate::gateway::service_account_token;
use crate::support::*;

const NS: &str = "qleetctl";

/// What a run of qleetctl printed and how it ended.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) async fn qleetctl(kubeconfig: &Path, args: &[&str]) -> Result<Run> {
    let kubeconfig = kubeconfig.to_string_lossy();
    run("qleetctl", args, &[("KUBECONFIG", &kubeconfig)]).await
}

/// Runs one of the workspace's binaries with `env` added to the environment.
async fn run(binary: &'static str, args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
    let output = tokio::process::Command::new(workspace_binary(binary)?)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .with_context(|| format!("running {binary}"))?;
    Ok(Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs qleetctl and requires exit code `code`.
pub(crate) async fn expect(kubeconfig: &Path, args: &[&str], code: i32) -> Result<Run> {
    exited(qleetctl(kubeconfig, args).await?, args, code)
}

/// The run, when it exited with `code`.
fn exited(run: Run, args: &[&str], code: i32) -> Result<Run> {
    ensure!(
        run.code == code,
        "qleetctl {} exited {} (expected {code}); stdout: {} stderr: {}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    Ok(run)
}

pub async fn qleetctl_reports_and_drives_workloads(env: &Environment) -> Result<()> {
    let client = env.management_client().await?;
    let admin = env.management.kubeconfig_path();
    let placement = json!({"regions": ["eu-west-1"]});
    apply_workload(
        &client,
        NS,
        &workload("web", web_manifests(1, "nginx:1.27"), placement),
    )
    .await?;
    let waited = expect(admin, &["wait", "web", "-n", NS, "--timeout", "120s"], 0).await?;
    ensure!(waited.stdout.contains("rolled out"), "{}", waited.stdout);

    let listed = expect(admin, &["get", "wl", "-n", NS, "-o", "json"], 0).await?;
    let listed: Value = serde_json::from_str(&listed.stdout)?;
    ensure!(
        listed["items"][0]["metadata"]["name"] == "web"
            && listed["items"][0]["status"]["readyPlacements"] == "1/1",
        "get -o json: {listed}"
    );
    let runtimes = expect(admin, &["get", "runtimes"], 0).await?.stdout;
    for expected in ["NAME", "NODES", "eu-west", "us-east", "eu-west-1"] {
        ensure!(runtimes.contains(expected), "get runtimes: {runtimes}");
    }
    let wide = expect(admin, &["get", "workloads", "-A", "-o", "wide"], 0)
        .await?
        .stdout;
    ensure!(
        wide.lines()
            .any(|l| l.starts_with(NS) && l.contains("web") && l.contains("eu-west")),
        "get -A -o wide: {wide}"
    );
    let described = expect(admin, &["describe", "workload", "web", "-n", NS], 0)
        .await?
        .stdout;
    ensure!(
        described.contains("Ready: True")
            && described.contains("└─ eu-west (region eu-west-1), instance ")
            && described.contains(": Ready"),
        "describe: {described}"
    );
    let status = expect(admin, &["status"], 0).await?.stdout;
    ensure!(
        status.contains("eu-west") && status.contains(" workloads ("),
        "status: {status}"
    );

    sets_images_and_refuses_unknown_containers(env, admin).await?;
    shows_the_events_of_a_workload(&client, admin).await?;
    fails_with_the_documented_codes(&client, env, admin).await
}

/// The Warning the operator records on a Workload whose `spec.images` names a container
/// no pod template has.
const UNKNOWN_IMAGE: &str = "UnknownImageContainer";

async fn shows_the_events_of_a_workload(client: &kube::Client, admin: &Path) -> Result<()> {
    let args = ["events", "web", "-n", NS];
    let before = expect(admin, &args, 0).await?.stdout;
    ensure!(
        !before.contains(UNKNOWN_IMAGE),
        "an {UNKNOWN_IMAGE} Event before its cause: {before}"
    );
    // Past qleetctl's and the gateway's check, as kubectl could write it.
    let typo = json!({"spec": {"images": {"nosuch": "busybox:1"}}});
    merge_patch_workload(client, NS, "web", typo).await?;
    wait_workload_not_ready(client, NS, "web", UNKNOWN_IMAGE).await?;
    let shown = eventually("qleetctl events showing the warning", TIMEOUT, || async {
        let shown = expect(admin, &args, 0).await?.stdout;
        let warned = shown.lines().any(|l| {
            l.contains("Warning") && l.contains(UNKNOWN_IMAGE) && l.contains("Workload/web")
        });
        ensure!(warned, "events: {shown}");
        Ok(Some(shown))
    })
    .await?;
    ensure!(
        shown.starts_with("LAST SEEN") && shown.contains("OBJECT") && shown.contains("nosuch"),
        "events: {shown}"
    );
    let listed = expect(admin, &["events", "web", "-n", NS, "-o", "json"], 0).await?;
    let listed: Value = serde_json::from_str(&listed.stdout)?;
    let items = listed["items"].as_array().context("no items")?;
    ensure!(
        items.iter().any(|e| e["reason"] == UNKNOWN_IMAGE
            && e["involvedObject"]["kind"] == "Workload"
            && e["involvedObject"]["name"] == "web"),
        "events -o json: {listed}"
    );

    let fixed = json!({"spec": {"images": {"nosuch": null}}});
    merge_patch_workload(client, NS, "web", fixed).await?;
    wait_workload_ready(client, NS, "web").await?;
    let missing = expect(admin, &["events", "nosuch", "-n", NS], 3).await?;
    ensure!(missing.stderr.contains("not found"), "{}", missing.stderr);
    Ok(())
}

async fn sets_images_and_refuses_unknown_containers(env: &Environment, admin: &Path) -> Result<()> {
    let set = [
        "images",
        "set",
        "web",
        "web=nginx:1.28",
        "-n",
        NS,
        "--wait",
        "120s",
    ];
    let run = expect(admin, &set, 0).await?;
    ensure!(run.stdout.contains("rolled out"), "{}", run.stdout);
    let runtime = env
        .runtime("eu-west")
        .context("runtime eu-west")?
        .client()
        .await?;
    let image = deployment_image(&runtime, NS).await?;
    ensure!(
        image.as_deref() == Some("nginx:1.28"),
        "eu-west runs {image:?}"
    );

    let before = generation(admin).await?;
    let refused = expect(
        admin,
        &["images", "set", "web", "nosuch=busybox", "-n", NS],
        2,
    )
    .await?;
    ensure!(
        refused.stderr.contains("nosuch") && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    ensure!(
        generation(admin).await? == before,
        "a refused image change must change nothing"
    );
    Ok(())
}

async fn fails_with_the_documented_codes(
    client: &kube::Client,
    env: &Environment,
    admin: &Path,
) -> Result<()> {
    let missing = expect(admin, &["get", "wl", "missing", "-n", NS], 3).await?;
    ensure!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let missing = expect(admin, &["describe", "wl", "missing", "-n", NS], 3).await?;
    ensure!(missing.stderr.contains("not found"), "{}", missing.stderr);

    // A Workload no runtime matches never rolls out.
    let nowhere = json!({"regions": ["nowhere-1"]});
    apply_workload(
        client,
        NS,
        &workload("stuck", web_manifests(1, "nginx:1.27"), nowhere),
    )
    .await?;
    let timed_out = expect(admin, &["wait", "stuck", "-n", NS, "--timeout", "2s"], 5).await?;
    ensure!(
        timed_out.stderr.contains("not rolled out"),
        "{}",
        timed_out.stderr
    );

    // A user who may read Workloads of another namespace only.
    let rules = json!([{"apiGroups": ["qleetos.io"], "resources": ["workloads"], "verbs": ["get", "list"]}]);
    let token = service_account_token(client, "qleetctl-other", "viewer", rules, None).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("viewer.yaml");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: viewer\nclusters:\n- name: m\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: viewer\n  context:\n    cluster: m\n    user: viewer\n    namespace: qleetctl-other\nusers:\n- name: viewer\n  user:\n    token: {token}\n",
            env.management.server_url()
        ),
    )?;
    expect(&kubeconfig, &["get", "wl"], 0).await?;
    for args in [
        &["get", "wl", "-n", NS][..],
        &["describe", "workload", "web", "-n", NS][..],
        &["events", "web", "-n", NS][..],
        &["images", "set", "web", "web=evil:1", "-n", NS][..],
    ] {
        let forbidden = expect(&kubeconfig, args, 4).await?;
        ensure!(
            forbidden.stderr.contains("forbidden") && !forbidden.stderr.contains(&token),
            "{}",
            forbidden.stderr
        );
    }
    Ok(())
}

async fn generation(admin: &Path) -> Result<i64> {
    let run = expect(admin, &["get", "wl", "web", "-n", NS, "-o", "json"], 0).await?;
    let list: Value = serde_json::from_str(&run.stdout)?;
    list["items"][0]["metadata"]["generation"]
        .as_i64()
        .context("no generation")
}

/// `qleetctl up` starts a local environment in `dir`/env (in the background, on a gateway
/// port of its own so that a `make run` beside it does not matter), finds it running the
/// second time, and `qleetctl down` stops it; stopped whatever the checks find.
pub async fn qleetctl_up_and_down_drive_the_local_environment(dir: PathBuf) -> Result<()> {
    std::fs::create_dir_all(&dir)?;
    let env_dir = dir.join("env");
    let env_dir = env_dir.to_str().context("a UTF-8 temporary directory")?;
    let checked = up_status_up_down(env_dir).await;
    let stopped = run("qleetctl", &["down", "--dir", env_dir], &[]).await;
    let stopped = stopped.and_then(|run| exited(run, &["down"], 0));
    checked.and(stopped).map(drop)
}

async fn up_status_up_down(env_dir: &str) -> Result<()> {
    let port = free_port()?.to_string();
    let gateway = [("QLEETOS_GATEWAY_PORT", port.as_str())];
    let up = ["up", "--dir", env_dir, "--timeout", "10m"];
    let started = exited(run("qleetctl", &up, &gateway).await?, &up, 0)?;
    ensure!(
        started.stdout.contains("starting the environment")
            && started.stdout.contains("QleetOS environment is up."),
        "up: {}",
        started.stdout
    );

    let kubeconfig = run("qleetos-env", &["--dir", env_dir, "kubeconfig"], &[]).await?;
    ensure!(kubeconfig.code == 0, "kubeconfig: {}", kubeconfig.stderr);
    let kubeconfig = PathBuf::from(kubeconfig.stdout.trim());
    let status = expect(&kubeconfig, &["status"], 0).await?.stdout;
    for runtime in ["eu-west", "us-east"] {
        ensure!(
            status.lines().any(|l| l.starts_with(runtime)),
            "status lists no runtime {runtime}: {status}"
        );
    }

    let again = exited(run("qleetctl", &up, &gateway).await?, &up, 0)?;
    ensure!(
        again.stdout.contains("environment already running")
            && !again.stdout.contains("starting the environment"),
        "up again: {}",
        again.stdout
    );

    let down = ["down", "--dir", env_dir];
    let stopped = exited(run("qleetctl", &down, &[]).await?, &down, 0)?;
    ensure!(
        stopped.stdout.contains("environment stopped"),
        "down: {}",
        stopped.stdout
    );
    let running = run("qleetos-env", &["--dir", env_dir, "running"], &[]).await?;
    ensure!(
        running.code != 0,
        "qleetos-env running still succeeds after down"
    );
    Ok(())
}
