//! The emergency procedures against real PostgreSQL and Redis (the firewall through a mock
//! command runner: the real firewall is never touched; Docker and the application probe are
//! tej-secrets/tej-deploy mocks).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tej_core::command::{CommandOutput, ExitInfo};
use tej_core::{
    Calendar, Environment, Executor, Fixed, Guard, MockCommandRunner, Outcome, Severity,
    SystemClock,
};
use tej_db::pg::{PasswordResetOptions, PgAdmin, PgClient, PgConnectOptions};
use tej_db::redis::{RedisAdmin, RedisClient, RedisConnectOptions};
use tej_host::{Firewall, FirewallPolicy};
use tej_runbook::RedisSessions;
use tej_runbook::RotateSecretsStep;
use tej_runbook::procedures::emergency::{SecurityBreach, SessionTarget, security_breach};
use tej_secrets::{MockAppProbe, MockServiceControl, RotateOptions, RotationMode, Rotator};
use tej_testkit::{PgCluster, RedisServer};

fn ok(stdout: &str) -> CommandOutput {
    CommandOutput {
        status: ExitInfo {
            code: Some(0),
            signal: None,
        },
        stdout: stdout.as_bytes().to_vec(),
        stderr: String::new(),
        duration: Duration::ZERO,
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_breach_against_real_postgres_and_redis() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("breach").unwrap();
    pg.psql(
        "breach",
        "CREATE TABLE users (id int PRIMARY KEY, email text, password_reset_required boolean NOT NULL DEFAULT false);
         INSERT INTO users SELECT g, 'u' || g || '@example.com', g = 1 FROM generate_series(1, 5) g;",
    )
    .unwrap();
    let redis = RedisServer::start().unwrap();
    for k in ["sess:a", "sess:b", "sess:c", "cache:keep"] {
        redis_cli(redis.port(), &["SET", k, "v"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    std::fs::write(
        &env,
        "JWT_SECRET=compromised1\nJWT_REFRESH_SECRET=compromised2\nDB_NAME=app\n",
    )
    .unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(
        logs.join("combined.log"),
        "2025-01-16T10:00:00Z login failed from 198.51.100.23 user=admin\n\
         2025-01-16T10:00:05Z GET /api/v1/users client 192.0.2.10\n\
         2025-01-16T10:00:09Z GET /api/v1/users?id=1%27%20OR%201=1 client 198.51.100.23\n",
    )
    .unwrap();

    // ufw: recorded, never run.
    let ufw_calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut runner = MockCommandRunner::new();
    let c = ufw_calls.clone();
    runner.expect_run().returning(move |spec| {
        let argv: Vec<String> = std::iter::once(spec.program.clone())
            .chain(spec.args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        c.lock().unwrap().push(argv.join(" "));
        Ok(ok("Status: active\n\n     To    Action    From\n     --    ------    ----\n[ 1] 22/tcp                     ALLOW IN    Anywhere\n"))
    });

    let admin: Arc<dyn PgAdmin> = Arc::new(PgClient::new(&PgConnectOptions::new(&url)).unwrap());
    let radmin: Arc<dyn RedisAdmin> = Arc::new(
        RedisClient::connect(&RedisConnectOptions::new(redis.url()))
            .await
            .unwrap(),
    );
    let guard = Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(SystemClock),
        confirmer: Arc::new(Fixed(true)),
        override_window: false,
    };
    let mut service = MockServiceControl::new();
    service.expect_recreate().times(1).returning(|_| Ok(()));
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(200));
    probe.expect_login().returning(|| Ok(200));
    let rotator = Rotator::new(RedisSessions(radmin.clone()), service, probe, guard.clone());
    let mut ropts = RotateOptions::new(&env);
    ropts.mode = RotationMode::Emergency;
    ropts.verify_interval = Duration::from_millis(10);
    let audit = dir.path().join("audit.jsonl");

    let build = |runner: MockCommandRunner, rotator| {
        security_breach(SecurityBreach {
            address: "198.51.100.23".into(),
            firewall: Firewall::new(Arc::new(runner), FirewallPolicy::default()),
            rotation: Ok(Box::new(RotateSecretsStep::new(rotator, ropts.clone()))),
            sessions: vec![SessionTarget {
                name: "redis:cache".into(),
                admin: radmin.clone(),
                pattern: "sess:*".into(),
            }],
            unreachable_sessions: vec![],
            password_resets: vec![(admin.clone(), PasswordResetOptions::default())],
            log_paths: vec![logs.clone()],
            log_sample: 10,
        })
    };
    let procedure = build(runner, rotator);

    // Dry run first: nothing changes anywhere.
    let mut ex = Executor::new(guard.clone());
    ex.audit = Some(tej_core::AuditLog::new(&audit));
    ex.dry_run = true;
    let plan = ex.run(&procedure).await;
    assert!(
        plan.steps.iter().all(|s| s.outcome == Outcome::Planned),
        "{plan:#?}"
    );
    assert!(
        plan.steps[3].actions[0].contains("4 of 5 users"),
        "{:?}",
        plan.steps[3]
    );
    assert_eq!(redis_cli(redis.port(), &["DBSIZE"]), "4");
    assert!(ufw_calls.lock().unwrap().is_empty());
    assert!(
        std::fs::read_to_string(&env)
            .unwrap()
            .contains("compromised1")
    );
    assert_eq!(
        pg.psql(
            "breach",
            "SELECT count(*) FROM users WHERE password_reset_required"
        )
        .unwrap(),
        "1"
    );

    // The real run.
    ex.dry_run = false;
    let r = ex.run(&procedure).await;
    assert!(r.succeeded(), "{r:#?}");
    let calls = ufw_calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            "ufw status numbered",
            "ufw insert 1 deny from 198.51.100.23 to any"
        ]
    );
    // Every secret rotated, other keys untouched.
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(!text.contains("compromised"), "{text}");
    assert!(text.contains("DB_NAME=app"));
    // Emergency rotation flushed the session database; the invalidation found nothing left.
    assert_eq!(redis_cli(redis.port(), &["DBSIZE"]), "0");
    assert_eq!(
        pg.psql(
            "breach",
            "SELECT count(*) FROM users WHERE password_reset_required"
        )
        .unwrap(),
        "5"
    );
    let f = r
        .findings()
        .into_iter()
        .find(|f| f.check == "security.address-in-logs")
        .unwrap()
        .clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.metrics[0].value, 2.0);
    assert!(f.detail.as_deref().unwrap().contains("OR%201=1"));
    // Audit trail: the mutating and destructive steps, in order.
    let entries = tej_core::AuditLog::new(&audit).read_all().unwrap();
    let steps: Vec<&str> = entries.iter().map(|e| e.step.as_str()).collect();
    assert_eq!(
        steps,
        vec![
            "firewall-block",
            "rotate-secrets-emergency",
            "redis-invalidate-sessions",
            "force-password-reset"
        ]
    );
    assert!(entries.iter().all(|e| e.outcome == "applied"));
    let raw = std::fs::read_to_string(&audit).unwrap();
    assert!(!raw.contains("compromised"));
}

