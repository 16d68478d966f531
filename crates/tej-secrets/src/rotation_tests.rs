use super::*;
use crate::envfile::inject;
use mockall::Sequence;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tej_core::{Calendar, Clock, Environment, FakeClock, Fixed};

const OLD_JWT: &str = "old-jwt-secret-value-0001";
const OLD_REFRESH: &str = "old-refresh-secret-value-0002";

fn env_text() -> String {
    format!(
        "# SkillSwap production\nNODE_ENV=production\n\nexport JWT_SECRET={OLD_JWT} # rotated quarterly\nJWT_REFRESH_SECRET=\"{OLD_REFRESH}\"\nDATABASE_URL=postgres://app:dbpw@db/app\n"
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    env: PathBuf,
    audit: AuditLog,
    clock: Arc<FakeClock>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    std::fs::write(&env, env_text()).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    let audit = AuditLog::new(dir.path().join("audit.jsonl"));
    let clock = Arc::new(FakeClock::new("2025-01-16T09:30:00Z".parse().unwrap()));
    Fixture {
        dir,
        env,
        audit,
        clock,
    }
}

impl Fixture {
    fn guard(&self, yes: bool) -> Guard {
        Guard {
            environment: Environment::Staging,
            calendar: Calendar::runbook(),
            clock: self.clock.clone(),
            confirmer: Arc::new(Fixed(yes)),
            override_window: false,
        }
    }

    fn rotator(
        &self,
        s: MockSessionStore,
        c: MockServiceControl,
        p: MockAppProbe,
    ) -> Rotator<MockSessionStore, MockServiceControl, MockAppProbe> {
        let mut r = Rotator::new(s, c, p, self.guard(true));
        r.audit = Some(self.audit.clone());
        r
    }

    fn opts(&self) -> RotateOptions {
        RotateOptions {
            verify_timeout: Duration::from_secs(5),
            verify_interval: Duration::from_secs(1),
            ..RotateOptions::new(&self.env)
        }
    }

    fn env_now(&self) -> EnvFile {
        read_env_file(&self.env).unwrap()
    }

    fn value(&self, k: &str) -> Option<String> {
        self.env_now().get(k).map(|s| s.expose().to_string())
    }

    fn steps(&self) -> Vec<(String, String)> {
        self.audit
            .read_all()
            .unwrap()
            .into_iter()
            .map(|e| (e.step, e.outcome))
            .collect()
    }

    /// Every place a value could leak: the audit log, the report as JSON and Debug.
    fn assert_no_leaks(&self, report: &RotationReport, extra: &[&str]) {
        let audit = std::fs::read_to_string(self.audit.path()).unwrap_or_default();
        let json = serde_json::to_string(report).unwrap();
        let debug = format!("{report:?}");
        let mut values: Vec<String> = vec![OLD_JWT.into(), OLD_REFRESH.into()];
        values.extend(extra.iter().map(|s| s.to_string()));
        for k in ["JWT_SECRET", "JWT_REFRESH_SECRET"] {
            if let Some(v) = self.value(k) {
                values.push(v);
            }
        }
        for v in &values {
            for (name, text) in [("audit", &audit), ("json", &json), ("debug", &debug)] {
                assert!(!text.contains(v.as_str()), "{name} leaks a secret: {text}");
            }
        }
    }
}

fn ok_sessions(n: u64) -> MockSessionStore {
    let mut s = MockSessionStore::new();
    s.expect_invalidate().returning(move |_| Ok(n));
    s
}

fn names(steps: &[(String, String)]) -> Vec<String> {
    steps.iter().map(|(s, o)| format!("{s}:{o}")).collect()
}

#[tokio::test(start_paused = true)]
async fn standard_rotation_writes_recreates_invalidates_and_verifies_in_order() {
    let fx = fixture();
    let mut seq = Sequence::new();
    let mut svc = MockServiceControl::new();
    let env_path = fx.env.clone();
    svc.expect_recreate()
        .withf(|s| s == "backend")
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| {
            // the service is recreated only once the new values are in the file
            let f = read_env_file(&env_path).unwrap();
            assert_ne!(f.get("JWT_SECRET").unwrap().expose(), OLD_JWT);
            Ok(())
        });
    let mut sessions = MockSessionStore::new();
    sessions
        .expect_invalidate()
        .withf(|p| p == "sess:*")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(42));
    sessions.expect_flush_all_sessions().never();
    let mut probe = MockAppProbe::new();
    // the first health poll sees the service still starting
    let mut polls = 0;
    probe
        .expect_health()
        .times(2)
        .in_sequence(&mut seq)
        .returning(move || {
            polls += 1;
            if polls == 1 {
                Err(SecretsError::Probe("connection refused".into()))
            } else {
                Ok(200)
            }
        });
    probe
        .expect_login()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|| Ok(401));
    let r = fx
        .rotator(sessions, svc, probe)
        .rotate(&fx.opts())
        .await
        .unwrap();
    assert_eq!(r.outcome, RotationOutcome::Completed, "{r:?}");
    assert_eq!(r.severity(), Severity::Ok);
    assert_eq!(r.sessions_invalidated, Some(42));
    assert_eq!((r.health_status, r.login_status), (Some(200), Some(401)));
    let new_jwt = fx.value("JWT_SECRET").unwrap();
    let new_refresh = fx.value("JWT_REFRESH_SECRET").unwrap();
    assert_eq!(new_jwt.len(), 128);
    assert!(new_jwt.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(new_jwt, new_refresh);
    // every other line is untouched, quoting and export kept
    let text = std::fs::read_to_string(&fx.env).unwrap();
    assert_eq!(
        text,
        env_text()
            .replace(OLD_JWT, &new_jwt)
            .replace(OLD_REFRESH, &new_refresh)
    );
    assert_eq!(
        std::fs::metadata(&fx.env).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // the backup holds the old file with the same mode; the state record is gone
    let backup = r.backup.clone().unwrap();
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), env_text());
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!r.state_file.exists());
    assert_eq!(
        names(&fx.steps()),
        [
            "create:applied",
            "set:applied",
            "recreate:applied",
            "invalidate-sessions:applied",
            "test:applied",
            "finish:applied"
        ]
    );
    fx.assert_no_leaks(&r, &[]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_changes_nothing_and_recreates_nothing() {
    let fx = fixture();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().never();
    let mut sessions = MockSessionStore::new();
    sessions.expect_invalidate().never();
    let mut probe = MockAppProbe::new();
    probe.expect_health().never();
    inject::fail_next_write(&fx.env);
    let r = fx
        .rotator(sessions, svc, probe)
        .rotate(&fx.opts())
        .await
        .unwrap();
    match &r.outcome {
        RotationOutcome::RolledBack { reason } => {
            assert!(reason.contains("writing the .env failed"), "{reason}")
        }
        o => panic!("unexpected {o:?}"),
    }
    assert_eq!(r.severity(), Severity::Critical);
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
    assert!(!r.state_file.exists());
    assert_eq!(
        names(&fx.steps()),
        ["create:applied", "set:failed", "rollback-env:applied"]
    );
    fx.assert_no_leaks(&r, &[]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_recreate_restores_the_env_and_recreates_again() {
    let fx = fixture();
    let mut seq = Sequence::new();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|s| {
            Err(SecretsError::Service {
                service: s.into(),
                reason: "container exited 1".into(),
            })
        });
    let env_path = fx.env.clone();
    svc.expect_recreate()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| {
            // the rollback recreate sees the old values again
            assert_eq!(
                read_env_file(&env_path)
                    .unwrap()
                    .get("JWT_SECRET")
                    .unwrap()
                    .expose(),
                OLD_JWT
            );
            Ok(())
        });
    let mut sessions = MockSessionStore::new();
    sessions.expect_invalidate().never();
    let mut probe = MockAppProbe::new();
    probe.expect_health().never();
    probe.expect_login().never();
    let r = fx
        .rotator(sessions, svc, probe)
        .rotate(&fx.opts())
        .await
        .unwrap();
    assert!(
        matches!(&r.outcome, RotationOutcome::RolledBack { reason } if reason.contains("container exited 1"))
    );
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
    assert_eq!(
        names(&fx.steps()),
        [
            "create:applied",
            "set:applied",
            "recreate:failed",
            "rollback-env:applied",
            "rollback-recreate:applied"
        ]
    );
    assert!(!r.state_file.exists());
    fx.assert_no_leaks(&r, &[]);
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_service_is_rolled_back() {
    let fx = fixture();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(2).returning(|_| Ok(()));
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(503));
    probe.expect_login().never();
    let started = tokio::time::Instant::now();
    let r = fx
        .rotator(ok_sessions(3), svc, probe)
        .rotate(&fx.opts())
        .await
        .unwrap();
    match &r.outcome {
        RotationOutcome::RolledBack { reason } => {
            assert!(
                reason.contains("not healthy within 5s") && reason.contains("503"),
                "{reason}"
            )
        }
        o => panic!("unexpected {o:?}"),
    }
    // the verification waited for the configured time on the (paused) clock
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
    assert_eq!(
        names(&fx.steps()),
        [
            "create:applied",
            "set:applied",
            "recreate:applied",
            "invalidate-sessions:applied",
            "test:failed",
            "rollback-env:applied",
            "rollback-recreate:applied"
        ]
    );
    fx.assert_no_leaks(&r, &[]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_silent_login_is_rolled_back() {
    for (reply, expect) in [
        (Ok(500), "the test login answered 500"),
        (Err("connection reset"), "the test login got no answer"),
    ] {
        let fx = fixture();
        let mut svc = MockServiceControl::new();
        svc.expect_recreate().times(2).returning(|_| Ok(()));
        let mut probe = MockAppProbe::new();
        probe.expect_health().returning(|| Ok(200));
        probe
            .expect_login()
            .times(1)
            .returning(move || match reply {
                Ok(c) => Ok(c),
                Err(e) => Err(SecretsError::Probe(e.into())),
            });
        let r = fx
            .rotator(ok_sessions(0), svc, probe)
            .rotate(&fx.opts())
            .await
            .unwrap();
        assert!(
            matches!(&r.outcome, RotationOutcome::RolledBack { reason } if reason.contains(expect)),
            "{:?}",
            r.outcome
        );
        assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
        assert_eq!(fx.steps().last().unwrap().0, "rollback-recreate");
        fx.assert_no_leaks(&r, &[]);
    }
    // with login_must_succeed a 401 fails too
    let fx = fixture();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(2).returning(|_| Ok(()));
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(200));
    probe.expect_login().returning(|| Ok(401));
    let opts = RotateOptions {
        login_must_succeed: true,
        ..fx.opts()
    };
    let r = fx
        .rotator(ok_sessions(0), svc, probe)
        .rotate(&opts)
        .await
        .unwrap();
    assert!(matches!(r.outcome, RotationOutcome::RolledBack { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_failed_rollback_keeps_the_stage_and_a_resume_finishes_it() {
    let fx = fixture();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().returning(|s| {
        Err(SecretsError::Service {
            service: s.into(),
            reason: "engine down".into(),
        })
    });
    let r = fx
        .rotator(MockSessionStore::new(), svc, MockAppProbe::new())
        .rotate(&fx.opts())
        .await
        .unwrap();
    assert!(
        matches!(&r.outcome, RotationOutcome::RollbackFailed { error, .. } if error.contains("engine down"))
    );
    // the .env is already back; the service still has to be recreated
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
    let st = RotationState::load(&r.state_file).unwrap().unwrap();
    assert_eq!(st.stage, Stage::RollingBack);
    let raw_state = std::fs::read_to_string(&r.state_file).unwrap();
    assert!(!raw_state.contains(OLD_JWT));
    assert_eq!(
        std::fs::metadata(&r.state_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(1).returning(|_| Ok(()));
    let r2 = fx
        .rotator(MockSessionStore::new(), svc, MockAppProbe::new())
        .rotate(&fx.opts())
        .await
        .unwrap();
    assert_eq!(r2.resumed_from, Some(Stage::RollingBack));
    assert!(matches!(r2.outcome, RotationOutcome::RolledBack { .. }));
    assert!(!r2.state_file.exists());
}

#[tokio::test(start_paused = true)]
async fn a_crash_after_the_write_resumes_without_generating_again() {
    let fx = fixture();
    let opts = fx.opts();
    // the state a crash right after the write leaves: stage Created, new values in the .env
    let st_path = opts.state_path();
    let backup = crate::envfile::backup_file(&fx.env, fx.clock.now()).unwrap();
    let state = RotationState {
        version: 1,
        stage: Stage::Created,
        mode: RotationMode::Standard,
        keys: opts.keys.clone(),
        previous_keys: vec![],
        env_file: fx.env.clone(),
        backup: backup.clone(),
        service: "backend".into(),
        started_at: fx.clock.now(),
        updated_at: fx.clock.now(),
        grace_until: None,
        rollback_reason: None,
    };
    state.save(&st_path).unwrap();
    // the new values reached the .env before the crash
    let written = "aaaa0000bbbb1111cccc2222dddd3333eeee4444";
    update_env_file(&fx.env, &UpdateOptions::default(), fx.clock.now(), |f| {
        f.set("JWT_SECRET", &Secret::new(written))?;
        f.set("JWT_REFRESH_SECRET", &Secret::new("ffff5555"))
    })
    .unwrap();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(1).returning(|_| Ok(()));
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(200));
    probe.expect_login().returning(|| Ok(200));
    let r = fx
        .rotator(ok_sessions(1), svc, probe)
        .rotate(&opts)
        .await
        .unwrap();
    assert_eq!(r.resumed_from, Some(Stage::Created));
    assert_eq!(r.outcome, RotationOutcome::Completed);
    // the values written before the crash are kept, not generated again
    assert_eq!(fx.value("JWT_SECRET").unwrap(), written);
    let steps = names(&fx.steps());
    assert_eq!(
        steps,
        [
            "recreate:applied",
            "invalidate-sessions:applied",
            "test:applied",
            "finish:applied"
        ]
    );
    assert!(!st_path.exists());
    fx.assert_no_leaks(&r, &[written]);
}

#[tokio::test(start_paused = true)]
async fn a_crash_during_the_recreate_resumes_at_the_recreate() {
    let fx = fixture();
    // a recreate that never returns: the rotation is abandoned mid-step, like a killed process
    let opts = fx.opts();
    struct Hang;
    #[async_trait]
    impl ServiceControl for Hang {
        async fn recreate(&self, _s: &str) -> Result<()> {
            std::future::pending::<()>().await;
            Ok(())
        }
    }
    let mut r = Rotator::new(
        MockSessionStore::new(),
        Hang,
        MockAppProbe::new(),
        fx.guard(true),
    );
    r.audit = Some(fx.audit.clone());
    let crashed = tokio::time::timeout(Duration::from_secs(30), r.rotate(&opts)).await;
    assert!(
        crashed.is_err(),
        "the rotation should have hung in the recreate"
    );
    let st = RotationState::load(&opts.state_path()).unwrap().unwrap();
    assert_eq!(st.stage, Stage::EnvWritten);
    let written = fx.value("JWT_SECRET").unwrap();
    assert_ne!(written, OLD_JWT);
    let mut seq = Sequence::new();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let mut sessions = MockSessionStore::new();
    sessions
        .expect_invalidate()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(7));
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(200));
    probe.expect_login().returning(|| Ok(200));
    let rep = fx
        .rotator(sessions, svc, probe)
        .rotate(&opts)
        .await
        .unwrap();
    assert_eq!(rep.resumed_from, Some(Stage::EnvWritten));
    assert_eq!(rep.outcome, RotationOutcome::Completed);
    assert_eq!(fx.value("JWT_SECRET").unwrap(), written);
    assert_eq!(
        names(&fx.steps()),
        [
            "create:applied",
            "set:applied",
            "recreate:applied",
            "invalidate-sessions:applied",
            "test:applied",
            "finish:applied"
        ]
    );
    fx.assert_no_leaks(&rep, &[]);
}

#[tokio::test(start_paused = true)]
async fn graceful_keeps_previous_values_and_sessions_until_the_grace_ends() {
    let fx = fixture();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(2).returning(|_| Ok(()));
    let mut sessions = MockSessionStore::new();
    sessions.expect_invalidate().never();
    sessions.expect_flush_all_sessions().never();
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(200));
    probe.expect_login().returning(|| Ok(200));
    let rot = fx.rotator(sessions, svc, probe);
    let opts = RotateOptions {
        mode: RotationMode::Graceful,
        ..fx.opts()
    };
    let r = rot.rotate(&opts).await.unwrap();
    assert_eq!(r.outcome, RotationOutcome::Completed);
    assert_eq!(fx.value("JWT_SECRET_PREVIOUS").as_deref(), Some(OLD_JWT));
    assert_eq!(
        fx.value("JWT_REFRESH_SECRET_PREVIOUS").as_deref(),
        Some(OLD_REFRESH)
    );
    let text = std::fs::read_to_string(&fx.env).unwrap();
    // each previous value sits right after its key
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("export JWT_SECRET="))
        .unwrap();
    assert!(lines[i + 1].starts_with("JWT_SECRET_PREVIOUS="));
    let expires = r.previous_expires_at.unwrap();
    assert_eq!(
        expires,
        "2025-01-17T09:30:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(
        RotationState::load(&r.state_file).unwrap().unwrap().stage,
        Stage::Grace
    );
    fx.assert_no_leaks(&r, &[]);
    // before the grace ends nothing happens
    let early = rot.expire_previous(&opts, false).await.unwrap();
    assert_eq!(early.outcome, RotationOutcome::Planned);
    assert!(fx.value("JWT_SECRET_PREVIOUS").is_some());
    fx.clock.advance(SignedDuration::from_hours(25));
    let done = rot.expire_previous(&opts, false).await.unwrap();
    assert_eq!(done.outcome, RotationOutcome::Completed, "{done:?}");
    assert!(fx.value("JWT_SECRET_PREVIOUS").is_none());
    assert!(fx.value("JWT_REFRESH_SECRET_PREVIOUS").is_none());
    assert!(!r.state_file.exists());
    fx.assert_no_leaks(&done, &[]);
}

#[tokio::test(start_paused = true)]
async fn emergency_rotates_everything_and_drops_every_session() {
    let fx = fixture();
    std::fs::write(
        &fx.env,
        format!(
            "{}JWT_SECRET_PREVIOUS=compromised-previous-1\nAPI_KEY=old-api-key-0003\n",
            env_text()
        ),
    )
    .unwrap();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(1).returning(|_| Ok(()));
    let mut sessions = MockSessionStore::new();
    sessions.expect_invalidate().never();
    sessions
        .expect_flush_all_sessions()
        .times(1)
        .returning(|| Ok(1234));
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(200));
    probe.expect_login().returning(|| Ok(200));
    let opts = RotateOptions {
        mode: RotationMode::Emergency,
        keys: vec![
            "JWT_SECRET".into(),
            "JWT_REFRESH_SECRET".into(),
            "API_KEY".into(),
        ],
        ..fx.opts()
    };
    let r = fx
        .rotator(sessions, svc, probe)
        .rotate(&opts)
        .await
        .unwrap();
    assert_eq!(r.outcome, RotationOutcome::Completed);
    assert_eq!(r.sessions_invalidated, Some(1234));
    assert!(fx.value("JWT_SECRET_PREVIOUS").is_none());
    assert_ne!(fx.value("API_KEY").unwrap(), "old-api-key-0003");
    fx.assert_no_leaks(&r, &["compromised-previous-1", "old-api-key-0003"]);
}

#[tokio::test]
async fn dry_run_and_refusals_change_nothing() {
    let fx = fixture();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().never();
    let rot = fx.rotator(MockSessionStore::new(), svc, MockAppProbe::new());
    let r = rot
        .rotate(&RotateOptions {
            dry_run: true,
            ..fx.opts()
        })
        .await
        .unwrap();
    assert_eq!(r.outcome, RotationOutcome::Planned);
    assert!(r.plan.iter().any(|a| a.contains("sess:*")));
    assert!(r.steps.is_empty());
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
    assert_eq!(std::fs::read_dir(fx.dir.path()).unwrap().count(), 1);
    // not confirmed: refused and audited
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().never();
    let mut rot = Rotator::new(
        MockSessionStore::new(),
        svc,
        MockAppProbe::new(),
        fx.guard(false),
    );
    rot.audit = Some(fx.audit.clone());
    let e = rot.rotate(&fx.opts()).await.unwrap_err();
    assert!(matches!(e, SecretsError::Refused(_)), "{e}");
    assert_eq!(names(&fx.steps()), ["secrets-rotate:refused"]);
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
}

#[tokio::test]
async fn symlinked_env_and_bad_options_are_errors_before_any_change() {
    let fx = fixture();
    let link = fx.dir.path().join("link.env");
    std::os::unix::fs::symlink(&fx.env, &link).unwrap();
    let rot = fx.rotator(
        MockSessionStore::new(),
        MockServiceControl::new(),
        MockAppProbe::new(),
    );
    let e = rot.rotate(&RotateOptions::new(&link)).await.unwrap_err();
    assert!(matches!(e, SecretsError::Symlink { .. }), "{e}");
    let e = rot
        .rotate(&RotateOptions {
            keys: vec!["BAD KEY".into()],
            ..fx.opts()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, SecretsError::InvalidKey(_)));
    let e = rot
        .rotate(&RotateOptions {
            format: SecretFormat::Hex { bytes: 4 },
            ..fx.opts()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, SecretsError::InvalidOptions(_)));
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
}

#[tokio::test(start_paused = true)]
async fn errors_and_logs_carry_no_secret_values() {
    use std::io::Write;
    use std::sync::Mutex;
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let b2 = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || b2.clone())
        .finish();
    // global, so the capture does not depend on which test thread registered the callsites first
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let fx = fixture();
    // a service whose error text quotes the secret it was given (a careless adapter)
    let mut svc = MockServiceControl::new();
    let env_path = fx.env.clone();
    svc.expect_recreate().returning(move |s| {
        let v = read_env_file(&env_path).unwrap().get("JWT_SECRET").unwrap();
        Err(SecretsError::Service {
            service: s.into(),
            reason: format!("bad JWT_SECRET={}", v.expose()),
        })
    });
    let r = fx
        .rotator(MockSessionStore::new(), svc, MockAppProbe::new())
        .rotate(&fx.opts())
        .await
        .unwrap();
    assert!(matches!(r.outcome, RotationOutcome::RollbackFailed { .. }));
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("rotation step"), "{logs}");
    assert!(logs.contains("[REDACTED]"), "{logs}");
    let backup = std::fs::read_to_string(r.backup.as_ref().unwrap()).unwrap();
    assert_eq!(backup, env_text());
    for v in [OLD_JWT, OLD_REFRESH] {
        assert!(!logs.contains(v));
    }
    fx.assert_no_leaks(&r, &[]);
    // the EnvFile's Debug and every error Display are value-free
    assert!(!format!("{:?}", fx.env_now()).contains(OLD_JWT));
    let probe_cfg = HttpProbeConfig::for_base_url(
        "http://127.0.0.1:1",
        "t@example.com",
        Secret::new("probe-password-123"),
    );
    assert!(!format!("{probe_cfg:?}").contains("probe-password-123"));
}

