//! Daily health check against a real PostgreSQL 15.

use std::time::Duration;
use tej_core::Severity;
use tej_db::pg::health::HorizonHolderKind;
use tej_db::pg::{
    DbError, HealthOptions, PgAdmin, PgClient, PgConnectOptions, PgValue, ReindexOptions,
    check_health, reindex_index, run_configured_query,
};
use tej_testkit::PgCluster;
use tokio_postgres::NoTls;

fn client(pg: &PgCluster, db: &str) -> PgClient {
    PgClient::new(&PgConnectOptions::new(pg.url(db))).expect("valid settings")
}

async fn raw(pg: &PgCluster, db: &str, app: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("{} application_name={app}", pg.conn_str(db)),
        NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(conn);
    c
}

/// Thresholds of zero make every holder a finding, so the test does not depend on timing.
fn eager() -> HealthOptions {
    let zero = tej_core::Threshold::above(0.0, 0.0);
    HealthOptions {
        horizon_age_s: zero,
        idle_in_transaction_s: zero,
        lock_wait_s: zero,
        ..HealthOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_session_is_named_as_pinning_the_horizon() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE jobs (id int PRIMARY KEY, state text); INSERT INTO jobs VALUES (1, 'new');",
    )
    .unwrap();
    let holder = raw(&pg, "app", "stuck-worker").await;
    holder
        .batch_execute("BEGIN; UPDATE jobs SET state = 'taken' WHERE id = 1;")
        .await
        .unwrap();
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Its last query quotes credentials: the report quotes the query with them masked.
    holder
        .batch_execute("SELECT 'postgres://ops:Url-Pa55@db/app' AS u, 'password=Kw-Pa55' AS k")
        .await
        .unwrap();

    let c = client(&pg, "app");
    let r = check_health(&c, &eager()).await;
    assert!(r.reachable);
    let h = r.horizon.first().expect("a horizon holder");
    assert_eq!(h.kind, HorizonHolderKind::IdleInTransaction);
    assert_eq!(h.name, format!("pid {pid}"));
    assert!(h.detail.contains("stuck-worker"), "{}", h.detail);
    assert!(h.detail.contains("AS u"), "{}", h.detail);
    for secret in ["Url-Pa55", "Kw-Pa55"] {
        assert!(!h.detail.contains(secret), "{}", h.detail);
    }
    let f = r
        .findings
        .iter()
        .find(|f| f.check == "postgres.xmin_horizon")
        .unwrap();
    assert_eq!(f.severity, Severity::Critical);
    assert!(
        f.summary.contains(&format!("pid {pid}")) && f.summary.contains("VACUUM"),
        "{}",
        f.summary
    );
    let idle = r
        .findings
        .iter()
        .find(|f| f.check == "postgres.idle_in_transaction" && f.target == format!("pid:{pid}"))
        .expect("idle-in-transaction finding");
    assert!(
        idle.summary.contains("stuck-worker") && idle.summary.contains("pinning"),
        "{}",
        idle.summary
    );
    let s = r.sessions.iter().find(|s| s.pid == i64::from(pid)).unwrap();
    assert_eq!(s.user, "postgres");
    assert!(s.query_start.is_some());

    // With the transaction over, nothing pins the horizon.
    holder.batch_execute("COMMIT").await.unwrap();
    let r = check_health(&c, &eager()).await;
    assert!(
        r.horizon.iter().all(|h| h.name != format!("pid {pid}")),
        "{:?}",
        r.horizon
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_update_shows_its_blocker() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts VALUES (1, 10);")
        .unwrap();
    let blocker = raw(&pg, "app", "blocker").await;
    blocker
        .batch_execute("BEGIN; UPDATE accounts SET balance = 20 WHERE id = 1;")
        .await
        .unwrap();
    let blocker_pid: i32 = blocker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let waiter = raw(&pg, "app", "waiter").await;
    let waiter_pid: i32 = waiter
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let waiting = tokio::spawn(async move {
        waiter
            .execute("UPDATE accounts SET balance = 30 WHERE id = 1", &[])
            .await
    });
    let c = client(&pg, "app");
    // Wait (bounded) until the server shows the UPDATE waiting for the lock.
    let mut report = None;
    for _ in 0..100 {
        let r = check_health(&c, &eager()).await;
        if !r.blocked.is_empty() {
            report = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = report.expect("the blocked UPDATE never showed up");
    let b = &r.blocked[0];
    assert_eq!(b.waiting_pid, i64::from(waiter_pid));
    assert_eq!(b.blocking_pid, i64::from(blocker_pid));
    assert_eq!(b.blocking_state, "idle in transaction");
    assert!(b.waiting_query.contains("balance = 30"));
    assert!(!b.lock_type.is_empty() && !b.lock_mode.is_empty());
    assert_eq!(b.relation, "accounts");
    let f = r
        .findings
        .iter()
        .find(|f| f.check == "postgres.blocking_locks")
        .unwrap();
    assert!(
        f.summary.contains(&format!("held by pid {blocker_pid}")),
        "{}",
        f.summary
    );
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn wraparound_age_server_facts_and_catalog_problems() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE orders (id serial PRIMARY KEY, code text);
         INSERT INTO orders (code) SELECT 'c' || (g % 10) FROM generate_series(1, 100) g;
         SELECT setval('orders_id_seq', 2000000000);",
    )
    .unwrap();
    // A failed CREATE UNIQUE INDEX CONCURRENTLY leaves an invalid index behind.
    assert!(
        pg.psql(
            "app",
            "CREATE UNIQUE INDEX CONCURRENTLY orders_code_key ON orders (code);"
        )
        .is_err()
    );
    // Burn some transaction ids so ages are visible.
    pg.psql(
        "app",
        "DO $$ BEGIN FOR i IN 1..50 LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$;",
    )
    .unwrap();

    let c = client(&pg, "app");
    let r = check_health(&c, &HealthOptions::default()).await;
    let server = r.server.as_ref().unwrap();
    assert!(server.version.starts_with("15"), "{}", server.version);
    assert!(server.data_checksums);
    assert!(server.connections >= 1 && server.max_connections >= 10);
    let app = r.databases.iter().find(|d| d.database == "app").unwrap();
    assert!(
        app.xid_age > 0 && app.xid_percent > 0.0 && app.xid_percent < 1.0,
        "{app:?}"
    );
    assert!(!r.oldest_frozen.is_empty());
    let wrap = r
        .findings
        .iter()
        .find(|f| f.check == "postgres.wraparound")
        .unwrap();
    assert_eq!(wrap.severity, Severity::Ok);
    assert!(
        r.findings
            .iter()
            .any(|f| f.check == "postgres.reachable" && f.severity == Severity::Ok)
    );
    // Sequence feeding an int4 column at 2e9: critical.
    let seq = r
        .findings
        .iter()
        .find(|f| f.check == "postgres.sequences")
        .unwrap();
    assert_eq!(seq.severity, Severity::Critical, "{}", seq.summary);
    assert!(
        seq.summary.contains("orders_id_seq") && seq.summary.contains("int4"),
        "{}",
        seq.summary
    );
    let inv = r
        .findings
        .iter()
        .find(|f| f.check == "postgres.invalid_indexes")
        .unwrap();
    assert_eq!(inv.severity, Severity::Warning);
    assert!(inv.summary.contains("orders_code_key"));
    assert!(r.findings.iter().any(|f| f.check == "postgres.archiver"));
    assert!(
        r.findings
            .iter()
            .any(|f| f.check == "postgres.checksums" && f.severity == Severity::Ok)
    );
    assert!(
        !r.findings.iter().any(|f| f.severity == Severity::Unknown),
        "{:#?}",
        r.findings
    );
}

#[tokio::test]
async fn errors_are_typed_for_the_operator() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE secrets (v text); CREATE INDEX secrets_v ON secrets (v); CREATE ROLE intern LOGIN; REVOKE ALL ON secrets FROM PUBLIC;",
    )
    .unwrap();

    // Nothing listens on a fresh free port.
    let port = tej_testkit::free_port();
    let dead = PgClient::new(&PgConnectOptions::new(format!(
        "postgres://postgres:pw1234@127.0.0.1:{port}/app"
    )))
    .unwrap();
    let e = dead.ping().await.unwrap_err();
    assert!(matches!(e, DbError::Unreachable { .. }), "{e:?}");
    assert!(!e.to_string().contains("pw1234"));
    let r = check_health(&dead, &HealthOptions::default()).await;
    assert!(!r.reachable);
    assert_eq!(r.severity(), Severity::Critical);
    assert!(
        r.findings[0].summary.contains("no response"),
        "{}",
        r.findings[0].summary
    );

    let e = client(&pg, "nope").ping().await.unwrap_err();
    assert_eq!(
        e,
        DbError::DatabaseMissing {
            database: "nope".into()
        }
    );

    let intern = PgClient::new(&PgConnectOptions::new(format!(
        "postgres://intern@127.0.0.1:{}/app",
        pg.port()
    )))
    .unwrap();
    match run_configured_query(&intern, "SELECT * FROM secrets")
        .await
        .unwrap_err()
    {
        DbError::PermissionDenied { message, privilege } => {
            assert!(message.contains("secrets"), "{message}");
            assert!(!privilege.is_empty());
        }
        other => panic!("expected permission denied, got {other:?}"),
    }
    let opts = ReindexOptions {
        free_disk_bytes: Some(1 << 40),
        ..ReindexOptions::default()
    };
    let r = reindex_index(&intern, "secrets_v", &opts).await;
    assert_eq!(r.outcome, "failed", "{r:?}");
    let reason = r.reason.unwrap_or_default();
    assert!(
        reason.starts_with("permission denied") && reason.contains("ownership"),
        "{reason}"
    );

    let mut quick_opts = PgConnectOptions::new(pg.url("app"));
    quick_opts.query_timeout = Duration::from_millis(200);
    let quick = PgClient::new(&quick_opts).unwrap();
    let e = run_configured_query(&quick, "SELECT pg_sleep(5)::text AS s")
        .await
        .unwrap_err();
    assert!(matches!(e, DbError::Timeout { .. }), "{e:?}");
    // The connection is still usable after the timeout.
    assert_eq!(
        run_configured_query(&quick, "SELECT 1::int8 AS one")
            .await
            .unwrap()
            .first,
        Some(PgValue::Int(1))
    );

    let e = PgClient::new(&PgConnectOptions::new("postgres://x@h:notaport/db")).unwrap_err();
    assert!(matches!(e, DbError::InvalidConfig(_)));
}

