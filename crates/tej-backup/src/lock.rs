//! The backup locks: one protocol that create, prune, verify and restore respect.
//!
//! Both kinds of lock are plain objects in the repository, so they work the same on a
//! local directory and on S3:
//! - A *target lock* `locks/<target>.lock` (exclusive): one create of a target at a time.
//!   It is created with "create only if absent"; a second run finds it and fails with
//!   [`BackupError::Locked`] naming the owner.
//! - The *repository lock*: one object per holder under `locks/repo/`, shared by verify
//!   and restore (they read backups), exclusive for prune (it deletes them). A holder
//!   writes its object first, then lists the others; a live holder of a conflicting mode
//!   makes it withdraw its object and fail with [`BackupError::Busy`] naming that holder.
//!
//! Every lock object records its owner (host, pid and the pid's start time, purpose, mode,
//! a unique token) and is rewritten every [`LockOptions::refresh_every`] while held. A lock
//! is *stale*, its owner provably gone, when the owner is on this host and its process no
//! longer runs (or the pid now belongs to a process started later), or when it was not
//! refreshed for [`LockOptions::stale_after`] (an owner on another host that died).
//! Stale locks are taken over (a lock of this very process never is). Release stops the
//! refresh and deletes the object only while it is still the owner's.
//!
//! For a local repository the kernel's `flock` on `locks/<target>.flock` or
//! `locks/repo.flock` (exclusive, or shared for shared holders) is held too, so two runs on
//! the host never both pass the staleness check; the kernel releases it when a process dies.
//!
//! Create and prune do not exclude each other: prune removes a manifest-less run only when
//! no live owner holds its target's lock ([`target_locks`]), and storage leftovers
//! (temporary files, unfinished multipart uploads) only when no create runs at all.

use crate::error::BackupError;
use crate::repo::Repository;
use crate::storage::{ObjectKey, ObjectStore, get_bytes, put_bytes};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The prefix of the repository lock's holder objects.
pub const REPO_LOCK_PREFIX: &str = "locks/repo/";

/// How locks are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// A lock not refreshed for this long is stale whoever holds it (default 10 min).
    pub stale_after: Duration,
    /// How often a held lock is refreshed (default 1 min; keep it well below
    /// `stale_after`).
    pub refresh_every: Duration,
    /// This host's name (default: the kernel's hostname).
    pub host: String,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            stale_after: Duration::from_secs(10 * 60),
            refresh_every: Duration::from_secs(60),
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

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Several holders at once (verify, restore).
    Shared,
    /// One holder, nobody else (create of a target, prune).
    #[default]
    Exclusive,
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        })
    }
}

/// What a lock object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// Host.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When it was taken.
    pub since: Timestamp,
    /// What it is for (`create`, `prune`, `verify`, `restore`).
    pub purpose: String,
    /// When it was last refreshed (`since` when never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<Timestamp>,
    /// Shared or exclusive.
    #[serde(default)]
    pub mode: LockMode,
    /// Unique per acquisition: release and refresh touch only their own object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The start time of the owner's process (clock ticks since boot, `/proc/PID/stat`),
    /// so a reused pid is not mistaken for the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
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

impl LockOwner {
    fn me(opts: &LockOptions, purpose: &str, mode: LockMode, now: Timestamp) -> LockOwner {
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let host: String = opts
            .host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        LockOwner {
            host: opts.host.clone(),
            pid,
            since: now,
            purpose: purpose.to_string(),
            refreshed: Some(now),
            mode,
            token: format!("{host}-{pid}-{nanos}-{seq}"),
            pid_start: process_start(pid),
        }
    }

    fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The same acquisition (by token; by host, pid and start for tokenless objects).
    fn same_as(&self, other: &LockOwner) -> bool {
        if self.token.is_empty() || other.token.is_empty() {
            self.host == other.host && self.pid == other.pid && self.since == other.since
        } else {
            self.token == other.token
        }
    }

