//! `tej db health|vacuum|size|bloat|slow-queries|indexes|reindex|amcheck|force-password-reset`.

use crate::args::{DbArgs, RunArgs};
use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::sync::Arc;
use tej_core::{Config, Executor, Finding, Procedure, Report};
use tej_db::pg::{
    AmcheckOptions, BloatOptions, ForcePasswordResetStep, HealthOptions, IndexAuditOptions,
    PasswordResetOptions, ReindexOptions, ReindexStep, SizeOptions, SlowQueryOptions,
    VacuumFullStep, VacuumOptions, VacuumStep, amcheck, bloat_report, check_health, human_bytes,
    index_audit, size_report, slow_queries,
};
use tej_db::{PgClient, PgConnectOptions};

/// The database: `--db`, else the first `[[database]]` (or `DATABASE_URL`/`PG*` through tej.toml's
/// environment conventions), else libpq's variables.
pub fn client(cfg: &Config, db: Option<&str>) -> Result<Arc<PgClient>> {
    let opts = match super::database_conn(cfg, db)? {
        Some((conn, password)) => {
            let o = PgConnectOptions::new(conn);
            match password {
                Some(p) => o.with_password(p),
                None => o,
            }
        }
        None => PgConnectOptions::from_env()
            .context("no database: pass --db, set DATABASE_URL or PG*, or add [[database]]")?,
    };
    Ok(Arc::new(
        PgClient::new(&opts).context("configure the PostgreSQL client")?,
    ))
}

fn emit<T: Serialize>(
    out: &mut dyn Write,
    kind: &str,
    data: &T,
    format: OutputFormat,
) -> Result<()> {
    if format == OutputFormat::Json {
        json_line(out, kind, data)?;
    }
    Ok(())
}

fn report(title: &str, findings: &[Finding]) -> Report {
    let mut r = Report::new(title);
    r.extend(findings.iter().cloned());
    r
}

/// The daily health check.
pub async fn health(out: &mut dyn Write, c: &PgClient, format: OutputFormat) -> Result<Report> {
    let h = check_health(c, &HealthOptions::default()).await;
    emit(out, "db_health", &h, format)?;
    let mut r = h.report();
    r.title = "db health".into();
    Ok(r)
}

/// Database size and largest relations.
pub async fn size(out: &mut dyn Write, c: &PgClient, format: OutputFormat) -> Result<Report> {
    let s = size_report(c, &SizeOptions::default())
        .await
        .context("measure sizes")?;
    emit(out, "db_size", &s, format)?;
    if format == OutputFormat::Text {
        writeln!(
            out,
            "database {}: {}\n",
            s.database,
            human_bytes(s.database_bytes as f64)
        )?;
        writeln!(
            out,
            "{:<40} {:>10} {:>10} {:>10} {:>10}",
            "RELATION", "TABLE", "INDEXES", "TOAST", "TOTAL"
        )?;
        for r in &s.largest {
            writeln!(
                out,
                "{:<40} {:>10} {:>10} {:>10} {:>10}",
                r.relation,
                human_bytes(r.table_bytes as f64),
                human_bytes(r.index_bytes as f64),
                human_bytes(r.toast_bytes as f64),
                human_bytes(r.total_bytes as f64)
            )?;
        }
        writeln!(out)?;
    }
    Ok(report("db size", &s.findings))
}

/// Bloat estimate, confirmed with pgstattuple when installed.
pub async fn bloat(out: &mut dyn Write, c: &PgClient, format: OutputFormat) -> Result<Report> {
    let b = bloat_report(c, &BloatOptions::default())
        .await
        .context("estimate bloat")?;
    emit(out, "db_bloat", &b, format)?;
    Ok(report("db bloat", &b.findings))
}

