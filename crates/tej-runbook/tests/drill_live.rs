//! The quarterly disaster-recovery drill against a real PostgreSQL 15 cluster: a physical
//! base backup in a local repository, later commits in its WAL archive, and the calendar
//! runner choosing the point-in-time recovery drill, whose scratch cluster fetches WAL
//! through the `tej wal fetch` command line and must see the commits made after the backup.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tej_backup::{
    DbTarget, PhysicalBackupOptions, PushOptions, Repository, WalArchive, create_physical_backup,
};
use tej_core::calendar::ProcedureKind;
use tej_core::{
    Calendar, Config, Environment, Executor, Fixed, Guard, Report, Severity, SystemClock,
    TokioCommandRunner,
};
use tej_runbook::{CalendarRunner, RunContext, RunOptions};
use tej_testkit::{PgCluster, PgClusterOptions};

fn mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn wait_archived(pg: &PgCluster) {
    let seg = pg
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .unwrap();
    let seg = seg.trim();
    for _ in 0..600 {
        let last = pg
            .psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            )
            .unwrap();
        if last.trim() >= seg {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{seg} was not archived: {}", pg.server_log());
}

fn finding<'a>(r: &'a Report, check: &str) -> &'a tej_core::Finding {
    r.findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} in {:#?}", r.findings))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarterly_drill_recovers_a_physical_backup_and_its_wal_through_tej_wal_fetch() {
    // Short paths (the scratch server's socket lives under state_dir), traversable by the
    // `postgres` OS user that runs the archive and restore commands.
    let dir = tempfile::Builder::new()
        .prefix("tejdr-")
        .tempdir_in("/tmp")
        .unwrap();
    mode(dir.path(), 0o755);
    let archive = dir.path().join("arch");
    let state = dir.path().join("state");
    let repo_dir = dir.path().join("repo");
    for d in [&archive, &state, &repo_dir] {
        std::fs::create_dir(d).unwrap();
    }
    mode(&archive, 0o777);
    mode(&state, 0o755);

    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(format!("cp %p {}/%f", archive.display())),
        ..Default::default()
    })
    .unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE users (id int PRIMARY KEY); INSERT INTO users SELECT generate_series(1, 3);",
    )
    .unwrap();

    let repo_spec = repo_dir.to_str().unwrap().to_string();
    let repo = Repository::open(&repo_spec).await.unwrap();
    create_physical_backup(
        std::slice::from_ref(&repo),
        &PhysicalBackupOptions::new(DbTarget::new(pg.url("postgres"))),
        &SystemClock,
    )
    .await
    .unwrap();
    // Commits after the base backup exist only in the WAL archive.
    pg.psql("app", "INSERT INTO users VALUES (4), (5);")
        .unwrap();
    wait_archived(&pg);
    let wal = WalArchive::new(repo.clone());
    let mut archived: Vec<_> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    archived.sort();
    for f in &archived {
        wal.push(f, &PushOptions::default()).await.unwrap();
    }

    // `tej` as the scratch cluster calls it: `TEJ [--config C] wal fetch --repo REPO FILE DEST`, served
    // here from the plain archive; each call is logged.
    let calls = state.join("fetch-calls.log");
    std::fs::write(&calls, "").unwrap();
    mode(&calls, 0o666);
    let tej = state.join("tej");
    std::fs::write(
        &tej,
        format!(
            "#!/bin/sh\necho \"$*\" >> {calls}\n[ \"$1\" = --config ] && shift 2\n[ \"$1 $2 $3\" = \"wal fetch --repo\" ] || exit 2\nexec cp {arch}/\"$5\" \"$6\"\n",
            calls = calls.display(),
            arch = archive.display()
        ),
    )
    .unwrap();
    mode(&tej, 0o755);

    let toml = format!(
        r#"
state_dir = "{}"

[[database]]
name = "app"
url = "{url}"
sanity_queries = ["SELECT count(*) FROM users"]

[backup]
repositories = ["{repo_spec}"]
"#,
        state.display()
    );
    let cfg = Config::from_toml_with_env(&toml, "tej.toml", &|_| None).unwrap();
    let ctx = RunContext::from_config(&cfg, RunOptions::default()).unwrap();
    let ex = Executor::new(Guard {
        environment: Environment::Development,
        calendar: Calendar::runbook(),
        clock: Arc::new(SystemClock),
        confirmer: Arc::new(Fixed(false)),
        override_window: false,
    });
    let mut runner = CalendarRunner::new(
        Arc::new(ctx),
        ex,
        Arc::new(TokioCommandRunner),
        Arc::new(SystemClock),
    );
    runner.tej_program = Some(tej.clone());
    // A relative configuration path (to a file the server's user can read) reaches
    // `tej wal fetch` made absolute.
    let config_abs = state.join("tej.toml");
    std::fs::write(&config_abs, &toml).unwrap();
    mode(&config_abs, 0o644);
    let cwd = std::env::current_dir().unwrap();
    let up = cwd.components().count() - 1;
    let relative: std::path::PathBuf = std::iter::repeat_n(std::path::Path::new(".."), up)
        .collect::<std::path::PathBuf>()
        .join(config_abs.strip_prefix("/").unwrap());
    assert!(
        relative.is_relative() && relative.is_file(),
        "{}",
        relative.display()
    );
    // Resolved through the real directories: a checkout in root's 0700 home must not be
    // on the way.
    let config_arg = std::fs::canonicalize(&relative).unwrap();
    runner.config_path = Some(relative);

    let r = runner
        .run_kind(ProcedureKind::DisasterRecoveryDrill)
        .await
        .unwrap();
    let drill = finding(&r, "dr.drill");
    assert_eq!(
        drill.severity,
        Severity::Ok,
        "{:#?}\n{}",
        r.findings,
        pg.server_log()
    );
    assert!(
        drill.summary.starts_with("pitr backup "),
        "{}",
        drill.summary
    );
    assert!(
        drill.summary.contains("1 sanity queries passed"),
        "{}",
        drill.summary
    );
    // Users 4 and 5 were committed after the base backup: WAL replay brought them back.
    assert_eq!(
        drill.detail.as_deref(),
        Some("SELECT count(*) FROM users: 5"),
        "{drill:#?}"
    );
    assert_eq!(finding(&r, "dr.rto").severity, Severity::Ok);
    // The newest replayed commit is seconds old.
    let rpo = finding(&r, "dr.rpo");
    assert_eq!(rpo.severity, Severity::Ok, "{rpo:#?}");
    assert!(rpo.metrics[0].value < 3600.0, "{rpo:#?}");
    // The scratch cluster fetched its WAL through the tej command line, from this repository.
    let log = std::fs::read_to_string(&calls).unwrap();
    assert!(
        log.lines().any(|l| l.starts_with(&format!(
            "--config {} wal fetch --repo {repo_spec} 0000000",
            config_arg.display()
        ))),
        "{log}"
    );
    // The scratch cluster is gone.
    let drills = state.join("drill");
    assert_eq!(std::fs::read_dir(&drills).unwrap().count(), 0);

    // A tej the server's user cannot run (inside a 0700 directory, as a checkout in root's
    // home is) fails the drill at once, naming the directory in the way.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    mode(&private, 0o700);
    let hidden = private.join("tej");
    std::fs::copy(&tej, &hidden).unwrap();
    mode(&hidden, 0o755);
    runner.tej_program = Some(hidden.clone());
    let r = runner
        .run_kind(ProcedureKind::DisasterRecoveryDrill)
        .await
        .unwrap();
    let drill = finding(&r, "dr.drill");
    assert_eq!(drill.severity, Severity::Critical, "{drill:#?}");
    assert!(
        drill.summary.contains("could not run")
            && drill.summary.contains(&private.display().to_string()),
        "{}",
        drill.summary
    );
    assert_eq!(
        std::fs::read_dir(&drills).unwrap().count(),
        0,
        "nothing was restored"
    );

    // Without the tej program the runner drills logical backups, and there are none.
    runner.tej_program = None;
    let r = runner
        .run_kind(ProcedureKind::DisasterRecoveryDrill)
        .await
        .unwrap();
    let drill = finding(&r, "dr.drill");
    assert_eq!(drill.severity, Severity::Critical);
    assert!(
        drill.summary.contains("no logical backup"),
        "{}",
        drill.summary
    );
}
