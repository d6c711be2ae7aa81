//! `qleetctl`: the QleetOS command line. It talks to the management cluster with the user's
//! kubeconfig, as kubectl does, so Kubernetes RBAC decides what it may see and change. Also a
//! kubectl plugin: installed (or linked) as `kubectl-qleet`, it runs as `kubectl qleet ...`.
//!
//! Exit codes a CI job can rely on: 0 done, 1 any other failure, 2 bad usage or input,
//! 3 not found, 4 forbidden or unauthenticated, 5 timed out waiting.

mod approve;
mod describe;
mod events;
mod failure;
mod images;
mod list;
mod local;
mod output;
mod plan;
mod progress;
mod rebalance;
mod rollout;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use kube::Client;
use kube::config::{Config, KubeConfigOptions};
use qleetos_crds::parse_duration;

use crate::failure::Failure;
use crate::output::Format;

#[derive(Parser, Debug)]
#[command(name = "qleetctl", version, about, propagate_version = true)]
struct Cli {
    /// Namespace of the Workload(s); default: the kubeconfig context's.
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Kubeconfig context to use; default: the current one.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List Workloads, runtimes or service dependencies.
    Get {
        kind: Kind,
        /// Only this object.
        name: Option<String>,
        /// Every namespace (Workloads and service dependencies).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// A Workload and, per placement, its instance and what it waits on.
    Describe {
        /// Only `workload` can be described.
        #[arg(value_parser = ["workload", "workloads", "wl"])]
        kind: String,
        name: String,
    },
    /// Events about a Workload and its instances, oldest first.
    Events {
        name: String,
        #[arg(short, long, default_value = "table", value_parser = table_json_or_yaml())]
        output: Format,
    },
    /// Wait until a Workload runs its current generation Ready on every placement.
    Wait {
        name: String,
        /// How long to wait, e.g. 90s, 5m.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Change a Workload's container images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// A Workload's or a SupportServiceProfile's staged rollout: where it is, resume it,
    /// undo it.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// The revisions of a Workload kept for rollbacks, and the latest.
    History { name: String },
    /// Write an earlier revision of a Workload back into its spec (default: the stable one
    /// while a rollout is under way, else the one before the latest).
    Rollback {
        name: String,
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// What applying a Workload manifest would do, computed without changing anything: the
    /// runtimes to use or provision, the support services to install and each object to
    /// create, update (with its changed fields) or delete, as a tree.
    Plan {
        /// The Workload manifest (YAML or JSON); `-` reads standard input.
        #[arg(short, long)]
        file: PathBuf,
        #[arg(short, long, default_value = "table", value_parser = table_json_or_yaml())]
        output: Format,
        /// How long to wait for the operator to compute it.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Approve the plan waiting in a Workload's status (`spec.approval: Required`): QleetOS
    /// then applies that generation.
    Approve {
        name: String,
        /// The generation whose plan is approved (default: the pending plan's); refused when
        /// the Workload moved on since.
        #[arg(long)]
        generation: Option<i64>,
    },
    /// Plan placing a running Workload anew under its placement preferences: which
    /// placements would move, which runtimes would be left with nothing to run (a provisioned
    /// one is then retired). Changes nothing unless `--apply` is given.
    Rebalance {
        name: String,
        /// After printing the plan, ask QleetOS to rebalance (new placements first, the ones
        /// left removed once those are Ready).
        #[arg(long)]
        apply: bool,
        #[arg(short, long, default_value = "table", value_parser = table_json_or_yaml())]
        output: Format,
        /// How long to wait for the operator to compute the plan.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Runtimes and Workloads of every namespace, at a glance.
    Status,
    /// Start the local environment in the background (unless it runs) and wait until it is ready.
    Up {
        /// Its state directory; the log goes to DIR.log.
        #[arg(long, default_value = local::DEFAULT_DIR, env = "QLEETOS_ENV_DIR")]
        dir: PathBuf,
        /// How long to wait until it is ready, e.g. 10m.
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Stop the local environment.
    Down {
        /// Its state directory.
        #[arg(long, default_value = local::DEFAULT_DIR, env = "QLEETOS_ENV_DIR")]
        dir: PathBuf,
    },
    /// Print a completion script for a shell.
    Completion { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
enum ImagesCommand {
    /// Set images of named containers, e.g. `images set web web=nginx:1.29 --wait 5m`.
    Set {
        name: String,
        /// `container=image`, one or more.
        #[arg(required = true, value_parser = parse_image)]
        images: Vec<(String, String)>,
        /// Then wait until every placement runs the new generation Ready.
        #[arg(long, value_parser = parse_duration)]
        wait: Option<Duration>,
    },
}

#[derive(Subcommand, Debug)]
enum RolloutCommand {
    /// Its revision, phase and wave, and each runtime's wave and revision.
    Status {
        #[arg(value_parser = ROLLOUT_KINDS)]
        kind: String,
        name: String,
    },
    /// Stop starting waves: the waves reached keep the new revision.
    Pause {
        #[arg(value_parser = ROLLOUT_KINDS)]
        kind: String,
        name: String,
    },
    /// Continue a paused rollout, or try the halted wave again.
    Resume {
        #[arg(value_parser = ROLLOUT_KINDS)]
        kind: String,
        name: String,
    },
    /// Write an earlier revision back: by default the stable one (what runtimes not reached
    /// run); returning to the stable revision reaches every runtime at once. `abort` is the
    /// same without `--to-revision`.
    #[command(alias = "abort")]
    Undo {
        #[arg(value_parser = ROLLOUT_KINDS)]
        kind: String,
        name: String,
        #[arg(long)]
        to_revision: Option<i64>,
        /// QleetOS's namespace, where a profile's revisions are kept.
        #[arg(long, default_value = "qleetos-system", env = "QLEETOS_NAMESPACE")]
        system_namespace: String,
    },
}

/// What rolls out in stages.
const ROLLOUT_KINDS: [&str; 6] = [
    "workload",
    "workloads",
    "wl",
    "supportserviceprofile",
    "ssp",
    "profile",
];

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    #[value(alias = "workload", alias = "wl")]
    Workloads,
    #[value(alias = "runtime", alias = "kr", alias = "kubernetesruntimes")]
    Runtimes,
    #[value(
        alias = "dependency",
        alias = "workloadservicedependencies",
        alias = "wsd"
    )]
    Dependencies,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Up { dir, timeout } => local::up(dir, *timeout),
        Command::Down { dir } => local::down(dir),
        _ => on_the_cluster(cli),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
}

/// The commands that talk to the management cluster, on a runtime of their own.
fn on_the_cluster(cli: Cli) -> Result<(), Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::Other(error.into()))?
        .block_on(run(cli))
}

fn report(failure: Failure) -> ExitCode {
    eprintln!("error: {failure}");
    ExitCode::from(failure.exit_code())
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Completion { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "qleetctl", &mut std::io::stdout());
        return Ok(());
    }
    let (client, default_namespace) = connect(cli.context).await?;
    let namespace = cli.namespace.unwrap_or(default_namespace);
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Get {
            kind,
            name,
            all_namespaces,
            output,
        } => {
            if all_namespaces && name.is_some() {
                return Err(Failure::Usage(
                    "a name needs one namespace: drop -A, or give -n".into(),
                ));
            }
            let scope = (!all_namespaces).then_some(namespace.as_str());
            list::get(&client, kind, scope, name.as_deref(), output, &mut out).await
        }
        Command::Describe { name, .. } => {
            describe::workload(&client, &namespace, &name, &mut out).await
        }
        Command::Events { name, output } => {
            events::workload(&client, &namespace, &name, output, &mut out).await
        }
        Command::Wait { name, timeout } => {
            wait::rolled_out(&client, &namespace, &name, timeout, &mut out).await
        }
        Command::Images {
            command: ImagesCommand::Set { name, images, wait },
        } => images::set(&client, &namespace, &name, images, wait, &mut out).await,
        Command::Rollout { command } => match command {
            RolloutCommand::Status { kind, name } => {
                rollout::status(&client, &target(&kind, name, &namespace), &mut out).await
            }
            RolloutCommand::Pause { kind, name } => {
                rollout::pause(&client, &target(&kind, name, &namespace), &mut out).await
            }
            RolloutCommand::Resume { kind, name } => {
                rollout::resume(&client, &target(&kind, name, &namespace), &mut out).await
            }
            RolloutCommand::Undo {
                kind,
                name,
                to_revision,
                system_namespace,
            } => {
                let target = target(&kind, name, &namespace);
                rollout::rollback(&client, &target, to_revision, &system_namespace, &mut out).await
            }
        },
        Command::History { name } => {
            let target = target("workload", name, &namespace);
            rollout::history(&client, &target, "", &mut out).await
        }
        Command::Rollback { name, to_revision } => {
            let target = target("workload", name, &namespace);
            rollout::rollback(&client, &target, to_revision, "", &mut out).await
        }
        Command::Plan {
            file,
            output,
            timeout,
        } => plan::plan(&client, &namespace, &file, output, timeout, &mut out).await,
        Command::Approve { name, generation } => {
            approve::approve(&client, &namespace, &name, generation, &mut out).await
        }
        Command::Rebalance {
            name,
            apply,
            output,
            timeout,
        } => {
            rebalance::rebalance(&client, &namespace, &name, apply, output, timeout, &mut out).await
        }
        Command::Status => list::status(&client, &mut out).await,
        Command::Up { .. } | Command::Down { .. } | Command::Completion { .. } => Ok(()),
    }
}

/// A Workload in `namespace`, or a SupportServiceProfile, by the kind word given.
fn target(kind: &str, name: String, namespace: &str) -> rollout::Target {
    if matches!(kind, "workload" | "workloads" | "wl") {
        rollout::Target::Workload {
            namespace: namespace.to_owned(),
            name,
        }
    } else {
        rollout::Target::Profile(name)
    }
}

/// The client and default namespace of the user's kubeconfig (`KUBECONFIG`, else
/// `~/.kube/config`), or of the pod's service account when run in a cluster.
async fn connect(context: Option<String>) -> Result<(Client, String), Failure> {
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    let config = match Config::from_kubeconfig(&options).await {
        Ok(config) => config,
        Err(kubeconfig_error) if options.context.is_none() => {
            Config::incluster().map_err(|_| {
                Failure::Usage(format!(
                    "no usable kubeconfig ({kubeconfig_error}); set KUBECONFIG to the management cluster's kubeconfig"
                ))
            })?
        }
        Err(error) => return Err(Failure::Usage(format!("kubeconfig: {error}"))),
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| Failure::Other(e.into()))?;
    Ok((client, namespace))
}

/// `-o table|json|yaml`: the formats without a wide table.
fn table_json_or_yaml() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new(["table", "json", "yaml"])
        .try_map(|text| Format::from_str(&text, true))
}

fn parse_image(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((container, image)) if !container.is_empty() && !image.is_empty() => {
            Ok((container.to_owned(), image.to_owned()))
        }
        _ => Err(format!("{text:?} is not container=image")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_container_equals_image() {
        assert_eq!(
            parse_image("web=nginx:1.29"),
            Ok(("web".to_owned(), "nginx:1.29".to_owned()))
        );
        assert!(parse_image("web").is_err());
        assert!(parse_image("=nginx").is_err());
        assert!(parse_image("web=").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
