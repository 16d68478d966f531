//! `tej emergency db-corruption` and `tej emergency security-breach --address IP`: the
//! runbook's guided emergency procedures from tej-runbook, run under the command's executor
//! (dry run, confirmation, maintenance window, audit log).

use crate::args::{ComposeArgs, RunArgs};
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

/// `tej emergency`.
#[derive(Debug, clap::Subcommand)]
pub enum EmergencyCmd {
    /// Service down: check, restart, force-recreate if still unhealthy; report each step
    /// (destructive: the plan, then --yes; audited).
    ServiceDown {
        #[command(flatten)]
        compose: ComposeArgs,
        /// Service.
        service: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Database corruption: stop the application, amcheck, restore the newest backup (when
    /// damaged), verify (amcheck, sanity queries), start the application.
    DbCorruption(CorruptionArgs),
    /// Security breach: block the address, rotate every secret, drop every session, force
    /// password resets, search the logs for the address.
    SecurityBreach(BreachArgs),
}

/// Runs `tej emergency ...`; 0 when every step succeeded (or was planned), else 1.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    cmd: EmergencyCmd,
) -> Result<i32> {
    let format = ctx.format();
    let ok = match cmd {
        EmergencyCmd::ServiceDown {
            compose,
            service,
            run,
        } => {
            let (project, host) = ctx.compose_target(&compose)?;
            let ex = ctx.executor(&run)?;
            ctx.block_on(async {
                let docker = super::services::connect(host.as_deref()).await?;
                super::services::service_down(out, &ex, docker, &project, &service, format).await
            })??
        }
        EmergencyCmd::DbCorruption(args) => {
            let cfg = ctx.config()?;
            let ex = ctx.executor(&args.run)?;
            ctx.block_on(db_corruption(out, cfg, &ex, args, format))??
        }
        EmergencyCmd::SecurityBreach(args) => {
            let cfg = ctx.config()?;
            let ex = ctx.executor(&args.run)?;
            ctx.block_on(security_breach(out, cfg, &ex, args, format))??
        }
    };
    Ok(crate::context::exit_code(ok))
}

/// `tej emergency security-breach`.
#[derive(Debug, clap::Args)]
pub struct BreachArgs {
    /// The attacker's address or network (`203.0.113.7`, `203.0.113.0/24`).
    #[arg(long)]
    pub address: String,
    /// The `[[database]]` whose users must reset their password (default: the first).
    #[arg(long)]
    pub db: Option<String>,
    /// Users table.
    #[arg(long, default_value = "users")]
    pub users_table: String,
    /// Boolean column set to true.
    #[arg(long, default_value = "password_reset_required")]
    pub reset_column: String,
    /// Run ufw through `sudo -n`.
    #[arg(long)]
    pub sudo: bool,
    #[command(flatten)]
    pub run: RunArgs,
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
    opts.database = args.db;
    opts.password_reset.table = args.users_table;
    opts.password_reset.column = args.reset_column;
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

/// `tej emergency db-corruption`.
#[derive(Debug, clap::Args)]
pub struct CorruptionArgs {
    /// The `[[database]]` (default: the first).
    #[arg(long)]
    pub db: Option<String>,
    /// Application services stopped meanwhile (repeatable; default: [compose] backend_service).
    #[arg(long = "service")]
    pub services: Vec<String>,
    /// pg_restore -j.
    #[arg(long, default_value_t = 2)]
    pub jobs: u32,
    /// Restore even when amcheck finds no damage.
    #[arg(long)]
    pub restore_anyway: bool,
    #[command(flatten)]
    pub run: RunArgs,
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
            database: args.db,
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