/// Slowest statements from pg_stat_statements.
pub async fn slow(out: &mut dyn Write, c: &PgClient, format: OutputFormat) -> Result<Report> {
    let s = slow_queries(c, &SlowQueryOptions::default())
        .await
        .context("read pg_stat_statements")?;
    emit(out, "db_slow_queries", &s, format)?;
    if format == OutputFormat::Text && s.available {
        writeln!(
            out,
            "{:>10} {:>12} {:>10}  QUERY",
            "MEAN ms", "TOTAL ms", "CALLS"
        )?;
        for q in &s.queries {
            let text: String = q.query.split_whitespace().collect::<Vec<_>>().join(" ");
            let text: String = text.chars().take(100).collect();
            writeln!(
                out,
                "{:>10.2} {:>12.1} {:>10}  {text}",
                q.mean_ms, q.total_ms, q.calls
            )?;
        }
        writeln!(out)?;
    }
    Ok(report("db slow-queries", &s.findings))
}

/// Unused, duplicate and missing indexes; unindexed foreign keys.
pub async fn indexes(out: &mut dyn Write, c: &PgClient, format: OutputFormat) -> Result<Report> {
    let a = index_audit(c, &IndexAuditOptions::default())
        .await
        .context("audit indexes")?;
    emit(out, "db_indexes", &a, format)?;
    Ok(report("db indexes", &a.findings))
}

/// amcheck over tables and btree indexes.
pub async fn check_corruption(
    out: &mut dyn Write,
    c: &PgClient,
    format: OutputFormat,
) -> Result<Report> {
    let a = amcheck(c, &AmcheckOptions::default())
        .await
        .context("run amcheck")?;
    emit(out, "db_amcheck", &a, format)?;
    Ok(report("db amcheck", &a.findings))
}

/// Which maintenance step to run.
pub enum Maintenance {
    /// VACUUM (ANALYZE) of the database or tables.
    Vacuum(Vec<String>),
    /// VACUUM FULL of the tables (destructive).
    VacuumFull(Vec<String>),
    /// REINDEX INDEX CONCURRENTLY above a bloat threshold.
    Reindex(f64),
    /// Force a password reset for every user (destructive).
    ForcePasswordReset {
        /// Users table.
        table: String,
        /// Flag column.
        column: String,
    },
}

/// Runs one maintenance step under the executor (plan, guard, audit).
pub async fn maintain(
    out: &mut dyn Write,
    ex: &Executor,
    c: Arc<PgClient>,
    what: Maintenance,
    format: OutputFormat,
) -> Result<bool> {
    let p = match what {
        Maintenance::Vacuum(tables) => Procedure::new("db vacuum").step(VacuumStep {
            admin: c,
            options: VacuumOptions {
                tables,
                ..VacuumOptions::default()
            },
        }),
        Maintenance::VacuumFull(tables) => {
            Procedure::new("db vacuum --full").step(VacuumFullStep {
                admin: c,
                tables,
                lock_timeout: std::time::Duration::from_secs(10),
            })
        }
        Maintenance::Reindex(threshold) => Procedure::new("db reindex").step(ReindexStep {
            admin: c,
            options: ReindexOptions {
                bloat_percent: threshold,
                ..ReindexOptions::default()
            },
        }),
        Maintenance::ForcePasswordReset { table, column } => {
            Procedure::new("db force-password-reset").step(ForcePasswordResetStep {
                admin: c,
                options: PasswordResetOptions { table, column },
            })
        }
    };
    let r = ex.run(&p).await;
    super::host::render_procedure(out, &r, format)?;
    Ok(r.succeeded())
}

