//! `REINDEX INDEX CONCURRENTLY` only where it pays: indexes above a bloat threshold, with
//! `lock_timeout` and retries, a free-disk check first, and cleanup of `_ccnew` leftovers.

use super::Sql;
use super::bloat::{BloatMethod, BloatOptions, bloat_report};
use super::util::human_bytes;
use super::{DbError, PgAdmin, PgParam, SessionLimits};
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tej_core::{Backoff, Finding, Plan, Risk, Severity, Step, StepError, StepOutput, retry};

/// Options of a bloat-driven reindex.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReindexOptions {
    /// Reindex indexes wasting at least this percent (measured when pgstattuple is installed).
    pub bloat_percent: f64,
    /// Ignore indexes smaller than this (bytes).
    pub min_bytes: i64,
    /// `lock_timeout` of each attempt.
    pub lock_timeout: Duration,
    /// `statement_timeout` of each attempt (none: unlimited).
    pub statement_timeout: Option<Duration>,
    /// Retries of attempts that hit `lock_timeout`.
    #[serde(skip)]
    pub backoff: Backoff,
    /// Free bytes must exceed the index size times this factor.
    pub disk_headroom: f64,
    /// Free bytes on the database host when tej cannot measure them (remote server).
    pub free_disk_bytes: Option<u64>,
}

impl Default for ReindexOptions {
    fn default() -> Self {
        ReindexOptions {
            bloat_percent: 20.0,
            min_bytes: 1024 * 1024,
            lock_timeout: Duration::from_secs(5),
            statement_timeout: None,
            backoff: Backoff {
                max_attempts: 3,
                initial: Duration::from_secs(2),
                max_delay: Duration::from_secs(30),
                factor: 2.0,
                jitter: false,
            },
            disk_headroom: 1.2,
            free_disk_bytes: None,
        }
    }
}

/// An index chosen for rebuilding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReindexCandidate {
    /// Qualified index name.
    pub index: String,
    /// Its table.
    pub table: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Wasted percent.
    pub wasted_percent: f64,
    /// Whether the figure was measured (pgstatindex) or estimated.
    pub measured: bool,
}

/// How rebuilding one index went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReindexResult {
    /// The index.
    pub index: String,
    /// Size before.
    pub bytes_before: i64,
    /// Size after (when rebuilt).
    pub bytes_after: Option<i64>,
    /// Attempts made.
    pub attempts: u32,
    /// `reindexed`, `failed` or `skipped`.
    pub outcome: String,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
}

/// What a reindex run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReindexReport {
    /// The indexes chosen.
    pub candidates: Vec<ReindexCandidate>,
    /// Per index.
    pub results: Vec<ReindexResult>,
    /// Invalid `_ccnew` leftovers dropped.
    pub leftovers_dropped: Vec<String>,
    /// Bytes freed in total.
    pub bytes_freed: i64,
    /// Findings.
    pub findings: Vec<Finding>,
}

pub(crate) const LEFTOVERS_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname) AS index \
 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE NOT i.indisvalid AND c.relname ~ '_ccnew[0-9]*$' ORDER BY 1";

pub(crate) const INDEX_SIZE_SQL: &str = "SELECT pg_relation_size(to_regclass($1::text))::int8 AS bytes, format('%I.%I', n.nspname, c.relname) AS quoted \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1::text)";

/// Indexes worth rebuilding, worst first.
pub async fn reindex_candidates<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &ReindexOptions,
) -> Result<Vec<ReindexCandidate>, DbError> {
    let bloat = bloat_report(
        admin,
        &BloatOptions {
            min_bytes: opts.min_bytes,
            confirm_top: 20,
            ..BloatOptions::default()
        },
    )
    .await?;
    let mut v: Vec<ReindexCandidate> = bloat
        .indexes
        .iter()
        .filter(|b| b.bytes >= opts.min_bytes && b.wasted_percent() >= opts.bloat_percent)
        .map(|b| ReindexCandidate {
            index: b.relation.clone(),
            table: b.table.clone(),
            bytes: b.bytes,
            wasted_percent: b.wasted_percent(),
            measured: b.method != BloatMethod::Estimate,
        })
        .collect();
    v.sort_by(|a, b| b.wasted_percent.total_cmp(&a.wasted_percent));
    Ok(v)
}

