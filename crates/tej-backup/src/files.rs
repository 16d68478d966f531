//! File backups: configured directories (user uploads, configuration) as one tar stream
//! through the same stages, repositories, manifest and locks as logical backups; and a
//! safe restore of such a backup into a directory.
//!
//! The tar holds each configured path under its absolute name without the leading `/`
//! (`/opt/skillswap/uploads/a.png` is `opt/skillswap/uploads/a.png`), as GNU tar does.
//! Symlinks are stored as symlinks (never followed), permissions and modification times
//! are kept; files that vanish during the walk are left out (and reported), unreadable
//! files fail the backup with their path. Memory stays bounded: files are streamed.

use crate::create::{CreateReport, Run, RunOptions};
use crate::error::BackupError;
use crate::manifest::{BackupKind, Manifest};
use crate::pipeline::{EncryptionOptions, ProgressSink, Ticker};
use crate::read::decode_object;
use crate::repo::Repository;
use async_trait::async_trait;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;
use tej_core::{Clock, Plan, Refusal, Risk, Step, StepError, StepOutput};

/// The object name of a file backup's tar, before the compression and encryption suffixes.
pub const FILES_OBJECT: &str = "files.tar";

/// Options of a file backup.
#[derive(Debug, Clone)]
pub struct FileBackupOptions {
    /// Directories or files to back up (absolute, or relative to the current directory).
    pub paths: Vec<PathBuf>,
    /// Glob patterns of absolute paths to leave out (`**/*.tmp`, `/opt/app/uploads/cache/**`);
    /// `*` also matches `/`. An excluded directory is not walked.
    pub exclude: Vec<String>,
    /// Compression, encryption, lock, target name (default `files`), progress.
    pub run: RunOptions,
}

impl FileBackupOptions {
    /// Defaults (zstd, no encryption, no exclusion) for `paths`.
    pub fn new(paths: Vec<PathBuf>) -> FileBackupOptions {
        FileBackupOptions {
            paths,
            exclude: Vec::new(),
            run: RunOptions::default(),
        }
    }
}

/// What a file backup reports: the run, and what the walk met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileBackupReport {
    /// The backup run (id, sizes, repositories).
    #[serde(flatten)]
    pub backup: CreateReport,
    /// Regular files stored.
    pub files: u64,
    /// Directories stored.
    pub directories: u64,
    /// Symlinks stored.
    pub symlinks: u64,
    /// Paths that vanished during the walk (left out, not an error).
    pub vanished: Vec<String>,
    /// Sockets, FIFOs and devices left out.
    pub skipped_special: Vec<String>,
    /// Files whose size changed while being read (stored at the size first seen: cut
    /// or padded with zeros, as GNU tar does).
    pub changed: Vec<String>,
}

/// What the walk met (filled on the tar thread).
#[derive(Debug, Default)]
struct WalkStats {
    files: u64,
    directories: u64,
    symlinks: u64,
    vanished: Vec<String>,
    skipped_special: Vec<String>,
    changed: Vec<String>,
}

fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn read_error(action: &str, path: &Path, e: io::Error) -> BackupError {
    let hint = if e.kind() == io::ErrorKind::PermissionDenied {
        " (run as a user that can read it, or exclude it)"
    } else {
        ""
    };
    BackupError::io(format!("cannot {action} {}{hint}", path.display()), e)
}

