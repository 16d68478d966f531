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
