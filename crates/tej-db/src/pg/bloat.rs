//! Bloat: a statistical estimate for every table and btree index (from `pg_class` and
//! `pg_stats`), confirmed for the top candidates with `pgstattuple_approx`/`pgstatindex`
//! when the pgstattuple extension is installed.

use super::Sql;
use super::util::human_bytes;
use super::{DbError, PgAdmin, PgParam, PgRow};
use serde::Serialize;
use tej_core::{Finding, Metric, Severity, Threshold};

/// Options of the bloat report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BloatOptions {
    /// Relations smaller than this are ignored (bytes).
    pub min_bytes: i64,
    /// How many of the worst estimates to measure with pgstattuple.
    pub confirm_top: usize,
    /// Wasted share, percent, that deserves a finding.
    pub percent: Threshold,
    /// Wasted bytes below which no finding is raised, whatever the percent.
    pub min_wasted_bytes: i64,
}

impl Default for BloatOptions {
    fn default() -> Self {
        BloatOptions {
            min_bytes: 1024 * 1024,
            confirm_top: 10,
            percent: Threshold::above(30.0, 60.0),
            min_wasted_bytes: 1024 * 1024,
        }
    }
}

/// Table or index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelationKind {
    /// A table or materialized view.
    Table,
    /// A btree index.
    Index,
}

/// How a bloat figure was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BloatMethod {
    /// From statistics (`pg_stats` widths and `reltuples`).
    Estimate,
    /// Measured with `pgstattuple_approx`.
    PgstattupleApprox,
    /// Measured with `pgstatindex`.
    Pgstatindex,
}

/// Bloat of one relation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelationBloat {
    /// Qualified name.
    pub relation: String,
    /// Its table (for indexes) or itself.
    pub table: String,
    /// Table or index.
    pub kind: RelationKind,
    /// `pg_class.oid`.
    pub oid: i64,
    /// Current size in bytes.
    pub bytes: i64,
    /// Estimated wasted bytes (space beyond what the live rows need at the fillfactor).
    pub estimated_wasted_bytes: i64,
    /// Estimated wasted percent.
    pub estimated_percent: f64,
    /// Measured wasted bytes, when measured.
    pub measured_wasted_bytes: Option<i64>,
    /// Measured wasted percent, when measured.
    pub measured_percent: Option<f64>,
    /// Where the best figure comes from.
    pub method: BloatMethod,
}

impl RelationBloat {
    /// The best figure: measured if available, else estimated.
    pub fn wasted_percent(&self) -> f64 {
        self.measured_percent.unwrap_or(self.estimated_percent)
    }

    /// The best figure in bytes.
    pub fn wasted_bytes(&self) -> i64 {
        self.measured_wasted_bytes
            .unwrap_or(self.estimated_wasted_bytes)
    }
}

/// Bloat of the database's tables and btree indexes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BloatReport {
    /// Whether pgstattuple was installed (measurements possible).
    pub pgstattuple: bool,
    /// Tables, most wasted bytes first.
    pub tables: Vec<RelationBloat>,
    /// Btree indexes, most wasted bytes first.
    pub indexes: Vec<RelationBloat>,
    /// Findings.
    pub findings: Vec<Finding>,
}

pub(crate) const EXTENSION_SQL: &str = "SELECT extname::text AS name, extversion AS version FROM pg_extension WHERE extname = $1::text";

