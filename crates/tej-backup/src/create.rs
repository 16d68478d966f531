//! Creating backups: the run (lock, leftovers, objects, manifest last) shared by logical
//! and file backups.

use crate::error::BackupError;
use crate::id::BackupId;
use crate::lock::{LockOptions, RepoLock};
use crate::manifest::{BackupKind, CompressionInfo, MANIFEST_VERSION, Manifest, ManifestObject};
use crate::pipeline::{
    CompressionOptions, Digests, Encrypt, EncryptionOptions, Fanout, ProgressSink, Ticker,
};
use crate::repo::{FAILED_NAME, FailureRecord, Repository};
use crate::storage::{ObjectKey, ObjectStore, PutOptions};
use jiff::Timestamp;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tej_core::Clock;
use tokio::io::AsyncRead;

/// What a create run reports for one repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepositoryOutcome {
    /// The repository.
    pub repository: String,
    /// The backup is there (manifest written).
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// Unfinished runs whose leftovers were removed first.
    pub cleaned_runs: Vec<BackupId>,
    /// Temporary files or unfinished multipart uploads removed first.
    pub cleaned_temporary: u64,
}

/// What `create` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateReport {
    /// The backup's id.
    pub id: BackupId,
    /// Kind.
    pub kind: BackupKind,
    /// The database (logical backups).
    pub database: Option<String>,
    /// The format (logical backups).
    pub format: Option<crate::manifest::DumpFormat>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
    /// Uncompressed bytes.
    pub raw_size: u64,
    /// Stored bytes (in each repository).
    pub stored_size: u64,
    /// Compression used.
    pub compression: CompressionInfo,
    /// Encrypted with age.
    pub encrypted: bool,
    /// Object names.
    pub objects: Vec<String>,
    /// One outcome per repository, in the order given.
    pub repositories: Vec<RepositoryOutcome>,
}

impl CreateReport {
    /// True when the backup is in every repository.
    pub fn succeeded(&self) -> bool {
        self.repositories.iter().all(|r| r.ok)
    }
}

/// Settings shared by every kind of backup run.
#[derive(Clone)]
pub struct RunOptions {
    /// Target name in the id and the lock (default: the database name, or `files`).
    pub target: Option<String>,
    /// Compression.
    pub compression: CompressionOptions,
    /// Encryption.
    pub encryption: EncryptionOptions,
    /// Locking.
    pub lock: LockOptions,
    /// Storage leftovers (temporary files, multipart uploads) older than this are removed
    /// before the run (default 1 h), and only when no other run of the repository is alive.
    pub cleanup_older_than: Duration,
    /// Progress events.
    pub progress: Option<ProgressSink>,
    /// Also record the SHA-256 of each object's uncompressed content (off by default for
    /// logical and file backups: one more SHA-256 pass, while zstd's content checksum,
    /// gzip's CRC-32 or age's authentication already make `verify` and `restore` catch any
    /// change of the decoded content, and the stored side's SHA-256 is always recorded).
    /// With it off, the manifest's `raw_sha256` is empty. Physical backups always hash.
    pub hash_raw: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            target: None,
            compression: CompressionOptions::default(),
            encryption: EncryptionOptions::default(),
            lock: LockOptions::default(),
            cleanup_older_than: Duration::from_secs(3600),
            progress: None,
            hash_raw: false,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("target", &self.target)
            .field("compression", &self.compression)
            .field("encryption", &self.encryption)
            .field("lock", &self.lock)
            .field("cleanup_older_than", &self.cleanup_older_than)
            .field("hash_raw", &self.hash_raw)
            .finish_non_exhaustive()
    }
}

struct Slot {
    repo: Repository,
    lock: Option<RepoLock>,
    error: Option<String>,
    cleaned_runs: Vec<BackupId>,
    cleaned_temporary: u64,
}

/// One backup run across repositories.
pub(crate) struct Run {
    pub id: BackupId,
    pub started_at: Timestamp,
    pub compression: CompressionInfo,
    comp_opts: CompressionOptions,
    encrypt: Option<Arc<Encrypt>>,
    slots: Vec<Slot>,
    objects: Vec<ManifestObject>,
    progress: Option<ProgressSink>,
    hash_raw: bool,
}

