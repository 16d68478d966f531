//! The backup lock: one run per target per repository.
//!
//! Semantics:
//! - A lock object `locks/<target>.lock` is created with "create only if absent" and holds
//!   the owner's host, pid and start time. A second run finds it and fails with
//!   [`BackupError::Locked`] naming the owner.
//! - A lock is stale, and taken over, when its owner is on this host and its pid no longer
//!   runs (a crashed or killed run), or when it is older than [`LockOptions::stale_after`]
//!   (an owner on another host that never came back). The owner deletes it when done.
//! - For a local repository, an exclusive `flock` on `locks/<target>.flock` in the
//!   repository directory is held too, so two runs on the host never both pass the
//!   staleness check; the kernel releases it when a process dies.

use crate::error::BackupError;
use crate::repo::Repository;
use crate::storage::{ObjectKey, StorageError, get_bytes, put_bytes};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How locks are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// A lock older than this is stale whoever holds it (default 24 h).
    pub stale_after: Duration,
    /// This host's name (default: the kernel's hostname).
    pub host: String,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            stale_after: Duration::from_secs(24 * 3600),
            host: hostname(),
        }
    }
}

/// This host's name, from the kernel.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What the lock object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// Host.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it was taken.
    pub since: Timestamp,
    /// What it is for (`create`, `prune`).
    pub purpose: String,
}

impl std::fmt::Display for LockOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pid {} ({}) since {}",
            self.host, self.pid, self.purpose, self.since
        )
    }
}

/// A held lock; release it with [`RepoLock::release`] (dropping it keeps the object,
/// which the staleness rule then clears).
pub struct RepoLock {
    repo: Repository,
    key: ObjectKey,
    _flock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoLock").field("key", &self.key).finish()
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl RepoLock {
    /// Takes the lock of `target` in `repo`.
    pub async fn acquire(
        repo: &Repository,
        target: &str,
        purpose: &str,
        opts: &LockOptions,
        now: Timestamp,
    ) -> Result<RepoLock, BackupError> {
        let key = ObjectKey::new(format!("locks/{target}.lock"))?;
        let flock = match &repo.local_path {
            Some(root) => Some(local_flock(repo, root, target, &key).await?),
            None => None,
        };
        let me = LockOwner {
            host: opts.host.clone(),
            pid: std::process::id(),
            since: now,
            purpose: purpose.to_string(),
        };
        let body = serde_json::to_vec(&me).unwrap_or_default();
        for _ in 0..3 {
            match put_bytes(&*repo.store, &key, body.clone(), true).await {
                Ok(_) => {
                    return Ok(RepoLock {
                        repo: repo.clone(),
                        key,
                        _flock: flock,
                    });
                }
                Err(StorageError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let owner = match get_bytes(&*repo.store, &key, None).await {
                Ok(b) => serde_json::from_slice::<LockOwner>(&b).ok(),
                Err(StorageError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let stale = match &owner {
                None => true,
                Some(o) => {
                    let age = now.duration_since(o.since);
                    let too_old = age
                        > SignedDuration::try_from(opts.stale_after).unwrap_or(SignedDuration::MAX);
                    let dead_here = o.host == opts.host && !pid_alive(o.pid);
                    let ours = o.host == opts.host && o.pid == std::process::id();
                    (too_old || dead_here) && !ours
                }
            };
            if !stale {
                return Err(BackupError::Locked {
                    repo: repo.name(),
                    target: target.to_string(),
                    owner: owner.map(|o| o.to_string()).unwrap_or_default(),
                    key: key.to_string(),
                });
            }
            tracing::warn!(repo = %repo.name(), lock = %key, "taking over a stale backup lock");
            repo.store.delete(&key).await?;
        }
        Err(BackupError::Locked {
            repo: repo.name(),
            target: target.to_string(),
            owner: "another run (the lock changed hands while taking it)".into(),
            key: key.to_string(),
        })
    }

    /// Releases the lock (deletes the lock object).
    pub async fn release(self) -> Result<(), BackupError> {
        self.repo.store.delete(&self.key).await?;
        Ok(())
    }
}

async fn local_flock(
    repo: &Repository,
    root: &std::path::Path,
    target: &str,
    key: &ObjectKey,
) -> Result<nix::fcntl::Flock<std::fs::File>, BackupError> {
    let dir = root.join("locks");
    let path = dir.join(format!("{target}.flock"));
    let repo_name = repo.name();
    let key_s = key.to_string();
    let target_s = target.to_string();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackupError::io(format!("create {}", dir.display()), e))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BackupError::io(format!("open {}", path.display()), e))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
            |(_, errno)| {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    BackupError::Locked {
                        repo: repo_name,
                        target: target_s,
                        owner: format!(
                            "another process on this host (flock on {})",
                            path.display()
                        ),
                        key: key_s,
                    }
                } else {
                    BackupError::io(
                        format!("flock {}", path.display()),
                        std::io::Error::from(errno),
                    )
                }
            },
        )
    })
    .await
    .map_err(|e| BackupError::io("lock task", std::io::Error::other(e.to_string())))?
}
