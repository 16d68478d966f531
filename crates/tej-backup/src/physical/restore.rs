//! Restoring a base backup into a data directory, and verifying one file by file.

use super::layout::{
    BACKUP_LABEL_NAME, FILE_LIST_NAME, PhysicalFile, PhysicalFileList, TABLESPACE_MAP_NAME,
};
use crate::error::BackupError;
use crate::manifest::{BackupKind, Manifest, ManifestObject, PhysicalInfo};
use crate::pipeline::{EncryptionOptions, ProgressSink, Ticker};
use crate::read::decode_object;
use crate::repo::Repository;
use crate::verify::ObjectCheck;
use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tej_core::{Plan, Refusal, Risk, Step, StepError, StepOutput};

/// Options of a physical restore.
#[derive(Clone, Default)]
pub struct PhysicalRestoreOptions {
    /// Keys for encrypted backups.
    pub encryption: EncryptionOptions,
    /// Objects downloaded and decoded at once (0: one per core).
    pub jobs: usize,
    /// Empty a non-empty target directory first (the caller's confirmation; a directory
    /// holding a running server's `postmaster.pid` is refused even so).
    pub replace: bool,
    /// `chown` the restored tree to this (uid, gid), e.g. the `postgres` user when
    /// restoring as root.
    pub owner: Option<(u32, u32)>,
    /// Progress events.
    pub progress: Option<ProgressSink>,
}

impl std::fmt::Debug for PhysicalRestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalRestoreOptions")
            .field("encryption", &self.encryption)
            .field("jobs", &self.jobs)
            .field("replace", &self.replace)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl PhysicalRestoreOptions {
    fn jobs(&self) -> usize {
        if self.jobs > 0 {
            self.jobs
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }
    }
}

/// What a physical restore reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhysicalRestoreReport {
    /// Repository.
    pub repository: String,
    /// Backup.
    pub id: String,
    /// The data directory written.
    pub target_dir: String,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// LSNs and timeline of the backup (recovery must replay to `stop_lsn`).
    pub physical: PhysicalInfo,
    /// Wall time.
    pub duration_secs: f64,
}

/// A `Write` into shared memory, so a decoded object can be read back after
/// `decode_object` consumed the writer.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

fn corrupt(repo: &Repository, m: &Manifest, object: &str, reason: String) -> BackupError {
    BackupError::Corrupt {
        repo: repo.name(),
        id: m.id.to_string(),
        object: object.to_string(),
        reason,
    }
}

fn object_named<'a>(m: &'a Manifest, name: &str) -> Option<&'a ManifestObject> {
    m.objects.iter().find(|o| o.name == name)
}

fn suffixed(m: &Manifest, base: &str) -> String {
    format!(
        "{base}{}{}",
        m.compression.algorithm.suffix(),
        if m.encryption.is_some() { ".age" } else { "" }
    )
}

async fn decode_to_memory(
    repo: &Repository,
    m: &Manifest,
    obj: &ManifestObject,
    keys: &EncryptionOptions,
    ticker: Ticker,
) -> Result<Vec<u8>, BackupError> {
    let buf = SharedBuf::default();
    decode_object(repo, m, obj, keys, buf.clone(), ticker).await?;
    Ok(buf.take())
}

/// A relative path from the file list that cannot escape the target directory.
fn safe_rel(repo: &Repository, m: &Manifest, rel: &str) -> Result<PathBuf, BackupError> {
    let p = Path::new(rel);
    let ok = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(corrupt(
            repo,
            m,
            &format!("backups/{}/{FILE_LIST_NAME}", m.id),
            format!("unsafe path {rel:?} in the file list"),
        ))
    }
}

/// A base backup's file list, read and checked against the manifest.
struct Loaded {
    list: PhysicalFileList,
    /// Per object name: the files (index into `list.files`) and chunk index it holds.
    by_object: HashMap<String, Vec<(usize, usize)>>,
}

