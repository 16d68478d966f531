//! `verify`: re-read every object, check SHA-256, decrypt, decompress (and, for base
//! backups, every file inside a bundle against the file list); optionally restore
//! into a scratch database and run sanity queries.

use crate::db::DbTarget;
use crate::error::BackupError;
use crate::lock::RepoLock;
use crate::manifest::BackupKind;
use crate::pipeline::{EncryptionOptions, ProgressSink, Ticker};
use crate::read::decode_object;
use crate::repo::{Repository, VERIFY_NAME, VerificationRecord};
use crate::restore::{RestoreOptions, restore_manifest};
use serde::Serialize;
use tej_core::{Clock, CommandRunner};

/// A restore test: restore into a scratch database on a server and run queries.
#[derive(Debug, Clone)]
pub struct RestoreTestOptions {
    /// A connection to the server (any database; the scratch one is created beside it).
    pub server: DbTarget,
    /// Sanity queries (`SELECT COUNT(*) FROM users`); each must succeed.
    pub queries: Vec<String>,
    /// `pg_restore -j` jobs.
    pub jobs: u32,
}

/// Options of `verify`.
#[derive(Clone, Default)]
pub struct VerifyOptions {
    /// Keys for encrypted backups.
    pub encryption: EncryptionOptions,
    /// Store the result beside the backup (`verify.json`), which retention reads.
    pub record: bool,
    /// Restore test, when wanted.
    pub restore_test: Option<RestoreTestOptions>,
    /// Progress events.
    pub progress: Option<ProgressSink>,
}

impl std::fmt::Debug for VerifyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("encryption", &self.encryption)
            .field("record", &self.record)
            .field("restore_test", &self.restore_test)
            .finish_non_exhaustive()
    }
}

/// One object checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectCheck {
    /// Name in the backup.
    pub name: String,
    /// Key.
    pub key: String,
    /// Stored bytes (as the manifest says).
    pub stored_size: u64,
    /// Uncompressed bytes.
    pub raw_size: u64,
}

/// The result of one sanity query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryResult {
    /// The query.
    pub query: String,
    /// Its output (psql unaligned, tuples only).
    pub output: String,
}

/// What a restore test did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreTestReport {
    /// The scratch database (dropped afterwards).
    pub database: String,
    /// Seconds the restore took.
    pub restore_secs: f64,
    /// Query results.
    pub queries: Vec<QueryResult>,
}

/// What `verify` reports on success.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Repository.
    pub repository: String,
    /// Backup.
    pub id: String,
    /// Objects checked, in order.
    pub objects: Vec<ObjectCheck>,
    /// The restore test, when run.
    pub restore_test: Option<RestoreTestReport>,
    /// When.
    pub verified_at: jiff::Timestamp,
}

/// Verifies backup `selector` (`latest` or an id) in `repo`. Any problem is an error that
/// names the object (corrupt, truncated, missing, wrong key); a manifest listing no
/// object fails too. With `opts.record`, the
/// outcome, good or bad, is stored beside the backup for retention.
pub async fn verify_backup(
    runner: &dyn CommandRunner,
    repo: &Repository,
    selector: &str,
    opts: &VerifyOptions,
    clock: &dyn Clock,
) -> Result<VerifyReport, BackupError> {
    let verify = async {
        let m = repo.resolve(selector).await?;
        let result = verify_inner(runner, repo, &m, opts, clock).await;
        if opts.record {
            let rec = VerificationRecord {
                at: clock.now(),
                ok: result.is_ok(),
                restore_tested: opts.restore_test.is_some() && result.is_ok(),
                error: result.as_ref().err().map(|e| e.to_string()),
            };
            if let Err(e) = repo.write_json(&repo.key(&m.id, VERIFY_NAME)?, &rec).await {
                tracing::warn!(repo = %repo.name(), error = %e, "cannot record the verification");
            }
        }
        result
    };
    RepoLock::hold_reading(repo, "verify", clock.now(), verify).await
}

async fn verify_inner(
    runner: &dyn CommandRunner,
    repo: &Repository,
    m: &crate::manifest::Manifest,
    opts: &VerifyOptions,
    clock: &dyn Clock,
) -> Result<VerifyReport, BackupError> {
    if m.objects.is_empty() {
        // Nothing to check is not a good backup: retention must not keep it as the
        // newest verified one.
        return Err(BackupError::Corrupt {
            repo: repo.name(),
            id: m.id.to_string(),
            object: format!("backups/{}/manifest.json", m.id),
            reason: "the manifest lists no object: there is nothing to restore".into(),
        });
    }
    let mut objects = Vec::new();
    if m.kind == BackupKind::Physical {
        // Also checks every file inside the bundles against the file list.
        objects = crate::physical::verify_physical_objects(
            repo,
            m,
            &opts.encryption,
            opts.progress.clone(),
        )
        .await?;
    } else {
        for obj in &m.objects {
            let ticker = Ticker::new(opts.progress.clone(), "verify", m.id.as_str(), &obj.name);
            decode_object(repo, m, obj, &opts.encryption, std::io::sink(), ticker).await?;
            objects.push(ObjectCheck {
                name: obj.name.clone(),
                key: obj.key.clone(),
                stored_size: obj.stored_size,
                raw_size: obj.raw_size,
            });
        }
    }
    let restore_test = match &opts.restore_test {
        Some(t) if m.kind == BackupKind::Logical => {
            Some(restore_test(runner, repo, m, opts, t, clock).await?)
        }
        _ => None,
    };
    Ok(VerifyReport {
        repository: repo.name(),
        id: m.id.to_string(),
        objects,
        restore_test,
        verified_at: clock.now(),
    })
}

async fn restore_test(
    runner: &dyn CommandRunner,
    repo: &Repository,
    m: &crate::manifest::Manifest,
    opts: &VerifyOptions,
    t: &RestoreTestOptions,
    clock: &dyn Clock,
) -> Result<RestoreTestReport, BackupError> {
    // Unique per call, not only per second and process: one run verifies several
    // repositories at once against the same server.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let db = format!(
        "tej_verify_{}_{}_{}",
        clock.now().as_second(),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let sql = |r: Result<String, tej_db::DbError>| {
        r.map_err(|e| BackupError::InvalidOptions(format!("restore-test database {db:?}: {e}")))
    };
    let create = sql(tej_db::pg::psql::create_database(&db))?;
    let drop = sql(tej_db::pg::psql::drop_database_force(&db))?;
    tej_core::run_checked(runner, t.server.psql(&create)).await?;
    let target = t.server.with_database(&db);
    let result = async {
        let mut ro = RestoreOptions::new(target.clone());
        ro.jobs = t.jobs.max(1);
        ro.clean = false;
        ro.encryption = opts.encryption.clone();
        ro.progress = opts.progress.clone();
        let r = restore_manifest(runner, repo, m, &ro).await?;
        let mut queries = Vec::new();
        for q in &t.queries {
            let out = tej_core::run_checked(runner, target.psql(q))
                .await
                .map_err(|e| BackupError::SanityCheck {
                    query: q.clone(),
                    reason: e.to_string(),
                })?;
            queries.push(QueryResult {
                query: q.clone(),
                output: out.stdout_text().trim().to_string(),
            });
        }
        Ok::<_, BackupError>(RestoreTestReport {
            database: db.clone(),
            restore_secs: r.duration_secs,
            queries,
        })
    }
    .await;
    let dropped = tej_core::run_checked(runner, t.server.psql(&drop)).await;
    let report = result?;
    dropped?;
    Ok(report)
}
