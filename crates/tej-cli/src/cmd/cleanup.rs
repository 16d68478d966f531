//! `tej cleanup`: files matching a pattern under a root removed by age, as an audited step.

use crate::args::RunArgs;
use crate::output::OutputFormat;
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;
use tej_core::{Executor, Procedure};
use tej_host::{CleanupOptions, CleanupStep};

/// `tej cleanup`.
#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    /// The directory searched.
    #[arg(long)]
    pub root: PathBuf,
    /// Glob on file names (`*.log`, `*.sql.gz`).
    #[arg(long)]
    pub pattern: String,
    /// Remove files strictly older than this many days.
    #[arg(long)]
    pub older_than: u32,
    /// Always keep this many newest matches.
    #[arg(long, default_value_t = 1)]
    pub keep_newest: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `tej cleanup`: 0 when it was applied or planned, else 1.
pub fn dispatch(
    ctx: &crate::context::Context,
    out: &mut dyn Write,
    args: CleanupArgs,
) -> Result<i32> {
    let cfg = ctx.config()?;
    let ex = ctx.executor(&args.run)?;
    let mut opts = CleanupOptions::from_config(cfg, args.root, args.pattern, args.older_than);
    opts.keep_newest = args.keep_newest;
    let ok = ctx.block_on(cleanup(out, &ex, opts, ctx.format()))??;
    Ok(crate::context::exit_code(ok))
}

/// Plans (and unless `dry_run`, applies) a cleanup through the executor, audited.
pub async fn cleanup(
    out: &mut dyn Write,
    ex: &Executor,
    opts: CleanupOptions,
    format: OutputFormat,
) -> Result<bool> {
    let proc_ = Procedure::new("cleanup").step(CleanupStep::new(opts));
    let report = ex.run(&proc_).await;
    super::host::render_procedure(out, &report, format)?;
    Ok(report.succeeded())
}
