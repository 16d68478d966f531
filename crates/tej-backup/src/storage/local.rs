//! A repository in a local directory.
//!
//! A put writes to a temporary name beside the target (`.NAME.tej-tmp.PID.N`), fsyncs it,
//! renames it into place (or hard-links it for `if_not_exists`, which fails atomically when
//! the target exists) and fsyncs the directory. Keys never leave the root: [`ObjectKey`]
//! rejects `..` and absolute keys, and no symbolic link below the root is followed.
//!
//! Objects are private: files `0600`, directories `0700` (a root the store creates too).
//! To share a repository with a group (the `postgres` OS user pushing WAL, an auditor
//! reading backups), give the root that group and the setgid bit
//! (`chgrp backup R && chmod 2750 R`): the store then writes files `0640` and directories
//! `2750`, which inherit the group. The directory [`SCRATCH_DIR`] below the root is the
//! repository's scratch space (restores decode dumps there) and never holds objects.

use super::{
    BackupError, ByteStream, ObjectKey, ObjectMeta, ObjectStore, PutOptions, PutResult, clamp_range,
};
use async_trait::async_trait;
use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tej_core::fsutil::{fsync_dir, is_temp_name, temp_path_for};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The scratch directory below a local repository's root (never listed as objects).
pub const SCRATCH_DIR: &str = ".tej-scratch";

/// Buffer size for streaming writes.
const WRITE_CHUNK: usize = 1 << 20;

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    name: String,
    file_mode: u32,
    dir_mode: u32,
}

impl LocalStore {
    /// Opens an existing directory as a repository.
    pub fn open(root: impl AsRef<Path>) -> Result<LocalStore, BackupError> {
        let given = root.as_ref();
        let name = given.display().to_string();
        let root = fs::canonicalize(given).map_err(|e| io_error(&name, "open", e))?;
        if !root.is_dir() {
            return Err(BackupError::Storage {
                repo: name,
                reason: "not a directory".into(),
            });
        }
        use std::os::unix::fs::PermissionsExt;
        let shared = fs::metadata(&root)
            .map(|m| m.permissions().mode() & 0o2000 != 0)
            .unwrap_or(false);
        let (file_mode, dir_mode) = if shared {
            (0o640, 0o2750)
        } else {
            (0o600, 0o700)
        };
        Ok(LocalStore {
            root,
            name,
            file_mode,
            dir_mode,
        })
    }

    /// The modes of new files and directories: `(0o600, 0o700)`, or `(0o640, 0o2750)`
    /// below a setgid root.
    pub fn modes(&self) -> (u32, u32) {
        (self.file_mode, self.dir_mode)
    }