/// The tar member name of an absolute path: without the leading `/`.
fn member_name(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Reads exactly `size` bytes: cut when the file grew, padded with zeros when it shrank.
struct ExactReader<R> {
    inner: R,
    left: u64,
    short: bool,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = if self.short {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            self.left -= want as u64;
            return Ok(want);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes the tar of `roots` into `out`.
fn write_tar<W: Write>(
    out: W,
    roots: &[PathBuf],
    exclude: &globset::GlobSet,
    stats: &mut WalkStats,
) -> Result<(), BackupError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let tar_err =
        |path: &Path, e: io::Error| BackupError::io(format!("archive {}", path.display()), e);
    for root in roots {
        let mut stack = vec![(root.clone(), true)];
        while let Some((path, is_root)) = stack.pop() {
            if !is_root && exclude.is_match(&path) {
                continue;
            }
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if is_gone(&e) && !is_root => {
                    stats.vanished.push(path.display().to_string());
                    continue;
                }
                Err(e) if is_gone(&e) => {
                    return Err(BackupError::InvalidOptions(format!(
                        "{} does not exist",
                        path.display()
                    )));
                }
                Err(e) => return Err(read_error("stat", &path, e)),
            };
            let name = member_name(&path);
            let ft = meta.file_type();
            let mut header = tar::Header::new_gnu();
            if ft.is_dir() {
                let rd = match std::fs::read_dir(&path) {
                    Ok(rd) => rd,
                    Err(e) if is_gone(&e) && !is_root => {
                        stats.vanished.push(path.display().to_string());
                        continue;
                    }
                    Err(e) => return Err(read_error("list", &path, e)),
                };
                let mut children = Vec::new();
                for entry in rd {
                    match entry {
                        Ok(en) => children.push(en.path()),
                        Err(e) if is_gone(&e) => {}
                        Err(e) => return Err(read_error("list", &path, e)),
                    }
                }
                header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                if !name.as_os_str().is_empty() {
                    tar.append_data(&mut header, &name, io::empty())
                        .map_err(|e| tar_err(&path, e))?;
                }
                stats.directories += 1;
                children.sort();
                for c in children.into_iter().rev() {
                    stack.push((c, false));
                }
            } else if ft.is_symlink() {
                let target = match std::fs::read_link(&path) {
                    Ok(t) => t,
                    Err(e) if is_gone(&e) && !is_root => {
                        stats.vanished.push(path.display().to_string());
                        continue;
                    }
                    Err(e) => return Err(read_error("read the link", &path, e)),
                };
                header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &name, &target)
                    .map_err(|e| tar_err(&path, e))?;
                stats.symlinks += 1;
            } else if ft.is_file() {
                let file = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if is_gone(&e) && !is_root => {
                        stats.vanished.push(path.display().to_string());
                        continue;
                    }
                    Err(e) => return Err(read_error("read", &path, e)),
                };
                // The size and times of the file actually opened.
                let meta = file.metadata().map_err(|e| read_error("stat", &path, e))?;
                header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                let size = meta.len();
                let mut reader = ExactReader {
                    inner: io::BufReader::with_capacity(256 * 1024, file),
                    left: size,
                    short: false,
                };
                tar.append_data(&mut header, &name, &mut reader)
                    .map_err(|e| read_error("read", &path, e))?;
                let grew = {
                    let mut probe = [0u8; 1];
                    matches!(reader.inner.read(&mut probe), Ok(1))
                };
                if reader.short || grew {
                    stats.changed.push(path.display().to_string());
                }
                stats.files += 1;
            } else {
                stats.skipped_special.push(path.display().to_string());
            }
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| BackupError::io("finish the tar stream", e))?;
    Ok(())
}

