//! `cargo xtask demo`: tej's main job against a sandbox stack from the test kit.
//!
//! Starts PostgreSQL 15 (with a `users` table and data), Redis (with sessions) and an
//! S3-compatible server on loopback, writes a `tej.toml` for them under `target/tej-demo/`,
//! then runs the `tej` binary the way an on-call engineer would. Everything the run wrote
//! (config, audit log, daily log, backup repository) stays in `target/tej-demo/` afterwards.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tej_testkit::{PgCluster, RedisServer, S3Server};

/// One command of the demo: a title, `tej` arguments, and the exit codes that count as working.
struct DemoStep {
    title: &'static str,
    args: Vec<String>,
    ok_codes: &'static [i32],
}

fn step(title: &'static str, args: &[&str], ok_codes: &'static [i32]) -> DemoStep {
    DemoStep {
        title,
        args: args.iter().map(|s| s.to_string()).collect(),
        ok_codes,
    }
}

pub fn run(_args: &[String]) -> Result<()> {
    let started = Instant::now();
    crate::install_deps()?;
    crate::step("build tej");
    crate::status(
        crate::cargo(&["build", "--quiet", "-p", "tej-cli"]),
        "cargo build -p tej-cli",
    )?;
    let tej = crate::workspace_root().join("target/debug/tej");

    crate::step("start the sandbox stack (PostgreSQL 15, Redis, S3) on 127.0.0.1");
    let demo_dir = crate::workspace_root().join("target/tej-demo");
    if demo_dir.exists() {
        std::fs::remove_dir_all(&demo_dir)
            .with_context(|| format!("clear {}", demo_dir.display()))?;
    }
    std::fs::create_dir_all(&demo_dir)?;
    let pg = PgCluster::start().context("start PostgreSQL")?;
    let db_url = pg.create_database("skillswap_db")?;
    seed_database(&pg)?;
    println!(
        "PostgreSQL {}  ({} users)",
        db_url,
        pg.psql("skillswap_db", "SELECT count(*) FROM users")?
    );
    let redis = RedisServer::start().context("start Redis")?;
    let sessions = seed_sessions(redis.port(), 500)?;
    println!(
        "Redis      {}  ({sessions} sessions, 20 cache keys)",
        redis.url()
    );
    let s3 = S3Server::start().context("start the S3-compatible server")?;
    let bucket = s3.unique_bucket("tej-demo")?;
    println!("S3         {}  (bucket {bucket})", s3.endpoint());

    let config = demo_dir.join("tej.toml");
    let backups = demo_dir.join("backups");
    let logs = demo_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    write_sample_log(&logs.join("combined.log"))?;
    std::fs::write(
        &config,
        format!(
            r#"# Written by cargo xtask demo for a sandbox stack on 127.0.0.1.
environment = "staging"
audit_log = "{audit}"
state_dir = "{state}"

[[database]]
name = "main"
url = "{db_url}"
sanity_queries = ["SELECT COUNT(*) FROM users"]

[[redis]]
name = "sessions"
url = "{redis_url}"
session_pattern = "sess:*"

[backup]
repositories = ["{backups}", "s3://{bucket}/skillswap"]
compression = "zstd"
compression_level = 3

[logs]
paths = ["{logs}"]
"#,
            audit = demo_dir.join("audit.jsonl").display(),
            state = demo_dir.join("state").display(),
            redis_url = redis.url(),
            backups = backups.display(),
            logs = logs.display(),
        ),
    )?;

    let logs_str = logs.to_str().context("demo path is not UTF-8")?;
    let steps = vec![
        step("validate the configuration", &["config", "check"], &[0]),
        step("the maintenance calendar (IST)", &["calendar"], &[0]),
        step(
            "host resources (disk, inodes, memory, load)",
            &["host", "check"],
            &[0, 1, 2],
        ),
        step(
            "log review: errors, warnings, failed logins, slow queries",
            &["logs", "review", "--since", "24h"],
            &[0, 1, 2],
        ),
        step("PostgreSQL daily health check", &["db", "health"], &[0, 1]),
        step(
            "PostgreSQL size and largest relations",
            &["db", "size"],
            &[0, 1],
        ),
        step("PostgreSQL index audit", &["db", "indexes"], &[0, 1]),
        step(
            "PostgreSQL VACUUM (ANALYZE), audited",
            &["db", "vacuum"],
            &[0],
        ),
        step(
            "Redis health: PING, INFO, memory doctor",
            &["redis", "info"],
            &[0, 1],
        ),
        step(
            "Redis big keys (SCAN, never KEYS)",
            &["redis", "bigkeys", "--top", "5"],
            &[0],
        ),
        step(
            "nightly backup to local disk and S3 (pg_dump | zstd | SHA-256)",
            &["backup", "create"],
            &[0],
        ),
        step(
            "backups, newest first by manifest time",
            &["backup", "list"],
            &[0],
        ),
        step(
            "verify the latest backup and restore-test it",
            &["backup", "verify", "latest", "--restore-test"],
            &[0],
        ),
        step(
            "GFS retention plan (dry run)",
            &["backup", "prune", "--dry-run"],
            &[0],
        ),
        step(
            "TLS probe of a closed port (a finding, never a hang)",
            &["tls", "check", "127.0.0.1:1"],
            &[2],
        ),
        step(
            "disk cleanup plan (dry run)",
            &[
                "cleanup",
                "--root",
                logs_str,
                "--pattern",
                "*.log",
                "--older-than",
                "30",
                "--dry-run",
            ],
            &[0],
        ),
    ];

    let mut failures = Vec::new();
    for s in &steps {
        crate::step(&format!("tej {}  — {}", s.args.join(" "), s.title));
        let mut c = Command::new(&tej);
        c.args(&s.args)
            .arg("--config")
            .arg(&config)
            .env("AWS_ACCESS_KEY_ID", s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
            .env("AWS_REGION", s3.region())
            .env("AWS_ENDPOINT_URL", s3.endpoint())
            .env("TEJ_S3_FORCE_PATH_STYLE", "1");
        let st = c
            .status()
            .with_context(|| format!("run tej {}", s.args.join(" ")))?;
        let code = st.code().unwrap_or(-1);
        if !s.ok_codes.contains(&code) {
            failures.push(format!("tej {} exited {code}", s.args.join(" ")));
        }
    }

    crate::step("demo finished");
    println!(
        "took {:.1} s; files kept in {}",
        started.elapsed().as_secs_f64(),
        demo_dir.display()
    );
    println!("  config     {}", config.display());
    println!("  audit log  {}", demo_dir.join("audit.jsonl").display());
    println!("  backups    {}", backups.display());
    drop((pg, redis, s3));
    if !failures.is_empty() {
        bail!("demo steps failed: {}", failures.join("; "));
    }
    Ok(())
}

fn seed_database(pg: &PgCluster) -> Result<()> {
    pg.psql(
        "skillswap_db",
        "CREATE TABLE users (
            id bigserial PRIMARY KEY,
            email text NOT NULL UNIQUE,
            name text NOT NULL,
            password_hash text NOT NULL,
            bio text,
            password_reset_required boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE skills (id serial PRIMARY KEY, user_id bigint REFERENCES users(id), skill text NOT NULL);
         INSERT INTO users (email, name, password_hash, bio)
           SELECT 'user' || g || '@example.com', 'User ' || g, md5(g::text), repeat(md5((g * 7)::text) || ' ', 1 + g % 5)
           FROM generate_series(1, 5000) g;
         INSERT INTO skills (user_id, skill) SELECT 1 + (g % 5000), 'skill-' || (g % 97) FROM generate_series(1, 20000) g;
         ANALYZE;",
    )?;
    Ok(())
}

/// Writes `n` session keys and 20 cache keys with raw RESP (no client library needed here).
fn seed_sessions(port: u16, n: usize) -> Result<usize> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let mut payload = Vec::new();
    let cmd = |parts: &[&str], buf: &mut Vec<u8>| {
        buf.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
        for p in parts {
            buf.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes());
        }
    };
    for i in 0..n {
        cmd(
            &[
                "SET",
                &format!("sess:{i:05}"),
                &format!("{{\"user\":{}}}", i % 4000),
            ],
            &mut payload,
        );
    }
    for i in 0..20 {
        cmd(
            &["SET", &format!("cache:page:{i}"), "<html>cached</html>"],
            &mut payload,
        );
    }
    s.write_all(&payload)?;
    // Read n + 20 "+OK\r\n" replies.
    let want = (n + 20) * 5;
    let mut got = vec![0u8; want];
    s.read_exact(&mut got)?;
    if got.windows(4).filter(|w| w == b"+OK\r").count() != n + 20 {
        bail!("unexpected reply from Redis while seeding sessions");
    }
    Ok(n)
}

fn write_sample_log(path: &Path) -> Result<()> {
    let mut f = std::fs::File::create(path)?;
    let now = jiff_like_now();
    for i in 0..2000u32 {
        let line = match i % 50 {
            0 => format!("{now} ERROR request {i} failed: connect ECONNREFUSED 127.0.0.1:5432"),
            1 => format!(
                "{now} WARN slow query took {}ms: SELECT * FROM skills",
                500 + i
            ),
            2 => format!(
                "{now} INFO login failed for user{i}@example.com from 203.0.113.{}",
                i % 7
            ),
            _ => format!("{now} INFO GET /api/v1/users/{i} 200 {}ms", i % 90),
        };
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// The current UTC time as RFC 3339 without pulling a time crate into xtask.
fn jiff_like_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
