//! Unit tests of the procedures with the domain crates' mocks.

use super::access_log::AccessLogStats;
use super::context::*;
use super::daily::*;
use super::performance::*;
use super::weekly::*;
use crate::custom_checks::MockQueryRunner;
use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tej_backup::{
    BackupId, BackupKind, BackupSummary, IncompleteRun, Inventory, MemoryStore, Repository,
    VerificationRecord,
};
use tej_core::config::TlsEndpointConfig;
use tej_core::{Config, CustomCheckConfig, FakeClock, Finding, Severity};
use tej_db::pg::{DbError, MockPgAdmin, PgRow};
use tej_db::redis::{MockRedisAdmin, RedisAdmin};

fn now() -> Timestamp {
    "2025-01-16T03:30:00Z".parse().unwrap()
}

fn summary(
    db: &str,
    finished: Timestamp,
    verification: Option<VerificationRecord>,
) -> BackupSummary {
    BackupSummary {
        repository: "mem".into(),
        id: BackupId::new(finished, db),
        kind: BackupKind::Logical,
        series: tej_backup::Series::logical(db),
        database: Some(db.into()),
        format: None,
        started_at: finished,
        finished_at: finished,
        raw_size: 10,
        stored_size: 5,
        compression: "zstd-3".into(),
        encrypted: false,
        objects: 1,
        verification,
    }
}

fn verified(at: Timestamp, ok: bool) -> Option<VerificationRecord> {
    Some(VerificationRecord {
        at,
        ok,
        restore_tested: false,
        error: (!ok).then(|| "object dump.zst: checksum mismatch".to_string()),
    })
}

fn ago(h: i64, m: i64) -> Timestamp {
    now() - SignedDuration::from_hours(h) - SignedDuration::from_mins(m)
}

#[test]
fn the_26_hour_rule() {
    let max = SignedDuration::from_hours(26);
    let one = |b: BackupSummary| {
        let inv = Inventory {
            backups: vec![b],
            incomplete: vec![],
        };
        let f = backup_freshness(&inv, "repo:r", now(), max);
        assert_eq!(f.len(), 1);
        f.into_iter().next().unwrap()
    };
    // 25 h 59 m old and verified: fine.
    let f = one(summary("app", ago(25, 59), verified(ago(25, 0), true)));
    assert_eq!(f.severity, Severity::Ok, "{}", f.summary);
    assert_eq!(f.target, "repo:r");
    assert!(f.summary.contains("25h 59m"), "{}", f.summary);
    // 26 h 01 m old, verified: the last daily backup did not complete.
    let f = one(summary("app", ago(26, 1), verified(ago(25, 0), true)));
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("older than 26 h"), "{}", f.summary);
    // Exactly 26 h is not younger than 26 h.
    let f = one(summary("app", ago(26, 0), verified(ago(25, 0), true)));
    assert_eq!(f.severity, Severity::Critical);
    // Fresh but never verified: warning; verification failed: critical with the reason.
    assert_eq!(
        one(summary("app", ago(1, 0), None)).severity,
        Severity::Warning
    );
    let f = one(summary("app", ago(1, 0), verified(ago(0, 30), false)));
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("checksum mismatch"), "{}", f.summary);
    assert_eq!(f.metrics[0].name, "backup_age_hours");
}

#[test]
fn backups_are_judged_per_database_and_empty_is_critical() {
    let max = SignedDuration::from_hours(26);
    let inv = Inventory {
        backups: vec![
            summary("app", ago(2, 0), verified(ago(1, 0), true)),
            summary("app", ago(26, 0), verified(ago(25, 0), true)),
            summary("analytics", ago(50, 0), verified(ago(49, 0), true)),
        ],
        incomplete: vec![IncompleteRun {
            id: BackupId::new(ago(1, 0), "analytics"),
            objects: 0,
            bytes: 0,
            failure: Some(tej_backup::FailureRecord {
                id: BackupId::new(ago(1, 0), "analytics"),
                at: ago(1, 0),
                reason: "pg_dump exited 1".into(),
            }),
        }],
    };
    let f = backup_freshness(&inv, "repo:r", now(), max);
    assert_eq!(f.len(), 2);
    // BTreeMap order: analytics, app.
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(f[0].summary.contains("analytics"));
    assert!(f[0].detail.as_deref().unwrap().contains("pg_dump exited 1"));
    assert_eq!(f[1].severity, Severity::Ok);

    let empty = backup_freshness(&Inventory::default(), "repo:r", now(), max);
    assert_eq!(empty.len(), 1);
    assert_eq!(empty[0].severity, Severity::Critical);
}

