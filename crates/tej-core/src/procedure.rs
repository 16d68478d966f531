//! Procedures as data: ordered steps that can be planned (dry run) and applied,
//! guarded by risk, confirmation and the production maintenance window, and audited.

use crate::Severity;
use crate::audit::{AuditLog, AuditScope};
use crate::calendar::Calendar;
use crate::clock::Clock;
use crate::config::Environment;
use crate::finding::Finding;
use crate::secret::Redactor;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Instant;

/// How dangerous a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    /// Only reads.
    ReadOnly,
    /// Changes state in a way that is safe and recoverable (VACUUM, a new backup).
    Mutating,
    /// Loses data or availability if misused (restore over a database, FLUSHDB, VACUUM FULL).
    Destructive,
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Risk::ReadOnly => "read-only",
            Risk::Mutating => "mutating",
            Risk::Destructive => "destructive",
        })
    }
}

/// What a step would do, for `--dry-run` and confirmation prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The step's name.
    pub step: String,
    /// Its risk.
    pub risk: Risk,
    /// What it acts on.
    pub target: String,
    /// The actions, one line each, in order.
    pub actions: Vec<String>,
}

impl Plan {
    /// The plan of `step` (its name, risk and target) doing `actions`, in order: what a
    /// [`Step::plan`] returns unless the plan knows the risk better than the step.
    pub fn of<S: Step + ?Sized>(step: &S, actions: Vec<String>) -> Plan {
        Plan {
            step: step.name(),
            risk: step.risk(),
            target: step.target(),
            actions,
        }
    }
}

/// What an applied step reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    /// One line for a human.
    pub summary: String,
    /// Findings produced by the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Step-specific structured data (rows changed, bytes freed...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl StepOutput {
    /// An output with only a summary.
    pub fn summary(s: impl Into<String>) -> StepOutput {
        StepOutput {
            summary: s.into(),
            ..StepOutput::default()
        }
    }
}

/// A step's failure, as any error.
pub type StepError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One unit of a procedure.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Step: Send + Sync {
    /// Stable name (`vacuum-analyze`).
    fn name(&self) -> String;
    /// How dangerous it is.
    fn risk(&self) -> Risk;
    /// What it acts on.
    fn target(&self) -> String;
    /// What it would do; must not change anything.
    async fn plan(&self) -> Result<Plan, StepError>;
    /// Does it.
    async fn apply(&self) -> Result<StepOutput, StepError>;
}

/// What to do when a step fails or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop the procedure (the default).
    #[default]
    Stop,
    /// Record the failure and go on with the next step.
    Continue,
}

/// A step in a procedure, with its failure policy.
pub struct ProcedureStep {
    /// The step.
    pub step: Box<dyn Step>,
    /// What a failure means for the rest.
    pub on_failure: OnFailure,
}

/// An ordered list of steps.
pub struct Procedure {
    /// Name (`weekly-audit`).
    pub name: String,
    /// Steps in order.
    pub steps: Vec<ProcedureStep>,
}

