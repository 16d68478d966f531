//! Capacity history kept in the managed PostgreSQL itself: the `tej.measurements` table.
//!
//! The schema is created by an idempotent migration ([`migrate_history`]) under a
//! transaction-scoped advisory lock, so two hosts migrating at once do not collide. Times are
//! kept as `timestamptz` (microsecond precision).

use super::{DbError, PgAdmin, PgParam, PgRow, PgStatement, Sql};
use jiff::Timestamp;

/// The migration, statement by statement (each idempotent).
pub const HISTORY_MIGRATION: &[&str] = &[
    "CREATE SCHEMA IF NOT EXISTS tej",
    "CREATE TABLE IF NOT EXISTS tej.measurements (\
     id bigserial PRIMARY KEY, \
     metric text NOT NULL, \
     target text NOT NULL DEFAULT '', \
     at timestamptz NOT NULL, \
     value double precision NOT NULL, \
     unit text NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS measurements_series_idx ON tej.measurements (metric, target, at)",
    "CREATE INDEX IF NOT EXISTS measurements_at_idx ON tej.measurements (at)",
    "COMMENT ON TABLE tej.measurements IS 'tej capacity history (tej-runbook PgHistoryStore)'",
];

/// Rows per INSERT statement.
pub const HISTORY_BATCH: usize = 500;

/// One row of `tej.measurements`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementRow {
    /// What was measured (`pg.database_size`).
    pub metric: String,
    /// Of what (`db:app`), or empty.
    pub target: String,
    /// When.
    pub at: Timestamp,
    /// The value (finite).
    pub value: f64,
    /// Its unit, or empty.
    pub unit: String,
}

const SELECT_COLS: &str =
    "metric, target, (extract(epoch FROM at) * 1000000)::int8 AS at_us, value, unit";

fn ts_text(t: Timestamp) -> String {
    t.to_string()
}

fn parse_row(r: &PgRow) -> Result<MeasurementRow, DbError> {
    let at_us = r.i64("at_us")?;
    let at = Timestamp::from_microsecond(at_us)
        .map_err(|e| DbError::UnexpectedReply(format!("time out of range: {e}")))?;
    Ok(MeasurementRow {
        metric: r.str("metric")?,
        target: r.str("target")?,
        at,
        value: r.f64("value")?,
        unit: r.str("unit")?,
    })
}

/// Creates the schema, table and indexes if missing, in one transaction holding the
/// transaction advisory lock `lock_id`; safe to run any number of times, from several hosts
/// at once.
pub async fn migrate_history<A: PgAdmin + ?Sized>(admin: &A, lock_id: i64) -> Result<(), DbError> {
    let mut st = vec![PgStatement::new(
        Sql::new("SELECT pg_advisory_xact_lock($1::int8)"),
        vec![PgParam::Int(lock_id)],
    )];
    st.extend(
        HISTORY_MIGRATION
            .iter()
            .map(|s| PgStatement::new(Sql::new(s), Vec::new())),
    );
    admin.transaction(&st).await.map(|_| ())
}

/// Inserts `rows` in one transaction, [`HISTORY_BATCH`] rows per statement. A value that is
/// not finite is refused before anything is sent.
pub async fn insert_measurements<A: PgAdmin + ?Sized>(
    admin: &A,
    rows: &[MeasurementRow],
) -> Result<(), DbError> {
    if let Some(bad) = rows.iter().find(|m| !m.value.is_finite()) {
        return Err(DbError::Refused(format!(
            "{} on {:?} is not a finite number",
            bad.metric, bad.target
        )));
    }
    if rows.is_empty() {
        return Ok(());
    }
    let mut statements = Vec::new();
    for chunk in rows.chunks(HISTORY_BATCH) {
        let mut sql =
            String::from("INSERT INTO tej.measurements (metric, target, at, value, unit) VALUES ");
        let mut params = Vec::with_capacity(chunk.len() * 5);
        for (i, m) in chunk.iter().enumerate() {
            let b = i * 5;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}::text, ${}::text, ${}::text::timestamptz, ${}::float8, ${}::text)",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            ));
            params.extend([
                PgParam::Text(m.metric.clone()),
                PgParam::Text(m.target.clone()),
                PgParam::Text(ts_text(m.at)),
                PgParam::Float(m.value),
                PgParam::Text(m.unit.clone()),
            ]);
        }
        statements.push(PgStatement::new(Sql::owned(sql), params));
    }
    admin.transaction(&statements).await.map(|_| ())
}

/// The series `metric` × `target`, oldest first, from `since` on when given.
pub async fn measurement_series<A: PgAdmin + ?Sized>(
    admin: &A,
    metric: &str,
    target: &str,
    since: Option<Timestamp>,
) -> Result<Vec<MeasurementRow>, DbError> {
    let mut params = vec![
        PgParam::Text(metric.to_string()),
        PgParam::Text(target.to_string()),
    ];
    let sql = match since {
        Some(s) => {
            params.push(PgParam::Text(ts_text(s)));
            format!(
                "SELECT {SELECT_COLS} FROM tej.measurements WHERE metric = $1::text AND target = $2::text \
                 AND at >= $3::text::timestamptz ORDER BY at, id"
            )
        }
        None => format!(
            "SELECT {SELECT_COLS} FROM tej.measurements WHERE metric = $1::text AND target = $2::text ORDER BY at, id"
        ),
    };
    let rows = admin.query(Sql::owned(sql), &params).await?;
    rows.iter().map(parse_row).collect()
}

/// Every `(metric, target)` with rows, sorted.
pub async fn measurement_keys<A: PgAdmin + ?Sized>(
    admin: &A,
) -> Result<Vec<(String, String)>, DbError> {
    let rows = admin
        .query(
            Sql::new(
                "SELECT DISTINCT metric, target FROM tej.measurements ORDER BY metric, target",
            ),
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.str("metric")?, r.str("target")?)))
        .collect()
}

/// Deletes the rows older than `before`; returns how many.
pub async fn delete_measurements_before<A: PgAdmin + ?Sized>(
    admin: &A,
    before: Timestamp,
) -> Result<u64, DbError> {
    let n = admin
        .transaction(&[PgStatement::new(
            Sql::new("DELETE FROM tej.measurements WHERE at < $1::text::timestamptz"),
            vec![PgParam::Text(ts_text(before))],
        )])
        .await?;
    Ok(n.first().copied().unwrap_or(0))
}
