//! The runbook's deployment checklists as gates: pre-deployment (a fresh backup exists,
//! the test command passed, migrations are applied) and post-deployment (health passes, no
//! error lines in the first minutes of logs). A failed gate stops the deploy with its reason.

use crate::error::DeployError;
use crate::health::http_get_status;
use crate::model::LogQuery;
use crate::runtime::ContainerRuntime;
use async_trait::async_trait;
use jiff::Timestamp;
use regex::Regex;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Clock, CommandRunner, CommandSpec, StepError};

/// What a gate knows about the deploy it guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateContext {
    /// Compose project.
    pub project: String,
    /// Service being deployed.
    pub service: String,
    /// The new container (post-deployment gates only).
    pub new_container: Option<String>,
    /// The new container's port on 127.0.0.1 (post-deployment gates only).
    pub new_port: Option<u16>,
    /// When the new container started serving (post-deployment), or the deploy started.
    pub since: Timestamp,
}

/// One gate's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateResult {
    /// The gate's name.
    pub gate: String,
    /// Passed?
    pub passed: bool,
    /// What was found (the reason when it failed).
    pub detail: String,
}

impl GateResult {
    /// A passed gate.
    pub fn pass(gate: impl Into<String>, detail: impl Into<String>) -> GateResult {
        GateResult {
            gate: gate.into(),
            passed: true,
            detail: detail.into(),
        }
    }

    /// A failed gate.
    pub fn fail(gate: impl Into<String>, detail: impl Into<String>) -> GateResult {
        GateResult {
            gate: gate.into(),
            passed: false,
            detail: detail.into(),
        }
    }
}

/// A check that must pass before (or after) a deploy.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Gate: Send + Sync {
    /// Stable name (`backup-fresh`).
    fn name(&self) -> String;
    /// Runs the check; a failure to check is a failed gate, never a pass.
    async fn check(&self, ctx: &GateContext) -> GateResult;
}

/// Runs gates in order and stops at the first failure; returns every verdict so far and
/// the failure as [`DeployError::GateFailed`].
pub async fn run_gates(
    gates: &[Box<dyn Gate>],
    ctx: &GateContext,
) -> (Vec<GateResult>, Result<(), DeployError>) {
    let mut results = Vec::new();
    for g in gates {
        let r = g.check(ctx).await;
        let failed = !r.passed;
        let err = DeployError::GateFailed {
            gate: r.gate.clone(),
            reason: r.detail.clone(),
        };
        results.push(r);
        if failed {
            return (results, Err(err));
        }
    }
    (results, Ok(()))
}

/// Where the time of the latest good backup comes from (tej-backup's catalogue, wired by
/// the runbook crate).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait BackupFreshness: Send + Sync {
    /// When the latest verified backup finished; none if there is none.
    async fn latest_backup(&self) -> Result<Option<Timestamp>, StepError>;
}

/// Pre-deployment: a backup newer than `max_age` exists ("Backup created").
pub struct FreshBackupGate {
    /// The backup catalogue.
    pub source: Arc<dyn BackupFreshness>,
    /// Oldest acceptable backup.
    pub max_age: Duration,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
}

#[async_trait]
impl Gate for FreshBackupGate {
    fn name(&self) -> String {
        "backup-fresh".into()
    }
    async fn check(&self, _ctx: &GateContext) -> GateResult {
        let now = self.clock.now();
        match self.source.latest_backup().await {
            Err(e) => GateResult::fail(
                self.name(),
                format!("could not read the backup catalogue: {e}"),
            ),
            Ok(None) => GateResult::fail(self.name(), "no backup exists"),
            Ok(Some(at)) => {
                let age = Duration::from_secs(
                    u64::try_from(now.as_second() - at.as_second()).unwrap_or(0),
                );
                if age <= self.max_age {
                    GateResult::pass(
                        self.name(),
                        format!("latest backup {at} is {}s old", age.as_secs()),
                    )
                } else {
                    GateResult::fail(
                        self.name(),
                        format!(
                            "latest backup {at} is {}s old, older than the allowed {}s",
                            age.as_secs(),
                            self.max_age.as_secs()
                        ),
                    )
                }
            }
        }
    }
}

/// Pre-deployment: a command (the test suite, `npm test`) exits 0 ("Tests passing").
pub struct CommandGate {
    /// Gate name (`tests`).
    pub name: String,
    /// Runs the command.
    pub runner: Arc<dyn CommandRunner>,
    /// The command (argv, working directory, timeout).
    pub spec: CommandSpec,
}

#[async_trait]
impl Gate for CommandGate {
    fn name(&self) -> String {
        self.name.clone()
    }
    async fn check(&self, _ctx: &GateContext) -> GateResult {
        match self.runner.run(self.spec.clone()).await {
            Err(e) => GateResult::fail(self.name(), e.to_string()),
            Ok(out) if out.status.success() => {
                GateResult::pass(self.name(), format!("{} passed", self.spec.display()))
            }
            Ok(out) => GateResult::fail(
                self.name(),
                format!(
                    "{} failed with {}: {}",
                    self.spec.display(),
                    out.status,
                    last_lines(out.stderr.trim(), 5)
                ),
            ),
        }
    }
}

