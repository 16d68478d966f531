//! `tej emergency security-breach` end to end against real PostgreSQL and Redis. The firewall
//! is a fake `ufw` script first on PATH: the real firewall is never touched.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use tej_testkit::{PgCluster, RedisServer};

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn tej(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tej"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("TEJ_ENVIRONMENT")
        .env("PATH", path)
        .env("TEST_PW", "test-account-password")
        .env("UFW_LOG", dir.join("ufw.log"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run tej");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn security_breach_dry_run_then_unconfirmed_run_through_the_binary() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE users (id int PRIMARY KEY, password_reset_required boolean NOT NULL DEFAULT false);
         INSERT INTO users SELECT g FROM generate_series(1, 3) g;",
    )
    .unwrap();
    let redis = RedisServer::start().unwrap();
    redis_cli(redis.port(), &["SET", "sess:1", "x"]);
    redis_cli(redis.port(), &["SET", "sess:2", "x"]);

    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("bin")).unwrap();
    let ufw = dir.join("bin/ufw");
    std::fs::write(
        &ufw,
        "#!/bin/sh\necho \"$@\" >> \"$UFW_LOG\"\nif [ \"$1\" = status ]; then echo 'Status: active'; fi\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&ufw, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.join("logs")).unwrap();
    std::fs::write(
        dir.join("logs/combined.log"),
        "2025-01-16T10:00:00Z login failed from 198.51.100.23\n2025-01-16T10:00:01Z ok from 192.0.2.1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join(".env"),
        "JWT_SECRET=old\nJWT_REFRESH_SECRET=old2\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("tej.toml"),
        format!(
            r#"environment = "staging"
audit_log = "{audit}"

[[database]]
name = "main"
url = "{url}"

[[redis]]
name = "cache"
url = "{redis}"

[logs]
paths = ["{logs}"]

[compose]
project = "app"
docker_host = "unix://{dir}/no-docker.sock"

[secrets]
env_file = "{env}"
app_url = "http://127.0.0.1:9"
test_email = "test@example.com"
test_password = {{ env = "TEST_PW" }}
"#,
            audit = dir.join("audit.jsonl").display(),
            redis = redis.url(),
            logs = dir.join("logs").display(),
            dir = dir.display(),
            env = dir.join(".env").display(),
        ),
    )
    .unwrap();

    // Dry run: every step planned, nothing touched (not even ufw).
    let (code, out, err) = tej(
        dir,
        &[
            "emergency",
            "security-breach",
            "--address",
            "198.51.100.23",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("emergency-security-breach (dry run: nothing changed)"),
        "{out}"
    );
    for step in [
        "- firewall-block [mutating] on 198.51.100.23: planned",
        "- rotate-secrets-emergency [destructive]",
        "- redis-invalidate-sessions [mutating] on redis:cache: planned",
        "- force-password-reset [destructive]",
        "- search-logs [read-only] on 198.51.100.23: planned",
    ] {
        assert!(out.contains(step), "missing {step:?} in\n{out}");
    }
    assert!(out.contains("UNLINK about 2 keys"), "{out}");
    assert!(out.contains("3 of 3 users"), "{out}");
    assert!(!dir.join("ufw.log").exists());
    assert_eq!(redis_cli(redis.port(), &["DBSIZE"]), "2");
    assert!(
        std::fs::read_to_string(dir.join(".env"))
            .unwrap()
            .contains("=old\n")
    );

    // JSON Lines: one `step` line per step.
    let (code, out, _) = tej(
        dir,
        &[
            "emergency",
            "security-breach",
            "--address",
            "198.51.100.23",
            "--dry-run",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0);
    let steps: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 5);
    assert!(
        steps
            .iter()
            .all(|s| s["type"] == "step" && s["data"]["outcome"]["status"] == "planned")
    );

    // Without --yes: the address is blocked (mutating), the destructive rotation is refused,
    // and nothing after it runs.
    let (code, out, _) = tej(
        dir,
        &["emergency", "security-breach", "--address", "198.51.100.23"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REFUSED"), "{out}");
    let ufw_log = std::fs::read_to_string(dir.join("ufw.log")).unwrap();
    assert_eq!(ufw_log, "status numbered\ndeny from 198.51.100.23 to any\n");
    assert_eq!(redis_cli(redis.port(), &["DBSIZE"]), "2");
    assert_eq!(
        pg.psql(
            "app",
            "SELECT count(*) FROM users WHERE password_reset_required"
        )
        .unwrap(),
        "0"
    );
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"step\":\"firewall-block\""), "{audit}");
    assert!(audit.contains("\"outcome\":\"refused\""), "{audit}");
    assert!(!audit.contains("test-account-password"));

    // A loopback address is refused before anything runs.
    let (code, _, err) = tej(
        dir,
        &["emergency", "security-breach", "--address", "127.0.0.1"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("loopback"), "{err}");
}
