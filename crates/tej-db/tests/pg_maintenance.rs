//! Weekly and monthly maintenance against a real PostgreSQL 15.

use std::sync::{Arc, Mutex};
use tej_core::{
    Calendar, Environment, Executor, FakeClock, Fixed, Guard, Outcome, Procedure, Severity,
};
use tej_db::pg::{
    BloatMethod, BloatOptions, IndexAuditOptions, PgClient, PgConnectOptions, ReindexOptions,
    RelationKind, SizeOptions, SlowQueryOptions, VacuumFullStep, VacuumOptions, bloat_report,
    index_audit, reindex_bloated, size_report, slow_queries, vacuum,
};
use tej_testkit::{PgCluster, PgClusterOptions};

fn client(pg: &PgCluster, db: &str) -> PgClient {
    PgClient::new(&PgConnectOptions::new(pg.url(db))).expect("valid settings")
}

fn guard(yes: bool) -> Guard {
    Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(FakeClock::new("2025-01-16T06:30:00Z".parse().unwrap())),
        confirmer: Arc::new(Fixed(yes)),
        override_window: false,
    }
}

#[tokio::test]
async fn bloat_is_reported_and_reindex_concurrently_shrinks_it() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE EXTENSION pgstattuple;
         CREATE TABLE events (id int PRIMARY KEY, kind int, payload text);
         CREATE INDEX events_kind_idx ON events (kind);
         INSERT INTO events SELECT g, g % 1000, repeat('x', 40) FROM generate_series(1, 200000) g;
         UPDATE events SET kind = kind + 1;
         DELETE FROM events WHERE id % 10 <> 0;
         VACUUM ANALYZE events;",
    )
    .unwrap();
    let c = client(&pg, "app");
    let b = bloat_report(
        &c,
        &BloatOptions {
            min_bytes: 64 * 1024,
            ..BloatOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(b.pgstattuple);
    let idx = b
        .indexes
        .iter()
        .find(|i| i.relation == "events_kind_idx")
        .expect("index listed");
    assert_eq!(idx.kind, RelationKind::Index);
    assert_eq!(idx.method, BloatMethod::Pgstatindex);
    assert!(idx.wasted_percent() >= 50.0, "{idx:?}");
    assert!(
        idx.estimated_percent >= 50.0,
        "the estimate agrees: {idx:?}"
    );
    let table = b
        .tables
        .iter()
        .find(|t| t.relation == "events")
        .expect("table listed");
    assert_eq!(table.method, BloatMethod::PgstattupleApprox);
    assert!(table.wasted_percent() >= 50.0, "{table:?}");
    assert!(
        b.findings
            .iter()
            .any(|f| f.target == "events_kind_idx" && f.severity == Severity::Critical),
        "{:#?}",
        b.findings
    );

    // Leave a leftover of a failed concurrent rebuild behind: it must be cleaned up.
    pg.psql(
        "app",
        "CREATE TABLE dup (v int); INSERT INTO dup VALUES (1), (1);",
    )
    .unwrap();
    assert!(
        pg.psql(
            "app",
            "CREATE UNIQUE INDEX CONCURRENTLY dup_v_ccnew ON dup (v);"
        )
        .is_err()
    );

    let r = reindex_bloated(
        &c,
        &ReindexOptions {
            min_bytes: 64 * 1024,
            ..ReindexOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.leftovers_dropped, vec!["public.dup_v_ccnew".to_string()]);
    let res = r
        .results
        .iter()
        .find(|x| x.index == "events_kind_idx")
        .expect("rebuilt");
    assert_eq!(res.outcome, "reindexed", "{res:?}");
    let after = res.bytes_after.unwrap();
    assert!(after * 2 < res.bytes_before, "{res:?}");
    assert!(r.bytes_freed > 0);
    let b = bloat_report(
        &c,
        &BloatOptions {
            min_bytes: 0,
            ..BloatOptions::default()
        },
    )
    .await
    .unwrap();
    let idx = b
        .indexes
        .iter()
        .find(|i| i.relation == "events_kind_idx")
        .unwrap();
    assert!(idx.wasted_percent() < 20.0, "{idx:?}");
    assert_eq!(
        pg.psql("app", "SELECT count(*) FROM pg_index WHERE NOT indisvalid")
            .unwrap(),
        "0"
    );
    // Nothing left to do: a second run rebuilds nothing.
    let r = reindex_bloated(
        &c,
        &ReindexOptions {
            min_bytes: 64 * 1024,
            ..ReindexOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(
        r.results.iter().all(|x| x.index != "events_kind_idx"),
        "{:?}",
        r.results
    );
}

#[tokio::test]
async fn unused_duplicate_and_unindexed_foreign_keys_are_found() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE parent (id int PRIMARY KEY, name text UNIQUE, note text);
         CREATE INDEX parent_note_idx ON parent (note);
         CREATE INDEX parent_id_dup ON parent (id);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id), other_id int REFERENCES parent (id));
         CREATE INDEX child_other_idx ON child (other_id, id);
         INSERT INTO parent SELECT g, 'n' || g, 'x' FROM generate_series(1, 100) g;
         INSERT INTO child SELECT g, g, g FROM generate_series(1, 100) g;
         ANALYZE;",
    )
    .unwrap();
    // Use the primary key so it is not the only reason it is excluded.
    pg.psql(
        "app",
        "SET enable_seqscan = off; SELECT * FROM parent WHERE id = 5;",
    )
    .unwrap();
    let c = client(&pg, "app");
    let a = index_audit(&c, &IndexAuditOptions::default())
        .await
        .unwrap();
    let unused: Vec<&str> = a.unused.iter().map(|u| u.index.as_str()).collect();
    assert!(unused.contains(&"parent_note_idx"), "{unused:?}");
    assert!(
        !unused
            .iter()
            .any(|u| u.contains("pkey") || u.contains("name_key")),
        "{unused:?}"
    );
    assert_eq!(a.duplicates.len(), 1, "{:?}", a.duplicates);
    assert_eq!(a.duplicates[0].table, "parent");
    assert_eq!(
        a.duplicates[0].indexes,
        vec!["parent_pkey".to_string(), "parent_id_dup".to_string()]
    );
    assert_eq!(
        a.unindexed_foreign_keys.len(),
        1,
        "{:?}",
        a.unindexed_foreign_keys
    );
    assert_eq!(a.unindexed_foreign_keys[0].table, "child");
    assert_eq!(
        a.unindexed_foreign_keys[0].columns,
        vec!["parent_id".to_string()]
    );
    assert!(a.stats_reset.is_none());
    let checks: Vec<&str> = a.findings.iter().map(|f| f.check.as_str()).collect();
    assert!(checks.contains(&"postgres.unused_indexes"));
    assert!(checks.contains(&"postgres.duplicate_indexes"));
    assert!(checks.contains(&"postgres.unindexed_foreign_keys"));
    assert!(a.findings.iter().any(|f| f.summary.contains("never reset")));
}