impl Procedure {
    /// An empty procedure.
    pub fn new(name: impl Into<String>) -> Procedure {
        Procedure {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// Appends a step that stops the procedure when it fails.
    pub fn step(mut self, s: impl Step + 'static) -> Procedure {
        self.steps.push(ProcedureStep {
            step: Box::new(s),
            on_failure: OnFailure::Stop,
        });
        self
    }

    /// Appends a step whose failure does not stop the procedure.
    pub fn step_continue(mut self, s: impl Step + 'static) -> Procedure {
        self.steps.push(ProcedureStep {
            step: Box::new(s),
            on_failure: OnFailure::Continue,
        });
        self
    }

    /// Appends a boxed step with an explicit policy.
    pub fn push(&mut self, step: Box<dyn Step>, on_failure: OnFailure) {
        self.steps.push(ProcedureStep { step, on_failure });
    }
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Applied successfully.
    Applied,
    /// Only planned (dry run).
    Planned,
    /// Not run because an earlier step failed.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Not allowed to run.
    Refused {
        /// Why.
        reason: String,
    },
    /// Ran and failed.
    Failed {
        /// The error, redacted.
        error: String,
    },
}

/// The report of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step name.
    pub step: String,
    /// Target.
    pub target: String,
    /// Risk.
    pub risk: Risk,
    /// Outcome.
    pub outcome: Outcome,
    /// The plan's actions (always filled when planning succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// The step's output when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<StepOutput>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// The report of a whole procedure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureReport {
    /// Procedure name.
    pub procedure: String,
    /// Dry run?
    pub dry_run: bool,
    /// One report per step, in order.
    pub steps: Vec<StepReport>,
}

impl ProcedureReport {
    /// True when no step failed or was refused.
    pub fn succeeded(&self) -> bool {
        !self
            .steps
            .iter()
            .any(|s| matches!(s.outcome, Outcome::Failed { .. } | Outcome::Refused { .. }))
    }

    /// Every finding from every applied step.
    pub fn findings(&self) -> Vec<&Finding> {
        self.steps
            .iter()
            .filter_map(|s| s.output.as_ref())
            .flat_map(|o| o.findings.iter())
            .collect()
    }

    /// The worst severity: findings, and Critical for any failed or refused step.
    pub fn severity(&self) -> Severity {
        let mut worst = self
            .findings()
            .iter()
            .fold(Severity::Ok, |a, f| a.worst(f.severity));
        if !self.succeeded() {
            worst = worst.worst(Severity::Critical);
        }
        worst
    }
}

/// Asks a human (or a flag) whether a destructive step may run.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait Confirmer: Send + Sync {
    /// True to go ahead with `plan`.
    fn confirm(&self, plan: &Plan) -> bool;
}

/// A confirmer that always answers the same (`--yes` is `Fixed(true)`; no terminal is `Fixed(false)`).
#[derive(Debug, Clone, Copy)]
pub struct Fixed(pub bool);

impl Confirmer for Fixed {
    fn confirm(&self, _plan: &Plan) -> bool {
        self.0
    }
}

/// Why a step was not allowed to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A destructive step was not confirmed.
    #[error(
        "destructive step {step} on {target} needs confirmation (re-run with --yes after reading the plan)"
    )]
    NotConfirmed {
        /// Step.
        step: String,
        /// Target.
        target: String,
    },
    /// A destructive step in production outside the maintenance window.
    #[error(
        "destructive step {step} refused in production outside the maintenance window (next window opens {next_window}); override on purpose with --outside-window"
    )]
    OutsideWindow {
        /// Step.
        step: String,
        /// When the next window opens, in the calendar's zone.
        next_window: String,
    },
}

/// The rules every step passes before it is applied.
#[derive(Clone)]
pub struct Guard {
    /// Which environment this is.
    pub environment: Environment,
    /// The calendar holding the maintenance window.
    pub calendar: Calendar,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Who confirms destructive steps.
    pub confirmer: Arc<dyn Confirmer>,
    /// Allow destructive steps in production outside the window (set on purpose, audited).
    pub override_window: bool,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("environment", &self.environment)
            .field("override_window", &self.override_window)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Appends `report`'s line to `log` under this guard: its clock's time, its environment,
    /// and the override note on a destructive step an override of the production window let
    /// through. The Executor writes every line this way; so do procedures that run their own
    /// stages (rotations).
    pub fn record(&self, log: &AuditLog, procedure: &str, report: &StepReport) -> io::Result<()> {
        let environment = self.environment.to_string();
        let scope = AuditScope {
            at: self.clock.now(),
            environment: &environment,
            window_overridden: self.overrides_window(report),
        };
        log.record_step(procedure, report, scope)
    }

