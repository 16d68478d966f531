//! Files the server's OS user must run or read, wherever the checkout lives.
//!
//! A test or demo that hands a path to PostgreSQL (`archive_command`, `restore_command`)
//! names a program that the `postgres` OS user runs. Cargo builds those programs inside the
//! checkout's `target/`, and a checkout in a directory that user cannot traverse (the root
//! user's home, mode 0700) makes every such command fail with "Permission denied".
//! [`Reachable`] puts the file where any user can reach it: a hard link (a copy across
//! file systems) in a fresh world-traversable directory under `/tmp`, removed on drop.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file reachable by every local user (directory 0755 under `/tmp`, file 0755), removed
/// with its directory when dropped.
#[derive(Debug)]
pub struct Reachable {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Reachable {
    /// Makes `file` reachable by every local user, under its own file name.
    pub fn file(file: &Path) -> Result<Reachable> {
        let name = file
            .file_name()
            .with_context(|| format!("{} has no file name", file.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("tej-reach-")
            .tempdir_in("/tmp")
            .context("create a directory under /tmp for a server-reachable file")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 0755 {}", dir.path().display()))?;
        let path = dir.path().join(name);
        if std::fs::hard_link(file, &path).is_err() {
            std::fs::copy(file, &path)
                .with_context(|| format!("copy {} to {}", file.display(), path.display()))?;
        }
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .permissions()
            .mode();
        // Read and (for programs) execute for everyone; a hard link shares the inode, so
        // this also changes the original's mode, which only ever widens read access to a
        // build artifact.
        let wanted = mode | 0o444 | if mode & 0o111 != 0 { 0o111 } else { 0 };
        if wanted != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
        Ok(Reachable {
            dir: Some(dir),
            path,
        })
    }

    /// `file` reachable by every local user at a path shared by every test process that
    /// asks for the same file: `/tmp/tej-reach-<hash of its path>/<name>`, a hard link (or
    /// copy) refreshed when the file was rebuilt, and left in place for the next run (one
    /// per source path, so nothing accumulates). For `const`-like uses across many tests.
    pub fn shared(file: &Path) -> Result<PathBuf> {
        use std::hash::{DefaultHasher, Hash, Hasher};
        use std::os::unix::fs::MetadataExt;
        let file =
            std::path::absolute(file).with_context(|| format!("resolve {}", file.display()))?;
        let name = file
            .file_name()
            .with_context(|| format!("{} has no file name", file.display()))?;
        let mut h = DefaultHasher::new();
        file.hash(&mut h);
        let dir = PathBuf::from(format!("/tmp/tej-reach-{:016x}", h.finish()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 0755 {}", dir.display()))?;
        let path = dir.join(name);
        let src = std::fs::metadata(&file).with_context(|| format!("stat {}", file.display()))?;
        let current = std::fs::metadata(&path).ok().is_some_and(|m| {
            (m.dev(), m.ino()) == (src.dev(), src.ino())
                || (m.len() == src.len() && m.mtime() >= src.mtime())
        });
        if !current {
            // A fresh name, then rename: a concurrent test sees the old link or the new one.
            let tmp = dir.join(format!(
                ".{}.{}",
                name.to_string_lossy(),
                std::process::id()
            ));
            let _ = std::fs::remove_file(&tmp);
            if std::fs::hard_link(&file, &tmp).is_err() {
                std::fs::copy(&file, &tmp)
                    .with_context(|| format!("copy {} to {}", file.display(), tmp.display()))?;
            }
            let mode = std::fs::metadata(&tmp)?.permissions().mode();
            let wanted = mode | 0o444 | if mode & 0o111 != 0 { 0o111 } else { 0 };
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(wanted))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
        }
        Ok(path)
    }

    /// The reachable path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the file in place after drop (for a demo whose commands the user pastes).
    pub fn keep(mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }
}

impl AsRef<Path> for Reachable {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_a_private_directory_becomes_reachable_and_goes_away_on_drop() -> Result<()> {
        let private = tempfile::tempdir()?;
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))?;
        let bin = private.path().join("prog");
        std::fs::write(&bin, b"#!/bin/sh\necho hi\n")?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700))?;
        let r = Reachable::file(&bin)?;
        let dir_mode = std::fs::metadata(r.path().parent().unwrap())?
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o755);
        let mode = std::fs::metadata(r.path())?.permissions().mode();
        assert_eq!(mode & 0o555, 0o555, "{mode:o}");
        assert_eq!(std::fs::read(r.path())?, std::fs::read(&bin)?);
        let path = r.path().to_path_buf();
        drop(r);
        assert!(!path.exists());
        assert!(bin.exists(), "the original stays");

        let shared = Reachable::shared(&bin)?;
        assert_eq!(std::fs::read(&shared)?, std::fs::read(&bin)?);
        assert_eq!(Reachable::shared(&bin)?, shared, "one path per source file");
        let dir_mode = std::fs::metadata(shared.parent().unwrap())?
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o755);
        std::fs::remove_dir_all(shared.parent().unwrap())?;
        Ok(())
    }
}
