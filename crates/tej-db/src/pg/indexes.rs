//! Index audit: unused indexes (with the age of the statistics), duplicates, foreign keys
//! without a supporting index, and large tables read mostly by sequential scans.

use super::Sql;
use super::util::{human_bytes, human_duration};
use super::{DbError, PgAdmin, PgParam, PgRow};
use serde::Serialize;
use tej_core::{Finding, Metric, Severity};

/// Options of the index audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexAuditOptions {
    /// Unused indexes smaller than this are not reported (bytes).
    pub unused_min_bytes: i64,
    /// Tables smaller than this are not missing-index candidates (bytes).
    pub seq_scan_min_bytes: i64,
    /// Share of scans that are sequential, percent, for a missing-index candidate.
    pub seq_scan_percent: f64,
    /// Statistics younger than this (seconds) make "unused" verdicts unreliable.
    pub min_stats_age_s: f64,
}

impl Default for IndexAuditOptions {
    fn default() -> Self {
        IndexAuditOptions {
            unused_min_bytes: 0,
            seq_scan_min_bytes: 10 * 1024 * 1024,
            seq_scan_percent: 50.0,
            min_stats_age_s: 7.0 * 86_400.0,
        }
    }
}

/// An index never scanned since statistics were reset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnusedIndex {
    /// Qualified index name.
    pub index: String,
    /// Its table.
    pub table: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Its definition.
    pub definition: String,
}

/// Indexes with the same table, columns, operator classes, expressions and predicate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateIndexes {
    /// The table.
    pub table: String,
    /// The identical indexes; the first backs a constraint if any does.
    pub indexes: Vec<String>,
    /// Bytes that dropping all but one would free.
    pub redundant_bytes: i64,
}

/// A foreign key whose columns lead no index: deletes and updates of the referenced rows scan the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnindexedForeignKey {
    /// Referencing table.
    pub table: String,
    /// Constraint name.
    pub constraint: String,
    /// Referencing columns.
    pub columns: Vec<String>,
    /// Referenced table.
    pub referenced: String,
    /// Size of the referencing table.
    pub table_bytes: i64,
}

/// A large table read mostly by sequential scans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeqScanTable {
    /// Qualified table name.
    pub table: String,
    /// Sequential scans.
    pub seq_scan: i64,
    /// Rows read by them.
    pub seq_tup_read: i64,
    /// Index scans.
    pub idx_scan: i64,
    /// Percent of scans that were sequential.
    pub seq_percent: f64,
    /// Live rows.
    pub live_rows: i64,
    /// Size in bytes.
    pub bytes: i64,
}

/// The index audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexAudit {
    /// When this database's statistics were last reset (`None`: never).
    pub stats_reset: Option<String>,
    /// Seconds since the reset (`None` when never reset).
    pub stats_age_s: Option<f64>,
    /// Unused indexes (primary keys, unique and constraint indexes excluded).
    pub unused: Vec<UnusedIndex>,
    /// Duplicate groups.
    pub duplicates: Vec<DuplicateIndexes>,
    /// Foreign keys without an index.
    pub unindexed_foreign_keys: Vec<UnindexedForeignKey>,
    /// Missing-index candidates.
    pub missing_index_candidates: Vec<SeqScanTable>,
    /// Findings.
    pub findings: Vec<Finding>,
}

pub(crate) const STATS_RESET_SQL: &str = "SELECT stats_reset::text AS stats_reset, \
 extract(epoch FROM now() - stats_reset)::float8 AS age_s FROM pg_stat_database WHERE datname = current_database()";

pub(crate) const UNUSED_SQL: &str = "SELECT s.indexrelid::regclass::text AS index, s.relid::regclass::text AS table_name, \
 pg_relation_size(s.indexrelid)::int8 AS bytes, pg_get_indexdef(s.indexrelid) AS definition \
 FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid \
 WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid \
 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid) \
 AND pg_relation_size(s.indexrelid) >= $1::int8 \
 ORDER BY pg_relation_size(s.indexrelid) DESC";

pub(crate) const DUPLICATES_SQL: &str = "SELECT i.indrelid::regclass::text AS table_name, \
 string_agg(i.indexrelid::regclass::text, E'\\n' ORDER BY (EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)) DESC, i.indisprimary DESC, i.indisunique DESC, i.indexrelid) AS indexes, \
 (sum(pg_relation_size(i.indexrelid)) - min(pg_relation_size(i.indexrelid)))::int8 AS redundant_bytes \
 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' AND i.indisvalid \
 GROUP BY i.indrelid, i.indkey::text, i.indclass::text, i.indcollation::text, \
 coalesce(pg_get_expr(i.indexprs, i.indrelid), ''), coalesce(pg_get_expr(i.indpred, i.indrelid), ''), \
 (SELECT relam FROM pg_class WHERE oid = i.indexrelid) \
 HAVING count(*) > 1 ORDER BY 3 DESC";

