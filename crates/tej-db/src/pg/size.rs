//! Database size and the largest relations, with table, index and TOAST bytes apart.

use super::Sql;
use super::util::human_bytes;
use super::{DbError, PgAdmin, PgParam};
use serde::Serialize;
use tej_core::{Finding, Metric};

/// Options of the size report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeOptions {
    /// How many relations to list.
    pub top: i64,
}

impl Default for SizeOptions {
    fn default() -> Self {
        SizeOptions { top: 10 }
    }
}

/// One relation's sizes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelationSize {
    /// Qualified name.
    pub relation: String,
    /// `r` table, `m` materialized view, `p` partitioned table.
    pub kind: String,
    /// Heap (main, free space map, visibility map) bytes.
    pub table_bytes: i64,
    /// All indexes' bytes.
    pub index_bytes: i64,
    /// TOAST table and its index.
    pub toast_bytes: i64,
    /// Everything.
    pub total_bytes: i64,
    /// Estimated rows (`reltuples`; -1 if never analyzed).
    pub estimated_rows: f64,
}

/// Database size and its largest relations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeReport {
    /// Database name.
    pub database: String,
    /// `pg_database_size`.
    pub database_bytes: i64,
    /// Largest relations first.
    pub largest: Vec<RelationSize>,
    /// One informational finding.
    pub findings: Vec<Finding>,
}

pub(crate) const DB_SIZE_SQL: &str = "SELECT current_database()::text AS database, pg_database_size(current_database())::int8 AS bytes";

pub(crate) const LARGEST_SQL: &str = "SELECT c.oid::regclass::text AS relation, c.relkind::text AS kind, \
 (pg_table_size(c.oid) - coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0))::int8 AS table_bytes, \
 pg_indexes_size(c.oid)::int8 AS index_bytes, \
 coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0)::int8 AS toast_bytes, \
 pg_total_relation_size(c.oid)::int8 AS total_bytes, c.reltuples::float8 AS estimated_rows \
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
 AND n.nspname !~ '^pg_toast' \
 ORDER BY pg_total_relation_size(c.oid) DESC LIMIT $1::int8";

/// Measures the database and its largest relations.
pub async fn size_report<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &SizeOptions,
) -> Result<SizeReport, DbError> {
    let top = [PgParam::Int(opts.top)];
    let (db, largest) = tokio::join!(
        admin.query(Sql::new(DB_SIZE_SQL), &[]),
        admin.query(Sql::new(LARGEST_SQL), &top)
    );
    let db = db?;
    let row = db
        .first()
        .ok_or_else(|| DbError::UnexpectedReply("database size query returned no row".into()))?;
    let database = row.str("database")?;
    let database_bytes = row.i64("bytes")?;
    let largest = largest?
        .iter()
        .map(|r| {
            Ok(RelationSize {
                relation: r.str("relation")?,
                kind: r.str("kind")?,
                table_bytes: r.i64("table_bytes")?,
                index_bytes: r.i64("index_bytes")?,
                toast_bytes: r.i64("toast_bytes")?,
                total_bytes: r.i64("total_bytes")?,
                estimated_rows: r.f64("estimated_rows")?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    let mut finding = Finding::ok(
        "postgres.size",
        format!(
            "database {database:?} is {}{}",
            human_bytes(database_bytes as f64),
            largest.first().map_or(String::new(), |r| format!(
                "; largest relation {} is {} (table {}, indexes {}, TOAST {})",
                r.relation,
                human_bytes(r.total_bytes as f64),
                human_bytes(r.table_bytes as f64),
                human_bytes(r.index_bytes as f64),
                human_bytes(r.toast_bytes as f64)
            ))
        ),
    )
    .target(format!("db:{database}"))
    .metric(Metric::new("database_bytes", database_bytes as f64, "B").label("database", &database));
    for r in &largest {
        finding = finding.metric(
            Metric::new("relation_bytes", r.total_bytes as f64, "B").label("relation", &r.relation),
        );
    }
    Ok(SizeReport {
        database,
        database_bytes,
        largest,
        findings: vec![finding],
    })
}
