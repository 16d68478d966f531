//! Slow queries from `pg_stat_statements`: mean and total time, calls, rows and share of the total.
//! A missing extension is a finding that says how to enable it, not an error.

use super::bloat::extension_installed;
use super::util::truncate;
use super::{DbError, PgAdmin, PgParam, Sql};
use serde::Serialize;
use tej_core::{Finding, Metric, Severity, Threshold};

/// How to rank statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlowQueryOrder {
    /// Slowest on average (the runbook's order).
    #[default]
    MeanTime,
    /// Most time in total (what costs the server most).
    TotalTime,
}

/// Options of the slow-query report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowQueryOptions {
    /// How many statements to list.
    pub top: i64,
    /// Ranking.
    pub order: SlowQueryOrder,
    /// Mean execution time that deserves a finding, in milliseconds.
    pub mean_ms: Threshold,
    /// Statements called fewer times are listed but raise no finding.
    pub min_calls: i64,
}

impl Default for SlowQueryOptions {
    fn default() -> Self {
        SlowQueryOptions {
            top: 10,
            order: SlowQueryOrder::MeanTime,
            mean_ms: Threshold::above(500.0, 5000.0),
            min_calls: 5,
        }
    }
}

/// One normalized statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowQuery {
    /// `queryid`.
    pub query_id: String,
    /// Normalized text, shortened.
    pub query: String,
    /// Role.
    pub user: String,
    /// Database.
    pub database: String,
    /// Executions.
    pub calls: i64,
    /// Total execution time, ms.
    pub total_ms: f64,
    /// Mean execution time, ms.
    pub mean_ms: f64,
    /// Rows returned or affected.
    pub rows: i64,
    /// Percent of all statements' execution time.
    pub share_percent: f64,
}

/// Slow queries, or why there are none to show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowQueryReport {
    /// True when pg_stat_statements could be read.
    pub available: bool,
    /// Statements in the requested order.
    pub queries: Vec<SlowQuery>,
    /// Findings (including how to enable the extension when missing).
    pub findings: Vec<Finding>,
}

/// How to turn pg_stat_statements on.
pub const ENABLE_PG_STAT_STATEMENTS: &str = "add pg_stat_statements to shared_preload_libraries in postgresql.conf \
(shared_preload_libraries = 'pg_stat_statements'), restart PostgreSQL, then run CREATE EXTENSION pg_stat_statements; in this database";

pub(crate) const SLOW_SQL_MEAN: &str = "SELECT s.queryid::text AS query_id, left(s.query, 2000) AS query, \
 coalesce(r.rolname::text, '') AS user_name, coalesce(d.datname::text, '') AS database, s.calls::int8 AS calls, \
 s.total_exec_time::float8 AS total_ms, s.mean_exec_time::float8 AS mean_ms, s.rows::int8 AS rows, \
 coalesce(100 * s.total_exec_time / nullif(sum(s.total_exec_time) OVER (), 0), 0)::float8 AS share_percent \
 FROM pg_stat_statements s LEFT JOIN pg_roles r ON r.oid = s.userid LEFT JOIN pg_database d ON d.oid = s.dbid \
 ORDER BY s.mean_exec_time DESC LIMIT $1::int8";

pub(crate) const SLOW_SQL_TOTAL: &str = "SELECT s.queryid::text AS query_id, left(s.query, 2000) AS query, \
 coalesce(r.rolname::text, '') AS user_name, coalesce(d.datname::text, '') AS database, s.calls::int8 AS calls, \
 s.total_exec_time::float8 AS total_ms, s.mean_exec_time::float8 AS mean_ms, s.rows::int8 AS rows, \
 coalesce(100 * s.total_exec_time / nullif(sum(s.total_exec_time) OVER (), 0), 0)::float8 AS share_percent \
 FROM pg_stat_statements s LEFT JOIN pg_roles r ON r.oid = s.userid LEFT JOIN pg_database d ON d.oid = s.dbid \
 ORDER BY s.total_exec_time DESC LIMIT $1::int8";

fn missing(summary: String) -> SlowQueryReport {
    SlowQueryReport {
        available: false,
        queries: Vec::new(),
        findings: vec![
            Finding::new("postgres.slow_queries", Severity::Warning, summary)
                .detail(format!("to enable it: {ENABLE_PG_STAT_STATEMENTS}")),
        ],
    }
}

/// Lists the slowest statements.
pub async fn slow_queries<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &SlowQueryOptions,
) -> Result<SlowQueryReport, DbError> {
    if !extension_installed(admin, "pg_stat_statements").await? {
        return Ok(missing(
            "pg_stat_statements is not installed in this database, so slow queries cannot be listed".into(),
        ));
    }
    let sql = match opts.order {
        SlowQueryOrder::MeanTime => SLOW_SQL_MEAN,
        SlowQueryOrder::TotalTime => SLOW_SQL_TOTAL,
    };
    let rows = match admin.query(Sql::new(sql), &[PgParam::Int(opts.top)]).await {
        Ok(r) => r,
        // 55000: "pg_stat_statements must be loaded via shared_preload_libraries"
        Err(DbError::Server { code, message }) if code == "55000" => {
            return Ok(missing(format!(
                "pg_stat_statements is installed but not loaded: {message}"
            )));
        }
        Err(e) => return Err(e),
    };
    let queries = rows
        .iter()
        .map(|r| {
            Ok(SlowQuery {
                query_id: r.str("query_id")?,
                query: truncate(
                    &tej_core::secret::redact_url_passwords(&r.str("query")?),
                    2000,
                ),
                user: r.str("user_name")?,
                database: r.str("database")?,
                calls: r.i64("calls")?,
                total_ms: r.f64("total_ms")?,
                mean_ms: r.f64("mean_ms")?,
                rows: r.i64("rows")?,
                share_percent: r.f64("share_percent")?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    Ok(SlowQueryReport {
        available: true,
        findings: slow_findings(&queries, opts),
        queries,
    })
}

pub(crate) fn slow_findings(queries: &[SlowQuery], opts: &SlowQueryOptions) -> Vec<Finding> {
    let mut v = Vec::new();
    for q in queries.iter().filter(|q| q.calls >= opts.min_calls) {
        let sev = opts.mean_ms.evaluate(q.mean_ms);
        if sev == Severity::Ok {
            continue;
        }
        v.push(
            Finding::new(
                "postgres.slow_queries",
                sev,
                format!(
                    "query {} averages {:.1} ms over {} calls ({:.1}% of all execution time): {}",
                    q.query_id,
                    q.mean_ms,
                    q.calls,
                    q.share_percent,
                    truncate(&q.query, 120)
                ),
            )
            .target(format!("queryid:{}", q.query_id))
            .metric(Metric::new("mean_exec_ms", q.mean_ms, "ms").with_threshold(opts.mean_ms))
            .metric(Metric::new("calls", q.calls as f64, "count")),
        );
    }
    if v.is_empty() {
        v.push(Finding::ok(
            "postgres.slow_queries",
            format!(
                "{} statements listed; none averages above the threshold",
                queries.len()
            ),
        ));
    }
    v
}
