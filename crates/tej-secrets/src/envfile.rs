//! Reading and atomically updating `.env` files on disk, with backups.

use crate::dotenv::EnvFile;
use crate::error::{Result, SecretsError};
use jiff::Timestamp;
use serde::Serialize;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a `.env` file tej creates.
pub const NEW_FILE_MODE: u32 = 0o600;

/// How `.env` updates behave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateOptions {
    /// Create the file (mode 0600) when it does not exist.
    pub create: bool,
    /// When the path is a symbolic link, edit the link's target (reported) instead of refusing.
    pub follow_symlink: bool,
    /// Write a timestamped backup of the previous file next to it.
    pub backup: bool,
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdateReport {
    /// The file written (the link's target when a link was followed).
    pub path: PathBuf,
    /// True when the content changed (nothing is written otherwise).
    pub changed: bool,
    /// The backup of the previous file, when one was written.
    pub backup: Option<PathBuf>,
    /// The file's mode after the update.
    pub mode: u32,
}

/// Where a write may be interrupted, for crash tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailPoint {
    /// After creating the temporary file.
    Created,
    /// After writing this many bytes of it.
    Partial(usize),
    /// After writing and syncing it, before the rename.
    Synced,
    /// After the rename, before syncing the directory.
    Renamed,
}

/// Reads and parses a `.env` file.
pub fn read_env_file(path: &Path) -> Result<EnvFile> {
    let text = fs::read(path).map_err(|e| SecretsError::io("read", path, &e))?;
    let text = String::from_utf8(text).map_err(|_| SecretsError::Io {
        action: "parse",
        path: path.to_path_buf(),
        reason: "the file is not UTF-8".into(),
        retryable: false,
    })?;
    Ok(EnvFile::parse(&text))
}

/// Resolves symbolic links according to `follow` (refusing them otherwise).
pub(crate) fn resolve_target(path: &Path, follow: bool) -> Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            let target =
                fs::read_link(path).map_err(|e| SecretsError::io("read link", path, &e))?;
            if !follow {
                return Err(SecretsError::Symlink {
                    path: path.to_path_buf(),
                    target,
                });
            }
            fs::canonicalize(path).map_err(|e| SecretsError::io("resolve", path, &e))
        }
        Ok(_) => Ok(path.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path.to_path_buf()),
        Err(e) => Err(SecretsError::io("inspect", path, &e)),
    }
}

/// The owner and mode a replacement file must keep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileMeta {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl FileMeta {
    pub(crate) fn of(path: &Path) -> Result<Option<FileMeta>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(FileMeta {
                mode: m.permissions().mode() & 0o7777,
                uid: Some(m.uid()),
                gid: Some(m.gid()),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SecretsError::io("inspect", path, &e)),
        }
    }

    fn new_file() -> FileMeta {
        FileMeta {
            mode: NEW_FILE_MODE,
            uid: None,
            gid: None,
        }
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync,
/// rename, fsync the directory), with `meta`'s mode and owner.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], meta: FileMeta) -> Result<()> {
    #[cfg(test)]
    if inject::take(path) {
        return Err(SecretsError::Io {
            action: "write",
            path: path.to_path_buf(),
            reason: "injected failure (No space left on device)".into(),
            retryable: false,
        });
    }
    replace_file_with(path, bytes, meta, None)
}

/// Fault injection for tests: the next write of a given path fails (per thread).
#[cfg(test)]
pub(crate) mod inject {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static FAIL: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    /// Makes the next write of `path` on this thread fail.
    pub(crate) fn fail_next_write(path: &Path) {
        FAIL.with(|f| f.borrow_mut().push(path.to_path_buf()));
    }

    pub(super) fn take(path: &Path) -> bool {
        FAIL.with(|f| {
            let mut v = f.borrow_mut();
            match v.iter().position(|p| p == path) {
                Some(i) => {
                    v.remove(i);
                    true
                }
                None => false,
            }
        })
    }
}

