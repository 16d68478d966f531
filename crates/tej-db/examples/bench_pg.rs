//! Benchmark: wall time of the daily PostgreSQL check and of the weekly audit on a pgbench
//! scale-20 database, next to the runbook's own commands and to the same checks run on a
//! single connection (no concurrency).
//!
//! `cargo run --release -p tej-db --example bench_pg` (env: `TEJ_BENCH_SCALE`, default 20;
//! `TEJ_BENCH_RUNS`, default 9).

use std::time::{Duration, Instant};
use tej_core::{CommandSpec, TokioCommandRunner, run_checked};
use tej_db::pg::{
    HealthOptions, PgClient, PgConnectOptions, WeeklyAuditOptions, check_health, weekly_audit,
};
use tej_testkit::PgCluster;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time_n<F, Fut>(runs: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed());
    }
    Ok(median(v))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale: u32 = std::env::var("TEJ_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runs: usize = std::env::var("TEJ_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9);
    let pg = PgCluster::start()?;
    pg.create_database("bench")?;
    pg.psql(
        "bench",
        "CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pgstattuple;",
    )?;
    let bin = PgCluster::bin_dir();
    let runner = TokioCommandRunner;
    let port = pg.port().to_string();
    let conn = ["-h", "127.0.0.1", "-p", port.as_str(), "-U", "postgres"];
    let t = Instant::now();
    run_checked(
        &runner,
        CommandSpec::new(bin.join("pgbench").display().to_string())
            .args(["-i", "-q", "-s", &scale.to_string()])
            .args(conn)
            .arg("bench")
            .timeout(Duration::from_secs(600)),
    )
    .await?;
    let init = t.elapsed();
    // Some read/write traffic so the statistics views have something to say.
    run_checked(
        &runner,
        CommandSpec::new(bin.join("pgbench").display().to_string())
            .args(["-c", "2", "-j", "2", "-t", "500", "-n"])
            .args(conn)
            .arg("bench")
            .timeout(Duration::from_secs(600)),
    )
    .await?;
    let db_size = pg.psql("bench", "SELECT pg_size_pretty(pg_database_size('bench'))")?;
    println!(
        "pgbench -i -s {scale}: {:.1} s, database {db_size}; {runs} runs each, medians\n",
        init.as_secs_f64()
    );

    let concurrent = PgClient::new(&PgConnectOptions::new(pg.url("bench")))?;
    let mut one = PgConnectOptions::new(pg.url("bench"));
    one.pool_size = 1;
    let sequential = PgClient::new(&one)?;
    let health = HealthOptions::default();
    let weekly = WeeklyAuditOptions::default();
    // Warm the pools (connections are opened once per process in real use too) and check the result.
    let first = check_health(&concurrent, &health).await;
    anyhow::ensure!(first.reachable, "daily check could not reach the server");
    let unknown: Vec<_> = first
        .findings
        .iter()
        .filter(|f| f.severity == tej_core::Severity::Unknown)
        .collect();
    anyhow::ensure!(unknown.is_empty(), "daily check had failures: {unknown:?}");
    let w = weekly_audit(&concurrent, &weekly).await;
    anyhow::ensure!(
        w.size.is_some() && w.bloat.is_some() && w.slow_queries.is_some() && w.indexes.is_some(),
        "weekly audit failed: {:?}",
        w.findings
    );
    // Every pooled connection prepares each statement once: warm them all up.
    for _ in 0..5 {
        check_health(&concurrent, &health).await;
        check_health(&sequential, &health).await;
        weekly_audit(&concurrent, &weekly).await;
        weekly_audit(&sequential, &weekly).await;
    }
    let url = pg.url("bench");
    // Cold: a new client per run (connecting included), like one `tej db health` invocation.
    let daily_cold_conc = time_n(runs, || async {
        let c = PgClient::new(&PgConnectOptions::new(&url))?;
        check_health(&c, &health).await;
        Ok(())
    })
    .await?;
    let daily_cold_seq = time_n(runs, || async {
        let mut o = PgConnectOptions::new(&url);
        o.pool_size = 1;
        let c = PgClient::new(&o)?;
        check_health(&c, &health).await;
        Ok(())
    })
    .await?;

    let daily_conc = time_n(runs, || async {
        check_health(&concurrent, &health).await;
        Ok(())
    })
    .await?;
    let daily_seq = time_n(runs, || async {
        check_health(&sequential, &health).await;
        Ok(())
    })
    .await?;
    let isready = time_n(runs, || async {
        run_checked(
            &runner,
            CommandSpec::new(bin.join("pg_isready").display().to_string()).args(conn),
        )
        .await?;
        Ok(())
    })
    .await?;
    let weekly_conc = time_n(runs, || async {
        weekly_audit(&concurrent, &weekly).await;
        Ok(())
    })
    .await?;
    let weekly_seq = time_n(runs, || async {
        weekly_audit(&sequential, &weekly).await;
        Ok(())
    })
    .await?;
    // The runbook's weekly read-only queries (size, "bloated tables", slow queries) through psql.
    let runbook_sql = "SELECT pg_size_pretty(pg_database_size('bench'));
SELECT schemaname, tablename, pg_size_pretty(pg_total_relation_size(schemaname||'.'||tablename)) AS size
  FROM pg_tables ORDER BY pg_total_relation_size(schemaname||'.'||tablename) DESC LIMIT 10;
SELECT query, mean_exec_time, calls FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 10;";
    let weekly_runbook = time_n(runs, || async {
        run_checked(
            &runner,
            CommandSpec::new(bin.join("psql").display().to_string())
                .args(["-X", "-q", "-A", "-t"])
                .args(conn)
                .args(["-d", "bench", "-c", runbook_sql]),
        )
        .await?;
        Ok(())
    })
    .await?;

    let row = |what: &str, d: Duration, base: Duration| {
        println!("{what:<62} {:>10.1} {:>8.2}", ms(d), ms(d) / ms(base));
    };
    println!("{:<62} {:>10} {:>8}", "what", "median ms", "ratio");
    row(
        "tej daily check, cold (connects), concurrent (pool of 8)",
        daily_cold_conc,
        daily_cold_conc,
    );
    row(
        "tej daily check, cold (connects), one connection",
        daily_cold_seq,
        daily_cold_conc,
    );
    row(
        "runbook daily: pg_isready (reachability only)",
        isready,
        daily_cold_conc,
    );
    row(
        "tej daily check, warm pool, concurrent (pool of 8)",
        daily_conc,
        daily_conc,
    );
    row(
        "tej daily check, warm, one connection (sequential)",
        daily_seq,
        daily_conc,
    );
    row(
        "tej weekly audit (size, bloat, slow queries, indexes)",
        weekly_conc,
        weekly_conc,
    );
    row(
        "tej weekly audit, one connection (sequential)",
        weekly_seq,
        weekly_conc,
    );
    row(
        "runbook weekly: psql size + largest tables + slow queries",
        weekly_runbook,
        weekly_conc,
    );
    println!(
        "\ncold daily check {} the 1 s budget ({:.1} ms)",
        if daily_cold_conc < Duration::from_secs(1) {
            "is within"
        } else {
            "EXCEEDS"
        },
        ms(daily_cold_conc)
    );
    println!(
        "findings: daily {}, weekly {}",
        first.findings.len(),
        w.findings.len()
    );
    Ok(())
}