pub(crate) const TABLE_ESTIMATE_SQL: &str = "WITH t AS ( \
 SELECT c.oid, c.oid::regclass::text AS relation, c.reltuples::float8 AS reltuples, \
   (c.relpages + coalesce(tc.relpages, 0))::float8 AS pages, coalesce(tc.reltuples, 0)::float8 AS toast_tuples, \
   coalesce((SELECT substring(o FROM 'fillfactor=([0-9]+)')::float8 FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 100) AS fillfactor, \
   (23 + CASE WHEN max(coalesce(s.null_frac, 0)) > 0 THEN (7 + count(a.attnum)) / 8 ELSE 0 END)::float8 AS hdr, \
   sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 0))::float8 AS width, \
   (count(s.attname) < count(a.attnum) OR c.reltuples < 0) AS no_stats \
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
 LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname AND NOT s.inherited \
 LEFT JOIN pg_class tc ON tc.oid = c.reltoastrelid \
 WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' \
   AND pg_relation_size(c.oid) >= $1::int8 \
 GROUP BY c.oid, tc.relpages, tc.reltuples) \
 SELECT oid::int8 AS oid, relation, relation AS table_name, \
   (pages * current_setting('block_size')::float8) AS bytes, pages, reltuples, toast_tuples, fillfactor, hdr, width, no_stats, \
   current_setting('block_size')::float8 AS block_size FROM t";

pub(crate) const INDEX_ESTIMATE_SQL: &str = "SELECT i.indexrelid::int8 AS oid, i.indexrelid::regclass::text AS relation, \
 i.indrelid::regclass::text AS table_name, ci.relpages::float8 AS pages, ci.reltuples::float8 AS reltuples, \
 0::float8 AS toast_tuples, \
 coalesce((SELECT substring(o FROM 'fillfactor=([0-9]+)')::float8 FROM unnest(ci.reloptions) o WHERE o LIKE 'fillfactor=%'), 90) AS fillfactor, \
 (8 + CASE WHEN max(coalesce(s.null_frac, 0)) > 0 THEN 8 ELSE 0 END)::float8 AS hdr, \
 sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024))::float8 AS width, \
 (bool_or(k.attnum = 0) OR count(s.attname) < count(*) OR ci.reltuples < 0) AS no_stats, \
 (ci.relpages * current_setting('block_size')::float8) AS bytes, current_setting('block_size')::float8 AS block_size \
 FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid \
 JOIN pg_am am ON am.oid = ci.relam AND am.amname = 'btree' \
 JOIN pg_class ct ON ct.oid = i.indrelid JOIN pg_namespace n ON n.oid = ct.relnamespace \
 CROSS JOIN LATERAL unnest(i.indkey::int2[]) AS k(attnum) \
 LEFT JOIN pg_attribute a ON a.attrelid = ct.oid AND a.attnum = k.attnum AND k.attnum > 0 \
 LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = ct.relname AND s.attname = a.attname AND NOT s.inherited \
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' AND i.indisvalid \
   AND pg_relation_size(i.indexrelid) >= $1::int8 \
 GROUP BY i.indexrelid, i.indrelid, ci.relpages, ci.reltuples, ci.reloptions";

pub(crate) const PGSTATTUPLE_APPROX_SQL: &str = "SELECT table_len::int8 AS bytes, \
 (approx_free_space + dead_tuple_len)::int8 AS wasted FROM pgstattuple_approx($1::int8::oid::regclass)";

pub(crate) const PGSTATINDEX_SQL: &str = "SELECT index_size::int8 AS bytes, avg_leaf_density::float8 AS density, \
 leaf_pages::int8 AS leaf_pages FROM pgstatindex($1::int8::oid::regclass)";

fn align8(x: f64) -> f64 {
    (x / 8.0).ceil() * 8.0
}

