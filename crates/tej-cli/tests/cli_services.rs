//! End-to-end tests of the `tej` binary against real servers from the test kit.

use std::process::Command;
use tej_testkit::RedisServer;

fn tej(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tej"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .output()
        .expect("run tej");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_info_and_session_invalidation_through_the_binary() {
    let redis = RedisServer::start().unwrap();
    let d = tempfile::tempdir().unwrap();
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "audit_log = \"{}\"\n[[redis]]\nname = \"sessions\"\nurl = \"{}\"\nsession_pattern = \"sess:*\"\n",
            audit.display(),
            redis.url()
        ),
    )
    .unwrap();
    redis_cli(
        redis.port(),
        &[
            "EVAL",
            "for i=1,2000 do redis.call('SET','sess:'..i,'x') end for i=1,10 do redis.call('SET','cache:'..i,'y') end return 1",
            "0",
        ],
    );

    let (code, out, err) = tej(&["redis", "info", "--output", "nagios"], d.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("REDIS_INFO OK"), "{out}");

    let (code, out, err) = tej(&["redis", "invalidate-sessions", "--dry-run"], d.path());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(redis_cli(redis.port(), &["DBSIZE"]), "2010");

    let (code, out, err) = tej(
        &["redis", "invalidate-sessions", "--output", "json"],
        d.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let step: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(step["type"], "step");
    assert_eq!(step["data"]["outcome"]["status"], "applied");
    assert_eq!(redis_cli(redis.port(), &["DBSIZE"]), "10");
    let audit_line = std::fs::read_to_string(&audit).unwrap();
    assert!(
        audit_line.contains("\"outcome\":\"applied\""),
        "{audit_line}"
    );

    // An unreachable server is a critical finding, not a crash.
    let (code, out, _) = tej(
        &["redis", "info", "--url", "redis://127.0.0.1:1/"],
        d.path(),
    );
    assert_eq!(code, 2, "{out}");
}

