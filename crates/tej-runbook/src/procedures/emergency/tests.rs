use super::*;
use crate::RotateSecretsStep;
use std::sync::Mutex as StdMutex;
use tej_core::command::CommandOutput;
use tej_core::{
    Calendar, Environment, Executor, FakeClock, Fixed, MockCommandRunner, MockConfirmer, MockStep,
    Outcome, ProcedureReport,
};
use tej_db::pg::{MockPgAdmin, PgRow, PgValue};
use tej_db::redis::MockRedisAdmin;
use tej_deploy::{
    ContainerListing, ContainerState, LABEL_PROJECT, LABEL_SERVICE, MockContainerRuntime,
};

type Calls = Arc<StdMutex<Vec<String>>>;

fn push(calls: &Calls, s: &str) {
    calls.lock().unwrap().push(s.to_string());
}

fn out(code: i32, stdout: &str) -> CommandOutput {
    CommandOutput::exited(code, stdout, "")
}

fn guard(confirm: Arc<dyn tej_core::Confirmer>) -> Guard {
    Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(FakeClock::new("2025-01-16T06:30:00Z".parse().unwrap())),
        confirmer: confirm,
        override_window: false,
    }
}

fn executor(yes: bool) -> Executor {
    Executor::new(guard(Arc::new(Fixed(yes))))
}

/// ufw: `status numbered` answers, `deny` is recorded (and may fail).
fn ufw(calls: &Calls, deny_ok: bool) -> MockCommandRunner {
    let mut r = MockCommandRunner::new();
    let c = calls.clone();
    r.expect_run().returning(move |spec| {
        let argv: Vec<String> = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(spec.program, "ufw");
        if argv == ["status", "numbered"] {
            Ok(out(0, "Status: active\n"))
        } else {
            push(&c, &format!("ufw {}", argv.join(" ")));
            Ok(out(if deny_ok { 0 } else { 1 }, ""))
        }
    });
    r
}

fn redis(calls: &Calls) -> MockRedisAdmin {
    let mut m = MockRedisAdmin::new();
    m.expect_scan()
        .returning(|_, _, _| Ok((0, vec![b"sess:1".to_vec(), b"sess:2".to_vec()])));
    let c = calls.clone();
    m.expect_unlink().returning(move |k| {
        push(&c, "redis unlink");
        Ok(k.len() as u64)
    });
    m
}

fn pg(calls: &Calls) -> MockPgAdmin {
    let mut m = MockPgAdmin::new();
    m.expect_target()
        .return_const("db:app@127.0.0.1:5432".to_string());
    m.expect_query().returning(|_, _| {
        Ok(vec![PgRow::from_pairs([
            ("changing", PgValue::Int(3)),
            ("total", PgValue::Int(4)),
        ])])
    });
    let c = calls.clone();
    m.expect_transaction().returning(move |st| {
        push(&c, &format!("pg {}", st[0].sql()));
        Ok(vec![3])
    });
    m
}

fn rotation_step(calls: &Calls, risk: Risk, ok: bool) -> MockStep {
    let mut s = MockStep::new();
    s.expect_name()
        .return_const("rotate-secrets-emergency".to_string());
    s.expect_risk().return_const(risk);
    s.expect_target().return_const(".env".to_string());
    s.expect_plan().returning(move || {
        Ok(Plan {
            step: "rotate-secrets-emergency".into(),
            risk,
            target: ".env".into(),
            actions: vec!["rotate".into()],
        })
    });
    let c = calls.clone();
    s.expect_apply().returning(move || {
        push(&c, "rotate");
        if ok {
            Ok(StepOutput::summary("rotated"))
        } else {
            Err("the application did not come back".into())
        }
    });
    s
}

fn breach(calls: &Calls, logs: Vec<PathBuf>, deny_ok: bool, rotation_ok: bool) -> Procedure {
    security_breach(SecurityBreach {
        address: "203.0.113.7".into(),
        firewall: Firewall::new(Arc::new(ufw(calls, deny_ok)), FirewallPolicy::default()),
        rotation: Ok(Box::new(rotation_step(
            calls,
            Risk::Destructive,
            rotation_ok,
        ))),
        sessions: vec![SessionTarget {
            name: "redis:cache".into(),
            admin: Arc::new(redis(calls)),
            pattern: "sess:*".into(),
        }],
        unreachable_sessions: vec![],
        password_resets: vec![(Arc::new(pg(calls)), PasswordResetOptions::default())],
        log_paths: logs,
        log_sample: 5,
    })
}

