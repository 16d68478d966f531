//! # tej-runbook
//!
//! The maintenance calendar put to work: the runbook's scheduled procedures,
//! composed from the domain crates (PostgreSQL and Redis, backups, secrets and
//! TLS, deploys, host), and everything around them that belongs to no single
//! domain (scheduling, daemon, notifications, capacity, custom checks).
//!
//! - [`schedule`]: the calendar as crontab lines ([`emit_crontab`]) or systemd
//!   timer/service units ([`emit_systemd`]) firing at Asia/Kolkata times, and
//!   [`due_occurrence`] behind `tej run <entry> --if-due`.
//! - [`daemon`]: the in-process scheduler ([`Daemon`]) over a [`tej_core::Clock`]
//!   running a [`ProcedureRunner`], never overlapping a procedure in-process or,
//!   through a [`RunLock`], across hosts; missed runs catch up once; state in a
//!   JSON file written atomically.
//! - [`calendar_daemon`]: the daemon put together from `tej.toml`
//!   ([`calendar_daemon`]: runner, cross-host run lock, notifier).
//! - [`notify`]: reports that need attention to a Slack-compatible webhook
//!   ([`WebhookNotifier`]), retried, the URL kept secret, failures reported.
//! - [`capacity`]: measurement history ([`HistoryStore`], [`JsonlHistoryStore`]),
//!   least-squares trend ([`fit_linear`]), three-month projection and days until
//!   a limit ([`forecast`]), SVG chart ([`render_svg`]).
//! - [`custom_checks`]: `[[check]]` declarations evaluated through a
//!   [`QueryRunner`] into `custom.<name>` findings.
//! - [`runner`]: many checks at once, each with its own timeout, bounded
//!   concurrency per target ([`run_checks`]).
//! - [`procedures`]: the runbook's procedures composed from the domain crates
//!   (tej-db, tej-host, tej-backup, tej-secrets, tej-deploy) over a
//!   [`RunContext`] built from `tej.toml`: the daily health check
//!   ([`daily_health`]), the twice-daily performance check
//!   ([`performance_check`]) and the weekly audit ([`weekly_audit`]); the
//!   monthly security audit ([`security_audit`]), deep maintenance
//!   ([`deep_maintenance`]) and capacity planning ([`capacity_planning`]); the
//!   quarterly rotation ([`secret_rotation_from_context`]) and recovery drill
//!   ([`disaster_recovery_drill`] over a [`DrillRunner`]: [`LogicalDrill`] or
//!   [`PitrDrill`]); the emergencies
//!   ([`db_corruption`], [`security_breach`]); [`CalendarRunner`] runs any entry.
//! - [`pg_lock`]: [`PgAdvisoryRunLock`], the daemon's cross-host lock as
//!   PostgreSQL session advisory locks; [`pg_history`]: [`PgHistoryStore`],
//!   capacity history in the managed database's `tej` schema.
//! - [`adapters`]: glue between domain crates ([`RedisSessions`],
//!   [`ComposeService`], [`RotateSecretsStep`], service stop/start steps).
//! - [`run_entry`]: one run of calendar entries outside the daemon (`tej run`, `tej
//!   health`): what is due, one report, notified as the daemon notifies ([`run_entry`]).
//! - [`rotation`]: the secret rotation from `tej.toml` ([`rotation_from_config`]),
//!   shared by `tej secrets rotate`, the quarterly rotation and the breach emergency.
//! - [`deploy`]: a `[[deploy.service]]` deployed or rolled back as one audited step
//!   ([`deploy_service`]), with the fresh-backup gate over tej-backup's catalogue.
//! - [`serve`]: `tej serve`'s read-only HTTP server (`/metrics` from one
//!   `prometheus-client` registry, `/healthz`, `/readyz`, `/api/v1/checks`), its optional
//!   bearer token, and the collector that runs the checks every interval.
//!
//! The scheduling, daemon, notification, capacity and runner modules depend on
//! no domain crate (they come in through traits); [`procedures`] composes the
//! domain crates through their traits (`PgAdmin`, `RedisAdmin`,
//! `ContainerRuntime`, `ObjectStore`...), so every procedure is tested with
//! their mocks.
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

pub mod adapters;
pub mod calendar_daemon;
pub mod capacity;
pub mod custom_checks;
pub mod daemon;
pub mod deploy;
pub mod error;
pub mod notify;
pub mod pg_history;
pub mod pg_lock;
pub mod procedures;
pub mod rotation;
pub mod run_entry;
pub mod runner;
pub mod schedule;
pub mod serve;

