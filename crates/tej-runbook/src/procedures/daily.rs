//! The daily health check (the runbook's "System Health Check (Every Morning)"): services, recent
//! log review, host resources, PostgreSQL, Redis, backups completed (newest backup younger than
//! 26 h and verified, WAL archiving current), certificate expiry and the custom checks.
//!
//! Every part is a [`CheckTask`] run through [`run_checks`]: all at once, each with its own
//! timeout, bounded per target, so a dead component is one `Unknown`/`Critical` finding naming it
//! while every other part still reports.

use super::context::RunContext;
use super::support::{
    human_secs, redis_task, repository_task, retarget, tls_tasks, unknown, unreachable,
};
use crate::runner::{CheckTask, run_checks};
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use tej_backup::{BackupKind, BackupSummary, Inventory, WalFileName};
use tej_core::{Clock, Finding, Metric, Report, Severity, Threshold};
use tej_db::PgAdmin;
use tej_db::pg::{HealthOptions, check_health};
use tej_db::redis::{RedisThresholds, redis_health};
use tej_host::{LogReviewOptions, LogThresholds, ResourceThresholds};

/// Title of the daily report.
pub const DAILY_TITLE: &str = "daily health check";

/// The tasks of the daily check, in report order (also used by [`daily_health`]).
pub fn daily_tasks(ctx: &RunContext, now: Timestamp) -> Vec<CheckTask> {
    let timeout = ctx.options.check_timeout;
    let mut tasks = Vec::new();

    // 1. Services.
    if let Some(c) = &ctx.compose {
        let target = format!("compose:{}", c.project.name);
        let c = c.clone();
        let t = target.clone();
        let expected: Vec<String> = ctx
            .config
            .compose
            .as_ref()
            .map(|c| c.services.clone())
            .unwrap_or_default();
        tasks.push(CheckTask::new(
            "services.status",
            "docker",
            target,
            timeout,
            async move {
                let docker = match c.docker.get().await {
                    Ok(d) => d,
                    Err(e) => return vec![unreachable("services.status", &t, "docker engine", &e)],
                };
                match c
                    .project
                    .status(&*docker.runtime, &*docker.images, now)
                    .await
                {
                    Ok(s) => {
                        let mut findings = compose_findings(&s, &t);
                        for svc in &expected {
                            if !s.containers.iter().any(|x| &x.service == svc) {
                                findings.push(
                                    Finding::new(
                                        "docker.container",
                                        Severity::Critical,
                                        format!(
                                            "service {svc}: no container (removed, or never \
                                             created): [compose] services expects it"
                                        ),
                                    )
                                    .target(format!("{t}/{svc}")),
                                );
                            }
                        }
                        findings
                    }
                    Err(e) => vec![
                        Finding::new(
                            "services.status",
                            Severity::Critical,
                            format!(
                                "cannot read the status of compose project {}: {e}",
                                c.project.name
                            ),
                        )
                        .target(&t),
                    ],
                }
            },
        ));
    }

    // 2. Recent log review.
    if !ctx.logs.paths.is_empty() {
        tasks.push(log_review_task(
            "logs.review",
            ctx.logs.paths.clone(),
            LogReviewOptions::window(now, ctx.options.log_window),
            timeout,
        ));
    }

    // 3. Host resources.
    {
        let mut ropts = ctx.resources.clone();
        if let Some(types) = &ctx.host.exclude_fs_types {
            ropts.ignore_fs_types = types.clone();
        }
        let thresholds = ResourceThresholds::from(&ctx.host);
        tasks.push(CheckTask::new(
            "host.resources",
            "host",
            "host",
            timeout,
            blocking(
                "host.resources",
                "host",
                move || match tej_host::check_resources(&ropts) {
                    Ok(r) => qualify(tej_host::resource_findings(&r, &thresholds), "host"),
                    Err(e) => vec![unknown(
                        "host.resources",
                        "host",
                        format!("cannot read host resources: {e}"),
                    )],
                },
            ),
        ));
    }

    // 4. PostgreSQL, and its WAL archiving (part of "backups completed").
    for d in &ctx.databases {
        let target = format!("db:{}", d.name);
        let admin = d.admin.clone();
        let t = target.clone();
        tasks.push(CheckTask::new(
            "postgres.health",
            format!("postgres {}", d.name),
            target.clone(),
            timeout,
            async move {
                let r = check_health(&*admin, &HealthOptions::default()).await;
                retarget(r.findings, &t)
            },
        ));
        let admin = d.admin.clone();
        let t = target.clone();
        let max_age = ctx.options.wal_archive_max_age;
        tasks.push(CheckTask::new(
            "backups.wal-archiving",
            format!("postgres {}", d.name),
            target,
            timeout,
            async move { vec![wal_archiving(&*admin, &t, max_age).await] },
        ));
    }

    // 5. Redis.
    for r in &ctx.redis {
        tasks.push(redis_task(
            r,
            "redis.health",
            "redis.ping",
            timeout,
            |admin, t| async move {
                let (_, findings) = redis_health(&*admin, &RedisThresholds::default(), &t).await;
                retarget(findings, &t)
            },
        ));
    }

    // 6. Backups completed.
    for repo in &ctx.repositories {
        let max_age = ctx.options.backup_max_age;
        tasks.push(repository_task(
            repo,
            "backups.recent",
            timeout,
            move |repo, t| async move {
                match repo.inventory().await {
                    Ok(inv) => backup_freshness(&inv, &t, now, max_age),
                    Err(e) => vec![
                        Finding::new(
                            "backups.recent",
                            Severity::Critical,
                            format!("cannot list the backups: {e}"),
                        )
                        .target(&t),
                    ],
                }
            },
        ));
    }

    // 7. Certificates.
    tasks.extend(tls_tasks(ctx, timeout));

    // 8. Custom checks.
    tasks.extend(custom_check_tasks(ctx, |_| true));
    tasks
}

