//! The weekly audit does what the runbook's "Full System Audit" says, against real servers:
//! `VACUUM ANALYZE` runs (PostgreSQL 15 records it), logs older than 30 days go, an old unused
//! Docker image is pruned while the image a container uses and the rollback image stay, and
//! retention runs on the repository; the destructive steps wait for confirmation.

use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use tej_backup::{DbTarget, LogicalBackupOptions, Repository, create_logical_backup};
use tej_core::{
    AuditLog, Calendar, Config, Environment, Executor, FakeClock, Finding, Fixed, Guard, Report,
    Severity, SystemClock, TokioCommandRunner,
};
use tej_runbook::{RunContext, RunOptions, weekly_maintenance};
use tej_testkit::{DockerEngine, PgCluster};

fn executor(confirm: bool, audit: &std::path::Path) -> Executor {
    let mut ex = Executor::new(Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(SystemClock),
        confirmer: Arc::new(Fixed(confirm)),
        override_window: false,
    });
    ex.audit = Some(AuditLog::new(audit));
    ex
}

fn step<'a>(r: &'a Report, step: &str) -> Vec<&'a Finding> {
    let check = format!("weekly-audit.{step}");
    let v: Vec<&Finding> = r.findings.iter().filter(|f| f.check == check).collect();
    assert!(!v.is_empty(), "no {check} in {:#?}", r.findings);
    v
}

fn image_exists(engine: &DockerEngine, reference: &str) -> bool {
    engine.docker(&["image", "inspect", reference]).is_ok()
}

fn vacuumed(pg: &PgCluster) -> String {
    pg.psql(
        "app",
        "SELECT (last_vacuum IS NOT NULL)::text || ',' || (last_analyze IS NOT NULL)::text \
         FROM pg_stat_user_tables WHERE relname = 'items'",
    )
    .unwrap()
    .trim()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_audit_vacuums_cleans_prunes_and_keeps_what_it_must() {
    let engine = std::thread::spawn(|| {
        let engine = DockerEngine::start().unwrap();
        for tag in ["shop/web:v1", "shop/web:v0", "shop/web:unused"] {
            engine.import_busybox_image(tag).unwrap();
        }
        // The image the last deploy replaced, kept for `tej rollback`.
        engine
            .docker(&["tag", "shop/web:v0", "tej-rollback/shop-web:previous"])
            .unwrap();
        engine.docker(&["rmi", "shop/web:v0"]).unwrap();
        engine
            .docker(&[
                "run",
                "-d",
                "--name",
                "shop-web-1",
                "--network",
                "host",
                "--stop-timeout",
                "1",
                "--label",
                "com.docker.compose.project=shop",
                "--label",
                "com.docker.compose.service=web",
                "--label",
                "com.docker.compose.container-number=1",
                "--label",
                "com.docker.compose.oneoff=False",
                "shop/web:v1",
                "sleep",
                "600",
            ])
            .unwrap();
        engine
    });
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE items (id int, body text); \
         INSERT INTO items SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g; \
         DELETE FROM items WHERE id % 2 = 0;",
    )
    .unwrap();
    assert_eq!(vacuumed(&pg), "false,false");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let old = logs.join("api.log.1");
    std::fs::write(&old, "old\n").unwrap();
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400))
        .unwrap();
    std::fs::write(logs.join("api.log"), "new\n").unwrap();
    let repo_path = dir.path().join("repo");
    let repo = Repository::open(repo_path.to_str().unwrap()).await.unwrap();
    create_logical_backup(
        &TokioCommandRunner,
        std::slice::from_ref(&repo),
        &LogicalBackupOptions::new(DbTarget::new(url.clone())),
        &SystemClock,
    )
    .await
    .unwrap();
    let engine = engine.join().unwrap();
    let toml = format!(
        r#"
[[database]]
name = "app"
url = "{url}"

[backup]
repositories = ["{}"]

[logs]
paths = ["{}"]

[compose]
project = "shop"
docker_host = "{}"
"#,
        repo_path.display(),
        logs.display(),
        engine.host()
    );
    let cfg = Config::from_toml_with_env(&toml, "tej.toml", &|_| None).unwrap();
    let ctx = RunContext::from_config(&cfg, RunOptions::default()).unwrap();
    // Eight days from now every image here is older than the runbook's 168 h.
    let clock = Arc::new(FakeClock::new(
        Timestamp::now() + SignedDuration::from_hours(8 * 24),
    ));
    let audit = dir.path().join("audit.jsonl");

    // Not confirmed: VACUUM ANALYZE (mutating) runs, the destructive steps only plan.
    let r = weekly_maintenance(&ctx, &executor(false, &audit), clock.clone()).await;
    assert_eq!(vacuumed(&pg), "true,true", "{:#?}", r.findings);
    for s in ["disk-cleanup", "docker-image-prune", "backup-prune"] {
        let f = step(&r, s);
        assert!(
            f.iter()
                .all(|f| f.severity == Severity::Warning && f.summary.contains("--yes")),
            "{s}: {f:#?}"
        );
    }
    let prune_plan = step(&r, "docker-image-prune")[0];
    assert!(
        prune_plan
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("shop/web:unused")),
        "the plan names the image: {prune_plan:#?}"
    );
    assert!(old.exists());
    assert!(image_exists(&engine, "shop/web:unused"));

    // Confirmed: everything is done and audited.
    let r = weekly_maintenance(&ctx, &executor(true, &audit), clock.clone()).await;
    for s in [
        "vacuum-analyze",
        "disk-cleanup",
        "docker-image-prune",
        "backup-prune",
    ] {
        let f = step(&r, s);
        assert!(f.iter().all(|f| f.severity == Severity::Ok), "{s}: {f:#?}");
    }
    assert!(!old.exists(), "the 40-day-old log is removed");
    assert!(logs.join("api.log").exists(), "today's log stays");
    assert!(
        !image_exists(&engine, "shop/web:unused"),
        "the old unused image is pruned"
    );
    assert!(
        image_exists(&engine, "shop/web:v1"),
        "the image in use stays"
    );
    assert!(
        image_exists(&engine, "tej-rollback/shop-web:previous"),
        "the rollback image stays"
    );
    assert_eq!(
        tej_backup::list_backups(&repo).await.unwrap().len(),
        1,
        "the only backup is within retention"
    );
    // The audit's checks still run, without the dry-run plans the steps replaced.
    assert!(
        r.findings
            .iter()
            .any(|f| f.target == "db:app" && f.check.starts_with("postgres.")),
        "{:#?}",
        r.findings
    );
    assert!(!r.findings.iter().any(|f| f.check == "cleanup.logs"));
    let entries = AuditLog::new(&audit).read_all().unwrap();
    for s in [
        "vacuum-analyze",
        "disk-cleanup",
        "docker-image-prune",
        "backup-prune",
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e.step == s && e.outcome == "applied" && e.procedure == "weekly-audit"),
            "{s} applied and audited: {entries:#?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e.step == "docker-image-prune" && e.outcome == "refused"),
        "{entries:#?}"
    );
}
