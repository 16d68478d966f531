//! Runs many checks concurrently, each with its own timeout and with bounded
//! concurrency overall and per target, so one slow or dead component never
//! hides the others: a check that does not answer in time becomes an `Unknown`
//! finding naming the component and the timeout, and a check that panics
//! becomes an `Unknown` finding too.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Finding, Severity};
use tokio::sync::Semaphore;

/// One check to run: a future producing findings, with what it talks to.
pub struct CheckTask {
    /// The check's identifier (`postgres.health`), used for the timeout finding.
    pub check: String,
    /// The component it talks to (`postgres`, `redis:cache`, `docker`).
    pub component: String,
    /// What is checked (`db:skillswap`); concurrency is bounded per target.
    pub target: String,
    /// How long the check may take once started.
    pub timeout: Duration,
    future: BoxFuture<'static, Vec<Finding>>,
}

impl std::fmt::Debug for CheckTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckTask")
            .field("check", &self.check)
            .field("component", &self.component)
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CheckTask {
    /// A check task around `future`.
    pub fn new(
        check: impl Into<String>,
        component: impl Into<String>,
        target: impl Into<String>,
        timeout: Duration,
        future: impl Future<Output = Vec<Finding>> + Send + 'static,
    ) -> CheckTask {
        CheckTask {
            check: check.into(),
            component: component.into(),
            target: target.into(),
            timeout,
            future: Box::pin(future),
        }
    }
}

/// Limits for [`run_checks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Checks running at once, over all targets (at least 1).
    pub max_concurrent: usize,
    /// Checks running at once against one target (at least 1).
    pub max_per_target: usize,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            max_concurrent: 8,
            max_per_target: 2,
        }
    }
}

/// The finding for a check that did not finish within `timeout`.
pub fn timeout_finding(check: &str, component: &str, target: &str, timeout: Duration) -> Finding {
    Finding::new(
        check,
        Severity::Unknown,
        format!("{component} did not answer within {timeout:?}"),
    )
    .target(target)
    .detail(format!(
        "the check was stopped after its {timeout:?} timeout; the other checks ran normally"
    ))
}

