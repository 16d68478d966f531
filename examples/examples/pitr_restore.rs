//! # Point-in-time restore
//!
//! Automates the runbook's **"Backup & Recovery › Recovery Procedures › Point-in-Time
//! Recovery"**: 2. restore the base backup (the newest physical backup of the repository that
//! finished before the target, every byte checked), 3. configure recovery (`restore_command`
//! and exactly one `recovery_target_*` in `postgresql.auto.conf`, plus `recovery.signal`:
//! PostgreSQL 12+ has no `recovery.conf`), 4. start PostgreSQL in recovery mode, 5. monitor the
//! recovery to its end, 6. promote. A target beyond the archived WAL is refused before anything
//! is touched. Step 1 ("stop PostgreSQL") stays with the operator: a data directory a server
//! runs on is never replaced.
//!
//! Restoring is a destructive step: it runs only with `--yes`, in production only inside the
//! maintenance window, and is written to the audit log of `tej.toml`. `--dry-run` prints the plan.
//!
//! Library calls: [`tej_backup::RepositorySource`] (the repository's physical backups and WAL
//! archive as a [`tej_backup::BaseBackupSource`]) and [`tej_backup::PitrRestoreStep`]
//! ([`tej_backup::restore_pitr`] with a [`tej_backup::RecoveryConfig`] and a
//! [`tej_backup::RecoveryTarget`]), run by [`tej_core::Executor`]. The server fetches WAL
//! by running this same program as its `restore_command` (`pitr_restore wal-fetch --repo R %f %p`,
//! [`tej_backup::WalArchive::fetch`]).
//!
//! ## Run it
//!
//! ```text
//! cargo run -p tej-examples --bin pitr_restore -- --config tej.toml \
//!     --pgdata /var/lib/postgresql/15/restored --target-time "2025-01-16 14:30:00+05:30" --dry-run
//! cargo run -p tej-examples --bin pitr_restore -- --repo /var/backups/tej \
//!     --pgdata /var/lib/postgresql/15/restored --target latest --start --port 5433 --yes
//! ```
//!
//! The repository is `--repo`, else the first of `[backup] repositories` (with
//! `[backup.encryption]`'s keys). The data directory and the server belong to `--owner`
//! (`postgres`).
//!
//! ## What it prints
//!
//! `pitr-restore (dry run)` or `pitr-restore`, then `STEP TARGET: OUTCOME`, the `plan:` lines,
//! and when done `done: restored ID into DIR and recovered to TARGET (stopped at LSN, last
//! transaction TIME), promoted`. Exit code 0 when the target was reached (or the plan shown),
//! 1 otherwise.
//!
//! ## The same with the CLI
//!
//! `tej restore --pgdata DIR --target-time TIME [--start] [--yes]` (and `tej wal fetch` as the
//! `restore_command`).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tej_backup::{
    BackupSettings, PitrRestoreOptions, PitrRestoreStep, RecoveryConfig, RecoveryTarget,
    Repository, RepositorySource, ServerOptions, fetch_exit_code,
};
use tej_core::{Config, Procedure, TokioCommandRunner};

/// Point-in-time recovery from a tej repository into a data directory.
#[derive(Debug, Parser)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    /// The configuration file (default: ./tej.toml when present, else the environment).
    #[arg(long, env = "TEJ_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The repository: a directory or s3://bucket/prefix (default: tej.toml's first).
    #[arg(long, global = true)]
    repo: Option<String>,
    #[command(subcommand)]
    fetch: Option<Fetch>,
    /// The data directory to create (or, with --yes, replace).
    #[arg(long)]
    pgdata: Option<PathBuf>,
    /// Recover to this time (`2025-01-16 14:30:00+05:30`).
    #[arg(long, conflicts_with_all = ["target_lsn", "target_xid", "target_name", "target"])]
    target_time: Option<String>,
    /// Recover to this WAL position (`16/B374D848`).
    #[arg(long, conflicts_with_all = ["target_xid", "target_name", "target"])]
    target_lsn: Option<String>,
    /// Recover to this transaction id.
    #[arg(long, conflicts_with_all = ["target_name", "target"])]
    target_xid: Option<String>,
    /// Recover to this restore point (`pg_create_restore_point`).
    #[arg(long, conflicts_with = "target")]
    target_name: Option<String>,
    /// `immediate` (the end of the base backup) or `latest` (all archived WAL).
    #[arg(long, value_parser = ["immediate", "latest"])]
    target: Option<String>,
    /// Start the server, follow the recovery to its end and promote.
    #[arg(long)]
    start: bool,
    /// With --start: the port the restored server listens on.
    #[arg(long)]
    port: Option<u16>,
    /// The OS user owning the data directory and running the server.
    #[arg(long, default_value = "postgres")]
    owner: String,
    /// Confirm the restore (a destructive step).
    #[arg(long)]
    yes: bool,
    /// Show the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum Fetch {
    /// `restore_command`: WAL file NAME into DEST; exit 0 fetched, 1 not archived, 255 error.
    WalFetch { name: String, dest: PathBuf },
}

