//! `VACUUM (ANALYZE)` with progress and before/after dead tuples, `ANALYZE` alone, and
//! `VACUUM FULL` as a destructive step that needs a table list and confirmation.

use super::Sql;
use super::util::{human_bytes, human_duration};
use super::{DbError, PgAdmin, PgParam, SessionLimits, quote_qualified};
use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tej_core::{Finding, Metric, Plan, Risk, Step, StepError, StepOutput};

/// Options of a `VACUUM (ANALYZE)` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VacuumOptions {
    /// Tables (`table` or `schema.table`, taken literally); empty for the whole database.
    pub tables: Vec<String>,
    /// Also ANALYZE.
    pub analyze: bool,
    /// Let VACUUM truncate empty pages at the end of tables. Off by default: truncation takes an
    /// ACCESS EXCLUSIVE lock for a moment, which can stall writers and replicas.
    pub truncate: bool,
    /// `lock_timeout` of the session (tables whose lock is taken are skipped anyway: SKIP_LOCKED).
    pub lock_timeout: Duration,
    /// `statement_timeout` of the session (none: unlimited).
    pub statement_timeout: Option<Duration>,
    /// How often to sample `pg_stat_progress_vacuum`.
    pub progress_interval: Duration,
}

impl Default for VacuumOptions {
    fn default() -> Self {
        VacuumOptions {
            tables: Vec::new(),
            analyze: true,
            truncate: false,
            lock_timeout: Duration::from_secs(5),
            statement_timeout: None,
            progress_interval: Duration::from_millis(500),
        }
    }
}

/// One sample of `pg_stat_progress_vacuum`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VacuumProgress {
    /// Backend running the vacuum.
    pub pid: i64,
    /// Table being vacuumed.
    pub table: String,
    /// Phase (`scanning heap`, `vacuuming indexes`...).
    pub phase: String,
    /// Heap blocks in the table.
    pub heap_blks_total: i64,
    /// Heap blocks scanned so far.
    pub heap_blks_scanned: i64,
    /// Heap blocks vacuumed so far.
    pub heap_blks_vacuumed: i64,
    /// Rounds of index vacuuming done.
    pub index_vacuum_count: i64,
}

impl VacuumProgress {
    /// Percent of heap blocks scanned.
    pub fn percent(&self) -> f64 {
        if self.heap_blks_total > 0 {
            self.heap_blks_scanned as f64 / self.heap_blks_total as f64 * 100.0
        } else {
            0.0
        }
    }
}

/// Dead and live tuples of one table before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableVacuum {
    /// Qualified table name.
    pub table: String,
    /// `n_dead_tup` before.
    pub dead_before: i64,
    /// `n_dead_tup` after.
    pub dead_after: i64,
    /// `n_live_tup` after.
    pub live_after: i64,
}

/// What a vacuum achieved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VacuumReport {
    /// The statement run.
    pub statement: String,
    /// Per table, most dead tuples removed first.
    pub tables: Vec<TableVacuum>,
    /// Dead tuples before, in total.
    pub dead_before: i64,
    /// Dead tuples after, in total.
    pub dead_after: i64,
    /// Progress samples taken while it ran.
    pub progress: Vec<VacuumProgress>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Findings (a pinned horizon shows up as dead tuples that could not be removed).
    pub findings: Vec<Finding>,
}

pub(crate) const DEAD_TUPLES_SQL: &str = "SELECT format('%I.%I', schemaname, relname) AS table_name, relid::regclass::text AS reg_name, \
 n_dead_tup::int8 AS dead, n_live_tup::int8 AS live FROM pg_stat_user_tables ORDER BY 1";

pub(crate) const PROGRESS_SQL: &str = "SELECT pid::int8 AS pid, relid::regclass::text AS table_name, phase, \
 heap_blks_total::int8 AS heap_blks_total, heap_blks_scanned::int8 AS heap_blks_scanned, \
 heap_blks_vacuumed::int8 AS heap_blks_vacuumed, index_vacuum_count::int8 AS index_vacuum_count \
 FROM pg_stat_progress_vacuum WHERE datname = current_database()";

