//! Corruption, storage faults, locks and crashes, against a real PostgreSQL.

mod logical_support;

use anyhow::{Context, Result, bail, ensure};
use logical_support::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tej_backup::{
    BackupError, CompressionAlgo, CreateReport, EncryptionOptions, LockOptions,
    LogicalBackupOptions, RepoLock, Repository, VerifyOptions, create_logical_backup, list_backups,
    verify_backup,
};
use tej_backup::{
    Fault, FaultyStore, LocalStore, ObjectKey, ObjectStore, Op, PutCut, RetryingStore, get_bytes,
    put_bytes,
};
use tej_core::{Backoff, SecretRef, SystemClock, TokioCommandRunner};
use tej_testkit::{PgCluster, S3Server};

async fn backup(
    pg: &PgCluster,
    repos: &[Repository],
    enc: &EncryptionOptions,
) -> Result<CreateReport, BackupError> {
    let mut opts = LogicalBackupOptions::new(db(pg, "src"));
    opts.run = run_opts("src");
    opts.run.encryption = enc.clone();
    create_logical_backup(&TokioCommandRunner, repos, &opts, &SystemClock).await
}

async fn verify(repo: &Repository, id: &str, enc: &EncryptionOptions) -> Result<(), BackupError> {
    let vo = VerifyOptions {
        encryption: enc.clone(),
        ..VerifyOptions::default()
    };
    verify_backup(&TokioCommandRunner, repo, id, &vo, &SystemClock)
        .await
        .map(|_| ())
}