    /// Whether an override of the production window is what let `report`'s step run.
    fn overrides_window(&self, report: &StepReport) -> bool {
        report.risk == Risk::Destructive
            && self.environment == Environment::Production
            && self.override_window
            && !matches!(report.outcome, Outcome::Refused { .. })
    }

    /// Decides whether `plan` may be applied now.
    pub fn authorize(&self, plan: &Plan) -> Result<(), Refusal> {
        if plan.risk != Risk::Destructive {
            return Ok(());
        }
        if self.environment == Environment::Production && !self.override_window {
            let now = self.clock.now();
            if !self.calendar.in_window(now) {
                let next = self.calendar.next_window_start(now);
                return Err(Refusal::OutsideWindow {
                    step: plan.step.clone(),
                    next_window: self.calendar.format_local(next.timestamp()),
                });
            }
        }
        if !self.confirmer.confirm(plan) {
            return Err(Refusal::NotConfirmed {
                step: plan.step.clone(),
                target: plan.target.clone(),
            });
        }
        Ok(())
    }
}

/// Runs procedures under a guard, writing the audit log.
#[derive(Debug, Clone)]
pub struct Executor {
    /// The rules.
    pub guard: Guard,
    /// Where applied steps are recorded (none: not recorded).
    pub audit: Option<AuditLog>,
    /// Plan only.
    pub dry_run: bool,
    /// Redacts error texts in reports.
    pub redactor: Redactor,
}

impl Executor {
    /// An executor with no audit log, not a dry run.
    pub fn new(guard: Guard) -> Executor {
        Executor {
            guard,
            audit: None,
            dry_run: false,
            redactor: Redactor::new(),
        }
    }

    fn audit(&self, procedure: &str, report: &StepReport) {
        let Some(log) = &self.audit else { return };
        if report.risk == Risk::ReadOnly && !matches!(report.outcome, Outcome::Refused { .. }) {
            return;
        }
        if let Err(e) = self.guard.record(log, procedure, report) {
            tracing::error!(path = %log.path().display(), error = %e, "cannot append to the audit log");
        }
    }