/// A real backup in a local repository of a real database.
async fn backed_up_database(
    pg: &PgCluster,
    name: &str,
    repo_dir: &std::path::Path,
) -> (String, tej_backup::Repository) {
    let url = pg.create_database(name).unwrap();
    pg.psql(
        name,
        "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);
         INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 500) g;
         CREATE EXTENSION amcheck;",
    )
    .unwrap();
    let repo = tej_backup::Repository::open(repo_dir.to_str().unwrap())
        .await
        .unwrap();
    tej_backup::create_logical_backup(
        &tej_core::TokioCommandRunner,
        std::slice::from_ref(&repo),
        &tej_backup::LogicalBackupOptions::new(tej_backup::DbTarget::new(&url)),
        &SystemClock,
    )
    .await
    .unwrap();
    (url, repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_drill_restores_the_newest_backup_and_measures_rto_and_rpo() {
    use tej_runbook::procedures::quarterly::{
        DrillRequest, DrillTargets, LogicalDrill, disaster_recovery_drill,
    };
    let pg = PgCluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, repo) = backed_up_database(&pg, "drill", dir.path()).await;
    let drill = LogicalDrill {
        runner: Arc::new(tej_core::TokioCommandRunner),
        repo: Arc::new(repo),
        server: tej_backup::DbTarget::new(&url),
        encryption: Default::default(),
        clock: Arc::new(SystemClock),
    };
    let req = DrillRequest {
        sanity_queries: vec!["SELECT count(*) FROM users".into()],
    };
    let (report, summary) = disaster_recovery_drill(
        &drill,
        &req,
        &DrillTargets::default(),
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(report.severity(), Severity::Ok, "{report:#?}");
    let s = summary.unwrap();
    assert_eq!(s.kind, "logical");
    assert_eq!(
        s.queries,
        vec![("SELECT count(*) FROM users".to_string(), "500".to_string())]
    );
    assert!(s.rto_secs > 0.0 && s.rpo_secs >= 0.0);
    // The scratch database is gone, the source untouched.
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'tej_%'"
        )
        .unwrap(),
        "0"
    );
    // A failing sanity query fails the drill.
    let bad = DrillRequest {
        sanity_queries: vec!["SELECT count(*) FROM missing_table".into()],
    };
    let (report, _) = disaster_recovery_drill(
        &drill,
        &bad,
        &DrillTargets::default(),
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(report.severity(), Severity::Critical);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_corruption_restores_the_newest_backup_into_the_real_database() {
    use tej_deploy::{ContainerListing, ContainerState, Control, MockContainerRuntime};
    use tej_runbook::procedures::emergency::{AppServices, DbCorruptionOptions, db_corruption};
    let pg = PgCluster::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, repo) = backed_up_database(&pg, "broken", dir.path()).await;
    // The "damage": rows lost after the backup.
    pg.psql("broken", "DELETE FROM users WHERE id > 100")
        .unwrap();

    let docker_calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let state = Arc::new(Mutex::new(ContainerState::Running));
    let mut rt = MockContainerRuntime::new();
    let s = state.clone();
    rt.expect_list_containers().returning(move |_| {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(tej_deploy::LABEL_PROJECT.to_string(), "app".to_string());
        labels.insert(tej_deploy::LABEL_SERVICE.to_string(), "backend".to_string());
        Ok(vec![ContainerListing {
            id: "c1".into(),
            name: "app-backend-1".into(),
            image: "i".into(),
            image_id: "sha256:i".into(),
            labels,
            state: *s.lock().unwrap(),
        }])
    });
    let c = docker_calls.clone();
    rt.expect_control().returning(move |_, a| {
        let next = match a {
            Control::Stop { .. } => ContainerState::Exited,
            _ => ContainerState::Running,
        };
        c.lock().unwrap().push(format!("{next:?}"));
        *state.lock().unwrap() = next;
        Ok(())
    });
    let restore = tej_backup::RestoreStep {
        runner: Arc::new(tej_core::TokioCommandRunner),
        repo,
        selector: "latest".into(),
        opts: tej_backup::RestoreOptions::new(tej_backup::DbTarget::new(&url)),
    };
    let p = db_corruption(
        Arc::new(PgClient::new(&PgConnectOptions::new(&url)).unwrap()),
        Some(AppServices {
            runtime: Arc::new(rt),
            project: tej_deploy::Project::new("app"),
            services: vec!["backend".into()],
            stop_timeout: Duration::from_secs(1),
        }),
        Box::new(restore),
        &DbCorruptionOptions {
            sanity_queries: vec!["SELECT count(*) FROM users".into()],
            restore_anyway: true,
            ..DbCorruptionOptions::default()
        },
    );
    let guard = Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(SystemClock),
        confirmer: Arc::new(Fixed(true)),
        override_window: false,
    };
    let r = Executor::new(guard).run(&p).await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(
        pg.psql("broken", "SELECT count(*) FROM users").unwrap(),
        "500"
    );
    assert_eq!(*docker_calls.lock().unwrap(), vec!["Exited", "Running"]);
}