pub(crate) const UNINDEXED_FK_SQL: &str = "SELECT c.conrelid::regclass::text AS table_name, c.conname::text AS constraint_name, \
 c.confrelid::regclass::text AS referenced, \
 (SELECT string_agg(a.attname::text, E'\\n' ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) \
   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS columns, \
 pg_relation_size(c.conrelid)::int8 AS table_bytes \
 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
 WHERE c.contype = 'f' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
 AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indpred IS NULL AND i.indisvalid \
   AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey) \
 ORDER BY 5 DESC, 1, 2";

pub(crate) const SEQ_SCAN_SQL: &str = "SELECT format('%I.%I', schemaname, relname) AS table_name, seq_scan::int8 AS seq_scan, \
 seq_tup_read::int8 AS seq_tup_read, coalesce(idx_scan, 0)::int8 AS idx_scan, n_live_tup::int8 AS live_rows, \
 pg_relation_size(relid)::int8 AS bytes \
 FROM pg_stat_user_tables WHERE pg_relation_size(relid) >= $1::int8 AND seq_scan > 0 \
 ORDER BY seq_tup_read DESC LIMIT 50";

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) fn parse_seq_scans(
    rows: &[PgRow],
    opts: &IndexAuditOptions,
) -> Result<Vec<SeqScanTable>, DbError> {
    let mut v = Vec::new();
    for r in rows {
        let seq = r.i64("seq_scan")?;
        let idx = r.i64("idx_scan")?;
        let total = (seq + idx).max(1) as f64;
        let pct = seq as f64 / total * 100.0;
        let live = r.i64("live_rows")?;
        let read = r.i64("seq_tup_read")?;
        // Reads of whole large tables, mostly sequential, averaging more than a thousand rows a scan.
        if pct >= opts.seq_scan_percent && read / seq.max(1) >= 1000 && live >= 1000 {
            v.push(SeqScanTable {
                table: r.str("table_name")?,
                seq_scan: seq,
                seq_tup_read: read,
                idx_scan: idx,
                seq_percent: pct,
                live_rows: live,
                bytes: r.i64("bytes")?,
            });
        }
    }
    Ok(v)
}