    /// Opens a directory as a repository, creating it (and its parents) when missing.
    pub fn create(root: impl AsRef<Path>) -> Result<LocalStore, BackupError> {
        let given = root.as_ref();
        if !given.exists() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(given)
                .map_err(|e| io_error(&given.display().to_string(), "create", e))?;
        }
        LocalStore::open(given)
    }

    /// The repository's directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn err(&self, what: &str, e: io::Error) -> BackupError {
        io_error(&self.name, what, e)
    }

    fn not_found(&self, key: &ObjectKey) -> BackupError {
        BackupError::ObjectNotFound {
            repo: self.name.clone(),
            key: key.to_string(),
        }
    }

    /// The file for `key`, after checking that no directory on the way is a symbolic link.
    /// Returns `Ok(None)` when a parent is missing or is not a directory.
    fn resolve(&self, key: &ObjectKey) -> Result<Option<PathBuf>, BackupError> {
        let mut path = self.root.clone();
        let mut segments = key.as_str().split('/').peekable();
        while let Some(seg) = segments.next() {
            path.push(seg);
            if segments.peek().is_none() {
                break;
            }
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.symlink_refused(key, &path));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.err(&format!("inspect {key}"), e)),
            }
        }
        Ok(Some(path))
    }

    fn symlink_refused(&self, key: &ObjectKey, path: &Path) -> BackupError {
        BackupError::Storage {
            repo: self.name.clone(),
            reason: format!(
                "{key}: {} is a symbolic link; refusing to follow it",
                path.strip_prefix(&self.root).unwrap_or(path).display()
            ),
        }
    }

    /// Creates the directories leading to `key` (fsyncing each new directory's parent) and
    /// returns the target path.
    fn prepare_dirs(&self, key: &ObjectKey) -> Result<PathBuf, BackupError> {
        let mut path = self.root.clone();
        let mut segments = key.as_str().split('/').peekable();
        while let Some(seg) = segments.next() {
            path.push(seg);
            if segments.peek().is_none() {
                break;
            }
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.symlink_refused(key, &path));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(BackupError::Storage {
                        repo: self.name.clone(),
                        reason: format!(
                            "{key}: {} exists and is not a directory",
                            path.strip_prefix(&self.root).unwrap_or(&path).display()
                        ),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    use std::os::unix::fs::DirBuilderExt;
                    match fs::DirBuilder::new().mode(self.dir_mode).create(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(self.err(&format!("create directory for {key}"), e)),
                    }
                    if let Some(parent) = path.parent() {
                        fsync_dir(parent).map_err(|e| self.err("fsync directory", e))?;
                    }
                }
                Err(e) => return Err(self.err(&format!("inspect {key}"), e)),
            }
        }
        Ok(path)
    }

    /// Moves the finished temporary file into place.
    fn commit(
        &self,
        key: &ObjectKey,
        tmp: &Path,
        target: &Path,
        no_replace: bool,
    ) -> Result<(), BackupError> {
        if no_replace {
            // link(2) fails with EEXIST when the target exists: no window between check and write.
            match fs::hard_link(tmp, target) {
                Ok(()) => {
                    let _ = fs::remove_file(tmp);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(BackupError::ObjectExists {
                        repo: self.name.clone(),
                        key: key.to_string(),
                    });
                }
                Err(e) => return Err(self.err(&format!("link {key} into place"), e)),
            }
        } else {
            if let Ok(m) = fs::symlink_metadata(target)
                && m.is_dir()
            {
                return Err(BackupError::Storage {
                    repo: self.name.clone(),
                    reason: format!("{key} is a directory"),
                });
            }
            fs::rename(tmp, target)
                .map_err(|e| self.err(&format!("rename {key} into place"), e))?;
        }
        let dir = target.parent().unwrap_or(&self.root);
        fsync_dir(dir).map_err(|e| self.err("fsync directory", e))
    }

    /// Removes empty directories from `dir` up to (not including) the root.
    fn prune_empty_dirs(&self, mut dir: &Path) {
        while dir != self.root && dir.starts_with(&self.root) {
            if fs::remove_dir(dir).is_err() {
                break;
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
    }

    /// Walks `dir` (relative key prefix `rel`), calling `f` on each regular file.
    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        f: &mut dyn FnMut(&Path, &str, &fs::Metadata) -> Result<(), BackupError>,
    ) -> Result<(), BackupError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err("list directory", e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| self.err("list directory", e))?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::debug!(dir = %dir.display(), "skipping a file name that is not UTF-8");
                continue;
            };
            let ft = entry
                .file_type()
                .map_err(|e| self.err("list directory", e))?;
            let key = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            if ft.is_dir() && rel.is_empty() && name == SCRATCH_DIR {
                // Scratch space, not objects.
            } else if ft.is_dir() {
                self.walk(&path, &key, f)?;
            } else if ft.is_file() {
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Removed meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.err("list directory", e)),
                };
                f(&path, &key, &meta)?;
            }
            // Symbolic links and special files are never objects.
        }
        Ok(())
    }

    /// Creates the directories and the temporary file for `key`.
    fn put_blocking_prepare(
        &self,
        key: &ObjectKey,
    ) -> Result<(PathBuf, PathBuf, fs::File), BackupError> {
        let last = key.as_str().rsplit('/').next().unwrap_or(key.as_str());
        if is_temp_name(last) {
            return Err(BackupError::InvalidKey {
                key: key.to_string(),
            });
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let target = self.prepare_dirs(key)?;
            let tmp = temp_path_for(&target);
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.file_mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
            {
                Ok(f) => return Ok((target, tmp, f)),
                // A concurrent delete pruned the (then empty) directory: create it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 3 => continue,
                Err(e) => return Err(self.err(&format!("create temporary file for {key}"), e)),
            }
        }
    }
}

fn io_error(repo: &str, what: &str, e: io::Error) -> BackupError {
    let reason = format!("{what}: {e}");
    match e.kind() {
        io::ErrorKind::PermissionDenied => BackupError::AccessDenied {
            repo: repo.to_string(),
            reason,
        },
        io::ErrorKind::TimedOut | io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => {
            BackupError::Unavailable {
                repo: repo.to_string(),
                reason,
            }
        }
        _ => BackupError::Storage {
            repo: repo.to_string(),
            reason,
        },
    }
}

fn join_error(repo: &str, e: tokio::task::JoinError) -> BackupError {
    BackupError::Storage {
        repo: repo.to_string(),
        reason: format!("background file task failed: {e}"),
    }
}