/// `tej db`.
#[derive(Debug, clap::Subcommand)]
pub enum DbCmd {
    /// Daily check: reachability, connections, wraparound, xmin horizon, locks, archiver, checksums, sequences.
    Health(DbArgs),
    /// VACUUM (ANALYZE) without blocking writers; `--full` rewrites tables (destructive).
    Vacuum {
        #[command(flatten)]
        db: DbArgs,
        /// Tables (default: the whole database; required with --full).
        #[arg(long = "table")]
        tables: Vec<String>,
        /// VACUUM FULL (exclusive lock): confirmation and, in production, the maintenance window.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Database size and largest relations (table, indexes, TOAST).
    Size(DbArgs),
    /// Bloat of tables and btree indexes (estimate, confirmed with pgstattuple).
    Bloat(DbArgs),
    /// Slowest statements from pg_stat_statements.
    SlowQueries(DbArgs),
    /// Unused, duplicate and missing indexes; foreign keys without an index.
    Indexes(DbArgs),
    /// REINDEX INDEX CONCURRENTLY where bloat exceeds the threshold.
    Reindex {
        #[command(flatten)]
        db: DbArgs,
        /// Bloat percent above which an index is rebuilt.
        #[arg(long, default_value_t = 20.0)]
        threshold: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Corruption check with amcheck (heap and btree).
    Amcheck(DbArgs),
    /// Set the password-reset flag for every user, in one transaction (destructive).
    ForcePasswordReset {
        #[command(flatten)]
        db: DbArgs,
        /// Users table.
        #[arg(long, default_value = "users")]
        table: String,
        /// Boolean flag column.
        #[arg(long, default_value = "password_reset_required")]
        column: String,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Runs `tej db ...`: a check's Nagios exit code, or a maintenance step's 0 (applied or
/// planned) or 1.
pub fn dispatch(ctx: &crate::context::Context, out: &mut dyn Write, cmd: DbCmd) -> Result<i32> {
    let format = ctx.format();
    let cfg = ctx.config()?;
    let (db, what, run) = match cmd {
        DbCmd::Health(a) => return check(ctx, out, a, Check::Health),
        DbCmd::Size(a) => return check(ctx, out, a, Check::Size),
        DbCmd::Bloat(a) => return check(ctx, out, a, Check::Bloat),
        DbCmd::SlowQueries(a) => return check(ctx, out, a, Check::SlowQueries),
        DbCmd::Indexes(a) => return check(ctx, out, a, Check::Indexes),
        DbCmd::Amcheck(a) => return check(ctx, out, a, Check::Amcheck),
        DbCmd::Vacuum {
            db,
            tables,
            full,
            run,
        } => {
            anyhow::ensure!(
                !full || !tables.is_empty(),
                "VACUUM FULL needs the tables to rewrite: pass --table NAME (repeatable)"
            );
            let what = if full {
                Maintenance::VacuumFull(tables)
            } else {
                Maintenance::Vacuum(tables)
            };
            (db, what, run)
        }
        DbCmd::Reindex { db, threshold, run } => (db, Maintenance::Reindex(threshold), run),
        DbCmd::ForcePasswordReset {
            db,
            table,
            column,
            run,
        } => (db, Maintenance::ForcePasswordReset { table, column }, run),
    };
    let c = client(cfg, db.db.as_deref())?;
    let ex = ctx.executor(&run)?;
    let ok = ctx.block_on(maintain(out, &ex, c, what, format))??;
    Ok(crate::context::exit_code(ok))
}

/// The read-only checks of `tej db`.
#[derive(Debug, Clone, Copy)]
enum Check {
    Health,
    Size,
    Bloat,
    SlowQueries,
    Indexes,
    Amcheck,
}

/// Runs one check against `--db` (else the configured database) and renders its report.
fn check(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    db: DbArgs,
    which: Check,
) -> Result<i32> {
    let format = ctx.format();
    let c = client(ctx.config()?, db.db.as_deref())?;
    let report = ctx.block_on(async {
        match which {
            Check::Health => health(out, &c, format).await,
            Check::Size => size(out, &c, format).await,
            Check::Bloat => bloat(out, &c, format).await,
            Check::SlowQueries => slow(out, &c, format).await,
            Check::Indexes => indexes(out, &c, format).await,
            Check::Amcheck => check_corruption(out, &c, format).await,
        }
    })??;
    ctx.finish_report(out, &report)
}
