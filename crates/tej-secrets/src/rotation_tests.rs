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
        .returning(|| Ok(200));
    let r = fx
        .rotator(sessions, svc, probe)
        .rotate(&fx.opts())
        .await
        .unwrap();
    assert_eq!(r.outcome, RotationOutcome::Completed, "{r:?}");
    assert_eq!(r.severity(), Severity::Ok);
    assert_eq!(r.sessions_invalidated, Some(42));
    assert_eq!((r.health_status, r.login_status), (Some(200), Some(200)));
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
    // 401 and 403 fail even without login_must_succeed; other 4xx pass only without it
    for (code, must, completes) in [
        (401, false, false),
        (403, false, false),
        (401, true, false),
        (404, true, false),
        (404, false, true),
    ] {
        let fx = fixture();
        let mut svc = MockServiceControl::new();
        svc.expect_recreate()
            .times(if completes { 1 } else { 2 })
            .returning(|_| Ok(()));
        let mut probe = MockAppProbe::new();
        probe.expect_health().returning(|| Ok(200));
        probe.expect_login().returning(move || Ok(code));
        let opts = RotateOptions {
            login_must_succeed: must,
            ..fx.opts()
        };
        let r = fx
            .rotator(ok_sessions(0), svc, probe)
            .rotate(&opts)
            .await
            .unwrap();
        assert_eq!(
            r.outcome == RotationOutcome::Completed,
            completes,
            "{code} {must}: {:?}",
            r.outcome
        );
    }
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
        async fn recreate(&self, _s: &str, _env: &ServiceEnv) -> Result<()> {
            std::future::pending::<()>().await;
            Ok(())
        }
        async fn live_env_digests(
            &self,
            _s: &str,
            _keys: &[String],
        ) -> Result<Vec<(String, Option<String>)>> {
            Ok(Vec::new())
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
    let early = rot.expire_previous(&opts, Expiry::WhenDue).await.unwrap();
    assert_eq!(early.outcome, RotationOutcome::Planned);
    assert!(fx.value("JWT_SECRET_PREVIOUS").is_some());
    fx.clock.advance(SignedDuration::from_hours(25));
    let done = rot.expire_previous(&opts, Expiry::WhenDue).await.unwrap();
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
    assert!(
        matches!(
            e,
            SecretsError::Refused(tej_core::Refusal::NotConfirmed { .. })
        ),
        "{e}"
    );
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
    let r = rot.expire_previous(&opts, Expiry::Now).await.unwrap();
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

/// A tiny HTTP server on loopback: `/health` answers 200, anything else `login_status`.
fn loopback_app(login_status: u16) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let code = if line.starts_with("GET /health ") {
                200
            } else {
                login_status
            };
            let mut s = s;
            let _ = write!(
                s,
                "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
        }
    });
    port
}

#[tokio::test]
async fn a_test_login_refused_by_the_application_fails_the_rotation() {
    let fx = fixture();
    let port = loopback_app(401);
    let probe = HttpAppProbe::new(HttpProbeConfig::for_base_url(
        &format!("http://127.0.0.1:{port}"),
        "test@example.com",
        Secret::new("test-password-value"),
    ))
    .unwrap();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(2).returning(|_| Ok(()));
    let mut r = Rotator::new(ok_sessions(3), svc, probe, fx.guard(true));
    r.audit = Some(fx.audit.clone());
    let opts = RotateOptions {
        verify_interval: Duration::from_millis(10),
        ..fx.opts()
    };
    let rep = r.rotate(&opts).await.unwrap();
    match &rep.outcome {
        RotationOutcome::RolledBack { reason } => {
            assert!(reason.contains("test login was refused (401)"), "{reason}")
        }
        o => panic!("a refused login must fail the rotation, got {o:?}"),
    }
    assert_eq!(rep.login_status, Some(401));
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
    fx.assert_no_leaks(&rep, &["test-password-value"]);
}

/// A Compose-like container whose environment came from the `.env` at create time;
/// `applies` says whether a recreate gives it the new values (the fix) or keeps its old
/// environment (what recreating from the old container's spec did).
struct Container {
    env: std::sync::Mutex<Vec<(String, String)>>,
    applies: bool,
    recreates: std::sync::atomic::AtomicU32,
}

impl Container {
    fn from_env(text: &str, applies: bool) -> Container {
        let f = EnvFile::parse(text);
        let env = f
            .keys()
            .into_iter()
            .map(|k| {
                let v = f.get(k).unwrap().expose().to_string();
                (k.to_string(), v)
            })
            .collect();
        Container {
            env: std::sync::Mutex::new(env),
            applies,
            recreates: Default::default(),
        }
    }

    fn get(&self, k: &str) -> Option<String> {
        let env = self.env.lock().unwrap();
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }
}

