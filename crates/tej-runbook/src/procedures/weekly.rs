//! The weekly full audit (the runbook's "Full System Audit", "Security Review" and "Performance
//! Optimization", every Sunday): PostgreSQL sizes, bloat, indexes and slow queries; Redis memory,
//! fragmentation and big keys; the newest backup of each repository verified (with a restore
//! test when configured); what a cleanup would remove (a dry run: [`weekly_maintenance`]
//! removes it); a security review of the logs (failed logins, SQL-injection probes, rate-limit
//! hits, one address flooding), certificates and backup encryption.

use super::access_log::{AccessLogStats, analyze_access_log};
use super::context::RunContext;
use super::daily::blocking;
use super::emergency::UnavailableStep;
use super::support::{redis_task, repository_task, retarget, tls_tasks, unknown};
use crate::runner::{CheckTask, run_checks};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use tej_backup::{PruneOptions, Repository, VerifyOptions, list_backups};
use tej_core::{
    AsOf, Clock, Executor, Finding, Metric, Outcome, Plan, Procedure, Report, Risk, Severity, Step,
    StepError, StepOutput, Threshold,
};
use tej_db::pg::{VacuumOptions, VacuumStep, WeeklyAuditOptions, weekly_audit as pg_weekly_audit};
use tej_db::redis::{BigKeysOptions, BigKeysReport, RedisThresholds, find_big_keys, redis_health};
use tej_deploy::{PruneImagesStep, PruneOptions as ImagePruneOptions};
use tej_host::{CleanupOptions, CleanupStep, LogReviewOptions, LogThresholds, plan_cleanup};

/// Title of the weekly report.
pub const WEEKLY_TITLE: &str = "weekly audit";

