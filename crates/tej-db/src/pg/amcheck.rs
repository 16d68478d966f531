//! Corruption check with amcheck: `verify_heapam` for tables and `bt_index_check` (with
//! `heapallindexed`) for btree indexes, reporting each damaged relation.

use super::Sql;
use super::bloat::extension_installed;
use super::{DbError, PgAdmin, PgParam, SessionLimits};
use futures::StreamExt;
use serde::Serialize;
use tej_core::{Finding, Severity};

/// Options of the corruption check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AmcheckOptions {
    /// Check tables with `verify_heapam` (and their TOAST).
    pub heap: bool,
    /// Check that every heap tuple has an index entry (slower, finds more).
    pub heapallindexed: bool,
    /// Include system catalogs.
    pub include_catalogs: bool,
    /// Relations checked at once.
    pub concurrency: usize,
    /// `CREATE EXTENSION IF NOT EXISTS amcheck` when it is missing.
    pub create_extension: bool,
}

impl Default for AmcheckOptions {
    fn default() -> Self {
        AmcheckOptions {
            heap: true,
            heapallindexed: true,
            include_catalogs: true,
            concurrency: 2,
            create_extension: false,
        }
    }
}

/// One damaged relation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DamagedRelation {
    /// Qualified name.
    pub relation: String,
    /// `table` or `index`.
    pub kind: String,
    /// What amcheck reported (one entry per problem, capped).
    pub problems: Vec<String>,
}

/// The corruption check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AmcheckReport {
    /// Tables checked.
    pub tables_checked: usize,
    /// Indexes checked.
    pub indexes_checked: usize,
    /// Damaged relations.
    pub damaged: Vec<DamagedRelation>,
    /// Findings.
    pub findings: Vec<Finding>,
}

pub(crate) const AMCHECK_TABLES_SQL: &str = "SELECT c.oid::int8 AS oid, c.oid::regclass::text AS relation \
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' \
 AND ($1::bool OR n.nspname NOT IN ('pg_catalog', 'information_schema')) ORDER BY c.oid";

pub(crate) const AMCHECK_INDEXES_SQL: &str = "SELECT c.oid::int8 AS oid, c.oid::regclass::text AS relation \
 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
 JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree' \
 WHERE i.indisvalid AND i.indisready AND c.relpersistence <> 't' \
 AND ($1::bool OR n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')) ORDER BY c.oid";

pub(crate) const VERIFY_HEAPAM_SQL: &str = "SELECT blkno::int8 AS blkno, offnum::int8 AS offnum, attnum::int8 AS attnum, msg \
 FROM verify_heapam($1::int8::oid::regclass, on_error_stop := false, check_toast := true, skip := 'none') LIMIT 20";

pub(crate) const BT_INDEX_CHECK_SQL: &str =
    "SELECT bt_index_check($1::int8::oid::regclass, $2::bool)";

/// Installs amcheck when [`AmcheckOptions::create_extension`] asks for it.
pub const CREATE_AMCHECK_SQL: &str = "CREATE EXTENSION IF NOT EXISTS amcheck";

/// Checks tables and btree indexes; a relation amcheck rejects is reported, not an error.
pub async fn amcheck<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &AmcheckOptions,
) -> Result<AmcheckReport, DbError> {
    if !extension_installed(admin, "amcheck").await? {
        if opts.create_extension {
            admin
                .maintenance(Sql::new(CREATE_AMCHECK_SQL), SessionLimits::default())
                .await?;
        } else {
            return Err(DbError::ExtensionMissing {
                extension: "amcheck".into(),
                hint: "run CREATE EXTENSION amcheck; in this database (it ships with PostgreSQL's contrib package)".into(),
            });
        }
    }
    let cat = [PgParam::Bool(opts.include_catalogs)];
    let (tables, indexes) = tokio::join!(
        admin.query(Sql::new(AMCHECK_TABLES_SQL), &cat),
        admin.query(Sql::new(AMCHECK_INDEXES_SQL), &cat)
    );
    let mut jobs: Vec<(i64, String, bool)> = Vec::new();
    if opts.heap {
        for r in &tables? {
            jobs.push((r.i64("oid")?, r.str("relation")?, true));
        }
    }
    let tables_checked = jobs.len();
    for r in &indexes? {
        jobs.push((r.i64("oid")?, r.str("relation")?, false));
    }
    let indexes_checked = jobs.len() - tables_checked;
    let heapallindexed = opts.heapallindexed;
    let results: Vec<Result<Option<DamagedRelation>, DbError>> = futures::stream::iter(jobs)
        .map(|(oid, relation, is_table)| async move {
            let kind = if is_table { "table" } else { "index" };
            let r = if is_table {
                admin
                    .query(Sql::new(VERIFY_HEAPAM_SQL), &[PgParam::Int(oid)])
                    .await
                    .and_then(|rows| {
                        rows.iter()
                            .map(|r| {
                                Ok(format!(
                                    "block {}, offset {}{}: {}",
                                    r.opt_i64("blkno")?.map_or("?".into(), |v| v.to_string()),
                                    r.opt_i64("offnum")?.map_or("?".into(), |v| v.to_string()),
                                    r.opt_i64("attnum")?
                                        .map_or(String::new(), |v| format!(", attribute {v}")),
                                    r.str("msg")?
                                ))
                            })
                            .collect::<Result<Vec<_>, DbError>>()
                    })
            } else {
                admin
                    .query(
                        Sql::new(BT_INDEX_CHECK_SQL),
                        &[PgParam::Int(oid), PgParam::Bool(heapallindexed)],
                    )
                    .await
                    .map(|_| Vec::new())
            };
            match r {
                Ok(problems) if problems.is_empty() => Ok(None),
                Ok(problems) => Ok(Some(DamagedRelation {
                    relation,
                    kind: kind.into(),
                    problems,
                })),
                Err(DbError::Corruption(m)) => Ok(Some(DamagedRelation {
                    relation,
                    kind: kind.into(),
                    problems: vec![m],
                })),
                // Dropped while we were checking it.
                Err(DbError::Server { code, .. }) if code == "42P01" => Ok(None),
                Err(DbError::Server { code, message }) if code.starts_with("XX") => {
                    Ok(Some(DamagedRelation {
                        relation,
                        kind: kind.into(),
                        problems: vec![format!("{code}: {message}")],
                    }))
                }
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    let mut damaged = Vec::new();
    for r in results {
        if let Some(d) = r? {
            damaged.push(d);
        }
    }
    damaged.sort_by(|a, b| a.relation.cmp(&b.relation));
    let mut findings: Vec<Finding> = damaged
        .iter()
        .map(|d| {
            Finding::new(
                "postgres.corruption",
                Severity::Critical,
                format!("{} {} is damaged: {}", d.kind, d.relation, d.problems.first().map_or("", String::as_str)),
            )
            .target(&d.relation)
            .detail(format!(
                "{}\n{}",
                d.problems.join("\n"),
                if d.kind == "index" {
                    "rebuild it with REINDEX INDEX CONCURRENTLY (the table data is the source of truth)"
                } else {
                    "restore the table from a backup taken before the damage; stop writes to it first"
                }
            ))
        })
        .collect();
    if findings.is_empty() {
        findings.push(Finding::ok(
            "postgres.corruption",
            format!("amcheck found no corruption in {tables_checked} tables and {indexes_checked} btree indexes"),
        ));
    }
    Ok(AmcheckReport {
        tables_checked,
        indexes_checked,
        damaged,
        findings,
    })
}