fn exclude_set(patterns: &[String]) -> Result<globset::GlobSet, BackupError> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        let g = globset::Glob::new(p)
            .map_err(|e| BackupError::InvalidOptions(format!("exclude pattern {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| BackupError::InvalidOptions(format!("exclude patterns: {e}")))
}

/// Backs up `opts.paths` as one tar into every repository (manifest last, locked, leftovers
/// of earlier runs cleaned first). Fails when none has it; the report says which have.
pub async fn create_file_backup(
    repos: &[Repository],
    opts: &FileBackupOptions,
    clock: &dyn Clock,
) -> Result<FileBackupReport, BackupError> {
    if opts.paths.is_empty() {
        return Err(BackupError::InvalidOptions(
            "no path to back up (set [backup] files in tej.toml)".into(),
        ));
    }
    let mut roots = Vec::new();
    for p in &opts.paths {
        let abs = std::path::absolute(p)
            .map_err(|e| BackupError::io(format!("resolve {}", p.display()), e))?;
        if member_name(&abs).as_os_str().is_empty() {
            return Err(BackupError::InvalidOptions(
                "backing up / as files is not supported: name the directories".into(),
            ));
        }
        // Checked up front so a typo fails before anything is locked or stored.
        std::fs::symlink_metadata(&abs).map_err(|e| {
            if is_gone(&e) {
                BackupError::InvalidOptions(format!("{} does not exist", abs.display()))
            } else {
                read_error("stat", &abs, e)
            }
        })?;
        roots.push(abs);
    }
    let exclude = exclude_set(&opts.exclude)?;
    let target = opts.run.target.clone().unwrap_or_else(|| "files".into());
    let mut run = Run::start(repos, &target, &opts.run, clock).await?;
    let name = run.object_name(FILES_OBJECT);
    let (reader, writer) = tokio::io::duplex(crate::pipeline::CHUNK);
    let writer = tokio_util::io::SyncIoBridge::new(writer);
    let walk_roots = roots.clone();
    let walker = tokio::task::spawn_blocking(move || {
        let mut stats = WalkStats::default();
        let r = write_tar(writer, &walk_roots, &exclude, &mut stats);
        (r, stats)
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let producer = async move {
        let (r, stats) = walker
            .await
            .map_err(|e| BackupError::io("tar thread", io::Error::other(e.to_string())))?;
        let _ = done_tx.send(stats);
        r
    };
    if let Err(e) = run.upload(&name, reader, producer).await {
        return Err(run.abort(e, clock).await);
    }
    let stats = done_rx.await.unwrap_or_default();
    let paths: Vec<String> = roots.iter().map(|p| p.display().to_string()).collect();
    let backup = run
        .finish(BackupKind::Files, |m| m.paths = paths, clock)
        .await?;
    Ok(FileBackupReport {
        backup,
        files: stats.files,
        directories: stats.directories,
        symlinks: stats.symlinks,
        vanished: stats.vanished,
        skipped_special: stats.skipped_special,
        changed: stats.changed,
    })
}

/// Options of a file restore.
#[derive(Clone, Default)]
pub struct FileRestoreOptions {
    /// Replace existing files in a non-empty target directory. Without it, the target
    /// must be missing or empty. Either way the backup is extracted beside the target
    /// first and moved in place only once it decoded completely and its checksums matched.
    pub overwrite: bool,
    /// Keys for encrypted backups.
    pub encryption: EncryptionOptions,
    /// Progress events.
    pub progress: Option<ProgressSink>,
}

impl std::fmt::Debug for FileRestoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRestoreOptions")
            .field("overwrite", &self.overwrite)
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

/// What a file restore reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRestoreReport {
    /// Repository.
    pub repository: String,
    /// Backup.
    pub id: String,
    /// Where it was extracted.
    pub target_dir: String,
    /// The paths the backup holds (as backed up).
    pub paths: Vec<String>,
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Uncompressed tar bytes.
    pub raw_size: u64,
    /// Wall time.
    pub duration_secs: f64,
}

#[derive(Debug, Default)]
struct ExtractStats {
    files: u64,
    directories: u64,
    symlinks: u64,
}

/// Why an archive member is refused.
fn unsafe_member(path: &Path) -> Option<&'static str> {
    if path.as_os_str().is_empty() {
        return Some("an empty name");
    }
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Some("an absolute path"),
            Component::ParentDir => return Some("a `..` component"),
        }
    }
    None
}

/// Extracts a tar stream into `dst`, refusing members that would land outside it.
fn extract<R: Read>(input: R, dst: &Path, overwrite: bool) -> Result<ExtractStats, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut ar = tar::Archive::new(input);
    ar.set_overwrite(overwrite);
    ar.set_preserve_mtime(true);
    ar.set_preserve_permissions(false);
    ar.set_unpack_xattrs(false);
    let mut stats = ExtractStats::default();
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    {
        let entries = ar.entries().map_err(|e| format!("reading the tar: {e}"))?;
        for entry in entries {
            let mut e = entry.map_err(|e| format!("reading the tar: {e}"))?;
            let path = e
                .path()
                .map_err(|e| format!("a member name: {e}"))?
                .into_owned();
            if let Some(why) = unsafe_member(&path) {
                return Err(format!(
                    "member {} has {why}: refused (it would escape {})",
                    path.display(),
                    dst.display()
                ));
            }
            let kind = e.header().entry_type();
            let mode = e.header().mode().unwrap_or(0o755);
            let mtime = e.header().mtime().unwrap_or(0);
            let landed = e
                .unpack_in(dst)
                .map_err(|err| format!("extracting {}: {err}", path.display()))?;
            if !landed {
                return Err(format!(
                    "member {} would land outside {}: refused",
                    path.display(),
                    dst.display()
                ));
            }
            match kind {
                tar::EntryType::Directory => {
                    // Writable while its children are extracted; its mode and time are
                    // set at the end.
                    let p = dst.join(&path);
                    let _ = std::fs::set_permissions(
                        &p,
                        std::fs::Permissions::from_mode(0o700 | (mode & 0o777)),
                    );
                    dirs.push((p, mode & 0o777, mtime));
                    stats.directories += 1;
                }
                tar::EntryType::Symlink => stats.symlinks += 1,
                _ => stats.files += 1,
            }
        }
    }
    // Anything after the end-of-archive blocks is drained so the decoder checks it all.
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| format!("reading the tar: {e}"))?;
    // Deepest first, so setting a parent's time is the last change to it.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (p, mode, mtime) in dirs {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("setting the mode of {}: {e}", p.display()))?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        std::fs::File::open(&p)
            .and_then(|f| f.set_modified(t))
            .map_err(|e| format!("setting the time of {}: {e}", p.display()))?;
    }
    Ok(stats)
}