#[tokio::test]
async fn missing_pg_stat_statements_is_a_finding_and_present_lists_queries() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    let c = client(&pg, "app");
    let r = slow_queries(&c, &SlowQueryOptions::default())
        .await
        .unwrap();
    assert!(!r.available);
    assert_eq!(r.findings[0].severity, Severity::Warning);
    assert!(
        r.findings[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("shared_preload_libraries")
    );

    pg.psql(
        "app",
        "CREATE EXTENSION pg_stat_statements; CREATE TABLE t (x int);",
    )
    .unwrap();
    for _ in 0..6 {
        pg.psql("app", "SELECT pg_sleep(0.01), count(*) FROM t;")
            .unwrap();
    }
    let opts = SlowQueryOptions {
        mean_ms: tej_core::Threshold::above(5.0, 10_000.0),
        ..SlowQueryOptions::default()
    };
    let r = slow_queries(&c, &opts).await.unwrap();
    assert!(r.available);
    let q = r
        .queries
        .iter()
        .find(|q| q.query.contains("pg_sleep"))
        .expect("the sleeping query");
    assert_eq!(q.calls, 6);
    assert!(q.mean_ms >= 10.0 && q.share_percent > 0.0, "{q:?}");
    assert!(
        r.findings
            .iter()
            .any(|f| f.severity == Severity::Warning && f.summary.contains("pg_sleep"))
    );

    // Installed but not preloaded: still a finding, not an error.
    let bare = PgCluster::start_with(PgClusterOptions {
        preload_pg_stat_statements: false,
        ..Default::default()
    })
    .unwrap();
    bare.create_database("app").unwrap();
    bare.psql("app", "CREATE EXTENSION pg_stat_statements;")
        .unwrap();
    let r = slow_queries(&client(&bare, "app"), &SlowQueryOptions::default())
        .await
        .unwrap();
    assert!(!r.available);
    assert!(
        r.findings[0].summary.contains("not loaded"),
        "{}",
        r.findings[0].summary
    );
}