/// A command run inside the service's running container exits 0 (`npx prisma migrate
/// status`: "Database migrations tested"; `pg_isready`).
pub struct ExecGate {
    /// Gate name (`migrations-applied`).
    pub name: String,
    /// Containers.
    pub containers: Arc<dyn ContainerRuntime>,
    /// The service whose container runs it (default: the deployed service; after the
    /// switch the new container).
    pub service: Option<String>,
    /// The command.
    pub cmd: Vec<String>,
}

#[async_trait]
impl Gate for ExecGate {
    fn name(&self) -> String {
        self.name.clone()
    }
    async fn check(&self, ctx: &GateContext) -> GateResult {
        let project = crate::compose::Project::new(ctx.project.clone());
        let id = match (&self.service, &ctx.new_container) {
            (None, Some(id)) => id.clone(),
            (s, _) => {
                let svc = s.clone().unwrap_or_else(|| ctx.service.clone());
                match project.running_container(&*self.containers, &svc).await {
                    Ok(c) => c.id,
                    Err(e) => return GateResult::fail(self.name(), e.to_string()),
                }
            }
        };
        match self.containers.exec(&id, &self.cmd).await {
            Err(e) => GateResult::fail(self.name(), e.to_string()),
            Ok(o) if o.exit_code == 0 => {
                GateResult::pass(self.name(), last_lines(o.stdout.trim(), 3))
            }
            Ok(o) => GateResult::fail(
                self.name(),
                format!(
                    "{} exited {}: {}",
                    self.cmd.join(" "),
                    o.exit_code,
                    last_lines(
                        format!("{}\n{}", o.stdout.trim(), o.stderr.trim()).trim(),
                        5
                    )
                ),
            ),
        }
    }
}

/// Post-deployment: `GET http://ADDR{path}` answers 2xx ("Health check passed"); `addr`
/// none means the new container's port on 127.0.0.1.
pub struct HttpHealthGate {
    /// Address to probe (the public proxy address), or none for the new container.
    pub addr: Option<SocketAddr>,
    /// Path (`/health`).
    pub path: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

#[async_trait]
impl Gate for HttpHealthGate {
    fn name(&self) -> String {
        "health".into()
    }
    async fn check(&self, ctx: &GateContext) -> GateResult {
        let addr = match (self.addr, ctx.new_port) {
            (Some(a), _) => a,
            (None, Some(p)) => SocketAddr::from(([127, 0, 0, 1], p)),
            (None, None) => return GateResult::fail(self.name(), "no address to probe"),
        };
        match http_get_status(addr, &self.path, self.timeout).await {
            Ok(s) if (200..300).contains(&s) => GateResult::pass(
                self.name(),
                format!("GET http://{addr}{} answered {s}", self.path),
            ),
            Ok(s) => GateResult::fail(
                self.name(),
                format!("GET http://{addr}{} answered {s}", self.path),
            ),
            Err(e) => GateResult::fail(self.name(), e.to_string()),
        }
    }
}

/// Post-deployment: no error lines in the new container's logs during the first `window`
/// after it started serving ("No errors in logs (first 10 min)"). Waits out the window.
pub struct LogErrorsGate {
    /// Containers.
    pub containers: Arc<dyn ContainerRuntime>,
    /// How long to watch.
    pub window: Duration,
    /// What an error line looks like.
    pub pattern: Regex,
}

impl LogErrorsGate {
    /// The default error pattern: `error`, `fatal`, `panic`, `exception`, `uncaught` as words.
    pub fn default_pattern() -> Regex {
        // A constant, known-valid pattern (not external data).
        #[allow(clippy::expect_used)]
        Regex::new(r"(?i)\b(error|fatal|panic|panicked|exception|uncaught)\b")
            .expect("constant regex is valid")
    }
}

#[async_trait]
impl Gate for LogErrorsGate {
    fn name(&self) -> String {
        "log-errors".into()
    }
    async fn check(&self, ctx: &GateContext) -> GateResult {
        let Some(id) = &ctx.new_container else {
            return GateResult::fail(self.name(), "no new container to watch");
        };
        tokio::time::sleep(self.window).await;
        match self.containers.logs(id, &LogQuery::since(ctx.since)).await {
            Err(e) => GateResult::fail(self.name(), e.to_string()),
            Ok(lines) => {
                let bad: Vec<&str> = lines
                    .iter()
                    .filter(|l| self.pattern.is_match(&l.text))
                    .map(|l| l.text.as_str())
                    .collect();
                if bad.is_empty() {
                    GateResult::pass(
                        self.name(),
                        format!(
                            "no error lines among {} in {}s",
                            lines.len(),
                            self.window.as_secs()
                        ),
                    )
                } else {
                    GateResult::fail(
                        self.name(),
                        format!(
                            "{} error lines in the first {}s, first: {}",
                            bad.len(),
                            self.window.as_secs(),
                            bad.iter().take(3).copied().collect::<Vec<_>>().join(" | ")
                        ),
                    )
                }
            }
        }
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExecOutput, LogLine, LogStream};
    use crate::runtime::MockContainerRuntime;
    use tej_core::command::ExitInfo;
    use tej_core::{CommandOutput, FakeClock, MockCommandRunner};