fn archiver(mode: &str) -> ArchiverState {
    ArchiverState {
        archive_mode: mode.into(),
        archived_count: 10,
        last_archived_wal: Some("000000010000000000000009".into()),
        archived_age_s: Some(120.0),
        failed_count: 0,
        failed_age_s: None,
        failing: false,
        current_wal: Some("00000001000000000000000A".into()),
        segment_size: 16 << 20,
    }
}

#[test]
fn wal_archiving_current_behind_failing_off() {
    let max = SignedDuration::from_hours(1);
    let f = wal_archiving_finding(&archiver("on"), "db:m", max);
    assert_eq!(f.severity, Severity::Ok, "{}", f.summary);
    assert_eq!(f.target, "db:m");

    let mut s = archiver("on");
    s.failing = true;
    s.failed_count = 3;
    s.failed_age_s = Some(30.0);
    assert_eq!(
        wal_archiving_finding(&s, "db:m", max).severity,
        Severity::Critical
    );

    // Three completed segments waiting for two hours: behind.
    let mut s = archiver("on");
    s.current_wal = Some("00000001000000000000000D".into());
    s.archived_age_s = Some(7200.0);
    let f = wal_archiving_finding(&s, "db:m", max);
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.summary.contains("3 completed segment"), "{}", f.summary);
    // An idle server (nothing to archive) is current however old the last archive is.
    let mut s = archiver("on");
    s.archived_age_s = Some(86_400.0 * 3.0);
    assert_eq!(
        wal_archiving_finding(&s, "db:m", max).severity,
        Severity::Ok
    );
    // Segments crossing a log file boundary count right (…00FF -> 0100…).
    let mut s = archiver("on");
    s.last_archived_wal = Some("0000000100000000000000FF".into());
    s.current_wal = Some("000000010000000100000001".into());
    s.archived_age_s = Some(7200.0);
    assert!(
        wal_archiving_finding(&s, "db:m", max)
            .summary
            .contains("1 completed")
    );
    // Recovered failures within a day: warning.
    let mut s = archiver("on");
    s.failed_count = 2;
    s.failed_age_s = Some(3600.0);
    assert_eq!(
        wal_archiving_finding(&s, "db:m", max).severity,
        Severity::Warning
    );
    assert_eq!(
        wal_archiving_finding(&archiver("off"), "db:m", max).severity,
        Severity::Warning
    );
}

fn dead_pg(target: &'static str) -> Arc<MockPgAdmin> {
    let mut pg = MockPgAdmin::new();
    pg.expect_target().returning(move || target.to_string());
    pg.expect_ping().returning(move || {
        Err(DbError::Unreachable {
            target: target.into(),
            reason: "connection refused".into(),
        })
    });
    pg.expect_query().returning(move |_, _| {
        Err(DbError::Unreachable {
            target: target.into(),
            reason: "connection refused".into(),
        })
    });
    Arc::new(pg)
}

const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:100\r\n# Stats\r\nkeyspace_hits:9000\r\nkeyspace_misses:1000\r\n# Memory\r\nused_memory:1000000\r\nmaxmemory:0\r\n";

fn good_redis() -> Arc<dyn RedisAdmin> {
    let mut r = MockRedisAdmin::new();
    r.expect_ping().returning(|| Ok(Duration::from_millis(1)));
    r.expect_info().returning(|| Ok(INFO.to_string()));
    Arc::new(r)
}

fn base_ctx() -> RunContext {
    let mut cfg = Config::default();
    cfg.checks.push(CustomCheckConfig {
        name: "active-users".into(),
        sql: Some("SELECT count(*) FROM sessions".into()),
        database: Some("main".into()),
        redis: None,
        redis_instance: None,
        warn: 1000.0,
        crit: 5000.0,
        direction: Default::default(),
        unit: "users".into(),
        description: None,
    });
    let mut ctx = RunContext::empty(cfg);
    ctx.options.check_timeout = Duration::from_millis(1500);
    ctx
}

fn tls_ok() -> Arc<MockTlsProber> {
    let mut tls = MockTlsProber::new();
    tls.expect_probe().returning(|ep| {
        vec![Finding::ok(
            "tls.expiry",
            format!("{} valid 80 days", ep.endpoint),
        )]
    });
    Arc::new(tls)
}

