//! End-to-end tests of the `tej` binary: exit codes, stderr, JSON Lines.

use std::process::Command;

fn tej(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tej"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
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
fn version_prints_the_crate_version() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, _) = tej(&["--version"], d.path());
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("tej {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn config_check_names_file_and_key_on_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("tej.toml"),
        "[backup]\ncompression = \"lz4\"\n",
    )
    .unwrap();
    let (code, out, err) = tej(&["config", "check"], d.path());
    assert_eq!(code, 1, "stdout: {out}");
    assert_eq!(
        err.trim(),
        "error: tej.toml: backup.compression: expected zstd, gzip or none, got \"lz4\""
    );
    // Nagios mode turns errors into UNKNOWN.
    let (code, _, _) = tej(&["config", "check", "--output", "nagios"], d.path());
    assert_eq!(code, 3);
}

#[test]
fn config_check_redacts_and_speaks_json() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("tej.toml"),
        "environment = \"production\"\n[[database]]\nname = \"main\"\nurl = \"postgres://app@db/x\"\npassword = { env = \"PGPASSWORD\" }\n",
    )
    .unwrap();
    let (code, out, _) = tej(&["config", "check", "--output", "json"], d.path());
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["type"], "config");
    assert_eq!(v["data"]["environment"], "production");
    assert_eq!(
        v["data"]["databases"][0],
        "main = postgres://app@db/x (password from env:PGPASSWORD)"
    );
}

#[test]
fn calendar_json_lines_at_a_fixed_instant() {
    let d = tempfile::tempdir().unwrap();
    let (code, out, err) = tej(
        &[
            "calendar",
            "--at",
            "2025-01-16T09:00:00+05:30",
            "--output",
            "json",
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 16);
    assert!(rows.iter().all(|r| r["type"] == "calendar_entry"));
    assert_eq!(rows[0]["data"]["id"], "performance-check-am");
    assert_eq!(rows[0]["data"]["next"], "2025-01-16 11:00 IST");
    let (code, _, err) = tej(&["calendar", "--at", "yesterday"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("parse --at"), "{err}");
}

#[test]
fn schedule_emits_systemd_units_into_a_directory() {
    let d = tempfile::tempdir().unwrap();
    let units = d.path().join("units");
    std::fs::create_dir(&units).unwrap();
    let (code, out, err) = tej(
        &[
            "schedule",
            "--emit",
            "systemd",
            "--dir",
            units.to_str().unwrap(),
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 32, "{out}");
    let timer = std::fs::read_to_string(units.join("tej-weekly-audit.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=Sun *-*-* 02:00:00 Asia/Kolkata"),
        "{timer}"
    );
    let service = std::fs::read_to_string(units.join("tej-weekly-audit.service")).unwrap();
    assert!(service.contains(" run weekly-audit"), "{service}");
    let (code, cron, _) = tej(&["schedule", "--emit", "crontab"], d.path());
    assert_eq!(code, 0);
    assert!(cron.contains("CRON_TZ=Asia/Kolkata"));
    assert!(cron.contains("run daily-health --if-due"), "{cron}");
}

#[test]
fn services_without_a_project_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = tej(&["services", "status"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("no Compose project"), "{err}");
}

#[test]
fn tls_check_of_a_closed_port_is_critical_in_every_mode() {
    let d = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = format!("127.0.0.1:{port}");
    let (code, out, _) = tej(&["tls", "check", &ep], d.path());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("CRITICAL"), "{out}");
    let (code, out, _) = tej(&["tls", "check", &ep, "--output", "nagios"], d.path());
    assert_eq!(code, 2);
    assert!(out.starts_with("TLS_CHECK CRITICAL - "), "{out}");
    let (code, out, _) = tej(&["tls", "check", &ep, "--output", "json"], d.path());
    assert_eq!(code, 2);
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["data"]["critical"], 1);
    let prom = d.path().join("tej.prom");
    let (code, _, _) = tej(
        &[
            "tls",
            "check",
            &ep,
            "--prometheus-file",
            prom.to_str().unwrap(),
        ],
        d.path(),
    );
    assert_eq!(code, 2);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains(&format!(
            "tej_check_status{{check=\"tls.connect\",target=\"{ep}\"}} 2"
        )),
        "{text}"
    );
}

#[test]
fn secrets_generate_prints_hex_of_the_requested_size() {
    let d = tempfile::tempdir().unwrap();
    let (code, a, _) = tej(&["secrets", "generate"], d.path());
    assert_eq!(code, 0);
    assert_eq!(a.trim().len(), 128);
    assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    let (_, b, _) = tej(&["secrets", "generate"], d.path());
    assert_ne!(a, b);
}