async fn load(
    repo: &Repository,
    m: &Manifest,
    keys: &EncryptionOptions,
    progress: Option<ProgressSink>,
    operation: &'static str,
) -> Result<Loaded, BackupError> {
    if m.kind != BackupKind::Physical || m.physical.is_none() {
        return Err(BackupError::InvalidOptions(format!(
            "backup {} is a {} backup, not a base backup",
            m.id, m.kind
        )));
    }
    let name = suffixed(m, FILE_LIST_NAME);
    let obj = object_named(m, &name).ok_or_else(|| {
        corrupt(
            repo,
            m,
            &format!("backups/{}/{name}", m.id),
            "the manifest lists no file list".into(),
        )
    })?;
    let bytes = decode_to_memory(
        repo,
        m,
        obj,
        keys,
        Ticker::new(progress, operation, m.id.as_str(), &obj.name),
    )
    .await?;
    let list: PhysicalFileList = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(repo, m, &obj.key, format!("unreadable file list: {e}")))?;
    let mut by_object: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
    for (fi, f) in list.files.iter().enumerate() {
        safe_rel(repo, m, &f.path)?;
        for (ci, c) in f.chunks.iter().enumerate() {
            if object_named(m, &c.object).is_none() {
                return Err(corrupt(
                    repo,
                    m,
                    &obj.key,
                    format!(
                        "{} is stored in {}, which the manifest does not list",
                        f.path, c.object
                    ),
                ));
            }
            by_object
                .entry(c.object.clone())
                .or_default()
                .push((fi, ci));
        }
    }
    for d in &list.directories {
        safe_rel(repo, m, &d.path)?;
    }
    Ok(Loaded { list, by_object })
}

/// What to do with a tar bundle's entries: write them under a directory, or only check.
enum Sink<'a> {
    Write(&'a Path),
    Check,
}

/// Walks a decoded bundle, checking each entry against the file list and writing it
/// when asked; every file the list places in this bundle must be there.
fn unpack_bundle(
    data: &[u8],
    obj: &ManifestObject,
    files: &[PhysicalFile],
    expected: &[(usize, usize)],
    sink: Sink<'_>,
) -> Result<u64, String> {
    let mut want: HashMap<&str, (usize, usize)> = expected
        .iter()
        .map(|&(fi, ci)| (files[fi].path.as_str(), (fi, ci)))
        .collect();
    let mut archive = tar::Archive::new(data);
    let mut written = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar bundle: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("damaged tar bundle: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("damaged tar entry name: {e}"))?
            .to_string_lossy()
            .into_owned();
        let Some((fi, ci)) = want.remove(path.as_str()) else {
            return Err(format!("unexpected entry {path} in the bundle"));
        };
        let file = &files[fi];
        let chunk = &file.chunks[ci];
        let mut content = Vec::with_capacity(chunk.size as usize);
        std::io::Read::read_to_end(&mut entry, &mut content)
            .map_err(|e| format!("reading {path}: {e}"))?;
        let sha = hex::encode(Sha256::digest(&content));
        if content.len() as u64 != chunk.size || sha != chunk.sha256 {
            return Err(format!(
                "file {path}: {} bytes with SHA-256 {sha}, the file list says {} bytes with {}",
                content.len(),
                chunk.size,
                chunk.sha256
            ));
        }
        if let Sink::Write(root) = sink {
            let dest = root.join(&file.path);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&dest)
                .map_err(|e| format!("create {}: {e}", dest.display()))?;
            f.write_all(&content)
                .map_err(|e| format!("write {}: {e}", dest.display()))?;
            written += content.len() as u64;
        }
    }
    if let Some(missing) = want.keys().next() {
        return Err(format!(
            "file {missing} is missing from bundle {} ({} missing)",
            obj.name,
            want.len()
        ));
    }
    Ok(written)
}

/// A `Write` at an offset of a file: one part of a large file.
struct AtOffset(std::io::BufWriter<std::fs::File>);

impl Write for AtOffset {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(BackupError::io(format!("read {}", dir.display()), e)),
    }
}

/// Refuses to touch a directory a server runs on.
fn check_not_running(dir: &Path) -> Result<(), BackupError> {
    let pid_file = dir.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let pid: Option<i32> = text.lines().next().and_then(|l| l.trim().parse().ok());
    if let Some(pid) = pid
        && pid > 0
        && Path::new(&format!("/proc/{pid}")).exists()
    {
        return Err(BackupError::InvalidOptions(format!(
            "{} is the data directory of a running server (pid {pid}): stop it first",
            dir.display()
        )));
    }
    Ok(())
}