/// Tasks for the custom checks `select` keeps, one per check, targeted at what each queries.
pub fn custom_check_tasks(
    ctx: &RunContext,
    select: impl Fn(&tej_core::CustomCheckConfig) -> bool,
) -> Vec<CheckTask> {
    let opts = ctx.custom_check_options();
    let queries = ctx.query_runner();
    ctx.config
        .checks
        .iter()
        .filter(|c| select(c))
        .map(|check| {
            let target = if check.sql.is_some() {
                check
                    .database
                    .clone()
                    .or_else(|| opts.default_database.clone())
                    .map(|d| format!("db:{d}"))
            } else {
                check
                    .redis_instance
                    .clone()
                    .or_else(|| opts.default_redis.clone())
                    .map(|r| format!("redis:{r}"))
            }
            .unwrap_or_else(|| "custom".into());
            let check = check.clone();
            let opts = opts.clone();
            let queries = queries.clone();
            CheckTask::new(
                format!("custom.{}", check.name),
                target.clone(),
                target,
                // The check's own timeout answers first, with its own message.
                opts.timeout + std::time::Duration::from_secs(1),
                async move {
                    vec![
                        crate::custom_checks::evaluate_custom_check(&*queries, &check, &opts).await,
                    ]
                },
            )
        })
        .collect()
}

/// The findings of a Compose project's status, each container's on its own target
/// (`compose:<project>/<container>`) so several containers never share a label.
fn compose_findings(s: &tej_deploy::ProjectStatus, target: &str) -> Vec<Finding> {
    let mut findings = retarget(s.report().findings, target);
    for f in findings
        .iter_mut()
        .filter(|f| f.check == "docker.container")
    {
        if let Some(c) = s
            .containers
            .iter()
            .find(|c| f.summary.starts_with(&format!("{} {}:", c.service, c.name)))
        {
            f.target = format!("{target}/{}", c.name);
            f.detail = None;
        }
    }
    findings
}