    /// Held by this very process.
    fn is_this_process(&self, opts: &LockOptions) -> bool {
        self.host == opts.host
            && self.pid == std::process::id()
            && (self.pid_start.is_none() || self.pid_start == process_start(self.pid))
    }

    /// Its owner is provably gone: on this host and not running, or not refreshed for
    /// `stale_after`. A lock of this process is never stale.
    pub fn is_stale(&self, opts: &LockOptions, now: Timestamp) -> bool {
        if self.is_this_process(opts) {
            return false;
        }
        let last = self.refreshed.unwrap_or(self.since).max(self.since);
        let too_old = now.duration_since(last)
            > SignedDuration::try_from(opts.stale_after).unwrap_or(SignedDuration::MAX);
        let dead_here = self.host == opts.host && !process_alive(self.pid, self.pid_start);
        too_old || dead_here
    }
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn process_alive(pid: u32, start: Option<u64>) -> bool {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return false;
    }
    match (start, process_start(pid)) {
        (Some(recorded), Some(now)) => recorded == now,
        _ => true,
    }
}

/// Reads a lock object: `None` when absent, `Some(None)` when it does not parse.
async fn read_owner(
    store: &dyn ObjectStore,
    key: &ObjectKey,
) -> Result<Option<Option<LockOwner>>, BackupError> {
    match get_bytes(store, key, None).await {
        Ok(b) => Ok(Some(serde_json::from_slice::<LockOwner>(&b).ok())),
        Err(BackupError::ObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes a stale lock object, unless it changed hands since it was judged.
async fn remove_stale(
    repo: &Repository,
    key: &ObjectKey,
    judged: Option<&LockOwner>,
) -> Result<(), BackupError> {
    let now = read_owner(&*repo.store, key).await?;
    let unchanged = match (&now, judged) {
        (None, _) => return Ok(()),
        (Some(Some(n)), Some(j)) => n.same_as(j),
        (Some(None), None) => true,
        _ => false,
    };
    if unchanged {
        tracing::warn!(repo = %repo.name(), lock = %key, owner = %judged.map(|o| o.to_string()).unwrap_or_else(|| "unreadable".into()), "removing a stale lock: its owner is gone");
        repo.store.delete(key).await?;
    }
    Ok(())
}

/// The key of `target`'s lock (`target` reduced as backup ids reduce it).
fn target_key(target: &str) -> Result<ObjectKey, BackupError> {
    ObjectKey::new(format!("locks/{}.lock", lock_name(target)))
}

fn lock_name(target: &str) -> String {
    let id = crate::id::BackupId::new(Timestamp::UNIX_EPOCH, target);
    id.target().to_string()
}

/// A held lock. Release it with [`RepoLock::release`]; dropping it stops the refresh and
/// removes the object in the background when a runtime is there (else the staleness
/// rule clears it).
pub struct RepoLock {
    repo: Repository,
    key: ObjectKey,
    owner: LockOwner,
    refresher: Option<tokio::task::JoinHandle<()>>,
    lost: Arc<AtomicBool>,
    released: bool,
    _flock: Option<nix::fcntl::Flock<std::fs::File>>,
}

impl std::fmt::Debug for RepoLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoLock")
            .field("key", &self.key)
            .field("mode", &self.owner.mode)
            .finish()
    }
}

impl RepoLock {
    /// Takes the exclusive lock of `target` in `repo` (create).
    pub async fn acquire(
        repo: &Repository,
        target: &str,
        purpose: &str,
        opts: &LockOptions,
        now: Timestamp,
    ) -> Result<RepoLock, BackupError> {
        let key = target_key(target)?;
        let flock = match &repo.local_path {
            Some(root) => {
                let path = root
                    .join("locks")
                    .join(format!("{}.flock", lock_name(target)));
                Some(
                    local_flock(path, LockMode::Exclusive)
                        .await?
                        .map_err(|path| BackupError::Locked {
                            repo: repo.name(),
                            target: target.to_string(),
                            owner: format!(
                                "another process on this host (flock on {})",
                                path.display()
                            ),
                            key: key.to_string(),
                        })?,
                )
            }
            None => None,
        };
        let me = LockOwner::me(opts, purpose, LockMode::Exclusive, now);
        for _ in 0..3 {
            match put_bytes(&*repo.store, &key, me.body(), true).await {
                Ok(_) => return Ok(RepoLock::held(repo, key, me, opts, flock)),
                Err(BackupError::ObjectExists { .. }) => {}
                Err(e) => return Err(e),
            }
            let owner = match read_owner(&*repo.store, &key).await? {
                None => continue,
                Some(o) => o,
            };
            let stale = owner.as_ref().is_none_or(|o| o.is_stale(opts, now));
            if !stale {
                return Err(BackupError::Locked {
                    repo: repo.name(),
                    target: target.to_string(),
                    owner: owner.map(|o| o.to_string()).unwrap_or_default(),
                    key: key.to_string(),
                });
            }
            tracing::warn!(repo = %repo.name(), lock = %key, "taking over a stale backup lock");
            remove_stale(repo, &key, owner.as_ref()).await?;
        }
        Err(BackupError::Locked {
            repo: repo.name(),
            target: target.to_string(),
            owner: "another run (the lock changed hands while taking it)".into(),
            key: key.to_string(),
        })
    }

    /// Takes the repository lock: [`LockMode::Shared`] to read backups (verify,
    /// restore), [`LockMode::Exclusive`] to delete them (prune).
    pub async fn acquire_repository(
        repo: &Repository,
        mode: LockMode,
        purpose: &str,
        opts: &LockOptions,
        now: Timestamp,
    ) -> Result<RepoLock, BackupError> {
        let me = LockOwner::me(opts, purpose, mode, now);
        let key = ObjectKey::new(format!("{REPO_LOCK_PREFIX}{}.lock", me.token))?;
        let flock = match &repo.local_path {
            Some(root) => match local_flock(root.join("locks").join("repo.flock"), mode).await? {
                Ok(f) => Some(f),
                Err(path) => {
                    let holders = repository_holders(repo).await.unwrap_or_default();
                    let owner = holders
                        .iter()
                        .filter_map(|(_, o)| o.as_ref())
                        .find(|o| !o.is_stale(opts, now))
                        .map(|o| format!("{o}, {}", o.mode))
                        .unwrap_or_else(|| {
                            format!("another process on this host (flock on {})", path.display())
                        });
                    return Err(busy(repo, purpose, owner, REPO_LOCK_PREFIX));
                }
            },
            None => None,
        };
        put_bytes(&*repo.store, &key, me.body(), true).await?;
        let conflict = async {
            for (k, o) in repository_holders(repo).await? {
                if k == key {
                    continue;
                }
                match o {
                    Some(o) if !o.is_stale(opts, now) => {
                        if mode == LockMode::Exclusive || o.mode == LockMode::Exclusive {
                            return Ok(Some((k, o)));
                        }
                    }
                    o => remove_stale(repo, &k, o.as_ref()).await?,
                }
            }
            Ok::<_, BackupError>(None)
        }
        .await;
        match conflict {
            Ok(None) => {}
            Ok(Some((k, o))) => {
                repo.store.delete(&key).await?;
                return Err(busy(repo, purpose, format!("{o}, {}", o.mode), k.as_str()));
            }
            Err(e) => {
                let _ = repo.store.delete(&key).await;
                return Err(e);
            }
        }
        Ok(RepoLock::held(repo, key, me, opts, flock))
    }

    /// Runs `op` holding the repository lock in `mode`: takes the lock, runs `op`, and
    /// always releases the lock, also when `op` fails. `op`'s error comes first: a release
    /// failure is returned after a success and logged after a failure.
    ///
    /// `op` is not started before the lock is held. A `hold` dropped mid-way (its task
    /// cancelled) leaves the release to [`RepoLock`]'s `Drop`.
    pub async fn hold<T>(
        repo: &Repository,
        mode: LockMode,
        purpose: &str,
        opts: &LockOptions,
        now: Timestamp,
        op: impl Future<Output = Result<T, BackupError>>,
    ) -> Result<T, BackupError> {
        let lock = RepoLock::acquire_repository(repo, mode, purpose, opts, now).await?;
        let result = op.await;
        let key = lock.key.clone();
        match (result, lock.release().await) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(released)) => Err(released),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(released)) => {
                tracing::warn!(
                    repo = %repo.name(), lock = %key, purpose, error = %released,
                    "cannot release the repository lock after a failed {purpose}"
                );
                Err(e)
            }
        }
    }

    /// [`RepoLock::hold`] of the shared lock with default options, as verify and restore
    /// read backups: prune waits for `op`, `op` waits for prune.
    pub(crate) async fn hold_reading<T>(
        repo: &Repository,
        purpose: &str,
        now: Timestamp,
        op: impl Future<Output = Result<T, BackupError>>,
    ) -> Result<T, BackupError> {
        let opts = LockOptions::default();
        RepoLock::hold(repo, LockMode::Shared, purpose, &opts, now, op).await
    }

    /// The shared repository lock taken by verify and restore (default options): prune
    /// waits for them, they wait for prune.
    pub async fn reading(
        repo: &Repository,
        purpose: &str,
        now: Timestamp,
    ) -> Result<RepoLock, BackupError> {
        RepoLock::acquire_repository(
            repo,
            LockMode::Shared,
            purpose,
            &LockOptions::default(),
            now,
        )
        .await
    }

    fn held(
        repo: &Repository,
        key: ObjectKey,
        owner: LockOwner,
        opts: &LockOptions,
        flock: Option<nix::fcntl::Flock<std::fs::File>>,
    ) -> RepoLock {
        let lost = Arc::new(AtomicBool::new(false));
        let refresher = spawn_refresher(
            repo.store.clone(),
            key.clone(),
            owner.clone(),
            opts.refresh_every,
            lost.clone(),
        );
        RepoLock {
            repo: repo.clone(),
            key,
            owner,
            refresher,
            lost,
            released: false,
            _flock: flock,
        }
    }

    /// The lock object's key.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// True once a refresh found the object gone or held by someone else (the lock was
    /// taken over as stale while this process held it).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Releases the lock: stops refreshing it and deletes the object, only while it is
    /// still this owner's (a lock taken over by another run is left to that run).
    pub async fn release(mut self) -> Result<(), BackupError> {
        self.released = true;
        if let Some(h) = self.refresher.take() {
            h.abort();
            let _ = h.await;
        }
        release_object(&self.repo, &self.key, &self.owner).await
    }
}

