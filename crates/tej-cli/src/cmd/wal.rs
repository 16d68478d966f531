//! `tej wal push|fetch|init|list|verify`: the WAL archive as PostgreSQL's `archive_command`
//! and `restore_command`, and its listing and chain check (handlers in [`super::pitr`]).

use crate::args::{DbArgs, RepoArgs};
use crate::context::Context;
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

/// `tej wal`.
#[derive(Debug, clap::Subcommand)]
pub enum WalCmd {
    /// archive_command: compress, encrypt, checksum and store one WAL file durably
    /// (`archive_command = 'tej wal push --repo R %p'`). Exit 0 stored or already stored
    /// with the same content; 1 otherwise (the stored file is never replaced).
    Push {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        push: super::pitr::PushArgs,
    },
    /// restore_command: fetch one archived file to a path, checked in full, atomically
    /// (`restore_command = 'tej wal fetch --repo R %f %p'`). Exit 0 fetched, 1 not in the
    /// archive, 255 any other failure (PostgreSQL then stops instead of promoting early).
    Fetch {
        #[command(flatten)]
        repo: RepoArgs,
        /// `%f`: the WAL file name.
        name: String,
        /// `%p`: where to write it.
        dest: PathBuf,
        /// Keep this many following segments fetched and checked in a local spool, so
        /// replay does not wait on the archive (0: off). Bounded by `--prefetch-bytes`.
        #[arg(long, value_name = "N", default_value_t = 8)]
        prefetch: usize,
        /// At most this many bytes of prefetched segments.
        #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
        prefetch_bytes: u64,
        /// The spool of prefetched segments (default: `tej-prefetch` beside `%p`, inside
        /// pg_wal; removed as recovery ends).
        #[arg(long, value_name = "DIR")]
        spool_dir: Option<PathBuf>,
        /// Run as the background worker that fills the spool (started by `wal fetch`
        /// itself, with its own arguments).
        #[arg(long, hide = true)]
        prefetch_worker: bool,
    },
    /// Initialise the WAL archive of a cluster in an existing repository: writes its
    /// marker (`wal/archive.json`: the cluster's system identifier and segment size).
    /// `tej wal push` archives only into an initialised repository (a base backup
    /// initialises it too); idempotent for the same cluster.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Every archived WAL file.
    List(RepoArgs),
    /// The WAL chain from every base backup: gaps (and the backups and window they break),
    /// timeline switches, the PITR window that exists. Exit 2 when a gap breaks a chain.
    Verify(RepoArgs),
}

/// Runs `tej wal ...`; the exit code (`wal fetch`: 0 fetched, 1 not archived, 255 any other
/// failure, configuration included: recovery must stop rather than promote early).
pub fn dispatch(ctx: &Context, out: &mut dyn Write, cmd: WalCmd) -> Result<i32> {
    let format = ctx.format();
    match cmd {
        WalCmd::Fetch {
            repo,
            name,
            dest,
            prefetch,
            prefetch_bytes,
            spool_dir,
            prefetch_worker,
        } => {
            let mut prefetch = tej_backup::PrefetchOptions {
                ahead: prefetch,
                max_bytes: prefetch_bytes,
                spool_dir,
                ..tej_backup::PrefetchOptions::default()
            };
            if prefetch_worker {
                return Ok(run_prefetch_worker(ctx, &repo, &dest, &prefetch));
            }
            // The spool is filled by this same command in the background while PostgreSQL
            // replays; without a path to it, each call fills the spool itself.
            prefetch.worker =
                std::env::current_exe()
                    .ok()
                    .map(|program| tej_backup::WorkerCommand {
                        program,
                        args: std::env::args_os()
                            .skip(1)
                            .chain([std::ffi::OsString::from("--prefetch-worker")])
                            .collect(),
                    });
            // Every failure, configuration included, must stop recovery (exit > 125):
            // exit 1 would tell PostgreSQL the file does not exist and it would promote early.
            let fatal = |e: anyhow::Error| {
                eprintln!("error: wal fetch {name}: {e:#}");
                tej_backup::FETCH_FATAL_EXIT_CODE
            };
            let cfg = match ctx.config() {
                Ok(cfg) => cfg,
                Err(e) => return Ok(fatal(e)),
            };
            let rt = match ctx.runtime() {
                Ok(rt) => rt,
                Err(e) => return Ok(fatal(e)),
            };
            Ok(rt.block_on(async {
                let wal = match super::pitr::repository(cfg, &repo.repos).await {
                    Ok(r) => super::pitr::archive(cfg, r),
                    Err(e) => Err(e),
                };
                match wal {
                    Ok(wal) => super::pitr::fetch(out, &wal, &name, &dest, &prefetch, format).await,
                    Err(e) => fatal(e),
                }
            }))
        }
        WalCmd::Push { repo, push } => {
            let wal = async {
                let cfg = ctx.config()?;
                let r = super::pitr::repository(cfg, &repo.repos).await?;
                super::pitr::archive(cfg, r)
            };
            let rt = ctx.runtime()?;
            let wal = match rt.block_on(wal) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: wal push {}: {e:#}", push.path.display());
                    return Ok(1);
                }
            };
            rt.block_on(super::pitr::push(out, &wal, push, format))
        }
        WalCmd::Init { repo, db } => {
            let cfg = ctx.config()?;
            let target = super::backup::db_target(cfg, db.db.as_deref())?;
            ctx.block_on(async {
                let r = super::pitr::repository(cfg, &repo.repos).await?;
                super::pitr::init(out, r, &target, format).await?;
                Ok(0)
            })?
        }
        WalCmd::List(repo) => {
            let cfg = ctx.config()?;
            ctx.block_on(async {
                let r = super::pitr::repository(cfg, &repo.repos).await?;
                super::pitr::list(out, &super::pitr::archive(cfg, r)?, format).await?;
                Ok(0)
            })?
        }
        WalCmd::Verify(repo) => {
            let cfg = ctx.config()?;
            ctx.block_on(async {
                let source = super::pitr::source(cfg, &repo.repos).await?;
                super::pitr::verify(out, &source, format).await
            })?
        }
    }
}

/// `tej wal fetch ... --prefetch-worker`: the background worker of a prefetching fetch; its
/// output goes nowhere, so it only ends (exit 0, or 1 when it could not start).
fn run_prefetch_worker(
    ctx: &Context,
    repo: &RepoArgs,
    dest: &std::path::Path,
    opts: &tej_backup::PrefetchOptions,
) -> i32 {
    let run = || -> Result<()> {
        let cfg = ctx.config()?;
        ctx.runtime()?.block_on(async {
            let r = super::pitr::repository(cfg, &repo.repos).await?;
            let wal = super::pitr::archive(cfg, r)?;
            wal.prefetch_worker(dest, opts).await?;
            Ok(())
        })
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "WAL prefetch worker stopped");
            1
        }
    }
}