/// The statistical estimate for one row of the estimate queries.
pub(crate) fn estimate(row: &PgRow, kind: RelationKind) -> Result<Option<RelationBloat>, DbError> {
    if row.bool("no_stats")? {
        return Ok(None);
    }
    let pages = row.f64("pages")?;
    let bs = row.f64("block_size")?;
    let tuples = row.f64("reltuples")?.max(0.0);
    let ff = row.f64("fillfactor")?.clamp(10.0, 100.0) / 100.0;
    let hdr = row.f64("hdr")?;
    let width = row.f64("width")?;
    let (usable, tuple, extra) = match kind {
        RelationKind::Table => (
            (bs - 24.0) * ff,
            4.0 + align8(hdr) + align8(width),
            (row.f64("toast_tuples")? / 4.0).ceil(),
        ),
        // page header 24 + btree special space 16; one meta page.
        RelationKind::Index => ((bs - 24.0 - 16.0) * ff, 4.0 + align8(hdr + width), 1.0),
    };
    if usable <= 0.0 || tuple <= 0.0 {
        return Ok(None);
    }
    let expected = (tuples * tuple / usable).ceil() + extra;
    let wasted_pages = (pages - expected).max(0.0);
    let percent = if pages > 0.0 {
        wasted_pages / pages * 100.0
    } else {
        0.0
    };
    Ok(Some(RelationBloat {
        relation: row.str("relation")?,
        table: row.str("table_name")?,
        kind,
        oid: row.i64("oid")?,
        bytes: row.f64("bytes")? as i64,
        estimated_wasted_bytes: (wasted_pages * bs) as i64,
        estimated_percent: percent,
        measured_wasted_bytes: None,
        measured_percent: None,
        method: BloatMethod::Estimate,
    }))
}

/// Wasted share of a btree index from `pgstatindex`: leaf density below the fillfactor's.
pub(crate) fn index_waste(bytes: i64, density: f64, fillfactor: f64) -> (i64, f64) {
    if !density.is_finite() || bytes <= 0 {
        return (0, 0.0);
    }
    let percent = ((1.0 - density / fillfactor) * 100.0).clamp(0.0, 100.0);
    ((bytes as f64 * percent / 100.0) as i64, percent)
}

/// True when the extension is installed in the connected database.
pub async fn extension_installed<A: PgAdmin + ?Sized>(
    admin: &A,
    name: &str,
) -> Result<bool, DbError> {
    Ok(!admin
        .query(Sql::new(EXTENSION_SQL), &[PgParam::Text(name.into())])
        .await?
        .is_empty())
}

/// Measures one candidate with pgstattuple; fills the measured fields.
pub(crate) async fn measure<A: PgAdmin + ?Sized>(
    admin: &A,
    b: &mut RelationBloat,
) -> Result<(), DbError> {
    match b.kind {
        RelationKind::Table => {
            let rows = admin
                .query(Sql::new(PGSTATTUPLE_APPROX_SQL), &[PgParam::Int(b.oid)])
                .await?;
            if let Some(r) = rows.first() {
                let bytes = r.i64("bytes")?;
                let wasted = r.i64("wasted")?;
                b.bytes = bytes;
                b.measured_wasted_bytes = Some(wasted);
                b.measured_percent = Some(if bytes > 0 {
                    wasted as f64 / bytes as f64 * 100.0
                } else {
                    0.0
                });
                b.method = BloatMethod::PgstattupleApprox;
            }
        }
        RelationKind::Index => {
            let rows = admin
                .query(Sql::new(PGSTATINDEX_SQL), &[PgParam::Int(b.oid)])
                .await?;
            if let Some(r) = rows.first() {
                let bytes = r.i64("bytes")?;
                let density = r.opt_f64("density")?.unwrap_or(f64::NAN);
                let (wasted, pct) = index_waste(bytes, density, 90.0);
                b.bytes = bytes;
                b.measured_wasted_bytes = Some(wasted);
                b.measured_percent = Some(pct);
                b.method = BloatMethod::Pgstatindex;
            }
        }
    }
    Ok(())
}

