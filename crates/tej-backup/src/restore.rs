//! Restoring a logical backup into a database: destructive, run as a [`tej_core::Step`].

use crate::db::DbTarget;
use crate::error::BackupError;
use crate::manifest::{BackupKind, DumpFormat, Manifest};
use crate::pipeline::{EncryptionOptions, ProgressSink, Ticker};
use crate::read::decode_object;
use crate::repo::Repository;
use async_trait::async_trait;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tej_core::{CommandError, CommandRunner, CommandSpec, Plan, Risk, Step, StepError, StepOutput};

/// Options of a restore.
#[derive(Clone)]
pub struct RestoreOptions {
    /// The database restored into (it must exist).
    pub target: DbTarget,
    /// `pg_restore -j` jobs (custom and directory formats). With more than one job a custom
    /// archive is first decoded to `scratch_dir`; with one it streams into `pg_restore`
    /// in a single transaction.
    pub jobs: u32,
    /// Drop objects before recreating them (`pg_restore --clean --if-exists`). Plain
    /// dumps have no DROP statements: restore them into an empty database.
    pub clean: bool,
    /// Keys for encrypted backups.
    pub encryption: EncryptionOptions,
    /// Scratch space for parallel restores (default: the system temp dir).
    pub scratch_dir: Option<PathBuf>,
    /// Progress events.
    pub progress: Option<ProgressSink>,
}

impl std::fmt::Debug for RestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreOptions")
            .field("target", &self.target)
            .field("jobs", &self.jobs)
            .field("clean", &self.clean)
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

impl RestoreOptions {
    /// One job, clean, no keys.
    pub fn new(target: DbTarget) -> RestoreOptions {
        RestoreOptions {
            target,
            jobs: 1,
            clean: true,
            encryption: EncryptionOptions::default(),
            scratch_dir: None,
            progress: None,
        }
    }
}

/// What a restore reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Repository.
    pub repository: String,
    /// Backup.
    pub id: String,
    /// The database restored into.
    pub database: String,
    /// Format.
    pub format: DumpFormat,
    /// Uncompressed bytes fed to pg_restore or psql.
    pub raw_size: u64,
    /// Wall time.
    pub duration_secs: f64,
    /// Where the dump was decoded before `pg_restore` read it (removed afterwards);
    /// `None` when it streamed straight into `psql`.
    pub scratch_dir: Option<String>,
}

fn restore_spec(
    opts: &RestoreOptions,
    format: DumpFormat,
    input: Option<&std::path::Path>,
) -> CommandSpec {
    let t = &opts.target;
    let spec = match format {
        DumpFormat::Plain => CommandSpec::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"])
            .arg(format!("--dbname={}", t.conn))
            .args(["-f", "-"]),
        DumpFormat::Custom | DumpFormat::Directory => {
            let mut s = CommandSpec::new("pg_restore")
                .arg(format!("--dbname={}", t.conn))
                .args(["--no-password", "--exit-on-error"]);
            if opts.clean {
                s = s.args(["--clean", "--if-exists"]);
            }
            match input {
                Some(p) => s
                    .arg(format!("--jobs={}", opts.jobs.max(1)))
                    .arg(format!(
                        "--format={}",
                        if format == DumpFormat::Directory {
                            "directory"
                        } else {
                            "custom"
                        }
                    ))
                    .arg(p.as_os_str()),
                None => s.args(["--single-transaction", "--format=custom"]),
            }
        }
    };
    t.apply(spec)
}

