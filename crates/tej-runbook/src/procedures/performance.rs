//! The performance check (the runbook's "11:00 AM & 5:00 PM IST"): API response time (p95) and
//! error rate against the runbook's targets (p95 < 500 ms, errors < 0.1 %), from the nginx access
//! log or, without one, from timed probes of the health endpoint; active users (a custom check
//! whose name mentions active users); database query performance (top slow queries); cache hit
//! ratios (PostgreSQL buffer cache, Redis keyspace).

use super::access_log::{AccessLogStats, analyze_access_log, percentile};
use super::context::{HttpProber, RunContext};
use super::daily::{blocking, custom_check_tasks};
use super::support::{redis_task, retarget, unknown, unreachable};
use crate::runner::{CheckTask, run_checks};
use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use tej_core::{Clock, Finding, Metric, Report, Severity, Threshold};
use tej_db::PgAdmin;
use tej_db::pg::{SlowQueryOptions, slow_queries};
use tej_db::redis::{InfoReport, RedisThresholds};

/// Title of the performance report.
pub const PERFORMANCE_TITLE: &str = "performance check";

/// The runbook's p95 target in ms: warning at the target, critical at twice it.
pub fn p95_threshold() -> Threshold {
    Threshold::above(500.0, 1000.0)
}

/// The runbook's error-rate target in percent of requests answered 5xx: warning at 0.1 %,
/// critical at 1 %.
pub fn error_rate_threshold() -> Threshold {
    Threshold::above(0.1, 1.0)
}

/// PostgreSQL buffer cache hit ratio: warning below 0.95, critical below 0.90.
pub fn pg_cache_threshold() -> Threshold {
    Threshold::below(0.95, 0.90)
}

/// Fewer lookups than this and a hit ratio says nothing.
pub const MIN_CACHE_LOOKUPS: f64 = 1000.0;

/// Findings on response time and error rate from access-log statistics (target `target`).
pub fn api_findings(s: &AccessLogStats, target: &str, source: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    if s.requests == 0 {
        out.push(unknown(
            "performance.api-requests",
            target,
            format!("no requests in {source} within the window"),
        ));
        return out;
    }
    match s.p95_ms {
        Some(p95) => out.push(
            Finding::measured(
                "performance.api-p95",
                "api_p95_ms",
                p95,
                "ms",
                p95_threshold(),
                format!(
                    "p95 response time {p95:.0} ms over {} timed requests (target < 500 ms; p50 {:.0} ms, p99 {:.0} ms)",
                    s.timed,
                    s.p50_ms.unwrap_or(f64::NAN),
                    s.p99_ms.unwrap_or(f64::NAN)
                ),
            )
            .target(target)
            .detail(format!("from {source}")),
        ),
        None => out.push(
            Finding::new(
                "performance.api-p95",
                Severity::Unknown,
                format!(
                    "{source} has no response times: add $request_time at the end of nginx's log_format"
                ),
            )
            .target(target),
        ),
    }
    let rate = s.error_rate_percent().unwrap_or(0.0);
    out.push(
        Finding::measured(
            "performance.error-rate",
            "api_error_rate_percent",
            rate,
            "%",
            error_rate_threshold(),
            format!(
                "{rate:.3}% of {} requests answered 5xx ({} errors; target < 0.1%)",
                s.requests, s.server_errors
            ),
        )
        .target(target)
        .metric(Metric::new("api_requests", s.requests as f64, "")),
    );
    out
}

