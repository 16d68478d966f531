//! The example programs run as an operator would run them (their binaries, a `tej.toml`,
//! the environment), against real servers from tej-testkit: PostgreSQL (archiving WAL for
//! PITR), Redis, the S3-compatible server, TLS endpoints and a private Docker engine.

use std::path::Path;
use std::process::Command;
use tej_testkit::{PgCluster, RedisServer, S3Server, TlsEndpoint, is_root};

/// Exit code, stdout, stderr of example `bin` run in `dir` with `args` and `envs`.
fn run(bin: &str, dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("TEJ_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("DOCKER_HOST")
        .env_remove("TEJ_ENVIRONMENT");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("start {bin}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of `out` whose columns are `severity  check  target ...`, for `check` on `target`.
fn finding_line<'a>(out: &'a str, check: &str, target: &str) -> &'a str {
    out.lines()
        .find(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 2 && cols[1] == check && cols[2] == target
        })
        .unwrap_or_else(|| panic!("no {check} for {target} in:\n{out}"))
}

/// The worst severity named by the `summary:` line and the exit code it must have produced.
fn summary_exit_code(out: &str) -> i32 {
    let line = out
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    match line.split_whitespace().nth(1) {
        Some("OK") => 0,
        Some("WARNING") => 1,
        Some("CRITICAL") => 2,
        Some("UNKNOWN") => 3,
        other => panic!("unexpected severity {other:?} in {line}"),
    }
}

