//! The daily health check and the weekly audit against real servers from tej-testkit:
//! PostgreSQL 15 archiving WAL, Redis, an S3-compatible server, a local repository holding a
//! real logical backup and a private Docker engine running a Compose service; plus a Redis
//! that is not there, which must not hide anything else.

use std::sync::Arc;
use std::time::Duration;
use tej_backup::{
    DbTarget, LogicalBackupOptions, Repository, S3Location, S3Options, S3Store, VerifyOptions,
    create_logical_backup, verify_backup,
};
use tej_core::{Config, Finding, Report, Severity, SystemClock, TokioCommandRunner};
use tej_runbook::{RepositoryTarget, RunContext, RunOptions, daily_health, weekly_audit};
use tej_testkit::{DockerEngine, PgCluster, PgClusterOptions, RedisServer, S3Server};

fn find<'a>(r: &'a Report, check: &str, target: &str) -> &'a Finding {
    r.findings
        .iter()
        .find(|f| f.check == check && f.target == target)
        .unwrap_or_else(|| panic!("no {check} for {target} in {:#?}", r.findings))
}

fn wait_archived(pg: &PgCluster) {
    pg.psql("postgres", "SELECT pg_switch_wal()").unwrap();
    for _ in 0..200 {
        let n: i64 = pg
            .psql("postgres", "SELECT archived_count FROM pg_stat_archiver")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if n > 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("PostgreSQL archived nothing: {}", pg.server_log());
}

/// Name of the Compose project's one container.
const CONTAINER: &str = "shop-backend-1";

/// A private engine running `shop-backend-1`: busybox `sleep` labelled as Compose service
/// `backend` of project `shop`, host network, stopped within a second.
fn docker_with_compose_service() -> DockerEngine {
    let engine = DockerEngine::start().unwrap();
    engine.import_busybox_image("tej/busybox:daily").unwrap();
    engine
        .docker(&[
            "run",
            "-d",
            "--name",
            CONTAINER,
            "--network",
            "host",
            "--stop-timeout",
            "1",
            "--label",
            "com.docker.compose.project=shop",
            "--label",
            "com.docker.compose.service=backend",
            "--label",
            "com.docker.compose.container-number=1",
            "--label",
            "com.docker.compose.oneoff=False",
            "tej/busybox:daily",
            "sleep",
            "600",
        ])
        .unwrap();
    engine
}

/// The daily report's finding about `CONTAINER`.
fn container_finding(r: &Report) -> &Finding {
    r.findings
        .iter()
        .find(|f| {
            f.check == "docker.container"
                && f.target.starts_with("compose:shop")
                && f.summary.contains(CONTAINER)
        })
        .unwrap_or_else(|| panic!("no finding about {CONTAINER} in {:#?}", r.findings))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_and_weekly_runs_against_real_servers() {
    // The engine starts while the other servers do.
    let docker = std::thread::spawn(docker_with_compose_service);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("wal");
    std::fs::create_dir_all(&archive).unwrap();
    // PostgreSQL runs as `postgres`: let it reach and write the archive directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(format!("cp %p {}/%f", archive.display())),
        ..Default::default()
    })
    .unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL, last_seen timestamptz);
         INSERT INTO users (email, last_seen) SELECT 'u' || g || '@example.com', now() FROM generate_series(1, 250) g;
         CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
    )
    .unwrap();
    wait_archived(&pg);
    let redis = RedisServer::start().unwrap();
    let dead_redis_port = tej_testkit::free_port();
    let s3 = S3Server::start().unwrap();
    let bucket = s3.unique_bucket("daily").unwrap();
    let tls = tej_testkit::TlsEndpoint::start(60).unwrap();
    let dead_tls_port = tej_testkit::free_port();

    // Logs: one error in the window.
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let now = jiff::Timestamp::now();
    std::fs::write(
        logs.join("combined.log"),
        format!(
            "{} info server started\n{} error upstream timed out\n",
            now - jiff::SignedDuration::from_hours(1),
            now - jiff::SignedDuration::from_mins(5)
        ),
    )
    .unwrap();
    let access = dir.path().join("access.log");
    let clf = (now - jiff::SignedDuration::from_hours(2))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%d/%b/%Y:%H:%M:%S +0000")
        .to_string();
    std::fs::write(
        &access,
        format!(
            "203.0.113.5 - - [{clf}] \"GET /x?id=1%27%20UNION%20SELECT%20password HTTP/1.1\" 403 0 \"-\" \"sqlmap\" 0.002\n\
             203.0.113.6 - - [16/Jan/2025:10:00:00 +0000] \"GET /old?q=1%27%20or%201=1 HTTP/1.1\" 500 0 \"-\" \"x\" 0.002\n"
        ),
    )
    .unwrap();
    let local_repo = dir.path().join("backups");
    let docker = docker.join().unwrap();
    let toml = format!(
        r#"
[[database]]
name = "app"
url = "{url}"

[[redis]]
name = "cache"
url = "{}"

[[redis]]
name = "gone"
url = "redis://127.0.0.1:{dead_redis_port}/0"

[backup]
repositories = ["{}"]

[[tls]]
endpoint = "{}"
server_name = "localhost"

[[tls]]
endpoint = "127.0.0.1:{dead_tls_port}"

[logs]
paths = ["{}"]
access_log = "{}"

[[check]]
name = "active-users"
sql = "SELECT count(*) FROM users WHERE last_seen > now() - interval '15 minutes'"
warn = 1000
crit = 5000
unit = "users"

[[check]]
name = "cache-keys"
redis = ["DBSIZE"]
warn = 100
crit = 1000

[compose]
project = "shop"
docker_host = "{}"
services = ["backend"]
"#,
        redis.url(),
        local_repo.display(),
        tls.endpoint(),
        logs.display(),
        access.display(),
        docker.host()
    );
    let cfg = Config::from_toml_with_env(&toml, "tej.toml", &|_| None).unwrap();

    // A real backup in both repositories, verified in the local one only.
    let s3_store = S3Store::connect(
        S3Location::new(bucket.clone(), "db").unwrap(),
        S3Options {
            endpoint: Some(s3.endpoint()),
            region: Some(s3.region().to_string()),
            force_path_style: true,
            access_key: Some(s3.access_key().to_string()),
            secret_key: Some(tej_core::Secret::new(s3.secret_key())),
            ..S3Options::default()
        },
    )
    .await
    .unwrap();
    let s3_repo = Arc::new(Repository::from_store(Arc::new(s3_store)));
    let local = Repository::open(local_repo.to_str().unwrap())
        .await
        .unwrap();
    let runner = TokioCommandRunner;
    create_logical_backup(
        &runner,
        &[local.clone(), (*s3_repo).clone()],
        &LogicalBackupOptions::new(DbTarget::new(url.clone())),
        &SystemClock,
    )
    .await
    .unwrap();
    verify_backup(
        &runner,
        &local,
        "latest",
        &VerifyOptions {
            record: true,
            ..VerifyOptions::default()
        },
        &SystemClock,
    )
    .await
    .unwrap();
    // Some Redis keys for the custom check and the big-keys scan.
    redis_cmd(&redis.url(), &["SET", "sess:1", "x"]).await;
    redis_cmd(&redis.url(), &["SET", "sess:2", "y"]).await;

    let mut ctx = RunContext::from_config(
        &cfg,
        RunOptions {
            check_timeout: Duration::from_secs(20),
            ..RunOptions::default()
        },
    )
    .unwrap();
    ctx.tls_prober = Arc::new(tej_runbook::RustlsProber {
        ca_file: Some(tls.ca_file().to_path_buf()),
        timeout: Some(Duration::from_secs(5)),
    });
    ctx.repositories.push(RepositoryTarget {
        name: format!("s3://{bucket}/db"),
        repo: tej_runbook::Lazy::ready(s3_repo.clone()),
    });

    // ---- daily ----
    let r = daily_health(&ctx, &SystemClock).await;
    let pg_findings: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.target == "db:app" && f.check.starts_with("postgres."))
        .collect();
    assert!(!pg_findings.is_empty());
    assert!(
        pg_findings.iter().all(|f| f.severity != Severity::Critical),
        "{pg_findings:#?}"
    );
    let wal = find(&r, "backups.wal-archiving", "db:app");
    assert_eq!(wal.severity, Severity::Ok, "{wal:#?}");
    assert!(wal.summary.contains("archived"), "{}", wal.summary);
    assert_eq!(find(&r, "redis.ping", "redis:cache").severity, Severity::Ok);
    let gone = find(&r, "redis.ping", "redis:gone");
    assert_eq!(gone.severity, Severity::Critical, "{gone:#?}");
    assert!(gone.summary.contains("unreachable"), "{}", gone.summary);
    let local_name = format!("repo:{}", local_repo.display());
    let b = find(&r, "backups.recent", &local_name);
    assert_eq!(b.severity, Severity::Ok, "{b:#?}");
    assert!(b.summary.contains("newest backup of app"), "{}", b.summary);
    // The S3 copy was never verified: a warning, not hidden by anything.
    let s3_name = format!("repo:s3://{bucket}/db");
    assert_eq!(
        find(&r, "backups.recent", &s3_name).severity,
        Severity::Warning
    );
    let active = find(&r, "custom.active-users", "db:app");
    assert_eq!(active.metrics[0].value, 250.0);
    assert_eq!(active.severity, Severity::Ok);
    let keys = find(&r, "custom.cache-keys", "redis:cache");
    assert_eq!(keys.metrics[0].value, 2.0, "{keys:#?}");
    assert!(
        r.findings.iter().any(|f| f.target == "host:error"
            && f.check.starts_with("logs.")
            && f.severity == Severity::Warning),
        "the error line in the window is reported: {:#?}",
        r.findings
    );
    assert!(
        r.findings
            .iter()
            .any(|f| f.target == "host" && f.check == "memory.usage")
    );
    let tls_target = format!("tls:{}", tls.endpoint());
    let good: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.target == tls_target)
        .collect();
    assert!(!good.is_empty(), "{:#?}", r.findings);
    assert!(good.iter().all(|f| f.severity == Severity::Ok), "{good:#?}");
    let dead: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.target == format!("tls:127.0.0.1:{dead_tls_port}"))
        .collect();
    assert!(
        dead.iter().any(|f| f.severity == Severity::Critical),
        "{dead:#?}"
    );
    assert_eq!(r.severity(), Severity::Critical);
    // The Compose service is running and nothing else of the project is reported down.
    let svc = container_finding(&r);
    assert_eq!(svc.severity, Severity::Ok, "{svc:#?}");
    assert!(svc.summary.contains("backend"), "{}", svc.summary);
    assert!(svc.summary.contains("running"), "{}", svc.summary);
    assert!(
        r.findings
            .iter()
            .filter(|f| f.target.starts_with("compose:shop"))
            .all(|f| f.severity == Severity::Ok),
        "{:#?}",
        r.findings
    );

    // ---- weekly ----
    let w = weekly_audit(&ctx, &SystemClock).await;
    let v = find(&w, "backups.verify", &s3_name);
    assert_eq!(v.severity, Severity::Ok, "{v:#?}");
    assert!(v.summary.contains("verified"), "{}", v.summary);
    // Verification was recorded: tomorrow's daily check sees the S3 copy verified.
    // Meanwhile the backend went down: tomorrow's check reports it critical.
    docker.docker(&["stop", CONTAINER]).unwrap();
    let r2 = daily_health(&ctx, &SystemClock).await;
    assert_eq!(find(&r2, "backups.recent", &s3_name).severity, Severity::Ok);
    let down = container_finding(&r2);
    assert_eq!(down.severity, Severity::Critical, "{down:#?}");
    assert!(down.summary.contains("exited"), "{}", down.summary);
    assert!(!down.summary.contains("running"), "{}", down.summary);
    // Then its container was removed: the configured service is still reported, critical.
    docker.docker(&["rm", "-f", CONTAINER]).unwrap();
    let r3 = daily_health(&ctx, &SystemClock).await;
    let gone = r3
        .findings
        .iter()
        .find(|f| f.target == "compose:shop/backend" && f.check == "docker.container")
        .unwrap_or_else(|| panic!("the removed service is not reported: {:#?}", r3.findings));
    assert_eq!(gone.severity, Severity::Critical, "{gone:#?}");
    assert!(gone.summary.contains("backend"), "{}", gone.summary);
    assert!(gone.summary.contains("no container"), "{}", gone.summary);
    assert_eq!(
        find(&w, "security.backup-encryption", &s3_name).severity,
        Severity::Critical
    );
    assert_eq!(
        find(&w, "security.backup-encryption", &local_name).severity,
        Severity::Warning
    );
    assert!(
        w.findings
            .iter()
            .any(|f| f.target == "db:app" && f.check.starts_with("postgres."))
    );
    assert!(
        find(&w, "redis.big-keys", "redis:cache")
            .summary
            .contains("sess:")
    );
    assert_eq!(
        find(&w, "redis.ping", "redis:gone").severity,
        Severity::Critical
    );
    assert_eq!(
        find(&w, "cleanup.logs", &format!("host:{}", logs.display())).severity,
        Severity::Ok
    );
    assert!(
        find(&w, "cleanup.backups", &local_name)
            .summary
            .contains("would remove 0 of 1")
    );
    // The probe two hours ago is flagged (answered 403: a warning); the 2025 one is outside
    // the week and not counted.
    let sqli = find(&w, "security.sql-injection", "api");
    assert_eq!(sqli.severity, Severity::Warning, "{sqli:#?}");
    assert_eq!(sqli.metrics[0].value, 1.0);
}

async fn redis_cmd(url: &str, argv: &[&str]) {
    // RedisAdmin has no SET: speak RESP directly.
    let mut s = tokio::net::TcpStream::connect(
        url.trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap(),
    )
    .await
    .unwrap();
    let mut cmd = format!("*{}\r\n", argv.len());
    for a in argv {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(cmd.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"+OK"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}