fn steps(r: &ProcedureReport) -> Vec<(String, String)> {
    r.steps
        .iter()
        .map(|s| {
            let o = match &s.outcome {
                Outcome::Applied => "applied",
                Outcome::Planned => "planned",
                Outcome::Skipped { .. } => "skipped",
                Outcome::Refused { .. } => "refused",
                Outcome::Failed { .. } => "failed",
            };
            (s.step.clone(), o.to_string())
        })
        .collect()
}

fn log_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("app.log"),
        "2025-01-16T10:00:00Z login failed from 203.0.113.7 user=admin\n\
         2025-01-16T10:00:01Z ok from 203.0.113.70\n\
         2025-01-16T10:00:02Z GET / client 10.0.0.1\n\
         2025-01-16T10:00:03Z login failed from 203.0.113.7:51234 user=root\n",
    )
    .unwrap();
    d
}

#[tokio::test]
async fn security_breach_runs_every_step_in_order() {
    let calls: Calls = Arc::default();
    let d = log_dir();
    let p = breach(&calls, vec![d.path().to_path_buf()], true, true);
    let r = executor(true).run(&p).await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(
        steps(&r),
        vec![
            ("firewall-block".to_string(), "applied".to_string()),
            ("rotate-secrets-emergency".into(), "applied".into()),
            ("redis-invalidate-sessions".into(), "applied".into()),
            ("force-password-reset".into(), "applied".into()),
            ("search-logs".into(), "applied".into()),
        ]
    );
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            "ufw deny from 203.0.113.7 to any",
            "rotate",
            "redis unlink",
            "pg UPDATE \"users\" SET \"password_reset_required\" = true WHERE \"password_reset_required\" IS DISTINCT FROM true",
        ]
    );
    let f = r
        .findings()
        .into_iter()
        .find(|f| f.check == "security.address-in-logs")
        .unwrap()
        .clone();
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.summary, "2 lines mention 203.0.113.7");
    assert!(f.detail.unwrap().contains("user=root"));
}

#[tokio::test]
async fn a_failing_step_stops_the_breach_procedure() {
    let calls: Calls = Arc::default();
    let p = breach(&calls, vec![], true, false);
    let r = executor(true).run(&p).await;
    assert!(!r.succeeded());
    let s = steps(&r);
    assert_eq!(s[1], ("rotate-secrets-emergency".into(), "failed".into()));
    assert!(s[2..4].iter().all(|(_, o)| o == "skipped"), "{s:?}");
    // Nothing after the failed rotation touched Redis or PostgreSQL.
    assert_eq!(
        *calls.lock().unwrap(),
        vec!["ufw deny from 203.0.113.7 to any", "rotate"]
    );

    // A firewall that refuses stops everything after it.
    let calls: Calls = Arc::default();
    let r = executor(true)
        .run(&breach(&calls, vec![], false, true))
        .await;
    assert_eq!(steps(&r)[0].1, "failed");
    assert_eq!(
        *calls.lock().unwrap(),
        vec!["ufw deny from 203.0.113.7 to any"]
    );
}

#[tokio::test]
async fn destructive_breach_steps_wait_for_confirmation() {
    let calls: Calls = Arc::default();
    // The confirmer is asked exactly for the destructive steps, and says no to the first.
    let mut c = MockConfirmer::new();
    let asked: Calls = Arc::default();
    let a = asked.clone();
    c.expect_confirm().returning(move |plan| {
        push(&a, &plan.step);
        false
    });
    let ex = Executor::new(guard(Arc::new(c)));
    let r = ex.run(&breach(&calls, vec![], true, true)).await;
    assert_eq!(*asked.lock().unwrap(), vec!["rotate-secrets-emergency"]);
    let s = steps(&r);
    assert_eq!(s[0].1, "applied", "blocking is mutating, not destructive");
    assert_eq!(s[1].1, "refused");
    assert_eq!(
        *calls.lock().unwrap(),
        vec!["ufw deny from 203.0.113.7 to any"],
        "nothing destructive ran without confirmation"
    );
}

