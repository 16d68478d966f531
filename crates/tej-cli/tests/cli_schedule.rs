//! Unattended runs through the binary: the emitted crontab and systemd units run the nightly
//! backup and its retention against a real PostgreSQL (confirmed by being scheduled, audited
//! so, refused outside their slot), from any working directory with the same configuration;
//! `tej run` and `tej health` notify a webhook on failure and on recovery across separate
//! processes; `tej config check` says where the environment came from.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use tej_testkit::PgCluster;

fn tej(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tej"));
    c.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("TEJ_ENVIRONMENT")
        .env_remove("DOCKER_HOST")
        .env("NO_COLOR", "1");
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

/// Runs an emitted command line (cron's or systemd's) as its scheduler would: split on
/// spaces (the emitter refuses anything a shell would interpret), from `cwd`.
fn run_line(cwd: &Path, argv: &[&str]) -> (i32, String, String) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .env_remove("DATABASE_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("TEJ_ENVIRONMENT")
        .env("NO_COLOR", "1")
        .output()
        .expect("run the emitted command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `HH:MM` in Asia/Kolkata, `mins` minutes from now.
fn ist_hm(mins: i64) -> String {
    let t = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_mins(mins))
        .unwrap();
    t.to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").unwrap())
        .strftime("%H:%M")
        .to_string()
}

fn audit(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn backups(dir: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = tej(dir, &["backup", "list", "--output", "json"], &[]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "backup")
        .collect()
}

#[test]
fn emitted_cron_lines_back_up_and_prune_from_anywhere_confirmed_by_the_schedule() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);",
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let audit_log = d.path().join("audit.jsonl");
    // The nightly backup and its retention moved to now, so their slots are open.
    let now = ist_hm(0);
    let toml = format!(
        "environment = \"production\"\n\
         state_dir = \"{state}\"\naudit_log = \"{audit}\"\n\
         [[database]]\nname = \"main\"\nurl = \"{url}\"\n\
         [backup]\nrepositories = [\"{repo}\"]\n\
         [calendar.nightly-backup]\nat = \"{now}\"\n\
         [calendar.nightly-backup-prune]\nat = \"{now}\"\n",
        state = d.path().join("state").display(),
        audit = audit_log.display(),
        repo = repo.display(),
    );
    std::fs::write(d.path().join("tej.toml"), &toml).unwrap();

    // `tej run nightly-backup` by hand creates a backup that `tej backup list` shows.
    let (code, out, err) = tej(d.path(), &["run", "nightly-backup"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let listed = backups(d.path());
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["data"]["kind"], "logical", "{listed:#?}");

    // cron.d from the directory holding tej.toml (found implicitly): user field and an
    // absolute --config on every line.
    let cron_dir = d.path().join("cron.d");
    std::fs::create_dir(&cron_dir).unwrap();
    let (code, _, err) = tej(
        d.path(),
        &[
            "schedule",
            "--emit",
            "crontab",
            "--dir",
            cron_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let crontab = std::fs::read_to_string(cron_dir.join("tej")).unwrap();
    let config = std::fs::canonicalize(d.path().join("tej.toml")).unwrap();
    let line = |id: &str| -> Vec<String> {
        let l = crontab
            .lines()
            .find(|l| !l.starts_with('#') && l.contains(&format!(" run {id} ")))
            .unwrap_or_else(|| panic!("no line for {id} in\n{crontab}"));
        let f: Vec<String> = l.split(' ').map(String::from).collect();
        assert_eq!(f[5], "root", "cron.d needs a user field: {l}");
        assert_eq!(f[7], "--config", "{l}");
        assert_eq!(f[8], config.to_str().unwrap(), "{l}");
        assert!(l.ends_with(" --if-due --scheduled"), "{l}");
        f[6..].to_vec()
    };
    let jobs = crontab
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("CRON_TZ="))
        .count();
    assert_eq!(jobs, 16, "{crontab}");

    // The nightly backup's line, run from / as cron would: a second backup.
    let backup_line = line("nightly-backup");
    let argv: Vec<&str> = backup_line.iter().map(String::as_str).collect();
    let (code, out, err) = run_line(Path::new("/"), &argv);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(backups(d.path()).len(), 2);

    // The prune line: a destructive step, in production, on a weekday: confirmed by being
    // scheduled (its slot stands in for the maintenance window) and applied.
    let prune_line = line("nightly-backup-prune");
    let argv: Vec<&str> = prune_line.iter().map(String::as_str).collect();
    let (code, out, err) = run_line(Path::new("/"), &argv);
    assert_eq!(code, 0, "{out}\n{err}");
    let lines = audit(&audit_log);
    let prune: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["step"] == "backup-prune")
        .collect();
    assert_eq!(prune.len(), 2, "{lines:#?}");
    assert_eq!(prune[0]["outcome"], "confirmed", "{lines:#?}");
    assert_eq!(prune[0]["actor"], "schedule:nightly-backup-prune");
    assert!(
        prune[0]["detail"]
            .as_str()
            .unwrap()
            .contains("confirmed by the schedule"),
        "{lines:#?}"
    );
    assert_eq!(prune[1]["outcome"], "applied", "{lines:#?}");
    assert!(
        !prune[1]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("--outside-window"),
        "the schedule decided, not an override: {lines:#?}"
    );
    assert_eq!(prune[1]["procedure"], "nightly-backup-prune");
    // The backup created by the schedule is recorded as applied too.
    assert!(
        lines
            .iter()
            .any(|l| l["step"] == "backup-create" && l["outcome"] == "applied"),
        "{lines:#?}"
    );

    // Outside its slot (moved three hours away) the systemd unit's command, which has no
    // --if-due, runs, but the destructive prune is refused: in production outside the
    // maintenance window (a weekday noon-time slot is not one), and never confirmed by the
    // schedule.
    let later = toml.replace(
        &format!("[calendar.nightly-backup-prune]\nat = \"{now}\"\n"),
        &format!(
            "[calendar.nightly-backup-prune]\nat = \"{}\"\n",
            ist_hm(180)
        ),
    );
    std::fs::write(d.path().join("tej.toml"), later).unwrap();
    let units = d.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let (code, _, err) = tej(
        d.path(),
        &[
            "schedule",
            "--emit",
            "systemd",
            "--dir",
            units.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let svc = std::fs::read_to_string(units.join("tej-nightly-backup-prune.service")).unwrap();
    let exec = svc
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(
        exec.contains(&format!("--config {}", config.display())),
        "{exec}"
    );
    let argv: Vec<&str> = exec.split(' ').collect();
    let (code, out, err) = run_line(Path::new("/"), &argv);
    assert_ne!(code, 0, "{out}\n{err}");
    let lines = audit(&audit_log);
    let last: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["step"] == "backup-prune")
        .skip(2)
        .collect();
    assert!(!last.is_empty(), "{lines:#?}");
    assert!(
        last.iter()
            .all(|l| l["outcome"] != "confirmed" && l["outcome"] != "applied"),
        "{lines:#?}"
    );
    assert_eq!(last.last().unwrap()["outcome"], "refused", "{lines:#?}");
    assert!(out.contains("refused"), "{out}");
    assert_eq!(backups(d.path()).len(), 2);
}

#[test]
fn systemd_units_name_the_implicit_config_absolutely_and_pass_systemd_analyze_verify() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("tej.toml"), "environment = \"staging\"\n").unwrap();
    let units = d.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let (code, _, err) = tej(
        d.path(),
        &[
            "schedule",
            "--emit",
            "systemd",
            "--dir",
            units.to_str().unwrap(),
            "--on-failure",
            "tej-notify-failure@%n.service",
            "--environment-file",
            "/etc/tej/credentials.env",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let config = std::fs::canonicalize(d.path().join("tej.toml")).unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(&units).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        if p.extension().unwrap() == "service" {
            assert!(
                text.contains(&format!(" --config {} run ", config.display())),
                "{text}"
            );
            assert!(
                text.contains("\nOnFailure=tej-notify-failure@%n.service\n"),
                "{text}"
            );
            assert!(
                text.contains("\nEnvironmentFile=-/etc/tej/credentials.env\n"),
                "{text}"
            );
        }
        files.push(p);
    }
    assert_eq!(files.len(), 32);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains("Unknown") && !said.contains("ignoring"),
        "{said}"
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback webhook receiver: answers 200 and keeps every body.
fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    break;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                g.lock().unwrap().push(v);
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (url, got)
}

fn texts(got: &Arc<Mutex<Vec<serde_json::Value>>>) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn tej_run_and_health_notify_failure_then_recovery_across_processes() {
    let (hook, got) = receiver();
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "state_dir = \"{}\"\nnotify_url = {{ env = \"TEJ_TEST_HOOK\" }}\n\
             [[database]]\nname = \"main\"\nurl = \"{url}\"\n\
             [backup]\nrepositories = [\"{}\"]\n",
            d.path().join("state").display(),
            repo.display()
        ),
    )
    .unwrap();
    let env = [("TEJ_TEST_HOOK", hook.as_str())];
    // Nothing to verify yet: the run fails and the webhook hears about it.
    let (code, out, err) = tej(d.path(), &["run", "nightly-backup-verify"], &env);
    assert_eq!(code, 2, "{out}\n{err}");
    let t = texts(&got);
    assert_eq!(t.len(), 1, "{t:#?}");
    assert!(
        t[0].contains("CRITICAL") && t[0].contains("nightly-backup-verify"),
        "{t:#?}"
    );
    // A second failing run notifies again (as the daemon does for every bad report).
    let (code, ..) = tej(d.path(), &["run", "nightly-backup-verify"], &env);
    assert_eq!(code, 2);
    assert_eq!(texts(&got).len(), 2);
    // A backup, then the next (separate) verify run is good: a recovery message.
    let (code, out, err) = tej(d.path(), &["run", "nightly-backup"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(texts(&got).len(), 2, "a good first run is not news");
    let (code, out, err) = tej(d.path(), &["run", "nightly-backup-verify"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    let t = texts(&got);
    assert_eq!(t.len(), 3, "{t:#?}");
    assert!(
        t[2].contains("RECOVERED") && t[2].contains("nightly-backup-verify"),
        "{t:#?}"
    );
    assert!(
        t[2].contains("CRITICAL"),
        "names the previous state: {t:#?}"
    );
    // Good again: nothing more.
    let (code, ..) = tej(d.path(), &["run", "nightly-backup-verify"], &env);
    assert_eq!(code, 0);
    assert_eq!(texts(&got).len(), 3);

    // `tej health` with its database down notifies too.
    drop(pg);
    let (code, out, err) = tej(d.path(), &["health"], &env);
    assert_eq!(code, 2, "{out}\n{err}");
    let t = texts(&got);
    assert_eq!(t.len(), 4, "{t:#?}");
    assert!(t[3].contains("CRITICAL"), "{t:#?}");
    assert!(!t.iter().any(|m| m.contains(&hook)), "the URL is a secret");
}

#[test]
fn config_check_says_where_the_environment_came_from() {
    let d = tempfile::tempdir().unwrap();
    // No tej.toml, no variable: the default, said so.
    let (code, out, err) = tej(d.path(), &["config", "check"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("environment      development (default:"),
        "{out}"
    );
    let (code, out, _) = tej(
        d.path(),
        &["config", "check"],
        &[("TEJ_ENVIRONMENT", "staging")],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("environment      staging (from TEJ_ENVIRONMENT)"),
        "{out}"
    );
    std::fs::write(d.path().join("tej.toml"), "environment = \"production\"\n").unwrap();
    let (code, out, _) = tej(d.path(), &["config", "check", "--output", "json"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["data"]["environment"], "production");
    assert_eq!(v["data"]["environment_source"], "file");
    // The file says production, the variable development: an error, not a silent override.
    let (code, out, err) = tej(
        d.path(),
        &["config", "check"],
        &[("TEJ_ENVIRONMENT", "development")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("environment") && err.contains("TEJ_ENVIRONMENT=development"),
        "{err}"
    );
    // Agreeing is fine and the file is named as the source.
    let (code, out, _) = tej(
        d.path(),
        &["config", "check"],
        &[("TEJ_ENVIRONMENT", "production")],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("production (from the configuration file)"),
        "{out}"
    );
    // A bad calendar override is a configuration error naming it.
    std::fs::write(
        d.path().join("tej.toml"),
        "[calendar.nightly-backup]\nat = \"2am\"\n",
    )
    .unwrap();
    let (code, _, err) = tej(d.path(), &["config", "check"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("calendar.nightly-backup.at") && err.contains("HH:MM"),
        "{err}"
    );
}
