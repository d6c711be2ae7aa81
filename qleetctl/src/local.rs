//! `up` and `down`: the local environment (what `make env-up` and `make env-down` run),
//! driven through the `qleetos-env` binary that `make build` puts beside qleetctl.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use crate::failure::Failure;

/// The state directory `make` uses (its `ENV_DIR`) and `qleetos-env` defaults to.
pub const DEFAULT_DIR: &str = "/tmp/qleetos-env";
const ENV_BINARY: &str = "qleetos-env";
/// How much of the log a failed start shows.
const LOG_TAIL: usize = 30;

/// Starts the environment in the background unless it runs already, then waits until it
/// is ready (or has failed, showing the end of its log).
pub fn up(dir: &Path, timeout: Duration) -> Result<(), Failure> {
    let env = env_binary().ok_or_else(|| {
        Failure::Other(anyhow!(
            "{ENV_BINARY} is neither beside qleetctl nor on the PATH: run `make build`"
        ))
    })?;
    let log = log_path(dir);
    if is_running(&env, dir) {
        println!("environment already running");
    } else {
        start(&env, dir, &log)?;
    }
    let waited = env_command(&env, dir)
        .args(["wait", "--timeout-secs", &timeout.as_secs().to_string()])
        .status()
        .with_context(|| format!("running {}", env.display()))?;
    if waited.success() {
        return Ok(());
    }
    show_the_end_of(&log);
    Err(Failure::Other(anyhow!(
        "the environment is not up (whole log: {})",
        log.display()
    )))
}

/// The last lines of `log` on stderr: what a failed start says about why.
fn show_the_end_of(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in last_lines(&text, LOG_TAIL) {
        eprintln!("{line}");
    }
}

/// Stops the environment `up` started, if any.
pub fn down(dir: &Path) -> Result<(), Failure> {
    let Some(env) = env_binary() else {
        println!("nothing to stop");
        return Ok(());
    };
    let stopped = env_command(&env, dir)
        .arg("down")
        .status()
        .with_context(|| format!("running {}", env.display()))?;
    if stopped.success() {
        Ok(())
    } else {
        Err(Failure::Other(anyhow!("{ENV_BINARY} down {stopped}")))
    }
}

/// `qleetos-env --dir DIR`.
fn env_command(env: &Path, dir: &Path) -> Command {
    let mut command = Command::new(env);
    command.arg("--dir").arg(dir);
    command
}

fn is_running(env: &Path, dir: &Path) -> bool {
    env_command(env, dir)
        .arg("running")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `qleetos-env up` in a process group of its own with its output appended to `log`, so
/// that it outlives qleetctl (and a Ctrl-C of it).
fn start(env: &Path, dir: &Path, log: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for marker in ["ready", "failed"] {
        remove_if_present(&dir.join(marker))?;
    }
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let errors = output.try_clone().context("sharing the log file")?;
    env_command(env, dir)
        .arg("up")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .spawn()
        .with_context(|| format!("starting {} up", env.display()))?;
    println!(
        "starting the environment in {} (log: {})",
        dir.display(),
        log.display()
    );
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), Failure> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(Failure::Other(
            anyhow::Error::new(error).context(format!("removing {}", path.display())),
        )),
        _ => Ok(()),
    }
}

/// The log beside the state directory, as the Makefile always kept it: `DIR.log`.
fn log_path(dir: &Path) -> PathBuf {
    let mut path = dir.components().collect::<PathBuf>().into_os_string();
    path.push(".log");
    PathBuf::from(path)
}

/// The last `count` lines of `text`.
fn last_lines(text: &str, count: usize) -> impl Iterator<Item = &str> {
    let total = text.lines().count();
    text.lines().skip(total.saturating_sub(count))
}

/// `qleetos-env` beside this executable (what `make build` gives), else on the `PATH`.
fn env_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(Path::parent);
    find_env_binary(beside, std::env::var_os("PATH").as_deref())
}

fn find_env_binary(beside: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    let on_path = path.into_iter().flat_map(std::env::split_paths);
    beside
        .map(Path::to_owned)
        .into_iter()
        .chain(on_path)
        .map(|dir| dir.join(ENV_BINARY))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    fn place(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(ENV_BINARY);
        std::fs::write(&path, "#!/bin/sh\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn path_of(dirs: &[&Path]) -> OsString {
        std::env::join_paths(dirs).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_binary_beside_qleetctl_comes_before_the_path() {
        let (beside, on_path) = (tempdir(), tempdir());
        let wanted = place(beside.path(), 0o755);
        place(on_path.path(), 0o755);
        let path = path_of(&[on_path.path()]);
        assert_eq!(
            find_env_binary(Some(beside.path()), Some(&path)),
            Some(wanted)
        );
    }

    #[test]
    fn the_path_is_searched_in_order_for_an_executable() {
        let (empty, not_executable, wanted_dir) = (tempdir(), tempdir(), tempdir());
        place(not_executable.path(), 0o644);
        let wanted = place(wanted_dir.path(), 0o755);
        let path = path_of(&[not_executable.path(), wanted_dir.path()]);
        assert_eq!(
            find_env_binary(Some(empty.path()), Some(&path)),
            Some(wanted)
        );
        assert_eq!(find_env_binary(Some(empty.path()), None), None);
        assert_eq!(find_env_binary(None, None), None);
    }

    #[test]
    fn the_log_sits_beside_the_state_directory() {
        assert_eq!(
            log_path(Path::new("/tmp/qleetos-env")),
            Path::new("/tmp/qleetos-env.log")
        );
        assert_eq!(
            log_path(Path::new("/tmp/qleetos-env/")),
            Path::new("/tmp/qleetos-env.log")
        );
        assert_eq!(log_path(Path::new("env")), Path::new("env.log"));
    }

    #[test]
    fn a_failed_start_shows_the_end_of_the_log() {
        let text: String = (1..=40).map(|n| format!("line {n}\n")).collect();
        let tail: Vec<&str> = last_lines(&text, 30).collect();
        assert_eq!(tail.len(), 30);
        assert_eq!(tail.first(), Some(&"line 11"));
        assert_eq!(tail.last(), Some(&"line 40"));
        assert_eq!(
            last_lines("one\ntwo", 30).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(last_lines("", 30).count(), 0);
    }
}