fn expect_corrupt(r: Result<(), BackupError>, object: &str, what: &str) -> Result<()> {
    match r {
        Err(BackupError::Corrupt {
            object: o, reason, ..
        }) if o == object => {
            eprintln!("{what}: detected: {reason}");
            Ok(())
        }
        other => bail!("{what}: expected corruption of {object}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_is_detected_and_the_object_named() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let keys = age_keys(dir.path())?;
    let repo = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let store = repo.store.clone();
    for enc in [EncryptionOptions::default(), keys.clone()] {
        // A flipped byte, in the middle and in the last byte.
        for at_end in [false, true] {
            let r = backup(&pg, std::slice::from_ref(&repo), &enc).await?;
            let key = ObjectKey::new(format!("backups/{}/{}", r.id, r.objects[0]))?;
            verify(&repo, r.id.as_str(), &enc).await?;
            let mut bytes = get_bytes(&*store, &key, None).await?;
            let i = if at_end {
                bytes.len() - 1
            } else {
                bytes.len() / 2
            };
            bytes[i] ^= 0x01;
            put_bytes(&*store, &key, bytes, false).await?;
            expect_corrupt(
                verify(&repo, r.id.as_str(), &enc).await,
                key.as_str(),
                "flipped byte",
            )?;
        }
        // Truncated.
        let r = backup(&pg, std::slice::from_ref(&repo), &enc).await?;
        let key = ObjectKey::new(format!("backups/{}/{}", r.id, r.objects[0]))?;
        let bytes = get_bytes(&*store, &key, None).await?;
        put_bytes(&*store, &key, bytes[..bytes.len() - 100].to_vec(), false).await?;
        expect_corrupt(
            verify(&repo, r.id.as_str(), &enc).await,
            key.as_str(),
            "truncated",
        )?;
        // Deleted.
        let r = backup(&pg, std::slice::from_ref(&repo), &enc).await?;
        let key = ObjectKey::new(format!("backups/{}/{}", r.id, r.objects[0]))?;
        store.delete(&key).await?;
        expect_corrupt(
            verify(&repo, r.id.as_str(), &enc).await,
            key.as_str(),
            "deleted",
        )?;
    }
    // A missing manifest: not listed, and verify names the manifest.
    let r = backup(
        &pg,
        std::slice::from_ref(&repo),
        &EncryptionOptions::default(),
    )
    .await?;
    let before = list_backups(&repo).await?.len();
    let manifest = ObjectKey::new(format!("backups/{}/manifest.json", r.id))?;
    store.delete(&manifest).await?;
    ensure!(
        list_backups(&repo).await?.len() == before - 1,
        "a backup without manifest is not listed"
    );
    expect_corrupt(
        verify(&repo, r.id.as_str(), &EncryptionOptions::default()).await,
        manifest.as_str(),
        "missing manifest",
    )?;
    // A wrong key, and no key at all.
    let r = backup(&pg, std::slice::from_ref(&repo), &keys).await?;
    let other = tempfile::tempdir()?;
    let wrong = EncryptionOptions {
        recipients: vec![],
        ..age_keys(other.path())?
    };
    let e = verify(&repo, r.id.as_str(), &wrong).await.unwrap_err();
    ensure!(
        matches!(&e, BackupError::Decrypt { object, .. } if object.contains(r.id.as_str())),
        "{e}"
    );
    let e = verify(&repo, r.id.as_str(), &EncryptionOptions::default())
        .await
        .unwrap_err();
    ensure!(matches!(e, BackupError::Decrypt { .. }), "{e}");
    // A wrong passphrase for a passphrase-encrypted backup.
    let pfile = dir.path().join("pass");
    std::fs::write(&pfile, "right passphrase")?;
    let penc = EncryptionOptions {
        passphrase: Some(SecretRef::File {
            file: pfile.clone(),
        }),
        scrypt_work_factor: Some(12),
        ..EncryptionOptions::default()
    };
    let r = backup(&pg, std::slice::from_ref(&repo), &penc).await?;
    verify(&repo, r.id.as_str(), &penc).await?;
    std::fs::write(&pfile, "wrong passphrase")?;
    let e = verify(&repo, r.id.as_str(), &penc).await.unwrap_err();
    ensure!(matches!(e, BackupError::Decrypt { .. }), "{e}");
    ensure!(!e.to_string().contains("passphrase\""), "{e}");
    Ok(())
}

fn faulty(dir: &std::path::Path) -> Result<FaultyStore<LocalStore>> {
    Ok(FaultyStore::new(LocalStore::create(dir)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_are_retried_or_fail_clearly_and_nothing_partial_is_listed() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let none = EncryptionOptions::default();
    let backoff = Backoff {
        max_attempts: 5,
        initial: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        factor: 2.0,
        jitter: false,
    };

    // The first calls fail with 503-like errors: retried, and the backup succeeds.
    let store = Arc::new(
        faulty(&dir.path().join("flaky"))?
            .fail_first(Op::Put, 3, Fault::Unavailable)
            .fail_first(Op::List, 2, Fault::Unavailable)
            .fail_first(Op::Head, 2, Fault::Unavailable),
    );
    let repo = Repository::from_store(Arc::new(RetryingStore::new(store.clone(), backoff)));
    let r = backup(&pg, std::slice::from_ref(&repo), &none).await?;
    ensure!(
        store.injected() >= 7,
        "faults were injected: {}",
        store.injected()
    );
    verify(&repo, r.id.as_str(), &none).await?;
    ensure!(list_backups(&repo).await?.len() == 1);

    // Permanent failure of the data upload: a clear error, nothing listed, no lock left.
    let broken =
        Arc::new(faulty(&dir.path().join("broken"))?.cut_puts(100, PutCut::Error { after: 4096 }));
    let repo_b = Repository::from_store(broken.clone());
    let e = backup(&pg, std::slice::from_ref(&repo_b), &none)
        .await
        .unwrap_err();
    ensure!(
        matches!(e, BackupError::AllRepositoriesFailed { .. }),
        "{e}"
    );
    broken.heal();
    ensure!(
        list_backups(&repo_b).await?.is_empty(),
        "nothing listed after a failed run"
    );
    let inv = repo_b.inventory().await?;
    ensure!(
        inv.incomplete.len() == 1 && inv.incomplete[0].objects == 0,
        "{inv:?}"
    );
    ensure!(
        inv.incomplete[0].failure.is_some(),
        "the failure is recorded"
    );
    ensure!(
        broken.list("locks/").await?.is_empty(),
        "the lock was released"
    );

    // A store that silently truncates: caught by the size check, not listed.
    let trunc = Arc::new(
        faulty(&dir.path().join("trunc"))?.cut_puts(100, PutCut::Truncate { after: 4096 }),
    );
    let repo_t = Repository::from_store(trunc.clone());
    let e = backup(&pg, std::slice::from_ref(&repo_t), &none)
        .await
        .unwrap_err();
    ensure!(e.to_string().contains("expected"), "{e}");
    trunc.heal();
    ensure!(list_backups(&repo_t).await?.is_empty());

    // Two repositories, one failing for good: reported per repository.
    let good = Repository::open(dir.path().join("good").to_str().context("utf-8")?).await?;
    let bad = Repository::from_store(Arc::new(
        faulty(&dir.path().join("bad"))?.cut_puts(100, PutCut::Error { after: 4096 }),
    ));
    let r = backup(&pg, &[good.clone(), bad.clone()], &none).await?;
    ensure!(!r.succeeded());
    ensure!(
        r.repositories[0].ok && !r.repositories[1].ok,
        "{:?}",
        r.repositories
    );
    ensure!(r.repositories[1].error.is_some());
    ensure!(list_backups(&good).await?.len() == 1);
    ensure!(list_backups(&bad).await?.is_empty());

    // pg_dump failing (no such database): an error naming the command, nothing listed.
    let mut opts = LogicalBackupOptions::new(db(&pg, "no_such_db"));
    opts.run = run_opts("src");
    let e = create_logical_backup(
        &TokioCommandRunner,
        std::slice::from_ref(&good),
        &opts,
        &SystemClock,
    )
    .await
    .unwrap_err();
    ensure!(e.to_string().contains("no_such_db"), "{e}");
    ensure!(list_backups(&good).await?.len() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_is_refused_and_a_dead_owner_does_not_hold_the_lock() -> Result<()> {
    let pg = cluster_with_source()?;
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let none = EncryptionOptions::default();
    let local = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let remote = s3_repo(&s3, "locks").await?;
    for repo in [&local, &remote] {
        let held = RepoLock::acquire(
            repo,
            "src",
            "create",
            &LockOptions::default(),
            jiff::Timestamp::now(),
        )
        .await?;
        let e = backup(&pg, std::slice::from_ref(repo), &none)
            .await
            .unwrap_err();
        ensure!(matches!(e, BackupError::Locked { .. }), "{e}");
        ensure!(e.to_string().contains("already running"), "{e}");
        held.release().await?;
        backup(&pg, std::slice::from_ref(repo), &none).await?;
    }
    // A lock left by a process that no longer exists on this host is stale.
    let dead = serde_json::json!({
        "host": tej_backup::hostname(), "pid": 4_000_000u32,
        "since": jiff::Timestamp::now(), "purpose": "create"
    });
    put_bytes(
        &*remote.store,
        &ObjectKey::new("locks/src.lock")?,
        serde_json::to_vec(&dead)?,
        false,
    )
    .await?;
    backup(&pg, std::slice::from_ref(&remote), &none).await?;
    // A live lock from another host is honoured until it is older than stale_after.
    let other = serde_json::json!({
        "host": "elsewhere", "pid": 1u32, "since": jiff::Timestamp::now(), "purpose": "create"
    });
    put_bytes(
        &*remote.store,
        &ObjectKey::new("locks/src.lock")?,
        serde_json::to_vec(&other)?,
        false,
    )
    .await?;
    let e = backup(&pg, std::slice::from_ref(&remote), &none)
        .await
        .unwrap_err();
    ensure!(e.to_string().contains("elsewhere"), "{e}");
    let mut opts = LogicalBackupOptions::new(db(&pg, "src"));
    opts.run = run_opts("src");
    opts.run.lock.stale_after = Duration::ZERO;
    create_logical_backup(
        &TokioCommandRunner,
        std::slice::from_ref(&remote),
        &opts,
        &SystemClock,
    )
    .await?;
    ensure!(list_backups(&remote).await?.len() == 3);
    Ok(())
}

const CHILD_ENV: &str = "TEJ_BACKUP_TEST_KILL_CHILD";

/// The child role: a slow backup (progress events stall the producer) that gets killed.
async fn child_role(spec: &str) -> Result<()> {
    let (url, root) = spec.split_once('|').context("child spec")?;
    let repo = Repository::open(root).await?;
    let mut opts = LogicalBackupOptions::new(tej_backup::DbTarget::new(url));
    opts.run = run_opts("big");
    opts.run.compression.algorithm = CompressionAlgo::None;
    opts.run.progress = Some(Arc::new(|_e: &tej_backup::ProgressEvent| {
        std::thread::sleep(Duration::from_millis(300))
    }));
    create_logical_backup(&TokioCommandRunner, &[repo], &opts, &SystemClock).await?;
    bail!("the child finished instead of being killed")
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_upload_is_never_listed_and_the_next_run_cleans_up() -> Result<()> {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child_role(&spec).await;
    }
    let pg = PgCluster::start()?;
    pg.create_database("big")?;
    pg.psql("big", "CREATE TABLE t AS SELECT i, md5(i::text) || md5((i * 3)::text) AS a FROM generate_series(1, 400000) i")?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("repo");
    std::fs::create_dir_all(&root)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "a_run_killed_mid_upload_is_never_listed_and_the_next_run_cleans_up",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{}|{}", pg.url("big"), root.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if files_under(&root.join("backups"))
            .iter()
            .any(|p| !p.ends_with("failed.json"))
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the child ended ({status}) before uploading");
        }
        ensure!(
            Instant::now() < deadline,
            "the child never started uploading"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    let repo = Repository::open(root.to_str().context("utf-8")?).await?;
    ensure!(
        list_backups(&repo).await?.is_empty(),
        "a killed run is not a backup"
    );
    ensure!(
        files_under(&root.join("locks"))
            .iter()
            .any(|p| p.ends_with("big.lock")),
        "the dead run's lock is left"
    );
    // The next run takes over the dead run's lock, removes its leftovers, and succeeds.
    let mut opts = LogicalBackupOptions::new(db(&pg, "big"));
    opts.run = run_opts("big");
    let r = create_logical_backup(
        &TokioCommandRunner,
        std::slice::from_ref(&repo),
        &opts,
        &SystemClock,
    )
    .await?;
    ensure!(r.succeeded());
    let out = &r.repositories[0];
    ensure!(
        out.cleaned_temporary + out.cleaned_runs.len() as u64 >= 1,
        "leftovers cleaned: {out:?}"
    );
    let listed = list_backups(&repo).await?;
    ensure!(listed.len() == 1 && listed[0].id == r.id);
    let stray: Vec<_> = files_under(&root.join("backups"))
        .into_iter()
        .filter(|p| {
            !p.starts_with(root.join("backups").join(r.id.as_str())) && !p.ends_with("failed.json")
        })
        .collect();
    ensure!(stray.is_empty(), "leftovers remain: {stray:?}");
    verify(&repo, "latest", &EncryptionOptions::default()).await?;
    Ok(())
}