async fn release_object(
    repo: &Repository,
    key: &ObjectKey,
    owner: &LockOwner,
) -> Result<(), BackupError> {
    match read_owner(&*repo.store, key).await? {
        Some(Some(o)) if o.same_as(owner) => {
            repo.store.delete(key).await?;
        }
        Some(Some(o)) => {
            tracing::warn!(repo = %repo.name(), lock = %key, holder = %o, "the lock changed hands while held: left to its new owner");
        }
        Some(None) => {
            tracing::warn!(repo = %repo.name(), lock = %key, "the lock object is unreadable: left in place");
        }
        None => {
            tracing::warn!(repo = %repo.name(), lock = %key, "the lock object was already gone");
        }
    }
    Ok(())
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let Some(h) = self.refresher.take() {
            h.abort();
        }
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (repo, key, owner) = (self.repo.clone(), self.key.clone(), self.owner.clone());
            rt.spawn(async move {
                if let Err(e) = release_object(&repo, &key, &owner).await {
                    tracing::warn!(repo = %repo.name(), lock = %key, error = %e, "cannot remove a dropped lock");
                }
            });
        }
    }
}

fn busy(repo: &Repository, purpose: &str, owner: String, key: &str) -> BackupError {
    BackupError::Busy {
        repo: repo.name(),
        purpose: purpose.to_string(),
        owner,
        key: key.to_string(),
    }
}