/// Times `count` GETs of `url` one after the other and judges them like the access log.
pub async fn probe_health_url(
    prober: &dyn HttpProber,
    url: &str,
    count: usize,
    target: &str,
) -> Vec<Finding> {
    let mut stats = AccessLogStats::default();
    let mut times = Vec::new();
    let mut last_error = None;
    for _ in 0..count.max(1) {
        stats.requests += 1;
        match prober.get(url).await {
            Ok(t) => {
                if t.status >= 500 {
                    stats.server_errors += 1;
                }
                stats.timed += 1;
                times.push(t.elapsed.as_secs_f64() * 1000.0);
            }
            Err(e) => {
                stats.server_errors += 1;
                last_error = Some(e);
            }
        }
    }
    stats.p50_ms = percentile(&mut times, 50.0);
    stats.p95_ms = percentile(&mut times, 95.0);
    stats.p99_ms = percentile(&mut times, 99.0);
    let mut f = api_findings(
        &stats,
        target,
        &format!("{} timed probes of {url}", stats.requests),
    );
    if let Some(e) = last_error {
        for x in &mut f {
            if x.check == "performance.error-rate" {
                x.detail = Some(format!("last failure: {e}"));
            }
        }
    }
    f
}

/// The PostgreSQL buffer cache hit ratio of the connected database.
pub async fn pg_cache_hit(admin: &dyn PgAdmin, target: &str) -> Finding {
    let counts = match tej_db::pg::buffer_cache_counts(admin).await {
        Ok(c) => c,
        Err(e) => {
            return unreachable("performance.pg-cache-hit", target, "postgres", e);
        }
    };
    let Some(tej_db::pg::BufferCacheCounts { hits, reads }) = counts else {
        return unknown(
            "performance.pg-cache-hit",
            target,
            "pg_stat_database returned no numbers",
        );
    };
    cache_ratio_finding(
        "performance.pg-cache-hit",
        "pg_cache_hit_ratio",
        "PostgreSQL buffer cache",
        hits,
        reads,
        pg_cache_threshold(),
        target,
    )
}

/// A hit-ratio finding; with fewer than [`MIN_CACHE_LOOKUPS`] lookups it is Ok and says so.
pub fn cache_ratio_finding(
    check: &str,
    metric: &str,
    what: &str,
    hits: f64,
    misses: f64,
    threshold: Threshold,
    target: &str,
) -> Finding {
    let total = hits + misses;
    if total < MIN_CACHE_LOOKUPS {
        return Finding::ok(
            check,
            format!(
                "{what}: only {total:.0} lookups since the statistics were reset, too few to judge"
            ),
        )
        .target(target);
    }
    let ratio = hits / total;
    Finding::measured(
        check,
        metric,
        ratio,
        "",
        threshold,
        format!(
            "{what} hit ratio {:.2}% ({hits:.0} hits, {misses:.0} misses)",
            ratio * 100.0
        ),
    )
    .target(target)
}

/// The Redis keyspace hit ratio from `INFO`.
pub fn redis_cache_hit(info: &InfoReport, target: &str) -> Finding {
    match (info.stats.keyspace_hits, info.stats.keyspace_misses) {
        (Some(h), Some(m)) => cache_ratio_finding(
            "performance.redis-hit-ratio",
            "redis_keyspace_hit_ratio",
            "Redis keyspace",
            h as f64,
            m as f64,
            RedisThresholds::default().hit_ratio,
            target,
        ),
        _ => unknown(
            "performance.redis-hit-ratio",
            target,
            "INFO has no keyspace_hits/keyspace_misses",
        ),
    }
}

fn is_active_users_check(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace(['_', ' '], "-");
    n.contains("active-user") || n.contains("online-user") || n.contains("users-online")
}

