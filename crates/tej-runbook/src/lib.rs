//! # tej-runbook
//!
//! The maintenance calendar put to work: everything the runbook's scheduled
//! procedures need that does not belong to one domain (PostgreSQL, backups,
//! secrets, deploys, host), which the domain crates plug into.
//!
//! - [`schedule`]: the calendar as crontab lines ([`emit_crontab`]) or systemd
//!   timer/service units ([`emit_systemd`]) firing at Asia/Kolkata times, and
//!   [`due_occurrence`] behind `tej run <entry> --if-due`.
//! - [`daemon`]: the in-process scheduler ([`Daemon`]) over a [`tej_core::Clock`]
//!   running a [`ProcedureRunner`], never overlapping a procedure in-process or,
//!   through a [`RunLock`], across hosts; missed runs catch up once; state in a
//!   JSON file written atomically.
//! - [`notify`]: reports that need attention to a Slack-compatible webhook
//!   ([`WebhookNotifier`]), retried, the URL kept secret, failures reported.
//! - [`capacity`]: measurement history ([`HistoryStore`], [`JsonlHistoryStore`]),
//!   least-squares trend ([`fit_linear`]), three-month projection and days until
//!   a limit ([`forecast`]), SVG chart ([`render_svg`]).
//! - [`custom_checks`]: `[[check]]` declarations evaluated through a
//!   [`QueryRunner`] into `custom.<name>` findings.
//! - [`runner`]: many checks at once, each with its own timeout, bounded
//!   concurrency per target ([`run_checks`]).
//!
//! tej-runbook depends on no domain crate: they come in through the traits.
//!
//! ```
//! use std::time::Duration;
//! use tej_core::{Calendar, Finding, Severity};
//! use tej_runbook::{CheckTask, RunnerOptions, ScheduleOptions, emit_crontab, on_calendar, run_checks};
//!
//! let cal = Calendar::runbook();
//! let crontab = emit_crontab(&cal, &ScheduleOptions::default()).unwrap();
//! assert!(crontab.contains("CRON_TZ=Asia/Kolkata"));
//! assert!(crontab.contains("0 2 * * 0 /usr/local/bin/tej run weekly-audit --if-due"));
//! let last_sunday = &cal.entry("capacity-planning").unwrap().recurrence;
//! assert_eq!(on_calendar(&cal, last_sunday), "Sun *-*~01..07 15:00:00 Asia/Kolkata");
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let findings = run_checks(
//!     vec![
//!         CheckTask::new("postgres.health", "postgres", "db:app", Duration::from_secs(5), async {
//!             vec![Finding::ok("postgres.health", "accepting connections")]
//!         }),
//!         CheckTask::new("redis.health", "redis", "redis:cache", Duration::from_secs(5),
//!             std::future::pending()),
//!     ],
//!     RunnerOptions::default(),
//! ).await;
//! assert_eq!(findings[1].severity, Severity::Unknown); // timed out, did not hide postgres
//! # });
//! ```

pub mod capacity;
pub mod custom_checks;
pub mod daemon;
pub mod error;
pub mod notify;
pub mod runner;
pub mod schedule;

pub use capacity::{
    CapacityForecast, CapacityOptions, CapacitySeries, ChartOptions, HistoryStore,
    JsonlHistoryStore, Limit, LinearFit, Measurement, SeriesForecast, capacity_review, fit_linear,
    forecast, render_svg,
};
pub use custom_checks::{
    CustomCheckOptions, QueryRunner, evaluate_custom_check, evaluate_custom_checks,
};
pub use daemon::{
    Daemon, DaemonEvent, DaemonOptions, DaemonState, EntryState, InMemoryRunLock, ProcedureRunner,
    RunLock, RunOutcome, SkipReason, StateFile, TokioClock, lock_key,
};
pub use error::{Result, RunbookError};
pub use notify::{
    Notifier, NotifyOutcome, WebhookNotifier, WebhookOptions, notify_failure_finding,
    notify_report, report_text, slack_payload,
};
pub use runner::{CheckTask, RunnerOptions, run_checks, timeout_finding};
pub use schedule::{
    CronJob, CronZone, DueWindow, ScheduleOptions, SystemdUnit, cron_jobs, due_occurrence,
    emit_crontab, emit_systemd, fixed_offset_seconds, on_calendar, run_argv, select_entries,
};

#[cfg(any(test, feature = "mock"))]
pub use capacity::MockHistoryStore;
#[cfg(any(test, feature = "mock"))]
pub use custom_checks::MockQueryRunner;
#[cfg(any(test, feature = "mock"))]
pub use daemon::{MockProcedureRunner, MockRunLock};
#[cfg(any(test, feature = "mock"))]
pub use notify::MockNotifier;
