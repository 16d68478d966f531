//! [`Backups`] against a real PostgreSQL: opened from `tej.toml`, it takes backups in the
//! configured format and compression, lists, selects, verifies, restores and prunes them;
//! a cancelled operation stores no backup, returns the cancellation and releases its locks.

mod logical_support;

use anyhow::{Context, Result, ensure};
use logical_support::*;
use std::sync::Arc;
use tej_backup::{
    BackupError, BackupSelector, Backups, CancellationToken, CompressionAlgo, DumpFormat, db_target,
};
use tej_core::Config;

fn config(pg: &tej_testkit::PgCluster, repo: &std::path::Path, backup: &str) -> Result<Config> {
    let toml = format!(
        "[[database]]\nname = \"main\"\nurl = \"{}\"\n[backup]\nrepositories = [\"{}\"]\n{backup}",
        pg.url("src"),
        repo.display()
    );
    Config::from_toml_with_env(&toml, "tej.toml", &|_| None).context("parse tej.toml")
}

fn is_cancelled(e: &BackupError) -> bool {
    matches!(e, BackupError::Cancelled { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opened_from_the_configuration_it_creates_lists_verifies_restores_and_prunes() -> Result<()>
{
    let pg = cluster_with_source()?;
    pg.create_database("copy")?;
    let dir = tempfile::tempdir()?;
    let cfg = config(
        &pg,
        &dir.path().join("repo"),
        "format = \"plain\"\ncompression = \"gzip\"\ncompression_level = 2\n",
    )?;
    let backups = Backups::open(&cfg).await?;
    let cancel = CancellationToken::new();
    let created = backups
        .create_logical(db_target(&cfg.databases[0])?, &cancel)
        .await?;
    ensure!(created.succeeded(), "{:?}", created.repositories);
    ensure!(created.format == Some(DumpFormat::Plain), "{created:?}");
    ensure!(
        created.compression.algorithm == CompressionAlgo::Gzip && created.compression.level == 2,
        "{created:?}"
    );

    let listed = backups.list().await?;
    ensure!(
        listed.len() == 1 && listed[0].id == created.id,
        "{listed:?}"
    );
    ensure!(listed[0].compression == "gzip-2", "{listed:?}");
    let newest = backups
        .newest_usable(&BackupSelector::latest_logical("src"))
        .await?
        .context("a usable logical backup of src")?;
    ensure!(newest.id == created.id);
    ensure!(
        backups
            .newest_usable(&BackupSelector::latest_logical("otherdb"))
            .await?
            .is_none()
    );
    ensure!(
        backups
            .newest_usable(&BackupSelector::latest_physical())
            .await?
            .is_none()
    );

    let verified = backups
        .verify(&BackupSelector::latest_logical("src"), &cancel)
        .await?;
    ensure!(verified.id == created.id.to_string());
    let listed = backups.list().await?;
    ensure!(
        listed[0].verification.as_ref().is_some_and(|v| v.ok),
        "the verification is recorded: {listed:?}"
    );
    // An id of another series is refused, not restored.
    let wrong = BackupSelector::id_in(created.id.clone(), &tej_backup::Series::logical("otherdb"));
    let e = backups
        .verify(&wrong, &cancel)
        .await
        .expect_err("a backup of src is not one of otherdb");
    ensure!(matches!(e, BackupError::WrongSeries { .. }), "{e}");

    let restored = backups
        .restore(
            &BackupSelector::by_id(created.id.clone()),
            tej_backup::DbTarget::new(pg.url("copy")),
            &cancel,
        )
        .await?;
    ensure!(restored.format == DumpFormat::Plain);
    assert_same_as_source(&pg, "copy")?;

    let mut dry = backups.settings().prune();
    dry.dry_run = true;
    let pruned = backups.prune_with(&dry, &cancel).await?;
    ensure!(
        pruned.len() == 1 && pruned[0].deleted.is_empty(),
        "{pruned:?}"
    );
    let pruned = backups.prune(&cancel).await?;
    ensure!(
        pruned[0].deleted.is_empty(),
        "the only backup is kept: {pruned:?}"
    );
    ensure!(backups.list().await?.len() == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_create_stores_no_backup_and_releases_its_lock() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let cfg = config(&pg, &dir.path().join("repo"), "")?;
    let backups = Backups::open(&cfg).await?;
    let db = db_target(&cfg.databases[0])?;

    // Cancelled before it starts.
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let e = backups
        .create_logical(db.clone(), &cancelled)
        .await
        .expect_err("cancelled");
    ensure!(is_cancelled(&e), "{e}");

    // Cancelled while the dump streams: at its first progress event, before the manifest.
    let token = CancellationToken::new();
    let mut opts = backups.settings().logical(db.clone());
    let t = token.clone();
    opts.run.progress = Some(Arc::new(move |_| t.cancel()));
    let e = backups
        .create_logical_with(&opts, &token)
        .await
        .expect_err("cancelled mid-run");
    ensure!(is_cancelled(&e), "{e}");
    ensure!(e.to_string().ends_with("cancelled"), "{e}");
    ensure!(
        backups.list().await?.is_empty(),
        "a cancelled run is never listed"
    );
    // It is marked as a failed run (the record is written despite the cancellation).
    let inv = backups.primary().inventory().await?;
    ensure!(
        inv.incomplete.len() == 1 && inv.incomplete[0].failure.is_some(),
        "{inv:?}"
    );

    let e = backups
        .verify(&BackupSelector::latest(), &cancelled)
        .await
        .expect_err("cancelled");
    ensure!(is_cancelled(&e), "{e}");
    let e = backups.prune(&cancelled).await.expect_err("cancelled");
    ensure!(is_cancelled(&e), "{e}");

    // The cancelled run released the target's lock: the next create runs.
    let fresh = CancellationToken::new();
    let created = backups.create_logical(db, &fresh).await?;
    ensure!(created.succeeded(), "{:?}", created.repositories);
    let listed = backups.list().await?;
    ensure!(
        listed.len() == 1 && listed[0].id == created.id,
        "{listed:?}"
    );
    // ... and cleans what the cancelled run left behind.
    let inv = backups.primary().inventory().await?;
    ensure!(
        inv.incomplete.iter().all(|r| r.objects == 0),
        "leftovers of the cancelled run: {inv:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_builder_without_repository_or_with_bad_settings_is_refused() -> Result<()> {
    let e = Backups::builder().build().await.expect_err("no repository");
    ensure!(e.to_string().contains("no backup repository"), "{e}");
    let c = Config::from_toml_with_env(
        "[backup]\nrepositories = [\"ftp://host/x\"]\n",
        "tej.toml",
        &|_| None,
    );
    // tej.toml refuses it at load time; a table built in code is refused by the settings.
    if let Ok(c) = c {
        let e = Backups::open(&c)
            .await
            .expect_err("ftp is not a repository");
        ensure!(e.to_string().contains("repositories"), "{e}");
    }
    let bad = tej_core::config::BackupConfig {
        repositories: vec!["ftp://host/x".into()],
        ..Default::default()
    };
    let e = tej_backup::BackupSettings::from_backup_config(&bad).expect_err("ftp");
    ensure!(e.to_string().contains("[backup] repositories"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_verify_records_nothing_and_a_cancelled_restore_leaves_the_target_untouched()
-> Result<()> {
    let pg = cluster_with_source()?;
    // About 25 MiB stored (no compression): far more than the pipeline's bounded buffers
    // hold, so a cancellation at the first progress event finds most of it still unread.
    pg.psql(
        "src",
        "CREATE TABLE big (id int PRIMARY KEY, v text);
         INSERT INTO big SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 40000) g;",
    )?;
    pg.create_database("copy")?;
    pg.psql(
        "copy",
        "CREATE TABLE marker (x int); INSERT INTO marker VALUES (7);",
    )?;
    let dir = tempfile::tempdir()?;
    let cfg = config(&pg, &dir.path().join("repo"), "compression = \"none\"\n")?;
    let backups = Backups::open(&cfg).await?;
    let created = backups
        .create_logical(db_target(&cfg.databases[0])?, &CancellationToken::new())
        .await?;
    let sel = BackupSelector::by_id(created.id.clone());

    // Cancelled while the object is read back: an error, and no failed verification
    // recorded (a cancelled check says nothing about the backup).
    let token = CancellationToken::new();
    let mut vopts = backups.settings().verify();
    let t = token.clone();
    vopts.progress = Some(Arc::new(move |_| t.cancel()));
    let e = backups
        .verify_with(&sel, &vopts, &token)
        .await
        .expect_err("cancelled");
    ensure!(is_cancelled(&e), "{e}");
    let listed = backups.list().await?;
    ensure!(listed[0].verification.is_none(), "{listed:?}");
    ensure!(
        backups
            .newest_usable(&BackupSelector::latest())
            .await?
            .is_some()
    );

    // Cancelled while the dump is decoded: the target database is as it was.
    let token = CancellationToken::new();
    let mut ropts = backups
        .settings()
        .restore(tej_backup::DbTarget::new(pg.url("copy")));
    let t = token.clone();
    ropts.progress = Some(Arc::new(move |_| t.cancel()));
    let e = backups
        .restore_with(&sel, &ropts, &token)
        .await
        .expect_err("cancelled");
    ensure!(is_cancelled(&e), "{e}");
    ensure!(pg.psql("copy", "SELECT x FROM marker")? == "7");
    ensure!(
        pg.psql(
            "copy",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'users'"
        )? == "0",
        "nothing of the dump reached the target"
    );

    // Not cancelled, both go through, and the verification is recorded.
    let cancel = CancellationToken::new();
    backups.verify(&sel, &cancel).await?;
    ensure!(
        backups.list().await?[0]
            .verification
            .as_ref()
            .is_some_and(|v| v.ok)
    );
    backups
        .restore(&sel, tej_backup::DbTarget::new(pg.url("copy")), &cancel)
        .await?;
    ensure!(
        pg.psql("copy", "SELECT count(*) FROM users")? == "1500",
        "restored"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_base_backup_is_not_listed_and_the_next_one_runs() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let cfg = config(&pg, &dir.path().join("repo"), "")?;
    let backups = Backups::open(&cfg).await?;
    let server = tej_backup::DbTarget::new(pg.url("postgres"));
    // The cluster does not archive WAL: the copy is under test, not the archive.
    let mut opts = backups.settings().physical(server.clone());
    opts.archive_check = tej_backup::ArchiveCheck::Off;
    opts.jobs = 1;
    let token = CancellationToken::new();
    let t = token.clone();
    opts.run.progress = Some(Arc::new(move |_| t.cancel()));
    let e = backups
        .create_physical_with(&opts, &token)
        .await
        .expect_err("cancelled mid-copy");
    ensure!(is_cancelled(&e), "{e}");
    ensure!(backups.list().await?.is_empty(), "never listed");

    // The server is not left in backup mode and the locks are free: the next one runs.
    opts.run.progress = None;
    let fresh = CancellationToken::new();
    let r = backups.create_physical_with(&opts, &fresh).await?;
    ensure!(r.backup.succeeded(), "{:?}", r.backup.repositories);
    let listed = backups.list().await?;
    ensure!(
        listed.len() == 1 && listed[0].kind == tej_backup::BackupKind::Physical,
        "{listed:?}"
    );
    backups
        .verify(&BackupSelector::latest_physical(), &fresh)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_archive_pushes_and_fetches_with_the_configured_keys() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n")?;
    let cfg = config(
        &pg,
        &dir.path().join("repo"),
        &format!(
            "encryption = {{ passphrase = {{ file = \"{}\" }} }}\n",
            pass.display()
        ),
    )?;
    let mut settings = tej_backup::BackupSettings::from_config(&cfg)?;
    ensure!(settings.encryption.encrypts());
    // A light scrypt work factor: the test is about which keys are used, not their cost.
    settings.encryption.scrypt_work_factor = Some(10);
    let backups = Backups::builder().settings(settings).build().await?;

    // A completed segment of the running server, copied before it can be recycled.
    pg.psql(
        "src",
        "INSERT INTO skills (name) SELECT 'wal-' || g FROM generate_series(1, 500) g;",
    )?;
    let name = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
    let segment = dir.path().join(&name);
    std::fs::copy(pg.data_dir().join("pg_wal").join(&name), &segment)?;
    let system_identifier = tej_backup::system_identifier_from_pgdata(pg.data_dir())?;

    let wal = backups.wal();
    let pushed = wal
        .push(
            &segment,
            &tej_backup::PushOptions {
                system_identifier: Some(system_identifier),
                ..tej_backup::PushOptions::default()
            },
        )
        .await?;
    ensure!(
        pushed.status == tej_backup::PushStatus::Archived,
        "{pushed:?}"
    );
    let fetched = dir.path().join("fetched");
    ensure!(wal.fetch(&name, &fetched).await? == tej_backup::FetchOutcome::Fetched);
    ensure!(std::fs::read(&fetched)? == std::fs::read(&segment)?);

    // Stored encrypted: the same archive without the keys cannot read it.
    let keyless = tej_backup::WalArchive::new(backups.primary().clone());
    let r = keyless.fetch(&name, &dir.path().join("keyless")).await;
    ensure!(matches!(r, Err(BackupError::Decrypt { .. })), "{r:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wal_archive_stores_nothing_and_never_answers_not_archived() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let cfg = config(&pg, &dir.path().join("repo"), "")?;
    let backups = Backups::open(&cfg).await?;
    let name = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
    let segment = dir.path().join(&name);
    std::fs::copy(pg.data_dir().join("pg_wal").join(&name), &segment)?;
    let opts = tej_backup::PushOptions {
        system_identifier: Some(tej_backup::system_identifier_from_pgdata(pg.data_dir())?),
        ..tej_backup::PushOptions::default()
    };

    let cancel = CancellationToken::new();
    cancel.cancel();
    let cancelled = backups.wal_cancellable(&cancel);
    let r = cancelled.push(&segment, &opts).await;
    ensure!(matches!(&r, Err(e) if is_cancelled(e)), "{r:?}");
    ensure!(
        backups.wal().list().await?.is_empty(),
        "a cancelled push listed a segment"
    );
    // restore_command must not read a cancellation as "this segment was never archived":
    // recovery would stop there and promote the server early.
    let r = cancelled.fetch(&name, &dir.path().join("fetched")).await;
    ensure!(matches!(&r, Err(e) if is_cancelled(e)), "{r:?}");

    let live = backups.wal_cancellable(&CancellationToken::new());
    let pushed = live.push(&segment, &opts).await?;
    ensure!(
        pushed.status == tej_backup::PushStatus::Archived,
        "{pushed:?}"
    );
    ensure!(
        live.fetch(&name, &dir.path().join("fetched")).await? == tej_backup::FetchOutcome::Fetched
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_backup_restores_through_the_front_door_and_a_database_backup_is_refused()
-> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("uploads");
    std::fs::create_dir_all(src.join("avatars"))?;
    std::fs::write(src.join("avatars/a.png"), b"\x89PNG not really")?;
    std::fs::write(src.join("notes.txt"), "kept\n")?;
    let cfg = config(
        &pg,
        &dir.path().join("repo"),
        &format!("files = [\"{}\"]\n", src.display()),
    )?;
    let backups = Backups::open(&cfg).await?;
    let cancel = CancellationToken::new();
    backups.create_files(&cancel).await.context("file backup")?;

    let out = dir.path().join("restored");
    let report = backups
        .restore_files(&BackupSelector::latest(), &out, &cancel)
        .await?;
    ensure!(report.repository.contains("repo"), "{report:?}");
    let restored = walk(&out)?;
    ensure!(
        restored
            .iter()
            .any(|(p, b)| p.ends_with("avatars/a.png") && b == b"\x89PNG not really")
            && restored
                .iter()
                .any(|(p, b)| p.ends_with("notes.txt") && b == b"kept\n"),
        "{restored:?}"
    );

    // A non-empty target is refused without overwrite, and nothing in it changes.
    std::fs::write(out.join("local.txt"), "mine")?;
    let r = backups
        .restore_files(&BackupSelector::latest(), &out, &cancel)
        .await;
    ensure!(matches!(r, Err(BackupError::Refused(_))), "{r:?}");
    ensure!(std::fs::read_to_string(out.join("local.txt"))? == "mine");

    // A selector that picks a database backup is not extracted as files.
    let db = db_target(&cfg.databases[0])?;
    backups.create_logical(db, &cancel).await?;
    let r = backups
        .restore_files(
            &BackupSelector::latest_logical("src"),
            &dir.path().join("other"),
            &cancel,
        )
        .await;
    ensure!(
        matches!(r, Err(BackupError::InvalidOptions(ref m)) if m.contains("not a file backup")),
        "{r:?}"
    );
    ensure!(!dir.path().join("other").exists());
    Ok(())
}

fn walk(root: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p)?));
            }
        }
    }
    Ok(out)
}