#[test]
fn cleanup_dry_run_changes_nothing_then_applies_and_audits() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    for name in ["old1.log", "old2.log", "new.log", "keep.txt"] {
        std::fs::write(logs.join(name), b"x").unwrap();
    }
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400);
    for name in ["old1.log", "old2.log"] {
        std::fs::File::options()
            .write(true)
            .open(logs.join(name))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!("audit_log = \"{}\"\n", audit.display()),
    )
    .unwrap();
    let root = logs.to_str().unwrap();
    let args = [
        "cleanup",
        "--root",
        root,
        "--pattern",
        "*.log",
        "--older-than",
        "30",
    ];
    let (code, out, err) = tej(&[&args[..], &["--dry-run"]].concat(), d.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dry run") && out.contains("old1.log") && out.contains("old2.log"),
        "{out}"
    );
    assert!(logs.join("old1.log").exists());
    assert!(!audit.exists(), "a dry run is not audited");
    // Destructive: without --yes only the plan, refused and audited.
    let (code, out, err) = tej(&args, d.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("--yes") && out.contains("old1.log"), "{out}");
    assert!(logs.join("old1.log").exists());
    let (code, out, err) = tej(&[&args[..], &["--yes"]].concat(), d.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied"), "{out}");
    assert!(!logs.join("old1.log").exists() && !logs.join("old2.log").exists());
    assert!(logs.join("new.log").exists() && logs.join("keep.txt").exists());
    let text = std::fs::read_to_string(&audit).unwrap();
    let v: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v.len(), 2, "{text}");
    assert_eq!(v[0]["outcome"], "refused");
    assert_eq!(v[1]["step"], "disk-cleanup");
    assert_eq!(v[1]["outcome"], "applied");
}

#[test]
fn logs_review_counts_runbook_classes() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("combined.log");
    std::fs::write(&log, "2030-01-01T00:00:00Z ERROR boom\n2030-01-01T00:00:01Z warn slow query took 900ms\nlogin failed for a@b.c from 203.0.113.9\n").unwrap();
    let (code, out, err) = tej(
        &[
            "logs",
            "review",
            log.to_str().unwrap(),
            "--since",
            "7d",
            "--output",
            "json",
        ],
        d.path(),
    );
    assert!(code == 1 || code == 2, "{out}{err}");
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "log_review");
    assert_eq!(first["data"]["lines"], 3);
    assert_eq!(
        first["data"]["failed_logins_by_address"][0]["address"],
        "203.0.113.9"
    );
}

#[test]
fn completions_cover_every_top_level_command() {
    let d = tempfile::tempdir().unwrap();
    let (code, bash, err) = tej(&["completions", "bash"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(bash.contains("complete -F _tej"), "{bash}");
    for c in ["backup", "db", "redis", "calendar", "schedule", "tls"] {
        assert!(bash.contains(c), "bash completion lacks {c}");
    }
    let (code, zsh, _) = tej(&["completions", "zsh"], d.path());
    assert_eq!(code, 0);
    assert!(
        zsh.starts_with("#compdef tej"),
        "{}",
        &zsh[..zsh.len().min(80)]
    );
    let (code, _, err) = tej(&["completions", "tcsh"], d.path());
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");
}

#[test]
fn man_pages_are_generated_per_command() {
    let d = tempfile::tempdir().unwrap();
    let (code, page, err) = tej(&["man"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(page.contains(".TH tej 1"), "{page}");
    assert!(page.contains("backup"));
    let dir = d.path().join("man");
    let (code, listed, err) = tej(&["man", "--dir", dir.to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    let create = dir.join("tej-backup-create.1");
    assert!(listed.contains("tej-backup-create.1"), "{listed}");
    let text = std::fs::read_to_string(&create).unwrap();
    assert!(text.contains(r"\-\-repo"), "{text}");
}

#[test]
fn file_backups_round_trip_through_create_files_and_restore_into() {
    let d = tempfile::tempdir().unwrap();
    let uploads = d.path().join("uploads");
    std::fs::create_dir_all(uploads.join("avatars")).unwrap();
    std::fs::write(uploads.join("avatars/1.png"), b"\x89PNG fake").unwrap();
    std::fs::write(uploads.join("report.pdf"), vec![7u8; 300_000]).unwrap();
    let repo = d.path().join("repo");
    let (repo_s, up_s) = (repo.display().to_string(), uploads.display().to_string());

    let (code, out, err) = tej(
        &["backup", "create", "--repo", &repo_s, "--files", &up_s],
        d.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("file backup") && out.contains("2 files"),
        "{out}"
    );
    // No directories given and none configured: a clear error.
    let (code, _, err) = tej(
        &["backup", "create", "--repo", &repo_s, "--files"],
        d.path(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("[backup] files"), "{err}");

    let (code, out, _) = tej(
        &["backup", "list", "--repo", &repo_s, "-o", "json"],
        d.path(),
    );
    assert_eq!(code, 0);
    let kinds: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["data"]["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(kinds, ["files"], "{out}");
    let id = serde_json::from_str::<serde_json::Value>(out.lines().next().unwrap()).unwrap()["data"]
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The logical restore refuses a file backup and names the right command.
    let (code, _, err) = tej(
        &[
            "backup",
            "restore",
            &id,
            "--repo",
            &repo_s,
            "--target",
            "postgres://x@127.0.0.1/x",
            "--yes",
        ],
        d.path(),
    );
    assert_ne!(code, 0);
    assert!(err.contains("--into"), "{err}");

    let into = d.path().join("restored");
    let into_s = into.display().to_string();
    let (code, out, err) = tej(
        &[
            "backup", "restore", "latest", "--repo", &repo_s, "--into", &into_s, "--yes",
        ],
        d.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let found: Vec<_> = walk_files(&into);
    let png = found
        .iter()
        .find(|p| p.ends_with("avatars/1.png"))
        .unwrap_or_else(|| panic!("restored: {found:?}"));
    assert_eq!(std::fs::read(png).unwrap(), b"\x89PNG fake");
    let pdf = found.iter().find(|p| p.ends_with("report.pdf")).unwrap();
    assert_eq!(std::fs::read(pdf).unwrap(), vec![7u8; 300_000]);
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
