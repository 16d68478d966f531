//! # Nightly backup
//!
//! Automates the runbook's **"Backup & Recovery › Backup Strategy › Automated Daily Backups"**
//! (`0 2 * * * ./backend/scripts/backup.sh create`): a full `pg_dump` of the database,
//! compressed (zstd or gzip per `tej.toml`), encrypted with age when `[backup.encryption]` is
//! set, stored locally and in S3 ("stored locally and in S3": every repository of
//! `[backup] repositories` receives the same backup); then each copy is verified (every object
//! re-read, SHA-256 checked, decrypted and decompressed, the outcome recorded beside the backup
//! for the daily check and retention). "File Backups (Daily)": when `[backup] files` lists
//! directories (uploads, configuration), they are backed up and verified the same way. With
//! `--prune`, the "Backup Retention" rules (daily 30 days, weekly 90, monthly 365, yearly
//! 7 years) are applied.
//!
//! Library calls: [`tej_backup::BackupSettings::from_config`] (`[backup]` as options, once),
//! [`tej_backup::Backups`] (`create_files`, `create_logical` into every repository),
//! [`tej_backup::verify_backup`] of each copy and [`tej_backup::prune`] of each repository.
//!
//! ## Run it
//!
//! ```text
//! cargo run -p tej-examples --bin nightly_backup -- --config tej.toml
//! cargo run -p tej-examples --bin nightly_backup -- --prune \
//!     --db postgres://app@127.0.0.1:5432/app --repo /var/backups/tej --repo s3://backups/db
//! ```
//!
//! The database is `--db`, else the first `[[database]]` (or `DATABASE_URL`/`PG*`); its password
//! comes from `tej.toml`'s reference or libpq's own `PGPASSWORD`/`~/.pgpass`, and is handed to
//! `pg_dump` through its environment, never its command line. S3 credentials come from the AWS
//! SDK's environment and profiles.
//!
//! ## What it prints
//!
//! `files ID (N files, ...)` when there are files, `backup ID (RAW bytes raw, STORED bytes
//! stored)`, one
//! `verified ID in REPOSITORY: N objects` line per copy (`STORE FAILED`/`VERIFY FAILED ID in
//! REPOSITORY: why` when a copy is missing or bad), and with `--prune`
//! a `pruned REPOSITORY: kept K, deleted D` line per repository. Exit code 0 when every
//! repository holds a verified copy (and was pruned), 1 otherwise (`error: ...` on stderr).
//!
//! ## The same with the CLI
//!
//! `tej backup create`, `tej backup create --files`, `tej backup verify ID`, `tej backup prune`.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use tej_backup::{
    BackupSettings, Backups, CancellationToken, DbTarget, db_target, prune, verify_backup,
};
use tej_core::{Config, SystemClock, TokioCommandRunner};

/// Back up the database into every repository, verify each copy, optionally prune.
#[derive(Debug, Parser)]
struct Args {
    /// The configuration file (default: ./tej.toml when present, else the environment).
    #[arg(long, env = "TEJ_CONFIG")]
    config: Option<PathBuf>,
    /// Repository: a directory or s3://bucket/prefix (repeatable; default: tej.toml's).
    #[arg(long = "repo")]
    repos: Vec<String>,
    /// Connection string of the database (default: the first [[database]]).
    #[arg(long)]
    db: Option<String>,
    /// Apply the retention rules of `[backup.retention]` afterwards.
    #[arg(long)]
    prune: bool,
}

fn database(config: &Config, db: Option<String>) -> Result<DbTarget> {
    if let Some(conn) = db {
        return Ok(DbTarget::new(conn));
    }
    let d = config.databases.first().context(
        "no database: pass --db, set DATABASE_URL or PG*, or add [[database]] to tej.toml",
    )?;
    Ok(db_target(d)?)
}

async fn run(args: Args) -> Result<bool> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    // Format, compression, encryption, retention: `[backup]`, turned into options once.
    let mut settings = BackupSettings::from_config(&config)?;
    if !args.repos.is_empty() {
        settings.repositories = args.repos;
    }
    if settings.repositories.is_empty() {
        bail!("no repository: pass --repo or set [backup] repositories in tej.toml");
    }
    let backups = Backups::builder()
        .settings(settings)
        .build()
        .await
        .context("open the repositories")?;
    let cancel = CancellationToken::new();
    let db = database(&config, args.db)?;

    // "File Backups (Daily)": uploads and configuration, when `[backup] files` lists them.
    // First, so that the newest backup is the database's: the one the weekly audit's
    // restore test picks.
    let mut runs = Vec::new();
    if !backups.settings().files.is_empty() {
        let f = backups
            .create_files(&cancel)
            .await
            .context("back up the files")?;
        println!(
            "files {} ({} files, {} bytes raw, {} bytes stored)",
            f.backup.id, f.files, f.backup.raw_size, f.backup.stored_size
        );
        runs.push(f.backup);
    }
    let created = backups
        .create_logical(db, &cancel)
        .await
        .context("create the backup")?;
    println!(
        "backup {} ({} bytes raw, {} bytes stored)",
        created.id, created.raw_size, created.stored_size
    );
    runs.push(created);
    // Every copy is verified, not only the primary's.
    let verify = backups.settings().verify();
    let mut all_good = true;
    for run in &runs {
        let id = run.id.to_string();
        for (repo, outcome) in backups.repositories().iter().zip(&run.repositories) {
            if !outcome.ok {
                all_good = false;
                let why = outcome.error.as_deref().unwrap_or("unknown");
                println!("STORE FAILED {id} in {}: {why}", outcome.repository);
                continue;
            }
            match verify_backup(&TokioCommandRunner, repo, &id, &verify, &SystemClock).await {
                Ok(v) => println!(
                    "verified {} in {}: {} objects",
                    v.id,
                    v.repository,
                    v.objects.len()
                ),
                Err(e) => {
                    all_good = false;
                    println!("VERIFY FAILED {id} in {}: {e}", repo.name());
                }
            }
        }
    }
    if args.prune {
        // Each repository on its own: one that fails does not keep the others unpruned.
        let popts = backups.settings().prune();
        for repo in backups.repositories() {
            match prune(repo, &popts, &SystemClock).await {
                Ok(r) => {
                    let kept = r.plan.decisions.iter().filter(|d| d.keep).count();
                    println!(
                        "pruned {}: kept {kept}, deleted {}",
                        r.repository,
                        r.deleted.len()
                    );
                }
                Err(e) => {
                    all_good = false;
                    println!("PRUNE FAILED {}: {e}", repo.name());
                }
            }
        }
    }
    Ok(all_good)
}

#[tokio::main]
async fn main() -> ExitCode {
    tej_examples::procedure_exit(run(Args::parse()).await)
}
