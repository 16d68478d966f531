//! [`PgHistoryStore`]: capacity history in the managed PostgreSQL itself, in a `tej` schema,
//! so every host running tej sees the same history and it is backed up with the database.
//!
//! The schema is created on first use by an idempotent migration ([`PgHistoryStore::migrate`]):
//! `CREATE SCHEMA IF NOT EXISTS tej`, the `tej.measurements` table and its series index, under
//! a transaction-scoped advisory lock so two hosts migrating at once do not collide. Times are
//! kept as `timestamptz` (microsecond precision).

use crate::capacity::{HistoryStore, Measurement};
use crate::error::{Result, RunbookError};
use async_trait::async_trait;
use jiff::Timestamp;
use std::sync::Arc;
use tej_db::pg::{PgAdmin, PgParam, PgStatement};

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
const BATCH: usize = 500;

/// The advisory lock id serialising migrations (`tej-runbook/history-migration`).
fn migration_lock_id() -> i64 {
    crate::pg_lock::advisory_lock_id("tej-runbook/history-migration")
}

/// A [`HistoryStore`] in PostgreSQL (table `tej.measurements`).
pub struct PgHistoryStore {
    admin: Arc<dyn PgAdmin>,
    migrated: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for PgHistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHistoryStore")
            .field("target", &self.admin.target())
            .field("migrated", &self.migrated.initialized())
            .finish()
    }
}

fn q(e: impl std::fmt::Display) -> RunbookError {
    RunbookError::Query(e.to_string())
}

fn ts_text(t: Timestamp) -> String {
    t.to_string()
}

fn parse_row(r: &tej_db::pg::PgRow) -> Result<Measurement> {
    let at_us = r.i64("at_us").map_err(q)?;
    let at = Timestamp::from_microsecond(at_us)
        .map_err(|e| RunbookError::Query(format!("time out of range: {e}")))?;
    Ok(Measurement {
        metric: r.str("metric").map_err(q)?,
        target: r.str("target").map_err(q)?,
        at,
        value: r.f64("value").map_err(q)?,
        unit: r.str("unit").map_err(q)?,
    })
}

impl PgHistoryStore {
    /// A store in the database behind `admin` (migrated on first use).
    pub fn new(admin: Arc<dyn PgAdmin>) -> PgHistoryStore {
        PgHistoryStore {
            admin,
            migrated: tokio::sync::OnceCell::new(),
        }
    }

    /// Creates the schema, table and indexes if missing; safe to run any number of times,
    /// from several hosts at once.
    pub async fn migrate(&self) -> Result<()> {
        self.migrated
            .get_or_try_init(|| async {
                let mut st = vec![PgStatement {
                    sql: "SELECT pg_advisory_xact_lock($1::int8)".into(),
                    params: vec![PgParam::Int(migration_lock_id())],
                }];
                st.extend(HISTORY_MIGRATION.iter().map(|s| PgStatement {
                    sql: (*s).to_string(),
                    params: Vec::new(),
                }));
                self.admin.transaction(&st).await.map_err(q).map(|_| ())
            })
            .await
            .copied()
    }
}

const SELECT_COLS: &str =
    "metric, target, (extract(epoch FROM at) * 1000000)::int8 AS at_us, value, unit";

#[async_trait]
impl HistoryStore for PgHistoryStore {
    async fn append(&self, measurements: &[Measurement]) -> Result<()> {
        if let Some(bad) = measurements.iter().find(|m| !m.value.is_finite()) {
            return Err(RunbookError::Query(format!(
                "{} on {:?} is not a finite number",
                bad.metric, bad.target
            )));
        }
        if measurements.is_empty() {
            return Ok(());
        }
        self.migrate().await?;
        let mut statements = Vec::new();
        for chunk in measurements.chunks(BATCH) {
            let mut sql = String::from(
                "INSERT INTO tej.measurements (metric, target, at, value, unit) VALUES ",
            );
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
            statements.push(PgStatement { sql, params });
        }
        self.admin.transaction(&statements).await.map_err(q)?;
        Ok(())
    }

    async fn series(
        &self,
        metric: &str,
        target: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<Measurement>> {
        self.migrate().await?;
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
        let rows = self.admin.query(&sql, &params).await.map_err(q)?;
        rows.iter().map(parse_row).collect()
    }

    async fn series_keys(&self) -> Result<Vec<(String, String)>> {
        self.migrate().await?;
        let rows = self
            .admin
            .query(
                "SELECT DISTINCT metric, target FROM tej.measurements ORDER BY metric, target",
                &[],
            )
            .await
            .map_err(q)?;
        rows.iter()
            .map(|r| Ok((r.str("metric").map_err(q)?, r.str("target").map_err(q)?)))
            .collect()
    }

    async fn prune(&self, before: Timestamp) -> Result<usize> {
        self.migrate().await?;
        let n = self
            .admin
            .transaction(&[PgStatement {
                sql: "DELETE FROM tej.measurements WHERE at < $1::text::timestamptz".into(),
                params: vec![PgParam::Text(ts_text(before))],
            }])
            .await
            .map_err(q)?;
        Ok(n.first().copied().unwrap_or(0) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tej_db::pg::{MockPgAdmin, PgRow, PgValue};

    #[tokio::test]
    async fn migrates_once_then_inserts_in_batches() {
        let mut m = MockPgAdmin::new();
        m.expect_target().return_const("db:x".to_string());
        let mut seq = mockall::Sequence::new();
        m.expect_transaction()
            .times(1)
            .in_sequence(&mut seq)
            .withf(|st| {
                st[0].sql.contains("pg_advisory_xact_lock")
                    && st[1].sql == "CREATE SCHEMA IF NOT EXISTS tej"
                    && st.len() == HISTORY_MIGRATION.len() + 1
            })
            .returning(|st| Ok(vec![0; st.len()]));
        m.expect_transaction()
            .times(1)
            .in_sequence(&mut seq)
            .withf(|st| st.len() == 3 && st[2].params.len() == 5 * 2)
            .returning(|st| Ok(vec![1; st.len()]));
        m.expect_query().returning(|_, _| {
            Ok(vec![PgRow::from_pairs([
                ("metric", PgValue::Text("m".into())),
                ("target", PgValue::Text("t".into())),
                ("at_us", PgValue::Int(1_700_000_000_123_456)),
                ("value", PgValue::Float(2.5)),
                ("unit", PgValue::Text("B".into())),
            ])])
        });
        let store = PgHistoryStore::new(Arc::new(m));
        let at: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let batch: Vec<Measurement> = (0..(BATCH * 2 + 2))
            .map(|i| Measurement::new("m", "t", at, i as f64))
            .collect();
        store.append(&batch).await.unwrap();
        // NaN is refused before anything is sent.
        assert!(
            store
                .append(&[Measurement::new("m", "t", at, f64::NAN)])
                .await
                .is_err()
        );
        let s = store.series("m", "t", None).await.unwrap();
        assert_eq!(s[0].at.as_microsecond(), 1_700_000_000_123_456);
        assert_eq!(s[0].unit, "B");
    }
}
