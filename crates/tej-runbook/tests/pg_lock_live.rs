//! PgAdvisoryRunLock against a real PostgreSQL: two holders (two "hosts") exclude each other,
//! unlock hands the lock over, and a holder whose connection dies frees the lock.

use std::sync::Arc;
use std::time::Duration;
use tej_core::{Calendar, ProcedureKind, Report};
use tej_runbook::{
    Daemon, DaemonOptions, PgAdvisoryRunLock, ProcedureRunner, RunLock, RunOutcome, SkipReason,
    advisory_lock_id, lock_key,
};
use tej_testkit::PgCluster;

/// Advisory locks on `key` held by any session, as the server sees them.
fn holders(pg: &PgCluster, key: &str) -> usize {
    let id = advisory_lock_id(key);
    let out = pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND ((classid::int8 << 32) | objid::int8) = {id}"
            ),
        )
        .unwrap();
    out.trim().parse().unwrap()
}

/// Waits (bounded) until the server shows `n` holders of `key`.
async fn wait_holders(pg: &PgCluster, key: &str, n: usize) {
    for _ in 0..200 {
        if holders(pg, key) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never showed {n} holders of {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_holders_exclude_each_other_and_a_dead_holder_frees_the_lock() {
    let pg = PgCluster::start().unwrap();
    let url = pg.url("postgres");
    let key = lock_key(ProcedureKind::WeeklyAudit);
    let other = lock_key(ProcedureKind::DailyHealth);

    let host_a = PgAdvisoryRunLock::new(&url, None).unwrap();
    let host_b = PgAdvisoryRunLock::new(&url, None).unwrap();

    assert!(host_a.try_lock(&key).await.unwrap());
    assert_eq!(holders(&pg, &key), 1);
    assert!(host_a.still_held(&key).await);
    // The other host cannot take it, nor can A take it twice.
    assert!(!host_b.try_lock(&key).await.unwrap());
    assert!(!host_a.try_lock(&key).await.unwrap());
    assert_eq!(host_b.held().await, Vec::<String>::new());
    // Another procedure is independent.
    assert!(host_b.try_lock(&other).await.unwrap());
    assert_eq!(host_b.held().await, vec![other.clone()]);

    // Unlock hands it over.
    host_a.unlock(&key).await.unwrap();
    assert!(!host_a.still_held(&key).await);
    wait_holders(&pg, &key, 0).await;
    assert!(host_b.try_lock(&key).await.unwrap());
    assert!(!host_a.try_lock(&key).await.unwrap());
    host_b.unlock(&key).await.unwrap();
    host_b.unlock(&other).await.unwrap();
    // Unlocking what is not held is harmless.
    host_b.unlock(&other).await.unwrap();

    // A holder that crashes (its connection is killed by the server) frees the lock.
    assert!(host_a.try_lock(&key).await.unwrap());
    let killed = pg
        .psql(
            "postgres",
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
             WHERE application_name = 'tej-runlock'",
        )
        .unwrap();
    assert_eq!(killed.trim(), "1");
    wait_holders(&pg, &key, 0).await;
    assert!(
        !host_a.still_held(&key).await,
        "A must notice it lost the lock"
    );
    assert!(host_b.try_lock(&key).await.unwrap());
    // A sees its dead session, drops it, and finds B holding the lock.
    assert!(!host_a.try_lock(&key).await.unwrap());

    // A holder dropped without unlocking (process exit) frees the lock too.
    drop(host_b);
    wait_holders(&pg, &key, 0).await;
    assert!(host_a.try_lock(&key).await.unwrap());
    host_a.unlock(&key).await.unwrap();
}

struct SlowRunner(tokio::sync::Semaphore);

#[async_trait::async_trait]
impl ProcedureRunner for SlowRunner {
    async fn run(&self, entry: &tej_core::CalendarEntry) -> tej_runbook::Result<Report> {
        // Held until the test releases it: the run is "still going".
        let _p = self.0.acquire().await;
        Ok(Report::new(entry.id.clone()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_database_never_run_the_same_procedure_at_once() {
    let pg = PgCluster::start().unwrap();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SlowRunner(tokio::sync::Semaphore::new(0)));
    let daemon = |name: &str, runner: Arc<dyn ProcedureRunner>| {
        Daemon::new(
            Calendar::runbook(),
            runner,
            Arc::new(PgAdvisoryRunLock::new(&url, None).unwrap()),
            Arc::new(tej_core::SystemClock),
            dir.path().join(format!("{name}.json")),
            DaemonOptions::default(),
        )
        .unwrap()
    };
    let a = Arc::new(daemon("a", gate.clone()));
    let b = daemon("b", gate.clone());
    let a2 = a.clone();
    let first = tokio::spawn(async move { a2.run_entry("weekly-audit").await });
    let key = lock_key(ProcedureKind::WeeklyAudit);
    wait_holders(&pg, &key, 1).await;
    match b.run_entry("weekly-audit").await.unwrap() {
        RunOutcome::Skipped { reason } => assert_eq!(reason, SkipReason::LockedElsewhere),
        other => panic!("B must not run while A holds the lock: {other:?}"),
    }
    gate.0.add_permits(10);
    assert!(matches!(
        first.await.unwrap().unwrap(),
        RunOutcome::Completed { .. }
    ));
    wait_holders(&pg, &key, 0).await;
    assert!(matches!(
        b.run_entry("weekly-audit").await.unwrap(),
        RunOutcome::Completed { .. }
    ));
}
