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
//! Library calls: [`tej_backup::create_logical_backup`], [`tej_backup::create_file_backup`],
//! [`tej_backup::verify_backup`], [`tej_backup::prune`].
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
    CompressionAlgo, CompressionOptions, DbTarget, DumpFormat, EncryptionOptions,
    FileBackupOptions, LogicalBackupOptions, PruneOptions, Repository, RetentionPolicy,
    VerifyOptions, create_file_backup, create_logical_backup, prune, verify_backup,
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
    let target = DbTarget::new(d.url.expose());
    Ok(match &d.password {
        Some(p) => target.with_password(p.resolve().context("read the database password")?),
        None => target,
    })
}

async fn run(args: Args) -> Result<bool> {
    let config = Config::load_or_env(args.config.as_deref()).context("load the configuration")?;
    let specs = if args.repos.is_empty() {
        config.backup.repositories.clone()
    } else {
        args.repos
    };
    if specs.is_empty() {
        bail!("no repository: pass --repo or set [backup] repositories in tej.toml");
    }
    let mut repos = Vec::new();
    for spec in &specs {
        repos.push(
            Repository::open(spec)
                .await
                .with_context(|| format!("open repository {spec}"))?,
        );
    }
    let encryption = config
        .backup
        .encryption
        .as_ref()
        .map(EncryptionOptions::from_config);
    let mut opts = LogicalBackupOptions::new(database(&config, args.db)?);
    opts.format = DumpFormat::parse(&config.backup.format).context("[backup] format")?;
    opts.run.compression = CompressionOptions {
        algorithm: CompressionAlgo::parse(&config.backup.compression).unwrap_or_default(),
        level: config.backup.compression_level,
        ..CompressionOptions::default()
    };
    opts.run.encryption = encryption.clone().unwrap_or_default();

    // "File Backups (Daily)": uploads and configuration, when `[backup] files` lists them.
    // First, so that the newest backup is the database's: the one the weekly audit's
    // restore test picks.
    let mut runs = Vec::new();
    if !config.backup.files.is_empty() {
        let mut fopts = FileBackupOptions::from_config(&config.backup);
        fopts.run.compression = opts.run.compression;
        fopts.run.encryption = opts.run.encryption.clone();
        let f = create_file_backup(&repos, &fopts, &SystemClock)
            .await
            .context("back up the files")?;
        println!(
            "files {} ({} files, {} bytes raw, {} bytes stored)",
            f.backup.id, f.files, f.backup.raw_size, f.backup.stored_size
        );
        runs.push(f.backup);
    }
    let created = create_logical_backup(&TokioCommandRunner, &repos, &opts, &SystemClock)
        .await
        .context("create the backup")?;
    println!(
        "backup {} ({} bytes raw, {} bytes stored)",
        created.id, created.raw_size, created.stored_size
    );
    runs.push(created);
    let verify = VerifyOptions {
        encryption: encryption.unwrap_or_default(),
        record: true,
        ..VerifyOptions::default()
    };
    let mut all_good = true;
    for run in &runs {
        let id = run.id.to_string();
        for (repo, outcome) in repos.iter().zip(&run.repositories) {
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
        let popts = PruneOptions {
            policy: RetentionPolicy::from_config(&config.backup.retention),
            pitr_window_days: config.backup.pitr_window_days,
            ..PruneOptions::default()
        };
        for repo in &repos {
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
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
