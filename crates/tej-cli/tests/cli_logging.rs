//! The `tej` binary's log through the binary against real servers: library warnings reach
//! stderr (never stdout), `-v`/`-q`/`RUST_LOG` choose what is shown, `--log-format json`
//! writes one object per line, and secrets are redacted in every log line.

use std::path::Path;
use std::process::Command;
use tej_testkit::{PgCluster, RedisServer};

/// Runs tej in `dir` with `env`; (exit code, stdout, stderr).
fn tej(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tej"));
    c.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run tej");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tej.toml for `redis` whose audit log cannot be appended to (the path is a directory).
fn unwritable_audit_config(dir: &Path, redis: &RedisServer) -> std::path::PathBuf {
    let audit = dir.join("audit.jsonl");
    std::fs::create_dir(&audit).unwrap();
    std::fs::write(
        dir.join("tej.toml"),
        format!(
            "environment = \"staging\"\naudit_log = \"{}\"\n[[redis]]\nname = \"sessions\"\nurl = \"{}\"\nsession_pattern = \"sess:*\"\n",
            audit.display(),
            redis.url()
        ),
    )
    .unwrap();
    audit
}

#[test]
fn a_library_error_reaches_stderr_and_quiet_levels_hide_it() {
    let redis = RedisServer::start().unwrap();
    let d = tempfile::tempdir().unwrap();
    let audit = unwritable_audit_config(d.path(), &redis);
    let invalidate = ["redis", "invalidate-sessions"];

    // Default level: the audit failure (an error event in tej-core) is on stderr.
    let (code, out, err) = tej(d.path(), &invalidate, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("cannot append to the audit log"),
        "stderr: {err:?}"
    );
    assert!(err.contains(&audit.display().to_string()), "{err}");
    assert!(
        !out.contains("cannot append"),
        "a log line on stdout: {out}"
    );

    // -q keeps errors; -qq shows nothing; RUST_LOG replaces the flags.
    let (_, _, err) = tej(d.path(), &["-q", "redis", "invalidate-sessions"], &[]);
    assert!(err.contains("cannot append to the audit log"), "{err:?}");
    let (_, _, err) = tej(d.path(), &["-qq", "redis", "invalidate-sessions"], &[]);
    assert!(!err.contains("cannot append"), "{err:?}");
    let (_, _, err) = tej(d.path(), &invalidate, &[("RUST_LOG", "off")]);
    assert!(!err.contains("cannot append"), "{err:?}");
    let (_, _, err) = tej(
        d.path(),
        &["-qq", "redis", "invalidate-sessions"],
        &[("RUST_LOG", "tej_core=error")],
    );
    assert!(err.contains("cannot append to the audit log"), "{err:?}");

    // An invalid RUST_LOG is reported and the defaults apply.
    let (code, _, err) = tej(d.path(), &invalidate, &[("RUST_LOG", "tej_core=loud[")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ignoring RUST_LOG"), "{err:?}");
    assert!(err.contains("cannot append to the audit log"), "{err:?}");

    // JSON output stays parseable with logs on; JSON logs are one object per line.
    let (code, out, err) = tej(
        d.path(),
        &[
            "-vv",
            "--log-format",
            "json",
            "--output",
            "json",
            "redis",
            "invalidate-sessions",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["type"].is_string(), "{l}");
    }
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let audit_event = events
        .iter()
        .find(|e| e["fields"]["message"] == "cannot append to the audit log")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(audit_event["level"], "ERROR");
    assert_eq!(audit_event["target"], "tej_core::procedure");
}

#[test]
fn verbosity_flags_choose_the_level_of_the_tej_crates() {
    // A local repository holding a file name that is not UTF-8: tej-backup skips it with a
    // debug event while listing.
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir_all(repo.join("backups")).unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"\xfe\xff");
        std::fs::write(repo.join("backups").join(odd), b"x").unwrap();
    }
    let repo = repo.display().to_string();
    let skip = "skipping a file name that is not UTF-8";
    let list = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["backup", "list", "--repo", &repo]);
        let (code, out, err) = tej(d.path(), &args, env);
        assert_eq!(code, 0, "{out}{err}");
        assert!(!out.contains(skip), "a log line on stdout: {out}");
        err
    };
    assert!(!list(&[], &[]).contains(skip));
    assert!(!list(&["-v"], &[]).contains(skip));
    let err = list(&["-vv"], &[]);
    assert!(err.contains(skip) && err.contains("DEBUG"), "{err:?}");
    assert!(list(&[], &[("RUST_LOG", "tej_backup=debug")]).contains(skip));
    assert!(!list(&["-vv"], &[("RUST_LOG", "tej_backup=info")]).contains(skip));
}

