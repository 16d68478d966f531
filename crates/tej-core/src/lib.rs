//! # tej-core
//!
//! The shared vocabulary of tej: what every domain crate (PostgreSQL, backups, secrets,
//! deploys, host) speaks and what the runbook composes.
//!
//! - [`Severity`], [`Finding`], [`Metric`], [`Report`]: results of checks, with Nagios exit
//!   codes and thresholds, renderable as text, JSON, Nagios perfdata or Prometheus samples.
//! - [`Procedure`], [`Step`], [`Executor`], [`Guard`]: steps that plan (dry run) and apply,
//!   with risk levels, confirmation of destructive steps, the production maintenance window,
//!   and an [`AuditLog`] with secrets redacted.
//! - [`Calendar`]: the runbook's maintenance calendar in Asia/Kolkata.
//! - [`Config`]: `tej.toml`, with `DATABASE_URL`/`PG*`/`REDIS_URL`/`DOCKER_HOST` conventions.
//! - [`CommandRunner`]: the one way to start external programs (argv only), with a mock.
//! - [`Clock`], [`Secret`], [`atomic_write`], [`retry`].
//!
//! tej-core talks to no external service.
//!
//! ```
//! use tej_core::{Calendar, Finding, Report, Severity, Threshold};
//!
//! let mut report = Report::new("daily-health");
//! report.push(Finding::measured("disk.usage", "disk_used_percent", 91.0, "%",
//!     Threshold::above(80.0, 90.0), "/ is 91% full").target("/"));
//! assert_eq!(report.severity(), Severity::Critical);
//! assert_eq!(report.severity().exit_code(), 2);
//!
//! let cal = Calendar::runbook();
//! let next = cal.next_occurrence("weekly-audit", "2025-01-16T00:00:00Z".parse().unwrap()).unwrap();
//! assert_eq!(next.strftime("%a %H:%M").to_string(), "Sun 02:00");
//! ```

pub mod audit;
pub mod calendar;
pub mod clock;
pub mod command;
pub mod config;
pub mod error;
pub mod finding;
pub mod fmt;
pub mod fsutil;
pub mod guard_config;
pub mod libpq;
pub mod procedure;
pub mod retry;
pub mod secret;
pub mod severity;
pub mod shell;

pub use audit::{AuditEntry, AuditLog, AuditScope};
pub use calendar::{
    Cadence, Calendar, CalendarEntry, MaintenanceWindow, ProcedureKind, Recurrence,
};
pub use clock::{AsOf, Clock, FakeClock, SystemClock};
pub use command::{
    CommandError, CommandOutput, CommandRunner, CommandSpec, RunningCommand, TokioCommandRunner,
    run_checked,
};
pub use config::{Config, ConfigError, CustomCheckConfig, Environment};
pub use error::Error;
pub use finding::{Direction, Finding, Metric, Report, Threshold};
pub use fsutil::{atomic_write, atomic_write_owned};
pub use guard_config::RunFlags;
pub use procedure::{
    Confirmer, Executor, Fixed, Guard, OnFailure, Outcome, Plan, Procedure, ProcedureReport,
    Refusal, Risk, Step, StepError, StepOutput, StepReport,
};
pub use retry::{Backoff, Retryable, retry};
pub use secret::{REDACTED, Redactor, Secret, SecretRef};
pub use severity::Severity;

#[cfg(any(test, feature = "mock"))]
pub use clock::MockClock;
#[cfg(any(test, feature = "mock"))]
pub use command::MockCommandRunner;
#[cfg(any(test, feature = "mock"))]
pub use procedure::{MockConfirmer, MockStep};