impl Run {
    /// Locks the target in every repository, cleans leftovers of this target (its lock makes
    /// any other run of it provably gone), picks a free id.
    pub async fn start(
        repos: &[Repository],
        target: &str,
        opts: &RunOptions,
        clock: &dyn Clock,
    ) -> Result<Run, BackupError> {
        if repos.is_empty() {
            return Err(BackupError::InvalidOptions(
                "no repository configured".into(),
            ));
        }
        let compression = opts.compression.info()?;
        let encrypt = opts.encryption.encryptor()?.map(Arc::new);
        let now = clock.now();
        let mut slots = Vec::new();
        for repo in repos {
            match RepoLock::acquire(repo, target, "create", &opts.lock, now).await {
                Ok(lock) => slots.push(Slot {
                    repo: repo.clone(),
                    lock: Some(lock),
                    error: None,
                    cleaned_runs: Vec::new(),
                    cleaned_temporary: 0,
                }),
                Err(e) => {
                    for s in slots {
                        if let Some(l) = s.lock {
                            let _ = l.release().await;
                        }
                    }
                    return Err(e);
                }
            }
        }
        for s in slots.iter_mut() {
            match s.repo.clean_incomplete(Some(target), now).await {
                Ok(c) => s.cleaned_runs = c,
                Err(e) => {
                    tracing::warn!(repo = %s.repo.name(), error = %e, "cannot clean unfinished runs")
                }
            }
            // Temporary objects and multipart uploads carry no owner: they are removed only
            // when no other run of this repository is alive to own them.
            let others = match crate::lock::target_locks(&s.repo, &opts.lock, now).await {
                Ok(locks) => locks
                    .iter()
                    .filter(|l| !l.stale && s.lock.as_ref().is_none_or(|m| m.key() != &l.key))
                    .count(),
                Err(e) => {
                    tracing::warn!(repo = %s.repo.name(), error = %e, "cannot list the locks");
                    1
                }
            };
            if others > 0 {
                tracing::info!(repo = %s.repo.name(), "other backups are running: temporary objects are left to them");
                continue;
            }
            match s
                .repo
                .store
                .cleanup_incomplete(opts.cleanup_older_than)
                .await
            {
                Ok(n) => s.cleaned_temporary = n,
                Err(e) => {
                    tracing::warn!(repo = %s.repo.name(), error = %e, "cannot clean temporary objects")
                }
            }
        }
        // A free id: never reuse one that has any object in any repository.
        let mut at = now;
        let id = loop {
            let id = BackupId::new(at, target);
            let mut taken = false;
            for s in &slots {
                if !s
                    .repo
                    .store
                    .list(&format!("backups/{id}/"))
                    .await?
                    .is_empty()
                {
                    taken = true;
                }
            }
            if !taken {
                break id;
            }
            at = at
                .checked_add(jiff::SignedDuration::from_secs(1))
                .map_err(|e| BackupError::InvalidOptions(e.to_string()))?;
        };
        Ok(Run {
            id,
            started_at: now,
            compression,
            comp_opts: opts.compression,
            encrypt,
            slots,
            objects: Vec::new(),
            progress: opts.progress.clone(),
            hash_raw: opts.hash_raw,
        })
    }