fn spawn_refresher(
    store: Arc<dyn ObjectStore>,
    key: ObjectKey,
    owner: LockOwner,
    every: Duration,
    lost: Arc<AtomicBool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let every = every.max(Duration::from_millis(100));
    Some(rt.spawn(async move {
        let mut owner = owner;
        loop {
            tokio::time::sleep(every).await;
            match read_owner(&*store, &key).await {
                Ok(Some(Some(o))) if o.same_as(&owner) => {}
                Ok(_) => {
                    tracing::error!(lock = %key, "the lock was taken over while held");
                    lost.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!(lock = %key, error = %e, "cannot refresh the lock; retrying");
                    continue;
                }
            }
            owner.refreshed = Some(Timestamp::now());
            if let Err(e) = put_bytes(&*store, &key, owner.body(), false).await {
                tracing::warn!(lock = %key, error = %e, "cannot refresh the lock; retrying");
            }
        }
    }))
}

/// Every holder object of the repository lock, with its owner when it parses.
async fn repository_holders(
    repo: &Repository,
) -> Result<Vec<(ObjectKey, Option<LockOwner>)>, BackupError> {
    let mut out = Vec::new();
    for meta in repo.store.list(REPO_LOCK_PREFIX).await? {
        if !meta.key.as_str().ends_with(".lock") {
            continue;
        }
        if let Some(o) = read_owner(&*repo.store, &meta.key).await? {
            out.push((meta.key, o));
        }
    }
    Ok(out)
}

