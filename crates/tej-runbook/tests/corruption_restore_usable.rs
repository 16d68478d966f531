//! The corruption procedure built from the configuration restores the newest *usable* dump
//! of the database: a newer backup whose verification failed is passed over, against a
//! real PostgreSQL.

use jiff::SignedDuration;
use std::sync::Arc;
use tej_backup::{BackupSelector, Backups, CancellationToken};
use tej_core::{Calendar, Config, Environment, Executor, FakeClock, Fixed, Guard};
use tej_runbook::procedures::emergency::{CorruptionOptions, db_corruption_from_context};
use tej_runbook::{RunContext, RunOptions};
use tej_testkit::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_restore_passes_over_a_newer_backup_that_failed_verification() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("shop").unwrap();
    pg.psql(
        "shop",
        "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);
         INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 200) g;
         CREATE EXTENSION amcheck;",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    let toml = format!(
        "environment = \"staging\"\n[[database]]\nname = \"main\"\nurl = \"{url}\"\n\
         [backup]\nrepositories = [\"{}\"]\n",
        repo_dir.display()
    );
    let config = Config::from_toml_with_env(&toml, "tej.toml", &|_| None).unwrap();

    // Two backups an hour apart: the good one of 200 rows, then one of 300 rows whose
    // object is damaged afterwards, so that its verification fails and is recorded.
    let clock = Arc::new(FakeClock::new("2026-01-10T02:00:00Z".parse().unwrap()));
    let backups = Backups::builder()
        .settings(tej_backup::BackupSettings::from_config(&config).unwrap())
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let db = tej_backup::db_target(&config.databases[0]).unwrap();
    let good = backups.create_logical(db.clone(), &cancel).await.unwrap();
    pg.psql(
        "shop",
        "INSERT INTO users SELECT g, 'u' || g FROM generate_series(201, 300) g;",
    )
    .unwrap();
    clock.advance(SignedDuration::from_hours(1));
    let bad = backups.create_logical(db, &cancel).await.unwrap();
    let object = repo_dir
        .join("backups")
        .join(bad.id.to_string())
        .join(&bad.objects[0]);
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();
    backups
        .verify(&BackupSelector::by_id(bad.id.clone()), &cancel)
        .await
        .expect_err("the damaged backup fails verification");
    let newest = backups
        .newest_usable(&BackupSelector::latest_logical("shop"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(newest.id, good.id);

    // The damage.
    pg.psql("shop", "DELETE FROM users").unwrap();

    let ctx = RunContext::from_config(&config, RunOptions::default()).unwrap();
    let p = db_corruption_from_context(
        &ctx,
        Arc::new(tej_core::TokioCommandRunner),
        &CorruptionOptions {
            jobs: 1,
            restore_anyway: true,
            ..CorruptionOptions::default()
        },
    )
    .await
    .unwrap();
    let guard = Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(tej_core::SystemClock),
        confirmer: Arc::new(Fixed(true)),
        override_window: true,
    };
    let r = Executor::new(guard).run(&p).await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM users").unwrap(),
        "200"
    );
}