/// A word for `sh`, which runs `restore_command`.
fn quote(s: &str) -> Result<String> {
    Ok(tej_core::shell::quote(s, "a restore_command word")?.into_owned())
}

fn target(a: &Args) -> Result<RecoveryTarget> {
    let (kind, value) = match (
        &a.target_time,
        &a.target_lsn,
        &a.target_xid,
        &a.target_name,
        &a.target,
    ) {
        (Some(v), ..) => ("time", v.as_str()),
        (_, Some(v), ..) => ("lsn", v.as_str()),
        (_, _, Some(v), ..) => ("xid", v.as_str()),
        (_, _, _, Some(v), _) => ("name", v.as_str()),
        (.., Some(kind)) => (kind.as_str(), ""),
        _ => bail!(
            "no recovery target: pass --target-time, --target-lsn, --target-xid, --target-name or --target"
        ),
    };
    RecoveryTarget::parse_cli(kind, value).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn run(args: Args) -> Result<i32> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    let spec = args
        .repo
        .clone()
        .or_else(|| config.backup.repositories.first().cloned());
    let spec =
        spec.context("no repository: pass --repo or set [backup] repositories in tej.toml")?;
    let repo = Repository::open(&spec)
        .await
        .with_context(|| format!("open repository {spec}"))?;
    let settings = BackupSettings::from_config(&config)?;
    let encryption = settings.encryption.clone();
    if let Some(Fetch::WalFetch { name, dest }) = &args.fetch {
        let result = settings.wal(repo).fetch(name, dest).await;
        if let Err(e) = &result {
            eprintln!("error: fetch {name}: {e}");
        }
        return Ok(fetch_exit_code(&result));
    }
    let pgdata = args.pgdata.clone().context("pass --pgdata DIR")?;
    let exe = std::env::current_exe().context("find this program")?;
    let mut restore_command = format!(
        "{} wal-fetch --repo {}",
        quote(&exe.to_string_lossy())?,
        quote(&spec)?
    );
    if let Some(c) = &args.config {
        let c = std::path::absolute(c).context("resolve --config")?;
        restore_command.push_str(&format!(" --config {}", quote(&c.to_string_lossy())?));
    }
    restore_command.push_str(" %f %p");
    let mut opts = PitrRestoreOptions::new(
        &pgdata,
        RecoveryConfig::new(restore_command, target(&args)?),
    );
    opts.owner = Some(args.owner.clone());
    if args.start {
        // The log goes beside the data directory, which is replaced whole.
        let mut server = ServerOptions::new(pgdata.with_extension("log"));
        server.port = args.port;
        server.run_as = Some(args.owner.clone());
        opts.start = Some(server);
    }
    let step = PitrRestoreStep {
        source: Arc::new(RepositorySource::new(repo).with_encryption(encryption)),
        runner: Arc::new(TokioCommandRunner),
        opts,
    };
    let executor = tej_examples::executor(&config, args.dry_run, args.yes)?;
    let report = executor
        .run(&Procedure::new("pitr-restore").step(step))
        .await;
    tej_examples::print_procedure(&report);
    Ok(if report.succeeded() { 0 } else { 1 })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // As restore_command, any failure but "not archived" must stop the recovery: 255.
    let failure = if args.fetch.is_some() { 255 } else { 1 };
    match run(args).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(failure)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(failure)
        }
    }
}