fn endpoint(e: &str) -> TlsEndpointConfig {
    TlsEndpointConfig {
        endpoint: e.into(),
        server_name: None,
        cert_file: None,
        ca_file: None,
        warn_days: 30,
        crit_days: 7,
    }
}

#[tokio::test]
async fn daily_dead_components_do_not_hide_the_others_and_order_holds() {
    let mut ctx = base_ctx();
    ctx.databases.push(DatabaseTarget {
        name: "main".into(),
        admin: dead_pg("127.0.0.1:1"),
    });
    // A Redis whose connection never answers, and one that works.
    ctx.redis.push(RedisTarget {
        name: "hung".into(),
        client: Lazy::new(|| async { futures::future::pending().await }),
        connect: None,
    });
    ctx.redis.push(RedisTarget {
        name: "cache".into(),
        client: Lazy::ready(good_redis()),
        connect: None,
    });
    ctx.repositories.push(RepositoryTarget {
        name: "s3://gone/db".into(),
        repo: Lazy::failed("bucket gone does not exist"),
    });
    ctx.repositories.push(RepositoryTarget {
        name: "mem".into(),
        repo: Lazy::ready(Arc::new(Repository::from_store(Arc::new(
            MemoryStore::new(),
        )))),
    });
    ctx.tls = vec![endpoint("skillswap.in:443")];
    ctx.tls_prober = tls_ok();
    ctx.compose = Some(ComposeTarget {
        project: tej_deploy::Project::new("skillswap"),
        health_url: None,
        docker: Lazy::failed(
            "docker engine at unix:///var/run/docker.sock unreachable: no such file",
        ),
    });
    let mut q = MockQueryRunner::new();
    q.expect_sql_scalar().returning(|_, _| Ok(42.0));
    ctx.queries = Some(Arc::new(q));

    let r = daily_health(&ctx, &FakeClock::new(now())).await;
    assert_eq!(r.title, "daily health check");
    let find = |check: &str, target: &str| {
        r.findings
            .iter()
            .find(|f| f.check == check && f.target == target)
            .unwrap_or_else(|| panic!("no {check} for {target} in {:#?}", r.findings))
    };
    let docker = find("services.status", "compose:skillswap");
    assert_eq!(docker.severity, Severity::Critical);
    assert!(
        docker.summary.contains("docker engine unreachable"),
        "{}",
        docker.summary
    );
    // The hung Redis is one Unknown finding naming it...
    let hung = find("redis.health", "redis:hung");
    assert_eq!(hung.severity, Severity::Unknown);
    assert!(hung.summary.contains("redis hung"), "{}", hung.summary);
    // ...and everything else still reported.
    assert_eq!(find("redis.ping", "redis:cache").severity, Severity::Ok);
    let pg: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.target == "db:main")
        .collect();
    assert!(
        pg.iter().any(|f| f.severity == Severity::Critical),
        "{pg:#?}"
    );
    assert_eq!(
        find("backups.wal-archiving", "db:main").severity,
        Severity::Critical
    );
    let gone = find("backups.recent", "repo:s3://gone/db");
    assert_eq!(gone.severity, Severity::Critical);
    assert!(gone.summary.contains("bucket gone"), "{}", gone.summary);
    assert_eq!(
        find("backups.recent", "repo:mem").severity,
        Severity::Critical
    );
    assert_eq!(
        find("tls.expiry", "tls:skillswap.in:443").severity,
        Severity::Ok
    );
    let custom = find("custom.active-users", "db:main");
    assert_eq!(custom.metrics[0].value, 42.0);
    assert!(r.findings.iter().any(|f| f.target == "host"));

    // Report order is the runbook's: host, PostgreSQL, Redis, backups, TLS, custom.
    let first = |prefix: &str| {
        r.findings
            .iter()
            .position(|f| f.target.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}"))
    };
    let order = [
        first("compose:"),
        first("host"),
        first("db:"),
        first("redis:hung"),
        first("redis:cache"),
        first("repo:s3"),
        first("repo:mem"),
        first("tls:"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(r.findings.last().unwrap().check, "custom.active-users");
    assert_eq!(r.severity(), Severity::Critical);
}

#[tokio::test(start_paused = true)]
async fn several_targets_are_covered_with_bounded_concurrency() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut ctx = RunContext::empty(Config::default());
    ctx.options.runner = crate::RunnerOptions {
        max_concurrent: 2,
        max_per_target: 1,
    };
    for i in 0..5 {
        let (live, peak) = (live.clone(), peak.clone());
        ctx.redis.push(RedisTarget {
            name: format!("r{i}"),
            client: Lazy::new(move || {
                let (live, peak) = (live.clone(), peak.clone());
                async move {
                    let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    live.fetch_sub(1, Ordering::SeqCst);
                    Ok(good_redis())
                }
            }),
            connect: None,
        });
    }
    // Only the Redis tasks (no host check: it reads the real /proc on the blocking pool).
    let tasks: Vec<_> = daily_tasks(&ctx, now())
        .into_iter()
        .filter(|t| t.target.starts_with("redis:"))
        .collect();
    assert_eq!(tasks.len(), 5);
    let f = crate::run_checks(tasks, ctx.options.runner).await;
    for i in 0..5 {
        assert!(
            f.iter().any(|x| x.target == format!("redis:r{i}")
                && x.check == "redis.ping"
                && x.severity == Severity::Ok),
            "{f:#?}"
        );
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

#[test]
fn p95_and_error_rate_against_the_runbook_targets() {
    let stats = AccessLogStats {
        requests: 10_000,
        server_errors: 9,
        timed: 10_000,
        p50_ms: Some(40.0),
        p95_ms: Some(480.0),
        p99_ms: Some(900.0),
        ..Default::default()
    };
    let f = api_findings(&stats, "api", "access.log");
    assert_eq!(f[0].check, "performance.api-p95");
    assert_eq!(f[0].severity, Severity::Ok);
    assert_eq!(f[1].check, "performance.error-rate");
    assert!((f[1].metrics[0].value - 0.09).abs() < 1e-9);
    assert_eq!(f[1].severity, Severity::Ok);

    let bad = AccessLogStats {
        server_errors: 10,
        p95_ms: Some(500.0),
        ..stats.clone()
    };
    let f = api_findings(&bad, "api", "access.log");
    assert_eq!(f[0].severity, Severity::Warning); // p95 = 500 ms is not < 500 ms
    assert_eq!(f[1].severity, Severity::Warning); // 0.1 % is not < 0.1 %
    let worse = AccessLogStats {
        server_errors: 100,
        p95_ms: Some(1200.0),
        ..stats.clone()
    };
    let f = api_findings(&worse, "api", "access.log");
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(f[1].severity, Severity::Critical);
    // No $request_time: p95 unknown with the fix, error rate still judged.
    let untimed = AccessLogStats {
        timed: 0,
        p95_ms: None,
        ..stats
    };
    let f = api_findings(&untimed, "api", "access.log");
    assert_eq!(f[0].severity, Severity::Unknown);
    assert!(f[0].summary.contains("$request_time"));
    let f = api_findings(&AccessLogStats::default(), "api", "access.log");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].severity, Severity::Unknown);
}