/// A target lock as found in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLock {
    /// The target (the lock's name).
    pub target: String,
    /// The lock object.
    pub key: ObjectKey,
    /// Its owner, when the object parses.
    pub owner: Option<LockOwner>,
    /// The owner is provably gone.
    pub stale: bool,
}

/// Every target lock (`locks/<target>.lock`) in `repo`, judged at `now`.
pub async fn target_locks(
    repo: &Repository,
    opts: &LockOptions,
    now: Timestamp,
) -> Result<Vec<TargetLock>, BackupError> {
    let mut out = Vec::new();
    for meta in repo.store.list("locks/").await? {
        let Some(name) = meta
            .key
            .as_str()
            .strip_prefix("locks/")
            .and_then(|r| r.strip_suffix(".lock"))
        else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        let Some(owner) = read_owner(&*repo.store, &meta.key).await? else {
            continue;
        };
        let stale = owner.as_ref().is_none_or(|o| o.is_stale(opts, now));
        out.push(TargetLock {
            target: name.to_string(),
            key: meta.key,
            owner,
            stale,
        });
    }
    Ok(out)
}

/// Removes a stale target lock found by [`target_locks`] (unless it changed hands since).
pub async fn remove_stale_target_lock(
    repo: &Repository,
    lock: &TargetLock,
) -> Result<(), BackupError> {
    remove_stale(repo, &lock.key, lock.owner.as_ref()).await
}