/// Restores `manifest`'s backup from `repo` into `opts.target`. Every object's SHA-256
/// is checked on the way; a mismatch fails the restore.
pub async fn restore_manifest(
    runner: &dyn CommandRunner,
    repo: &Repository,
    m: &Manifest,
    opts: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let format = match (m.kind, m.format) {
        (BackupKind::Logical, Some(f)) => f,
        _ => {
            return Err(BackupError::InvalidOptions(format!(
                "backup {} is a {} backup, not a database dump",
                m.id, m.kind
            )));
        }
    };
    let ticker = |name: &str| Ticker::new(opts.progress.clone(), "restore", m.id.as_str(), name);
    let streamed = format == DumpFormat::Plain || (format == DumpFormat::Custom && opts.jobs <= 1);
    if streamed {
        let obj = m.objects.first().ok_or_else(|| BackupError::Corrupt {
            repo: repo.name(),
            id: m.id.to_string(),
            object: format!("backups/{}/manifest.json", m.id),
            reason: "the manifest lists no object".into(),
        })?;
        let spec = restore_spec(opts, format, None).stdin_piped();
        let mut child = runner.spawn(spec.clone()).await?;
        let stdin = child.stdin.take().ok_or_else(|| CommandError::Io {
            command: spec.display(),
            reason: "no stdin pipe".into(),
        })?;
        // pg_restore's own output is small; drain it so it never blocks.
        let drain = child.stdout.take().map(|mut out| {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
            })
        });
        let sink = tokio_util::io::SyncIoBridge::new(stdin);
        let fed = decode_object(repo, m, obj, &opts.encryption, sink, ticker(&obj.name)).await;
        let out = child.wait().await;
        if let Some(d) = drain {
            let _ = d.await;
        }
        // A decode error explains a failed pg_restore better than its own message.
        fed?;
        CommandError::check(&spec, out?)?;
    } else {
        let parent = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
        let scratch = tempfile::Builder::new()
            .prefix("tej-restore-")
            .tempdir_in(&parent)
            .map_err(|e| {
                BackupError::io(
                    format!("create a scratch directory in {}", parent.display()),
                    e,
                )
            })?;
        let suffix = format!(
            "{}{}",
            m.compression.algorithm.suffix(),
            if m.encryption.is_some() { ".age" } else { "" }
        );
        let input = if format == DumpFormat::Directory {
            let dir = scratch.path().join("dump");
            std::fs::create_dir(&dir)
                .map_err(|e| BackupError::io(format!("create {}", dir.display()), e))?;
            for obj in &m.objects {
                let base = obj.name.strip_prefix("dir/").unwrap_or(&obj.name);
                let base = base.strip_suffix(&suffix).unwrap_or(base);
                if base.is_empty() || base.contains('/') || base.starts_with('.') {
                    return Err(BackupError::Corrupt {
                        repo: repo.name(),
                        id: m.id.to_string(),
                        object: obj.key.clone(),
                        reason: "unexpected object name in a directory dump".into(),
                    });
                }
                let path = dir.join(base);
                let file = std::fs::File::create(&path)
                    .map_err(|e| BackupError::io(format!("create {}", path.display()), e))?;
                decode_object(
                    repo,
                    m,
                    obj,
                    &opts.encryption,
                    std::io::BufWriter::new(file),
                    ticker(&obj.name),
                )
                .await?;
            }
            dir
        } else {
            let obj = &m.objects[0];
            let path = scratch.path().join("dump.pgc");
            let file = std::fs::File::create(&path)
                .map_err(|e| BackupError::io(format!("create {}", path.display()), e))?;
            decode_object(
                repo,
                m,
                obj,
                &opts.encryption,
                std::io::BufWriter::new(file),
                ticker(&obj.name),
            )
            .await?;
            path
        };
        tej_core::run_checked(runner, restore_spec(opts, format, Some(&input))).await?;
    }
    Ok(RestoreReport {
        repository: repo.name(),
        id: m.id.to_string(),
        database: opts.target.database(),
        format,
        raw_size: m.raw_size,
        duration_secs: started.elapsed().as_secs_f64(),
        scratch_dir: None,
    })
}

/// `restore ID|latest`: resolves the selector and restores.
pub async fn restore_backup(
    runner: &dyn CommandRunner,
    repo: &Repository,
    selector: &str,
    opts: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let m = repo.resolve(selector).await?;
    restore_manifest(runner, repo, &m, opts).await
}

/// The restore as a destructive [`Step`]: run it through a [`tej_core::Executor`] so it
/// is confirmed (and refused in production outside the maintenance window).
pub struct RestoreStep {
    /// Starts pg_restore and psql.
    pub runner: Arc<dyn CommandRunner>,
    /// Where the backup is.
    pub repo: Repository,
    /// `latest` or an id.
    pub selector: String,
    /// Options.
    pub opts: RestoreOptions,
}

#[async_trait]
impl Step for RestoreStep {
    fn name(&self) -> String {
        "backup-restore".into()
    }

    fn risk(&self) -> Risk {
        Risk::Destructive
    }

    fn target(&self) -> String {
        format!("database {}", self.opts.target.database())
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        let m = self.repo.resolve(&self.selector).await?;
        let format = m.format.map(|f| f.to_string()).unwrap_or_default();
        Ok(Plan {
            step: self.name(),
            risk: self.risk(),
            target: self.target(),
            actions: vec![
                format!(
                    "read backup {} ({} {}, {} bytes, taken {}) from {}",
                    m.id,
                    m.database.clone().unwrap_or_default(),
                    format,
                    m.raw_size,
                    m.finished_at,
                    self.repo.name()
                ),
                format!(
                    "{} database {}: existing objects of the dump are dropped and replaced",
                    if format == "plain" {
                        "psql into"
                    } else {
                        "pg_restore into"
                    },
                    self.opts.target.database()
                ),
            ],
        })
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        let r = restore_backup(&*self.runner, &self.repo, &self.selector, &self.opts).await?;
        Ok(StepOutput {
            summary: format!(
                "restored {} into {} in {:.1}s",
                r.id, r.database, r.duration_secs
            ),
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}
