//! Round trips against a real PostgreSQL and a real S3-compatible server: every format ×
//! compression × encryption is backed up to a local and an S3 repository at once,
//! listed, verified, and restored into a fresh database whose dump must equal the source's.

mod logical_support;

use anyhow::{Context, Result, ensure};
use logical_support::*;
use std::sync::{Arc, Mutex};
use tej_backup::{
    BackupError, CompressionAlgo, CompressionOptions, DumpFormat, EncryptionOptions,
    LogicalBackupOptions, ProgressEvent, Repository, RestoreOptions, RestoreTestOptions,
    VerifyOptions, create_logical_backup, list_backups, restore_backup, verify_backup,
};
use tej_core::{SystemClock, TokioCommandRunner};
use tej_testkit::S3Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_compression_and_encryption_round_trips_via_local_and_s3() -> Result<()> {
    let pg = cluster_with_source()?;
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let keys = age_keys(dir.path())?;
    let local = Repository::open(dir.path().join("repo").to_str().context("utf-8")?).await?;
    let remote = s3_repo(&s3, "skillswap/db").await?;
    let repos = vec![local.clone(), remote.clone()];
    let runner = TokioCommandRunner;
    let mut n = 0;
    for format in [DumpFormat::Custom, DumpFormat::Directory, DumpFormat::Plain] {
        for algorithm in [
            CompressionAlgo::Zstd,
            CompressionAlgo::Gzip,
            CompressionAlgo::None,
        ] {
            for encrypted in [false, true] {
                n += 1;
                let case = format!(
                    "{format}/{algorithm}/{}",
                    if encrypted { "age" } else { "clear" }
                );
                let enc = if encrypted {
                    keys.clone()
                } else {
                    EncryptionOptions::default()
                };
                let mut opts = LogicalBackupOptions::new(db(&pg, "src"));
                opts.format = format;
                opts.jobs = 2;
                opts.run = run_opts("src");
                opts.run.compression = CompressionOptions {
                    algorithm,
                    level: None,
                    threads: 2,
                };
                opts.run.encryption = enc.clone();
                let report = create_logical_backup(&runner, &repos, &opts, &SystemClock)
                    .await
                    .with_context(|| format!("create {case}"))?;
                ensure!(report.succeeded(), "{case}: {:?}", report.repositories);
                ensure!(
                    report.repositories.len() == 2,
                    "{case}: one outcome per repository"
                );
                ensure!(
                    report.encrypted == encrypted && report.format == Some(format),
                    "{case}"
                );
                ensure!(
                    report.raw_size > 100_000,
                    "{case}: raw size {}",
                    report.raw_size
                );
                if format == DumpFormat::Directory {
                    ensure!(
                        report.objects.iter().any(|o| o.starts_with("dir/toc.dat")),
                        "{case}: {:?}",
                        report.objects
                    );
                }
                // Newest first, in both repositories.
                for repo in &repos {
                    let list = list_backups(repo).await?;
                    ensure!(
                        list.len() == n,
                        "{case}: {} listed in {}",
                        list.len(),
                        repo.name()
                    );
                    ensure!(list[0].id == report.id, "{case}: newest first");
                }
                let from = if n % 2 == 0 { &remote } else { &local };
                let vo = VerifyOptions {
                    encryption: enc.clone(),
                    record: true,
                    ..VerifyOptions::default()
                };
                let v = verify_backup(&runner, from, report.id.as_str(), &vo, &SystemClock)
                    .await
                    .with_context(|| format!("verify {case}"))?;
                ensure!(v.objects.len() == report.objects.len(), "{case}");
                let target = format!("restored_{n}");
                pg.create_database(&target)?;
                let mut ro = RestoreOptions::new(db(&pg, &target));
                ro.encryption = enc.clone();
                ro.jobs = if n % 3 == 0 { 2 } else { 1 };
                restore_backup(&runner, from, "latest", &ro)
                    .await
                    .with_context(|| format!("restore {case}"))?;
                assert_same_as_source(&pg, &target).with_context(|| case.clone())?;
            }
        }
    }
    // Verification is recorded beside each backup.
    let listed = list_backups(&local).await?;
    ensure!(
        listed
            .iter()
            .filter(|b| b.verification.as_ref().is_some_and(|v| v.ok))
            .count()
            == 9
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_gzip_is_readable_without_tej_and_restore_test_runs_sanity_queries() -> Result<()> {
    let pg = cluster_with_source()?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("repo");
    let repo = Repository::open(root.to_str().context("utf-8")?).await?;
    let runner = TokioCommandRunner;
    let mut opts = LogicalBackupOptions::new(db(&pg, "src"));
    opts.format = DumpFormat::Plain;
    opts.run = run_opts("skillswap");
    opts.run.compression.algorithm = CompressionAlgo::Gzip;
    let events: Arc<Mutex<Vec<ProgressEvent>>> = Arc::default();
    let sink = events.clone();
    opts.run.progress = Some(Arc::new(move |e: &ProgressEvent| {
        sink.lock().unwrap().push(e.clone())
    }));
    let report =
        create_logical_backup(&runner, std::slice::from_ref(&repo), &opts, &SystemClock).await?;
    let name = &report.objects[0];
    let expected = format!(
        "src_backup_{}.sql.gz",
        report.id.time().strftime("%Y%m%d_%H%M%S")
    );
    ensure!(name == &expected, "{name} != {expected}");
    {
        let ev = events.lock().unwrap();
        let last = ev.last().context("progress events")?;
        ensure!(last.done && last.raw_bytes == report.raw_size && last.operation == "create");
    }
    // The runbook's own restore: gunzip | psql, no tej involved.
    pg.create_database("by_hand")?;
    let file = root.join("backups").join(report.id.as_str()).join(name);
    let sh = format!(
        "gunzip -c '{}' | '{}' -X -q -v ON_ERROR_STOP=1 -d '{}'",
        file.display(),
        tej_testkit::PgCluster::bin_dir().join("psql").display(),
        pg.url("by_hand")
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &sh])
        .output()?;
    ensure!(
        out.status.success(),
        "gunzip | psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_as_source(&pg, "by_hand")?;

    let vo = VerifyOptions {
        record: true,
        restore_test: Some(RestoreTestOptions {
            server: db(&pg, "postgres"),
            queries: vec![
                "SELECT COUNT(*) FROM users".into(),
                "SELECT max(id) FROM messages".into(),
            ],
            jobs: 1,
        }),
        ..VerifyOptions::default()
    };
    let v = verify_backup(&runner, &repo, "latest", &vo, &SystemClock).await?;
    let t = v.restore_test.context("restore test ran")?;
    ensure!(t.queries[0].output == "1500", "{:?}", t.queries);
    ensure!(t.queries[1].output == "4000", "{:?}", t.queries);
    let dbs = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'tej_verify_%'",
    )?;
    ensure!(dbs == "0", "the scratch database was dropped");
    // A failing sanity query fails the verification and says which query.
    let bad = VerifyOptions {
        restore_test: Some(RestoreTestOptions {
            server: db(&pg, "postgres"),
            queries: vec!["SELECT COUNT(*) FROM no_such_table".into()],
            jobs: 1,
        }),
        ..vo
    };
    let e = verify_backup(&runner, &repo, "latest", &bad, &SystemClock)
        .await
        .unwrap_err();
    ensure!(matches!(e, BackupError::SanityCheck { .. }), "{e}");
    ensure!(e.to_string().contains("no_such_table"), "{e}");
    let latest = &list_backups(&repo).await?[0];
    ensure!(
        latest.verification.as_ref().is_some_and(|v| !v.ok),
        "the failed verification is recorded"
    );
    Ok(())
}
