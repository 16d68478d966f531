//! The deploy lock: one deploy per project at a time, across processes.

use crate::error::DeployError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A held deploy lock (an exclusive `flock` on `DIR/deploy-PROJECT.lock`), released on drop
/// or when the process dies, so a crashed deploy never leaves a stale lock.
#[derive(Debug)]
pub struct DeployLock {
    file: File,
    path: PathBuf,
}

impl DeployLock {
    /// Takes the lock for `project` in `dir` (created if missing), or fails with
    /// [`DeployError::Locked`] naming the holder.
    pub fn acquire(dir: &Path, project: &str, holder: &str) -> Result<DeployLock, DeployError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DeployError::io(format!("create lock directory {}", dir.display()), e))?;
        let name: String = project
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("deploy-{name}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| DeployError::io(format!("open lock {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut held = String::new();
                let _ = file.read_to_string(&mut held);
                return Err(DeployError::Locked {
                    path: path.display().to_string(),
                    holder: if held.trim().is_empty() {
                        "unknown".into()
                    } else {
                        held.trim().to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(DeployError::io(format!("lock {}", path.display()), e));
            }
        }
        let note = format!(
            "{holder} (pid {}, since {})\n",
            std::process::id(),
            jiff::Timestamp::now()
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(note.as_bytes()))
            .and_then(|()| file.sync_data());
        written.map_err(|e| DeployError::io(format!("write lock {}", path.display()), e))?;
        Ok(DeployLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_deploy_is_refused_until_the_first_releases() {
        let d = tempfile::tempdir().unwrap();
        let a = DeployLock::acquire(d.path(), "shop", "deploy backend").unwrap();
        let e = DeployLock::acquire(d.path(), "shop", "deploy frontend").unwrap_err();
        match e {
            DeployError::Locked { holder, .. } => {
                assert!(holder.contains("deploy backend"), "{holder}")
            }
            e => panic!("unexpected {e}"),
        }
        // Another project is independent.
        let _other = DeployLock::acquire(d.path(), "blog", "deploy").unwrap();
        drop(a);
        DeployLock::acquire(d.path(), "shop", "deploy frontend").unwrap();
    }
}