/// Drops invalid `_ccnew` indexes left by failed `REINDEX CONCURRENTLY` runs.
pub async fn drop_reindex_leftovers<A: PgAdmin + ?Sized>(
    admin: &A,
    lock_timeout: Duration,
) -> Result<Vec<String>, DbError> {
    let rows = admin.query(Sql::new(LEFTOVERS_SQL), &[]).await?;
    let mut dropped = Vec::new();
    for r in &rows {
        let idx = r.str("index")?;
        admin
            .maintenance(
                Sql::owned(format!("DROP INDEX CONCURRENTLY IF EXISTS {idx}")),
                SessionLimits {
                    statement_timeout: None,
                    lock_timeout: Some(lock_timeout),
                },
            )
            .await?;
        dropped.push(idx);
    }
    Ok(dropped)
}

async fn index_size<A: PgAdmin + ?Sized>(admin: &A, index: &str) -> Result<(i64, String), DbError> {
    let rows = admin
        .query(Sql::new(INDEX_SIZE_SQL), &[PgParam::Text(index.into())])
        .await?;
    let r = rows
        .first()
        .ok_or_else(|| DbError::InvalidConfig(format!("no such index: {index}")))?;
    Ok((r.i64("bytes")?, r.str("quoted")?))
}

/// Rebuilds one index concurrently with retries on lock timeouts; cleans up after failures.
pub async fn reindex_index<A: PgAdmin + ?Sized>(
    admin: &A,
    index: &str,
    opts: &ReindexOptions,
) -> ReindexResult {
    let (bytes_before, quoted) = match index_size(admin, index).await {
        Ok(v) => v,
        Err(e) => {
            return ReindexResult {
                index: index.into(),
                bytes_before: 0,
                bytes_after: None,
                attempts: 0,
                outcome: "failed".into(),
                reason: Some(e.to_string()),
            };
        }
    };
    let skipped = |reason: String| ReindexResult {
        index: index.into(),
        bytes_before,
        bytes_after: None,
        attempts: 0,
        outcome: "skipped".into(),
        reason: Some(reason),
    };
    let free = match admin.free_disk_bytes().await {
        Ok(Some(f)) => Some(f),
        Ok(None) => opts.free_disk_bytes,
        Err(e) => return skipped(format!("cannot measure free disk space: {e}")),
    };
    let needed = (bytes_before as f64 * opts.disk_headroom) as u64;
    match free {
        None => {
            return skipped(
                "free disk space on the database host is unknown (remote server or data_directory hidden); check df there and pass it as free_disk_bytes".into(),
            );
        }
        Some(f) if f < needed => {
            return skipped(format!(
                "only {} free, rebuilding needs about {}",
                human_bytes(f as f64),
                human_bytes(needed as f64)
            ));
        }
        Some(_) => {}
    }
    let limits = SessionLimits {
        statement_timeout: opts.statement_timeout,
        lock_timeout: Some(opts.lock_timeout),
    };
    let sql = format!("REINDEX INDEX CONCURRENTLY {quoted}");
    let mut attempts = 0u32;
    let result = retry(
        opts.backoff,
        |n| {
            attempts = n;
            let sql = sql.clone();
            async move {
                let r = admin.maintenance(Sql::owned(sql.clone()), limits).await;
                if r.is_err() {
                    // A failed concurrent rebuild leaves an invalid _ccnew index behind.
                    let _ = drop_reindex_leftovers(admin, opts.lock_timeout).await;
                }
                r
            }
        },
        |n, e| tracing::warn!(index, attempt = n, error = %e, "REINDEX CONCURRENTLY failed; retrying"),
    )
    .await;
    match result {
        Ok(_) => ReindexResult {
            index: index.into(),
            bytes_before,
            bytes_after: index_size(admin, index).await.ok().map(|v| v.0),
            attempts,
            outcome: "reindexed".into(),
            reason: None,
        },
        Err(e) => ReindexResult {
            index: index.into(),
            bytes_before,
            bytes_after: None,
            attempts,
            outcome: "failed".into(),
            reason: Some(e.to_string()),
        },
    }
}

