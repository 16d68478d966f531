//! The lock protocol on a local repository (flock and lock objects) and on S3 (moto; lock
//! objects only): verify and restore hold the repository lock shared, prune exclusively, so prune
//! never deletes what a restore reads and verify never reads while prune deletes; create
//! takes its target's lock and runs beside prune.

mod logical_support;

use anyhow::{Context, Result, ensure};
use logical_support::{cluster_with_source, db, run_opts};
use std::sync::Arc;
use std::time::Duration;
use tej_backup::{
    BackupError, LockMode, LockOptions, LogicalBackupOptions, PruneOptions, RepoLock, Repository,
    RestoreOptions, VerifyOptions, create_logical_backup, list_backups, prune, restore_backup,
    verify_backup,
};
use tej_backup::{S3Location, S3Options, S3Store};
use tej_core::{Secret, SystemClock, TokioCommandRunner};
use tej_testkit::MotoServer;

async fn moto_repo(moto: &MotoServer) -> Result<Repository> {
    let bucket = moto.unique_bucket("tej-locks")?;
    let opts = S3Options {
        endpoint: Some(moto.endpoint()),
        region: Some("us-east-1".into()),
        force_path_style: true,
        access_key: Some("tejtest".into()),
        secret_key: Some(Secret::new("tejtestsecret")),
        max_attempts: 3,
        retry_initial_delay: Duration::from_millis(10),
        ..S3Options::default()
    };
    let store = S3Store::connect(S3Location::new(&bucket, "site")?, opts).await?;
    Ok(Repository::from_store(Arc::new(store)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_prune_exclude_each_other_and_create_runs_beside_prune() -> Result<()> {
    let pg = cluster_with_source()?;
    pg.create_database("scratch")?;
    let moto = MotoServer::start()?;
    let dir = tempfile::tempdir()?;
    let local = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let remote = moto_repo(&moto).await?;
    for repo in [&local, &remote] {
        let mut opts = LogicalBackupOptions::new(db(&pg, "src"));
        opts.run = run_opts("src");
        let made = create_logical_backup(
            &TokioCommandRunner,
            std::slice::from_ref(repo),
            &opts,
            &SystemClock,
        )
        .await?;
        let id = made.id.to_string();

        // A restore is reading: prune is refused, naming it; another reader is welcome.
        let reading = RepoLock::reading(repo, "restore", jiff::Timestamp::now()).await?;
        let e = prune(repo, &PruneOptions::default(), &SystemClock)
            .await
            .unwrap_err();
        ensure!(matches!(e, BackupError::Busy { .. }), "{e}");
        ensure!(e.to_string().contains("restore"), "{e}");
        verify_backup(
            &TokioCommandRunner,
            repo,
            &id,
            &VerifyOptions::default(),
            &SystemClock,
        )
        .await?;
        reading.release().await?;

        // Prune holds it exclusively: verify and restore wait their turn.
        let pruning = RepoLock::acquire_repository(
            repo,
            LockMode::Exclusive,
            "prune",
            &LockOptions::default(),
            jiff::Timestamp::now(),
        )
        .await?;
        let e = verify_backup(
            &TokioCommandRunner,
            repo,
            &id,
            &VerifyOptions::default(),
            &SystemClock,
        )
        .await
        .unwrap_err();
        ensure!(e.to_string().contains("prune"), "{e}");
        let e = restore_backup(
            &TokioCommandRunner,
            repo,
            &id,
            &RestoreOptions::new(db(&pg, "scratch")),
        )
        .await
        .unwrap_err();
        ensure!(matches!(e, BackupError::Busy { .. }), "{e}");
        // A create of the target runs meanwhile: it only adds.
        let next = create_logical_backup(
            &TokioCommandRunner,
            std::slice::from_ref(repo),
            &opts,
            &SystemClock,
        )
        .await?;
        pruning.release().await?;

        // Free again: everything runs, and no lock object is left behind.
        restore_backup(
            &TokioCommandRunner,
            repo,
            next.id.as_str(),
            &RestoreOptions::new(db(&pg, "scratch")),
        )
        .await?;
        prune(repo, &PruneOptions::default(), &SystemClock).await?;
        ensure!(list_backups(repo).await?.len() == 2);
        let left: Vec<String> = repo
            .store
            .list("locks/")
            .await?
            .into_iter()
            .map(|m| m.key.to_string())
            .filter(|k| k.ends_with(".lock"))
            .collect();
        ensure!(left.is_empty(), "{left:?}");
    }
    Ok(())
}
