//! Atomic file writes: temporary file in the same directory, fsync, rename, fsync the directory
//! ([`atomic_write`]), or without the fsyncs where the consumer makes the file durable
//! ([`atomic_replace`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A temporary name next to `path`, unique per process and call.
pub fn temp_path_for(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}{TEMP_MARKER}{}.{n}", std::process::id()))
}

/// In the names [`temp_path_for`] makes (`.NAME.tej-tmp.PID.N`).
const TEMP_MARKER: &str = ".tej-tmp.";

/// Whether a file name is one [`temp_path_for`] made: a write in progress, or one a killed
/// process left behind.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// Flushes a directory's entries to disk (after a rename or create).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a mix.
/// `mode` sets the permissions of the new file (default: the old file's mode, else 0644).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    atomic_write_owned(path, bytes, mode, None)
}

/// [`atomic_write`], and the new file gets `owner` (uid, gid) before it replaces the old
/// one, e.g. when root writes into a directory the `postgres` user owns (changing the
/// owner needs root, or the same owner).
pub fn atomic_write_owned(
    path: &Path,
    bytes: &[u8],
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let mode = match mode {
        Some(m) => m,
        None => fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644),
    };
    replace(path, bytes, mode, owner, Finish::Rename)
}

/// Writes `bytes` to `path` atomically and durably, only if `path` does not exist: the whole
/// file appears at once or not at all, and an existing file is left alone
/// ([`io::ErrorKind::AlreadyExists`]), decided atomically by the file system (a hard link
/// of the finished temporary file).
pub fn atomic_create(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, None, Finish::Link)
}

/// How [`replace`] puts the finished temporary file in place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// fsync, rename over the old file, fsync the directory.
    Rename,
    /// Rename without fsyncs.
    RenameFast,
    /// fsync, hard link (fails when the name exists), remove the temporary name, fsync the
    /// directory.
    Link,
}

/// Writes `bytes` to a temporary file beside `path` (mode, then owner) and puts it in place
/// as `finish` says.
fn replace(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    finish: Finish,
) -> io::Result<()> {
    let durable = finish != Finish::RenameFast;
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it explicitly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        if finish == Finish::Link {
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        } else {
            fs::rename(&tmp, path)?;
        }
        if !durable {
            return Ok(());
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `path` with `bytes` atomically but not durably: a temporary file beside it,
/// renamed over it, no fsync. Readers see the old file or the whole new one; after a crash
/// either may be on disk. For files whose consumer makes them durable itself, such as a WAL
/// file handed to PostgreSQL's `restore_command`: PostgreSQL fsyncs and renames the files it
/// keeps, and asks again for the others after a crash.
pub fn atomic_replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    replace(path, bytes, mode, None, Finish::RenameFast)
}

/// `path` as another process must be given it (the server's OS user, in its own working
/// directory): canonical when the file exists, so that `..` and symlinks are resolved and no
/// directory on the way is one that user cannot traverse (a relative path from a checkout in
/// root's 0700 home); else [`std::path::absolute`]; else as given.
pub fn absolute_for_others(path: &Path) -> PathBuf {
    fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// What another OS user must be able to do with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read it (a configuration file).
    Read,
    /// Run it (a program named in `archive_command` or `restore_command`).
    Execute,
}

/// Why the OS user `uid` (primary group `gid`, and the supplementary groups the user
/// database gives it) cannot reach `path` for `access`, or `None` when it can: every
/// directory on the way must let it search (`x`), and the file itself be readable or
/// executable. A checkout in root's 0700 home is the usual reason a server's OS user
/// cannot run a binary built there.
pub fn unreachable_by(path: &Path, uid: u32, gid: u32, access: Access) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = match std::path::absolute(path) {
        Ok(p) => p,
        Err(e) => return Some(format!("cannot resolve {}: {e}", path.display())),
    };
    let groups = user_groups(uid, gid);
    // The permission bits that apply to this user: owner, else group, else other.
    let bits = |m: &fs::Metadata| -> u32 {
        let mode = m.mode();
        if m.uid() == uid {
            (mode >> 6) & 7
        } else if groups.contains(&m.gid()) {
            (mode >> 3) & 7
        } else {
            mode & 7
        }
    };
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
    dirs.reverse();
    for dir in dirs {
        let m = match fs::metadata(dir) {
            Ok(m) => m,
            Err(e) => return Some(format!("cannot stat {}: {e}", dir.display())),
        };
        if uid != 0 && bits(&m) & 1 == 0 {
            return Some(format!(
                "{} (mode {:04o}, owner uid {}) does not let uid {uid} through",
                dir.display(),
                m.mode() & 0o7777,
                m.uid()
            ));
        }
    }
    let m = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot stat {}: {e}", path.display())),
    };
    let (want, verb) = match access {
        Access::Read => (4, "read"),
        Access::Execute => (1, "execute"),
    };
    let allowed = if uid == 0 {
        access == Access::Read || m.mode() & 0o111 != 0
    } else {
        bits(&m) & want != 0 && (access == Access::Read || bits(&m) & 4 != 0 || m.is_file())
    };
    if allowed {
        None
    } else {
        Some(format!(
            "uid {uid} may not {verb} {} (mode {:04o}, owner uid {})",
            path.display(),
            m.mode() & 0o7777,
            m.uid()
        ))
    }
}

