//! The typed functions other crates call instead of writing SQL, against a real PostgreSQL 15:
//! archiver state, buffer cache counts, capacity history, advisory locks, the base-backup
//! session and the statements run through psql.

use jiff::Timestamp;
use tej_db::pg::base_backup::BaseBackupSession;
use tej_db::pg::{
    MeasurementRow, PgClient, PgConnectOptions, archiver_state, buffer_cache_counts,
    delete_measurements_before, insert_measurements, measurement_keys, measurement_series,
    migrate_history, psql,
};
use tej_testkit::{PgCluster, PgClusterOptions};

fn client(pg: &PgCluster, db: &str) -> PgClient {
    PgClient::new(&PgConnectOptions::new(pg.url(db))).expect("valid settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiver_and_cache_counters_are_read_typed() {
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some("/bin/true".into()),
        ..PgClusterOptions::default()
    })
    .unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    )
    .unwrap();
    let c = client(&pg, "postgres");
    let s = archiver_state(&c).await.unwrap();
    assert_eq!(s.archive_mode, "on");
    assert_eq!(s.segment_size, 16 << 20);
    assert!(s.current_wal.is_some(), "{s:?}");
    assert!(!s.failing);
    let counts = buffer_cache_counts(&c).await.unwrap().expect("numbers");
    assert!(counts.hits + counts.reads > 0.0, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_migrates_twice_inserts_in_batches_and_prunes() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", "CREATE DATABASE app").unwrap();
    let c = client(&pg, "app");
    migrate_history(&c, 42).await.unwrap();
    migrate_history(&c, 42).await.unwrap();
    let t0: Timestamp = "2026-01-01T00:00:00.123456Z".parse().unwrap();
    let rows: Vec<MeasurementRow> = (0..1_201)
        .map(|i| MeasurementRow {
            metric: "pg.size".into(),
            target: if i % 2 == 0 { "db:a" } else { "db:b" }.into(),
            at: t0 + jiff::SignedDuration::from_secs(i),
            value: i as f64,
            unit: "B".into(),
        })
        .collect();
    insert_measurements(&c, &rows).await.unwrap();
    let a = measurement_series(&c, "pg.size", "db:a", None)
        .await
        .unwrap();
    assert_eq!(a.len(), 601);
    assert_eq!(a[0], rows[0], "microseconds survive the round trip");
    let later = measurement_series(
        &c,
        "pg.size",
        "db:b",
        Some(t0 + jiff::SignedDuration::from_secs(1_000)),
    )
    .await
    .unwrap();
    assert_eq!(later.len(), 100);
    assert_eq!(
        measurement_keys(&c).await.unwrap(),
        [
            ("pg.size".to_string(), "db:a".to_string()),
            ("pg.size".to_string(), "db:b".to_string())
        ]
    );
    let gone = delete_measurements_before(&c, t0 + jiff::SignedDuration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(gone, 10);
    // Not finite: refused before anything is sent.
    let nan = MeasurementRow {
        value: f64::NAN,
        ..rows[0].clone()
    };
    assert!(insert_measurements(&c, &[nan]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_locks_are_exclusive_per_session() {
    let pg = PgCluster::start().unwrap();
    let c = client(&pg, "postgres");
    let one = c.session().await.unwrap();
    let two = c.session().await.unwrap();
    assert!(one.try_advisory_lock(7).await.unwrap());
    assert!(one.holds_advisory_lock(7).await.unwrap());
    assert!(!two.try_advisory_lock(7).await.unwrap());
    assert!(!two.holds_advisory_lock(7).await.unwrap());
    assert!(!two.advisory_unlock(7).await.unwrap(), "two never held it");
    assert!(one.advisory_unlock(7).await.unwrap());
    assert!(two.try_advisory_lock(7).await.unwrap());
    drop(two);
    // A closed session frees its locks.
    let mut free = false;
    for _ in 0..50 {
        if one.try_advisory_lock(7).await.unwrap() {
            free = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(free);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_backup_session_starts_and_stops_a_backup() {
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some("/bin/true".into()),
        ..PgClusterOptions::default()
    })
    .unwrap();
    let mut s = BaseBackupSession::connect(&pg.url("postgres"), None)
        .await
        .unwrap();
    let facts = s.server_facts().await.unwrap();
    assert!(facts.server_version_num >= 150000, "{facts:?}");
    assert_eq!(facts.wal_segment_size, 16 << 20);
    assert!(!facts.in_recovery);
    assert!(facts.system_identifier > 0);
    let switched = s.switch_wal().await.unwrap();
    assert_eq!(switched.len(), 24, "{switched}");
    let start = s.backup_start("tej test").await.unwrap();
    assert!(start.contains('/'), "{start}");
    let stop = s.backup_stop(false).await.unwrap();
    assert!(stop.lsn.contains('/'), "{stop:?}");
    assert!(stop.backup_label.contains("LABEL: tej test"), "{stop:?}");
    let a = s.archiver_status().await.unwrap();
    assert_eq!(a.archive_mode, "on");
    // Stopping twice is the server's error, typed.
    let e = s.backup_stop(false).await.unwrap_err();
    assert_eq!(e.sqlstate(), Some("55000"), "{e}");
}

#[test]
fn psql_statements_run_through_psql() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", &psql::create_database("odd\"name").unwrap())
        .unwrap();
    assert!(
        pg.psql("postgres", psql::SERVER_VERSION)
            .unwrap()
            .trim()
            .starts_with("15"),
    );
    let status = pg.psql("postgres", psql::RECOVERY_STATUS).unwrap();
    assert_eq!(status.trim().split('|').count(), 4, "{status}");
    pg.psql("postgres", &psql::drop_database_force("odd\"name").unwrap())
        .unwrap();
    let left = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'odd\"name'",
        )
        .unwrap();
    assert_eq!(left.trim(), "0");
}