/// Finds bloated indexes and rebuilds them one at a time.
pub async fn reindex_bloated<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &ReindexOptions,
) -> Result<ReindexReport, DbError> {
    let mut leftovers_dropped = drop_reindex_leftovers(admin, opts.lock_timeout).await?;
    let candidates = reindex_candidates(admin, opts).await?;
    let mut results = Vec::new();
    for c in &candidates {
        results.push(reindex_index(admin, &c.index, opts).await);
    }
    leftovers_dropped.extend(drop_reindex_leftovers(admin, opts.lock_timeout).await?);
    let bytes_freed: i64 = results
        .iter()
        .filter_map(|r| r.bytes_after.map(|a| r.bytes_before - a))
        .sum();
    let mut findings = Vec::new();
    for r in &results {
        let (sev, summary) = match r.outcome.as_str() {
            "reindexed" => (
                Severity::Ok,
                format!(
                    "rebuilt {}: {} -> {}",
                    r.index,
                    human_bytes(r.bytes_before as f64),
                    human_bytes(r.bytes_after.unwrap_or(0) as f64)
                ),
            ),
            "skipped" => (
                Severity::Warning,
                format!("skipped {}: {}", r.index, r.reason.as_deref().unwrap_or("")),
            ),
            _ => (
                Severity::Critical,
                format!(
                    "REINDEX of {} failed after {} attempts: {}",
                    r.index,
                    r.attempts,
                    r.reason.as_deref().unwrap_or("")
                ),
            ),
        };
        findings.push(Finding::new("postgres.reindex", sev, summary).target(&r.index));
    }
    if results.is_empty() {
        findings.push(Finding::ok(
            "postgres.reindex",
            format!(
                "no index wastes {}% or more; nothing rebuilt",
                opts.bloat_percent
            ),
        ));
    }
    Ok(ReindexReport {
        candidates,
        results,
        leftovers_dropped,
        bytes_freed,
        findings,
    })
}

/// The bloat-driven reindex as a mutating step (concurrent rebuilds do not block writes).
pub struct ReindexStep {
    /// The database.
    pub admin: Arc<dyn PgAdmin>,
    /// Options.
    pub options: ReindexOptions,
}