/// Runs every task and returns their findings in task order. Each task's
/// timeout counts from when it actually starts (not while it waits for a slot).
/// Must be called inside a tokio runtime.
pub async fn run_checks(tasks: Vec<CheckTask>, opts: RunnerOptions) -> Vec<Finding> {
    let global = Arc::new(Semaphore::new(opts.max_concurrent.max(1)));
    let mut per_target: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let mut handles = Vec::with_capacity(tasks.len());
    for task in tasks {
        let target_sem = per_target
            .entry(task.target.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(opts.max_per_target.max(1))))
            .clone();
        let global = global.clone();
        let meta = (
            task.check.clone(),
            task.component.clone(),
            task.target.clone(),
        );
        let handle = tokio::spawn(async move {
            // Same acquisition order everywhere (target, then global): no deadlock.
            let _t = target_sem.acquire_owned().await;
            let _g = global.acquire_owned().await;
            match tokio::time::timeout(task.timeout, task.future).await {
                Ok(findings) => findings,
                Err(_) => vec![timeout_finding(
                    &task.check,
                    &task.component,
                    &task.target,
                    task.timeout,
                )],
            }
        });
        handles.push((meta, handle));
    }
    let mut out = Vec::new();
    for ((check, component, target), handle) in handles {
        match handle.await {
            Ok(findings) => out.extend(findings),
            Err(e) => out.push(
                Finding::new(
                    check,
                    Severity::Unknown,
                    format!("{component} check did not complete"),
                )
                .target(target)
                .detail(if e.is_panic() {
                    "the check panicked (a bug in tej); the other checks ran normally".to_string()
                } else {
                    "the check was cancelled".to_string()
                }),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::{Instant, sleep};

    struct Gauge {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    impl Gauge {
        fn new() -> Arc<Gauge> {
            Arc::new(Gauge {
                now: AtomicUsize::new(0),
                max: AtomicUsize::new(0),
            })
        }
    }

    fn sleeper(
        check: &str,
        target: &str,
        secs: u64,
        timeout: u64,
        g: Arc<Gauge>,
        tg: Arc<Gauge>,
    ) -> CheckTask {
        let name = check.to_string();
        CheckTask::new(
            check,
            "comp",
            target,
            Duration::from_secs(timeout),
            async move {
                for g in [&g, &tg] {
                    let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                    g.max.fetch_max(n, Ordering::SeqCst);
                }
                sleep(Duration::from_secs(secs)).await;
                g.now.fetch_sub(1, Ordering::SeqCst);
                tg.now.fetch_sub(1, Ordering::SeqCst);
                vec![Finding::ok(name, "fine")]
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn dead_component_does_not_hide_others() {
        let start = Instant::now();
        let tasks = vec![
            CheckTask::new(
                "postgres.health",
                "postgres",
                "db:app",
                Duration::from_secs(5),
                async { vec![Finding::ok("postgres.health", "up")] },
            ),
            CheckTask::new(
                "redis.health",
                "redis:cache",
                "redis:cache",
                Duration::from_secs(5),
                futures::future::pending::<Vec<Finding>>(),
            ),
            CheckTask::new(
                "docker.health",
                "docker",
                "docker",
                Duration::from_secs(5),
                async {
                    sleep(Duration::from_secs(2)).await;
                    vec![Finding::new(
                        "docker.health",
                        Severity::Warning,
                        "one container restarting",
                    )]
                },
            ),
            CheckTask::new("host.disk", "host", "/", Duration::from_secs(5), async {
                panic!("bug")
            }),
        ];
        let f = run_checks(tasks, RunnerOptions::default()).await;
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].severity, Severity::Ok);
        assert_eq!(f[1].check, "redis.health");
        assert_eq!(f[1].severity, Severity::Unknown);
        assert_eq!(f[1].target, "redis:cache");
        assert!(f[1].summary.contains("redis:cache"), "{}", f[1].summary);
        assert!(f[1].summary.contains("5s"), "{}", f[1].summary);
        assert_eq!(f[2].severity, Severity::Warning);
        assert_eq!(f[3].severity, Severity::Unknown);
        assert!(f[3].detail.as_deref().unwrap().contains("panicked"));
        // All ran side by side: the whole run took as long as the dead check's timeout.
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_globally_and_per_target() {
        let g = Gauge::new();
        let targets: Vec<(String, Arc<Gauge>)> =
            (0..3).map(|i| (format!("db:{i}"), Gauge::new())).collect();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (t, tg) = &targets[i % 3];
            tasks.push(sleeper(&format!("c{i}"), t, 10, 60, g.clone(), tg.clone()));
        }
        let start = Instant::now();
        let f = run_checks(
            tasks,
            RunnerOptions {
                max_concurrent: 4,
                max_per_target: 1,
            },
        )
        .await;
        assert_eq!(f.len(), 12);
        assert!(f.iter().all(|f| f.severity == Severity::Ok));
        // Order is the task order.
        assert_eq!(f[7].check, "c7");
        // Per-target limit 1 with 3 targets caps concurrency at 3 (< global 4).
        assert_eq!(g.max.load(Ordering::SeqCst), 3);
        for (_, tg) in &targets {
            assert_eq!(tg.max.load(Ordering::SeqCst), 1);
        }
        // 4 checks per target, one at a time, 10 s each.
        assert_eq!(start.elapsed(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_counts_from_start_not_from_queueing() {
        let g = Gauge::new();
        let tg = Gauge::new();
        // Two 8 s checks on one target, one at a time, each with a 10 s timeout:
        // the second waits 8 s for its slot but must not time out.
        let tasks = vec![
            sleeper("a", "db:x", 8, 10, g.clone(), tg.clone()),
            sleeper("b", "db:x", 8, 10, g.clone(), tg.clone()),
            sleeper("c", "db:x", 11, 10, g.clone(), tg.clone()),
        ];
        let f = run_checks(
            tasks,
            RunnerOptions {
                max_concurrent: 4,
                max_per_target: 1,
            },
        )
        .await;
        let sev: Vec<Severity> = f.iter().map(|f| f.severity).collect();
        assert_eq!(sev, vec![Severity::Ok, Severity::Ok, Severity::Unknown]);
        assert_eq!(tg.max.load(Ordering::SeqCst), 1);
    }
}
