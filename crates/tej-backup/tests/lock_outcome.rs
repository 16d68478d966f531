//! A repository lock held across verify, restore and prune never outlives the operation
//! and never hides its outcome: a failure right after the lock is taken (an unknown
//! backup) leaves no lock object behind, so a prune right after gets its exclusive lock at
//! once; when the operation fails and releasing the lock fails too, the caller sees the
//! operation's error.

use anyhow::{Context, Result, ensure};
use std::sync::Arc;
use tej_backup::{
    BackupError, DbTarget, Fault, FaultyStore, FileBackupOptions, FileRestoreOptions, LockMode,
    LockOptions, MemoryStore, ObjectStore, Op, PhysicalRestoreOptions, PruneOptions, RepoLock,
    Repository, RestoreOptions, RunOptions, VerifyOptions, create_file_backup, prune, put_bytes,
    restore_backup, restore_file_backup, restore_physical_backup, verify_backup,
};
use tej_core::{SystemClock, TokioCommandRunner};

/// The repository lock's holder objects left in `repo`.
async fn lock_objects(repo: &Repository) -> Result<Vec<String>> {
    Ok(repo
        .store
        .list("locks/repo/")
        .await?
        .into_iter()
        .map(|m| m.key.to_string())
        .filter(|k| k.ends_with(".lock"))
        .collect())
}

/// An unknown backup fails every reader; it must leave nothing behind, checked at once
/// (before the runtime gets a chance to run any cleanup task) and by a prune.
async fn unknown_backup_leaves_no_lock(repo: &Repository, scratch: &std::path::Path) -> Result<()> {
    let missing = "20200101T000000Z-0000";
    let e = verify_backup(
        &TokioCommandRunner,
        repo,
        missing,
        &VerifyOptions::default(),
        &SystemClock,
    )
    .await
    .unwrap_err();
    ensure!(matches!(e, BackupError::NotFound { .. }), "verify: {e}");
    let left = lock_objects(repo).await?;
    ensure!(left.is_empty(), "verify of an unknown backup left {left:?}");

    let e = restore_backup(
        &TokioCommandRunner,
        repo,
        missing,
        &RestoreOptions::new(DbTarget::new("postgres://nobody@127.0.0.1:1/none")),
    )
    .await
    .unwrap_err();
    ensure!(matches!(e, BackupError::NotFound { .. }), "restore: {e}");
    let left = lock_objects(repo).await?;
    ensure!(
        left.is_empty(),
        "restore of an unknown backup left {left:?}"
    );

    let e = restore_file_backup(
        repo,
        missing,
        &scratch.join("files"),
        &FileRestoreOptions::default(),
    )
    .await
    .unwrap_err();
    ensure!(
        matches!(e, BackupError::NotFound { .. }),
        "file restore: {e}"
    );
    let left = lock_objects(repo).await?;
    ensure!(
        left.is_empty(),
        "file restore of an unknown backup left {left:?}"
    );

    let e = restore_physical_backup(
        repo,
        missing,
        &scratch.join("pgdata"),
        &PhysicalRestoreOptions::default(),
    )
    .await
    .unwrap_err();
    ensure!(
        matches!(e, BackupError::NotFound { .. }),
        "physical restore: {e}"
    );
    let left = lock_objects(repo).await?;
    ensure!(
        left.is_empty(),
        "physical restore of an unknown backup left {left:?}"
    );

    // Prune takes the lock exclusively: nothing of the readers is in its way.
    prune(repo, &PruneOptions::default(), &SystemClock)
        .await
        .context("prune right after the failed readers")?;
    let left = lock_objects(repo).await?;
    ensure!(left.is_empty(), "prune left {left:?}");
    Ok(())
}

#[tokio::test]
async fn a_reader_failing_at_once_leaves_no_lock_behind_in_memory() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let repo = Repository::from_store(Arc::new(MemoryStore::new()));
    unknown_backup_leaves_no_lock(&repo, scratch.path()).await
}

#[tokio::test]
async fn a_reader_failing_at_once_leaves_no_lock_behind_on_disk() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().join("repo");
    let repo = Repository::open(root.to_str().context("utf-8")?).await?;
    unknown_backup_leaves_no_lock(&repo, scratch.path()).await
}

