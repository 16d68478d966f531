//! `cargo xtask demo`: tej's main job against a sandbox stack from the test kit.
//!
//! Starts, on 127.0.0.1: PostgreSQL 15 (a `users` table with data, its WAL archived by
//! `tej wal push`), Redis (with sessions), an S3-compatible server, a TLS endpoint whose
//! certificate expires in 10 days and, when a Docker engine can be started, a
//! Compose-labelled `backend` service (busybox serving `/health` and the login endpoint).
//! Writes a `tej.toml` for them under `target/tej-demo/`, then runs the `tej` binary the way
//! an on-call engineer would: the daily health check, a backup to local disk and S3 with
//! verify and restore test, a physical base backup and a PITR drill, and a secret rotation.
//! Each step prints a heading and the exact `tej` command line. Everything the run wrote
//! (config, audit log, backup repositories, `.env`) stays in `target/tej-demo/` afterwards,
//! except what the PostgreSQL server's OS user must reach wherever the checkout lives (the
//! tej binary it runs, the WAL archive): that lives under `/tmp` and is removed at the end.
//! `TEJ_BIN=/path/to/tej` runs an already built (or installed) binary instead of building one.
//! Docker is part of the stack (install-deps installs docker.io; the demo starts its own
//! dockerd): a demo that cannot start it fails, naming why.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tej_testkit::{
    DockerEngine, PgCluster, PgClusterOptions, Reachable, RedisServer, S3Server, TlsEndpoint,
};

/// Days the demo TLS endpoint's certificate is valid (short-lived: tej's thresholds follow
/// the lifetime, warning at a third of it left, as Let's Encrypt renews).
const CERT_DAYS: u32 = 10;
/// The demo's Compose project and backend service.
const PROJECT: &str = "tejdemo";
const BACKEND: &str = "backend";
/// The keys the demo rotates (tej's default).
const ROTATED: &[&str] = &["JWT_SECRET", "JWT_REFRESH_SECRET"];

/// Runs `tej` commands against the demo config and remembers the ones that failed.
struct Demo {
    tej: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    failures: Vec<String>,
}

impl Demo {
    /// Waits up to 60 s for `tej wal push` to archive `segment`; a failure is recorded.
    fn archived(&mut self, pg: &PgCluster, segment: &str) -> Result<()> {
        match wait_archived(pg, segment, Duration::from_secs(60))? {
            Ok(secs) => println!("{segment} archived by `tej wal push` after {secs:.1} s"),
            Err(state) => {
                println!("{segment} not archived within 60 s ({state})");
                self.failures
                    .push(format!("WAL segment {segment} was not archived"));
            }
        }
        Ok(())
    }

    /// Prints `title` and the command line, then runs `tej ARGS --config FILE`; false (and
    /// a failure recorded) when the exit code is not one of `ok_codes`.
    fn tej(&mut self, title: &str, args: &[&str], ok_codes: &[i32]) -> Result<bool> {
        crate::step(title);
        let line: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        println!(
            "$ tej {} --config {}",
            line.join(" "),
            shell_quote(&self.config.display().to_string())
        );
        let mut c = Command::new(&self.tej);
        c.args(args).arg("--config").arg(&self.config);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let st = c
            .status()
            .with_context(|| format!("run tej {}", args.join(" ")))?;
        let code = st.code().unwrap_or(-1);
        if ok_codes.contains(&code) {
            Ok(true)
        } else {
            println!("(unexpected exit code {code}; expected one of {ok_codes:?})");
            self.failures
                .push(format!("tej {} exited {code}", args.join(" ")));
            Ok(false)
        }
    }
}