pub use adapters::{
    AsDestructive, ComposeService, LazyContainerRuntime, RedisSessions, RotateSecretsStep,
    StartServicesStep, StopServicesStep,
};
pub use calendar_daemon::{CalendarDaemon, CalendarDaemonOptions, calendar_daemon};
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
pub use daemon::{RunHistory, notify_run};
pub use deploy::{
    DeployEngine, DeployRequest, DeployRun, RepositoryFreshness, deploy_service,
    deployer_from_config,
};
pub use error::{Result, RunbookError};
pub use notify::{
    Notifier, NotifyOutcome, WebhookNotifier, WebhookOptions, notify_failure_finding,
    notify_report, report_text, slack_payload,
};
pub use notify::{notify_transition, recovery_text};
pub use pg_history::{HISTORY_MIGRATION, PgHistoryStore};
pub use pg_lock::{PgAdvisoryRunLock, advisory_lock_id};
pub use procedures::access_log::{
    AccessEntry, AccessLogStats, analyze_access_log, parse_access_line, percentile,
    sql_injection_pattern,
};
pub use procedures::calendar_runner::CalendarRunner;
pub use procedures::context::{
    ComposeTarget, Connect, ContextQueries, DatabaseTarget, DockerClients, HttpProber, HttpTiming,
    Lazy, RedisTarget, RepositoryTarget, ReqwestProber, RunContext, RunOptions, RustlsProber,
    TlsProber,
};
pub use procedures::daily::{
    ArchiverState, backup_freshness, daily_health, daily_tasks, wal_archiving_finding,
};
pub use procedures::dispatch::{implements, resolve_entries, run_procedure};
pub use procedures::emergency::{
    AmcheckStep, AppServices, BreachOptions, CorruptionOptions, DbCorruptionOptions,
    SanityQueriesStep, SearchLogsStep, SecurityBreach, SessionTarget, db_corruption,
    db_corruption_from_context, search_logs_for_address, security_breach,
    security_breach_from_context,
};
pub use procedures::monthly::{
    AuditCommand, AuditKind, CapacityPlanningOptions, CreateBackupStep, DeepMaintenanceOptions,
    VerifyLatestBackupStep, VulnerabilityCounts, capacity_planning, deep_maintenance,
    deep_maintenance_with_backup, measure_capacity, parse_audit_tables, parse_cargo_audit,
    parse_npm_audit, procedure_findings, run_dependency_audit, security_audit,
};
pub use procedures::performance::{
    api_findings, performance_check, performance_optimization, performance_tasks,
};
pub use procedures::quarterly::{
    DrillRequest, DrillRunner, DrillSummary, DrillTargets, LogicalDrill, PitrDrill,
    disaster_recovery_drill, rotation_from_context, secret_rotation_from_context,
    server_cannot_run_tej, tej_wal_command, wal_fetch_restore_command,
};
pub use procedures::weekly::{
    PruneBackupsStep, security_findings, security_review, weekly_audit, weekly_maintenance,
    weekly_maintenance_procedure, weekly_tasks,
};
pub use rotation::{ConfiguredRotator, rotation_from_config};
pub use run_entry::{EntryRequest, EntryResult, EntryRun, history_key, run_entries, run_entry};
pub use runner::{CheckTask, RunnerOptions, run_checks, timeout_finding};
pub use schedule::{
    CronJob, CronZone, DueWindow, ScheduleOptions, SystemdUnit, cron_jobs, due_occurrence,
    emit_crontab, emit_systemd, fixed_offset_seconds, on_calendar, run_argv, select_entries,
};
pub use schedule::{EnvRef, KubernetesOptions, emit_kubernetes};
pub use schedule::{ScheduledConfirmer, scheduled_executor, scheduled_slot};

#[cfg(any(test, feature = "mock"))]
pub use capacity::MockHistoryStore;
#[cfg(any(test, feature = "mock"))]
pub use custom_checks::MockQueryRunner;
#[cfg(any(test, feature = "mock"))]
pub use daemon::{MockProcedureRunner, MockRunLock};
#[cfg(any(test, feature = "mock"))]
pub use notify::MockNotifier;
#[cfg(any(test, feature = "mock"))]
pub use procedures::context::{MockHttpProber, MockTlsProber};
#[cfg(any(test, feature = "mock"))]
pub use procedures::quarterly::MockDrillRunner;
