//! The forced password reset: refused without confirmation, audited with it.

use std::sync::Arc;
use tej_core::{
    AuditLog, Calendar, Environment, Executor, FakeClock, Fixed, Guard, Outcome, Procedure,
};
use tej_db::pg::{ForcePasswordResetStep, PasswordResetOptions, PgClient, PgConnectOptions};
use tej_testkit::PgCluster;

fn executor(yes: bool, audit: &AuditLog) -> Executor {
    let mut ex = Executor::new(Guard {
        environment: Environment::Staging,
        calendar: Calendar::runbook(),
        clock: Arc::new(FakeClock::new("2025-01-16T06:30:00Z".parse().unwrap())),
        confirmer: Arc::new(Fixed(yes)),
        override_window: false,
    });
    ex.audit = Some(audit.clone());
    ex
}

#[tokio::test]
async fn password_reset_is_refused_without_confirmation_and_audited_with_it() {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE users (id int PRIMARY KEY, email text, password_reset_required bool NOT NULL DEFAULT false);
         INSERT INTO users SELECT g, 'u' || g || '@example.com', g = 1 FROM generate_series(1, 5) g;",
    )
    .unwrap();
    let admin = Arc::new(PgClient::new(&PgConnectOptions::new(pg.url("app"))).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::new(dir.path().join("audit.jsonl"));
    let step = || ForcePasswordResetStep {
        admin: admin.clone(),
        options: PasswordResetOptions::default(),
    };

    let r = executor(false, &audit)
        .run(&Procedure::new("security-breach").step(step()))
        .await;
    assert!(
        matches!(&r.steps[0].outcome, Outcome::Refused { reason } if reason.contains("confirmation")),
        "{:?}",
        r.steps[0]
    );
    assert!(
        r.steps[0].actions[0].contains("4 of 5 users"),
        "{:?}",
        r.steps[0].actions
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM users WHERE password_reset_required"
        )
        .unwrap(),
        "1"
    );

    let r = executor(true, &audit)
        .run(&Procedure::new("security-breach").step(step()))
        .await;
    assert_eq!(r.steps[0].outcome, Outcome::Applied);
    assert_eq!(r.steps[0].output.as_ref().unwrap().data["rows_changed"], 4);
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM users WHERE password_reset_required"
        )
        .unwrap(),
        "5"
    );

    let entries = audit.read_all().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].outcome, "refused");
    assert_eq!(entries[0].step, "force-password-reset");
    assert_eq!(entries[1].outcome, "applied");
    assert!(entries[1].detail.as_deref().unwrap().contains("4 users"));
    assert!(entries[1].target.contains("users.password_reset_required"));

    // A wrong column fails inside the transaction and changes nothing.
    pg.psql("app", "UPDATE users SET password_reset_required = false")
        .unwrap();
    let bad = ForcePasswordResetStep {
        admin: admin.clone(),
        options: PasswordResetOptions {
            table: "users".into(),
            column: "no_such_column".into(),
        },
    };
    let r = executor(true, &audit)
        .run(&Procedure::new("security-breach").step(bad))
        .await;
    assert!(matches!(r.steps[0].outcome, Outcome::Failed { .. }));
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM users WHERE password_reset_required"
        )
        .unwrap(),
        "0"
    );
}