#[tokio::test]
async fn health_url_probes_are_timed_and_failures_count_as_errors() {
    let mut p = MockHttpProber::new();
    let mut seq = mockall::Sequence::new();
    for i in 0..19u64 {
        p.expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_| {
                Ok(HttpTiming {
                    status: 200,
                    elapsed: Duration::from_millis(20 + i),
                })
            });
    }
    p.expect_get()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(crate::RunbookError::HttpProbe("connection refused".into())));
    let f = probe_health_url(&p, "http://127.0.0.1:1/health", 20, "api").await;
    let p95 = f.iter().find(|x| x.check == "performance.api-p95").unwrap();
    // 19 answers 20..=38 ms: nearest-rank p95 of 19 values is the 19th (38 ms).
    assert_eq!(p95.metrics[0].value, 38.0);
    assert_eq!(p95.severity, Severity::Ok);
    let err = f
        .iter()
        .find(|x| x.check == "performance.error-rate")
        .unwrap();
    assert_eq!(err.metrics[0].value, 5.0);
    assert_eq!(err.severity, Severity::Critical);
    assert!(
        err.detail
            .as_deref()
            .unwrap()
            .contains("connection refused")
    );
}

#[tokio::test]
async fn cache_hit_ratios() {
    let mut pg = MockPgAdmin::new();
    pg.expect_query()
        .withf(|sql, _| sql.contains("blks_hit"))
        .returning(|_, _| {
            Ok(vec![PgRow::from_pairs([
                ("hit", tej_db::pg::PgValue::Float(9_800.0)),
                ("read", tej_db::pg::PgValue::Float(200.0)),
            ])])
        });
    let f = pg_cache_hit(&pg, "db:m").await;
    assert_eq!(f.metrics[0].value, 0.98);
    assert_eq!(f.severity, Severity::Ok);
    let f = cache_ratio_finding("c", "m", "x", 8_000.0, 2_000.0, pg_cache_threshold(), "t");
    assert_eq!(f.severity, Severity::Critical);
    // Too few lookups to judge.
    let f = cache_ratio_finding("c", "m", "x", 1.0, 50.0, pg_cache_threshold(), "t");
    assert_eq!(f.severity, Severity::Ok);
    assert!(f.metrics.is_empty());

    let info = tej_db::redis::InfoReport::parse(INFO);
    let f = redis_cache_hit(&info, "redis:c");
    assert_eq!(f.metrics[0].value, 0.9);
    assert_eq!(f.severity, Severity::Ok);
}

