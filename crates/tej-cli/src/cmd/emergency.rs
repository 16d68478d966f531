//! `tej emergency db-corruption` and `tej emergency security-breach --address IP`: the
//! runbook's guided emergency procedures from tej-runbook, run under the command's executor
//! (dry run, confirmation, maintenance window, audit log).

use crate::output::{OutputFormat, json_line};
use anyhow::{Context, Result};
use std::io::Write;
use std::sync::Arc;
use tej_core::{Config, Executor, ProcedureReport, TokioCommandRunner};
use tej_runbook::procedures::emergency::{
    BreachOptions, CorruptionOptions, db_corruption_from_context, security_breach_from_context,
};
use tej_runbook::{RunContext, RunOptions};

fn render(out: &mut dyn Write, r: &ProcedureReport, format: OutputFormat) -> Result<()> {
    super::host::render_procedure(out, r, format)?;
    if format == OutputFormat::Json {
        for f in r.findings() {
            json_line(out, "finding", f)?;
        }
        return Ok(());
    }
    for f in r.findings() {
        if f.severity.needs_attention() {
            writeln!(out, "{}: {} {}", f.severity, f.check, f.summary)?;
            if let Some(d) = &f.detail {
                for l in d.lines() {
                    writeln!(out, "    {l}")?;
                }
            }
        }
    }
    Ok(())
}

/// What `tej emergency security-breach` was asked.
#[derive(Debug, Clone)]
pub struct BreachArgs {
    /// `--address`.
    pub address: String,
    /// `--db`: the `[[database]]` whose users must reset their password.
    pub database: Option<String>,
    /// `--users-table`.
    pub table: String,
    /// `--reset-column`.
    pub column: String,
    /// `--sudo`: run ufw through `sudo -n`.
    pub sudo: bool,
}

/// Blocks the address, rotates every secret, drops every session, forces password resets and
/// searches the logs; true when every step succeeded (or was planned).
pub async fn security_breach(
    out: &mut dyn Write,
    cfg: &Config,
    ex: &Executor,
    args: BreachArgs,
    format: OutputFormat,
) -> Result<bool> {
    let ctx = RunContext::from_config(cfg, RunOptions::default()).context("read tej.toml")?;
    let mut opts = BreachOptions::new(args.address);
    opts.database = args.database;
    opts.password_reset.table = args.table;
    opts.password_reset.column = args.column;
    opts.firewall.use_sudo = args.sudo;
    let p = security_breach_from_context(
        &ctx,
        Arc::new(TokioCommandRunner),
        &ex.guard,
        ex.audit.clone(),
        &opts,
    )
    .await
    .context("prepare the security-breach procedure")?;
    let r = ex.run(&p).await;
    render(out, &r, format)?;
    Ok(r.succeeded())
}

/// What `tej emergency db-corruption` was asked.
#[derive(Debug, Clone, Default)]
pub struct CorruptionArgs {
    /// `--db`.
    pub database: Option<String>,
    /// `--service` (repeatable).
    pub services: Vec<String>,
    /// `--jobs`.
    pub jobs: u32,
    /// `--restore-anyway`.
    pub restore_anyway: bool,
}

/// Stops the application, assesses with amcheck, restores the newest backup, verifies, starts
/// the application; true when every step succeeded (or was planned).
pub async fn db_corruption(
    out: &mut dyn Write,
    cfg: &Config,
    ex: &Executor,
    args: CorruptionArgs,
    format: OutputFormat,
) -> Result<bool> {
    let ctx = RunContext::from_config(cfg, RunOptions::default()).context("read tej.toml")?;
    let p = db_corruption_from_context(
        &ctx,
        Arc::new(TokioCommandRunner),
        &CorruptionOptions {
            database: args.database,
            services: args.services,
            jobs: args.jobs,
            restore_anyway: args.restore_anyway,
        },
    )
    .await
    .context("prepare the database-corruption procedure")?;
    let r = ex.run(&p).await;
    render(out, &r, format)?;
    Ok(r.succeeded())
}
