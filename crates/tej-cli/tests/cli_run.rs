//! End-to-end: `tej run daily` and `tej health` through the binary against real PostgreSQL,
//! Redis and an S3-compatible server (JSON Lines checked), and the Nagios exit codes.

use std::process::Command;
use tej_testkit::{PgCluster, RedisServer, S3Server};

struct Env<'a> {
    dir: &'a std::path::Path,
    s3: &'a S3Server,
}

impl Env<'_> {
    fn tej(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tej"))
            .args(args)
            .current_dir(self.dir)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("TEJ_CONFIG")
            .env_remove("DOCKER_HOST")
            .env("NO_COLOR", "1")
            .env("AWS_ACCESS_KEY_ID", self.s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", self.s3.secret_key())
            .env("AWS_REGION", self.s3.region())
            .env("AWS_ENDPOINT_URL", self.s3.endpoint())
            .output()
            .expect("run tej");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn finding<'a>(v: &'a [serde_json::Value], check: &str, target: &str) -> &'a serde_json::Value {
    v.iter()
        .find(|l| {
            l["type"] == "finding" && l["data"]["check"] == check && l["data"]["target"] == target
        })
        .map(|l| &l["data"])
        .unwrap_or_else(|| panic!("no {check} for {target} in {v:#?}"))
}