fn timestamp(t: SystemTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::try_from(t).ok()
}

impl LocalStore {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LocalStore) -> Result<T, BackupError> + Send + 'static,
    ) -> Result<T, BackupError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| join_error(&self.name, e))?
    }

    async fn write_temp(
        &self,
        file: fs::File,
        mut body: ByteStream,
        key: &ObjectKey,
    ) -> Result<u64, BackupError> {
        let mut file = tokio::fs::File::from_std(file);
        let mut buf = vec![0u8; WRITE_CHUNK];
        let mut size = 0u64;
        loop {
            let n = body
                .read(&mut buf)
                .await
                .map_err(|e| BackupError::Storage {
                    repo: self.name.clone(),
                    reason: format!("reading the data for {key}: {e}"),
                })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .await
                .map_err(|e| self.err(&format!("write {key}"), e))?;
            size += n as u64;
        }
        file.flush()
            .await
            .map_err(|e| self.err(&format!("write {key}"), e))?;
        file.sync_all()
            .await
            .map_err(|e| self.err(&format!("fsync {key}"), e))?;
        Ok(size)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<PutResult, BackupError> {
        let k = key.clone();
        let (target, tmp, file) = self.blocking(move |s| s.put_blocking_prepare(&k)).await?;
        let written = if opts.if_not_exists && fs::symlink_metadata(&target).is_ok() {
            // Early answer; the link below is what makes it race-free.
            drop(file);
            Err(BackupError::ObjectExists {
                repo: self.name.clone(),
                key: key.to_string(),
            })
        } else {
            self.write_temp(file, body, key).await
        };
        let result = match written {
            Ok(size) => {
                let (k, t, tg) = (key.clone(), tmp.clone(), target.clone());
                self.blocking(move |s| s.commit(&k, &t, &tg, opts.if_not_exists))
                    .await
                    .map(|()| PutResult { size })
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackupError> {
        let k = key.clone();
        let path = self
            .blocking(move |s| s.resolve(&k))
            .await?
            .ok_or_else(|| self.not_found(key))?;
        let mut file = match tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.not_found(key)),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(self.symlink_refused(key, &path));
            }
            Err(e) => return Err(self.err(&format!("open {key}"), e)),
        };
        let meta = file
            .metadata()
            .await
            .map_err(|e| self.err(&format!("open {key}"), e))?;
        if !meta.is_file() {
            return Err(self.not_found(key));
        }
        let r = clamp_range(range, meta.len());
        if r.start > 0 {
            file.seek(io::SeekFrom::Start(r.start))
                .await
                .map_err(|e| self.err(&format!("seek in {key}"), e))?;
        }
        Ok(Box::pin(file.take(r.end - r.start)))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BackupError> {
        let k = key.clone();
        self.blocking(move |s| {
            let Some(path) = s.resolve(&k)? else {
                return Ok(None);
            };
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => Err(s.symlink_refused(&k, &path)),
                Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                    key: k.clone(),
                    size: m.len(),
                    last_modified: m.modified().ok().and_then(timestamp),
                })),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(s.err(&format!("inspect {k}"), e)),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackupError> {
        let prefix = prefix.to_string();
        self.blocking(move |s| {
            // Start at the deepest directory named entirely by the prefix.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let mut start = s.root.clone();
            let mut rel = String::new();
            for seg in dir_part.split('/').filter(|x| !x.is_empty()) {
                if seg == "." || seg == ".." {
                    return Ok(Vec::new());
                }
                start.push(seg);
                match fs::symlink_metadata(&start) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Ok(Vec::new()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(s.err("list", e)),
                }
                if !rel.is_empty() {
                    rel.push('/');
                }
                rel.push_str(seg);
            }
            let mut out = Vec::new();
            s.walk(&start, &rel, &mut |_, key, meta| {
                let last = key.rsplit('/').next().unwrap_or(key);
                if !key.starts_with(prefix.as_str()) || is_temp_name(last) {
                    return Ok(());
                }
                match ObjectKey::new(key) {
                    Ok(k) => out.push(ObjectMeta {
                        key: k,
                        size: meta.len(),
                        last_modified: meta.modified().ok().and_then(timestamp),
                    }),
                    Err(_) => tracing::debug!(key, "skipping a file whose name is not a valid key"),
                }
                Ok(())
            })?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackupError> {
        let k = key.clone();
        self.blocking(move |s| {
            let Some(path) = s.resolve(&k)? else {
                return Ok(());
            };
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    return Err(BackupError::Storage {
                        repo: s.name.clone(),
                        reason: format!("{k} is a directory"),
                    });
                }
                _ => {}
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(s.err(&format!("delete {k}"), e)),
            }
            let dir = path.parent().unwrap_or(&s.root).to_path_buf();
            fsync_dir(&dir).map_err(|e| s.err("fsync directory", e))?;
            s.prune_empty_dirs(&dir);
            Ok(())
        })
        .await
    }

    async fn cleanup_incomplete(&self, older_than: Duration) -> Result<u64, BackupError> {
        self.blocking(move |s| {
            let cutoff = SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut stale = Vec::new();
            s.walk(&s.root, "", &mut |path, key, meta| {
                let last = key.rsplit('/').next().unwrap_or(key);
                let old = meta.modified().map(|m| m <= cutoff).unwrap_or(false);
                if is_temp_name(last) && old {
                    stale.push(path.to_path_buf());
                }
                Ok(())
            })?;
            let mut removed = 0;
            for path in stale {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        removed += 1;
                        tracing::info!(path = %path.display(), "removed a stale temporary file");
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(s.err("remove temporary file", e)),
                }
            }
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{get_bytes, put_bytes};

    fn key(s: &str) -> ObjectKey {
        ObjectKey::new(s).unwrap()
    }

    #[tokio::test]
    async fn refuses_symlinks_out_of_the_root() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"outside").unwrap();
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(d.path()).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("evil")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("link")).unwrap();

        let err = get_bytes(&store, &key("evil/secret"), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = get_bytes(&store, &key("link"), None).await.unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(store.head(&key("evil/secret")).await.is_err());
        let err = put_bytes(&store, &key("evil/new"), "x", false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!outside.path().join("new").exists());
        // Writing over a symlinked key replaces the link itself, never its target.
        put_bytes(&store, &key("link"), "mine", false)
            .await
            .unwrap();
        assert_eq!(fs::read(outside.path().join("secret")).unwrap(), b"outside");
        assert_eq!(
            get_bytes(&store, &key("link"), None).await.unwrap(),
            b"mine"
        );
        // Listing never descends into links.
        let listed = store.list("").await.unwrap();
        assert_eq!(
            listed.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
            ["link"]
        );
        // Deleting through a link is refused.
        assert!(store.delete(&key("evil/secret")).await.is_err());
        assert!(outside.path().join("secret").exists());
    }

    #[tokio::test]
    async fn stale_temp_files_are_cleaned_and_hidden() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(d.path()).unwrap();
        put_bytes(&store, &key("a/b"), "data", false).await.unwrap();
        let tmp = temp_path_for(&d.path().join("a").join("c"));
        fs::write(&tmp, b"half").unwrap();
        let names: Vec<_> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(names, [key("a/b")]);
        // A fresh temporary file may belong to a running put: kept.
        assert_eq!(
            store
                .cleanup_incomplete(Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert!(tmp.exists());
        assert_eq!(store.cleanup_incomplete(Duration::ZERO).await.unwrap(), 1);
        assert!(!tmp.exists());
        assert!(d.path().join("a/b").exists());
        // Temporary names cannot be used as keys.
        let name = tmp.file_name().unwrap().to_str().unwrap();
        let err = put_bytes(&store, &key(&format!("a/{name}")), "x", false)
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::InvalidKey { .. }), "{err}");
    }

    #[tokio::test]
    async fn delete_prunes_empty_directories_but_not_the_root() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(d.path()).unwrap();
        put_bytes(&store, &key("x/y/z"), "1", false).await.unwrap();
        put_bytes(&store, &key("x/w"), "2", false).await.unwrap();
        store.delete(&key("x/y/z")).await.unwrap();
        assert!(!d.path().join("x/y").exists());
        assert!(d.path().join("x/w").exists());
        store.delete(&key("x/w")).await.unwrap();
        assert!(!d.path().join("x").exists());
        assert!(d.path().exists());
        // And a put into a pruned path works again.
        put_bytes(&store, &key("x/y/z"), "3", false).await.unwrap();
        assert_eq!(get_bytes(&store, &key("x/y/z"), None).await.unwrap(), b"3");
    }

    #[tokio::test]
    async fn a_file_in_the_way_of_a_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(d.path()).unwrap();
        put_bytes(&store, &key("f"), "1", false).await.unwrap();
        let err = put_bytes(&store, &key("f/g"), "2", false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert_eq!(store.head(&key("f/g")).await.unwrap(), None);
        assert!(matches!(
            store.get(&key("f/g"), None).await.err(),
            Some(BackupError::ObjectNotFound { .. })
        ));
    }
}