/// Fails when a staged file or symlink would replace a directory of `target`.
fn merge_conflicts(staged: &Path, target: &Path) -> io::Result<()> {
    for e in std::fs::read_dir(staged)? {
        let e = e?;
        let t = target.join(e.file_name());
        let Ok(tm) = std::fs::symlink_metadata(&t) else {
            continue;
        };
        if e.file_type()?.is_dir() {
            if tm.is_dir() {
                merge_conflicts(&e.path(), &t)?;
            }
        } else if tm.is_dir() {
            return Err(io::Error::other(format!(
                "{} is a directory and the backup holds a file there: nothing was moved",
                t.display()
            )));
        }
    }
    Ok(())
}

/// Moves everything below `staged` into `target`: directories are merged, files and
/// symlinks replace what is there by rename; every merged directory, `target` included,
/// then takes the staged mode and time (read before its entries moved, which changes it).
fn merge_into(staged: &Path, target: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let sm = std::fs::metadata(staged)?;
    for e in std::fs::read_dir(staged)? {
        let e = e?;
        let s = e.path();
        let t = target.join(e.file_name());
        let tm = std::fs::symlink_metadata(&t).ok();
        if e.file_type()?.is_dir() {
            match tm {
                Some(m) if m.is_dir() => {
                    merge_into(&s, &t)?;
                    continue;
                }
                Some(_) => std::fs::remove_file(&t)?,
                None => {}
            }
        }
        std::fs::rename(&s, &t)?;
    }
    tej_core::fsutil::fsync_dir(target)?;
    std::fs::set_permissions(
        target,
        std::fs::Permissions::from_mode(sm.permissions().mode() & 0o7777),
    )?;
    if let Ok(mtime) = sm.modified() {
        std::fs::File::open(target)?.set_modified(mtime)?;
    }
    Ok(())
}

fn dir_is_empty(dir: &Path) -> Result<Option<bool>, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(Some(rd.next().is_none())),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(BackupError::io(format!("read {}", dir.display()), e)),
    }
}

/// Restores file backup `selector` (`latest` or an id) from `repo` into `target_dir`.
///
/// Without `opts.overwrite` the target must be missing or empty (otherwise the restore is
/// refused: overwriting needs confirmation, see [`FileRestoreStep`]); the backup is then
/// extracted into a sibling directory and moved in place only when it decoded completely
/// and every checksum matched. With `overwrite`, the staged tree is then moved into the
/// target over existing files (directories merged, files and symlinks replaced by
/// rename; a file of the backup where the target has a directory fails before anything
/// moves). Members with absolute names, `..` components or a path through a
/// symlink leading out of the target are refused.
pub async fn restore_file_backup(
    repo: &Repository,
    selector: &str,
    target_dir: &Path,
    opts: &FileRestoreOptions,
) -> Result<FileRestoreReport, BackupError> {
    crate::lock::RepoLock::hold_reading(repo, "restore", jiff::Timestamp::now(), async {
        restore_file_manifest(repo, &repo.resolve(selector).await?, target_dir, opts).await
    })
    .await
}