    /// Plans and (unless dry run) applies each step in order.
    pub async fn run(&self, procedure: &Procedure) -> ProcedureReport {
        let mut reports = Vec::with_capacity(procedure.steps.len());
        let mut stopped: Option<String> = None;
        for ps in &procedure.steps {
            let step = &ps.step;
            let base = StepReport {
                step: step.name(),
                target: step.target(),
                risk: step.risk(),
                outcome: Outcome::Planned,
                actions: Vec::new(),
                output: None,
                duration_ms: 0,
            };
            if let Some(reason) = &stopped {
                reports.push(StepReport {
                    outcome: Outcome::Skipped {
                        reason: reason.clone(),
                    },
                    ..base
                });
                continue;
            }
            let started = Instant::now();
            let mut report = base;
            let plan = match step.plan().await {
                Ok(p) => p,
                Err(e) => {
                    report.outcome = Outcome::Failed {
                        error: self.redactor.redact(&format!("planning failed: {e}")),
                    };
                    report.duration_ms = started.elapsed().as_millis() as u64;
                    self.audit(&procedure.name, &report);
                    if ps.on_failure == OnFailure::Stop {
                        stopped = Some(format!("step {} failed", report.step));
                    }
                    reports.push(report);
                    continue;
                }
            };
            report.actions = plan.actions.clone();
            // The plan may know the risk better than the static declaration (never lower it).
            report.risk = report.risk.max(plan.risk);
            let plan = Plan {
                risk: report.risk,
                ..plan
            };
            if self.dry_run {
                reports.push(report);
                continue;
            }
            if let Err(refusal) = self.guard.authorize(&plan) {
                report.outcome = Outcome::Refused {
                    reason: refusal.to_string(),
                };
                self.audit(&procedure.name, &report);
                if ps.on_failure == OnFailure::Stop {
                    stopped = Some(format!("step {} was refused", report.step));
                }
                reports.push(report);
                continue;
            }
            match step.apply().await {
                Ok(out) => {
                    report.outcome = Outcome::Applied;
                    report.output = Some(out);
                }
                Err(e) => {
                    report.outcome = Outcome::Failed {
                        error: self.redactor.redact(&e.to_string()),
                    };
                    if ps.on_failure == OnFailure::Stop {
                        stopped = Some(format!("step {} failed", report.step));
                    }
                }
            }
            report.duration_ms = started.elapsed().as_millis() as u64;
            self.audit(&procedure.name, &report);
            reports.push(report);
        }
        ProcedureReport {
            procedure: procedure.name.clone(),
            dry_run: self.dry_run,
            steps: reports,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::secret::Secret;
    use jiff::Timestamp;

    fn step(
        name: &'static str,
        risk: Risk,
        result: Result<&'static str, &'static str>,
    ) -> MockStep {
        let mut s = MockStep::new();
        s.expect_name().return_const(name.to_string());
        s.expect_risk().return_const(risk);
        s.expect_target().return_const("db:app".to_string());
        s.expect_plan().returning(move || {
            Ok(Plan {
                step: name.into(),
                risk,
                target: "db:app".into(),
                actions: vec![format!("do {name}")],
            })
        });
        s.expect_apply().returning(move || match result {
            Ok(m) => Ok(StepOutput::summary(m)),
            Err(e) => Err(e.into()),
        });
        s
    }

    fn guard(env: Environment, at: &str, yes: bool) -> Guard {
        Guard {
            environment: env,
            calendar: Calendar::runbook(),
            clock: Arc::new(FakeClock::new(at.parse::<Timestamp>().unwrap())),
            confirmer: Arc::new(Fixed(yes)),
            override_window: false,
        }
    }

    // Sunday 2025-01-19 02:30 IST and Thursday 2025-01-16 12:00 IST
    const IN_WINDOW: &str = "2025-01-18T21:00:00Z";
    const OUTSIDE: &str = "2025-01-16T06:30:00Z";

    #[tokio::test]
    async fn destructive_needs_confirmation() {
        let p = Procedure::new("t").step(step("flushdb", Risk::Destructive, Ok("flushed")));
        let r = Executor::new(guard(Environment::Staging, OUTSIDE, false))
            .run(&p)
            .await;
        assert!(
            matches!(&r.steps[0].outcome, Outcome::Refused { reason } if reason.contains("needs confirmation"))
        );
        assert!(!r.succeeded());
        let p = Procedure::new("t").step(step("flushdb", Risk::Destructive, Ok("flushed")));
        let r = Executor::new(guard(Environment::Staging, OUTSIDE, true))
            .run(&p)
            .await;
        assert_eq!(r.steps[0].outcome, Outcome::Applied);
    }

    #[tokio::test]
    async fn production_destructive_only_in_window_unless_overridden() {
        let mk = || Procedure::new("t").step(step("vacuum-full", Risk::Destructive, Ok("done")));
        let r = Executor::new(guard(Environment::Production, OUTSIDE, true))
            .run(&mk())
            .await;
        match &r.steps[0].outcome {
            Outcome::Refused { reason } => {
                assert!(
                    reason.contains("outside the maintenance window"),
                    "{reason}"
                );
                assert!(reason.contains("2025-01-19 02:00"), "{reason}");
            }
            o => panic!("unexpected {o:?}"),
        }
        let r = Executor::new(guard(Environment::Production, IN_WINDOW, true))
            .run(&mk())
            .await;
        assert_eq!(r.steps[0].outcome, Outcome::Applied);
        let mut g = guard(Environment::Production, OUTSIDE, true);
        g.override_window = true;
        let r = Executor::new(g).run(&mk()).await;
        assert_eq!(r.steps[0].outcome, Outcome::Applied);
        // Read-only and mutating steps are never held back by the window.
        let p = Procedure::new("t")
            .step(step("vacuum", Risk::Mutating, Ok("ok")))
            .step(step("size", Risk::ReadOnly, Ok("ok")));
        let r = Executor::new(guard(Environment::Production, OUTSIDE, false))
            .run(&p)
            .await;
        assert!(r.succeeded());
    }

    #[tokio::test]
    async fn failure_stops_or_continues_as_declared() {
        let p = Procedure::new("t")
            .step_continue(step("a", Risk::ReadOnly, Err("boom")))
            .step(step("b", Risk::Mutating, Err("bang")))
            .step(step("c", Risk::ReadOnly, Ok("never")));
        let r = Executor::new(guard(Environment::Development, OUTSIDE, true))
            .run(&p)
            .await;
        assert!(matches!(r.steps[0].outcome, Outcome::Failed { .. }));
        assert!(matches!(r.steps[1].outcome, Outcome::Failed { .. }));
        assert!(matches!(r.steps[2].outcome, Outcome::Skipped { .. }));
        assert_eq!(r.severity(), Severity::Critical);
    }

    #[test]
    fn a_plan_of_a_step_names_its_step_risk_and_target() {
        let s = step("vacuum-full", Risk::Destructive, Ok("done"));
        let p = Plan::of(&s, vec!["VACUUM FULL users".into()]);
        assert_eq!(
            p,
            Plan {
                step: "vacuum-full".into(),
                risk: Risk::Destructive,
                target: "db:app".into(),
                actions: vec!["VACUUM FULL users".into()],
            }
        );
    }

    #[tokio::test]
    async fn dry_run_plans_without_applying() {
        let mut s = MockStep::new();
        s.expect_name().return_const("restore".to_string());
        s.expect_risk().return_const(Risk::Destructive);
        s.expect_target().return_const("db".to_string());
        s.expect_plan().returning(|| {
            Ok(Plan {
                step: "restore".into(),
                risk: Risk::Destructive,
                target: "db".into(),
                actions: vec!["drop and restore".into()],
            })
        });
        s.expect_apply().never();
        let mut ex = Executor::new(guard(Environment::Production, OUTSIDE, false));
        ex.dry_run = true;
        let r = ex.run(&Procedure::new("t").step(s)).await;
        assert_eq!(r.steps[0].outcome, Outcome::Planned);
        assert_eq!(r.steps[0].actions, vec!["drop and restore"]);
    }

    #[tokio::test]
    async fn audit_records_mutating_destructive_and_refusals_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut red = Redactor::new();
        red.add(&Secret::new("supersecretvalue"));
        let log = AuditLog::new(dir.path().join("audit.jsonl")).with_redactor(red.clone());
        let mut ex = Executor::new(guard(Environment::Production, IN_WINDOW, true));
        ex.audit = Some(log.clone());
        ex.redactor = red;
        let p = Procedure::new("rotation")
            .step(step("read", Risk::ReadOnly, Ok("read")))
            .step(step(
                "write-env",
                Risk::Mutating,
                Ok("wrote JWT_SECRET=supersecretvalue"),
            ))
            .step(step(
                "flush",
                Risk::Destructive,
                Err("failed with supersecretvalue"),
            ));
        let r = ex.run(&p).await;
        assert!(!r.succeeded());
        let entries = log.read_all().unwrap();
        assert_eq!(entries.len(), 2, "read-only steps are not audited");
        assert_eq!(entries[0].step, "write-env");
        assert_eq!(entries[0].outcome, "applied");
        assert_eq!(entries[1].outcome, "failed");
        assert_eq!(entries[1].environment, "production");
        let raw = std::fs::read_to_string(log.path()).unwrap();
        assert!(!raw.contains("supersecretvalue"));
        assert!(raw.contains("[REDACTED]"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(log.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // the report's error text is redacted too
        assert!(
            matches!(&r.steps[2].outcome, Outcome::Failed { error } if !error.contains("supersecret"))
        );
    }
}