/// The window of the weekly reviews.
pub const WEEK: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Logs older than this many days are what the weekly cleanup removes (the runbook's `-mtime +30`).
pub const LOG_RETENTION_DAYS: u32 = 30;

/// A key this big (bytes) is a warning; ten times this, critical.
pub const BIG_KEY_BYTES: u64 = 10 << 20;

/// The finding on a big-keys scan.
pub fn big_keys_finding(r: &BigKeysReport, target: &str) -> Finding {
    let biggest = r.top.first();
    let bytes = biggest.map(|k| k.bytes).unwrap_or(0) as f64;
    let t = Threshold::above(BIG_KEY_BYTES as f64, BIG_KEY_BYTES as f64 * 10.0);
    let summary = match biggest {
        Some(k) => format!(
            "biggest key {:?} ({}) uses {}; {} keys measured{}",
            k.key,
            k.kind,
            tej_db::pg::human_bytes(k.bytes as f64),
            r.scanned,
            if r.complete {
                ""
            } else {
                " (scan stopped early)"
            }
        ),
        None => format!("no keys ({} measured)", r.scanned),
    };
    let mut f = Finding::measured(
        "redis.big-keys",
        "redis_biggest_key_bytes",
        bytes,
        "B",
        t,
        summary,
    )
    .target(target);
    if r.top.len() > 1 {
        f = f.detail(
            r.top
                .iter()
                .take(5)
                .map(|k| format!("{} {} {}", k.key, k.kind, k.bytes))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    f
}

/// The security review of access-log statistics over the week.
pub fn security_findings(s: &AccessLogStats, target: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let addrs = |v: &[super::access_log::AddressRequests]| {
        v.iter()
            .take(5)
            .map(|a| format!("{} ({})", a.addr, a.count))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Failed logins.
    let lt = LogThresholds::default();
    let mut f = Finding::measured(
        "security.failed-logins",
        "failed_logins",
        s.failed_logins as f64,
        "",
        Threshold::above(lt.failed_login_warn as f64, lt.failed_login_crit as f64),
        format!("{} failed logins in the access log", s.failed_logins),
    )
    .target(target);
    let brute: Vec<_> = s
        .failed_logins_by_address
        .iter()
        .filter(|a| a.count >= lt.brute_force_threshold)
        .cloned()
        .collect();
    if !brute.is_empty() {
        f.severity = f.severity.worst(Severity::Warning);
        f.summary
            .push_str(&format!("; brute force from {}", addrs(&brute)));
    } else if !s.failed_logins_by_address.is_empty() {
        f = f.detail(format!("most from {}", addrs(&s.failed_logins_by_address)));
    }
    out.push(f);
    // SQL injection.
    let f = if s.sql_injection == 0 {
        Finding::ok("security.sql-injection", "no SQL-injection patterns in requests")
    } else {
        let errored = s
            .sql_injection_examples
            .iter()
            .any(|e| (500..600).contains(&e.status));
        Finding::new(
            "security.sql-injection",
            if errored {
                Severity::Critical
            } else {
                Severity::Warning
            },
            format!(
                "{} requests with SQL-injection patterns{}",
                s.sql_injection,
                if errored {
                    "; some made the application fail (5xx): check those endpoints for unescaped SQL"
                } else {
                    ""
                }
            ),
        )
        .detail(
            s.sql_injection_examples
                .iter()
                .map(|e| format!("{} {} {:?} -> {}", e.addr, e.pattern, e.path, e.status))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }
    .target(target)
    .metric(Metric::new("sql_injection_requests", s.sql_injection as f64, ""));
    out.push(f);
    // Rate limiting.
    let mut f = Finding::measured(
        "security.rate-limit",
        "rate_limited_requests",
        s.rate_limited as f64,
        "",
        Threshold::above(100.0, 10_000.0),
        format!("{} requests rate limited (429)", s.rate_limited),
    )
    .target(target);
    if !s.rate_limited_by_address.is_empty() {
        f = f.detail(format!("most from {}", addrs(&s.rate_limited_by_address)));
    }
    out.push(f);
    // One address flooding (a DDoS pattern).
    if let Some(top) = s.top_addresses.first() {
        let share = top.count as f64 * 100.0 / s.requests.max(1) as f64;
        let flooding = s.requests >= 1000 && share >= 20.0;
        out.push(
            Finding::new(
                "security.traffic-anomaly",
                if flooding {
                    Severity::Warning
                } else {
                    Severity::Ok
                },
                format!(
                    "busiest address {} sent {:.1}% of {} requests{}",
                    top.addr,
                    share,
                    s.requests,
                    if flooding {
                        ": check for a DoS pattern"
                    } else {
                        ""
                    }
                ),
            )
            .target(target)
            .detail(format!("top addresses: {}", addrs(&s.top_addresses))),
        );
    }
    out
}

/// Backup encryption on: configured, and the newest backup actually encrypted. An S3 (off-site)
/// repository without encryption is critical, a local one a warning.
pub fn encryption_finding(
    configured: bool,
    is_remote: bool,
    newest_encrypted: Option<bool>,
    target: &str,
) -> Finding {
    let check = "security.backup-encryption";
    match (configured, newest_encrypted) {
        (true, Some(false)) => Finding::new(
            check,
            Severity::Critical,
            "encryption is configured but the newest backup is not encrypted",
        ),
        (true, _) => Finding::ok(check, "backups are encrypted (age)"),
        (false, _) => Finding::new(
            check,
            if is_remote {
                Severity::Critical
            } else {
                Severity::Warning
            },
            "backups are not encrypted: set [backup.encryption] recipients in tej.toml",
        ),
    }
    .target(target)
}

/// The tasks of the weekly audit, in report order.
pub fn weekly_tasks(ctx: &RunContext, now: Timestamp) -> Vec<CheckTask> {
    weekly_tasks_with(ctx, now, true)
}

/// The weekly tasks; `plans`: with the dry-run plans of the log cleanup and of retention
/// (left out when [`weekly_maintenance`] does the work itself).
fn weekly_tasks_with(ctx: &RunContext, now: Timestamp, plans: bool) -> Vec<CheckTask> {
    let timeout = ctx.options.check_timeout;
    let mut tasks = Vec::new();

    // 1.1 Database maintenance audit.
    for d in &ctx.databases {
        let target = format!("db:{}", d.name);
        let admin = d.admin.clone();
        let t = target.clone();
        tasks.push(CheckTask::new(
            "postgres.weekly-audit",
            format!("postgres {}", d.name),
            target,
            timeout,
            async move {
                let a = pg_weekly_audit(&*admin, &WeeklyAuditOptions::default()).await;
                retarget(a.findings, &t)
            },
        ));
    }

    // 1.2 Redis memory, fragmentation and big keys.
    for r in &ctx.redis {
        tasks.push(redis_task(
            r,
            "redis.weekly-audit",
            "redis.ping",
            timeout,
            |admin, t| async move {
                let (_, mut findings) =
                    redis_health(&*admin, &RedisThresholds::default(), &t).await;
                match find_big_keys(&*admin, &BigKeysOptions::default()).await {
                    Ok(r) => findings.push(big_keys_finding(&r, &t)),
                    Err(e) => findings.push(unknown(
                        "redis.big-keys",
                        &t,
                        format!("cannot scan for big keys: {e}"),
                    )),
                }
                retarget(findings, &t)
            },
        ));
    }

    // Backups: verify the newest, encryption on, and what retention would remove.
    let settings = tej_backup::BackupSettings::from_config(&ctx.config);
    for repo in &ctx.repositories {
        let target = format!("repo:{}", repo.name);
        let settings = match &settings {
            Ok(s) => s.clone(),
            Err(e) => {
                let f = Finding::new("backups.verify", Severity::Critical, e.to_string())
                    .target(&target);
                tasks.push(CheckTask::new(
                    "backups.verify",
                    format!("backup repository {}", repo.name),
                    target,
                    timeout,
                    async move { vec![f] },
                ));
                continue;
            }
        };
        let commands = ctx.commands.clone();
        let restore_test = ctx.options.restore_test.clone();
        tasks.push(repository_task(
            repo,
            "backups.verify",
            timeout,
            move |repo, t| async move {
                let mut out = Vec::new();
                // The newest database dump (what the restore test can restore), else the
                // newest backup of any kind: a nightly file backup taken after the dump
                // must not hide the dump from the weekly restore test.
                let newest = match list_backups(&repo).await {
                    Ok(b) => b
                        .iter()
                        .find(|b| b.kind == tej_backup::BackupKind::Logical)
                        .or_else(|| b.first())
                        .cloned(),
                    Err(e) => {
                        return vec![
                            Finding::new(
                                "backups.verify",
                                Severity::Critical,
                                format!("cannot list the backups: {e}"),
                            )
                            .target(&t),
                        ];
                    }
                };
                match &newest {
                    None => out.push(
                        Finding::new(
                            "backups.verify",
                            Severity::Critical,
                            "no finished backup to verify",
                        )
                        .target(&t),
                    ),
                    Some(b) => {
                        let opts = VerifyOptions {
                            restore_test,
                            ..settings.verify()
                        };
                        let clock = AsOf(now);
                        let id = b.id.to_string();
                        out.push(
                            match tej_backup::verify_backup(&*commands, &repo, &id, &opts, &clock)
                                .await
                            {
                                Ok(v) => Finding::ok(
                                    "backups.verify",
                                    format!(
                                        "newest backup {} verified: {} objects read back{}",
                                        v.id,
                                        v.objects.len(),
                                        v.restore_test
                                            .as_ref()
                                            .map(|r| format!(
                                                ", restored in {:.1} s and {} sanity queries passed",
                                                r.restore_secs,
                                                r.queries.len()
                                            ))
                                            .unwrap_or_default()
                                    ),
                                ),
                                Err(e) => Finding::new(
                                    "backups.verify",
                                    Severity::Critical,
                                    format!("newest backup {id} failed verification: {e}"),
                                ),
                            }
                            .target(&t),
                        );
                    }
                }
                if !plans {
                    return out;
                }
                let prune_opts = PruneOptions {
                    dry_run: true,
                    ..settings.prune()
                };
                out.push(
                    match tej_backup::prune(&repo, &prune_opts, &AsOf(now)).await {
                        Ok(p) => {
                            let expired: Vec<String> = p
                                .plan
                                .decisions
                                .iter()
                                .filter(|d| !d.keep)
                                .map(|d| d.id.to_string())
                                .collect();
                            let mut f = Finding::ok(
                                "cleanup.backups",
                                match &p.plan.blocked {
                                    Some(why) => format!("retention would remove nothing: {why}"),
                                    None => format!(
                                        "retention would remove {} of {} backups (dry run)",
                                        expired.len(),
                                        p.plan.decisions.len()
                                    ),
                                },
                            );
                            if !expired.is_empty() {
                                f = f.detail(expired.join("\n"));
                            }
                            f
                        }
                        Err(e) => Finding::new(
                            "cleanup.backups",
                            Severity::Unknown,
                            format!("cannot plan retention: {e}"),
                        ),
                    }
                    .target(&t),
                );
                out
            },
        ));
    }

    // Backup encryption on (part of the security review).
    for repo in &ctx.repositories {
        let target = format!("repo:{}", repo.name);
        let lazy = repo.repo.clone();
        let t = target.clone();
        let configured = ctx.config.backup.encryption.is_some();
        let remote = repo.name.starts_with("s3://");
        tasks.push(CheckTask::new(
            "security.backup-encryption",
            format!("backup repository {}", repo.name),
            target,
            timeout,
            async move {
                let newest = match lazy.get().await {
                    Ok(r) => list_backups(&r)
                        .await
                        .ok()
                        .and_then(|b| b.into_iter().next()),
                    Err(_) => None,
                };
                vec![encryption_finding(
                    configured,
                    remote,
                    newest.map(|b| b.encrypted),
                    &t,
                )]
            },
        ));
    }

    // 1.3 Disk cleanup plan for the log directories (dry run).
    let dirs: Vec<_> = ctx
        .logs
        .paths
        .iter()
        .filter(|p| p.is_dir())
        .cloned()
        .collect();
    if plans && !dirs.is_empty() {
        tasks.push(CheckTask::new(
            "cleanup.logs",
            "log files",
            "host",
            timeout,
            blocking("cleanup.logs", "host", move || {
                dirs.iter()
                    .map(|d| {
                        let mut opts = CleanupOptions::new(d, "*.log*", LOG_RETENTION_DAYS);
                        opts.now = Some(now);
                        let target = format!("host:{}", d.display());
                        match plan_cleanup(&opts) {
                            Ok(p) => Finding::ok(
                                "cleanup.logs",
                                format!(
                                    "cleanup would remove {} log files older than {} days under {} ({}; dry run)",
                                    p.delete.len(),
                                    LOG_RETENTION_DAYS,
                                    d.display(),
                                    tej_db::pg::human_bytes(p.bytes_freed as f64)
                                ),
                            )
                            .metric(Metric::new("cleanup_bytes", p.bytes_freed as f64, "B")),
                            Err(e) => Finding::new(
                                "cleanup.logs",
                                Severity::Unknown,
                                format!("cannot plan the cleanup of {}: {e}", d.display()),
                            ),
                        }
                        .target(target)
                    })
                    .collect()
            }),
        ));
    }

    // 2. Security review: application logs and the access log over the week.
    if !ctx.logs.paths.is_empty() {
        tasks.push(super::daily::log_review_task(
            "security.app-logs",
            ctx.logs.paths.clone(),
            LogReviewOptions::window(now, WEEK),
            timeout,
        ));
    }
    if let Some(log) = ctx.logs.access_log.clone() {
        let since = now.checked_sub(WEEK).ok();
        tasks.push(CheckTask::new(
            "security.access-log",
            "access log",
            "api",
            timeout,
            blocking(
                "security.access-log",
                "api",
                move || match analyze_access_log(&log, since, now) {
                    Ok(s) => security_findings(&s, "api"),
                    Err(e) => vec![unknown(
                        "security.access-log",
                        "api",
                        format!("cannot read the access log: {e}"),
                    )],
                },
            ),
        ));
    }
    tasks.extend(tls_tasks(ctx, timeout));
    tasks
}

/// Checks of the Sunday 15:00 security review (a subset of the weekly audit): logs, access
/// log, certificates, backup encryption.
pub fn is_security_check(check: &str) -> bool {
    check.starts_with("security.") || check.starts_with("tls.")
}

/// The Sunday 15:00 security review alone: failed logins, SQL-injection probes, rate-limit
/// hits and traffic anomalies in the logs, certificates, backup encryption.
pub async fn security_review(ctx: &RunContext, clock: &dyn Clock) -> Report {
    let now = clock.now();
    let tasks = weekly_tasks(ctx, now)
        .into_iter()
        .filter(|t| is_security_check(&t.check))
        .collect();
    Report {
        title: "security review".into(),
        findings: run_checks(tasks, ctx.options.runner).await,
    }
}

/// The weekly audit's checks at `clock`'s time, read-only: what the maintenance would do is
/// reported as dry runs (`cleanup.logs`, `cleanup.backups`). [`weekly_maintenance`] does it.
pub async fn weekly_audit(ctx: &RunContext, clock: &dyn Clock) -> Report {
    let now = clock.now();
    Report {
        title: WEEKLY_TITLE.into(),
        findings: run_checks(weekly_tasks(ctx, now), ctx.options.runner).await,
    }
}

/// Removes the backups past retention from one repository (GFS per series through
/// [`tej_backup::prune`], the PITR window kept), as a destructive step: the plan lists the
/// backups it deletes.
pub struct PruneBackupsStep {
    /// The repository.
    pub repo: Arc<Repository>,
    /// Its name in reports (`repo:<name>` is the target).
    pub name: String,
    /// The retention policy and PITR window (`dry_run` is set by plan and apply).
    pub options: PruneOptions,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
}

impl PruneBackupsStep {
    /// The prune of `repo` as tej.toml's `[backup]` says (retention, `pitr_window_days`).
    pub fn from_settings(
        repo: Arc<Repository>,
        name: impl Into<String>,
        settings: &tej_backup::BackupSettings,
        clock: Arc<dyn Clock>,
    ) -> PruneBackupsStep {
        PruneBackupsStep {
            repo,
            name: name.into(),
            options: settings.prune(),
            clock,
        }
    }

    async fn run(&self, dry_run: bool) -> Result<tej_backup::PruneReport, StepError> {
        let opts = PruneOptions {
            dry_run,
            ..self.options.clone()
        };
        Ok(tej_backup::prune(&self.repo, &opts, self.clock.as_ref()).await?)
    }
}

#[async_trait]
impl Step for PruneBackupsStep {
    fn name(&self) -> String {
        "backup-prune".into()
    }
    fn risk(&self) -> Risk {
        Risk::Destructive
    }
    fn target(&self) -> String {
        format!("repo:{}", self.name)
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let r = self.run(true).await?;
        Ok(Plan::of(self, prune_plan_lines(&r)))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = self.run(false).await?;
        let mut summary = format!(
            "kept {}, deleted {}, cleaned {} interrupted run(s)",
            r.plan.decisions.iter().filter(|d| d.keep).count(),
            r.deleted.len(),
            r.cleaned_runs.len()
        );
        if let Some(b) = &r.plan.blocked {
            summary.push_str(&format!("; nothing deleted: {b}"));
        }
        for id in &r.in_progress {
            summary.push_str(&format!("; running {id}: left alone"));
        }
        for t in &r.cleared_locks {
            summary.push_str(&format!("; removed the lock of {t}: its owner is gone"));
        }
        Ok(StepOutput {
            summary,
            data: serde_json::to_value(&r).unwrap_or_default(),
            ..StepOutput::default()
        })
    }
}

/// A prune's plan, one line per decision: `keep`/`delete`, the backup, its series and the
/// rules that decided; then what blocks deletion and the runs left alone.
fn prune_plan_lines(r: &tej_backup::PruneReport) -> Vec<String> {
    let mut lines: Vec<String> = r
        .plan
        .decisions
        .iter()
        .map(|d| {
            format!(
                "{:<6} {:<30} {:<28} {}",
                if d.keep { "keep" } else { "delete" },
                d.id.to_string(),
                d.series.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                d.rules.join("; ")
            )
        })
        .collect();
    if let Some(why) = &r.plan.blocked {
        lines.push(format!("delete nothing: {why}"));
    } else if r.plan.decisions.is_empty() {
        lines.push("delete nothing: the repository holds no backup".into());
    }
    for id in &r.in_progress {
        lines.push(format!("running {id}: left alone"));
    }
    lines
}

/// The weekly maintenance steps of the runbook's "Full System Audit", in its order:
/// `VACUUM ANALYZE` of every database (mutating), the 30-day cleanup of every log directory,
/// the Docker image prune (`docker image prune -af --filter until=168h`: never an image a
/// container uses or a rollback image) and the removal of backups past retention (all three
/// destructive). A failing step does not stop the others.
pub async fn weekly_maintenance_procedure(ctx: &RunContext, clock: Arc<dyn Clock>) -> Procedure {
    let now = clock.now();
    let mut p = Procedure::new("weekly-audit");
    for d in &ctx.databases {
        p = p.step_continue(VacuumStep {
            admin: d.admin.clone(),
            options: VacuumOptions::default(),
        });
    }
    for dir in ctx.logs.paths.iter().filter(|p| p.is_dir()) {
        let mut opts = CleanupOptions::from_config(&ctx.config, dir, "*.log*", LOG_RETENTION_DAYS);
        opts.now = Some(now);
        p = p.step_continue(CleanupStep::new(opts));
    }
    if let Some(c) = &ctx.compose {
        match c.docker.get().await {
            Ok(docker) => {
                p = p.step_continue(PruneImagesStep {
                    containers: docker.runtime.clone(),
                    images: docker.images.clone(),
                    clock: clock.clone(),
                    options: ImagePruneOptions::default(),
                })
            }
            Err(e) => {
                p = p.step_continue(UnavailableStep {
                    name: "docker-image-prune".into(),
                    target: format!("compose:{}", c.project.name),
                    risk: Risk::Destructive,
                    reason: format!("docker engine unreachable: {e}"),
                })
            }
        }
    }
    let settings = tej_backup::BackupSettings::from_config(&ctx.config);
    for r in &ctx.repositories {
        let settings = match &settings {
            Ok(s) => s,
            Err(e) => {
                p = p.step_continue(UnavailableStep {
                    name: "backup-prune".into(),
                    target: format!("repo:{}", r.name),
                    risk: Risk::Destructive,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        match r.repo.get().await {
            Ok(repo) => {
                p = p.step_continue(PruneBackupsStep::from_settings(
                    repo,
                    r.name.clone(),
                    settings,
                    clock.clone(),
                ))
            }
            Err(e) => {
                p = p.step_continue(UnavailableStep {
                    name: "backup-prune".into(),
                    target: format!("repo:{}", r.name),
                    risk: Risk::Destructive,
                    reason: format!("repository unreachable: {e}"),
                })
            }
        }
    }
    p
}

/// The weekly audit as the runbook does it: the maintenance steps of
/// [`weekly_maintenance_procedure`] run under `executor` (plan shown, `--yes` for the
/// destructive ones, the production window, the audit log), then the audit's checks. Each
/// step is one finding (`weekly-audit.<step>` on its target: applied, planned, refused or
/// failed) and replaces the audit's dry-run plan of the same work.
pub async fn weekly_maintenance(
    ctx: &RunContext,
    executor: &Executor,
    clock: Arc<dyn Clock>,
) -> Report {
    let now = clock.now();
    let procedure = weekly_maintenance_procedure(ctx, clock).await;
    let steps = executor.run(&procedure).await;
    let mut findings: Vec<Finding> = steps.findings().into_iter().cloned().collect();
    for s in &steps.steps {
        let (sev, what) = match &s.outcome {
            Outcome::Applied => (
                Severity::Ok,
                s.output
                    .as_ref()
                    .map(|o| o.summary.clone())
                    .unwrap_or_else(|| "applied".into()),
            ),
            Outcome::Planned => (
                Severity::Ok,
                format!("planned (dry run): {}", s.actions.join("; ")),
            ),
            Outcome::Refused { reason } => (Severity::Warning, format!("not done: {reason}")),
            Outcome::Failed { error } => (Severity::Critical, format!("failed: {error}")),
            Outcome::Skipped { reason } => (Severity::Warning, format!("skipped: {reason}")),
        };
        let mut f = Finding::new(format!("{}.{}", steps.procedure, s.step), sev, what)
            .target(s.target.clone());
        if !matches!(s.outcome, Outcome::Planned) && !s.actions.is_empty() {
            f = f.detail(s.actions.join("\n"));
        }
        findings.push(f);
    }
    let checks = weekly_tasks_with(ctx, now, false);
    findings.extend(run_checks(checks, ctx.options.runner).await);
    Report {
        title: WEEKLY_TITLE.into(),
        findings,
    }
}
