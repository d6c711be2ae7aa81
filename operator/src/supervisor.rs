//! The operator's long-running tasks under one cancellation signal. A task that ends on its
//! own (returns or panics) before shutdown marks the process unhealthy (`/healthz` 503) and
//! shuts the others down, so a broken operator exits non-zero instead of running on
//! silently without, say, its notifier.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Running tasks, the shutdown signal they share, and the health flag they report to.
#[derive(Debug)]
pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken, metrics: Arc<Metrics>) -> Self {
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
            metrics,
        }
    }

    /// The shutdown signal, for tasks that drain.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs a task that never ends while the operator works; it is dropped at shutdown.
    pub fn spawn_until_shutdown<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        self.spawn_draining(name, async move {
            tokio::select! {
                () = task => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Runs a task that watches the shutdown signal itself and ends once it has wound down
    /// (the workers, which finish the reconciles in flight).
    pub fn spawn_draining<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for the shutdown signal or a task's end; then signals shutdown to every task and
    /// waits at most `drain` for them to end. `Err` names the task that stopped on its own,
    /// or says the drain took too long.
    pub async fn run(mut self, drain: Duration) -> Result<()> {
        let stopped = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => None,
            Some(ended) = self.tasks.join_next_with_id() => {
                let task = self.name_of(ended);
                // A draining task can end in the instant between the signal and this poll.
                (!self.shutdown.is_cancelled()).then_some(task)
            }
        };
        match stopped {
            Some(task) => {
                tracing::error!(
                    task,
                    "a background task stopped; shutting the operator down"
                );
                self.metrics.task_stopped(task);
                self.shutdown.cancel();
            }
            None => tracing::info!("shutting down: finishing the reconciles in flight"),
        }
        self.metrics.set_ready(false);
        let drained = tokio::time::timeout(drain, self.join_all()).await;
        if drained.is_err() {
            self.tasks.abort_all();
            return Err(Error::DrainTimeout(drain));
        }
        tracing::info!("every task ended");
        stopped.map_or(Ok(()), |task| Err(Error::TaskStopped(task)))
    }

    async fn join_all(&mut self) {
        while let Some(ended) = self.tasks.join_next_with_id().await {
            let task = self.name_of(ended);
            tracing::debug!(task, "task ended");
        }
    }

    fn name_of(&self, ended: Result<(Id, ()), tokio::task::JoinError>) -> &'static str {
        let id = match ended {
            Ok((id, ())) => id,
            Err(error) => {
                tracing::error!(%error, "a task panicked");
                error.id()
            }
        };
        self.names.get(&id).copied().unwrap_or("unnamed task")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor() -> (Supervisor, CancellationToken, Arc<Metrics>) {
        let (shutdown, metrics) = (CancellationToken::new(), Arc::new(Metrics::default()));
        (
            Supervisor::new(shutdown.clone(), metrics.clone()),
            shutdown,
            metrics,
        )
    }

    #[tokio::test]
    async fn a_task_that_stops_fails_the_process_and_stops_the_others() {
        let (mut supervisor, shutdown, metrics) = supervisor();
        supervisor.spawn_until_shutdown("notifier", async {});
        supervisor.spawn_until_shutdown("drift watches", std::future::pending());
        let result = supervisor.run(Duration::from_secs(5)).await;
        assert!(
            matches!(result, Err(Error::TaskStopped("notifier"))),
            "{result:?}"
        );
        assert!(shutdown.is_cancelled());
        assert_eq!(metrics.stopped_task(), Some("notifier"));
    }

    #[tokio::test]
    async fn a_panicking_task_counts_as_stopped() {
        let (mut supervisor, _, _) = supervisor();
        supervisor.spawn_until_shutdown("workers", async { panic!("boom") });
        let result = supervisor.run(Duration::from_secs(5)).await;
        assert!(
            matches!(result, Err(Error::TaskStopped("workers"))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_waits_for_draining_tasks_then_succeeds() {
        let (mut supervisor, shutdown, metrics) = supervisor();
        let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (token, flag) = (shutdown.clone(), drained.clone());
        supervisor.spawn_draining("workers", async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        supervisor.spawn_until_shutdown("notifier", std::future::pending());
        shutdown.cancel();
        supervisor
            .run(Duration::from_secs(5))
            .await
            .expect("clean drain");
        assert!(drained.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(metrics.stopped_task(), None);
    }

    #[tokio::test]
    async fn a_task_that_drains_before_the_supervisor_looks_is_not_a_failure() {
        // Without the guard `select!` picks either ready branch at random: try it often.
        for _ in 0..20 {
            let (mut supervisor, shutdown, metrics) = supervisor();
            let token = shutdown.clone();
            supervisor.spawn_draining("runtime worker", async move { token.cancelled().await });
            shutdown.cancel();
            tokio::time::sleep(Duration::from_millis(5)).await;
            supervisor
                .run(Duration::from_secs(5))
                .await
                .expect("a drain after the signal is clean");
            assert_eq!(metrics.stopped_task(), None);
        }
    }

    #[tokio::test]
    async fn a_drain_that_takes_too_long_is_an_error() {
        let (mut supervisor, shutdown, _) = supervisor();
        supervisor.spawn_draining("workers", std::future::pending());
        shutdown.cancel();
        let result = supervisor.run(Duration::from_millis(100)).await;
        assert!(matches!(result, Err(Error::DrainTimeout(_))), "{result:?}");
    }
}
