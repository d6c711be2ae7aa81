//! A small supervisor for the child processes of the test environment.
//!
//! Every child is forked by one dedicated, never-exiting "spawner" thread and asks the
//! kernel to SIGKILL it when that thread dies (`PR_SET_PDEATHSIG` fires when the *thread*
//! that forked the child exits, so forking from short-lived runtime threads would kill
//! children early). Thus children die with the test process even when it is SIGKILLed.
//! Live children are also kept in a global registry for [`kill_all_children`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::Error;

/// How long a child gets to exit after SIGTERM before it is SIGKILLed.
const GRACE_PERIOD: Duration = Duration::from_secs(2);
/// How long to wait for the kernel to report a SIGKILLed child as exited.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Number of log lines included in errors about a child that exited.
const LOG_TAIL_LINES: usize = 40;
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// What to run: a program, its arguments, and the file that receives its stdout and stderr.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Short name used in logs and errors, e.g. `kube-apiserver`.
    pub component: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Added to the environment inherited from the test process.
    pub env: Vec<(OsString, OsString)>,
    /// Appended to, so restarts of the same component keep earlier output.
    pub log_path: PathBuf,
}

/// A running (or exited but not yet dropped) child process. Dropping it kills the process.
#[derive(Debug)]
pub struct ChildProcess {
    component: String,
    log_path: PathBuf,
    child: Child,
    exit_status: Option<ExitStatus>,
}

struct SpawnRequest {
    component: String,
    command: Command,
    reply: oneshot::Sender<std::io::Result<Child>>,
}

/// Pids of children that have not been reaped yet, with their component names.
/// Reaping happens only while this lock is held, so a pid found here is never reused.
static LIVE_CHILDREN: Mutex<BTreeMap<u32, String>> = Mutex::new(BTreeMap::new());
static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

fn live_children() -> MutexGuard<'static, BTreeMap<u32, String>> {
    LIVE_CHILDREN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SIGKILLs every child process started by this module that is still alive.
///
/// Meant for Ctrl-C handlers; [`ChildProcess`] values that are dropped afterwards just
/// reap their already-dead processes.
pub fn kill_all_children() {
    let children = live_children();
    for (pid, component) in children.iter() {
        tracing::debug!(pid, component, "killing child process");
        send_signal(*pid, libc::SIGKILL);
    }
}

/// Starts a child process with stdout and stderr appended to `spec.log_path`.
pub async fn spawn(spec: ProcessSpec) -> Result<ChildProcess, Error> {
    let log = open_log(&spec)?;
    let command = build_command(&spec, &log)?;
    let (reply, response) = oneshot::channel();
    spawner()?
        .send(SpawnRequest {
            component: spec.component.clone(),
            command,
            reply,
        })
        .map_err(|_| Error::SpawnerGone)?;
    let child = response
        .await
        .map_err(|_| Error::SpawnerGone)?
        .map_err(|source| Error::Spawn {
            component: spec.component.clone(),
            program: spec.program.clone(),
            source,
        })?;
    tracing::debug!(component = spec.component, pid = child.id(), log = %spec.log_path.display(), "started");
    Ok(ChildProcess {
        component: spec.component,
        log_path: spec.log_path,
        child,
        exit_status: None,
    })
}

fn open_log(spec: &ProcessSpec) -> Result<File, Error> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_path)
        .map_err(|e| Error::io("cannot open log file", &spec.log_path, e))?;
    let args: Vec<_> = spec.args.iter().map(|a| a.to_string_lossy()).collect();
    writeln!(
        log,
        "### qleetos-e2e: starting {} {}",
        spec.program.display(),
        args.join(" ")
    )
    .map_err(|e| Error::io("cannot write log file", &spec.log_path, e))?;
    Ok(log)
}

fn build_command(spec: &ProcessSpec, log: &File) -> Result<Command, Error> {
    let log_clone = || {
        log.try_clone()
            .map_err(|e| Error::io("cannot duplicate log file handle", &spec.log_path, e))
    };
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log_clone()?)
        .stderr(log_clone()?)
        // Own process group: a terminal Ctrl-C reaches only the test process, which
        // then shuts its children down in order.
        .process_group(0);
    die_with_parent(&mut command);
    Ok(command)
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions prctl(2) and getppid(2); it does not allocate
    // (io::Error::last_os_error and from_raw_os_error build errors without allocating).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

fn spawner() -> Result<mpsc::Sender<SpawnRequest>, Error> {
    let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = slot.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, receiver) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("qleetos-spawner".into())
        .spawn(move || spawner_loop(&receiver))
        .map_err(|_| Error::SpawnerGone)?;
    *slot = Some(sender.clone());
    Ok(sender)
}

/// Runs forever: the sender lives in a static, so `recv` never fails.
fn spawner_loop(receiver: &mpsc::Receiver<SpawnRequest>) {
    while let Ok(SpawnRequest {
        component,
        mut command,
        reply,
    }) = receiver.recv()
    {
        let result = {
            let mut children = live_children();
            command.spawn().inspect(|child| {
                children.insert(child.id(), component.clone());
            })
        };
        if let Err(Ok(mut orphan)) = reply.send(result) {
            tracing::warn!(
                component,
                "spawn requester went away; killing the new process"
            );
            let _ = orphan.kill();
            reap_blocking(&mut orphan, KILL_WAIT);
        }
    }
}