#[tokio::test]
async fn dry_run_of_the_breach_touches_nothing() {
    let calls: Calls = Arc::default();
    let d = log_dir();
    let mut ex = executor(false);
    ex.dry_run = true;
    let r = ex
        .run(&breach(&calls, vec![d.path().to_path_buf()], true, true))
        .await;
    assert!(r.succeeded());
    assert!(r.steps.iter().all(|s| s.outcome == Outcome::Planned));
    assert!(
        calls.lock().unwrap().is_empty(),
        "{:?}",
        calls.lock().unwrap()
    );
    assert!(
        r.steps[2].actions[0].contains("about 2 keys"),
        "{:?}",
        r.steps[2]
    );
    assert!(r.steps[3].actions[0].contains("3 of 4 users"));
}

#[tokio::test]
async fn a_missing_rotation_or_a_dead_redis_is_reported_and_the_rest_still_runs() {
    let calls: Calls = Arc::default();
    let p = security_breach(SecurityBreach {
        address: "203.0.113.0/24".into(),
        firewall: Firewall::new(Arc::new(ufw(&calls, true)), FirewallPolicy::default()),
        rotation: Err(
            tej_secrets::SecretsError::NotConfigured("no [secrets] in tej.toml".into()).into(),
        ),
        sessions: vec![],
        unreachable_sessions: vec![("redis:cache".into(), "connection refused".into())],
        password_resets: vec![(Arc::new(pg(&calls)), PasswordResetOptions::default())],
        log_paths: vec![],
        log_sample: 5,
    });
    let r = executor(true).run(&p).await;
    assert!(!r.succeeded());
    let s = steps(&r);
    assert_eq!(s[1], ("rotate-secrets-emergency".into(), "failed".into()));
    assert_eq!(
        s[2],
        (
            "redis-invalidate-sessions redis:cache".into(),
            "failed".into()
        )
    );
    assert_eq!(s[3], ("force-password-reset".into(), "applied".into()));
    assert_eq!(
        calls.lock().unwrap()[0],
        "ufw deny from 203.0.113.0/24 to any"
    );
}

#[test]
fn addresses_match_as_whole_tokens_and_networks() {
    let p = FirewallPolicy::default();
    let one = validate_block_target("203.0.113.7", &p).unwrap();
    assert!(line_mentions("from 203.0.113.7 port 22", &one));
    assert!(line_mentions("ip=203.0.113.7:443", &one));
    assert!(line_mentions("[::ffff:203.0.113.7]", &one));
    assert!(!line_mentions("from 203.0.113.70", &one));
    assert!(!line_mentions("from 1203.0.113.7", &one));
    let net = validate_block_target("203.0.113.0/24", &p).unwrap();
    assert!(line_mentions("x 203.0.113.99 y", &net));
    assert!(!line_mentions("x 203.0.114.1 y", &net));
    let v6 = validate_block_target("2001:db8::/48", &p).unwrap();
    assert!(line_mentions("client 2001:db8:0:1::5 said", &v6));
    assert!(!line_mentions("client 2001:db9::5 said", &v6));
}

#[test]
fn log_search_reads_gzipped_rotations_and_keeps_the_last_lines() {
    let d = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, b"old 198.51.100.4 a\nold 198.51.100.4 b\n").unwrap();
    std::fs::write(d.path().join("app.log.1.gz"), gz.finish().unwrap()).unwrap();
    // The rotated file is older.
    std::fs::File::options()
        .write(true)
        .open(d.path().join("app.log.1.gz"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(86_400))
        .unwrap();
    std::fs::write(d.path().join("app.log"), "new 198.51.100.4 c\nother\n").unwrap();
    let t = validate_block_target("198.51.100.4", &FirewallPolicy::default()).unwrap();
    let r = search_logs_for_address(&[d.path().to_path_buf()], &t, 2).unwrap();
    assert_eq!(r.total, 3);
    assert_eq!(r.files.len(), 2);
    assert_eq!(r.sample.len(), 2);
    assert!(r.sample.iter().any(|l| l.ends_with(" c")));
}

// ---- database corruption ----

fn listing(id: &str, state: ContainerState) -> ContainerListing {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(LABEL_PROJECT.to_string(), "app".to_string());
    labels.insert(LABEL_SERVICE.to_string(), "backend".to_string());
    ContainerListing {
        id: id.into(),
        name: "app-backend-1".into(),
        image: "i".into(),
        image_id: "sha256:i".into(),
        labels,
        state,
    }
}