/// Takes a `flock` on `path` without waiting: `Ok(Err(path))` when another open file holds
/// a conflicting one.
async fn local_flock(
    path: std::path::PathBuf,
    mode: LockMode,
) -> Result<Result<nix::fcntl::Flock<std::fs::File>, std::path::PathBuf>, BackupError> {
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BackupError::io(format!("create {}", dir.display()), e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BackupError::io(format!("open {}", path.display()), e))?;
        let arg = match mode {
            LockMode::Shared => nix::fcntl::FlockArg::LockSharedNonblock,
            LockMode::Exclusive => nix::fcntl::FlockArg::LockExclusiveNonblock,
        };
        match nix::fcntl::Flock::lock(file, arg) {
            Ok(f) => Ok(Ok(f)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(Err(path)),
            Err((_, errno)) => Err(BackupError::io(
                format!("flock {}", path.display()),
                std::io::Error::from(errno),
            )),
        }
    })
    .await
    .map_err(|e| BackupError::io("lock task", std::io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    fn repo() -> Repository {
        Repository::from_store(Arc::new(MemoryStore::new()))
    }

    #[tokio::test]
    async fn shared_holders_coexist_and_exclude_an_exclusive_one() {
        let r = repo();
        let o = LockOptions::default();
        let now = Timestamp::now();
        let a = RepoLock::acquire_repository(&r, LockMode::Shared, "verify", &o, now)
            .await
            .unwrap();
        let b = RepoLock::acquire_repository(&r, LockMode::Shared, "restore", &o, now)
            .await
            .unwrap();
        let e = RepoLock::acquire_repository(&r, LockMode::Exclusive, "prune", &o, now)
            .await
            .unwrap_err();
        assert!(matches!(e, BackupError::Busy { .. }), "{e}");
        assert!(e.to_string().contains("verify") || e.to_string().contains("restore"));
        a.release().await.unwrap();
        b.release().await.unwrap();
        let p = RepoLock::acquire_repository(&r, LockMode::Exclusive, "prune", &o, now)
            .await
            .unwrap();
        let e = RepoLock::acquire_repository(&r, LockMode::Shared, "verify", &o, now)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("prune"), "{e}");
        p.release().await.unwrap();
        assert!(r.store.list("locks/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dead_or_silent_holder_is_stale_and_release_checks_the_owner() {
        let r = repo();
        let o = LockOptions::default();
        let now = Timestamp::now();
        // A holder on this host whose process is gone.
        let dead = LockOwner {
            host: o.host.clone(),
            pid: 4_000_000,
            since: now,
            purpose: "prune".into(),
            refreshed: Some(now),
            mode: LockMode::Exclusive,
            token: "dead".into(),
            pid_start: None,
        };
        let k = ObjectKey::new("locks/repo/dead.lock").unwrap();
        put_bytes(&*r.store, &k, dead.body(), false).await.unwrap();
        // A holder elsewhere, last refreshed long ago.
        let silent = LockOwner {
            host: "elsewhere".into(),
            pid: 1,
            since: now - SignedDuration::from_hours(2),
            refreshed: Some(now - SignedDuration::from_hours(1)),
            token: "silent".into(),
            ..dead.clone()
        };
        let k2 = ObjectKey::new("locks/repo/silent.lock").unwrap();
        put_bytes(&*r.store, &k2, silent.body(), false)
            .await
            .unwrap();
        assert!(dead.is_stale(&o, now) && silent.is_stale(&o, now));
        let fresh = LockOwner {
            refreshed: Some(now),
            ..silent.clone()
        };
        assert!(!fresh.is_stale(&o, now));
        let l = RepoLock::acquire_repository(&r, LockMode::Exclusive, "prune", &o, now)
            .await
            .unwrap();
        assert_eq!(r.store.list("locks/").await.unwrap().len(), 1);
        // Someone else's body under our key: release leaves it.
        let key = l.key().clone();
        put_bytes(&*r.store, &key, silent.body(), false)
            .await
            .unwrap();
        l.release().await.unwrap();
        assert!(r.store.head(&key).await.unwrap().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lock_is_refreshed() {
        let r = repo();
        let o = LockOptions {
            refresh_every: Duration::from_secs(30),
            ..LockOptions::default()
        };
        let t0: Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
        let l = RepoLock::acquire(&r, "main", "create", &o, t0)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(65)).await;
        let b = get_bytes(&*r.store, l.key(), None).await.unwrap();
        let owner: LockOwner = serde_json::from_slice(&b).unwrap();
        assert!(owner.refreshed.unwrap() > t0, "{owner:?}");
        assert!(!l.is_lost());
        l.release().await.unwrap();
        assert!(r.store.list("locks/").await.unwrap().is_empty());
    }
}