/// Audits the indexes of the connected database.
pub async fn index_audit<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &IndexAuditOptions,
) -> Result<IndexAudit, DbError> {
    let unused_min = [PgParam::Int(opts.unused_min_bytes)];
    let seq_min = [PgParam::Int(opts.seq_scan_min_bytes)];
    let (reset, unused, dups, fks, seq) = tokio::join!(
        admin.query(Sql::new(STATS_RESET_SQL), &[]),
        admin.query(Sql::new(UNUSED_SQL), &unused_min),
        admin.query(Sql::new(DUPLICATES_SQL), &[]),
        admin.query(Sql::new(UNINDEXED_FK_SQL), &[]),
        admin.query(Sql::new(SEQ_SCAN_SQL), &seq_min),
    );
    let reset = reset?;
    let (stats_reset, stats_age_s) = match reset.first() {
        Some(r) => (r.opt_str("stats_reset")?, r.opt_f64("age_s")?),
        None => (None, None),
    };
    let unused = unused?
        .iter()
        .map(|r| {
            Ok(UnusedIndex {
                index: r.str("index")?,
                table: r.str("table_name")?,
                bytes: r.i64("bytes")?,
                definition: r.str("definition")?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    let duplicates = dups?
        .iter()
        .map(|r| {
            Ok(DuplicateIndexes {
                table: r.str("table_name")?,
                indexes: lines(&r.str("indexes")?),
                redundant_bytes: r.i64("redundant_bytes")?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    let unindexed_foreign_keys = fks?
        .iter()
        .map(|r| {
            Ok(UnindexedForeignKey {
                table: r.str("table_name")?,
                constraint: r.str("constraint_name")?,
                columns: lines(&r.str("columns")?),
                referenced: r.str("referenced")?,
                table_bytes: r.i64("table_bytes")?,
            })
        })
        .collect::<Result<Vec<_>, DbError>>()?;
    let missing_index_candidates = parse_seq_scans(&seq?, opts)?;
    let mut audit = IndexAudit {
        stats_reset,
        stats_age_s,
        unused,
        duplicates,
        unindexed_foreign_keys,
        missing_index_candidates,
        findings: Vec::new(),
    };
    audit.findings = index_findings(&audit, opts);
    Ok(audit)
}

pub(crate) fn index_findings(a: &IndexAudit, opts: &IndexAuditOptions) -> Vec<Finding> {
    let mut v = Vec::new();
    let stats = match (&a.stats_reset, a.stats_age_s) {
        (Some(at), Some(age)) => format!("statistics reset {at} ({} ago)", human_duration(age)),
        _ => "statistics never reset (counted since the cluster was created or last crashed)"
            .to_string(),
    };
    let young = a.stats_age_s.is_some_and(|s| s < opts.min_stats_age_s);
    for u in &a.unused {
        v.push(
            Finding::new(
                "postgres.unused_indexes",
                Severity::Warning,
                format!(
                    "index {} on {} ({}) has not been scanned; {stats}",
                    u.index,
                    u.table,
                    human_bytes(u.bytes as f64)
                ),
            )
            .target(&u.index)
            .detail(format!(
                "{}{}; check replicas too before dropping it: DROP INDEX CONCURRENTLY {}",
                u.definition,
                if young {
                    " — the statistics are young, wait before deciding"
                } else {
                    ""
                },
                u.index
            ))
            .metric(Metric::new("index_bytes", u.bytes as f64, "B")),
        );
    }
    for d in &a.duplicates {
        v.push(
            Finding::new(
                "postgres.duplicate_indexes",
                Severity::Warning,
                format!(
                    "indexes {} on {} are identical; keep {} and drop the others to free {}",
                    d.indexes.join(", "),
                    d.table,
                    d.indexes.first().map_or("one", String::as_str),
                    human_bytes(d.redundant_bytes as f64)
                ),
            )
            .target(&d.table),
        );
    }
    for fk in &a.unindexed_foreign_keys {
        v.push(
            Finding::new(
                "postgres.unindexed_foreign_keys",
                Severity::Warning,
                format!(
                    "foreign key {} on {}({}) referencing {} has no index: deleting or updating {} rows scans {} and locks it longer",
                    fk.constraint,
                    fk.table,
                    fk.columns.join(", "),
                    fk.referenced,
                    fk.referenced,
                    fk.table
                ),
            )
            .target(&fk.table)
            .detail(format!(
                "CREATE INDEX CONCURRENTLY ON {} ({});",
                fk.table,
                fk.columns.join(", ")
            )),
        );
    }
    for s in &a.missing_index_candidates {
        v.push(
            Finding::new(
                "postgres.missing_indexes",
                Severity::Warning,
                format!(
                    "table {} ({}, {} rows) is read by sequential scans {:.0}% of the time ({} scans, {} rows read)",
                    s.table,
                    human_bytes(s.bytes as f64),
                    s.live_rows,
                    s.seq_percent,
                    s.seq_scan,
                    s.seq_tup_read
                ),
            )
            .target(&s.table)
            .detail("look for its queries in pg_stat_statements and index their filter columns"),
        );
    }
    if v.is_empty() {
        v.push(Finding::ok(
            "postgres.indexes",
            format!("no unused, duplicate or missing indexes found; {stats}"),
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::PgValue;

    fn seq_row(seq: i64, idx: i64, read: i64, live: i64) -> PgRow {
        PgRow::from_pairs([
            ("table_name", PgValue::from("public.t")),
            ("seq_scan", seq.into()),
            ("idx_scan", idx.into()),
            ("seq_tup_read", read.into()),
            ("live_rows", live.into()),
            ("bytes", PgValue::Int(50 << 20)),
        ])
    }

    #[test]
    fn missing_index_candidates_need_mostly_large_sequential_reads() {
        let o = IndexAuditOptions::default();
        let v = parse_seq_scans(&[seq_row(90, 10, 9_000_000, 100_000)], &o).unwrap();
        assert_eq!(v.len(), 1);
        assert!((v[0].seq_percent - 90.0).abs() < 1e-9);
        // mostly index scans
        assert!(
            parse_seq_scans(&[seq_row(10, 90, 1_000_000, 100_000)], &o)
                .unwrap()
                .is_empty()
        );
        // tiny reads per scan
        assert!(
            parse_seq_scans(&[seq_row(100, 0, 500, 100_000)], &o)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn findings_name_objects_and_statistics_age() {
        let a = IndexAudit {
            stats_reset: Some("2025-01-01 00:00:00+00".into()),
            stats_age_s: Some(3600.0),
            unused: vec![UnusedIndex {
                index: "public.t_x_idx".into(),
                table: "public.t".into(),
                bytes: 8192,
                definition: "CREATE INDEX t_x_idx ON public.t USING btree (x)".into(),
            }],
            duplicates: vec![DuplicateIndexes {
                table: "public.t".into(),
                indexes: vec!["public.t_pkey".into(), "public.t_id_idx".into()],
                redundant_bytes: 16384,
            }],
            unindexed_foreign_keys: vec![UnindexedForeignKey {
                table: "public.child".into(),
                constraint: "child_parent_fk".into(),
                columns: vec!["parent_id".into()],
                referenced: "public.parent".into(),
                table_bytes: 0,
            }],
            missing_index_candidates: vec![],
            findings: vec![],
        };
        let f = index_findings(&a, &IndexAuditOptions::default());
        assert_eq!(f.len(), 3);
        assert!(f[0].summary.contains("public.t_x_idx") && f[0].summary.contains("1h 00m ago"));
        assert!(f[0].detail.as_deref().unwrap().contains("young"));
        assert!(f[1].summary.contains("keep public.t_pkey"));
        assert!(
            f[2].detail
                .as_deref()
                .unwrap()
                .contains("CREATE INDEX CONCURRENTLY ON public.child (parent_id)")
        );
    }
}
