//! The pre-maintenance backup of the monthly deep maintenance is taken as `[backup]` says:
//! its format and compression, as the nightly backup takes them, against a real server.

use std::sync::Arc;
use tej_core::calendar::ProcedureKind;
use tej_core::{Calendar, Config, Environment, Executor, Fixed, Guard};
use tej_runbook::procedures::monthly::DeepMaintenanceOptions;
use tej_runbook::{CalendarRunner, RunContext, RunOptions};
use tej_testkit::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_maintenance_backup_honours_the_configured_format_and_compression() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("deepcfg").unwrap();
    pg.psql(
        "deepcfg",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g;",
    )
    .unwrap();
    let repo_dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "environment = \"staging\"\n\
         [[database]]\nname = \"main\"\nurl = \"{url}\"\n\
         [backup]\nrepositories = [\"{}\"]\nformat = \"plain\"\ncompression = \"gzip\"\ncompression_level = 4\n",
        repo_dir.path().display()
    );
    let config = Config::from_toml_with_env(&toml, "tej.toml", &|_| None).unwrap();
    let ctx = RunContext::from_config(&config, RunOptions::default()).unwrap();
    let guard = Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(tej_core::SystemClock),
        confirmer: Arc::new(Fixed(true)),
        override_window: true,
    };
    let mut runner = CalendarRunner::new(
        Arc::new(ctx),
        Executor::new(guard),
        Arc::new(tej_core::TokioCommandRunner),
        Arc::new(tej_core::SystemClock),
    );
    runner.deep_maintenance = DeepMaintenanceOptions {
        amcheck: None,
        ..DeepMaintenanceOptions::default()
    };
    let report = runner
        .run_kind(ProcedureKind::DatabaseDeepMaintenance)
        .await
        .unwrap();

    let repo = tej_backup::Repository::open(repo_dir.path().to_str().unwrap())
        .await
        .unwrap();
    let backups = tej_backup::list_backups(&repo).await.unwrap();
    assert_eq!(backups.len(), 1, "{report:#?}");
    assert_eq!(
        backups[0].format,
        Some(tej_backup::DumpFormat::Plain),
        "{:#?}",
        backups[0]
    );
    assert_eq!(backups[0].compression, "gzip-4", "{:#?}", backups[0]);
    assert!(
        backups[0].verification.as_ref().is_some_and(|v| v.ok),
        "{:#?}",
        backups[0]
    );
}