/// The tasks of the performance check, in report order.
pub fn performance_tasks(
    ctx: &RunContext,
    now: Timestamp,
    window: SignedDuration,
) -> Vec<CheckTask> {
    let timeout = ctx.options.check_timeout;
    let mut tasks = Vec::new();

    // API response time and error rate.
    if let Some(log) = ctx.logs.access_log.clone() {
        let since = now.checked_sub(window).ok();
        tasks.push(CheckTask::new(
            "performance.api",
            "access log",
            "api",
            timeout,
            blocking("performance.api", "api", move || {
                match analyze_access_log(&log, since, now) {
                    Ok(s) => api_findings(&s, "api", &log.display().to_string()),
                    Err(e) => vec![unknown(
                        "performance.api",
                        "api",
                        format!("cannot read the access log: {e}"),
                    )],
                }
            }),
        ));
    } else if let Some(url) = ctx.compose.as_ref().and_then(|c| c.health_url.clone()) {
        let prober = ctx.http_prober.clone();
        let n = ctx.options.health_probes;
        tasks.push(CheckTask::new(
            "performance.api",
            "health endpoint",
            "api",
            timeout,
            async move { probe_health_url(&*prober, &url, n, "api").await },
        ));
    }

    // Active users.
    tasks.extend(custom_check_tasks(ctx, |c| is_active_users_check(&c.name)));

    // Database query performance and buffer cache.
    for d in &ctx.databases {
        let target = format!("db:{}", d.name);
        let admin: Arc<dyn PgAdmin> = d.admin.clone();
        let t = target.clone();
        tasks.push(CheckTask::new(
            "performance.slow-queries",
            format!("postgres {}", d.name),
            target.clone(),
            timeout,
            async move {
                let opts = SlowQueryOptions {
                    top: 5,
                    ..SlowQueryOptions::default()
                };
                match slow_queries(&*admin, &opts).await {
                    Ok(r) => retarget(r.findings, &t),
                    Err(e) => vec![unreachable("postgres.slow-queries", &t, "postgres", e)],
                }
            },
        ));
        let admin: Arc<dyn PgAdmin> = d.admin.clone();
        let t = target.clone();
        tasks.push(CheckTask::new(
            "performance.pg-cache-hit",
            format!("postgres {}", d.name),
            target,
            timeout,
            async move { vec![pg_cache_hit(&*admin, &t).await] },
        ));
    }

    // Redis keyspace hits.
    for r in &ctx.redis {
        tasks.push(redis_task(
            r,
            "performance.redis-hit-ratio",
            "performance.redis-hit-ratio",
            timeout,
            |admin, t| async move {
                match admin.info().await {
                    Ok(text) => vec![redis_cache_hit(&InfoReport::parse(&text), &t)],
                    Err(e) => vec![unreachable("performance.redis-hit-ratio", &t, "redis", e)],
                }
            },
        ));
    }
    tasks
}

/// The performance check at `clock`'s time; the access log is read over the last
/// [`RunOptions::performance_window`](super::context::RunOptions::performance_window)
/// (the runbook runs it twice a day: 6 h covers the hours before each run).
pub async fn performance_check(ctx: &RunContext, clock: &dyn Clock) -> Report {
    let now = clock.now();
    let window = ctx.options.performance_window;
    Report {
        title: PERFORMANCE_TITLE.into(),
        findings: run_checks(performance_tasks(ctx, now, window), ctx.options.runner).await,
    }
}

/// The Sunday 16:00 performance optimisation review: the top 10 slow queries of each database
/// and the cache hit ratios (PostgreSQL buffer cache, Redis keyspace).
pub async fn performance_optimization(ctx: &RunContext, clock: &dyn Clock) -> Report {
    let now = clock.now();
    let timeout = ctx.options.check_timeout;
    let mut tasks: Vec<CheckTask> = performance_tasks(ctx, now, ctx.options.performance_window)
        .into_iter()
        .filter(|t| t.check.ends_with("cache-hit") || t.check.ends_with("hit-ratio"))
        .collect();
    for d in &ctx.databases {
        let target = format!("db:{}", d.name);
        let admin: Arc<dyn PgAdmin> = d.admin.clone();
        let t = target.clone();
        tasks.push(CheckTask::new(
            "performance.slow-queries",
            format!("postgres {}", d.name),
            target,
            timeout,
            async move {
                match slow_queries(&*admin, &SlowQueryOptions::default()).await {
                    Ok(r) => retarget(r.findings, &t),
                    Err(e) => vec![unreachable("postgres.slow-queries", &t, "postgres", e)],
                }
            },
        ));
    }
    Report {
        title: "performance optimization".into(),
        findings: run_checks(tasks, ctx.options.runner).await,
    }
}