#[tokio::test]
async fn performance_run_covers_access_log_databases_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut text = String::new();
    for i in 0..200 {
        let t = if i < 190 { 0.1 } else { 0.8 };
        text.push_str(&format!(
            "10.0.0.1 - - [16/Jan/2025:03:00:00 +0000] \"GET /api/{i} HTTP/1.1\" 200 1 \"-\" \"ua\" {t}\n"
        ));
    }
    std::fs::write(&log, text).unwrap();
    let mut ctx = base_ctx();
    ctx.logs.access_log = Some(log);
    let mut pg = MockPgAdmin::new();
    pg.expect_target().returning(|| "m".into());
    pg.expect_query().returning(|sql, _| {
        if sql.contains("blks_hit") {
            Ok(vec![PgRow::from_pairs([
                ("hit", tej_db::pg::PgValue::Float(99_000.0)),
                ("read", tej_db::pg::PgValue::Float(1_000.0)),
            ])])
        } else {
            // pg_stat_statements not installed.
            Ok(vec![])
        }
    });
    ctx.databases.push(DatabaseTarget {
        name: "main".into(),
        admin: Arc::new(pg),
    });
    ctx.redis.push(RedisTarget {
        name: "cache".into(),
        client: Lazy::ready(good_redis()),
        connect: None,
    });
    let mut q = MockQueryRunner::new();
    q.expect_sql_scalar().times(1).returning(|_, _| Ok(1500.0));
    ctx.queries = Some(Arc::new(q));
    let r = performance_check(&ctx, &FakeClock::new(now())).await;
    let get = |c: &str| {
        r.findings
            .iter()
            .find(|f| f.check == c)
            .unwrap_or_else(|| panic!("no {c} in {:#?}", r.findings))
    };
    // 190 at 100 ms, 10 at 800 ms: the p95 is exactly the 190th value.
    assert_eq!(get("performance.api-p95").metrics[0].value, 100.0);
    assert_eq!(get("performance.error-rate").severity, Severity::Ok);
    assert_eq!(get("custom.active-users").severity, Severity::Warning);
    assert_eq!(get("performance.pg-cache-hit").metrics[0].value, 0.99);
    assert_eq!(get("performance.redis-hit-ratio").target, "redis:cache");
    assert!(
        r.findings
            .iter()
            .any(|f| f.target == "db:main" && f.check.contains("slow"))
    );
}

#[test]
fn security_review_of_the_access_log() {
    use super::access_log::{AddressRequests, SuspiciousRequest};
    let s = AccessLogStats {
        requests: 5000,
        failed_logins: 30,
        failed_logins_by_address: vec![AddressRequests {
            addr: "198.51.100.7".into(),
            count: 25,
        }],
        sql_injection: 2,
        sql_injection_examples: vec![SuspiciousRequest {
            addr: "198.51.100.7".into(),
            pattern: "union select".into(),
            path: "/x?q=1 union select".into(),
            status: 500,
        }],
        rate_limited: 3,
        top_addresses: vec![AddressRequests {
            addr: "198.51.100.7".into(),
            count: 2500,
        }],
        ..Default::default()
    };
    let f = security_findings(&s, "api");
    let get = |c: &str| f.iter().find(|x| x.check == c).unwrap();
    let logins = get("security.failed-logins");
    assert_eq!(logins.severity, Severity::Warning);
    assert!(
        logins
            .summary
            .contains("brute force from 198.51.100.7 (25)"),
        "{}",
        logins.summary
    );
    assert_eq!(get("security.sql-injection").severity, Severity::Critical);
    assert_eq!(get("security.rate-limit").severity, Severity::Ok);
    assert_eq!(get("security.traffic-anomaly").severity, Severity::Warning);
    let quiet = security_findings(
        &AccessLogStats {
            requests: 10,
            ..Default::default()
        },
        "api",
    );
    assert!(
        quiet.iter().all(|x| x.severity == Severity::Ok),
        "{quiet:#?}"
    );
}