/// The sections of the runbook's daily check that `ctx` does not configure, in report order
/// (the host is always checked).
pub fn unconfigured_sections(ctx: &RunContext) -> Vec<&'static str> {
    let mut out = Vec::new();
    if ctx.compose.is_none() {
        out.push("Compose services");
    }
    if ctx.logs.paths.is_empty() {
        out.push("application logs");
    }
    if ctx.databases.is_empty() {
        out.push("PostgreSQL");
    }
    if ctx.redis.is_empty() {
        out.push("Redis");
    }
    if ctx.repositories.is_empty() {
        out.push("backups");
    }
    if ctx.tls.is_empty() {
        out.push("TLS certificates");
    }
    out
}

/// One `Unknown` finding listing every unconfigured section (`not configured: Redis`), so a
/// fresh install cannot look all green; none when everything is configured.
pub fn coverage_finding(ctx: &RunContext) -> Option<Finding> {
    let missing = unconfigured_sections(ctx);
    (!missing.is_empty()).then(|| {
        Finding::new(
            "config.coverage",
            Severity::Unknown,
            format!("not configured: {}", missing.join(", ")),
        )
        .target("tej.toml")
        .detail("the runbook's daily check covers these too: add them to tej.toml")
    })
}

/// Runs a blocking closure on tokio's blocking pool; a panic becomes an `Unknown` finding.
/// The application logs reviewed over `opts`' window as check `check` on target `host`,
/// on a blocking thread (the daily review and the weekly security review).
pub(crate) fn log_review_task(
    check: &'static str,
    paths: Vec<std::path::PathBuf>,
    opts: LogReviewOptions,
    timeout: std::time::Duration,
) -> CheckTask {
    CheckTask::new(
        check,
        "log files",
        "host",
        timeout,
        blocking(check, "host", move || {
            match tej_host::review_logs(&paths, &opts) {
                Ok(r) => qualify(r.findings(&LogThresholds::default()), "host"),
                Err(e) => vec![unknown(
                    check,
                    "host",
                    format!("cannot review the logs: {e}"),
                )],
            }
        }),
    )
}

/// Sets every finding's target under `scope`, keeping what it is about: a finding on mount
/// `/var` of the host becomes `host:/var`, one on the pattern `error` `host:error`, one with no
/// target of its own (memory, load) `host`. Several runs of one check in a report therefore
/// never share a label.
pub(crate) fn qualify(findings: Vec<Finding>, scope: &str) -> Vec<Finding> {
    findings
        .into_iter()
        .map(|mut f| {
            f.target = if f.target.is_empty() || f.target == scope {
                scope.to_string()
            } else {
                format!("{scope}:{}", f.target)
            };
            f
        })
        .collect()
}

pub(crate) async fn blocking(
    check: &'static str,
    target: &'static str,
    f: impl FnOnce() -> Vec<Finding> + Send + 'static,
) -> Vec<Finding> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(_) => vec![unknown(check, target, format!("{check} did not complete"))],
    }
}

/// The daily health check over every target of `ctx`, at `clock`'s time.
pub async fn daily_health(ctx: &RunContext, clock: &dyn Clock) -> Report {
    let now = clock.now();
    let mut findings: Vec<Finding> = coverage_finding(ctx).into_iter().collect();
    findings.extend(run_checks(daily_tasks(ctx, now), ctx.options.runner).await);
    Report {
        title: DAILY_TITLE.into(),
        findings,
    }
}

/// A physical base backup is taken weekly (WAL archiving covers the days between): the newest
/// one is late after eight days.
pub const BASE_BACKUP_MAX_AGE: SignedDuration = SignedDuration::from_hours(8 * 24);

/// What one series of backups is, for [`backup_freshness`]: its name in findings, its
/// schedule's word and the age past which its newest backup is late.
fn series_of(
    b: &BackupSummary,
    daily_max_age: SignedDuration,
) -> (String, &'static str, SignedDuration) {
    match b.kind {
        BackupKind::Physical => (
            "the cluster (base backup)".into(),
            "weekly base backup",
            BASE_BACKUP_MAX_AGE.max(daily_max_age),
        ),
        BackupKind::Files => ("files".into(), "daily file backup", daily_max_age),
        _ => (
            b.database.clone().unwrap_or_else(|| "a database".into()),
            "daily backup",
            daily_max_age,
        ),
    }
}