#[test]
fn nightly_backup_then_daily_health_check_and_weekly_audit() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("skillswap_db").unwrap();
    pg.psql(
        "skillswap_db",
        "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);
         INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 200) g;",
    )
    .unwrap();
    let redis = RedisServer::start().unwrap();
    let s3 = S3Server::start().unwrap();
    let bucket = s3.unique_bucket("nightly").unwrap();
    let tls = TlsEndpoint::start(90).unwrap();
    let local = dir.path().join("backups");
    let uploads = dir.path().join("uploads");
    std::fs::create_dir_all(uploads.join("avatars")).unwrap();
    std::fs::write(uploads.join("avatars/u1.png"), b"not really a png").unwrap();
    std::fs::write(uploads.join("terms.pdf"), b"terms").unwrap();
    let toml = format!(
        r#"
[[database]]
name = "main"
url = "{url}"
sanity_queries = ["SELECT count(*) FROM users"]

[[redis]]
name = "cache"
url = "{}"

[backup]
repositories = ["{}", "s3://{bucket}/db"]
files = ["{}"]

[[tls]]
endpoint = "{}"
server_name = "localhost"
"#,
        redis.url(),
        local.display(),
        uploads.display(),
        tls.endpoint()
    );
    std::fs::write(dir.path().join("tej.toml"), toml).unwrap();
    let s3_env = [
        ("AWS_ACCESS_KEY_ID", s3.access_key()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
        ("AWS_REGION", s3.region()),
    ];
    let endpoint = s3.endpoint();
    let mut envs = s3_env.to_vec();
    envs.push(("AWS_ENDPOINT_URL", endpoint.as_str()));

    // Nightly backup: one id, stored and verified in both repositories.
    let (code, out, err) = run(
        env!("CARGO_BIN_EXE_nightly_backup"),
        dir.path(),
        &["--config", "tej.toml"],
        &envs,
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("backup "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no backup id in:\n{out}"))
        .to_string();
    assert!(id.contains("skillswap_db"), "{id}");
    assert!(!out.contains(s3.secret_key()) && !err.contains(s3.secret_key()));
    assert!(
        out.contains(&format!("verified {id} in {}", local.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("verified {id} in s3://{bucket}/db")),
        "{out}"
    );
    // The uploads: a file backup with both files, verified in both repositories too.
    let files_id = out
        .lines()
        .find_map(|l| l.strip_prefix("files "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no file backup in:\n{out}"))
        .to_string();
    assert!(
        out.contains(&format!("files {files_id} (2 files,")),
        "{out}"
    );
    for repo in [local.display().to_string(), format!("s3://{bucket}/db")] {
        assert!(
            out.contains(&format!("verified {files_id} in {repo}")),
            "{out}"
        );
    }
    // The id is a backup in the local repository (its manifest is there)...
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = rt
        .block_on(tej_backup::Repository::open(local.to_str().unwrap()))
        .unwrap();
    let listed = rt.block_on(tej_backup::list_backups(&repo)).unwrap();
    assert!(
        listed.iter().any(|b| b.id.to_string() == id),
        "{id} not in {listed:?}"
    );
    // ... and a second run, into the local repository only and pruned there, makes a second,
    // different one while retention keeps both (the test S3 server cannot be pruned: it has no
    // ListMultipartUploads, which prune's cleanup needs).
    let local_arg = local.to_str().unwrap();
    let (code, out2, err) = run(
        env!("CARGO_BIN_EXE_nightly_backup"),
        dir.path(),
        &["--config", "tej.toml", "--repo", local_arg, "--prune"],
        &envs,
    );
    assert_eq!(code, 0, "stdout:\n{out2}\nstderr:\n{err}");
    assert!(!out2.contains(&id), "{out2}");
    assert!(
        out2.contains(&format!("pruned {}: kept 4, deleted 0", local.display())),
        "{out2}"
    );

    // Daily health check: every configured part is named, each with its verdict.
    let ca = tls.ca_file().to_str().unwrap();
    let (code, out, err) = run(
        env!("CARGO_BIN_EXE_daily_health_check"),
        dir.path(),
        &["--config", "tej.toml", "--ca", ca],
        &envs,
    );
    assert!(err.is_empty(), "{err}");
    assert!(out.starts_with("daily health check\n"), "{out}");
    let tls_target = format!("tls:{}", tls.endpoint());
    let s3_target = format!("repo:s3://{bucket}/db");
    let local_target = format!("repo:{}", local.display());
    for (check, target) in [
        ("postgres.reachable", "db:main"),
        ("postgres.connections", "db:main"),
        ("redis.ping", "redis:cache"),
        ("backups.recent", local_target.as_str()),
        ("backups.recent", s3_target.as_str()),
        ("tls.chain", tls_target.as_str()),
        ("tls.expiry", tls_target.as_str()),
    ] {
        assert!(
            finding_line(&out, check, target).starts_with("OK "),
            "{check} {target}:\n{out}"
        );
    }
    // Archiving is off on this server: "verify backups completed" says PITR is not possible.
    assert!(
        finding_line(&out, "backups.wal-archiving", "db:main").starts_with("WARNING"),
        "{out}"
    );
    // Host resources are reported whatever their state on this machine.
    finding_line(&out, "disk.usage", "host:/");
    finding_line(&out, "memory.usage", "host");
    assert_eq!(code, summary_exit_code(&out), "{out}");
    assert_ne!(code, 0, "{out}");

    // Weekly audit, with a restore test of the newest backup into a scratch database. Only the
    // local repository: restore tests of two repositories in one run collide on the scratch
    // database's name (tej_verify_SECONDS_PID, tej-backup's verify.rs), reported to the lead.
    let weekly = std::fs::read_to_string(dir.path().join("tej.toml"))
        .unwrap()
        .replace(&format!(", \"s3://{bucket}/db\""), "");
    std::fs::write(dir.path().join("tej-weekly.toml"), weekly).unwrap();
    let server = pg.url("postgres");
    let (code, out, err) = run(
        env!("CARGO_BIN_EXE_weekly_audit"),
        dir.path(),
        &[
            "--config",
            "tej-weekly.toml",
            "--ca",
            ca,
            "--restore-test",
            &server,
        ],
        &envs,
    );
    assert!(err.is_empty(), "{err}");
    assert!(out.starts_with("weekly audit\n"), "{out}");
    for (check, target) in [
        ("postgres.size", "db:main"),
        ("postgres.indexes", "db:main"),
        ("redis.big-keys", "redis:cache"),
        ("backups.verify", local_target.as_str()),
        ("cleanup.backups", local_target.as_str()),
        ("tls.expiry", tls_target.as_str()),
    ] {
        assert!(
            finding_line(&out, check, target).starts_with("OK "),
            "{check} {target}:\n{out}"
        );
    }
    let verify = finding_line(&out, "backups.verify", &local_target);
    assert!(verify.contains("1 sanity queries passed"), "{verify}");
    assert!(!out.contains("s3://"), "{out}");
    // Unencrypted backups are a finding of the security review.
    let enc = finding_line(&out, "security.backup-encryption", &local_target);
    assert!(enc.starts_with("WARNING"), "{enc}");
    assert_eq!(code, summary_exit_code(&out), "{out}");
}

#[test]
fn certificate_check_reports_days_left_and_severity() {
    let dir = tempfile::tempdir().unwrap();
    let endpoints = [60, 20, 5].map(|days| (days, TlsEndpoint::start(days).unwrap()));
    // Every endpoint has its own CA: one bundle for --ca.
    let bundle = dir.path().join("ca.pem");
    let pem: String = endpoints
        .iter()
        .map(|(_, e)| std::fs::read_to_string(e.ca_file()).unwrap())
        .collect();
    std::fs::write(&bundle, pem).unwrap();
    let bin = env!("CARGO_BIN_EXE_certificate_check");
    let ca = bundle.to_str().unwrap();
    let mut args = vec![
        "--ca",
        ca,
        "--server-name",
        "localhost",
        "--warn-days",
        "30",
        "--crit-days",
        "7",
    ];
    let names: Vec<String> = endpoints.iter().map(|(_, e)| e.endpoint()).collect();
    args.extend(names.iter().map(String::as_str));
    let (code, out, err) = run(bin, dir.path(), &args, &[]);
    assert!(err.is_empty(), "{err}");
    for ((given, endpoint), expected) in endpoints.iter().zip(["OK", "WARNING", "CRITICAL"]) {
        let ep = endpoint.endpoint();
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{ep}: ")))
            .unwrap_or_else(|| panic!("no line for {ep} in:\n{out}"));
        assert!(line.contains("chain trusted"), "{line}");
        let days: f64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("no days in {line}"));
        assert!(
            (days - f64::from(*given)).abs() <= 1.0,
            "{given} days given, {days} reported: {line}"
        );
        assert!(
            finding_line(&out, "tls.expiry", &ep).starts_with(expected),
            "{out}"
        );
    }
    assert_eq!(code, 2, "{out}");
    assert_eq!(summary_exit_code(&out), 2, "{out}");

    // The same 20-day certificate with tej.toml's thresholds (30 days, at most a third of its
    // 21-day lifetime): OK.
    let (code, out, _) = run(bin, dir.path(), &["--ca", ca, &names[1]], &[]);
    assert!(
        finding_line(&out, "tls.expiry", &names[1]).starts_with("OK"),
        "{out}"
    );
    assert_eq!(code, 0, "{out}");

    // Nothing listening: critical, said so.
    let dead = format!("127.0.0.1:{}", tej_testkit::free_port());
    let (code, out, _) = run(bin, dir.path(), &["--ca", ca, &dead], &[]);
    assert!(
        out.contains(&format!("{dead}: no TLS handshake: connection refused")),
        "{out}"
    );
    assert!(
        finding_line(&out, "tls.connect", &dead).starts_with("CRITICAL"),
        "{out}"
    );
    assert_eq!(code, 2, "{out}");
}

/// `redis-cli -p PORT ARGS...`, trimmed.
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let port = redis.port().to_string();
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn secret_rotation_plans_and_refuses_without_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    redis_cli(&redis, &["SET", "sess:alice", "1"]);
    let env_text = "NODE_ENV=production\nJWT_SECRET=old-jwt-value-0123456789abcdef\nJWT_REFRESH_SECRET=old-refresh-value-0123456789abcdef\n";
    std::fs::write(dir.path().join(".env"), env_text).unwrap();
    let toml = format!(
        r#"
audit_log = "audit.jsonl"

[[redis]]
name = "sessions"
url = "{}"

[compose]
project = "shop"

[secrets]
env_file = ".env"
app_url = "http://127.0.0.1:9"
test_email = "test@example.com"
test_password = {{ env = "TEST_ACCOUNT_PASSWORD" }}
"#,
        redis.url()
    );
    std::fs::write(dir.path().join("tej.toml"), toml).unwrap();
    let bin = env!("CARGO_BIN_EXE_secret_rotation");
    let envs = [("TEST_ACCOUNT_PASSWORD", "test-account-password-42")];
    let no_secret = |out: &str| {
        for secret in [
            "old-jwt-value",
            "old-refresh-value",
            "test-account-password-42",
        ] {
            assert!(!out.contains(secret), "{secret} printed:\n{out}");
        }
    };

    let (code, out, err) = run(bin, dir.path(), &["--dry-run"], &envs);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with("secret-rotation (dry run)\n"), "{out}");
    assert!(
        out.contains("rotate-secrets .env (JWT_SECRET, JWT_REFRESH_SECRET): planned"),
        "{out}"
    );
    assert!(
        out.contains("plan: generate new values for JWT_SECRET, JWT_REFRESH_SECRET"),
        "{out}"
    );
    assert!(
        out.contains("plan: delete session keys matching sess:*"),
        "{out}"
    );
    assert!(out.contains("plan: recreate service backend"), "{out}");
    no_secret(&out);
    no_secret(&err);

    // Without --yes the destructive step is refused: nothing changes, the refusal is audited.
    let (code, out, err) = run(bin, dir.path(), &[], &envs);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(": REFUSED: destructive step rotate-secrets"),
        "{out}"
    );
    assert!(out.contains("needs confirmation"), "{out}");
    no_secret(&out);
    no_secret(&err);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".env")).unwrap(),
        env_text
    );
    assert_eq!(redis_cli(&redis, &["EXISTS", "sess:alice"]), "1");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"refused\"") && audit.contains("rotate-secrets"),
        "{audit}"
    );
}

