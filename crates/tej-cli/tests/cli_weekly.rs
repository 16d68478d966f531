//! The weekly audit's work and the other guarded maintenance commands through the `tej`
//! binary: `tej run weekly` runs VACUUM ANALYZE and removes old logs (with --yes), `tej images
//! prune --dry-run` changes nothing and the prune keeps in-use and rollback images, `tej redis
//! flush --db N` is refused in production, and a session pattern that can match every key is
//! refused.

use std::path::Path;
use std::process::Command;
use tej_testkit::{DockerEngine, PgCluster, RedisServer};

fn tej(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tej"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("TEJ_ENVIRONMENT")
        .env_remove("DOCKER_HOST")
        .env("NO_COLOR", "1")
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
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn run_weekly_vacuums_and_removes_old_logs() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE items (id int); INSERT INTO items SELECT generate_series(1, 1000); \
         DELETE FROM items WHERE id % 3 = 0;",
    )
    .unwrap();
    let stats = || {
        pg.psql(
            "app",
            "SELECT (last_vacuum IS NOT NULL)::text || ',' || (last_analyze IS NOT NULL)::text \
             FROM pg_stat_user_tables WHERE relname = 'items'",
        )
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!(stats(), "false,false");
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let old = logs.join("app.log.3.gz");
    std::fs::write(&old, "old").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(45 * 86_400))
        .unwrap();
    std::fs::write(logs.join("app.log"), "today\n").unwrap();
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\naudit_log = \"{}\"\n[[database]]\nname = \"app\"\nurl = \"{url}\"\n[logs]\npaths = [\"{}\"]\n",
            audit.display(),
            logs.display()
        ),
    )
    .unwrap();

    // Without --yes: VACUUM ANALYZE (mutating) runs, the log cleanup is only planned.
    let (_, out, err) = tej(d.path(), &["run", "weekly"]);
    assert!(out.contains("weekly-audit.vacuum-analyze"), "{out}{err}");
    assert_eq!(stats(), "true,true", "{out}{err}");
    assert!(out.contains("weekly-audit.disk-cleanup"), "{out}{err}");
    assert!(old.exists(), "not removed without --yes: {out}");

    let (_, out, err) = tej(d.path(), &["run", "weekly", "--yes"]);
    assert!(!old.exists(), "removed with --yes: {out}{err}");
    assert!(logs.join("app.log").exists());
    let audit = std::fs::read_to_string(&audit).unwrap();
    assert!(
        audit.contains("\"step\":\"disk-cleanup\"") && audit.contains("\"outcome\":\"applied\""),
        "{audit}"
    );
}

#[test]
fn images_prune_dry_run_changes_nothing_and_keeps_in_use_and_rollback_images() {
    let engine = DockerEngine::start().unwrap();
    for tag in ["shop/web:v1", "shop/web:v0", "shop/web:unused"] {
        engine.import_busybox_image(tag).unwrap();
    }
    engine
        .docker(&["tag", "shop/web:v0", "tej-rollback/shop-web:previous"])
        .unwrap();
    engine.docker(&["rmi", "shop/web:v0"]).unwrap();
    engine
        .docker(&[
            "create",
            "--name",
            "shop-web-1",
            "shop/web:v1",
            "sleep",
            "600",
        ])
        .unwrap();
    let exists = |r: &str| engine.docker(&["image", "inspect", r]).is_ok();
    let d = tempfile::tempdir().unwrap();
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "audit_log = \"{}\"\n[compose]\nproject = \"shop\"\ndocker_host = \"{}\"\n",
            audit.display(),
            engine.host()
        ),
    )
    .unwrap();
    let prune = |extra: &[&str]| {
        let mut a = vec!["images", "prune", "--older-than", "0s"];
        a.extend_from_slice(extra);
        tej(d.path(), &a)
    };
    // Minutes-old images are not 168 h old: nothing to prune by default.
    let (code, out, err) = tej(d.path(), &["images", "prune", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to prune"), "{out}");
    let (code, out, err) = prune(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("shop/web:unused"), "the plan names it: {out}");
    assert!(!out.contains("shop/web:v1"), "{out}");
    assert!(!out.contains("tej-rollback"), "{out}");
    assert!(exists("shop/web:unused"), "a dry run changes nothing");
    let (code, out, err) = prune(&[]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("--yes"), "{out}");
    assert!(exists("shop/web:unused"), "not removed without --yes");
    let (code, out, err) = prune(&["--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!exists("shop/web:unused"), "{out}");
    assert!(exists("shop/web:v1"), "in use by a container");
    assert!(
        exists("tej-rollback/shop-web:previous"),
        "kept for rollback"
    );
    let audit = std::fs::read_to_string(&audit).unwrap();
    assert!(audit.contains("\"step\":\"docker-image-prune\""), "{audit}");
}

#[test]
fn redis_flush_is_refused_in_production_and_match_all_patterns_are_refused() {
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    assert_eq!(redis_cli(port, &["-n", "1", "SET", "cache:1", "x"]), "OK");
    assert_eq!(redis_cli(port, &["SET", "sess:1", "y"]), "OK");
    assert_eq!(redis_cli(port, &["SET", "user:1", "z"]), "OK");
    let d = tempfile::tempdir().unwrap();
    let write = |env: &str| {
        std::fs::write(
            d.path().join("tej.toml"),
            format!(
                "environment = \"{env}\"\n[[redis]]\nname = \"cache\"\nurl = \"{}\"\n",
                redis.url()
            ),
        )
        .unwrap()
    };
    write("production");
    let (code, out, err) = tej(d.path(), &["redis", "flush", "--db", "1", "--yes"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("production"), "{out}{err}");
    assert_eq!(redis_cli(port, &["-n", "1", "DBSIZE"]), "1");

    for p in ["?*", "*?", "**", "[a-z]*"] {
        let (code, out, err) = tej(
            d.path(),
            &["redis", "invalidate-sessions", "--pattern", p, "--yes"],
        );
        assert_eq!(code, 1, "{p}: {out}{err}");
        assert!(
            format!("{out}{err}").contains("every key"),
            "{p}: {out}{err}"
        );
    }
    assert_eq!(redis_cli(port, &["DBSIZE"]), "2", "nothing removed");

    write("staging");
    let (code, out, err) = tej(d.path(), &["redis", "flush", "--db", "1"]);
    assert_ne!(code, 0, "{out}{err}");
    assert_eq!(
        redis_cli(port, &["-n", "1", "DBSIZE"]),
        "1",
        "not without --yes"
    );
    let (code, out, err) = tej(d.path(), &["redis", "flush", "--db", "1", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(redis_cli(port, &["-n", "1", "DBSIZE"]), "0");
    assert_eq!(redis_cli(port, &["DBSIZE"]), "2", "database 0 is untouched");
}
