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
use tej_db::pg::{MeasurementRow, PgAdmin};

pub use tej_db::pg::HISTORY_MIGRATION;

/// The advisory lock id serialising migrations (`tej-runbook/history-migration`).
fn migration_lock_id() -> i64 {
    crate::pg_lock::advisory_lock_id("tej-runbook/history-migration")
}

/// A [`HistoryStore`] in PostgreSQL (table `tej.measurements`, tej-db's [`tej_db::pg::history`]).
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

fn from_row(r: MeasurementRow) -> Measurement {
    Measurement {
        metric: r.metric,
        target: r.target,
        at: r.at,
        value: r.value,
        unit: r.unit,
    }
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
                tej_db::pg::migrate_history(self.admin.as_ref(), migration_lock_id())
                    .await
                    .map_err(q)
            })
            .await
            .copied()
    }
}

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
        let rows: Vec<MeasurementRow> = measurements
            .iter()
            .map(|m| MeasurementRow {
                metric: m.metric.clone(),
                target: m.target.clone(),
                at: m.at,
                value: m.value,
                unit: m.unit.clone(),
            })
            .collect();
        tej_db::pg::insert_measurements(self.admin.as_ref(), &rows)
            .await
            .map_err(q)
    }

    async fn series(
        &self,
        metric: &str,
        target: &str,
        since: Option<Timestamp>,
    ) -> Result<Vec<Measurement>> {
        self.migrate().await?;
        let rows = tej_db::pg::measurement_series(self.admin.as_ref(), metric, target, since)
            .await
            .map_err(q)?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    async fn series_keys(&self) -> Result<Vec<(String, String)>> {
        self.migrate().await?;
        tej_db::pg::measurement_keys(self.admin.as_ref())
            .await
            .map_err(q)
    }

    async fn prune(&self, before: Timestamp) -> Result<usize> {
        self.migrate().await?;
        let n = tej_db::pg::delete_measurements_before(self.admin.as_ref(), before)
            .await
            .map_err(q)?;
        Ok(n as usize)
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
                st[0].sql().contains("pg_advisory_xact_lock")
                    && st[1].sql() == "CREATE SCHEMA IF NOT EXISTS tej"
                    && st.len() == HISTORY_MIGRATION.len() + 1
            })
            .returning(|st| Ok(vec![0; st.len()]));
        m.expect_transaction()
            .times(1)
            .in_sequence(&mut seq)
            .withf(|st| st.len() == 3 && st[2].params().len() == 5 * 2)
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
        let batch: Vec<Measurement> = (0..(tej_db::pg::history::HISTORY_BATCH * 2 + 2))
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