fn prepare_target(dir: &Path, replace: bool) -> Result<(), BackupError> {
    if !is_empty_dir(dir)? {
        if !replace {
            return Err(BackupError::Refused(Refusal::NotConfirmed {
                step: "physical-restore".into(),
                target: format!("{} (not empty)", dir.display()),
            }));
        }
        check_not_running(dir)?;
        for entry in std::fs::read_dir(dir)
            .map_err(|e| BackupError::io(format!("read {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| BackupError::io(format!("read {}", dir.display()), e))?;
            let p = entry.path();
            let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| BackupError::io(format!("remove {}", p.display()), e))?;
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| BackupError::io(format!("create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| BackupError::io(format!("chmod {}", dir.display()), e))?;
    Ok(())
}

/// Restores `selector` (`latest` or an id) from `repo` into the data directory
/// `target_dir`, ready for recovery: every file with its permissions (directories 0700,
/// files 0600, or 0750/0640 for a cluster with group access), `backup_label` and
/// `tablespace_map`, an empty `pg_wal/archive_status` and every directory whose contents
/// a base backup skips; then one `syncfs`. Every byte is checked against its SHA-256.
///
/// It writes no recovery settings: the caller adds `restore_command`, a recovery target
/// and `recovery.signal` (the PITR module does) before starting the server.
/// A non-empty `target_dir` is refused unless `opts.replace`.
pub async fn restore_physical_backup(
    repo: &Repository,
    selector: &str,
    target_dir: &Path,
    opts: &PhysicalRestoreOptions,
) -> Result<PhysicalRestoreReport, BackupError> {
    crate::lock::RepoLock::hold_reading(repo, "restore", jiff::Timestamp::now(), async {
        restore_physical_manifest(repo, &repo.resolve(selector).await?, target_dir, opts).await
    })
    .await
}

/// [`restore_physical_backup`] for a manifest already read.
pub async fn restore_physical_manifest(
    repo: &Repository,
    m: &Manifest,
    target_dir: &Path,
    opts: &PhysicalRestoreOptions,
) -> Result<PhysicalRestoreReport, BackupError> {
    let started = Instant::now();
    let physical = m.physical.clone().ok_or_else(|| {
        BackupError::InvalidOptions(format!(
            "backup {} is a {} backup, not a base backup",
            m.id, m.kind
        ))
    })?;
    if !is_empty_dir(target_dir)? && !opts.replace {
        return Err(BackupError::Refused(Refusal::NotConfirmed {
            step: "physical-restore".into(),
            target: format!("{} (not empty)", target_dir.display()),
        }));
    }
    let loaded = load(repo, m, &opts.encryption, opts.progress.clone(), "restore").await?;
    let dir = target_dir.to_path_buf();
    let replace = opts.replace;
    tokio::task::spawn_blocking(move || prepare_target(&dir, replace))
        .await
        .map_err(|e| BackupError::io("restore thread", std::io::Error::other(e.to_string())))??;
    let root = target_dir.to_path_buf();
    for d in &loaded.list.directories {
        let p = root.join(&d.path);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(d.mode & 0o750)
            .create(&p)
            .map_err(|e| BackupError::io(format!("create {}", p.display()), e))?;
    }
    for extra in ["pg_wal", "pg_wal/archive_status"] {
        let p = root.join(extra);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&p)
            .map_err(|e| BackupError::io(format!("create {}", p.display()), e))?;
    }
    // Parent directories of files (a file list always lists them; this is for safety).
    for f in &loaded.list.files {
        if let Some(parent) = root.join(&f.path).parent()
            && !parent.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| BackupError::io(format!("create {}", parent.display()), e))?;
        }
    }
    let list = Arc::new(loaded.list);
    let by_object = Arc::new(loaded.by_object);
    let objects: Vec<ManifestObject> = m
        .objects
        .iter()
        .filter(|o| by_object.contains_key(&o.name))
        .cloned()
        .collect();
    let results = futures::stream::iter(objects.into_iter().map(|obj| {
        let list = list.clone();
        let by_object = by_object.clone();
        let root = root.clone();
        async move { restore_object(repo, m, &obj, &list, &by_object, &root, opts).await }
    }))
    .buffer_unordered(opts.jobs().max(1))
    .collect::<Vec<_>>()
    .await;
    let mut bytes = 0u64;
    for r in results {
        bytes += r?;
    }
    // backup_label and tablespace_map.
    for base in [BACKUP_LABEL_NAME, TABLESPACE_MAP_NAME] {
        let name = suffixed(m, base);
        let Some(obj) = object_named(m, &name) else {
            if base == BACKUP_LABEL_NAME {
                return Err(corrupt(
                    repo,
                    m,
                    &format!("backups/{}/{name}", m.id),
                    "the manifest lists no backup_label".into(),
                ));
            }
            continue;
        };
        let content = decode_to_memory(
            repo,
            m,
            obj,
            &opts.encryption,
            Ticker::new(opts.progress.clone(), "restore", m.id.as_str(), &obj.name),
        )
        .await?;
        let p = root.join(base);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .and_then(|mut f| f.write_all(&content))
            .map_err(|e| BackupError::io(format!("write {}", p.display()), e))?;
        bytes += content.len() as u64;
    }
    let list2 = list.clone();
    let root2 = root.clone();
    let owner = opts.owner;
    tokio::task::spawn_blocking(move || finish_tree(&root2, &list2, owner))
        .await
        .map_err(|e| BackupError::io("restore thread", std::io::Error::other(e.to_string())))??;
    Ok(PhysicalRestoreReport {
        repository: repo.name(),
        id: m.id.to_string(),
        target_dir: target_dir.display().to_string(),
        files: list.files.len() as u64,
        bytes,
        physical,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

async fn restore_object(
    repo: &Repository,
    m: &Manifest,
    obj: &ManifestObject,
    list: &Arc<PhysicalFileList>,
    by_object: &HashMap<String, Vec<(usize, usize)>>,
    root: &Path,
    opts: &PhysicalRestoreOptions,
) -> Result<u64, BackupError> {
    let expected = by_object.get(&obj.name).cloned().unwrap_or_default();
    let ticker = Ticker::new(opts.progress.clone(), "restore", m.id.as_str(), &obj.name);
    let single = expected.len() == 1 && obj.name.starts_with(super::layout::DATA_PREFIX);
    if single {
        let (fi, ci) = expected[0];
        let file = &list.files[fi];
        let chunk = &file.chunks[ci];
        if chunk.sha256 != obj.raw_sha256 || chunk.size != obj.raw_size {
            return Err(corrupt(
                repo,
                m,
                &obj.key,
                format!(
                    "the file list and the manifest disagree about {}",
                    file.path
                ),
            ));
        }
        let dest = root.join(&file.path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&dest)
            .map_err(|e| BackupError::io(format!("create {}", dest.display()), e))?;
        f.seek(SeekFrom::Start(chunk.offset))
            .map_err(|e| BackupError::io(format!("seek {}", dest.display()), e))?;
        let w = AtOffset(std::io::BufWriter::with_capacity(1 << 20, f));
        decode_object(repo, m, obj, &opts.encryption, w, ticker).await?;
        return Ok(chunk.size);
    }
    let data = decode_to_memory(repo, m, obj, &opts.encryption, ticker).await?;
    let list = list.clone();
    let root = root.to_path_buf();
    let o = obj.clone();
    let r = tokio::task::spawn_blocking(move || {
        unpack_bundle(&data, &o, &list.files, &expected, Sink::Write(&root))
    })
    .await
    .map_err(|e| BackupError::io("restore thread", std::io::Error::other(e.to_string())))?;
    r.map_err(|reason| corrupt(repo, m, &obj.key, reason))
}

/// Permissions, ownership and one `syncfs` for the whole restored tree.
fn finish_tree(
    root: &Path,
    list: &PhysicalFileList,
    owner: Option<(u32, u32)>,
) -> Result<(), BackupError> {
    for f in &list.files {
        let p = root.join(&f.path);
        // Files that were empty at backup time have no bytes to write: create them.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .map_err(|e| BackupError::io(format!("create {}", p.display()), e))?;
        file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o640))
            .map_err(|e| BackupError::io(format!("chmod {}", p.display()), e))?;
    }
    for d in &list.directories {
        let p = root.join(&d.path);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(d.mode & 0o750))
            .map_err(|e| BackupError::io(format!("chmod {}", p.display()), e))?;
    }
    if let Some((uid, gid)) = owner {
        chown_tree(root, uid, gid)?;
    }
    let dir = std::fs::File::open(root)
        .map_err(|e| BackupError::io(format!("open {}", root.display()), e))?;
    // One syncfs flushes every file and directory written (Linux).
    nix::unistd::syncfs(&dir).map_err(|e| {
        BackupError::io(
            format!("syncfs {}", root.display()),
            std::io::Error::from_raw_os_error(e as i32),
        )
    })
}

fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(), BackupError> {
    let chown = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .map_err(|e| BackupError::io(format!("chown {}", p.display()), e))
    };
    chown(root)?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| BackupError::io(format!("read {}", dir.display()), e))?
        {
            let entry = entry.map_err(|e| BackupError::io(format!("read {}", dir.display()), e))?;
            let p = entry.path();
            chown(&p)?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    Ok(())
}

/// Verifies a base backup's objects: each is re-read, decrypted, decompressed and
/// checked against the manifest's SHA-256; each file inside a bundle against the file
/// list's SHA-256; every file of the list must be found.
pub(crate) async fn verify_physical_objects(
    repo: &Repository,
    m: &Manifest,
    keys: &EncryptionOptions,
    progress: Option<ProgressSink>,
) -> Result<Vec<ObjectCheck>, BackupError> {
    let loaded = load(repo, m, keys, progress.clone(), "verify").await?;
    let list = Arc::new(loaded.list);
    let by_object = Arc::new(loaded.by_object);
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Collected first: a lazily mapped iterator inside the stream makes the future's
    // type higher-ranked over the borrow, which callers' `Send` bounds cannot prove.
    let checks: Vec<_> = m
        .objects
        .iter()
        .map(|obj| {
            let list = list.clone();
            let by_object = by_object.clone();
            let progress = progress.clone();
            async move {
                let ticker = Ticker::new(progress, "verify", m.id.as_str(), &obj.name);
                let expected = by_object.get(&obj.name).cloned().unwrap_or_default();
                if obj.name.starts_with(super::layout::BUNDLE_PREFIX) {
                    let data = decode_to_memory(repo, m, obj, keys, ticker).await?;
                    let o = obj.clone();
                    tokio::task::spawn_blocking(move || {
                        unpack_bundle(&data, &o, &list.files, &expected, Sink::Check)
                    })
                    .await
                    .map_err(|e| {
                        BackupError::io("verify thread", std::io::Error::other(e.to_string()))
                    })?
                    .map_err(|reason| corrupt(repo, m, &obj.key, reason))?;
                } else {
                    decode_object(repo, m, obj, keys, std::io::sink(), ticker).await?;
                    for (fi, ci) in expected {
                        let c = &list.files[fi].chunks[ci];
                        if c.sha256 != obj.raw_sha256 || c.size != obj.raw_size {
                            return Err(corrupt(
                                repo,
                                m,
                                &obj.key,
                                format!(
                                    "the file list and the manifest disagree about {}",
                                    list.files[fi].path
                                ),
                            ));
                        }
                    }
                }
                Ok::<_, BackupError>(ObjectCheck {
                    name: obj.name.clone(),
                    key: obj.key.clone(),
                    stored_size: obj.stored_size,
                    raw_size: obj.raw_size,
                })
            }
        })
        .collect();
    let results = futures::stream::iter(checks)
        .buffered(jobs.max(1))
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

/// The physical restore as a destructive [`Step`]: run it through a
/// [`tej_core::Executor`] so it is confirmed; once confirmed, a non-empty target
/// directory is emptied and replaced.
pub struct PhysicalRestoreStep {
    /// Where the backup is.
    pub repo: Repository,
    /// `latest` or an id.
    pub selector: String,
    /// The data directory to write.
    pub target_dir: PathBuf,
    /// Options (`replace` is implied by the confirmation).
    pub opts: PhysicalRestoreOptions,
}

#[async_trait]
impl Step for PhysicalRestoreStep {
    fn name(&self) -> String {
        "physical-restore".into()
    }

    fn risk(&self) -> Risk {
        Risk::Destructive
    }

    fn target(&self) -> String {
        format!("data directory {}", self.target_dir.display())
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        let m = self.repo.resolve(&self.selector).await?;
        let empty = is_empty_dir(&self.target_dir)?;
        let p = m.physical.clone();
        Ok(Plan {
            step: self.name(),
            risk: self.risk(),
            target: self.target(),
            actions: vec![
                format!(
                    "read base backup {} ({} bytes, taken {}, WAL {} to {}) from {}",
                    m.id,
                    m.raw_size,
                    m.finished_at,
                    p.as_ref()
                        .map(|p| p.start_lsn.to_string())
                        .unwrap_or_default(),
                    p.as_ref()
                        .map(|p| p.stop_lsn.to_string())
                        .unwrap_or_default(),
                    self.repo.name()
                ),
                if empty {
                    format!("write the data directory {}", self.target_dir.display())
                } else {
                    format!(
                        "DELETE everything in {} and write the backup's files there",
                        self.target_dir.display()
                    )
                },
            ],
        })
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        let mut opts = self.opts.clone();
        opts.replace = true;
        let r =
            restore_physical_backup(&self.repo, &self.selector, &self.target_dir, &opts).await?;
        Ok(StepOutput {
            summary: format!(
                "restored {} ({} files) into {} in {:.1}s",
                r.id, r.files, r.target_dir, r.duration_secs
            ),
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}