    /// The object name with the compression and encryption suffixes.
    pub fn object_name(&self, base: &str) -> String {
        format!(
            "{base}{}{}",
            self.compression.algorithm.suffix(),
            if self.encrypt.is_some() { ".age" } else { "" }
        )
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].error.is_none())
            .collect()
    }

    /// Streams `reader` through the stages into object `name` in every live repository.
    /// `producer_done` is awaited after the reader's end: an error there (pg_dump failed)
    /// aborts the uploads so no partial object is stored.
    pub async fn upload<R, F>(
        &mut self,
        name: &str,
        reader: R,
        producer_done: F,
    ) -> Result<(), BackupError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        F: Future<Output = Result<(), BackupError>>,
    {
        let pending = self.prepare(name)?;
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let outcome = pending.run(move || Ok(bridge), producer_done).await;
        self.complete(outcome).map(drop)
    }

    /// Prepares the upload of object `name` to every live repository. The returned
    /// [`PendingUpload`] owns what it needs, so several can run at once (base backups);
    /// hand each [`UploadOutcome`] back to [`Run::complete`].
    pub(crate) fn prepare(&self, name: &str) -> Result<PendingUpload, BackupError> {
        let alive = self.alive();
        if alive.is_empty() {
            return Err(self.all_failed());
        }
        let mut targets = Vec::new();
        for &i in &alive {
            let store: Arc<dyn ObjectStore> = self.slots[i].repo.store.clone();
            targets.push((i, store, self.slots[i].repo.key(&self.id, name)?));
        }
        Ok(PendingUpload {
            name: name.to_string(),
            key: format!("backups/{}/{name}", self.id),
            targets,
            comp: self.comp_opts,
            hash_raw: self.hash_raw,
            encrypt: self.encrypt.clone(),
            ticker: Ticker::new(self.progress.clone(), "create", self.id.as_str(), name),
        })
    }

    /// Records an upload's result: repositories that failed it are marked failed, the
    /// object joins the manifest when at least one repository stored it.
    pub(crate) fn complete(
        &mut self,
        outcome: UploadOutcome,
    ) -> Result<ManifestObject, BackupError> {
        let UploadOutcome {
            name,
            key,
            digests,
            puts,
        } = outcome;
        let mut stored_ok = 0usize;
        for (i, put) in puts {
            if self.slots[i].error.is_some() {
                continue;
            }
            match (put, &digests) {
                (Ok(size), Ok(d)) => {
                    if size == d.stored_size {
                        stored_ok += 1;
                    } else {
                        self.slots[i].error = Some(format!(
                            "{name}: stored {size} bytes, expected {}",
                            d.stored_size
                        ));
                    }
                }
                (Err(e), Ok(_)) => self.slots[i].error = Some(format!("{name}: {e}")),
                (_, Err(_)) => {}
            }
        }
        let d = digests?;
        if stored_ok == 0 {
            return Err(self.all_failed());
        }
        let obj = ManifestObject {
            name,
            key,
            stored_size: d.stored_size,
            stored_sha256: d.stored_sha256,
            raw_size: d.raw_size,
            raw_sha256: d.raw_sha256,
        };
        self.objects.push(obj.clone());
        Ok(obj)
    }

    fn all_failed(&self) -> BackupError {
        BackupError::AllRepositoriesFailed {
            id: self.id.to_string(),
            reasons: self
                .slots
                .iter()
                .map(|s| {
                    format!(
                        "{}: {}",
                        s.repo.name(),
                        s.error.as_deref().unwrap_or("not written")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// Writes the manifest (last) where every object landed, releases the locks.
    pub async fn finish(
        mut self,
        kind: BackupKind,
        fill: impl FnOnce(&mut Manifest),
        clock: &dyn Clock,
    ) -> Result<CreateReport, BackupError> {
        let finished_at = clock.now();
        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            id: self.id.clone(),
            kind,
            database: None,
            format: None,
            pg_dump_version: None,
            server_version: None,
            paths: Vec::new(),
            started_at: self.started_at,
            finished_at,
            compression: self.compression,
            encryption: self.encrypt.as_ref().map(|e| e.info()),
            raw_size: self.objects.iter().map(|o| o.raw_size).sum(),
            stored_size: self.objects.iter().map(|o| o.stored_size).sum(),
            objects: self.objects.clone(),
            physical: None,
            host: crate::lock::hostname(),
            tool: format!("tej-backup {}", env!("CARGO_PKG_VERSION")),
        };
        fill(&mut manifest);
        for s in self.slots.iter_mut() {
            if s.error.is_some() {
                continue;
            }
            // Every object must be there at its size before the manifest makes it a backup.
            let mut problem = None;
            for o in &manifest.objects {
                let key = ObjectKey::new(o.key.clone())?;
                match s.repo.store.head(&key).await {
                    Ok(Some(m)) if m.size == o.stored_size => {}
                    Ok(Some(m)) => {
                        problem = Some(format!(
                            "{}: {} bytes, expected {}",
                            o.key, m.size, o.stored_size
                        ))
                    }
                    Ok(None) => problem = Some(format!("{} is missing after upload", o.key)),
                    Err(e) => problem = Some(e.to_string()),
                }
                if problem.is_some() {
                    break;
                }
            }
            if problem.is_none()
                && let Err(e) = s.repo.write_manifest(&manifest).await
            {
                problem = Some(format!("writing the manifest: {e}"));
            }
            s.error = problem;
        }
        let report = CreateReport {
            id: self.id.clone(),
            kind,
            database: manifest.database.clone(),
            format: manifest.format,
            started_at: self.started_at,
            finished_at,
            raw_size: manifest.raw_size,
            stored_size: manifest.stored_size,
            compression: self.compression,
            encrypted: manifest.encryption.is_some(),
            objects: manifest.objects.iter().map(|o| o.name.clone()).collect(),
            repositories: self
                .slots
                .iter()
                .map(|s| RepositoryOutcome {
                    repository: s.repo.name(),
                    ok: s.error.is_none(),
                    error: s.error.clone(),
                    cleaned_runs: s.cleaned_runs.clone(),
                    cleaned_temporary: s.cleaned_temporary,
                })
                .collect(),
        };
        let all_failed = report.repositories.iter().all(|r| !r.ok);
        let err = all_failed.then(|| self.all_failed());
        self.close(clock, err.as_ref().map(|e| e.to_string())).await;
        match err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Ends a failed run: removes what it stored, records the failure, releases the locks.
    pub async fn abort(self, error: BackupError, clock: &dyn Clock) -> BackupError {
        let reason = error.to_string();
        self.close(clock, Some(reason)).await;
        error
    }

    async fn close(mut self, clock: &dyn Clock, failure: Option<String>) {
        for s in self.slots.iter_mut() {
            let reason = match (&failure, &s.error) {
                (Some(f), _) => Some(f.clone()),
                (None, Some(e)) => Some(e.clone()),
                (None, None) => None,
            };
            if let Some(reason) = reason {
                // Best effort: the next run or prune cleans anything left.
                if let Ok(key) = s.repo.key(&self.id, FAILED_NAME) {
                    let rec = FailureRecord {
                        id: self.id.clone(),
                        at: clock.now(),
                        reason: reason.clone(),
                    };
                    if let Err(e) = s.repo.write_json(&key, &rec).await {
                        tracing::warn!(repo = %s.repo.name(), error = %e, "cannot record the failed run");
                    }
                }
                if let Ok(objs) = s.repo.store.list(&format!("backups/{}/", self.id)).await {
                    for o in objs {
                        if !o.key.as_str().ends_with(FAILED_NAME) {
                            let _ = s.repo.store.delete(&o.key).await;
                        }
                    }
                }
            }
            if let Some(l) = s.lock.take()
                && let Err(e) = l.release().await
            {
                tracing::warn!(repo = %s.repo.name(), error = %e, "cannot release the backup lock");
            }
        }
    }
}

/// One object's upload, prepared by [`Run::prepare`]; independent of the run, so
/// several can run concurrently.
pub(crate) struct PendingUpload {
    name: String,
    key: String,
    targets: Vec<(usize, Arc<dyn ObjectStore>, ObjectKey)>,
    comp: CompressionOptions,
    hash_raw: bool,
    encrypt: Option<Arc<Encrypt>>,
    ticker: Ticker,
}

/// What an upload did, for [`Run::complete`].
pub(crate) struct UploadOutcome {
    name: String,
    key: String,
    digests: Result<Digests, BackupError>,
    puts: Vec<(usize, Result<u64, String>)>,
}

impl PendingUpload {
    /// Encodes what `input` (opened on the blocking thread) yields into every target.
    /// `producer_done` is awaited after the input's end: an error there aborts the uploads
    /// so no partial object is stored.
    pub(crate) async fn run<I, R, F>(self, input: I, producer_done: F) -> UploadOutcome
    where
        I: FnOnce() -> std::io::Result<R> + Send + 'static,
        R: std::io::Read,
        F: Future<Output = Result<(), BackupError>>,
    {
        let PendingUpload {
            name,
            key,
            targets,
            comp,
            hash_raw,
            encrypt,
            ticker,
        } = self;
        let (fanout, streams) = Fanout::new(targets.len());
        let mut puts = Vec::new();
        for ((i, store, key), stream) in targets.into_iter().zip(streams) {
            puts.push((
                i,
                tokio::spawn(async move { store.put(&key, stream, PutOptions::default()).await }),
            ));
        }
        let encoding = tokio::task::spawn_blocking(move || {
            let mut fanout = fanout;
            let r = input().and_then(|mut input| {
                crate::pipeline::encode_with(
                    &mut input,
                    &comp,
                    encrypt.as_deref(),
                    hash_raw,
                    &mut fanout,
                    &mut |raw, _| ticker.tick(raw, false),
                )
                .and_then(|d| fanout.flush_all().map(|_| d))
            });
            ticker.tick(r.as_ref().map(|d| d.raw_size).unwrap_or(0), true);
            (r, fanout)
        });
        let joined = encoding.await;
        let done = producer_done.await;
        let digests: Result<Digests, BackupError> = match (joined, done) {
            (Err(e), _) => Err(BackupError::io(
                "compression thread",
                std::io::Error::other(e.to_string()),
            )),
            (Ok((_, fanout)), Err(e)) => {
                fanout.fail(&format!("producer failed: {e}")).await;
                Err(e)
            }
            (Ok((Err(e), fanout)), Ok(())) => {
                fanout.fail(&format!("encoding failed: {e}")).await;
                Err(BackupError::io(format!("encoding {name}"), e))
            }
            (Ok((Ok(d), fanout)), Ok(())) => {
                fanout.close();
                Ok(d)
            }
        };
        let mut results = Vec::new();
        for (i, put) in puts {
            let r = match put.await {
                Ok(Ok(res)) => Ok(res.size),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            results.push((i, r));
        }
        UploadOutcome {
            name,
            key,
            digests,
            puts: results,
        }
    }
}