#[test]
fn backup_encryption_rule() {
    assert_eq!(
        encryption_finding(true, true, Some(true), "r").severity,
        Severity::Ok
    );
    assert_eq!(
        encryption_finding(true, true, Some(false), "r").severity,
        Severity::Critical
    );
    assert_eq!(
        encryption_finding(false, true, Some(false), "r").severity,
        Severity::Critical
    );
    assert_eq!(
        encryption_finding(false, false, None, "r").severity,
        Severity::Warning
    );
}

#[tokio::test]
async fn weekly_run_with_mocks() {
    let mut ctx = RunContext::empty(Config::default());
    ctx.options.check_timeout = Duration::from_secs(5);
    let mut r = MockRedisAdmin::new();
    r.expect_ping().returning(|| Ok(Duration::from_millis(1)));
    r.expect_info().returning(|| Ok(INFO.to_string()));
    r.expect_scan()
        .returning(|_, _, _| Ok((0, vec![b"big".to_vec(), b"small".to_vec()])));
    r.expect_key_stats().returning(|keys| {
        Ok(keys
            .iter()
            .map(|k| {
                Some(tej_db::redis::KeyStat {
                    kind: "hash".into(),
                    bytes: if k == b"big" { 20 << 20 } else { 100 },
                })
            })
            .collect())
    });
    ctx.redis.push(RedisTarget {
        name: "cache".into(),
        client: Lazy::ready(Arc::new(r) as Arc<dyn RedisAdmin>),
        connect: None,
    });
    ctx.repositories.push(RepositoryTarget {
        name: "mem".into(),
        repo: Lazy::ready(Arc::new(Repository::from_store(Arc::new(
            MemoryStore::new(),
        )))),
    });
    ctx.tls = vec![endpoint("a.example:443")];
    ctx.tls_prober = tls_ok();
    let rep = weekly_audit(&ctx, &FakeClock::new(now())).await;
    let get = |c: &str| {
        rep.findings
            .iter()
            .find(|f| f.check == c)
            .unwrap_or_else(|| panic!("no {c} in {:#?}", rep.findings))
    };
    let big = get("redis.big-keys");
    assert_eq!(big.severity, Severity::Warning);
    assert!(big.summary.contains("\"big\""), "{}", big.summary);
    assert_eq!(get("redis.ping").target, "redis:cache");
    assert_eq!(get("backups.verify").severity, Severity::Critical);
    assert_eq!(
        get("security.backup-encryption").severity,
        Severity::Warning
    );
    assert_eq!(get("cleanup.backups").target, "repo:mem");
    assert_eq!(get("tls.expiry").target, "tls:a.example:443");
}

#[tokio::test]
async fn services_status_comes_from_the_compose_project() {
    let mut rt = tej_deploy::MockContainerRuntime::new();
    rt.expect_list_containers().returning(|_| Ok(vec![]));
    let images = tej_deploy::MockImageStore::new();
    let mut ctx = RunContext::empty(Config::default());
    ctx.compose = Some(ComposeTarget {
        project: tej_deploy::Project::new("skillswap"),
        health_url: None,
        docker: Lazy::ready(DockerClients {
            runtime: Arc::new(rt),
            images: Arc::new(images),
        }),
    });
    let tasks: Vec<_> = daily_tasks(&ctx, now())
        .into_iter()
        .filter(|t| t.check == "services.status")
        .collect();
    let f = crate::run_checks(tasks, ctx.options.runner).await;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].target, "compose:skillswap");
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(
        f[0].summary
            .contains("no containers of compose project skillswap"),
        "{}",
        f[0].summary
    );
}
