//! "Backups completed" judges each kind of backup by its own schedule: a repository holding a
//! fresh physical base backup and a fresh logical dump of a real PostgreSQL 15, and no file
//! backups configured, is not critical; the dump is late after 26 h, the weekly base backup
//! only after eight days.

use jiff::{SignedDuration, Timestamp};
use tej_backup::{
    DbTarget, LogicalBackupOptions, PhysicalBackupOptions, Repository, VerifyOptions,
    create_logical_backup, create_physical_backup, verify_backup,
};
use tej_core::{Config, Finding, Severity, SystemClock, TokioCommandRunner};
use tej_runbook::{RunContext, RunOptions, backup_freshness, daily_health};
use tej_testkit::{PgCluster, PgClusterOptions};

fn about<'a>(findings: &'a [Finding], what: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == "backups.recent" && f.summary.contains(what))
        .unwrap_or_else(|| panic!("no backups.recent about {what} in {findings:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_backup_kind_is_judged_by_its_own_schedule() {
    use std::os::unix::fs::PermissionsExt;
    let archive = tempfile::tempdir().unwrap();
    std::fs::set_permissions(archive.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(format!("cp %p {}/%f", archive.path().display())),
        ..PgClusterOptions::default()
    })
    .unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo_path = dir.path().join("repo");
    let repo = Repository::open(repo_path.to_str().unwrap()).await.unwrap();
    let runner = TokioCommandRunner;
    let mut physical = PhysicalBackupOptions::new(DbTarget::new(pg.url("postgres")));
    physical.run.cleanup_older_than = std::time::Duration::ZERO;
    let p = create_physical_backup(std::slice::from_ref(&repo), &physical, &SystemClock)
        .await
        .unwrap();
    assert!(p.backup.succeeded(), "{:?}", p.backup.repositories);
    create_logical_backup(
        &runner,
        std::slice::from_ref(&repo),
        &LogicalBackupOptions::new(DbTarget::new(url.clone())),
        &SystemClock,
    )
    .await
    .unwrap();
    let verify = VerifyOptions {
        record: true,
        ..VerifyOptions::default()
    };
    for b in tej_backup::list_backups(&repo).await.unwrap() {
        verify_backup(&runner, &repo, b.id.as_str(), &verify, &SystemClock)
            .await
            .unwrap();
    }

    // The daily check over tej.toml: no [backup] files, so no file backup is expected.
    let toml = format!("[backup]\nrepositories = [\"{}\"]\n", repo_path.display());
    let cfg = Config::from_toml_with_env(&toml, "tej.toml", &|_| None).unwrap();
    let ctx = RunContext::from_config(&cfg, RunOptions::default()).unwrap();
    let r = daily_health(&ctx, &SystemClock).await;
    let recent: Vec<Finding> = r
        .findings
        .iter()
        .filter(|f| f.check == "backups.recent")
        .cloned()
        .collect();
    assert_eq!(recent.len(), 2, "one finding per kind: {recent:#?}");
    assert!(
        recent.iter().all(|f| f.severity == Severity::Ok),
        "fresh and verified, nothing is late: {recent:#?}"
    );
    assert!(
        !recent.iter().any(|f| f.summary.contains("files")),
        "{recent:#?}"
    );
    about(&recent, "base backup");
    about(&recent, "of app");

    // Three days later: the daily dump is late, the weekly base backup is not.
    let inv = repo.inventory().await.unwrap();
    let max = RunOptions::default().backup_max_age;
    let later =
        |days: i64| -> Timestamp { Timestamp::now() + SignedDuration::from_hours(24 * days) };
    let f = backup_freshness(&inv, "repo:r", later(3), max);
    assert_eq!(about(&f, "of app").severity, Severity::Critical, "{f:#?}");
    assert_eq!(about(&f, "base backup").severity, Severity::Ok, "{f:#?}");
    // Nine days later both are.
    let f = backup_freshness(&inv, "repo:r", later(9), max);
    assert_eq!(about(&f, "of app").severity, Severity::Critical, "{f:#?}");
    let base = about(&f, "base backup");
    assert_eq!(base.severity, Severity::Critical, "{f:#?}");
    assert!(
        base.summary.contains("older than 8 days"),
        "{}",
        base.summary
    );
}