pub(crate) fn replace_file_with(
    path: &Path,
    bytes: &[u8],
    meta: FileMeta,
    fail: Option<FailPoint>,
) -> Result<()> {
    let tmp = tej_core::fsutil::temp_path_for(path);
    let crash = |p: FailPoint| -> Result<()> {
        if fail == Some(p) {
            // A simulated crash: nothing is cleaned up.
            return Err(SecretsError::Io {
                action: "write",
                path: path.to_path_buf(),
                reason: format!("simulated crash at {p:?}"),
                retryable: false,
            });
        }
        Ok(())
    };
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.mode)
            .open(&tmp)
            .map_err(|e| SecretsError::io("create a temporary file for", path, &e))?;
        f.set_permissions(fs::Permissions::from_mode(meta.mode))
            .map_err(|e| SecretsError::io("set the mode of", path, &e))?;
        if meta.uid.is_some() || meta.gid.is_some() {
            let cur = fs::metadata(&tmp).map_err(|e| SecretsError::io("inspect", &tmp, &e))?;
            if meta.uid != Some(cur.uid()) || meta.gid != Some(cur.gid()) {
                std::os::unix::fs::fchown(&f, meta.uid, meta.gid).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        SecretsError::PermissionDenied {
                            action: "keep the owner of",
                            path: path.to_path_buf(),
                            needed: format!(
                                "root (the file belongs to uid {} gid {})",
                                meta.uid.unwrap_or(0),
                                meta.gid.unwrap_or(0)
                            ),
                        }
                    } else {
                        SecretsError::io("set the owner of", path, &e)
                    }
                })?;
            }
        }
        crash(FailPoint::Created)?;
        if let Some(FailPoint::Partial(n)) = fail {
            let n = n.min(bytes.len());
            f.write_all(&bytes[..n])
                .map_err(|e| SecretsError::io("write", path, &e))?;
            return crash(FailPoint::Partial(n));
        }
        f.write_all(bytes)
            .map_err(|e| SecretsError::io("write", path, &e))?;
        f.sync_all()
            .map_err(|e| SecretsError::io("sync", path, &e))?;
        drop(f);
        crash(FailPoint::Synced)?;
        fs::rename(&tmp, path).map_err(|e| SecretsError::io("rename into", path, &e))?;
        crash(FailPoint::Renamed)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        tej_core::fsutil::fsync_dir(dir)
            .map_err(|e| SecretsError::io("sync the directory of", path, &e))
    })();
    if result.is_err() && fail.is_none() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The backup name for `path` at `at`: `NAME.bak.YYYYMMDDTHHMMSSZ` (with `.N` when taken).
pub fn backup_path(path: &Path, at: Timestamp) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "env".into());
    let stamp = at.strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut candidate = path.with_file_name(format!("{name}.bak.{stamp}"));
    let mut n = 1;
    while fs::symlink_metadata(&candidate).is_ok() {
        candidate = path.with_file_name(format!("{name}.bak.{stamp}.{n}"));
        n += 1;
    }
    candidate
}

/// The backups of `path` ([`backup_path`]'s `NAME.bak.STAMP[.N]`, regular files only),
/// newest first.
pub fn list_backups(path: &Path) -> Result<Vec<PathBuf>> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "env".into());
    let prefix = format!("{name}.bak.");
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SecretsError::io("list", dir, &e)),
    };
    let mut found: Vec<((String, u64), PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SecretsError::io("list", dir, &e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(order) = backup_order(rest) else {
            continue;
        };
        let p = entry.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_file() => found.push((order, p)),
            _ => {}
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// `YYYYMMDDTHHMMSSZ[.N]` as a sortable key.
fn backup_order(rest: &str) -> Option<(String, u64)> {
    let (stamp, n) = match rest.split_once('.') {
        Some((s, n)) => (s, n.parse::<u64>().ok()?),
        None => (rest, 0),
    };
    let ok = stamp.len() == 16
        && stamp.ends_with('Z')
        && stamp.as_bytes()[8] == b'T'
        && stamp
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || i == 15 || b.is_ascii_digit());
    ok.then(|| (stamp.to_string(), n))
}

/// Keeps the newest `keep` backups of `path` and removes the older ones, each overwritten
/// with zeros and synced first (they hold old secrets); returns the removed paths.
pub fn prune_backups(path: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for p in list_backups(path)?.into_iter().skip(keep) {
        shred(&p)?;
        removed.push(p);
    }
    Ok(removed)
}

/// Overwrites a regular file with zeros, syncs it and removes it.
fn shred(p: &Path) -> Result<()> {
    let before = fs::symlink_metadata(p).map_err(|e| SecretsError::io("inspect", p, &e))?;
    let mut f = OpenOptions::new()
        .write(true)
        .open(p)
        .map_err(|e| SecretsError::io("open", p, &e))?;
    let opened = f
        .metadata()
        .map_err(|e| SecretsError::io("inspect", p, &e))?;
    if !before.file_type().is_file() || opened.ino() != before.ino() || opened.dev() != before.dev()
    {
        return Err(SecretsError::Io {
            action: "overwrite",
            path: p.to_path_buf(),
            reason: "not a regular file (replaced while pruning?)".into(),
            retryable: false,
        });
    }
    let len = opened.len();
    let zeros = vec![0u8; 8192];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])
            .map_err(|e| SecretsError::io("overwrite", p, &e))?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| SecretsError::io("sync", p, &e))?;
    drop(f);
    fs::remove_file(p).map_err(|e| SecretsError::io("remove", p, &e))
}