    fn ctx() -> GateContext {
        GateContext {
            project: "shop".into(),
            service: "backend".into(),
            new_container: Some("new".into()),
            new_port: None,
            since: "2025-01-16T09:00:00Z".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn backup_gate_fresh_stale_missing_and_broken() {
        let clock = Arc::new(FakeClock::new("2025-01-16T12:00:00Z".parse().unwrap()));
        let gate = |r: Result<Option<Timestamp>, &'static str>| {
            let mut m = MockBackupFreshness::new();
            m.expect_latest_backup()
                .returning(move || r.map_err(|e| e.into()));
            FreshBackupGate {
                source: Arc::new(m),
                max_age: Duration::from_secs(6 * 3600),
                clock: clock.clone(),
            }
        };
        let fresh = gate(Ok(Some("2025-01-16T10:00:00Z".parse().unwrap())));
        assert!(fresh.check(&ctx()).await.passed);
        let stale = gate(Ok(Some("2025-01-15T10:00:00Z".parse().unwrap())))
            .check(&ctx())
            .await;
        assert!(
            !stale.passed && stale.detail.contains("older than"),
            "{stale:?}"
        );
        assert!(!gate(Ok(None)).check(&ctx()).await.passed);
        let broken = gate(Err("catalogue unreadable")).check(&ctx()).await;
        assert!(!broken.passed && broken.detail.contains("unreadable"));
    }

    #[tokio::test]
    async fn command_gate_and_run_gates_stop_at_first_failure() {
        let mut r = MockCommandRunner::new();
        r.expect_run().returning(|s| {
            let ok = s.program == "true";
            Ok(CommandOutput {
                status: ExitInfo {
                    code: Some(if ok { 0 } else { 1 }),
                    signal: None,
                },
                stdout: vec![],
                stderr: if ok {
                    String::new()
                } else {
                    "1 failing test".into()
                },
                duration: Duration::ZERO,
            })
        });
        let r: Arc<dyn CommandRunner> = Arc::new(r);
        let mut never = MockGate::new();
        never.expect_check().never();
        let gates: Vec<Box<dyn Gate>> = vec![
            Box::new(CommandGate {
                name: "lint".into(),
                runner: r.clone(),
                spec: CommandSpec::new("true"),
            }),
            Box::new(CommandGate {
                name: "tests".into(),
                runner: r,
                spec: CommandSpec::new("npm").arg("test"),
            }),
            Box::new(never),
        ];
        let (results, res) = run_gates(&gates, &ctx()).await;
        assert_eq!(results.len(), 2);
        assert!(results[0].passed);
        match res {
            Err(DeployError::GateFailed { gate, reason }) => {
                assert_eq!(gate, "tests");
                assert!(reason.contains("1 failing test"), "{reason}");
            }
            r => panic!("unexpected {r:?}"),
        }
    }

    #[tokio::test]
    async fn exec_gate_uses_new_container_and_reports_exit_code() {
        let mut rt = MockContainerRuntime::new();
        rt.expect_exec()
            .withf(|id, cmd| id == "new" && cmd == ["npx", "prisma", "migrate", "status"])
            .returning(|_, _| {
                Ok(ExecOutput {
                    exit_code: 1,
                    stdout: "Following migration have not yet been applied".into(),
                    stderr: String::new(),
                })
            });
        let g = ExecGate {
            name: "migrations-applied".into(),
            containers: Arc::new(rt),
            service: None,
            cmd: ["npx", "prisma", "migrate", "status"]
                .map(String::from)
                .to_vec(),
        };
        let r = g.check(&ctx()).await;
        assert!(!r.passed);
        assert!(
            r.detail.contains("exited 1") && r.detail.contains("not yet been applied"),
            "{r:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn log_errors_gate_waits_the_window_and_flags_error_lines() {
        let line = |t: &str| LogLine {
            at: None,
            stream: LogStream::Stdout,
            container: String::new(),
            text: t.into(),
        };
        let mut rt = MockContainerRuntime::new();
        let lines = vec![
            line("GET /health 200"),
            line("Error: connect ECONNREFUSED 127.0.0.1:5432"),
            line("no errors here: terror"),
        ];
        rt.expect_logs()
            .withf(|id, q| id == "new" && q.since.is_some())
            .return_once(move |_, _| Ok(lines));
        let g = LogErrorsGate {
            containers: Arc::new(rt),
            window: Duration::from_secs(600),
            pattern: LogErrorsGate::default_pattern(),
        };
        let start = tokio::time::Instant::now();
        let r = g.check(&ctx()).await;
        assert_eq!(start.elapsed(), Duration::from_secs(600));
        assert!(!r.passed);
        assert!(r.detail.starts_with("1 error lines"), "{r:?}");
    }
}