#[test]
fn deploy_names_the_missing_service() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[compose]\nproject = \"shop\"\n\n[[deploy.service]]\nname = \"backend\"\nports = [3000, 3001]\nnginx_upstream_file = \"upstream.conf\"\n";
    std::fs::write(dir.path().join("tej.toml"), toml).unwrap();
    let bin = env!("CARGO_BIN_EXE_deploy");
    let (code, out, err) = run(
        bin,
        dir.path(),
        &["frontend", "--image", "shop-frontend:v2"],
        &[],
    );
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("no [[deploy.service]] named \"frontend\""),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    // An image is required unless rolling back.
    let (code, _, err) = run(bin, dir.path(), &["backend"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--image"), "{err}");
}

/// `psql` on 127.0.0.1:`port` as `postgres`, one value out.
fn psql_at(port: u16, sql: &str) -> String {
    let out = Command::new(PgCluster::bin_dir().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(sql)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn pitr_restore_recovers_to_a_time_between_two_commits() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use tej_backup::{
        DbTarget, PhysicalBackupOptions, PushOptions, Repository, WalArchive,
        create_physical_backup, system_identifier_from_pgdata,
    };
    let archive = tempfile::tempdir().unwrap();
    std::fs::set_permissions(archive.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let pg = PgCluster::start_with(tej_testkit::PgClusterOptions {
        archive_mode: true,
        archive_command: Some(format!("cp %p {}/%f", archive.path().display())),
        extra_conf: vec!["autovacuum = off".into()],
        preload_pg_stat_statements: false,
        ..Default::default()
    })
    .unwrap();
    // The restored server runs as the cluster's owner and reads the repository through this
    // program (its restore_command): both live in the cluster's base directory, which the
    // cluster's Drop also cleans up (the restored server included).
    let base = pg.base_dir().to_path_buf();
    let owner = std::fs::metadata(&base).unwrap();
    let repo_dir = base.join("repo");
    let rt = tokio::runtime::Runtime::new().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);",
    )
    .unwrap();
    let repo = rt
        .block_on(Repository::open(repo_dir.to_str().unwrap()))
        .unwrap();
    let backup = rt
        .block_on(create_physical_backup(
            std::slice::from_ref(&repo),
            &PhysicalBackupOptions::new(DbTarget::new(pg.url("postgres"))),
            &tej_core::SystemClock,
        ))
        .unwrap();
    assert!(backup.backup.succeeded());
    pg.psql("postgres", "INSERT INTO t VALUES (3)").unwrap();
    let between = pg
        .psql(
            "postgres",
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .unwrap();
    pg.psql("postgres", "INSERT INTO t VALUES (4)").unwrap();
    let last = pg
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .unwrap();
    let archived = |name: &str| archive.path().join(name).exists();
    for _ in 0..400 {
        if archived(&last) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(
        archived(&last),
        "{last} never archived: {}",
        pg.server_log()
    );
    // What archive_command would have pushed into the repository's WAL archive.
    let wal = WalArchive::new(repo);
    let opts = PushOptions {
        system_identifier: Some(system_identifier_from_pgdata(pg.data_dir()).unwrap()),
        ..PushOptions::default()
    };
    let mut files: Vec<_> = std::fs::read_dir(archive.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        rt.block_on(wal.push(f, &opts))
            .unwrap_or_else(|e| panic!("push {}: {e}", f.display()));
    }
    // Everything under the repository readable by the server's user.
    let mut chown = Command::new("chown");
    chown
        .arg("-R")
        .arg(format!("{}:{}", owner.uid(), owner.gid()))
        .arg(&repo_dir);
    assert!(chown.status().unwrap().success());

    // The server runs this program as its restore_command: a copy the postgres user can
    // reach wherever the checkout lives.
    let reachable =
        tej_testkit::Reachable::shared(Path::new(env!("CARGO_BIN_EXE_pitr_restore"))).unwrap();
    let bin = reachable.to_str().unwrap();
    let restored = base.join("restored");
    let pgdata = restored.join("data");
    std::fs::create_dir(&restored).unwrap();
    std::os::unix::fs::chown(&restored, Some(owner.uid()), Some(owner.gid())).unwrap();
    let repo_arg = repo_dir.to_str().unwrap();
    let pgdata_arg = pgdata.to_str().unwrap();
    let port = tej_testkit::free_port();
    let port_arg = port.to_string();
    // The server's OS user: `postgres` when the tests run as root, else this user.
    let owner_name = if owner.uid() == 0 || is_root() {
        "postgres".to_string()
    } else {
        std::env::var("USER").unwrap_or_default()
    };
    let args = vec![
        "--repo",
        repo_arg,
        "--pgdata",
        pgdata_arg,
        "--target-time",
        between.as_str(),
        "--start",
        "--port",
        port_arg.as_str(),
        "--owner",
        owner_name.as_str(),
    ];

    // The plan, then a refusal without --yes: nothing is created either way.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let (code, out, err) = run(bin, &restored, &dry, &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with("pitr-restore (dry run)\n"), "{out}");
    assert!(out.contains(&backup.backup.id.to_string()), "{out}");
    assert!(out.contains("  plan: "), "{out}");
    assert!(!pgdata.exists());
    let (code, out, err) = run(bin, &restored, &args, &[]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("REFUSED"), "{out}");
    assert!(!pgdata.exists());

    // Confirmed: restored, recovered to the time between the commits of 3 and 4, promoted.
    let mut yes = args.clone();
    yes.push("--yes");
    let (code, out, err) = run(bin, &restored, &yes, &[]);
    assert_eq!(
        code,
        0,
        "stdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        std::fs::read_to_string(pgdata.with_extension("log")).unwrap_or_default()
    );
    assert!(
        out.contains(&format!("done: restored {}", backup.backup.id)),
        "{out}"
    );
    assert!(out.contains("promoted"), "{out}");
    assert_eq!(
        psql_at(port, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "1,2,3"
    );
    assert_eq!(psql_at(port, "SELECT pg_is_in_recovery()"), "f");
}

const BUSYBOX: &str = "tej-examples-busybox:1";
const WEB_CMD: &str = r#"CMD ["sh","-c","exec busybox httpd -f -p 127.0.0.1:$PORT -h /www"]"#;

/// A busybox image serving `version` at `/` and `ok` at `/health` on 127.0.0.1:$PORT.
fn web_image(engine: &tej_testkit::DockerEngine, tag: &str, version: &str) {
    let script = format!(
        "busybox mkdir -p /www && echo {version} > /www/index.html && echo ok > /www/health"
    );
    let name = format!("build-{version}");
    engine
        .docker(&["run", "--name", &name, BUSYBOX, "sh", "-c", &script])
        .unwrap();
    engine
        .docker(&["commit", "--change", WEB_CMD, &name, tag])
        .unwrap();
    engine.docker(&["rm", &name]).unwrap();
}

/// The body of `GET http://127.0.0.1:port/` (HTTP/1.0), if it answers.
fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
}

#[test]
fn deploy_switches_to_the_new_image_and_rolls_back() {
    let engine = tej_testkit::DockerEngine::start().unwrap();
    engine.import_busybox_image(BUSYBOX).unwrap();
    web_image(&engine, "shop/web:v1", "v1");
    web_image(&engine, "shop/web:v2", "v2");
    let (p1, p2) = (tej_testkit::free_port(), tej_testkit::free_port());
    let env = format!("PORT={p1}");
    engine
        .docker(&[
            "run",
            "-d",
            "--name",
            "shop-web-1",
            "--network",
            "host",
            "--stop-timeout",
            "1",
            "--label",
            "com.docker.compose.project=shop",
            "--label",
            "com.docker.compose.service=web",
            "--label",
            "com.docker.compose.container-number=1",
            "--label",
            "com.docker.compose.oneoff=False",
            "-e",
            &env,
            "shop/web:v1",
        ])
        .unwrap();
    for _ in 0..100 {
        if http_get(p1).is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(http_get(p1).as_deref(), Some("v1"));

    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("web-upstream.conf");
    std::fs::write(
        &upstream,
        format!("upstream web {{\n    server 127.0.0.1:{p1};\n}}\n"),
    )
    .unwrap();
    let toml = format!(
        r#"audit_log = "audit.jsonl"
state_dir = "{state}"

[compose]
project = "shop"
docker_host = "{host}"

[[deploy.service]]
name = "web"
ports = [{p1}, {p2}]
health_path = "/health"
health_timeout_secs = 10
nginx_upstream_file = "{upstream}"
nginx_program = "true"
test_command = ["true"]
migrate = ["sh", "-c", "echo migrating to $(busybox cat /www/index.html)"]
stop_timeout_secs = 1
drain_timeout_secs = 1
"#,
        state = dir.path().join("state").display(),
        host = engine.host(),
        upstream = upstream.display(),
    );
    std::fs::write(dir.path().join("tej.toml"), toml).unwrap();
    let bin = env!("CARGO_BIN_EXE_deploy");

    // The plan names the migration and changes nothing.
    let (code, out, err) = run(
        bin,
        dir.path(),
        &["web", "--image", "shop/web:v2", "--dry-run"],
        &[],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.lines().all(|l| l.starts_with("plan: ")), "{out}");
    assert!(out.contains("echo migrating"), "{out}");
    assert!(
        std::fs::read_to_string(&upstream)
            .unwrap()
            .contains(&format!(":{p1};"))
    );

    // The deploy: tests gate, migration, new container on the other port, nginx switched.
    let (code, out, err) = run(bin, dir.path(), &["web", "--image", "shop/web:v2"], &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("gate tests: passed"), "{out}");
    assert!(
        out.contains(&format!("serves shop/web:v2 on port {p2}")),
        "{out}"
    );
    assert!(
        std::fs::read_to_string(&upstream)
            .unwrap()
            .contains(&format!(":{p2};"))
    );
    assert_eq!(http_get(p2).as_deref(), Some("v2"));
    assert_eq!(http_get(p1), None, "the old container still answers");

    // The rollback: v1 again, on the first port.
    let (code, out, err) = run(bin, dir.path(), &["web", "--rollback"], &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(&format!("on port {p1}")), "{out}");
    assert_eq!(http_get(p1).as_deref(), Some("v1"));
    // Audited as `tej deploy` and `tej rollback` audit: by the executor, one entry per run
    // (the dry run changed nothing and is not one).
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let entries: Vec<(String, String, String)> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["target"] == "shop/web")
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (field("procedure"), field("step"), field("outcome"))
        })
        .collect();
    let expected = [
        ("deploy web", "deploy-service", "applied"),
        ("rollback web", "rollback-service", "applied"),
    ]
    .map(|(p, s, o)| (p.to_string(), s.to_string(), o.to_string()));
    assert_eq!(entries, expected, "{audit}");
}
