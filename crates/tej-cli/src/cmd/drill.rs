//! `tej drill`: the quarterly disaster-recovery drill of point-in-time recovery (handlers
//! in [`super::pitr`]).

use crate::args::RepoArgs;
use crate::context::Context;
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

/// `tej drill`.
#[derive(Debug, clap::Args)]
pub struct DrillCmd {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// A sanity query (repeatable; default: the first [[database]]'s sanity_queries, else `SELECT 1`).
    #[arg(long = "query")]
    pub queries: Vec<String>,
    /// The database the sanity queries run in (default: the first [[database]]'s, else postgres).
    #[arg(long)]
    pub database: Option<String>,
    /// Where the scratch cluster is made (a short path: the server's socket lives inside).
    #[arg(long, default_value = "/tmp")]
    pub scratch_dir: PathBuf,
    /// Keep the scratch cluster (stopped) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// The OS user that runs the scratch server when tej runs as root.
    #[arg(long, default_value = "postgres")]
    pub owner: String,
    /// Recovery time limit, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// Runs `tej drill`; the exit code.
pub fn dispatch(ctx: &Context, out: &mut dyn Write, mut cmd: DrillCmd) -> Result<i32> {
    let format = ctx.format();
    let cfg = ctx.config()?;
    let repo_spec = super::pitr::repository_spec(cfg, &cmd.repo.repos)?;
    let first_db = cfg.databases.first();
    if cmd.queries.is_empty() {
        cmd.queries = first_db
            .map(|d| d.sanity_queries.clone())
            .unwrap_or_default();
    }
    if cmd.database.is_none() {
        cmd.database = first_db.and_then(|d| super::pitr::database_of_url(d.url.expose()));
    }
    ctx.block_on(async {
        let source = super::pitr::source(cfg, &cmd.repo.repos).await?;
        let args = super::pitr::DrillArgs {
            repo_spec,
            config: ctx.config_path(),
            cmd,
        };
        super::pitr::drill(out, &source, args, format).await
    })?
}