/// A file backup of a small tree in `repo`, with its one data object damaged.
async fn damaged_file_backup(
    repo: &Repository,
    inner: &MemoryStore,
    dir: &std::path::Path,
) -> Result<String> {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(
        tree.join("a.txt"),
        "some content worth keeping\n".repeat(100),
    )?;
    let mut opts = FileBackupOptions::new(vec![tree]);
    opts.run = RunOptions {
        target: Some("files".into()),
        ..RunOptions::default()
    };
    let made = create_file_backup(std::slice::from_ref(repo), &opts, &SystemClock).await?;
    let id = made.backup.id.to_string();
    let mut damaged = 0;
    for meta in inner.list(&format!("backups/{id}/")).await? {
        if meta.key.as_str().ends_with(".tar") || meta.key.as_str().contains(".tar.") {
            put_bytes(inner, &meta.key, b"not what was stored".to_vec(), false).await?;
            damaged += 1;
        }
    }
    ensure!(damaged == 1, "expected one data object in backups/{id}/");
    Ok(id)
}

#[tokio::test]
async fn a_failed_verify_reports_its_own_error_when_the_release_fails_too() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let repo = Repository::from_store(store.clone());
    let id = damaged_file_backup(&repo, store.inner(), dir.path()).await?;

    // Deleting fails from here on: the lock taken by verify cannot be released.
    store.start_failing(Op::Delete, Fault::Permanent);
    let e = verify_backup(
        &TokioCommandRunner,
        &repo,
        &id,
        &VerifyOptions::default(),
        &SystemClock,
    )
    .await
    .unwrap_err();
    ensure!(
        !e.to_string().contains("injected"),
        "the release failure hid the verify failure: {e}"
    );
    ensure!(
        e.to_string().contains(&id) || e.to_string().contains("files.tar"),
        "the error names the backup: {e}"
    );
    ensure!(store.calls(Op::Delete) >= 1, "the release was attempted");
    Ok(())
}

#[tokio::test]
async fn hold_returns_the_operation_error_first_and_the_release_error_after_success() -> Result<()>
{
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let repo = Repository::from_store(store.clone());
    let opts = LockOptions::default();
    let now = jiff::Timestamp::now();

    // Success: the value, and the lock is gone.
    let v = RepoLock::hold(&repo, LockMode::Shared, "verify", &opts, now, async {
        ensure_held(&repo).await?;
        Ok(7)
    })
    .await?;
    ensure!(v == 7);
    ensure!(lock_objects(&repo).await?.is_empty());

    // Failure: the operation's error, and the lock is gone.
    let e = RepoLock::hold(&repo, LockMode::Exclusive, "prune", &opts, now, async {
        ensure_held(&repo).await?;
        Err::<(), _>(BackupError::InvalidOptions("the operation failed".into()))
    })
    .await
    .unwrap_err();
    ensure!(e.to_string().contains("the operation failed"), "{e}");
    ensure!(lock_objects(&repo).await?.is_empty());

    // Failure, and the release fails too: still the operation's error.
    store.start_failing(Op::Delete, Fault::Permanent);
    let e = RepoLock::hold(&repo, LockMode::Shared, "restore", &opts, now, async {
        Err::<(), _>(BackupError::InvalidOptions("the operation failed".into()))
    })
    .await
    .unwrap_err();
    ensure!(e.to_string().contains("the operation failed"), "{e}");

    // Success, and the release fails: the release error.
    let e = RepoLock::hold(&repo, LockMode::Shared, "restore", &opts, now, async {
        Ok(())
    })
    .await
    .unwrap_err();
    ensure!(e.to_string().contains("injected"), "{e}");
    Ok(())
}

/// The operation runs while its lock object is in the repository.
async fn ensure_held(repo: &Repository) -> Result<(), BackupError> {
    let held = repo.store.list("locks/repo/").await?;
    if held.is_empty() {
        return Err(BackupError::InvalidOptions(
            "the operation ran without its lock".into(),
        ));
    }
    Ok(())
}