#[test]
fn run_daily_json_and_nagios_exit_codes_against_real_servers() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("skillswap_db").unwrap();
    pg.psql(
        "skillswap_db",
        "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);
         INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 120) g;",
    )
    .unwrap();
    let redis = RedisServer::start().unwrap();
    let s3 = S3Server::start().unwrap();
    let bucket = s3.unique_bucket("clirun").unwrap();
    let d = tempfile::tempdir().unwrap();
    let env = Env {
        dir: d.path(),
        s3: &s3,
    };
    let local = d.path().join("backups");
    let base = format!(
        "environment = \"staging\"\n\
         [host]\ndisk_warn_percent = 100.0\ndisk_crit_percent = 100.0\nmemory_warn_percent = 100.0\nmemory_crit_percent = 100.0\n\
         [[database]]\nname = \"main\"\nurl = \"{url}\"\n\
         [[redis]]\nname = \"cache\"\nurl = \"{}\"\n\
         [backup]\nrepositories = [\"{}\", \"s3://{bucket}/db\"]\n\
         [[check]]\nname = \"active-users\"\nsql = \"SELECT count(*) FROM users\"\nwarn = 1000\ncrit = 5000\n",
        redis.url(),
        local.display()
    );
    std::fs::write(d.path().join("tej.toml"), &base).unwrap();

    // Before any backup: the backups check is critical, in JSON and as Nagios exit 2.
    let (code, out, err) = env.tej(&["run", "daily", "--output", "json"]);
    let v = lines(&out);
    assert_eq!(
        code, 2,
        "every format exits with the run's severity: {out}{err}"
    );
    assert_eq!(v.last().unwrap()["data"]["exit_code"], 2);
    let none = finding(&v, "backups.recent", &format!("repo:{}", local.display()));
    assert_eq!(none["severity"], "critical", "{none}");
    let (code, out, err) = env.tej(&["run", "daily", "--output", "nagios"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.starts_with("DAILY_HEALTH_CHECK CRITICAL - "), "{out}");

    // A backup in both repositories, verified: the backups check passes.
    let (code, out, err) = env.tej(&["backup", "create", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = env.tej(&["backup", "verify", "latest"]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = env.tej(&["run", "daily", "--output", "json"]);
    let v = lines(&out);
    assert_eq!(
        code as i64,
        v.last().unwrap()["data"]["exit_code"].as_i64().unwrap(),
        "{err}"
    );
    for repo in [
        format!("repo:{}", local.display()),
        format!("repo:s3://{bucket}/db"),
    ] {
        let f = finding(&v, "backups.recent", &repo);
        assert_eq!(f["severity"], "ok", "{f}");
        assert!(
            f["summary"]
                .as_str()
                .unwrap()
                .contains("newest backup of skillswap_db"),
            "{f}"
        );
    }
    assert_eq!(finding(&v, "redis.ping", "redis:cache")["severity"], "ok");
    let users = finding(&v, "custom.active-users", "db:main");
    assert_eq!(users["metrics"][0]["value"], 120.0);
    assert!(
        v.iter().any(|l| l["data"]["target"] == "db:main"
            && l["data"]["check"]
                .as_str()
                .unwrap()
                .starts_with("postgres.")),
        "{v:#?}"
    );
    // archive_mode is off in this cluster: a warning, the worst finding of the run.
    assert_eq!(
        finding(&v, "backups.wal-archiving", "db:main")["severity"],
        "warning"
    );
    let summary = v.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["data"]["title"], "daily health check");
    let sev = summary["data"]["severity"].as_str().unwrap().to_string();
    let expected = summary["data"]["exit_code"].as_i64().unwrap() as i32;
    // No [compose], [logs] or [[tls]] here: the one `not configured` finding is UNKNOWN.
    assert!(sev == "unknown" || sev == "critical", "{summary}");
    assert!(
        v.iter().any(|l| l["data"]["check"] == "config.coverage"
            && l["data"]["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("not configured: Compose services"))),
        "{v:#?}"
    );

    // Nagios: the exit code is the run's severity; `tej health` is the same check.
    let (code, out, _) = env.tej(&["health", "--output", "nagios"]);
    assert_eq!(code, expected, "{out}");
    assert!(
        out.starts_with(&format!("DAILY_HEALTH_CHECK {} - ", sev.to_uppercase())),
        "{out}"
    );
    assert!(out.contains("'backup_age_hours"), "perfdata: {out}");

    // The weekly audit and the performance check through the same binary.
    let (code, out, err) = env.tej(&["run", "weekly", "--output", "json"]);
    let v = lines(&out);
    assert_eq!(
        code as i64,
        v.last().unwrap()["data"]["exit_code"].as_i64().unwrap(),
        "{err}"
    );
    assert_eq!(v.last().unwrap()["data"]["title"], "weekly audit");
    let verify = finding(&v, "backups.verify", &format!("repo:s3://{bucket}/db"));
    assert_eq!(verify["severity"], "ok", "{verify}");
    assert_eq!(
        finding(
            &v,
            "security.backup-encryption",
            &format!("repo:s3://{bucket}/db")
        )["severity"],
        "critical"
    );
    let (code, out, err) = env.tej(&["run", "performance", "--output", "json"]);
    let v = lines(&out);
    assert_eq!(
        code as i64,
        v.last().unwrap()["data"]["exit_code"].as_i64().unwrap(),
        "{err}"
    );
    assert_eq!(v.last().unwrap()["data"]["title"], "performance check");
    assert!(finding(&v, "performance.pg-cache-hit", "db:main")["summary"].is_string());
    assert!(finding(&v, "performance.redis-hit-ratio", "redis:cache")["summary"].is_string());
    assert_eq!(
        finding(&v, "custom.active-users", "db:main")["severity"],
        "ok"
    );

    // A monthly entry goes through tej-runbook's calendar runner.
    let (code, out, err) = env.tej(&["run", "security-audit", "--output", "json"]);
    let v = lines(&out);
    let last = v.last().unwrap_or_else(|| panic!("no output: {err}"));
    assert_eq!(last["type"], "summary", "{out}{err}");
    assert_eq!(
        code as i64,
        last["data"]["exit_code"].as_i64().unwrap(),
        "{err}"
    );

    // A dead Redis next to everything else: critical (2), and still every other check reported.
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "{base}[[redis]]\nname = \"gone\"\nurl = \"redis://127.0.0.1:{}/0\"\n",
            tej_testkit::free_port()
        ),
    )
    .unwrap();
    let (code, out, _) = env.tej(&["run", "daily", "--output", "nagios", "--timeout", "10"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("redis unreachable"), "{out}");
    let (_, out, _) = env.tej(&["run", "daily", "--output", "json"]);
    let v = lines(&out);
    assert_eq!(
        finding(&v, "redis.ping", "redis:gone")["severity"],
        "critical"
    );
    assert_eq!(finding(&v, "redis.ping", "redis:cache")["severity"], "ok");

    // Not due (a Thursday afternoon; the weekly audit is Sundays 02:00 IST): nothing runs,
    // OK (0), even with a dead Redis configured.
    let thursday = "2025-01-16T09:30:00Z";
    let (code, out, err) = env.tej(&[
        "run",
        "weekly-audit",
        "--if-due",
        "--at",
        thursday,
        "--output",
        "nagios",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim(),
        "OK - weekly-audit is not due now; next weekly-audit at 2025-01-19 02:00 IST"
    );
    let (code, out, _) = env.tej(&[
        "run",
        "weekly-audit",
        "--if-due",
        "--at",
        thursday,
        "--output",
        "json",
    ]);
    assert_eq!(code, 0);
    let v = lines(&out);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["type"], "not_due");
    assert!(
        v[0]["data"]["message"]
            .as_str()
            .unwrap()
            .contains("2025-01-19 02:00 IST")
    );
    // Due (09:03 IST, the daily check's time): it runs, and the dead Redis makes it critical.
    let (code, out, _) = env.tej(&[
        "run",
        "daily",
        "--if-due",
        "--at",
        "2025-01-16T03:33:00Z",
        "--output",
        "nagios",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("DAILY_HEALTH_CHECK CRITICAL"), "{out}");
    // An unknown entry is an error (UNKNOWN in Nagios mode).
    let (code, _, err) = env.tej(&["run", "fortnightly", "--output", "nagios"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("daily-health"), "{err}");
}