/// Copies `path` to a timestamped backup beside it, with the same mode and owner.
pub fn backup_file(path: &Path, at: Timestamp) -> Result<PathBuf> {
    let meta = FileMeta::of(path)?.ok_or_else(|| SecretsError::NotFound {
        path: path.to_path_buf(),
    })?;
    let bytes = fs::read(path).map_err(|e| SecretsError::io("read", path, &e))?;
    let dest = backup_path(path, at);
    replace_file(&dest, &bytes, meta)?;
    Ok(dest)
}

/// Restores `backup` over `path` atomically, keeping `path`'s mode and owner.
pub fn restore_backup(backup: &Path, path: &Path) -> Result<()> {
    let bytes = fs::read(backup).map_err(|e| SecretsError::io("read backup", backup, &e))?;
    let meta = match FileMeta::of(path)? {
        Some(m) => m,
        None => FileMeta::of(backup)?.unwrap_or_else(FileMeta::new_file),
    };
    replace_file(path, &bytes, meta)
}

/// Applies `edit` to the `.env` at `path` and writes the result atomically,
/// keeping mode and owner, with a timestamped backup when asked.
/// Nothing is written when the content does not change.
pub fn update_env_file(
    path: &Path,
    options: &UpdateOptions,
    at: Timestamp,
    edit: impl FnOnce(&mut EnvFile) -> Result<()>,
) -> Result<UpdateReport> {
    let target = resolve_target(path, options.follow_symlink)?;
    let meta = FileMeta::of(&target)?;
    let (original, meta) = match meta {
        Some(m) => (read_env_file(&target)?, m),
        None if options.create => (EnvFile::default(), FileMeta::new_file()),
        None => return Err(SecretsError::NotFound { path: target }),
    };
    let before = original.render();
    let mut file = original;
    edit(&mut file)?;
    let after = file.render();
    if after == before {
        return Ok(UpdateReport {
            path: target,
            changed: false,
            backup: None,
            mode: meta.mode,
        });
    }
    let backup = if options.backup && meta.uid.is_some() {
        Some(backup_file(&target, at)?)
    } else {
        None
    };
    replace_file(&target, after.as_bytes(), meta)?;
    Ok(UpdateReport {
        path: target,
        changed: true,
        backup,
        mode: meta.mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tej_core::Secret;

    fn at() -> Timestamp {
        "2025-01-16T09:30:00Z".parse().unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn update_keeps_mode_writes_backup_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".env");
        fs::write(&p, "# app\nJWT_SECRET=old\nPORT=3000\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let opts = UpdateOptions {
            backup: true,
            ..Default::default()
        };
        let r = update_env_file(&p, &opts, at(), |f| {
            f.set("JWT_SECRET", &Secret::new("new"))
        })
        .unwrap();
        assert!(r.changed);
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            "# app\nJWT_SECRET=new\nPORT=3000\n"
        );
        assert_eq!(mode(&p), 0o640);
        let b = r.backup.unwrap();
        assert_eq!(b.file_name().unwrap(), ".env.bak.20250116T093000Z");
        assert_eq!(
            fs::read_to_string(&b).unwrap(),
            "# app\nJWT_SECRET=old\nPORT=3000\n"
        );
        assert_eq!(mode(&b), 0o640);
        // a second backup in the same second gets its own name
        let r2 = update_env_file(&p, &opts, at(), |f| {
            f.set("JWT_SECRET", &Secret::new("newer"))
        })
        .unwrap();
        assert_eq!(
            r2.backup.unwrap().file_name().unwrap(),
            ".env.bak.20250116T093000Z.1"
        );
        // unchanged content: no write, no backup
        let r3 = update_env_file(&p, &opts, at(), |f| {
            f.set("JWT_SECRET", &Secret::new("newer"))
        })
        .unwrap();
        assert!(!r3.changed && r3.backup.is_none());
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| !n.contains("tej-tmp")));
    }

    #[test]
    fn owner_is_kept_or_the_missing_privilege_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".env");
        fs::write(&p, "A=1\n").unwrap();
        let me = fs::metadata(&p).unwrap().uid();
        let other = 4242;
        let opts = UpdateOptions {
            backup: true,
            ..Default::default()
        };
        if std::os::unix::fs::chown(&p, Some(other), Some(other)).is_ok() {
            // root: the new file and the backup keep the foreign owner
            let r = update_env_file(&p, &opts, at(), |f| f.set("A", &Secret::new("2"))).unwrap();
            let m = fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (other, other));
            let b = fs::metadata(r.backup.unwrap()).unwrap();
            assert_eq!((b.uid(), b.gid()), (other, other));
        } else {
            // not root: a file of another owner cannot be replaced silently with ours
            assert_ne!(me, 0);
            fs::write(&p, "A=1\n").unwrap();
        }
        assert_eq!(
            EnvFile::parse(&fs::read_to_string(&p).unwrap())
                .get("A")
                .map(|s| s.expose().to_string())
                .unwrap(),
            if me == 0 { "2" } else { "1" }
        );
    }

    #[test]
    fn new_files_are_0600_and_missing_files_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".env");
        assert!(matches!(
            update_env_file(&p, &UpdateOptions::default(), at(), |_| Ok(())),
            Err(SecretsError::NotFound { .. })
        ));
        let opts = UpdateOptions {
            create: true,
            backup: true,
            ..Default::default()
        };
        let r = update_env_file(&p, &opts, at(), |f| f.set("A", &Secret::new("1"))).unwrap();
        assert!(r.backup.is_none());
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_to_string(&p).unwrap(), "A=1\n");
    }

    #[test]
    fn symlinks_are_refused_unless_followed() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.env");
        fs::write(&real, "A=1\n").unwrap();
        let link = d.path().join(".env");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = update_env_file(&link, &UpdateOptions::default(), at(), |f| {
            f.set("A", &Secret::new("2"))
        })
        .unwrap_err();
        assert!(matches!(e, SecretsError::Symlink { .. }), "{e}");
        assert_eq!(fs::read_to_string(&real).unwrap(), "A=1\n");
        let opts = UpdateOptions {
            follow_symlink: true,
            ..Default::default()
        };
        let r = update_env_file(&link, &opts, at(), |f| f.set("A", &Secret::new("2"))).unwrap();
        assert_eq!(r.path, fs::canonicalize(&real).unwrap());
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), "A=2\n");
    }

    #[test]
    fn a_failed_edit_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".env");
        fs::write(&p, "A=1\n").unwrap();
        let e = update_env_file(
            &p,
            &UpdateOptions {
                backup: true,
                ..Default::default()
            },
            at(),
            |f| f.set("A", &Secret::new("bad value\\")),
        )
        .unwrap_err();
        assert!(matches!(e, SecretsError::Unrepresentable { .. }));
        assert_eq!(fs::read_to_string(&p).unwrap(), "A=1\n");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn interrupted_writes_leave_old_or_new_file_complete() {
        let old = "# c\nJWT_SECRET=old-value-0123456789\nPORT=1\n";
        let new = "# c\nJWT_SECRET=\"new value $ 'x'\"\nPORT=1\nEXTRA=1\n";
        let mut points = vec![FailPoint::Created, FailPoint::Synced, FailPoint::Renamed];
        points.extend((0..=new.len()).map(FailPoint::Partial));
        for p in points {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join(".env");
            fs::write(&path, old).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let meta = FileMeta::of(&path).unwrap().unwrap();
            assert!(replace_file_with(&path, new.as_bytes(), meta, Some(p)).is_err());
            let now = fs::read_to_string(&path).unwrap();
            let expect = if p == FailPoint::Renamed { new } else { old };
            assert_eq!(now, expect, "after a crash at {p:?}");
            assert_eq!(mode(&path), 0o600);
            // the next successful write cleans up nothing it should not and lands whole
            replace_file(&path, new.as_bytes(), meta).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), new);
        }
    }
}