#[tokio::test]
async fn vacuum_reports_progress_and_dead_tuples_and_vacuum_full_needs_confirmation() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE logs (id int PRIMARY KEY, line text) WITH (autovacuum_enabled = false);
         INSERT INTO logs SELECT g, repeat('l', 100) FROM generate_series(1, 100000) g;
         DELETE FROM logs WHERE id % 2 = 0;",
    )
    .unwrap();
    let c = Arc::new(client(&pg, "app"));
    let seen = Mutex::new(0usize);
    let opts = VacuumOptions {
        tables: vec!["logs".into()],
        progress_interval: std::time::Duration::from_millis(10),
        ..VacuumOptions::default()
    };
    let r = vacuum(c.as_ref(), &opts, &|_| *seen.lock().unwrap() += 1)
        .await
        .unwrap();
    assert_eq!(
        r.statement,
        "VACUUM (ANALYZE, SKIP_LOCKED, TRUNCATE false) \"logs\""
    );
    assert_eq!(r.tables.len(), 1);
    assert_eq!(r.tables[0].table, "public.logs");
    assert!(r.dead_before >= 50_000, "{r:?}");
    assert_eq!(r.dead_after, 0, "{r:?}");
    assert_eq!(r.tables[0].live_after, 50_000);
    assert_eq!(*seen.lock().unwrap(), r.progress.len());
    // The maintenance session's lock_timeout does not leak into pooled sessions.
    let r =
        tej_db::pg::run_configured_query(c.as_ref(), "SELECT current_setting('lock_timeout') AS v")
            .await
            .unwrap();
    assert_eq!(r.first, Some(tej_db::pg::PgValue::Text("0".into())));
    let missing = vacuum(
        c.as_ref(),
        &VacuumOptions {
            tables: vec!["nope".into()],
            ..VacuumOptions::default()
        },
        &|_| {},
    )
    .await;
    assert!(missing.is_err());

    // Size: table, index and TOAST apart.
    pg.psql("app", "CREATE TABLE docs (id int, body text); ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
                    INSERT INTO docs SELECT g, repeat(md5(g::text), 200) FROM generate_series(1, 200) g;").unwrap();
    let s = size_report(c.as_ref(), &SizeOptions::default())
        .await
        .unwrap();
    assert!(s.database_bytes > 1_000_000);
    let docs = s.largest.iter().find(|r| r.relation == "docs").unwrap();
    assert!(
        docs.toast_bytes > 0 && docs.table_bytes > 0 && docs.index_bytes == 0,
        "{docs:?}"
    );
    let logs = s.largest.iter().find(|r| r.relation == "logs").unwrap();
    assert!(logs.index_bytes > 0 && logs.toast_bytes <= 8192, "{logs:?}"); // an empty TOAST index is one page
    assert_eq!(
        logs.total_bytes,
        logs.table_bytes + logs.index_bytes + logs.toast_bytes
    );

    // VACUUM FULL: refused without confirmation, applied with it.
    let before = pg
        .psql("app", "SELECT pg_total_relation_size('logs')")
        .unwrap();
    let step = || VacuumFullStep {
        admin: c.clone(),
        tables: vec!["logs".into()],
        lock_timeout: std::time::Duration::from_secs(2),
    };
    let r = Executor::new(guard(false))
        .run(&Procedure::new("monthly").step(step()))
        .await;
    assert!(matches!(r.steps[0].outcome, Outcome::Refused { .. }));
    assert!(r.steps[0].actions[0].contains("ACCESS EXCLUSIVE"));
    assert_eq!(
        pg.psql("app", "SELECT pg_total_relation_size('logs')")
            .unwrap(),
        before
    );
    let r = Executor::new(guard(true))
        .run(&Procedure::new("monthly").step(step()))
        .await;
    assert_eq!(r.steps[0].outcome, Outcome::Applied, "{:?}", r.steps[0]);
    let after: i64 = pg
        .psql("app", "SELECT pg_total_relation_size('logs')")
        .unwrap()
        .parse()
        .unwrap();
    assert!(after < before.parse::<i64>().unwrap());
    let empty = VacuumFullStep {
        admin: c.clone(),
        tables: vec![],
        lock_timeout: std::time::Duration::from_secs(2),
    };
    let r = Executor::new(guard(true))
        .run(&Procedure::new("monthly").step(empty))
        .await;
    assert!(matches!(r.steps[0].outcome, Outcome::Failed { .. }));
}