#[test]
fn secrets_are_redacted_in_every_log_line() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    let password = "pg-Pa55word-never-logged";
    let d = tempfile::tempdir().unwrap();
    // A custom check whose SQL quotes the database's password (a secret reference): the
    // PostgreSQL client logs each statement it prepares at debug level.
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\n[[database]]\nname = \"main\"\nurl = \"{url}\"\npassword = {{ env = \"TEJ_TEST_PG_PASSWORD\" }}\n\
             [[check]]\nname = \"foreign-sessions\"\nsql = \"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{password}'\"\nwarn = 10\ncrit = 20\n"
        ),
    )
    .unwrap();
    let env = [
        ("TEJ_TEST_PG_PASSWORD", password),
        ("RUST_LOG", "tokio_postgres=debug,tej_runbook=debug"),
    ];
    for format in ["text", "json"] {
        let (code, out, err) = tej(
            d.path(),
            &[
                "--log-format",
                format,
                "--output",
                "json",
                "health",
                "--timeout",
                "20",
            ],
            &env,
        );
        assert!((0..=3).contains(&code), "{out}{err}");
        assert!(
            err.contains("pg_stat_activity WHERE application_name"),
            "the client's statement is not logged ({format}): {err}"
        );
        assert!(
            !err.contains(password),
            "password in the {format} log: {err}"
        );
        assert!(!out.contains(password), "password on stdout: {out}");
        assert!(err.contains("[REDACTED]"), "{err}");
    }

    // A URL password in DATABASE_URL and a backup that fails to connect: neither the log
    // nor the error that ends the command shows it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let inline = format!("postgres://app:{password}@127.0.0.1:{closed}/app");
    let empty = tempfile::tempdir().unwrap();
    let repo = empty.path().display().to_string();
    for format in ["text", "json"] {
        let (code, out, err) = tej(
            empty.path(),
            &[
                "-vv",
                "--log-format",
                format,
                "backup",
                "create",
                "--repo",
                &repo,
            ],
            &[("DATABASE_URL", &inline), ("RUST_LOG", "debug")],
        );
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            !err.contains(password),
            "password in the {format} log: {err}"
        );
        assert!(!out.contains(password), "password on stdout: {out}");
        if format == "json" {
            let failed = err
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|e| e["fields"]["message"] == "the command failed")
                .unwrap_or_else(|| panic!("no failure event: {err}"));
            assert_eq!(failed["level"], "ERROR");
        }
    }
}

/// Another session's query text quotes a configured secret (here the database password)
/// and that session holds the xmin horizon idle in transaction: the health report quotes
/// the session's last query, and neither stdout (any format) nor stderr shows the secret.
#[test]
fn a_secret_in_another_sessions_query_text_never_reaches_the_output() {
    use std::io::Write as _;
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    let password = "pg-Pa55word-in-a-query";
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\n[[database]]\nname = \"main\"\nurl = \"{url}\"\npassword = {{ env = \"TEJ_TEST_PG_PASSWORD\" }}\n"
        ),
    )
    .unwrap();
    // A psql session left idle in transaction with an xid, its last query quoting the
    // password and a URL with another password.
    let mut holder = std::process::Command::new(tej_testkit::PgCluster::bin_dir().join("psql"))
        .args(["-X", "-q", "-h", pg.host(), "-p", &pg.port().to_string()])
        .args(["-U", pg.user(), "-d", "app"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(
        stdin,
        "BEGIN; SELECT txid_current(); SELECT '{password}' AS pw, 'postgres://ops:url-Pa55word@db/app' AS u;"
    )
    .unwrap();
    stdin.flush().unwrap();
    let idle = "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_xid IS NOT NULL";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pg.psql("postgres", idle).unwrap() != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the session never went idle in transaction"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for output in ["json", "text", "nagios"] {
        let (code, out, err) = tej(
            d.path(),
            &["--output", output, "health", "--timeout", "20"],
            &[("TEJ_TEST_PG_PASSWORD", password)],
        );
        assert!((0..=3).contains(&code), "{out}{err}");
        if output == "json" {
            assert!(
                out.contains("postgres.xmin_horizon") && out.contains("AS pw"),
                "the report does not quote the holder's query: {out}"
            );
        }
        for secret in [password, "url-Pa55word"] {
            assert!(
                !out.contains(secret),
                "{secret} on stdout ({output}): {out}"
            );
            assert!(
                !err.contains(secret),
                "{secret} on stderr ({output}): {err}"
            );
        }
    }
    drop(stdin);
    let _ = holder.wait();
}
