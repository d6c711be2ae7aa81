//! The real `qleetctl` binary against the environment (issue 11): each verb's output and
//! exit code, including not found (3), forbidden (4), a timed-out wait (5) and refused input
//! (2) that changes nothing.

use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use qleetos_e2e::environment::Environment;
use qleetos_e2e::operator::workspace_binary;
use serde_json::{Value, json};

use crate::gateway::service_account_token;
use crate::support::*;

const NS: &str = "qleetctl";

/// What a run of qleetctl printed and how it ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn qleetctl(kubeconfig: &Path, args: &[&str]) -> Result<Run> {
    let output = tokio::process::Command::new(workspace_binary("qleetctl")?)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .context("running qleetctl")?;
    Ok(Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs qleetctl and requires exit code `code`.
async fn expect(kubeconfig: &Path, args: &[&str], code: i32) -> Result<Run> {
    let run = qleetctl(kubeconfig, args).await?;
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
    fails_with_the_documented_codes(&client, env, admin).await
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