pub fn run(_args: &[String]) -> Result<()> {
    let started = Instant::now();
    crate::install_deps()?;
    let tej = match std::env::var_os("TEJ_BIN") {
        Some(bin) => {
            let bin = std::fs::canonicalize(&bin)
                .with_context(|| format!("TEJ_BIN {}", PathBuf::from(&bin).display()))?;
            crate::step(&format!("use tej from TEJ_BIN: {}", bin.display()));
            bin
        }
        None => {
            crate::step("build tej");
            crate::status(
                crate::cargo(&["build", "--quiet", "-p", "tej-cli"]),
                "cargo build -p tej-cli",
            )?;
            crate::target_dir().join("debug/tej")
        }
    };

    crate::step("start the sandbox stack on 127.0.0.1");
    let demo_dir = crate::target_dir().join("tej-demo");
    if demo_dir.exists() {
        std::fs::remove_dir_all(&demo_dir)
            .with_context(|| format!("clear {}", demo_dir.display()))?;
    }
    std::fs::create_dir_all(&demo_dir)?;
    // What the server's OS user (postgres, when the demo runs as root) runs and writes: the
    // tej binary of archive_command and restore_command, and the WAL archive with its base
    // backups. The checkout may sit where that user cannot go (a clone in root's 0700 home),
    // so both live under /tmp for the length of the demo.
    let tej_reachable =
        Reachable::file(&tej).context("make tej runnable by the server's OS user")?;
    let tej = tej_reachable.path().to_path_buf();
    let server_dir = server_dir().context("create the server-reachable WAL archive directory")?;
    let pitr = server_dir.path().join("pitr");
    std::fs::create_dir_all(&pitr)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pitr, std::fs::Permissions::from_mode(0o777))?;
    }
    let pitr_str = pitr.to_str().context("demo path is not UTF-8")?;
    let archive_command = format!("\"{}\" wal push --repo \"{pitr_str}\" %p", tej.display());
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(archive_command.clone()),
        ..PgClusterOptions::default()
    })
    .context("start PostgreSQL")?;
    let db_url = pg.create_database("skillswap_db")?;
    seed_database(&pg)?;
    println!(
        "PostgreSQL {}  ({} users; archive_command = {archive_command})",
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
    let tls = TlsEndpoint::start(CERT_DAYS).context("start the TLS endpoint")?;
    println!(
        "TLS        {}  (certificate expires in {CERT_DAYS} days; CA {})",
        tls.endpoint(),
        tls.ca_file().display()
    );
    let app_port = tej_testkit::free_port();
    let app_url = format!("http://127.0.0.1:{app_port}/cgi-bin/app");

    // The restore_command of the drill hands this file to `tej wal fetch`, which the
    // scratch server runs as its OS user: it lives beside the WAL archive, and a copy is kept.
    let config = server_dir.path().join("tej.toml");
    let backups = demo_dir.join("backups");
    let logs = demo_dir.join("logs");
    let env_file = demo_dir.join(".env");
    std::fs::create_dir_all(&logs)?;
    write_sample_log(&logs.join("combined.log"))?;
    std::fs::write(
        &env_file,
        "# The application's settings (written by cargo xtask demo; the values are demo values)\n\
         NODE_ENV=production\n\
         JWT_SECRET=demo-jwt-secret-0123456789abcdef0123456789abcdef\n\
         JWT_REFRESH_SECRET=demo-refresh-secret-0123456789abcdef0123456789\n\
         SESSION_SECRET=demo-session-secret-0123456789abcdef\n",
    )?;
    let docker = start_backend(app_port, &app_url, &env_file)
        .context("start the demo's Compose-labelled backend on a private dockerd")?;
    println!(
        "Docker     {}  (Compose project {PROJECT}, service {BACKEND} on 127.0.0.1:{app_port}, environment from {})",
        docker.host(),
        env_file.display()
    );
    let compose = format!(
        "\n[compose]\nproject = \"{PROJECT}\"\ndocker_host = \"{}\"\nbackend_service = \"{BACKEND}\"\nhealth_url = \"{app_url}/health\"\n",
        docker.host()
    );
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

[[tls]]
endpoint = "{tls_endpoint}"
ca_file = "{tls_ca}"

[secrets]
env_file = "{env_file}"
app_url = "{app_url}"
test_email = "demo@example.com"
test_password = {{ env = "TEJ_DEMO_LOGIN_PASSWORD" }}
{compose}"#,
            audit = demo_dir.join("audit.jsonl").display(),
            state = demo_dir.join("state").display(),
            redis_url = redis.url(),
            backups = backups.display(),
            logs = logs.display(),
            tls_endpoint = tls.endpoint(),
            tls_ca = tls.ca_file().display(),
            env_file = env_file.display(),
        ),
    )?;

    let mut demo = Demo {
        tej: tej.clone(),
        config: config.clone(),
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), s3.access_key().to_string()),
            ("AWS_SECRET_ACCESS_KEY".into(), s3.secret_key().to_string()),
            ("AWS_REGION".into(), s3.region().to_string()),
            ("AWS_ENDPOINT_URL".into(), s3.endpoint().to_string()),
            ("TEJ_S3_FORCE_PATH_STYLE".into(), "1".into()),
            (
                "TEJ_DEMO_LOGIN_PASSWORD".into(),
                "demo-login-password".into(),
            ),
        ],
        failures: Vec::new(),
    };
    let logs_str = logs.to_str().context("demo path is not UTF-8")?;
    let ca = tls.ca_file().to_str().context("CA path is not UTF-8")?;

    demo.tej(
        "initialise the WAL archive that archive_command pushes into (the cluster's identity)",
        &["wal", "init", "--repo", pitr_str, "--db", &db_url],
        &[0],
    )?;
    // What the server tried to archive before the marker existed goes now.
    let first = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
    demo.archived(&pg, &first)?;

    println!("\n######## the daily health check");
    demo.tej("validate the configuration", &["config", "check"], &[0])?;
    demo.tej("the maintenance calendar (IST)", &["calendar"], &[0])?;
    demo.tej(
        "host resources (disk, inodes, memory, load)",
        &["host", "check"],
        &[0, 1, 2],
    )?;
    demo.tej(
        "log review: errors, warnings, failed logins, slow queries",
        &["logs", "review", "--since", "24h"],
        &[0, 1, 2],
    )?;
    demo.tej("PostgreSQL daily health check", &["db", "health"], &[0, 1])?;
    demo.tej(
        "PostgreSQL size and largest relations",
        &["db", "size"],
        &[0, 1],
    )?;
    demo.tej("PostgreSQL index audit", &["db", "indexes"], &[0, 1])?;
    demo.tej(
        "PostgreSQL VACUUM (ANALYZE), audited",
        &["db", "vacuum"],
        &[0],
    )?;
    demo.tej(
        "Redis health: PING, INFO, memory doctor",
        &["redis", "info"],
        &[0, 1],
    )?;
    demo.tej(
        "Redis big keys (SCAN, never KEYS)",
        &["redis", "bigkeys", "--top", "5"],
        &[0],
    )?;
    demo.tej(
        &format!("TLS certificate chain, name and expiry (a {CERT_DAYS}-day certificate)"),
        &["tls", "check", "--ca", ca],
        &[0, 1],
    )?;
    demo.tej(
        &format!("Compose services of project {PROJECT}: state, health, restarts, uptime"),
        &["services", "status"],
        &[0, 1],
    )?;

    println!("\n######## backup to local disk and S3, verify, restore test");
    demo.tej(
        "nightly backup to local disk and S3 (pg_dump | zstd | SHA-256)",
        &["backup", "create"],
        &[0],
    )?;
    demo.tej(
        "backups, newest first by manifest time",
        &["backup", "list"],
        &[0],
    )?;
    demo.tej(
        "verify the latest backup and restore-test it",
        &["backup", "verify", "latest", "--restore-test"],
        &[0],
    )?;
    demo.tej(
        "GFS retention plan (dry run)",
        &["backup", "prune", "--dry-run"],
        &[0],
    )?;

    println!("\n######## point-in-time recovery: base backup, WAL archive, drill");
    demo.tej(
        "physical base backup of the running cluster",
        &[
            "backup",
            "create",
            "--physical",
            "--repo",
            pitr_str,
            "--db",
            &db_url,
        ],
        &[0],
    )?;
    crate::step("new rows after the base backup, then a WAL switch");
    pg.psql(
        "skillswap_db",
        "INSERT INTO users (email, name, password_hash)
           SELECT 'late' || g || '@example.com', 'Late ' || g, md5(g::text) FROM generate_series(1, 250) g",
    )?;
    let segment = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
    println!(
        "250 users inserted ({} now); switched away from WAL segment {segment}",
        pg.psql("skillswap_db", "SELECT count(*) FROM users")?
    );
    demo.archived(&pg, &segment)?;
    demo.tej(
        "PITR drill: newest base backup + WAL into a scratch cluster, sanity query, RTO and RPO",
        &[
            "drill",
            "--repo",
            pitr_str,
            "--database",
            "skillswap_db",
            "--query",
            "SELECT count(*) FROM users",
        ],
        &[0],
    )?;

    println!("\n######## the whole daily health check at once (what cron runs at 09:00 IST)");
    demo.tej(
        "services, logs, host, PostgreSQL, Redis, backups and WAL archiving, certificates",
        &["health"],
        &[0, 1, 2],
    )?;

    println!("\n######## secret rotation");
    let before = std::fs::read_to_string(&env_file)?;
    let live_before: Vec<String> = ROTATED
        .iter()
        .map(|k| live_digest(&docker, k))
        .collect::<Result<_>>()?;
    let sessions_before = redis_dbsize(redis.port())?;
    demo.tej(
        "rotate the JWT secrets: new values in .env, recreate the backend, drop sessions, check health and login",
        &["secrets", "rotate", "--yes"],
        &[0],
    )?;
    let after = std::fs::read_to_string(&env_file)?;
    for key in ROTATED {
        let changed = env_value(&before, key) != env_value(&after, key);
        println!(
            "  {key}: {}",
            if changed {
                "rotated (values not shown)"
            } else {
                "UNCHANGED"
            }
        );
    }
    // What the running backend holds: SHA-256 digests compared, never the values.
    for (key, was) in ROTATED.iter().zip(&live_before) {
        let live = live_digest(&docker, key)?;
        let want = sha256_hex(env_value(&after, key).unwrap_or_default())?;
        let verdict = if live == want && &live != was {
            "runs with the new value (SHA-256 of its environment = the .env's)"
        } else if &live == was {
            "STILL RUNS WITH THE OLD VALUE"
        } else {
            "runs with a value that is not the .env's"
        };
        println!("  backend container {key}: {verdict}");
        if live != want {
            demo.failures.push(format!(
                "the backend container's {key} is not the rotated value"
            ));
        }
    }
    println!(
        "  Redis keys: {sessions_before} before, {} after (sessions dropped, cache kept)",
        redis_dbsize(redis.port())?
    );

    demo.tej(
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
    )?;

    crate::step("demo finished");
    println!(
        "took {:.1} s; files kept in {}",
        started.elapsed().as_secs_f64(),
        demo_dir.display()
    );
    let kept_config = demo_dir.join("tej.toml");
    std::fs::copy(&config, &kept_config)
        .with_context(|| format!("keep {}", kept_config.display()))?;
    println!("  config        {}", kept_config.display());
    println!("  audit log     {}", demo_dir.join("audit.jsonl").display());
    println!(
        "  backups       {} (and s3://{bucket}/skillswap while the demo ran)",
        backups.display()
    );
    println!("  .env          {}", env_file.display());
    println!(
        "  removed       {} (the WAL archive, base backups and the config the server read) and {} (the tej it ran)",
        server_dir.path().display(),
        tej.display()
    );
    let failures = std::mem::take(&mut demo.failures);
    drop((pg, redis, s3, tls, docker));
    drop((server_dir, tej_reachable));
    if !failures.is_empty() {
        bail!("demo steps failed: {}", failures.join("; "));
    }
    Ok(())
}