/// Estimates bloat of every table and btree index, and measures the worst ones.
pub async fn bloat_report<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &BloatOptions,
) -> Result<BloatReport, DbError> {
    let min = [PgParam::Int(opts.min_bytes)];
    let (ext, tables, indexes) = tokio::join!(
        extension_installed(admin, "pgstattuple"),
        admin.query(Sql::new(TABLE_ESTIMATE_SQL), &min),
        admin.query(Sql::new(INDEX_ESTIMATE_SQL), &min)
    );
    let pgstattuple = ext?;
    let mut t = Vec::new();
    for r in &tables? {
        if let Some(b) = estimate(r, RelationKind::Table)? {
            t.push(b);
        }
    }
    let mut i = Vec::new();
    for r in &indexes? {
        if let Some(b) = estimate(r, RelationKind::Index)? {
            i.push(b);
        } else if pgstattuple {
            // No usable statistics (expression index, never analyzed): measure instead of guessing.
            i.push(RelationBloat {
                relation: r.str("relation")?,
                table: r.str("table_name")?,
                kind: RelationKind::Index,
                oid: r.i64("oid")?,
                bytes: r.f64("bytes")? as i64,
                estimated_wasted_bytes: 0,
                estimated_percent: 0.0,
                measured_wasted_bytes: None,
                measured_percent: None,
                method: BloatMethod::Estimate,
            });
        }
    }
    let mut findings = Vec::new();
    if pgstattuple {
        t.sort_by_key(|b| std::cmp::Reverse(b.estimated_wasted_bytes));
        i.sort_by_key(|b| std::cmp::Reverse(b.estimated_wasted_bytes));
        let n = opts.confirm_top;
        // Indexes without an estimate are always measured.
        let mut jobs: Vec<&mut RelationBloat> = t.iter_mut().take(n).collect();
        for (k, b) in i.iter_mut().enumerate() {
            if k < n || (b.estimated_percent == 0.0 && b.estimated_wasted_bytes == 0) {
                jobs.push(b);
            }
        }
        let results = futures::future::join_all(jobs.into_iter().map(|b| measure(admin, b))).await;
        for e in results.into_iter().filter_map(Result::err) {
            findings.push(Finding::new(
                "postgres.bloat",
                Severity::Unknown,
                format!("pgstattuple measurement failed: {e}"),
            ));
        }
    } else {
        findings.push(Finding::ok(
            "postgres.bloat",
            "pgstattuple is not installed: bloat figures are statistical estimates (CREATE EXTENSION pgstattuple to measure the worst candidates)",
        ));
    }
    t.sort_by_key(|b| std::cmp::Reverse(b.wasted_bytes()));
    i.sort_by_key(|b| std::cmp::Reverse(b.wasted_bytes()));
    findings.extend(bloat_findings(&t, &i, opts));
    Ok(BloatReport {
        pgstattuple,
        tables: t,
        indexes: i,
        findings,
    })
}

