//! Monthly procedures against real servers: the PostgreSQL history store behaves like the
//! JSON Lines one, and capacity planning records real sizes into it and draws the charts;
//! deep maintenance runs on a real database.

use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use tej_core::{Calendar, Environment, Executor, FakeClock, Fixed, Guard, Outcome, Severity};
use tej_db::pg::{PgAdmin, PgClient, PgConnectOptions};
use tej_runbook::procedures::context::{DatabaseTarget, Lazy, RedisTarget};
use tej_runbook::procedures::monthly::{
    CapacityPlanningOptions, CreateBackupStep, DeepMaintenanceOptions, VerifyLatestBackupStep,
    capacity_planning, deep_maintenance_with_backup,
};
use tej_runbook::{HistoryStore, JsonlHistoryStore, Measurement, PgHistoryStore, RunContext};
use tej_testkit::{PgCluster, RedisServer};

fn day(n: i64) -> Timestamp {
    Timestamp::from_second(1_735_689_600 + n * 86_400).unwrap()
}

fn admin(url: &str) -> Arc<dyn PgAdmin> {
    Arc::new(PgClient::new(&PgConnectOptions::new(url)).unwrap())
}

/// The same operations on both stores give the same answers.
async fn exercise(store: &dyn HistoryStore) -> Vec<String> {
    let mut log = Vec::new();
    log.push(format!("{:?}", store.series("x", "", None).await.unwrap()));
    let h: Vec<Measurement> = (0..40)
        .map(|i| Measurement {
            metric: "disk_used_bytes".into(),
            target: "/var".into(),
            at: day(i),
            value: 1e9 + i as f64 * 1.5e7,
            unit: "B".into(),
        })
        .collect();
    store.append(&h[20..]).await.unwrap();
    store.append(&h[..20]).await.unwrap();
    store
        .append(&[Measurement::new(
            "db_size_bytes",
            "db:app",
            day(3),
            123456.0,
        )])
        .await
        .unwrap();
    store.append(&[]).await.unwrap();
    let all = store.series("disk_used_bytes", "/var", None).await.unwrap();
    assert_eq!(all, h);
    log.push(format!("{all:?}"));
    log.push(format!(
        "{:?}",
        store
            .series("disk_used_bytes", "/var", Some(day(30)))
            .await
            .unwrap()
    ));
    log.push(format!("{:?}", store.series_keys().await.unwrap()));
    log.push(format!("{}", store.prune(day(10)).await.unwrap()));
    log.push(format!("{:?}", store.series_keys().await.unwrap()));
    assert!(
        store
            .append(&[Measurement::new("a", "", day(1), f64::INFINITY)])
            .await
            .is_err()
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_history_store_behaves_like_the_jsonl_store_and_survives_remigration() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("history").unwrap();
    let pg_store = PgHistoryStore::new(admin(&url));
    let dir = tempfile::tempdir().unwrap();
    let file_store = JsonlHistoryStore::new(dir.path().join("h.jsonl"));
    let a = exercise(&pg_store).await;
    let b = exercise(&file_store).await;
    assert_eq!(a, b);
    assert_eq!(a[4], "11");
    // The schema is where the issue says, and a second store (another host) migrates again
    // without harm and sees the same history.
    assert_eq!(
        pg.psql(
            "history",
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'tej' AND table_name = 'measurements'"
        )
        .unwrap(),
        "1"
    );
    let again = PgHistoryStore::new(admin(&url));
    again.migrate().await.unwrap();
    assert_eq!(
        again
            .series("disk_used_bytes", "/var", None)
            .await
            .unwrap()
            .len(),
        30
    );
    // Concurrent first use from two stores does not collide.
    pg.psql("history", "DROP SCHEMA tej CASCADE").unwrap();
    let (x, y) = (
        PgHistoryStore::new(admin(&url)),
        PgHistoryStore::new(admin(&url)),
    );
    let (r1, r2) = tokio::join!(x.migrate(), y.migrate());
    r1.unwrap();
    r2.unwrap();
    // Microsecond times survive the round trip.
    let t = Timestamp::from_microsecond(1_735_689_600_123_456).unwrap();
    x.append(&[Measurement::new("m", "t", t, 1.0)])
        .await
        .unwrap();
    assert_eq!(y.series("m", "t", None).await.unwrap()[0].at, t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_planning_records_real_sizes_forecasts_and_draws_charts() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE events (id bigserial PRIMARY KEY, body text);
         INSERT INTO events (body) SELECT repeat('x', 200) FROM generate_series(1, 5000);
         ANALYZE events;",
    )
    .unwrap();
    let redis = RedisServer::start().unwrap();
    let mut ctx = RunContext::empty(tej_core::Config::default());
    let db = admin(&url);
    ctx.databases.push(DatabaseTarget {
        name: "main".into(),
        admin: db.clone(),
    });
    let ropts = tej_db::redis::RedisConnectOptions::new(redis.url());
    let r2 = ropts.clone();
    ctx.redis.push(RedisTarget {
        name: "cache".into(),
        client: Lazy::new(move || {
            let o = r2.clone();
            async move {
                tej_db::redis::RedisClient::connect(&o)
                    .await
                    .map(|c| Arc::new(c) as Arc<dyn tej_db::redis::RedisAdmin>)
                    .map_err(tej_runbook::RunbookError::from)
            }
        }),
        connect: Some(ropts),
    });
    let store = PgHistoryStore::new(db.clone());
    let charts = tempfile::tempdir().unwrap();
    let opts = CapacityPlanningOptions {
        chart_dir: Some(charts.path().to_path_buf()),
        ..CapacityPlanningOptions::default()
    };
    // Three monthly runs, the table growing between them.
    let clock = FakeClock::new(day(0));
    let mut last = None;
    for i in 0..3 {
        if i > 0 {
            pg.psql(
                "app",
                "INSERT INTO events (body) SELECT repeat('y', 200) FROM generate_series(1, 5000); ANALYZE events;",
            )
            .unwrap();
        }
        last = Some(
            capacity_planning(&ctx, &store, &clock, &opts)
                .await
                .unwrap(),
        );
        clock.advance(SignedDuration::from_hours(24 * 30));
    }
    let (report, files) = last.unwrap();
    assert_eq!(report.title, "capacity-planning");
    let db_size = store
        .series("db_size_bytes", "db:main", None)
        .await
        .unwrap();
    assert_eq!(db_size.len(), 3);
    assert!(db_size[2].value > db_size[0].value);
    let rows = store
        .series("table_rows", "db:main/events", None)
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|m| m.value).collect::<Vec<_>>(),
        vec![5000.0, 10000.0, 15000.0]
    );
    assert!(
        !store
            .series("redis_used_memory_bytes", "redis:cache", None)
            .await
            .unwrap()
            .is_empty()
    );
    let rows_finding = report
        .findings
        .iter()
        .find(|f| f.check == "capacity.table_rows" && f.target == "db:main/events")
        .unwrap();
    // No limit on rows: a trend, not a problem.
    assert_eq!(rows_finding.severity, Severity::Ok, "{rows_finding:?}");
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.severity != Severity::Unknown),
        "{:#?}",
        report.findings
    );
    let chart = charts.path().join("capacity-table_rows-db-main-events.svg");
    assert!(files.contains(&chart), "{files:?}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..80.min(svg.len())]
    );
    assert!(svg.contains("id=\"projection\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_maintenance_runs_on_a_real_database() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("deep").unwrap();
    pg.psql(
        "deep",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
         DELETE FROM t WHERE id % 2 = 0;
         CREATE EXTENSION amcheck;",
    )
    .unwrap();
    let guard = Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(tej_core::SystemClock),
        confirmer: Arc::new(Fixed(true)),
        override_window: false,
    };
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = tej_backup::Repository::open(repo_dir.path().to_str().unwrap())
        .await
        .unwrap();
    let runner: Arc<dyn tej_core::CommandRunner> = Arc::new(tej_core::TokioCommandRunner);
    let clock: Arc<dyn tej_core::Clock> = Arc::new(tej_core::SystemClock);
    let p = deep_maintenance_with_backup(
        admin(&url),
        CreateBackupStep {
            runner: runner.clone(),
            repos: vec![repo.clone()],
            options: tej_backup::LogicalBackupOptions::new(tej_backup::DbTarget::new(&url)),
            clock: clock.clone(),
        },
        Some(VerifyLatestBackupStep {
            runner,
            repo: repo.clone(),
            selector: tej_backup::BackupSelector::latest_logical("deep"),
            encryption: Default::default(),
            clock,
        }),
        &DeepMaintenanceOptions {
            vacuum_full_tables: vec!["public.t".into()],
            ..DeepMaintenanceOptions::default()
        },
    );
    let r = Executor::new(guard).run(&p).await;
    assert!(r.succeeded(), "{r:#?}");
    assert!(r.steps.iter().all(|s| s.outcome == Outcome::Applied));
    let names: Vec<&str> = r.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        names,
        [
            "backup-create",
            "analyze",
            "reindex-concurrently",
            "vacuum-analyze",
            "vacuum-full",
            "amcheck-verify",
            "backup-verify"
        ]
    );
    let backups = tej_backup::list_backups(&repo).await.unwrap();
    assert_eq!(backups.len(), 1);
    assert!(backups[0].verification.as_ref().is_some_and(|v| v.ok));
    assert_eq!(
        pg.psql(
            "deep",
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 't'"
        )
        .unwrap(),
        "0"
    );
}