#[tokio::test(start_paused = true)]
async fn expiring_previous_values_is_rolled_back_when_the_service_does_not_come_back() {
    let fx = fixture();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(3).returning(|_| Ok(()));
    let mut probe = MockAppProbe::new();
    let mut calls = 0;
    // healthy for the rotation, then never again
    probe.expect_health().returning(move || {
        calls += 1;
        if calls == 1 { Ok(200) } else { Ok(502) }
    });
    probe.expect_login().times(1).returning(|| Ok(200));
    let rot = fx.rotator(MockSessionStore::new(), svc, probe);
    let opts = RotateOptions {
        mode: RotationMode::Graceful,
        ..fx.opts()
    };
    assert_eq!(
        rot.rotate(&opts).await.unwrap().outcome,
        RotationOutcome::Completed
    );
    let with_previous = std::fs::read_to_string(&fx.env).unwrap();
    let r = rot.expire_previous(&opts, true).await.unwrap();
    assert!(
        matches!(&r.outcome, RotationOutcome::RolledBack { reason } if reason.contains("not healthy")),
        "{:?}",
        r.outcome
    );
    // the previous values are back and the grace record still waits
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), with_previous);
    assert_eq!(
        RotationState::load(&opts.state_path())
            .unwrap()
            .unwrap()
            .stage,
        Stage::Grace
    );
    let steps = names(&fx.steps());
    assert_eq!(
        steps[steps.len() - 5..],
        [
            "remove-previous:applied",
            "recreate:applied",
            "test:failed",
            "rollback-env:applied",
            "rollback-recreate:applied"
        ]
    );
    fx.assert_no_leaks(&r, &[]);
}