fn docker(calls: &Calls) -> MockContainerRuntime {
    let mut rt = MockContainerRuntime::new();
    let state = Arc::new(StdMutex::new(ContainerState::Running));
    let s = state.clone();
    rt.expect_list_containers()
        .returning(move |_| Ok(vec![listing("c1", *s.lock().unwrap())]));
    let c = calls.clone();
    rt.expect_control().returning(move |_, action| {
        let (name, next) = match action {
            tej_deploy::Control::Stop { .. } => ("docker stop", ContainerState::Exited),
            tej_deploy::Control::Start => ("docker start", ContainerState::Running),
            tej_deploy::Control::Restart { .. } => ("docker restart", ContainerState::Running),
        };
        push(&c, name);
        *state.lock().unwrap() = next;
        Ok(())
    });
    rt
}

/// A database whose amcheck finds `damaged` relations the first time and none after.
fn corrupt_db(calls: &Calls, damaged_first: bool, sanity_ok: bool) -> MockPgAdmin {
    let mut m = MockPgAdmin::new();
    m.expect_target()
        .return_const("db:app@127.0.0.1:5432".to_string());
    m.expect_ping().returning(|| {
        Ok(tej_db::pg::Ping {
            round_trip_ms: 1.0,
            connect_ms: 1.0,
        })
    });
    let checks = Arc::new(StdMutex::new(0u32));
    let c = calls.clone();
    m.expect_query().returning(move |sql, _| {
        if sql.contains("pg_extension") {
            return Ok(vec![PgRow::from_pairs([(
                "installed",
                PgValue::Bool(true),
            )])]);
        }
        if sql.contains("FROM pg_index") {
            push(&c, "amcheck");
            *checks.lock().unwrap() += 1;
            return Ok(vec![PgRow::from_pairs([
                ("oid", PgValue::Int(16400)),
                ("relation", PgValue::Text("users_pkey".into())),
            ])]);
        }
        if sql.contains("FROM pg_class") {
            return Ok(vec![]);
        }
        if sql.contains("bt_index_check") {
            if damaged_first && *checks.lock().unwrap() == 1 {
                return Err(tej_db::DbError::Corruption(
                    "index \"users_pkey\" lacks a main relation fork".into(),
                ));
            }
            return Ok(vec![PgRow::from_pairs([("bt_index_check", PgValue::Null)])]);
        }
        if sql.starts_with("SELECT count(*) FROM users") {
            push(&c, "sanity");
            return if sanity_ok {
                Ok(vec![PgRow::from_pairs([("count", PgValue::Int(42))])])
            } else {
                Err(tej_db::DbError::UnexpectedReply(
                    "relation users does not exist".into(),
                ))
            };
        }
        Ok(vec![])
    });
    m.expect_maintenance().returning(|_, _| Ok(0));
    m
}

fn restore_step(calls: &Calls) -> MockStep {
    let mut s = MockStep::new();
    s.expect_name().return_const("backup-restore".to_string());
    s.expect_risk().return_const(Risk::Destructive);
    s.expect_target().return_const("database app".to_string());
    s.expect_plan().returning(|| {
        Ok(Plan {
            step: "backup-restore".into(),
            risk: Risk::Destructive,
            target: "database app".into(),
            actions: vec!["pg_restore latest".into()],
        })
    });
    let c = calls.clone();
    s.expect_apply().returning(move || {
        push(&c, "restore");
        Ok(StepOutput::summary("restored"))
    });
    s
}

fn corruption(calls: &Calls, damaged: bool, sanity_ok: bool, anyway: bool) -> Procedure {
    db_corruption(
        Arc::new(corrupt_db(calls, damaged, sanity_ok)),
        Some(AppServices {
            runtime: Arc::new(docker(calls)),
            project: Project::new("app"),
            services: vec!["backend".into()],
            stop_timeout: Duration::from_secs(1),
        }),
        Box::new(restore_step(calls)),
        &DbCorruptionOptions {
            sanity_queries: vec!["SELECT count(*) FROM users".into()],
            restore_anyway: anyway,
            ..DbCorruptionOptions::default()
        },
    )
}

#[tokio::test]
async fn db_corruption_stops_assesses_restores_verifies_and_starts() {
    let calls: Calls = Arc::default();
    let r = executor(true)
        .run(&corruption(&calls, true, true, false))
        .await;
    assert!(r.succeeded(), "{r:#?}");
    assert_eq!(
        steps(&r).iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        vec![
            "stop-services",
            "amcheck-assess",
            "backup-restore",
            "amcheck-verify",
            "sanity-queries",
            "start-services"
        ]
    );
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            "docker stop",
            "amcheck",
            "restore",
            "amcheck",
            "sanity",
            "docker start"
        ]
    );
    assert!(
        r.findings()
            .iter()
            .any(|f| f.severity == Severity::Critical && f.check == "postgres.corruption"),
        "{:#?}",
        r.findings()
    );
}