#[async_trait]
impl ServiceControl for Container {
    async fn recreate(&self, _service: &str, env: &ServiceEnv) -> Result<()> {
        self.recreates
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if !self.applies {
            return Ok(());
        }
        let mut cur = self.env.lock().unwrap();
        for v in &env.vars {
            let pos = cur.iter().position(|(k, _)| k == &v.key);
            match (&v.value, pos) {
                (Some(val), Some(i)) => cur[i].1 = val.expose().to_string(),
                (Some(val), None) => {
                    if let Some(i) = v
                        .alongside
                        .as_ref()
                        .and_then(|a| cur.iter().position(|(k, _)| k == a))
                    {
                        cur.insert(i + 1, (v.key.clone(), val.expose().to_string()));
                    }
                }
                (None, Some(i)) => {
                    cur.remove(i);
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    async fn live_env_digests(
        &self,
        _service: &str,
        keys: &[String],
    ) -> Result<Vec<(String, Option<String>)>> {
        Ok(keys
            .iter()
            .map(|k| (k.clone(), self.get(k).map(|v| value_digest(&v))))
            .collect())
    }
}

fn ok_probe() -> MockAppProbe {
    let mut probe = MockAppProbe::new();
    probe.expect_health().returning(|| Ok(200));
    probe.expect_login().returning(|| Ok(200));
    probe
}

#[tokio::test(start_paused = true)]
async fn the_test_stage_fails_when_the_service_still_runs_the_old_secret() {
    let fx = fixture();
    let stale = Container::from_env(&env_text(), false);
    let mut r = Rotator::new(ok_sessions(0), stale, ok_probe(), fx.guard(true));
    r.audit = Some(fx.audit.clone());
    let rep = r.rotate(&fx.opts()).await.unwrap();
    match &rep.outcome {
        RotationOutcome::RolledBack { reason } => assert!(
            reason.contains("does not hold the new values: JWT_SECRET is not the .env's value"),
            "{reason}"
        ),
        o => panic!("a backend with the old secret must fail the test, got {o:?}"),
    }
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), env_text());
    fx.assert_no_leaks(&rep, &[]);
}

#[tokio::test(start_paused = true)]
async fn the_service_gets_the_new_values_and_graceful_previous_ones() {
    let fx = fixture();
    let c = Container::from_env(&env_text(), true);
    let mut r = Rotator::new(ok_sessions(0), c, ok_probe(), fx.guard(true));
    r.audit = Some(fx.audit.clone());
    let rep = r.rotate(&fx.opts()).await.unwrap();
    assert_eq!(rep.outcome, RotationOutcome::Completed, "{rep:?}");
    let first = fx.value("JWT_SECRET").unwrap();
    assert_eq!(r.service.get("JWT_SECRET").unwrap(), first);
    assert_eq!(
        r.service.get("JWT_REFRESH_SECRET"),
        fx.value("JWT_REFRESH_SECRET")
    );
    assert_eq!(r.service.get("NODE_ENV").as_deref(), Some("production"));
    let test = rep.steps.iter().find(|s| s.step == "test").unwrap();
    assert!(
        test.detail
            .contains("holds the .env's JWT_SECRET, JWT_REFRESH_SECRET (SHA-256 compared)"),
        "{}",
        test.detail
    );
    fx.assert_no_leaks(&rep, &[&first]);

    let graceful = RotateOptions {
        mode: RotationMode::Graceful,
        ..fx.opts()
    };
    let rep = r.rotate(&graceful).await.unwrap();
    assert_eq!(rep.outcome, RotationOutcome::Completed, "{rep:?}");
    let second = fx.value("JWT_SECRET").unwrap();
    assert_ne!(second, first);
    assert_eq!(r.service.get("JWT_SECRET").unwrap(), second);
    assert_eq!(r.service.get("JWT_SECRET_PREVIOUS").unwrap(), first);
    // Expiring the previous values removes them from the running service too.
    let rep = r.expire_previous(&graceful, Expiry::Now).await.unwrap();
    assert_eq!(rep.outcome, RotationOutcome::Completed, "{rep:?}");
    assert_eq!(fx.value("JWT_SECRET_PREVIOUS"), None);
    assert_eq!(r.service.get("JWT_SECRET_PREVIOUS"), None);
    assert_eq!(r.service.get("JWT_REFRESH_SECRET_PREVIOUS"), None);
    assert_eq!(r.service.get("JWT_SECRET").unwrap(), second);

    let emergency = RotateOptions {
        mode: RotationMode::Emergency,
        ..fx.opts()
    };
    let mut sessions = MockSessionStore::new();
    sessions.expect_flush_all_sessions().returning(|| Ok(1));
    let c = Container {
        env: std::sync::Mutex::new(r.service.env.lock().unwrap().clone()),
        applies: true,
        recreates: Default::default(),
    };
    let mut r = Rotator::new(sessions, c, ok_probe(), fx.guard(true));
    r.audit = Some(fx.audit.clone());
    let rep = r.rotate(&emergency).await.unwrap();
    assert_eq!(rep.outcome, RotationOutcome::Completed, "{rep:?}");
    assert_eq!(r.service.get("JWT_SECRET"), fx.value("JWT_SECRET"));
    assert_eq!(r.service.get("JWT_SECRET_PREVIOUS"), None);
    assert_eq!(r.service.get("JWT_REFRESH_SECRET_PREVIOUS"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rotation_refuses_while_the_first_runs_and_names_it() {
    let fx = fixture();
    struct Hang;
    #[async_trait]
    impl ServiceControl for Hang {
        async fn recreate(&self, _s: &str, _env: &ServiceEnv) -> Result<()> {
            std::future::pending::<()>().await;
            Ok(())
        }
        async fn live_env_digests(
            &self,
            _s: &str,
            _keys: &[String],
        ) -> Result<Vec<(String, Option<String>)>> {
            Ok(Vec::new())
        }
    }
    let first = Arc::new(Rotator::new(
        MockSessionStore::new(),
        Hang,
        MockAppProbe::new(),
        fx.guard(true),
    ));
    let opts = fx.opts();
    let task = {
        let (first, opts) = (first.clone(), opts.clone());
        tokio::spawn(async move { first.rotate(&opts).await })
    };
    // The first rotation is in its recreate once the stage record says so.
    let state_path = opts.state_path();
    loop {
        if RotationState::load(&state_path)
            .ok()
            .flatten()
            .is_some_and(|s| s.stage == Stage::EnvWritten)
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    let written = std::fs::read_to_string(&fx.env).unwrap();
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().never();
    let second = Rotator::new(
        MockSessionStore::new(),
        svc,
        MockAppProbe::new(),
        fx.guard(true),
    );
    let e = second.rotate(&opts).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SecretsError::Locked { .. }), "{text}");
    assert!(
        text.contains(&format!("rotation of {}", fx.env.display()))
            && text.contains(&format!("pid {}", std::process::id())),
        "the refusal names the running rotation: {text}"
    );
    assert_eq!(std::fs::read_to_string(&fx.env).unwrap(), written);
    assert_eq!(
        RotationState::load(&state_path).unwrap().unwrap().stage,
        Stage::EnvWritten
    );
    // A dry run only reads: it is not refused.
    let dry = RotateOptions {
        dry_run: true,
        ..opts.clone()
    };
    assert_eq!(
        second.rotate(&dry).await.unwrap().outcome,
        RotationOutcome::Planned
    );
    // Once the first one is gone (killed), the lock is free and the rotation resumes.
    task.abort();
    let _ = task.await;
    let mut svc = MockServiceControl::new();
    svc.expect_recreate().times(1).returning(|_| Ok(()));
    let third = Rotator::new(ok_sessions(0), svc, ok_probe(), fx.guard(true));
    let rep = third.rotate(&opts).await.unwrap();
    assert_eq!(rep.resumed_from, Some(Stage::EnvWritten));
    assert_eq!(rep.outcome, RotationOutcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn completed_rotations_keep_only_the_newest_env_backups() {
    let fx = fixture();
    let dir = fx.dir.path();
    let mut old = Vec::new();
    for (i, stamp) in [
        "20240101T000000Z",
        "20240201T000000Z",
        "20240301T000000Z",
        "20240301T000000Z.1",
        "20240401T000000Z",
        "20241231T235959Z",
    ]
    .iter()
    .enumerate()
    {
        let p = dir.join(format!(".env.bak.{stamp}"));
        std::fs::write(&p, format!("JWT_SECRET=ancient-{i}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        old.push(p);
    }
    // Not backups of this .env: left alone.
    let notes = dir.join(".env.bak.notes");
    std::fs::write(&notes, "keep me\n").unwrap();
    let outside = dir.join("outside.txt");
    std::fs::write(&outside, "not a backup\n").unwrap();
    let link = dir.join(".env.bak.20200101T000000Z");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let other = dir.join(".env.production.bak.20200101T000000Z");
    std::fs::write(&other, "x\n").unwrap();

    let mut svc = MockServiceControl::new();
    svc.expect_recreate().returning(|_| Ok(()));
    let r = fx.rotator(ok_sessions(0), svc, ok_probe());
    let opts = RotateOptions {
        backups_keep: 3,
        ..fx.opts()
    };
    let plan = r
        .rotate(&RotateOptions {
            dry_run: true,
            ..opts.clone()
        })
        .await
        .unwrap()
        .plan;
    assert!(
        plan.iter()
            .any(|a| a.contains("keep the newest 3 .env backups") && a.contains("(4 now)")),
        "{plan:?}"
    );
    let rep = r.rotate(&opts).await.unwrap();
    assert_eq!(rep.outcome, RotationOutcome::Completed, "{rep:?}");
    let kept = list_backups(&fx.env).unwrap();
    assert_eq!(
        kept,
        [rep.backup.clone().unwrap(), old[5].clone(), old[4].clone()],
        "the newest three, newest first"
    );
    for p in &old[..4] {
        assert!(!p.exists(), "{} should be gone", p.display());
    }
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "keep me\n");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not a backup\n");
    assert!(std::fs::symlink_metadata(&link).is_ok());
    assert!(other.exists());
    let prune = rep
        .steps
        .iter()
        .find(|s| s.step == "prune-backups")
        .unwrap();
    assert!(
        prune.detail.contains("removed 4 old .env backups") && !prune.detail.contains("ancient"),
        "{}",
        prune.detail
    );
    let bad = RotateOptions {
        backups_keep: 0,
        ..opts
    };
    assert!(matches!(
        r.rotate(&bad).await,
        Err(SecretsError::InvalidOptions(_))
    ));
}

/// A step for the Executor that stands beside a rotation stage in the audit log.
struct ExecutorStep(&'static str, Risk);

#[async_trait]
impl tej_core::Step for ExecutorStep {
    fn name(&self) -> String {
        self.0.into()
    }
    fn risk(&self) -> Risk {
        self.1
    }
    fn target(&self) -> String {
        "db:app".into()
    }
    async fn plan(&self) -> std::result::Result<Plan, tej_core::StepError> {
        Ok(Plan {
            step: self.0.into(),
            risk: self.1,
            target: "db:app".into(),
            actions: vec![format!("do {}", self.0)],
        })
    }
    async fn apply(&self) -> std::result::Result<tej_core::StepOutput, tej_core::StepError> {
        Ok(tej_core::StepOutput::summary("done"))
    }
}

fn audit_keys(line: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test(start_paused = true)]
async fn rotation_audit_lines_are_written_as_the_executor_writes_them() {
    let fx = fixture();
    // Production, outside the window (a Thursday), let through on purpose.
    let guard = Guard {
        environment: Environment::Production,
        override_window: true,
        ..fx.guard(true)
    };
    let exec_log = AuditLog::new(fx.dir.path().join("executor.jsonl"));
    let mut ex = tej_core::Executor::new(guard.clone());
    ex.audit = Some(exec_log.clone());
    let p = tej_core::Procedure::new("t")
        .step(ExecutorStep("vacuum", Risk::Mutating))
        .step(ExecutorStep("vacuum-full", Risk::Destructive));
    assert!(ex.run(&p).await.succeeded());
    let exec = exec_log.read_all().unwrap();
    let exec_raw = std::fs::read_to_string(exec_log.path()).unwrap();
    let exec_lines: Vec<&str> = exec_raw.lines().collect();

    let mut svc = MockServiceControl::new();
    svc.expect_recreate().returning(|_| Ok(()));
    let mut r = Rotator::new(ok_sessions(3), svc, ok_probe(), guard);
    r.audit = Some(fx.audit.clone());
    let rep = r.rotate(&fx.opts()).await.unwrap();
    assert_eq!(rep.outcome, RotationOutcome::Completed, "{rep:?}");
    let rot = fx.audit.read_all().unwrap();
    let rot_raw = std::fs::read_to_string(fx.audit.path()).unwrap();
    assert_eq!(rot.len(), 6, "{rot:?}");
    for (entry, line) in rot.iter().zip(rot_raw.lines()) {
        // the same fields and the same context as the Executor's lines
        let like = if entry.detail.is_some() {
            exec_lines[1]
        } else {
            exec_lines[0]
        };
        assert_eq!(audit_keys(line), audit_keys(like), "{line}");
        assert_eq!(entry.environment, exec[0].environment);
        assert_eq!(entry.actor, exec[0].actor);
        assert_eq!(entry.procedure, PROCEDURE);
        // a destructive stage the override let through says so, as the Executor's does
        let overridden = entry
            .detail
            .as_deref()
            .unwrap_or_default()
            .starts_with("maintenance window overridden on purpose (--outside-window): ");
        assert_eq!(
            overridden,
            entry.risk == Risk::Destructive,
            "{}: {:?}",
            entry.step,
            entry.detail
        );
    }
    assert!(
        exec[1]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("maintenance window overridden on purpose (--outside-window): ")
    );
    assert!(rot.iter().any(|e| e.risk == Risk::Destructive));
}