async fn restore_file_manifest(
    repo: &Repository,
    m: &Manifest,
    target_dir: &Path,
    opts: &FileRestoreOptions,
) -> Result<FileRestoreReport, BackupError> {
    use std::os::unix::fs::PermissionsExt;
    let started = Instant::now();
    if m.kind != BackupKind::Files {
        return Err(BackupError::InvalidOptions(format!(
            "backup {} is a {} backup, not a file backup",
            m.id, m.kind
        )));
    }
    let obj = m.objects.first().ok_or_else(|| BackupError::Corrupt {
        repo: repo.name(),
        id: m.id.to_string(),
        object: format!("backups/{}/manifest.json", m.id),
        reason: "the manifest lists no object".into(),
    })?;
    let target = std::path::absolute(target_dir)
        .map_err(|e| BackupError::io(format!("resolve {}", target_dir.display()), e))?;
    let existing = dir_is_empty(&target)?;
    if !opts.overwrite && existing == Some(false) {
        return Err(BackupError::Refused(Refusal::NotConfirmed {
            step: "files-restore".into(),
            target: format!(
                "{} (not empty: restoring would overwrite files)",
                target.display()
            ),
        }));
    }
    // Members are always extracted into a staging directory beside the target (same
    // file system), and moved in place only once the backup decoded completely and every
    // checksum matched: a damaged backup leaves the target as it was.
    let parent = target
        .parent()
        .ok_or_else(|| BackupError::InvalidOptions("cannot restore into /".into()))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| BackupError::io(format!("create {}", parent.display()), e))?;
    let st = tempfile::Builder::new()
        .prefix(".tej-restore-")
        .tempdir_in(parent)
        .map_err(|e| BackupError::io(format!("create a directory in {}", parent.display()), e))?;
    let _ = std::fs::set_permissions(st.path(), std::fs::Permissions::from_mode(0o755));
    let dst = st.path().to_path_buf();
    let (reader, writer) = io::pipe().map_err(|e| BackupError::io("create a pipe", e))?;
    let ex_dst = dst.clone();
    let extractor = tokio::task::spawn_blocking(move || extract(reader, &ex_dst, false));
    let ticker = Ticker::new(opts.progress.clone(), "restore", m.id.as_str(), &obj.name);
    let decoded = decode_object(repo, m, obj, &opts.encryption, writer, ticker).await;
    let extracted = extractor
        .await
        .map_err(|e| BackupError::io("tar thread", io::Error::other(e.to_string())))?;
    let corrupt = |reason: String| BackupError::Corrupt {
        repo: repo.name(),
        id: m.id.to_string(),
        object: obj.key.clone(),
        reason,
    };
    let stats = match (decoded, extracted) {
        // The decoder's error explains a broken tar better, unless the extractor stopped
        // reading first (then the decoder only saw a closed pipe).
        (Err(BackupError::Io { .. }), Err(x)) => return Err(corrupt(x)),
        (Err(e), _) => return Err(e),
        (Ok(()), Err(x)) => return Err(corrupt(x)),
        (Ok(()), Ok(s)) => s,
    };
    if existing == Some(false) {
        // Over existing files (confirmed): first check that nothing is in the way, then
        // move every staged entry in place.
        let staged = st.path().to_path_buf();
        let tgt = target.clone();
        tokio::task::spawn_blocking(move || {
            merge_conflicts(&staged, &tgt)?;
            merge_into(&staged, &tgt)
        })
        .await
        .map_err(|e| BackupError::io("move thread", io::Error::other(e.to_string())))?
        .map_err(|e| {
            BackupError::io(
                format!("move the restored files into {}", target.display()),
                e,
            )
        })?;
        st.close()
            .map_err(|e| BackupError::io("remove the staging directory", e))?;
    } else {
        let staged = st.keep();
        if existing == Some(true) {
            std::fs::remove_dir(&target)
                .map_err(|e| BackupError::io(format!("replace {}", target.display()), e))?;
        }
        std::fs::rename(&staged, &target).map_err(|e| {
            BackupError::io(
                format!("move {} to {}", staged.display(), target.display()),
                e,
            )
        })?;
        if let Some(parent) = target.parent() {
            let _ = tej_core::fsutil::fsync_dir(parent);
        }
    }
    Ok(FileRestoreReport {
        repository: repo.name(),
        id: m.id.to_string(),
        target_dir: target.display().to_string(),
        paths: m.paths.clone(),
        files: stats.files,
        directories: stats.directories,
        symlinks: stats.symlinks,
        raw_size: m.raw_size,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// A file restore over a possibly non-empty directory, as a destructive [`Step`]: run it
/// through a [`tej_core::Executor`] so it is confirmed (and refused in production outside
/// the maintenance window). Applied, it replaces existing files (staged first).
pub struct FileRestoreStep {
    /// Where the backup is.
    pub repo: Repository,
    /// `latest` or an id.
    pub selector: String,
    /// Where to extract.
    pub target_dir: PathBuf,
    /// Keys and progress (`overwrite` is implied by the confirmation).
    pub opts: FileRestoreOptions,
}

#[async_trait]
impl Step for FileRestoreStep {
    fn name(&self) -> String {
        "files-restore".into()
    }

    fn risk(&self) -> Risk {
        Risk::Destructive
    }

    fn target(&self) -> String {
        format!("directory {}", self.target_dir.display())
    }

    async fn plan(&self) -> Result<Plan, StepError> {
        let m = self.repo.resolve(&self.selector).await?;
        if m.kind != BackupKind::Files {
            return Err(Box::new(BackupError::InvalidOptions(format!(
                "backup {} is a {} backup, not a file backup",
                m.id, m.kind
            ))));
        }
        let state = match dir_is_empty(&self.target_dir)? {
            None => "does not exist yet",
            Some(true) => "is empty",
            Some(false) => "is NOT empty: files of the backup replace existing ones",
        };
        Ok(Plan::of(
            self,
            vec![
                format!(
                    "read file backup {} ({} bytes of {}, taken {}) from {}",
                    m.id,
                    m.raw_size,
                    m.paths.join(", "),
                    m.finished_at,
                    self.repo.name()
                ),
                format!("extract into {}, which {state}", self.target_dir.display()),
            ],
        ))
    }

    async fn apply(&self) -> Result<StepOutput, StepError> {
        let opts = FileRestoreOptions {
            overwrite: true,
            ..self.opts.clone()
        };
        let r = restore_file_backup(&self.repo, &self.selector, &self.target_dir, &opts).await?;
        Ok(StepOutput {
            summary: format!(
                "restored {} ({} files, {} directories, {} symlinks) into {} in {:.1}s",
                r.id, r.files, r.directories, r.symlinks, r.target_dir, r.duration_secs
            ),
            findings: Vec::new(),
            data: serde_json::to_value(&r).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_reader_cuts_and_pads() {
        let mut out = Vec::new();
        let mut r = ExactReader {
            inner: &b"abcdef"[..],
            left: 4,
            short: false,
        };
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcd");
        let mut out = Vec::new();
        let mut r = ExactReader {
            inner: &b"ab"[..],
            left: 5,
            short: false,
        };
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab\0\0\0");
        assert!(r.short);
    }

    #[test]
    fn unsafe_members_are_named() {
        assert!(unsafe_member(Path::new("opt/app/x")).is_none());
        assert_eq!(
            unsafe_member(Path::new("/etc/passwd")),
            Some("an absolute path")
        );
        assert_eq!(
            unsafe_member(Path::new("a/../../x")),
            Some("a `..` component")
        );
        assert_eq!(
            member_name(Path::new("/opt/app/uploads")),
            PathBuf::from("opt/app/uploads")
        );
    }

    /// A hand-made tar with a `..` member is refused and writes nothing outside.
    #[test]
    fn escaping_members_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("dst");
        std::fs::create_dir(&dst).unwrap();
        let mut raw = Vec::new();
        {
            let mut b = tar::Builder::new(&mut raw);
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Bypass the builder's own checks by writing the name bytes directly.
            h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../outside.tx");
            h.set_cksum();
            b.append(&h, &b"bad"[..]).unwrap();
            b.finish().unwrap();
        }
        let err = extract(&raw[..], &dst, false).unwrap_err();
        assert!(err.contains("..") && err.contains("refused"), "{err}");
        assert!(!dir.path().join("outside.tx").exists());

        // A symlink to the outside, then a file through it.
        let mut raw = Vec::new();
        {
            let mut b = tar::Builder::new(&mut raw);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, "link", dir.path()).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, "link/escaped.txt", &b"bad"[..])
                .unwrap();
            b.finish().unwrap();
        }
        let err = extract(&raw[..], &dst, false).unwrap_err();
        assert!(err.contains("escaped.txt"), "{err}");
        assert!(!dir.path().join("escaped.txt").exists());
    }
}