/// The VACUUM statement for `opts`.
pub fn vacuum_statement(opts: &VacuumOptions) -> Result<String, DbError> {
    let mut flags = Vec::new();
    if opts.analyze {
        flags.push("ANALYZE");
    }
    flags.push("SKIP_LOCKED");
    if !opts.truncate {
        flags.push("TRUNCATE false");
    }
    let tables = opts
        .tables
        .iter()
        .map(|t| quote_qualified(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sql = format!("VACUUM ({})", flags.join(", "));
    if !tables.is_empty() {
        sql.push(' ');
        sql.push_str(&tables.join(", "));
    }
    Ok(sql)
}

fn matches_table(wanted: &[String], name: &str, reg: &str) -> bool {
    wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == name || w == reg || format!("public.{w}") == name)
}

async fn dead_tuples<A: PgAdmin + ?Sized>(
    admin: &A,
    wanted: &[String],
) -> Result<Vec<(String, i64, i64)>, DbError> {
    let rows = admin.query(Sql::new(DEAD_TUPLES_SQL), &[]).await?;
    let mut v = Vec::new();
    for r in &rows {
        let name = r.str("table_name")?;
        if matches_table(wanted, &name, &r.str("reg_name")?) {
            v.push((name, r.i64("dead")?, r.i64("live")?));
        }
    }
    Ok(v)
}

/// Runs `VACUUM (ANALYZE, SKIP_LOCKED)`, sampling progress and comparing dead tuples before and after.
/// `on_progress` sees each sample as it is taken.
pub async fn vacuum<A: PgAdmin + ?Sized>(
    admin: &A,
    opts: &VacuumOptions,
    on_progress: &(dyn Fn(&VacuumProgress) + Send + Sync),
) -> Result<VacuumReport, DbError> {
    let statement = vacuum_statement(opts)?;
    let before = dead_tuples(admin, &opts.tables).await?;
    if !opts.tables.is_empty() && before.len() < opts.tables.len() {
        let missing: Vec<&String> = opts
            .tables
            .iter()
            .filter(|w| {
                !before
                    .iter()
                    .any(|(n, _, _)| matches_table(std::slice::from_ref(w), n, n))
            })
            .collect();
        if !missing.is_empty() {
            return Err(DbError::InvalidConfig(format!(
                "no such table: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let limits = SessionLimits {
        statement_timeout: opts.statement_timeout,
        lock_timeout: Some(opts.lock_timeout),
    };
    let started = Instant::now();
    let mut progress = Vec::new();
    let run_sql = statement.clone();
    let run = admin.maintenance(Sql::owned(run_sql.clone()), limits);
    tokio::pin!(run);
    let mut ticker = tokio::time::interval(opts.progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = ticker.tick() => {
                if let Ok(rows) = admin.query(Sql::new(PROGRESS_SQL), &[]).await {
                    for r in &rows {
                        let p = VacuumProgress {
                            pid: r.i64("pid")?,
                            table: r.str("table_name")?,
                            phase: r.str("phase")?,
                            heap_blks_total: r.i64("heap_blks_total")?,
                            heap_blks_scanned: r.i64("heap_blks_scanned")?,
                            heap_blks_vacuumed: r.i64("heap_blks_vacuumed")?,
                            index_vacuum_count: r.i64("index_vacuum_count")?,
                        };
                        on_progress(&p);
                        progress.push(p);
                    }
                }
            }
        }
    };
    result?;
    let duration_ms = started.elapsed().as_millis() as u64;
    let after = dead_tuples(admin, &opts.tables).await?;
    let mut tables: Vec<TableVacuum> = after
        .iter()
        .map(|(name, dead, live)| TableVacuum {
            table: name.clone(),
            dead_before: before.iter().find(|(n, _, _)| n == name).map_or(0, |b| b.1),
            dead_after: *dead,
            live_after: *live,
        })
        .collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.dead_before - t.dead_after));
    let dead_before: i64 = tables.iter().map(|t| t.dead_before).sum();
    let dead_after: i64 = tables.iter().map(|t| t.dead_after).sum();
    let mut findings = vec![
        Finding::ok(
            "postgres.vacuum",
            format!(
                "{statement} took {}: dead tuples {dead_before} -> {dead_after}",
                human_duration(duration_ms as f64 / 1000.0)
            ),
        )
        .target(admin.target())
        .metric(Metric::new(
            "dead_tuples_before",
            dead_before as f64,
            "count",
        ))
        .metric(Metric::new("dead_tuples_after", dead_after as f64, "count")),
    ];
    if dead_before > 0 && dead_after * 2 > dead_before && dead_after > 1000 {
        findings.push(
            Finding::new(
                "postgres.vacuum",
                tej_core::Severity::Warning,
                format!(
                    "VACUUM removed little: {dead_after} of {dead_before} dead tuples remain; something pins the xmin horizon (see tej db health) or tables were skipped because they were locked"
                ),
            )
            .target(admin.target()),
        );
    }
    Ok(VacuumReport {
        statement,
        tables,
        dead_before,
        dead_after,
        progress,
        duration_ms,
        findings,
    })
}

fn step_output<T: Serialize>(summary: String, findings: Vec<Finding>, data: &T) -> StepOutput {
    StepOutput {
        summary,
        findings,
        data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
    }
}

/// `VACUUM (ANALYZE)` as a mutating step.
pub struct VacuumStep {
    /// The database.
    pub admin: Arc<dyn PgAdmin>,
    /// What to vacuum.
    pub options: VacuumOptions,
}

#[async_trait]
impl Step for VacuumStep {
    fn name(&self) -> String {
        "vacuum-analyze".into()
    }
    fn risk(&self) -> Risk {
        Risk::Mutating
    }
    fn target(&self) -> String {
        self.admin.target()
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        Ok(Plan::of(
            self,
            vec![format!(
                "{} (lock_timeout {} ms; never waits on locked tables, does not block writers)",
                vacuum_statement(&self.options)?,
                self.options.lock_timeout.as_millis()
            )],
        ))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = vacuum(self.admin.as_ref(), &self.options, &|_| {}).await?;
        Ok(step_output(
            format!(
                "dead tuples {} -> {} in {} ms",
                r.dead_before, r.dead_after, r.duration_ms
            ),
            r.findings.clone(),
            &r,
        ))
    }
}

/// `ANALYZE` alone (statistics only), as a mutating step.
pub struct AnalyzeStep {
    /// The database.
    pub admin: Arc<dyn PgAdmin>,
    /// Tables; empty for the whole database.
    pub tables: Vec<String>,
    /// `lock_timeout`.
    pub lock_timeout: Duration,
}

impl AnalyzeStep {
    fn statement(&self) -> Result<String, DbError> {
        let t = self
            .tables
            .iter()
            .map(|t| quote_qualified(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if t.is_empty() {
            "ANALYZE (SKIP_LOCKED)".into()
        } else {
            format!("ANALYZE (SKIP_LOCKED) {}", t.join(", "))
        })
    }
}

#[async_trait]
impl Step for AnalyzeStep {
    fn name(&self) -> String {
        "analyze".into()
    }
    fn risk(&self) -> Risk {
        Risk::Mutating
    }
    fn target(&self) -> String {
        self.admin.target()
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        Ok(Plan::of(self, vec![self.statement()?]))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        let sql = self.statement()?;
        let t = Instant::now();
        self.admin
            .maintenance(
                Sql::owned(sql.clone()),
                SessionLimits {
                    statement_timeout: None,
                    lock_timeout: Some(self.lock_timeout),
                },
            )
            .await?;
        Ok(StepOutput::summary(format!(
            "{sql} took {} ms",
            t.elapsed().as_millis()
        )))
    }
}

/// Sizes before and after `VACUUM FULL` of one table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VacuumFullResult {
    /// The table.
    pub table: String,
    /// Total bytes before.
    pub bytes_before: i64,
    /// Total bytes after.
    pub bytes_after: i64,
}

pub(crate) const TOTAL_SIZE_SQL: &str =
    "SELECT pg_total_relation_size(to_regclass($1::text))::int8 AS bytes";

/// `VACUUM FULL` of listed tables: destructive (ACCESS EXCLUSIVE lock, rewrites the table), so it
/// needs confirmation and, in production, the maintenance window.
pub struct VacuumFullStep {
    /// The database.
    pub admin: Arc<dyn PgAdmin>,
    /// Tables to rewrite; must not be empty.
    pub tables: Vec<String>,
    /// How long to wait for the exclusive lock before giving up.
    pub lock_timeout: Duration,
}

#[async_trait]
impl Step for VacuumFullStep {
    fn name(&self) -> String {
        "vacuum-full".into()
    }
    fn risk(&self) -> Risk {
        Risk::Destructive
    }
    fn target(&self) -> String {
        format!("{} tables {}", self.admin.target(), self.tables.join(", "))
    }
    async fn plan(&self) -> Result<Plan, StepError> {
        if self.tables.is_empty() {
            return Err(DbError::Refused("VACUUM FULL needs an explicit table list".into()).into());
        }
        let mut actions = Vec::new();
        for t in &self.tables {
            let q = quote_qualified(t)?;
            let rows = self
                .admin
                .query(Sql::new(TOTAL_SIZE_SQL), &[PgParam::Text(q.clone())])
                .await?;
            let bytes = rows
                .first()
                .map(|r| r.opt_i64("bytes"))
                .transpose()?
                .flatten();
            let Some(bytes) = bytes else {
                return Err(DbError::InvalidConfig(format!("no such table: {t}")).into());
            };
            actions.push(format!(
                "VACUUM (FULL, ANALYZE) {q}: rewrites {} under an ACCESS EXCLUSIVE lock (reads and writes wait), needs about {} free",
                human_bytes(bytes as f64),
                human_bytes(bytes as f64)
            ));
        }
        Ok(Plan::of(self, actions))
    }
    async fn apply(&self) -> Result<StepOutput, StepError> {
        if self.tables.is_empty() {
            return Err(DbError::Refused("VACUUM FULL needs an explicit table list".into()).into());
        }
        let mut results = Vec::new();
        for t in &self.tables {
            let q = quote_qualified(t)?;
            let size = |rows: Vec<super::PgRow>| -> Result<i64, DbError> {
                Ok(rows
                    .first()
                    .map(|r| r.opt_i64("bytes"))
                    .transpose()?
                    .flatten()
                    .unwrap_or(0))
            };
            let bytes_before = size(
                self.admin
                    .query(Sql::new(TOTAL_SIZE_SQL), &[PgParam::Text(q.clone())])
                    .await?,
            )?;
            self.admin
                .maintenance(
                    Sql::owned(format!("VACUUM (FULL, ANALYZE) {q}")),
                    SessionLimits {
                        statement_timeout: None,
                        lock_timeout: Some(self.lock_timeout),
                    },
                )
                .await?;
            let bytes_after = size(
                self.admin
                    .query(Sql::new(TOTAL_SIZE_SQL), &[PgParam::Text(q.clone())])
                    .await?,
            )?;
            results.push(VacuumFullResult {
                table: t.clone(),
                bytes_before,
                bytes_after,
            });
        }
        let freed: i64 = results.iter().map(|r| r.bytes_before - r.bytes_after).sum();
        Ok(step_output(
            format!(
                "VACUUM FULL of {} tables freed {}",
                results.len(),
                human_bytes(freed as f64)
            ),
            Vec::new(),
            &results,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_quotes_tables_and_never_truncates_by_default() {
        let o = VacuumOptions {
            tables: vec!["public.Orders".into(), "t".into()],
            ..VacuumOptions::default()
        };
        assert_eq!(
            vacuum_statement(&o).unwrap(),
            "VACUUM (ANALYZE, SKIP_LOCKED, TRUNCATE false) \"public\".\"Orders\", \"t\""
        );
        let o = VacuumOptions {
            analyze: false,
            truncate: true,
            ..VacuumOptions::default()
        };
        assert_eq!(vacuum_statement(&o).unwrap(), "VACUUM (SKIP_LOCKED)");
        let o = VacuumOptions {
            tables: vec!["a.b.c".into()],
            ..VacuumOptions::default()
        };
        assert!(vacuum_statement(&o).is_err());
    }
}