#[tokio::test]
async fn prepared_transactions_and_inactive_slots_are_named() {
    let pg = tej_testkit::PgCluster::start_with(tej_testkit::PgClusterOptions {
        extra_conf: vec![
            "max_prepared_transactions = 4".into(),
            "wal_level = logical".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE t (id int);
         SELECT 1 FROM pg_create_logical_replication_slot('old_consumer', 'test_decoding');
         SELECT 1 FROM pg_create_physical_replication_slot('old_standby', true);
         BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'forgotten-2pc';",
    )
    .unwrap();
    let c = client(&pg, "app");
    let r = check_health(&c, &eager()).await;
    let p = r
        .prepared
        .iter()
        .find(|p| p.gid == "forgotten-2pc")
        .expect("prepared transaction listed");
    assert_eq!(p.owner, "postgres");
    assert!(r.findings.iter().any(|f| f.check == "postgres.prepared_transactions" && f.target == "gid:forgotten-2pc"));
    let kinds: Vec<HorizonHolderKind> = r.horizon.iter().map(|h| h.kind).collect();
    assert!(
        kinds.contains(&HorizonHolderKind::PreparedTransaction),
        "{:?}",
        r.horizon
    );
    assert!(
        kinds.contains(&HorizonHolderKind::ReplicationSlot),
        "{:?}",
        r.horizon
    );
    let slots: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.check == "postgres.replication_slots")
        .map(|f| f.target.as_str())
        .collect();
    assert_eq!(slots, vec!["slot:old_consumer", "slot:old_standby"]);
    let standby = r.slots.iter().find(|s| s.name == "old_standby").unwrap();
    assert!(!standby.active && standby.retained_bytes.is_some_and(|b| b >= 0));
    pg.psql(
        "app",
        "ROLLBACK PREPARED 'forgotten-2pc'; SELECT pg_drop_replication_slot('old_consumer');",
    )
    .unwrap();
}