/// A fresh directory under /tmp that every local user can traverse (mode 0755), removed on
/// drop: where the server's OS user finds what it must write.
fn server_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("tej-demo-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// `arg` as a shell word, quoted by `tej_core::shell` only when needed (so a printed command
/// line can be pasted).
fn shell_quote(arg: &str) -> String {
    tej_core::shell::display_word(arg)
}

/// The CGI program of the demo backend: `/health` and `POST /api/v1/auth/login` answer 200.
const APP_CGI: &str = r#"#!/bin/sh
case "$PATH_INFO" in
  /health) printf 'Content-Type: application/json\r\n\r\n{"status":"ok"}\n' ;;
  /api/v1/auth/login)
    [ "$REQUEST_METHOD" = POST ] || { printf 'Status: 405 Method Not Allowed\r\n\r\n'; exit 0; }
    printf 'Content-Type: application/json\r\n\r\n{"token":"demo"}\n' ;;
  *) printf 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnot found\n' ;;
esac
"#;

/// Starts a Docker engine and the demo's Compose-labelled backend: busybox `httpd` on
/// 127.0.0.1:`port` (host network), answering at `app_url`, with `env_file`'s values in
/// its environment (what Compose's `env_file: .env` gives it at create time).
fn start_backend(port: u16, app_url: &str, env_file: &Path) -> Result<DockerEngine> {
    let docker = DockerEngine::start()?;
    docker.import_busybox_image("tej-demo/busybox:latest")?;
    let script = format!(
        "mkdir -p /www/cgi-bin && cat > /www/cgi-bin/app <<'EOF'\n{APP_CGI}EOF\n\
         chmod +x /www/cgi-bin/app\n\
         httpd -f -p 127.0.0.1:{port} -h /www & pid=$!\n\
         trap 'kill $pid; exit 0' TERM\n\
         wait $pid\n"
    );
    docker.docker(&[
        "run",
        "-d",
        "--name",
        &format!("{PROJECT}-{BACKEND}-1"),
        "--network",
        "host",
        "--label",
        &format!("com.docker.compose.project={PROJECT}"),
        "--label",
        &format!("com.docker.compose.service={BACKEND}"),
        "--label",
        "com.docker.compose.container-number=1",
        "--label",
        "com.docker.compose.oneoff=False",
        "--env-file",
        &env_file.display().to_string(),
        "--health-cmd",
        &format!("wget -q -O /dev/null http://127.0.0.1:{port}/cgi-bin/app/health"),
        "--health-interval",
        "500ms",
        "--health-retries",
        "5",
        "--stop-timeout",
        "5",
        "tej-demo/busybox:latest",
        "sh",
        "-c",
        &script,
    ])?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if http_status(port, "/cgi-bin/app/health").is_ok_and(|s| s == 200) {
            return Ok(docker);
        }
        if Instant::now() > deadline {
            bail!("the demo backend did not answer {app_url}/health within 15 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The SHA-256 (hex) of `key`'s value in the running backend container's environment,
/// computed inside the container (the value never leaves it).
fn live_digest(docker: &DockerEngine, key: &str) -> Result<String> {
    let out = docker.docker(&[
        "exec",
        &format!("{PROJECT}-{BACKEND}-1"),
        "sh",
        "-c",
        &format!("printf %s \"${key}\" | sha256sum"),
    ])?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

/// The SHA-256 (hex) of `value`, by `sha256sum` reading it on stdin (never on a command line).
fn sha256_hex(value: &str) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("run sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum stdin")?
        .write_all(value.as_bytes())?;
    let out = child.wait_with_output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

/// The status code of `GET path` on 127.0.0.1:`port`.
fn http_status(port: u16, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")
}

/// Waits until `segment` is archived: Ok(seconds), or Err(what pg_stat_archiver says).
fn wait_archived(
    pg: &PgCluster,
    segment: &str,
    limit: Duration,
) -> Result<std::result::Result<f64, String>> {
    let t = Instant::now();
    loop {
        let row = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') || ' ' || failed_count || ' ' || coalesce(last_failed_wal, '-') FROM pg_stat_archiver",
        )?;
        let last = row.split_whitespace().next().unwrap_or_default();
        if last.len() == 24 && last >= segment {
            return Ok(Ok(t.elapsed().as_secs_f64()));
        }
        if t.elapsed() > limit {
            return Ok(Err(format!(
                "pg_stat_archiver: last archived, failures, last failed = {row}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of `key` in .env text (for a changed / unchanged check; never printed).
fn env_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// `DBSIZE` over raw RESP.
fn redis_dbsize(port: u16) -> Result<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"*1\r\n$6\r\nDBSIZE\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let reply = String::from_utf8_lossy(&buf[..n]);
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected DBSIZE reply {reply:?}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("--repo"), "--repo");
        assert_eq!(shell_quote("/a/b.toml"), "/a/b.toml");
        assert_eq!(
            shell_quote("SELECT count(*) FROM users"),
            "'SELECT count(*) FROM users'"
        );
        assert_eq!(shell_quote("it's"), "\"it's\"");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn env_values_are_found_by_exact_key() {
        let text = "JWT_SECRET_OLD=x\nJWT_SECRET=abc\n";
        assert_eq!(env_value(text, "JWT_SECRET"), Some("abc"));
        assert_eq!(env_value(text, "MISSING"), None);
    }
}