#[test]
fn db_checks_and_a_destructive_step_through_the_binary() {
    let pg = tej_testkit::PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE users (id serial PRIMARY KEY, email text, password_reset_required boolean NOT NULL DEFAULT false);
         INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 25) g;",
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!("environment = \"staging\"\naudit_log = \"{}\"\n[[database]]\nname = \"main\"\nurl = \"{url}\"\n", audit.display()),
    )
    .unwrap();

    let (code, out, err) = tej(&["db", "health", "--output", "json"], d.path());
    assert!(code <= 1, "{out}{err}");
    let kinds: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("db_health"));
    assert_eq!(kinds.last().map(String::as_str), Some("summary"));
    assert!(kinds.iter().any(|k| k == "finding"));

    for sub in ["size", "bloat", "slow-queries", "indexes", "amcheck"] {
        let (code, out, err) = tej(&["db", sub], d.path());
        assert!(code <= 1, "db {sub}: {code}\n{out}{err}");
    }

    // Destructive: refused without --yes, audited; applied with it, audited.
    let (code, out, _) = tej(&["db", "force-password-reset"], d.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("REFUSED") && out.contains("needs confirmation"),
        "{out}"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM users WHERE password_reset_required"
        )
        .unwrap(),
        "0"
    );
    let (code, out, err) = tej(&["db", "force-password-reset", "--yes"], d.path());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM users WHERE password_reset_required"
        )
        .unwrap(),
        "25"
    );
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let outcomes: Vec<String> = audit_text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["outcome"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(outcomes, vec!["refused", "applied"]);

    // VACUUM FULL needs tables.
    let (code, _, err) = tej(&["db", "vacuum", "--full"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("--table"), "{err}");
}

#[test]
fn backup_create_list_verify_restore_prune_through_the_binary() {
    let pg = tej_testkit::PgCluster::start().unwrap();
    let url = pg.create_database("skillswap_db").unwrap();
    pg.psql(
        "skillswap_db",
        "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);
         INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 300) g;",
    )
    .unwrap();
    let s3 = tej_testkit::S3Server::start().unwrap();
    let bucket = s3.unique_bucket("cli").unwrap();
    let d = tempfile::tempdir().unwrap();
    let local = d.path().join("backups");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\naudit_log = \"{}\"\n[[database]]\nname = \"main\"\nurl = \"{url}\"\nsanity_queries = [\"SELECT COUNT(*) FROM users\"]\n[backup]\nrepositories = [\"{}\", \"s3://{bucket}/db\"]\n",
            d.path().join("audit.jsonl").display(),
            local.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tej"))
            .args(args)
            .current_dir(d.path())
            .env_remove("DATABASE_URL")
            .env("AWS_ACCESS_KEY_ID", s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
            .env("AWS_REGION", s3.region())
            .env("AWS_ENDPOINT_URL", s3.endpoint())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, out, err) = run(&["backup", "create", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = created["data"]["id"].as_str().unwrap().to_string();

    let (code, out, err) = run(&["backup", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.matches(&id).count(),
        2,
        "listed in both repositories: {out}"
    );

    let (code, out, err) = run(&["backup", "verify", "latest", "--restore-test"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("300"), "sanity query result shown: {out}");

    // Restore is destructive: refused without --yes.
    let target_url = pg.create_database("restored").unwrap();
    let (code, out, _) = run(&[
        "backup",
        "restore",
        &id,
        "--repo",
        local.to_str().unwrap(),
        "--target",
        &target_url,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REFUSED"), "{out}");
    let (code, out, err) = run(&[
        "backup",
        "restore",
        &id,
        "--repo",
        local.to_str().unwrap(),
        "--target",
        &target_url,
        "--yes",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        pg.psql("restored", "SELECT count(*) FROM users").unwrap(),
        "300"
    );

    let (code, out, err) = run(&["backup", "prune", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("keep") && out.contains(&id), "{out}");

    // A missing repository is a clear failure with the reason on stderr.
    let (code, _, err) = run(&["backup", "list", "--repo", "s3://no-such-bucket-tej/x"]);
    assert_ne!(code, 0);
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn secrets_rotate_plans_then_rolls_back_when_the_service_cannot_be_recreated() {
    let redis = RedisServer::start().unwrap();
    let docker = tej_testkit::DockerEngine::start().unwrap();
    redis_cli(redis.port(), &["SET", "sess:1", "x"]);
    let d = tempfile::tempdir().unwrap();
    let env_file = d.path().join(".env");
    let original = "# app\nNODE_ENV=production\nJWT_SECRET=old-secret-value-0123456789\nJWT_REFRESH_SECRET=old-refresh-value-0123456789\n";
    std::fs::write(&env_file, original).unwrap();
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\naudit_log = \"{}\"\n[[redis]]\nname = \"sessions\"\nurl = \"{}\"\n[compose]\nproject = \"nosuchproject\"\ndocker_host = \"{}\"\n[secrets]\nenv_file = \"{}\"\napp_url = \"http://127.0.0.1:1\"\ntest_email = \"test@example.com\"\ntest_password = {{ env = \"TEJ_TEST_LOGIN_PASSWORD\" }}\n",
            audit.display(),
            redis.url(),
            docker.host(),
            env_file.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tej"))
            .args(args)
            .current_dir(d.path())
            .env("TEJ_TEST_LOGIN_PASSWORD", "pw-not-a-secret-value")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, out, err) = run(&["secrets", "rotate", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Planned"), "{out}");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), original);

    // The backend has no container: recreate fails, the .env is rolled back, exit 1.
    let (code, out, err) = run(&["secrets", "rotate", "--yes"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("RolledBack") || out.contains("RollbackFailed"),
        "{out}"
    );
    let env_now = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env_now.contains("JWT_SECRET=old-secret-value-0123456789"),
        "{env_now}"
    );
    for text in [
        &out,
        &err,
        &std::fs::read_to_string(&audit).unwrap_or_default(),
    ] {
        assert!(!text.contains("old-secret-value"), "secret leaked: {text}");
        assert!(
            !text.contains("pw-not-a-secret-value"),
            "password leaked: {text}"
        );
    }
    assert_eq!(
        redis_cli(redis.port(), &["EXISTS", "sess:1"]),
        "1",
        "sessions are kept when the rotation fails before invalidation"
    );
}
