//! `tej restore`: point-in-time recovery into a data directory (handlers in
//! [`super::pitr`]).

use crate::args::{RepoArgs, RunArgs};
use crate::context::Context;
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

/// `tej restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreCmd {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The data directory to create or replace.
    #[arg(long)]
    pub pgdata: PathBuf,
    /// Recover to this time (with an offset: "2025-01-16 14:30:00+05:30").
    #[arg(long)]
    pub target_time: Option<String>,
    /// Recover to this WAL position (16/B374D848).
    #[arg(long)]
    pub target_lsn: Option<String>,
    /// Recover to this transaction id.
    #[arg(long)]
    pub target_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long)]
    pub target_name: Option<String>,
    /// `immediate` (end of the base backup) or `latest` (every archived WAL file).
    #[arg(long)]
    pub target: Option<String>,
    /// What the server does at the target: promote (default), pause or shutdown.
    #[arg(long)]
    pub target_action: Option<String>,
    /// recovery_target_timeline: latest (default), current or an id.
    #[arg(long)]
    pub target_timeline: Option<String>,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    pub exclusive: bool,
    /// Restore this base backup instead of the newest one that finished before the target.
    #[arg(long)]
    pub backup: Option<String>,
    /// Start the server and follow recovery to its end (else only prepare the directory).
    #[arg(long)]
    pub start: bool,
    /// With --start: the server's port.
    #[arg(long)]
    pub port: Option<u16>,
    /// With --start: stop the server once recovery has ended.
    #[arg(long)]
    pub stop_after: bool,
    /// Once promoted, keep archiving into the same repository (`tej wal push`); by default
    /// the restored copy does not archive.
    #[arg(long)]
    pub archive: bool,
    /// The OS user that owns the data directory and runs the server (when root).
    #[arg(long, default_value = "postgres")]
    pub owner: String,
    /// Recovery time limit, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `tej restore`; the exit code.
pub fn dispatch(ctx: &Context, out: &mut dyn Write, cmd: RestoreCmd) -> Result<i32> {
    let format = ctx.format();
    let cfg = ctx.config()?;
    let target = super::pitr::target_of(
        cmd.target_time.as_deref(),
        cmd.target_lsn.as_deref(),
        cmd.target_xid.as_deref(),
        cmd.target_name.as_deref(),
        cmd.target.as_deref(),
    )?;
    let repo_spec = super::pitr::repository_spec(cfg, &cmd.repo.repos)?;
    let ex = ctx.executor(&cmd.run)?;
    ctx.block_on(async {
        let mut source = super::pitr::source(cfg, &cmd.repo.repos).await?;
        if let Some(p) = crate::progress::sink(format) {
            source = source.with_progress(p);
        }
        let args = super::pitr::RestoreArgs {
            repo_spec,
            config: ctx.config_path(),
            target,
            cmd,
        };
        super::pitr::restore(out, &ex, source, args, format).await
    })?
}
