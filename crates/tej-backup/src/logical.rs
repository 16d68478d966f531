//! Logical backups: `pg_dump` streamed through the stages into every repository.

use crate::create::{CreateReport, Run, RunOptions};
use crate::db::DbTarget;
use crate::error::BackupError;
use crate::manifest::{BackupKind, DumpFormat};
use crate::repo::Repository;
use std::path::PathBuf;
use tej_core::{Clock, CommandError, CommandRunner, CommandSpec};

/// Options of a logical backup.
#[derive(Debug, Clone)]
pub struct LogicalBackupOptions {
    /// The database to dump.
    pub db: DbTarget,
    /// The dump format (custom by default).
    pub format: DumpFormat,
    /// Parallel jobs for the directory format (`pg_dump -j`).
    pub jobs: u32,
    /// Where the directory format is dumped before upload (default: the system temp dir).
    pub scratch_dir: Option<PathBuf>,
    /// Compression, encryption, lock, target name, progress.
    pub run: RunOptions,
}

impl LogicalBackupOptions {
    /// Defaults (custom format, zstd level 3, no encryption) for `db`.
    pub fn new(db: DbTarget) -> LogicalBackupOptions {
        LogicalBackupOptions {
            db,
            format: DumpFormat::Custom,
            jobs: 2,
            scratch_dir: None,
            run: RunOptions::default(),
        }
    }
}

/// `pg_dump --version` and the server's version.
async fn versions(
    runner: &dyn CommandRunner,
    db: &DbTarget,
) -> Result<(String, String), BackupError> {
    let out = tej_core::run_checked(runner, CommandSpec::new("pg_dump").arg("--version")).await?;
    let pg_dump = out.stdout_text().trim().to_string();
    let out = tej_core::run_checked(runner, db.psql(tej_db::pg::psql::SERVER_VERSION)).await?;
    Ok((pg_dump, out.stdout_text().trim().to_string()))
}

fn pg_dump_spec(db: &DbTarget, format: DumpFormat) -> CommandSpec {
    let spec = db.command(CommandSpec::new("pg_dump")).arg("--no-password");
    match format {
        // Our compressor is faster than pg_dump's built-in one: store uncompressed.
        DumpFormat::Custom => spec.args(["--format=custom", "--compress=0"]),
        DumpFormat::Plain => spec.arg("--format=plain"),
        DumpFormat::Directory => spec.args(["--format=directory", "--compress=0"]),
    }
}

/// Takes a logical backup of `opts.db` into every repository.
///
/// The manifest is written last in each repository where every object landed; the
/// report says which repositories have the backup. Fails when none has it.
pub async fn create_logical_backup(
    runner: &dyn CommandRunner,
    repos: &[Repository],
    opts: &LogicalBackupOptions,
    clock: &dyn Clock,
) -> Result<CreateReport, BackupError> {
    let database = opts.db.database();
    let (pg_dump_version, server_version) = versions(runner, &opts.db).await?;
    let target = opts.run.target.clone().unwrap_or_else(|| database.clone());
    let mut run = Run::start(repos, &target, &opts.run, clock).await?;
    let result = match opts.format {
        DumpFormat::Custom | DumpFormat::Plain => {
            stream_dump(runner, &mut run, opts, &database).await
        }
        DumpFormat::Directory => directory_dump(runner, &mut run, opts).await,
    };
    if let Err(e) = result {
        return Err(run.abort(e, clock).await);
    }
    let format = opts.format;
    run.finish(
        BackupKind::Logical,
        |m| {
            m.database = Some(database);
            m.format = Some(format);
            m.pg_dump_version = Some(pg_dump_version);
            m.server_version = Some(server_version);
        },
        clock,
    )
    .await
}

/// The plain format's object name, as the runbook names its files:
/// `skillswap_backup_20250116_020000.sql` (plus `.gz`, `.zst`, `.age`).
pub fn plain_object_base(database: &str, at: jiff::Timestamp) -> String {
    format!("{database}_backup_{}.sql", at.strftime("%Y%m%d_%H%M%S"))
}

async fn stream_dump(
    runner: &dyn CommandRunner,
    run: &mut Run,
    opts: &LogicalBackupOptions,
    database: &str,
) -> Result<(), BackupError> {
    let base = match opts.format {
        DumpFormat::Plain => plain_object_base(database, run.id.time()),
        _ => "dump.pgc".to_string(),
    };
    let name = run.object_name(&base);
    let spec = pg_dump_spec(&opts.db, opts.format);
    let mut child = runner.spawn(spec.clone()).await?;
    let stdout = child.stdout.take().ok_or_else(|| CommandError::Io {
        command: spec.display(),
        reason: "no stdout pipe".into(),
    })?;
    let done = async move {
        let out = child.wait().await?;
        CommandError::check(&spec, out)?;
        Ok::<(), BackupError>(())
    };
    run.upload(&name, stdout, done).await
}

async fn directory_dump(
    runner: &dyn CommandRunner,
    run: &mut Run,
    opts: &LogicalBackupOptions,
) -> Result<(), BackupError> {
    let parent = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("tej-dump-")
        .tempdir_in(&parent)
        .map_err(|e| {
            BackupError::io(
                format!("create a scratch directory in {}", parent.display()),
                e,
            )
        })?;
    let dir = scratch.path().join("dump");
    let spec = pg_dump_spec(&opts.db, DumpFormat::Directory)
        .arg(format!("--jobs={}", opts.jobs.max(1)))
        .arg(format!("--file={}", dir.display()));
    tej_core::run_checked(runner, spec).await?;
    let mut names = Vec::new();
    let mut rd = tokio::fs::read_dir(&dir)
        .await
        .map_err(|e| BackupError::io(format!("read {}", dir.display()), e))?;
    while let Some(entry) = rd
        .next_entry()
        .await
        .map_err(|e| BackupError::io(format!("read {}", dir.display()), e))?
    {
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    names.sort();
    for n in names {
        let path = dir.join(&n);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| BackupError::io(format!("open {}", path.display()), e))?;
        let object = run.object_name(&format!("dir/{n}"));
        run.upload(&object, file, async { Ok(()) }).await?;
    }
    Ok(())
}
