//! `tej`: the command line over the tej libraries. It parses arguments and renders
//! results; every behaviour lives in a library crate. The arguments become a [`Context`]
//! once (global options, the configuration loaded on first use, one runtime); each noun's
//! arguments and `dispatch` live in `cmd/<noun>.rs`.

mod args;
mod cmd;
mod context;
mod output;
mod progress;

use anyhow::Result;
use args::{DbArgs, GlobalArgs, RepoArgs, RunArgs};
use clap::{Args, Parser, Subcommand};
use context::{Context, executor};
use output::OutputFormat;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// tej — the platform maintenance runbook as typed, tested procedures.
#[derive(Debug, Parser)]
#[command(name = "tej", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Configuration.
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// Compose services: status, logs, restart.
    #[command(subcommand)]
    Services(cmd::services::ServicesCmd),
    /// Zero-downtime deploy of a new image for a service (`[[deploy.service]]` in tej.toml).
    Deploy(cmd::deploy::DeployArgs),
    /// Deploy a service's previous image again (tagged by its last deploy), with no downtime.
    Rollback(cmd::deploy::RollbackArgs),
    /// Emergency procedures.
    #[command(subcommand)]
    Emergency(cmd::emergency::EmergencyCmd),
    /// TLS certificates: probe endpoints, renew with certbot.
    #[command(subcommand)]
    Tls(cmd::tls::TlsCmd),
    /// Secrets: generate (rotation lands with its adapters).
    #[command(subcommand)]
    Secrets(cmd::secrets::SecretsCmd),
    /// Host resources: disk and inodes per mount, memory, swap, load against cores.
    #[command(subcommand)]
    Host(cmd::host::HostCmd),
    /// Application logs.
    #[command(subcommand)]
    Logs(cmd::logs::LogsCmd),
    /// Remove files matching a pattern under a root older than N days (keeps the newest).
    Cleanup(cmd::cleanup::CleanupArgs),
    /// Logical backups: create, list, verify, restore, prune (local and S3).
    #[command(subcommand)]
    Backup(BackupCmd),
    /// The WAL archive: `archive_command` (push), `restore_command` (fetch), list, verify.
    #[command(subcommand)]
    Wal(WalCmd),
    /// Point-in-time recovery into a data directory from a base backup plus archived WAL
    /// (destructive when the directory is not empty: confirmation, maintenance window).
    Restore(Box<RestoreCmd>),
    /// The quarterly disaster-recovery drill: restore the newest base backup plus WAL into
    /// a scratch cluster on a free port, run sanity queries, report RTO and RPO, clean up.
    Drill {
        #[command(flatten)]
        repo: RepoArgs,
        /// A sanity query (repeatable; default: the first [[database]]'s sanity_queries, else `SELECT 1`).
        #[arg(long = "query")]
        queries: Vec<String>,
        /// The database the sanity queries run in (default: the first [[database]]'s, else postgres).
        #[arg(long)]
        database: Option<String>,
        /// Where the scratch cluster is made (a short path: the server's socket lives inside).
        #[arg(long, default_value = "/tmp")]
        scratch_dir: PathBuf,
        /// Keep the scratch cluster (stopped) for inspection.
        #[arg(long)]
        keep: bool,
        /// The OS user that runs the scratch server when tej runs as root.
        #[arg(long, default_value = "postgres")]
        owner: String,
        /// Recovery time limit, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// PostgreSQL health and maintenance.
    #[command(subcommand)]
    Db(cmd::db::DbCmd),
    /// Redis: health, big keys, session invalidation, FLUSHDB outside production.
    #[command(subcommand)]
    Redis(cmd::redis::RedisCmd),
    /// Docker images: prune unused ones (never one in use or kept for rollback).
    #[command(subcommand)]
    Images(cmd::images::ImagesCmd),
    /// Emit the calendar as crontab lines, systemd timer units or Kubernetes CronJobs (IST).
    Schedule(cmd::schedule::ScheduleArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::docs::CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    Man(cmd::docs::ManArgs),
    /// The maintenance calendar: next occurrence of every entry, in IST.
    Calendar(cmd::calendar::CalendarArgs),
    /// The daily health check (= `tej run daily`): services, logs, host, PostgreSQL, Redis,
    /// backups and WAL archiving, certificates, custom checks, all at once.
    Health(args::CheckArgs),
    /// Run a calendar procedure: `daily`, `performance`, `weekly` or an entry id
    /// (`tej calendar` lists them).
    Run(cmd::run::RunCmd),
    /// Run the maintenance calendar in-process (containers): every entry at its IST time,
    /// never twice at once across hosts (PostgreSQL advisory locks); stops on SIGTERM.
    Daemon(cmd::daemon::DaemonArgs),
}

#[derive(Debug, Subcommand)]
enum BackupCmd {
    /// Dump, compress, encrypt, checksum and store a backup in every repository.
    Create {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        db: DbArgs,
        /// custom (default from tej.toml), directory or plain.
        #[arg(long)]
        format: Option<String>,
        /// pg_dump -j for the directory format; objects copied at once for --physical.
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// A physical base backup of the whole cluster (for `tej restore` to a point in
        /// time) instead of a logical dump of one database.
        #[arg(long, conflicts_with_all = ["format", "files"])]
        physical: bool,
        /// With --physical: how long to wait for WAL to reach the repository, before the
        /// copy and after pg_backup_stop, in seconds (default `[backup]
        /// archive_timeout_secs`, else 60).
        #[arg(long, value_name = "SECS", requires = "physical")]
        archive_timeout: Option<u64>,
        /// A file backup of these directories (none given: `[backup] files` in tej.toml),
        /// as a compressed tar with the same manifest and storage.
        #[arg(long, num_args = 0.., value_name = "DIR", conflicts_with = "format")]
        files: Option<Vec<PathBuf>>,
    },
    /// Backups newest first, by manifest time.
    List(RepoArgs),
    /// Re-read every object: SHA-256, decrypt, decompress; optionally a restore test.
    Verify {
        /// A backup id, or `latest`: the newest dump of the database (--db, else the
        /// configured one); `ID@KIND[:TARGET]` or `latest@KIND[:TARGET]` name a series.
        #[arg(default_value = "latest")]
        id: String,
        #[command(flatten)]
        repo: RepoArgs,
        /// Restore into a scratch database on this server and run the sanity queries.
        #[arg(long)]
        restore_test: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Restore a backup into a database (destructive: confirmation, maintenance window).
    Restore {
        /// A backup id of the configured database's dumps, or `latest`: the newest of them;
        /// `ID@logical:DATABASE` restores another database's dump on purpose.
        #[arg(default_value = "latest")]
        id: String,
        #[command(flatten)]
        repo: RepoArgs,
        /// The database restored into (connection string; default: the configured database).
        #[arg(long)]
        target: Option<String>,
        /// pg_restore -j.
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// Restore a file backup (`backup create --files`) into this directory instead
        /// (`latest`: the newest file backup); replacing existing files needs --yes.
        #[arg(long, value_name = "DIR", conflicts_with = "target")]
        into: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Grandfather-father-son retention per series; destructive: the plan lists each
    /// decision and its rule, deleting needs --yes (and the production window); audited.
    Prune {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Subcommand)]
enum WalCmd {
    /// archive_command: compress, encrypt, checksum and store one WAL file durably
    /// (`archive_command = 'tej wal push --repo R %p'`). Exit 0 stored or already stored
    /// with the same content; 1 otherwise (the stored file is never replaced).
    Push {
        #[command(flatten)]
        repo: RepoArgs,
        /// `%p`: the file, relative to the data directory (the server's working directory).
        path: PathBuf,
        /// The data directory (default: the working directory).
        #[arg(long)]
        pgdata: Option<PathBuf>,
        /// Asynchronous mode: also push up to 64 other ready segments, this many at once.
        #[arg(long = "async", value_name = "PARALLEL", default_value_t = 0)]
        parallel: usize,
        /// The spool directory of the asynchronous mode (default: PGDATA/pg_wal/tej-spool).
        #[arg(long)]
        spool: Option<PathBuf>,
        /// zstd level (default 1).
        #[arg(long)]
        level: Option<i32>,
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

/// `tej restore`.
#[derive(Debug, Args)]
struct RestoreCmd {
    #[command(flatten)]
    repo: RepoArgs,
    /// The data directory to create or replace.
    #[arg(long)]
    pgdata: PathBuf,
    /// Recover to this time (with an offset: "2025-01-16 14:30:00+05:30").
    #[arg(long)]
    target_time: Option<String>,
    /// Recover to this WAL position (16/B374D848).
    #[arg(long)]
    target_lsn: Option<String>,
    /// Recover to this transaction id.
    #[arg(long)]
    target_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long)]
    target_name: Option<String>,
    /// `immediate` (end of the base backup) or `latest` (every archived WAL file).
    #[arg(long)]
    target: Option<String>,
    /// What the server does at the target: promote (default), pause or shutdown.
    #[arg(long)]
    target_action: Option<String>,
    /// recovery_target_timeline: latest (default), current or an id.
    #[arg(long)]
    target_timeline: Option<String>,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    exclusive: bool,
    /// Restore this base backup instead of the newest one that finished before the target.
    #[arg(long)]
    backup: Option<String>,
    /// Start the server and follow recovery to its end (else only prepare the directory).
    #[arg(long)]
    start: bool,
    /// With --start: the server's port.
    #[arg(long)]
    port: Option<u16>,
    /// With --start: stop the server once recovery has ended.
    #[arg(long)]
    stop_after: bool,
    /// Once promoted, keep archiving into the same repository (`tej wal push`); by default
    /// the restored copy does not archive.
    #[arg(long)]
    archive: bool,
    /// The OS user that owns the data directory and runs the server (when root).
    #[arg(long, default_value = "postgres")]
    owner: String,
    /// Recovery time limit, in seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    #[command(flatten)]
    run: RunArgs,
}

/// Runs the command line: one `dispatch` per noun; the process exit code.
fn run(cli: Cli, out: &mut dyn Write) -> Result<i32> {
    let ctx = Context::new(cli.global);
    let format = ctx.format();
    match cli.command {
        Commands::Config(c) => cmd::config::dispatch(&ctx, out, c),
        Commands::Services(c) => cmd::services::dispatch(&ctx, out, c),
        Commands::Deploy(a) => cmd::deploy::dispatch(&ctx, out, a),
        Commands::Rollback(a) => cmd::deploy::dispatch_rollback(&ctx, out, a),
        Commands::Emergency(c) => cmd::emergency::dispatch(&ctx, out, c),
        Commands::Tls(c) => cmd::tls::dispatch(&ctx, out, c),
        Commands::Secrets(c) => cmd::secrets::dispatch(&ctx, out, c),
        Commands::Host(c) => cmd::host::dispatch(&ctx, out, c),
        Commands::Logs(c) => cmd::logs::dispatch(&ctx, out, c),
        Commands::Cleanup(a) => cmd::cleanup::dispatch(&ctx, out, a),
        Commands::Db(c) => cmd::db::dispatch(&ctx, out, c),
        Commands::Redis(c) => cmd::redis::dispatch(&ctx, out, c),
        Commands::Images(c) => cmd::images::dispatch(&ctx, out, c),
        Commands::Schedule(a) => cmd::schedule::dispatch(&ctx, out, a),
        Commands::Completions(a) => {
            cmd::docs::completions(out, a.shell, <Cli as clap::CommandFactory>::command())?;
            Ok(0)
        }
        Commands::Man(a) => {
            cmd::docs::man(
                out,
                a.dir.as_deref(),
                <Cli as clap::CommandFactory>::command(),
            )?;
            Ok(0)
        }
        Commands::Calendar(a) => cmd::calendar::dispatch(&ctx, out, a),
        Commands::Health(check) => cmd::run::health(&ctx, out, check),
        Commands::Run(c) => cmd::run::dispatch(&ctx, out, c),
        Commands::Daemon(a) => cmd::daemon::dispatch(&ctx, out, a),
        Commands::Wal(WalCmd::Fetch { repo, name, dest }) => {
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
                match cmd::pitr::repository(cfg, &repo.repos).await {
                    Ok(r) => {
                        let wal = cmd::pitr::archive(cfg, r);
                        cmd::pitr::fetch(out, &wal, &name, &dest, format).await
                    }
                    Err(e) => fatal(e),
                }
            }))
        }
        Commands::Wal(WalCmd::Push {
            repo,
            path,
            pgdata,
            parallel,
            spool,
            level,
        }) => {
            let push = async {
                let cfg = ctx.config()?;
                let r = cmd::pitr::repository(cfg, &repo.repos).await?;
                anyhow::Ok(cmd::pitr::archive(cfg, r))
            };
            let rt = ctx.runtime()?;
            let wal = match rt.block_on(push) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: wal push {}: {e:#}", path.display());
                    return Ok(1);
                }
            };
            let args = cmd::pitr::PushArgs {
                path,
                pgdata,
                parallel,
                spool,
                level,
            };
            rt.block_on(cmd::pitr::push(out, &wal, args, format))
        }
        Commands::Wal(WalCmd::Init { repo, db }) => {
            let cfg = ctx.config()?;
            let target = cmd::backup::db_target(cfg, db.db.as_deref())?;
            ctx.runtime()?.block_on(async {
                let r = cmd::pitr::repository(cfg, &repo.repos).await?;
                cmd::pitr::init(out, r, &target, format).await?;
                Ok(0)
            })
        }
        Commands::Wal(WalCmd::List(repo)) => {
            let cfg = ctx.config()?;
            ctx.runtime()?.block_on(async {
                let r = cmd::pitr::repository(cfg, &repo.repos).await?;
                cmd::pitr::list(out, &cmd::pitr::archive(cfg, r), format).await?;
                Ok(0)
            })
        }
        Commands::Wal(WalCmd::Verify(repo)) => {
            let cfg = ctx.config()?;
            ctx.runtime()?.block_on(async {
                let source = cmd::pitr::source(cfg, &repo.repos).await?;
                cmd::pitr::verify(out, &source, format).await
            })
        }
        Commands::Restore(r) => {
            let RestoreCmd {
                repo,
                pgdata,
                target_time,
                target_lsn,
                target_xid,
                target_name,
                target,
                target_action,
                target_timeline,
                exclusive,
                backup,
                start,
                port,
                stop_after,
                archive,
                owner,
                timeout,
                run,
            } = *r;
            let cfg = ctx.config()?;
            let target = cmd::pitr::target_of(
                target_time.as_deref(),
                target_lsn.as_deref(),
                target_xid.as_deref(),
                target_name.as_deref(),
                target.as_deref(),
            )?;
            let repo_spec = cmd::pitr::repository_spec(cfg, &repo.repos)?;
            let ex = executor(cfg, &run)?;
            ctx.runtime()?.block_on(async {
                let mut source = cmd::pitr::source(cfg, &repo.repos).await?;
                if let Some(p) = progress::sink(format) {
                    source = source.with_progress(p);
                }
                let args = cmd::pitr::RestoreArgs {
                    repo_spec,
                    config: ctx.config_path(),
                    pgdata,
                    target,
                    action: target_action,
                    timeline: target_timeline,
                    exclusive,
                    backup,
                    start,
                    port,
                    stop_after,
                    archive,
                    owner,
                    timeout,
                };
                cmd::pitr::restore(out, &ex, source, args, format).await
            })
        }
        Commands::Drill {
            repo,
            queries,
            database,
            scratch_dir,
            keep,
            owner,
            timeout,
        } => {
            let cfg = ctx.config()?;
            let repo_spec = cmd::pitr::repository_spec(cfg, &repo.repos)?;
            let first_db = cfg.databases.first();
            let queries = if queries.is_empty() {
                first_db
                    .map(|d| d.sanity_queries.clone())
                    .unwrap_or_default()
            } else {
                queries
            };
            let database = database
                .or_else(|| first_db.and_then(|d| cmd::pitr::database_of_url(d.url.expose())));
            ctx.runtime()?.block_on(async {
                let source = cmd::pitr::source(cfg, &repo.repos).await?;
                let args = cmd::pitr::DrillArgs {
                    repo_spec,
                    config: ctx.config_path(),
                    queries,
                    database,
                    scratch_dir,
                    keep,
                    owner,
                    timeout,
                };
                cmd::pitr::drill(out, &source, args, format).await
            })
        }
        Commands::Backup(sub) => {
            let cfg = ctx.config()?;
            let rt = ctx.runtime()?;
            rt.block_on(async {
                match sub {
                    BackupCmd::Create {
                        repo,
                        files: Some(dirs),
                        ..
                    } => {
                        let repos = cmd::backup::repositories(cfg, &repo.repos).await?;
                        let ok = cmd::backup::create_files(out, cfg, &repos, dirs, format).await?;
                        anyhow::ensure!(ok, "the backup did not reach every repository");
                        Ok(0)
                    }
                    BackupCmd::Create {
                        repo,
                        db,
                        jobs,
                        physical: true,
                        archive_timeout,
                        ..
                    } => {
                        let repos = cmd::backup::repositories(cfg, &repo.repos).await?;
                        let target = cmd::backup::db_target(cfg, db.db.as_deref())?;
                        let ok = cmd::backup::create_physical(
                            out,
                            cfg,
                            &repos,
                            target,
                            jobs,
                            archive_timeout,
                            format,
                        )
                        .await?;
                        anyhow::ensure!(ok, "the backup did not reach every repository");
                        Ok(0)
                    }
                    BackupCmd::Create {
                        repo,
                        db,
                        format: fmt,
                        jobs,
                        ..
                    } => {
                        let repos = cmd::backup::repositories(cfg, &repo.repos).await?;
                        let target = cmd::backup::db_target(cfg, db.db.as_deref())?;
                        let ok = cmd::backup::create(out, cfg, &repos, target, fmt, jobs, format)
                            .await?;
                        anyhow::ensure!(ok, "the backup did not reach every repository");
                        Ok(0)
                    }
                    BackupCmd::List(repo) => {
                        let repos = cmd::backup::repositories(cfg, &repo.repos).await?;
                        cmd::backup::list(out, &repos, format).await?;
                        Ok(0)
                    }
                    BackupCmd::Verify {
                        id,
                        repo,
                        restore_test,
                        db,
                    } => {
                        let repos = cmd::backup::repositories(cfg, &repo.repos).await?;
                        let server = if restore_test {
                            Some(cmd::backup::db_target(cfg, db.db.as_deref())?)
                        } else {
                            None
                        };
                        let id = cmd::backup::verify_selector(cfg, db.db.as_deref(), &id)?;
                        let ok =
                            cmd::backup::verify(out, cfg, &repos, &id, server, format).await?;
                        anyhow::ensure!(ok, "verification failed");
                        Ok(0)
                    }
                    BackupCmd::Restore {
                        id,
                        repo,
                        into: Some(dir),
                        run,
                        ..
                    } => {
                        let mut repos = cmd::backup::repositories(cfg, &repo.repos).await?;
                        let repo = repos.remove(0);
                        let ex = executor(cfg, &run)?;
                        let ok = cmd::backup::restore_files(out, cfg, &ex, repo, &id, dir, format)
                            .await?;
                        Ok(if ok { 0 } else { 1 })
                    }
                    BackupCmd::Restore {
                        id,
                        repo,
                        target,
                        jobs,
                        run,
                        ..
                    } => {
                        let mut repos = cmd::backup::repositories(cfg, &repo.repos).await?;
                        let repo = repos.remove(0);
                        let target = cmd::backup::db_target(cfg, target.as_deref())?;
                        let id = cmd::backup::logical_selector(cfg, &repo, &id, &target).await?;
                        let ex = executor(cfg, &run)?;
                        let mut opts = cmd::backup::restore_options(cfg, target, jobs);
                        opts.progress = progress::sink(format);
                        let ok = cmd::backup::restore(out, &ex, repo, &id, opts, format).await?;
                        Ok(if ok { 0 } else { 1 })
                    }
                    BackupCmd::Prune { repo, run } => {
                        let repos = cmd::backup::repositories(cfg, &repo.repos).await?;
                        let ex = executor(cfg, &run)?;
                        let ok = cmd::backup::prune_repos(out, cfg, &ex, repos, format).await?;
                        Ok(if ok { 0 } else { 1 })
                    }
                }
            })
        }
    }
}

/// Whether the command line is `tej ... wal fetch ...` (`restore_command`).
fn is_wal_fetch() -> bool {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.windows(2).any(|w| w[0] == "wal" && w[1] == "fetch")
}

fn main() {
    // `restore_command` must exit above 125 for every failure that is not "not archived":
    // a usage error (clap's 2) or a panic (101) would read as "not archived" to
    // PostgreSQL, which would end recovery and promote early.
    let fetch = is_wal_fetch();
    if fetch {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::exit(tej_backup::FETCH_FATAL_EXIT_CODE);
        }));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if fetch && e.use_stderr() => {
            let _ = e.print();
            std::process::exit(tej_backup::FETCH_FATAL_EXIT_CODE);
        }
        Err(e) => e.exit(),
    };
    let nagios = cli.global.output == OutputFormat::Nagios;
    let stdout = std::io::stdout();
    let _colour = output::use_colour(stdout.is_terminal());
    let mut lock = stdout.lock();
    let code = match run(cli, &mut lock) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`tej ... | head`) is not an error.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                0
            } else {
                let _ = lock.flush();
                eprintln!("error: {e:#}");
                if nagios { 3 } else { 1 }
            }
        }
    };
    let _ = lock.flush();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