impl ChildProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Reaps the process if it has exited and returns its exit status.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = try_reap(&mut self.child);
        }
        self.exit_status
    }

    /// Ok while the process runs; otherwise an error carrying the tail of its log.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.try_exit_status() {
            None => Ok(()),
            Some(status) => Err(Error::ProcessExited {
                component: self.component.clone(),
                status: status.to_string(),
                log: self.log_path.clone(),
                log_tail: log_tail(&self.log_path),
            }),
        }
    }

    /// Stops the process: SIGTERM, then SIGKILL if it is still alive after a grace period.
    pub async fn stop(&mut self) {
        if self.try_exit_status().is_some() {
            return;
        }
        tracing::debug!(component = self.component, pid = self.pid(), "stopping");
        send_signal(self.pid(), libc::SIGTERM);
        if self.wait_exit(GRACE_PERIOD).await {
            return;
        }
        tracing::debug!(
            component = self.component,
            "did not exit after SIGTERM; sending SIGKILL"
        );
        send_signal(self.pid(), libc::SIGKILL);
        if !self.wait_exit(KILL_WAIT).await {
            tracing::warn!(
                component = self.component,
                pid = self.pid(),
                "still not reaped after SIGKILL"
            );
        }
    }

    async fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_exit_status().is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGTERM, then waits up to `within` for the process to exit; `None` if it still runs
    /// (it is not killed: the caller decides).
    pub async fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        if self.try_exit_status().is_none() {
            send_signal(self.pid(), libc::SIGTERM);
            self.wait_exit(within).await;
        }
        self.try_exit_status()
    }

    /// SIGSTOP: the process freezes with its sockets open, as on a stalled host.
    pub fn pause(&mut self) {
        if self.try_exit_status().is_none() {
            send_signal(self.pid(), libc::SIGSTOP);
        }
    }

    /// SIGCONT after [`ChildProcess::pause`].
    pub fn unpause(&mut self) {
        if self.try_exit_status().is_none() {
            send_signal(self.pid(), libc::SIGCONT);
        }
    }

    /// SIGKILLs the process and reaps it, blocking the current thread briefly.
    pub fn kill_blocking(&mut self) {
        if self.try_exit_status().is_some() {
            return;
        }
        send_signal(self.pid(), libc::SIGKILL);
        self.exit_status = reap_blocking(&mut self.child, KILL_WAIT);
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill_blocking();
    }
}

fn try_reap(child: &mut Child) -> Option<ExitStatus> {
    let mut children = live_children();
    match child.try_wait() {
        Ok(Some(status)) => {
            children.remove(&child.id());
            Some(status)
        }
        Ok(None) => None,
        Err(e) => {
            // ECHILD: someone else reaped it; it is gone either way.
            tracing::debug!(pid = child.id(), error = %e, "waitpid failed; treating the process as gone");
            children.remove(&child.id());
            Some(ExitStatus::default())
        }
    }
}

fn reap_blocking(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = try_reap(child) {
            return Some(status);
        }
        if Instant::now() >= deadline {
            tracing::warn!(pid = child.id(), "child not reaped in time after SIGKILL");
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions. The pid belongs to a child of
    // ours that has not been reaped yet, so it cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        tracing::debug!(pid, signal, error = %std::io::Error::last_os_error(), "kill failed");
    }
}

/// The last lines of a log file (best effort; an unreadable log yields a note instead).
pub fn log_tail(path: &Path) -> String {
    read_tail(path).unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    Ok(lines[start..].join("\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `kill_all_children` affects every child, so these tests must not overlap.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn spec(dir: &Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            component: "sh".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            log_path: dir.join("sh.log"),
        }
    }

    #[tokio::test]
    async fn reports_exit_with_log_tail() {
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(spec(dir.path(), "echo boom-marker; exit 3"))
            .await
            .unwrap();
        assert!(child.wait_exit(Duration::from_secs(5)).await);
        let err = child.check_running().unwrap_err().to_string();
        assert!(err.contains("boom-marker"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
    }

    #[tokio::test]
    async fn stop_terminates_and_unregisters() {
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(spec(dir.path(), "sleep 60")).await.unwrap();
        let pid = child.pid();
        assert!(live_children().contains_key(&pid));
        child.check_running().unwrap();
        child.stop().await;
        assert!(child.try_exit_status().is_some());
        assert!(!live_children().contains_key(&pid));
    }

    #[tokio::test]
    async fn terminate_reports_the_exit_status() {
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let script = "trap 'exit 7' TERM; while true; do sleep 0.05; done";
        let mut child = spawn(spec(dir.path(), script)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = child.terminate(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.code(), Some(7));
    }

    #[tokio::test]
    async fn kill_all_children_kills() {
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(spec(dir.path(), "sleep 60")).await.unwrap();
        kill_all_children();
        assert!(child.wait_exit(Duration::from_secs(5)).await);
    }
}
