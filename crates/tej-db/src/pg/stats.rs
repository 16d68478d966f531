//! Counters the runbooks read directly: the WAL archiver's state and the buffer cache.

use super::{DbError, PgAdmin, PgValue, Sql};
use serde::Serialize;

/// `pg_stat_archiver` with ages measured by the server's clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiverState {
    /// `archive_mode`.
    pub archive_mode: String,
    /// WAL files archived since the statistics were reset.
    pub archived_count: i64,
    /// Last WAL file archived.
    pub last_archived_wal: Option<String>,
    /// Seconds since the last successful archive.
    pub archived_age_s: Option<f64>,
    /// Failed attempts since the statistics were reset.
    pub failed_count: i64,
    /// Seconds since the last failure.
    pub failed_age_s: Option<f64>,
    /// The last attempt failed (a failure after the last success).
    pub failing: bool,
    /// The WAL file being written (none on a standby).
    pub current_wal: Option<String>,
    /// `wal_segment_size` in bytes.
    pub segment_size: i64,
}

/// The query behind [`ArchiverState`].
pub const ARCHIVER_STATE_SQL: &str = "SELECT current_setting('archive_mode') AS archive_mode, \
 archived_count::int8 AS archived_count, last_archived_wal, \
 extract(epoch FROM now() - last_archived_time)::float8 AS archived_age_s, \
 failed_count::int8 AS failed_count, \
 extract(epoch FROM now() - last_failed_time)::float8 AS failed_age_s, \
 (last_failed_time IS NOT NULL AND (last_archived_time IS NULL OR last_failed_time > last_archived_time)) AS failing, \
 CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current_wal, \
 pg_size_bytes(current_setting('wal_segment_size'))::int8 AS segment_size \
 FROM pg_stat_archiver";

/// Reads [`ArchiverState`]. A reply of the wrong shape is [`DbError::UnexpectedReply`].
pub async fn archiver_state<A: PgAdmin + ?Sized>(admin: &A) -> Result<ArchiverState, DbError> {
    let rows = admin.query(Sql::new(ARCHIVER_STATE_SQL), &[]).await?;
    let r = rows
        .first()
        .ok_or_else(|| DbError::UnexpectedReply("pg_stat_archiver returned no row".into()))?;
    Ok(ArchiverState {
        archive_mode: r.str("archive_mode")?,
        archived_count: r.i64("archived_count")?,
        last_archived_wal: r.opt_str("last_archived_wal")?,
        archived_age_s: r.opt_f64("archived_age_s")?,
        failed_count: r.i64("failed_count")?,
        failed_age_s: r.opt_f64("failed_age_s")?,
        failing: matches!(r.get("failing"), Some(PgValue::Bool(true))),
        current_wal: r.opt_str("current_wal")?,
        segment_size: r.i64("segment_size")?,
    })
}

/// Buffer cache lookups of the connected database since its statistics were reset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BufferCacheCounts {
    /// Blocks found in shared buffers (`blks_hit`).
    pub hits: f64,
    /// Blocks read from the file system (`blks_read`).
    pub reads: f64,
}

/// The query behind [`BufferCacheCounts`].
pub const BUFFER_CACHE_SQL: &str = "SELECT coalesce(sum(blks_hit), 0)::float8 AS hit, coalesce(sum(blks_read), 0)::float8 AS read \
                       FROM pg_stat_database WHERE datname = current_database()";

/// Reads [`BufferCacheCounts`]; `None` when the server returned no numbers.
pub async fn buffer_cache_counts<A: PgAdmin + ?Sized>(
    admin: &A,
) -> Result<Option<BufferCacheCounts>, DbError> {
    let rows = admin.query(Sql::new(BUFFER_CACHE_SQL), &[]).await?;
    let get = |c: &str| {
        rows.first()
            .and_then(|r| r.get(c))
            .and_then(PgValue::as_f64)
    };
    Ok(match (get("hit"), get("read")) {
        (Some(hits), Some(reads)) => Some(BufferCacheCounts { hits, reads }),
        _ => None,
    })
}

/// What an operator's query (a custom check's `sql`, a sanity query of `tej.toml`) returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredQuery {
    /// Rows returned.
    pub rows: usize,
    /// The first column of the first row (none without rows or columns).
    pub first: Option<PgValue>,
}

/// Runs SQL an operator wrote in `tej.toml` (custom checks, sanity queries) as a read query:
/// the one way SQL from outside tej-db reaches the server.
pub async fn run_configured_query<A: PgAdmin + ?Sized>(
    admin: &A,
    sql: &str,
) -> Result<ConfiguredQuery, DbError> {
    let rows = admin.query(Sql::owned(sql.to_string()), &[]).await?;
    let first = rows
        .first()
        .and_then(|r| r.columns().first().and_then(|c| r.get(c)))
        .cloned();
    Ok(ConfiguredQuery {
        rows: rows.len(),
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::{MockPgAdmin, PgRow};

    #[tokio::test]
    async fn archiver_state_reads_its_row_and_names_a_missing_one() {
        let mut m = MockPgAdmin::new();
        m.expect_query()
            .withf(|sql, _| sql == ARCHIVER_STATE_SQL)
            .times(1)
            .returning(|_, _| {
                Ok(vec![PgRow::from_pairs([
                    ("archive_mode", PgValue::Text("on".into())),
                    ("archived_count", PgValue::Int(7)),
                    ("last_archived_wal", PgValue::Null),
                    ("archived_age_s", PgValue::Float(1.5)),
                    ("failed_count", PgValue::Int(0)),
                    ("failed_age_s", PgValue::Null),
                    ("failing", PgValue::Bool(false)),
                    (
                        "current_wal",
                        PgValue::Text("000000010000000000000003".into()),
                    ),
                    ("segment_size", PgValue::Int(16 << 20)),
                ])])
            });
        let s = archiver_state(&m).await.unwrap();
        assert_eq!(s.archived_count, 7);
        assert_eq!(s.archived_age_s, Some(1.5));
        assert!(!s.failing);

        let mut empty = MockPgAdmin::new();
        empty.expect_query().returning(|_, _| Ok(Vec::new()));
        assert!(matches!(
            archiver_state(&empty).await,
            Err(DbError::UnexpectedReply(m)) if m.contains("no row")
        ));
    }

    #[tokio::test]
    async fn configured_queries_report_rows_and_the_first_value() {
        let mut m = MockPgAdmin::new();
        m.expect_query()
            .withf(|sql, _| sql == "SELECT count(*) FROM users")
            .returning(|_, _| {
                Ok(vec![
                    PgRow::from_pairs([("count", PgValue::Int(3))]),
                    PgRow::from_pairs([("count", PgValue::Int(4))]),
                ])
            });
        let r = run_configured_query(&m, "SELECT count(*) FROM users")
            .await
            .unwrap();
        assert_eq!(r.rows, 2);
        assert_eq!(r.first, Some(PgValue::Int(3)));
    }
}