#[async_trait]
impl Step for ReindexStep {
    fn name(&self) -> String {
        "reindex-concurrently".into()
    }
    fn risk(&self) -> Risk {
        Risk::Mutating
    }
    fn target(&self) -> String {
        self.admin.target()
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        let c = reindex_candidates(self.admin.as_ref(), &self.options).await?;
        let mut actions: Vec<String> = c
            .iter()
            .map(|c| {
                format!(
                    "REINDEX INDEX CONCURRENTLY {} ({}, {:.0}% wasted{})",
                    c.index,
                    human_bytes(c.bytes as f64),
                    c.wasted_percent,
                    if c.measured { "" } else { ", estimated" }
                )
            })
            .collect();
        if actions.is_empty() {
            actions.push(format!(
                "nothing: no index wastes {}% or more",
                self.options.bloat_percent
            ));
        }
        Ok(Plan::of(self, actions))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = reindex_bloated(self.admin.as_ref(), &self.options).await?;
        Ok(StepOutput {
            summary: format!(
                "{} indexes rebuilt, {} freed",
                r.results
                    .iter()
                    .filter(|r| r.outcome == "reindexed")
                    .count(),
                human_bytes(r.bytes_freed as f64)
            ),
            findings: r.findings.clone(),
            data: serde_json::to_value(&r).unwrap_or(serde_json::Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::{MockPgAdmin, PgRow, PgValue};
    use std::sync::Mutex;

    fn size_row(bytes: i64) -> Vec<PgRow> {
        vec![PgRow::from_pairs([
            ("bytes", PgValue::Int(bytes)),
            ("quoted", "public.i".into()),
        ])]
    }

    #[tokio::test(start_paused = true)]
    async fn retries_lock_timeouts_and_cleans_leftovers() {
        let mut m = MockPgAdmin::new();
        let sizes = Mutex::new(vec![size_row(4 << 20), size_row(1 << 20)]);
        m.expect_query().returning(move |sql, _| {
            if sql == INDEX_SIZE_SQL {
                let mut s = sizes.lock().unwrap();
                Ok(if s.len() > 1 {
                    s.remove(0)
                } else {
                    s[0].clone()
                })
            } else if sql == LEFTOVERS_SQL {
                Ok(vec![PgRow::from_pairs([("index", "public.i_ccnew")])])
            } else {
                panic!("unexpected query {sql}")
            }
        });
        m.expect_free_disk_bytes().returning(|| Ok(Some(1 << 30)));
        let calls = Mutex::new(Vec::<String>::new());
        let log = Arc::new(calls);
        let log2 = log.clone();
        let attempt = Mutex::new(0);
        m.expect_maintenance().returning(move |sql, limits| {
            assert_eq!(limits.lock_timeout, Some(Duration::from_secs(5)));
            log2.lock().unwrap().push(sql.to_string());
            if sql.starts_with("REINDEX") {
                let mut a = attempt.lock().unwrap();
                *a += 1;
                if *a < 3 {
                    return Err(DbError::Timeout {
                        what: "waiting for a lock (lock_timeout)".into(),
                    });
                }
            }
            Ok(0)
        });
        let r = reindex_index(&m, "public.i", &ReindexOptions::default()).await;
        assert_eq!(r.outcome, "reindexed", "{r:?}");
        assert_eq!(r.attempts, 3);
        assert_eq!(r.bytes_before, 4 << 20);
        assert_eq!(r.bytes_after, Some(1 << 20));
        let calls = log.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                "REINDEX INDEX CONCURRENTLY public.i",
                "DROP INDEX CONCURRENTLY IF EXISTS public.i_ccnew",
                "REINDEX INDEX CONCURRENTLY public.i",
                "DROP INDEX CONCURRENTLY IF EXISTS public.i_ccnew",
                "REINDEX INDEX CONCURRENTLY public.i",
            ]
        );
    }

    #[tokio::test]
    async fn refuses_without_enough_free_disk() {
        let mut m = MockPgAdmin::new();
        m.expect_query().returning(|_, _| Ok(size_row(100 << 20)));
        m.expect_free_disk_bytes().returning(|| Ok(Some(50 << 20)));
        m.expect_maintenance().never();
        let r = reindex_index(&m, "public.i", &ReindexOptions::default()).await;
        assert_eq!(r.outcome, "skipped");
        assert!(r.reason.unwrap().contains("free"));
        // unknown free space and no figure from the operator: skipped too
        let mut m = MockPgAdmin::new();
        m.expect_query().returning(|_, _| Ok(size_row(100 << 20)));
        m.expect_free_disk_bytes().returning(|| Ok(None));
        m.expect_maintenance().never();
        let r = reindex_index(&m, "public.i", &ReindexOptions::default()).await;
        assert_eq!(r.outcome, "skipped");
        assert!(r.reason.unwrap().contains("unknown"));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let mut m = MockPgAdmin::new();
        m.expect_query().returning(|sql, _| {
            Ok(if sql == LEFTOVERS_SQL {
                vec![]
            } else {
                size_row(1 << 20)
            })
        });
        m.expect_free_disk_bytes().returning(|| Ok(Some(1 << 30)));
        m.expect_maintenance().times(1).returning(|_, _| {
            Err(DbError::PermissionDenied {
                message: "must be owner of index i".into(),
                privilege: "ownership".into(),
            })
        });
        let r = reindex_index(&m, "public.i", &ReindexOptions::default()).await;
        assert_eq!(r.outcome, "failed");
        assert_eq!(r.attempts, 1);
        assert!(r.reason.unwrap().contains("must be owner"));
    }
}