fn human_limit(d: SignedDuration) -> String {
    let h = d.as_secs_f64() / 3600.0;
    if h >= 48.0 && (h / 24.0).fract() == 0.0 {
        format!("{:.0} days", h / 24.0)
    } else {
        format!("{h:.0} h")
    }
}

/// "Backups completed" for one repository: per kind of backup, and per database for dumps,
/// the newest backup must be younger than its schedule allows (dumps and file backups
/// `max_age`, the daily 26 h; base backups [`BASE_BACKUP_MAX_AGE`]) and verified good. Only
/// the kinds the repository holds are judged: no file backups, no finding about them.
/// Target `target`.
pub fn backup_freshness(
    inv: &Inventory,
    target: &str,
    now: Timestamp,
    max_age: SignedDuration,
) -> Vec<Finding> {
    let mut newest: BTreeMap<(u8, String), (&BackupSummary, &'static str, SignedDuration)> =
        BTreeMap::new();
    for b in &inv.backups {
        let (what, schedule, limit) = series_of(b, max_age);
        let order = match b.kind {
            BackupKind::Physical => 1,
            BackupKind::Files => 2,
            _ => 0,
        };
        match newest.get(&(order, what.clone())) {
            Some((cur, _, _)) if cur.finished_at >= b.finished_at => {}
            _ => {
                newest.insert((order, what), (b, schedule, limit));
            }
        }
    }
    if newest.is_empty() {
        let mut f = Finding::new(
            "backups.recent",
            Severity::Critical,
            "no finished backup in the repository",
        )
        .target(target);
        if let Some(run) = inv.incomplete.first() {
            f = f.detail(format!(
                "last run {} did not finish{}",
                run.id,
                run.failure
                    .as_ref()
                    .map(|r| format!(": {}", r.reason))
                    .unwrap_or_default()
            ));
        }
        return vec![f];
    }
    let mut out = Vec::new();
    for ((_, what), (b, schedule, max_age)) in newest {
        let limit_h = max_age.as_secs_f64() / 3600.0;
        let age_s = now.duration_since(b.finished_at).as_secs_f64();
        let age_h = age_s / 3600.0;
        let fresh = age_s < max_age.as_secs_f64();
        let (sev, verdict) = match (&b.verification, fresh) {
            (_, false) => (
                Severity::Critical,
                format!(
                    "older than {}: the last {schedule} did not complete",
                    human_limit(max_age)
                ),
            ),
            (None, true) => (Severity::Warning, "not verified yet".to_string()),
            (Some(v), true) if !v.ok => (
                Severity::Critical,
                format!(
                    "verification failed at {}: {}",
                    v.at,
                    v.error.as_deref().unwrap_or("unknown error")
                ),
            ),
            (Some(v), true) => (
                Severity::Ok,
                format!(
                    "verified at {}{}",
                    v.at,
                    if v.restore_tested {
                        " with a restore test"
                    } else {
                        ""
                    }
                ),
            ),
        };
        let mut f = Finding::new(
            "backups.recent",
            sev,
            format!(
                "newest backup of {what}: {} finished {} ago, {verdict}",
                b.id,
                human_secs(age_s)
            ),
        )
        .target(target)
        .metric(
            Metric::new("backup_age_hours", age_h, "h")
                .with_threshold(Threshold::above(limit_h, limit_h))
                .label("database", what.clone())
                .label("kind", b.kind.to_string()),
        );
        if let Some(run) = inv
            .incomplete
            .iter()
            .find(|r| r.id.as_str() > b.id.as_str())
        {
            f = f.detail(format!(
                "a later run {} did not finish{}",
                run.id,
                run.failure
                    .as_ref()
                    .map(|r| format!(": {}", r.reason))
                    .unwrap_or_default()
            ));
        }
        out.push(f);
    }
    out
}

/// `pg_stat_archiver` with ages measured by the server's clock (read by tej-db).
pub use tej_db::pg::ArchiverState;

/// WAL archiving current: on, not failing, and no completed segment waiting longer than
/// `max_age`. Failures within the last day that have since recovered are a warning.
pub fn wal_archiving_finding(s: &ArchiverState, target: &str, max_age: SignedDuration) -> Finding {
    let check = "backups.wal-archiving";
    let seg = u64::try_from(s.segment_size).unwrap_or(16 << 20);
    let segno = |n: &Option<String>| {
        n.as_deref()
            .and_then(|n| WalFileName::parse(n, seg).ok())
            .and_then(|w| w.segment())
    };
    // Completed segments not archived yet (the current one is still being written).
    let pending = match (segno(&s.current_wal), segno(&s.last_archived_wal)) {
        (Some(cur), Some(last)) => Some(cur.saturating_sub(last).saturating_sub(1)),
        (Some(cur), None) => Some(cur.saturating_sub(1)),
        _ => None,
    };
    let metrics = |f: Finding| {
        let mut f = f.target(target).metric(Metric::new(
            "wal_archive_failed_count",
            s.failed_count as f64,
            "",
        ));
        if let Some(a) = s.archived_age_s {
            f = f.metric(Metric::new("wal_last_archived_age_seconds", a, "s"));
        }
        if let Some(p) = pending {
            f = f.metric(Metric::new("wal_segments_pending", p as f64, ""));
        }
        f
    };
    if s.archive_mode == "off" {
        return metrics(Finding::new(
            check,
            Severity::Warning,
            "WAL archiving is off (archive_mode = off): no point-in-time recovery between backups",
        ));
    }
    if s.failing {
        return metrics(Finding::new(
            check,
            Severity::Critical,
            format!(
                "WAL archiving is failing: {} failures, last {} ago; WAL piles up in pg_wal",
                s.failed_count,
                s.failed_age_s.map(human_secs).unwrap_or_else(|| "?".into())
            ),
        ));
    }
    let stale = match (pending, s.archived_age_s) {
        (Some(p), Some(age)) => p > 0 && age > max_age.as_secs_f64(),
        (Some(p), None) => p > 0,
        _ => false,
    };
    if stale {
        return metrics(Finding::new(
            check,
            Severity::Critical,
            format!(
                "WAL archiving is behind: {} completed segment(s) waiting, last archived {}",
                pending.unwrap_or(0),
                s.archived_age_s
                    .map(|a| format!("{} ago", human_secs(a)))
                    .unwrap_or_else(|| "never".into())
            ),
        ));
    }
    if s.failed_age_s.is_some_and(|a| a < 86_400.0) {
        return metrics(Finding::new(
            check,
            Severity::Warning,
            format!(
                "WAL archiving recovered, but failed within the last day (last failure {} ago, {} failures in all)",
                s.failed_age_s.map(human_secs).unwrap_or_default(),
                s.failed_count
            ),
        ));
    }
    metrics(Finding::ok(
        check,
        format!(
            "WAL archiving current: {} archived, last {}{}",
            s.archived_count,
            s.last_archived_wal.as_deref().unwrap_or("-"),
            s.archived_age_s
                .map(|a| format!(" {} ago", human_secs(a)))
                .unwrap_or_default()
        ),
    ))
}

async fn wal_archiving(admin: &dyn PgAdmin, target: &str, max_age: SignedDuration) -> Finding {
    match tej_db::pg::archiver_state(admin).await {
        Ok(s) => wal_archiving_finding(&s, target, max_age),
        Err(e @ tej_db::DbError::UnexpectedReply(_)) => unknown(
            "backups.wal-archiving",
            target,
            format!("unexpected pg_stat_archiver reply: {e}"),
        ),
        Err(e) => Finding::new(
            "backups.wal-archiving",
            Severity::Critical,
            format!("cannot read pg_stat_archiver: {e}"),
        )
        .target(target),
    }
}