/// Findings for relations whose waste passes the thresholds.
pub(crate) fn bloat_findings(
    tables: &[RelationBloat],
    indexes: &[RelationBloat],
    opts: &BloatOptions,
) -> Vec<Finding> {
    let mut v = Vec::new();
    for b in tables.iter().chain(indexes) {
        if b.wasted_bytes() < opts.min_wasted_bytes {
            continue;
        }
        let sev = opts.percent.evaluate(b.wasted_percent());
        if sev == Severity::Ok {
            continue;
        }
        let advice = match b.kind {
            RelationKind::Table => {
                "VACUUM makes the space reusable; only VACUUM FULL (exclusive lock) or pg_repack returns it to the OS"
            }
            RelationKind::Index => {
                "REINDEX INDEX CONCURRENTLY rebuilds it without blocking writes (tej db reindex)"
            }
        };
        v.push(
            Finding::new(
                "postgres.bloat",
                sev,
                format!(
                    "{} {} wastes {} of {} ({:.0}%, {})",
                    match b.kind {
                        RelationKind::Table => "table",
                        RelationKind::Index => "index",
                    },
                    b.relation,
                    human_bytes(b.wasted_bytes() as f64),
                    human_bytes(b.bytes as f64),
                    b.wasted_percent(),
                    match b.method {
                        BloatMethod::Estimate => "estimated",
                        _ => "measured",
                    }
                ),
            )
            .target(&b.relation)
            .detail(advice)
            .metric(
                Metric::new("bloat_percent", b.wasted_percent(), "%").with_threshold(opts.percent),
            )
            .metric(Metric::new("bloat_bytes", b.wasted_bytes() as f64, "B")),
        );
    }
    if v.is_empty() {
        v.push(Finding::ok(
            "postgres.bloat",
            "no table or index is bloated beyond the thresholds",
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pages: f64, tuples: f64, width: f64, no_stats: bool) -> PgRow {
        PgRow::from_pairs([
            ("oid", super::super::PgValue::Int(1)),
            ("relation", "public.t".into()),
            ("table_name", "public.t".into()),
            ("bytes", (pages * 8192.0).into()),
            ("pages", pages.into()),
            ("reltuples", tuples.into()),
            ("toast_tuples", 0.0.into()),
            ("fillfactor", 100.0.into()),
            ("hdr", 23.0.into()),
            ("width", width.into()),
            ("no_stats", no_stats.into()),
            ("block_size", 8192.0.into()),
        ])
    }

    #[test]
    fn table_estimate_matches_hand_computation() {
        // 100 000 rows of 100 bytes: 4 + 24 + 104 = 132 bytes each, 61 per 8168-byte page
        // -> 1617 pages expected; 4000 pages present -> 2383 wasted (59.6%).
        let b = estimate(&row(4000.0, 100_000.0, 100.0, false), RelationKind::Table)
            .unwrap()
            .unwrap();
        let expected = (100_000.0f64 * 132.0 / 8168.0).ceil();
        assert_eq!(
            b.estimated_wasted_bytes,
            ((4000.0 - expected) * 8192.0) as i64
        );
        assert!((b.estimated_percent - (4000.0 - expected) / 40.0).abs() < 1e-9);
        // A tight table is not bloated; no statistics gives no estimate.
        let tight = estimate(&row(expected, 100_000.0, 100.0, false), RelationKind::Table)
            .unwrap()
            .unwrap();
        assert_eq!(tight.estimated_wasted_bytes, 0);
        assert!(
            estimate(&row(10.0, 1.0, 1.0, true), RelationKind::Table)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn index_waste_from_leaf_density() {
        assert_eq!(index_waste(1000, 90.0, 90.0), (0, 0.0));
        let (w, p) = index_waste(1000, 45.0, 90.0);
        assert_eq!(w, 500);
        assert!((p - 50.0).abs() < 1e-9);
        assert_eq!(index_waste(1000, f64::NAN, 90.0), (0, 0.0));
        assert_eq!(index_waste(1000, 99.0, 90.0).1, 0.0);
    }

    #[test]
    fn findings_respect_percent_and_minimum_bytes() {
        let mk = |bytes: i64, pct: f64| RelationBloat {
            relation: "public.i".into(),
            table: "public.t".into(),
            kind: RelationKind::Index,
            oid: 1,
            bytes,
            estimated_wasted_bytes: (bytes as f64 * pct / 100.0) as i64,
            estimated_percent: pct,
            measured_wasted_bytes: None,
            measured_percent: None,
            method: BloatMethod::Estimate,
        };
        let o = BloatOptions::default();
        let f = bloat_findings(&[], &[mk(100 << 20, 70.0)], &o);
        assert_eq!(f[0].severity, Severity::Critical);
        assert!(
            f[0].summary.contains("REINDEX")
                || f[0].detail.as_deref().unwrap_or("").contains("REINDEX")
        );
        let f = bloat_findings(&[], &[mk(100 << 20, 35.0)], &o);
        assert_eq!(f[0].severity, Severity::Warning);
        // tiny relation: ignored whatever its percent
        let f = bloat_findings(&[], &[mk(64 << 10, 90.0)], &o);
        assert_eq!(f[0].severity, Severity::Ok);
        // a measurement overrides the estimate
        let mut m = mk(100 << 20, 70.0);
        m.measured_percent = Some(5.0);
        m.measured_wasted_bytes = Some(5 << 20);
        assert_eq!(bloat_findings(&[], &[m], &o)[0].severity, Severity::Ok);
    }
}