#[tokio::test]
async fn db_corruption_does_not_restore_a_clean_database_unless_asked() {
    let calls: Calls = Arc::default();
    let r = executor(true)
        .run(&corruption(&calls, false, true, false))
        .await;
    assert!(r.succeeded());
    assert!(!calls.lock().unwrap().contains(&"restore".to_string()));
    assert!(
        r.steps[2]
            .output
            .as_ref()
            .unwrap()
            .summary
            .starts_with("not restored")
    );
    let calls: Calls = Arc::default();
    executor(true)
        .run(&corruption(&calls, false, true, true))
        .await;
    assert!(calls.lock().unwrap().contains(&"restore".to_string()));
}

#[tokio::test]
async fn db_corruption_keeps_the_application_down_when_verification_fails() {
    let calls: Calls = Arc::default();
    let r = executor(true)
        .run(&corruption(&calls, true, false, false))
        .await;
    assert!(!r.succeeded());
    assert_eq!(steps(&r)[4].1, "failed");
    assert_eq!(steps(&r)[5].1, "skipped");
    assert!(!calls.lock().unwrap().contains(&"docker start".to_string()));
}

#[tokio::test]
async fn db_corruption_waits_for_confirmation_and_dry_run_touches_nothing() {
    // Not confirmed: the application is not even stopped.
    let calls: Calls = Arc::default();
    let r = executor(false)
        .run(&corruption(&calls, true, true, false))
        .await;
    assert_eq!(steps(&r)[0].1, "refused");
    assert!(calls.lock().unwrap().is_empty());
    // Dry run: every step planned, nothing called.
    let calls: Calls = Arc::default();
    let mut ex = executor(true);
    ex.dry_run = true;
    let r = ex.run(&corruption(&calls, true, true, false)).await;
    assert!(
        r.steps.iter().all(|s| s.outcome == Outcome::Planned),
        "{r:#?}"
    );
    assert!(calls.lock().unwrap().is_empty());
    assert!(r.steps[2].actions[0].starts_with("only if amcheck found damage"));
}

#[tokio::test]
async fn rotate_secrets_step_composes_the_rotator_in_emergency_mode() {
    use tej_secrets::{
        MockAppProbe, MockServiceControl, MockSessionStore, RotateOptions, RotationMode, Rotator,
    };
    let d = tempfile::tempdir().unwrap();
    let env = d.path().join(".env");
    std::fs::write(&env, "JWT_SECRET=old1\nJWT_REFRESH_SECRET=old2\nOTHER=x\n").unwrap();
    let calls: Calls = Arc::default();
    let mut sessions = MockSessionStore::new();
    let c = calls.clone();
    sessions.expect_flush_all_sessions().returning(move || {
        push(&c, "flush sessions");
        Ok(7)
    });
    sessions.expect_invalidate().never();
    let mut service = MockServiceControl::new();
    let c = calls.clone();
    service.expect_recreate().returning(move |s| {
        push(&c, &format!("recreate {s}"));
        Ok(())
    });
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(200));
    probe.expect_login().returning(|| Ok(200));
    let rotator = Rotator::new(sessions, service, probe, guard(Arc::new(Fixed(true))));
    let mut opts = RotateOptions::new(&env);
    opts.mode = RotationMode::Emergency;
    opts.verify_interval = Duration::from_millis(1);
    let step = RotateSecretsStep::new(rotator, opts);
    assert_eq!(step.risk(), Risk::Destructive);
    // Planning changes nothing.
    let plan = step.plan().await.unwrap();
    assert!(
        plan.actions
            .iter()
            .any(|a| a.contains("drop every session"))
    );
    assert!(calls.lock().unwrap().is_empty());
    assert!(std::fs::read_to_string(&env).unwrap().contains("old1"));
    let out = step.apply().await.unwrap();
    assert!(
        out.summary.contains("7 sessions dropped"),
        "{}",
        out.summary
    );
    assert_eq!(
        *calls.lock().unwrap(),
        vec!["recreate backend", "flush sessions"]
    );
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(!text.contains("old1") && text.contains("OTHER=x"));
}