/// [`unreachable_by`] for the OS user named `user` (as `postgres`), looked up in the user
/// database; an unknown user is a reason too.
fn unreachable_for_user(path: &Path, user: &str, access: Access) -> Option<String> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => unreachable_by(path, u.uid.as_raw(), u.gid.as_raw(), access),
        Ok(None) => Some(format!("there is no OS user {user:?}")),
        Err(e) => Some(format!("cannot look up the OS user {user:?}: {e}")),
    }
}

/// [`unreachable_for_user`] for a child started "as `run_as`": that user when this process
/// is root (only root can switch users), else this process's own user.
pub fn unreachable_for_run_as(path: &Path, run_as: &str, access: Access) -> Option<String> {
    use nix::unistd::{getegid, geteuid};
    if geteuid().is_root() {
        unreachable_for_user(path, run_as, access)
    } else {
        unreachable_by(path, geteuid().as_raw(), getegid().as_raw(), access)
    }
}

/// The primary and supplementary groups of `uid` as the user database lists them.
fn user_groups(uid: u32, gid: u32) -> Vec<u32> {
    use nix::unistd::{Gid, Uid, User, getgrouplist};
    let mut groups = vec![gid];
    if let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid))
        && let Ok(name) = std::ffi::CString::new(user.name)
        && let Ok(list) = getgrouplist(&name, Gid::from_raw(gid))
    {
        groups.extend(list.into_iter().map(Gid::as_raw));
    }
    groups
}

#[cfg(test)]
mod tests {
    #[test]
    fn owned_write_sets_the_owner_asked() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let me = fs::metadata(d.path()).unwrap();
        // As root (CI), hand the file to `nobody`; otherwise only our own ids are allowed.
        let owner = if me.uid() == 0 {
            (65534, 65534)
        } else {
            (me.uid(), me.gid())
        };
        super::atomic_write_owned(&p, b"x", Some(0o600), Some(owner)).unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (owner.0, owner.1, 0o600)
        );
        assert_eq!(fs::read(&p).unwrap(), b"x");
    }

    use super::*;

    #[test]
    fn paths_for_others_resolve_dot_dot_through_the_real_directories() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("a").join("b");
        fs::create_dir_all(&inner).unwrap();
        fs::write(d.path().join("tej.toml"), "").unwrap();
        let roundabout = inner.join("..").join("..").join("tej.toml");
        assert_eq!(
            absolute_for_others(&roundabout),
            fs::canonicalize(d.path()).unwrap().join("tej.toml")
        );
        // A file that does not exist yet is made absolute without touching the disk.
        let missing = Path::new("not-there/tej.toml");
        assert!(absolute_for_others(missing).is_absolute());
    }

    #[test]
    fn create_never_replaces_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tej.toml");
        atomic_create(&p, b"first", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let e = atomic_create(&p, b"second", 0o640).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"first");
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["tej.toml"]);
    }

    #[test]
    fn writes_replace_and_keep_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.env");
        atomic_write(&p, b"one", Some(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        atomic_write(&p, b"two", None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // no temporary files left behind
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_private_directory_on_the_way_makes_a_program_unreachable() {
        let d = tempfile::tempdir().unwrap();
        let private = d.path().join("home");
        fs::create_dir(&private).unwrap();
        let prog = private.join("tej");
        fs::write(&prog, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
        // nobody: not the owner (we are root in CI, or ourselves otherwise).
        let (uid, gid) = (65534, 65534);
        assert_eq!(unreachable_by(&prog, uid, gid, Access::Execute), None);
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let why = unreachable_by(&prog, uid, gid, Access::Execute).unwrap();
        assert!(why.contains(&private.display().to_string()), "{why}");
        assert!(why.contains("0700"), "{why}");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o644)).unwrap();
        let why = unreachable_by(&prog, uid, gid, Access::Execute).unwrap();
        assert!(why.contains("may not execute"), "{why}");
        assert_eq!(unreachable_by(&prog, uid, gid, Access::Read), None);
        assert!(unreachable_by(&private.join("missing"), uid, gid, Access::Read).is_some());
    }

    #[test]
    fn failure_leaves_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing-dir").join("f");
        assert!(atomic_write(&p, b"x", None).is_err());
    }
}
