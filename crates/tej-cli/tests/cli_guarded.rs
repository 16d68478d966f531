//! The destructive commands outside backup and restore run under the executor like every
//! other step: `tej cleanup` refuses system and data directories; cleanup, `services restart`
//! and `emergency service-down` only plan without `--yes`, apply and audit with it; and an
//! `--outside-window` override in production is written into the audit entry.

use std::path::Path;
use std::process::Command;
use tej_testkit::{DockerEngine, PgCluster};

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

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn age_days(path: &Path, days: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400))
        .unwrap();
}

#[test]
fn cleanup_refuses_system_and_data_directories() {
    let d = tempfile::tempdir().unwrap();
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    // A real backup repository.
    let repo = d.path().join("repo");
    let (code, out, err) = tej(
        d.path(),
        &[
            "backup",
            "create",
            "--repo",
            repo.to_str().unwrap(),
            "--db",
            &url,
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let pgdata = pg.data_dir().to_str().unwrap().to_string();
    let parent_of_repo = d.path().to_str().unwrap().to_string();
    for (root, why) in [
        ("/", "system directory"),
        ("/etc", "system directory"),
        ("/usr/lib", "system directory"),
        (pgdata.as_str(), "PostgreSQL data directory"),
        (repo.to_str().unwrap(), "backup repository"),
        (parent_of_repo.as_str(), "backup repository"),
    ] {
        let (code, out, err) = tej(
            d.path(),
            &[
                "cleanup",
                "--root",
                root,
                "--pattern",
                "*",
                "--older-than",
                "0",
                "--keep-newest",
                "0",
                "--yes",
            ],
        );
        assert_eq!(code, 1, "--root {root}: {out}{err}");
        let all = format!("{out}{err}");
        assert!(
            all.contains("refuse") && all.contains(why),
            "--root {root} must be refused as a {why}: {all}"
        );
    }
    assert!(pg.data_dir().join("PG_VERSION").exists());
    assert!(pg.is_running());
    let (code, out, err) = tej(
        d.path(),
        &["backup", "list", "--repo", repo.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("app"), "the backup is still there: {out}");
}

#[test]
fn cleanup_plans_without_yes_applies_and_audits_with_it_and_records_the_override() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let old = logs.join("old.log");
    std::fs::write(&old, "old\n").unwrap();
    age_days(&old, 40);
    std::fs::write(logs.join("new.log"), "new\n").unwrap();
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!("audit_log = \"{}\"\n", audit.display()),
    )
    .unwrap();
    let args = |extra: &[&str]| {
        let mut v = vec![
            "cleanup",
            "--root",
            logs.to_str().unwrap(),
            "--pattern",
            "*.log",
            "--older-than",
            "30",
            "--keep-newest",
            "0",
        ];
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        tej(d.path(), &a)
    };
    // Without --yes: the plan names the file, nothing is removed.
    let (code, out, err) = run(&[]);
    assert!(out.contains("old.log"), "{out}{err}");
    assert!(out.contains("--yes"), "{out}{err}");
    assert_ne!(code, 0, "{out}{err}");
    assert!(old.exists());
    // With --yes: removed and audited.
    let (code, out, err) = run(&["--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!old.exists());
    assert!(logs.join("new.log").exists());
    let a = audit_lines(&audit);
    let applied = a
        .iter()
        .find(|e| e["outcome"] == "applied")
        .unwrap_or_else(|| panic!("{a:#?}"));
    assert_eq!(applied["procedure"], "cleanup");
    assert_eq!(applied["risk"], "destructive");

    // Production, outside the Sunday window (unless this test runs on Sunday 02:00-04:00
    // IST, when the refusal does not happen and the override is still recorded).
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"production\"\naudit_log = \"{}\"\n",
            audit.display()
        ),
    )
    .unwrap();
    let old2 = logs.join("old2.log");
    std::fs::write(&old2, "old\n").unwrap();
    age_days(&old2, 40);
    let (code, out, err) = run(&["--yes", "--outside-window"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!old2.exists());
    let a = audit_lines(&audit);
    let last = a.last().unwrap();
    assert_eq!(last["outcome"], "applied", "{a:#?}");
    assert_eq!(last["environment"], "production", "{last}");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.contains("--outside-window")),
        "the override is audited: {last}"
    );
    // Entries without the override do not claim it.
    assert!(
        !a[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("--outside-window"),
        "{a:#?}"
    );
}

/// A private engine running `shop-backend-1` as Compose service `backend` of project `shop`.
fn engine_with_service() -> DockerEngine {
    let engine = DockerEngine::start().unwrap();
    engine.import_busybox_image("tej/busybox:guarded").unwrap();
    engine
        .docker(&[
            "run",
            "-d",
            "--name",
            "shop-backend-1",
            "--network",
            "host",
            "--stop-timeout",
            "1",
            "--label",
            "com.docker.compose.project=shop",
            "--label",
            "com.docker.compose.service=backend",
            "--label",
            "com.docker.compose.container-number=1",
            "--label",
            "com.docker.compose.oneoff=False",
            "tej/busybox:guarded",
            "sleep",
            "600",
        ])
        .unwrap();
    engine
}

fn started_at(engine: &DockerEngine) -> String {
    engine
        .docker(&["inspect", "-f", "{{.State.StartedAt}}", "shop-backend-1"])
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn services_restart_and_service_down_plan_without_yes_and_audit_with_it() {
    let engine = engine_with_service();
    let d = tempfile::tempdir().unwrap();
    let audit = d.path().join("audit.jsonl");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\naudit_log = \"{}\"\n[compose]\nproject = \"shop\"\ndocker_host = \"{}\"\n",
            audit.display(),
            engine.host()
        ),
    )
    .unwrap();
    let before = started_at(&engine);

    let (code, out, err) = tej(d.path(), &["services", "restart", "backend"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("restart"), "the plan is shown: {out}{err}");
    assert!(out.contains("--yes"), "{out}{err}");
    assert_eq!(
        started_at(&engine),
        before,
        "nothing restarted without --yes"
    );
    let (code, out, err) = tej(d.path(), &["services", "restart", "backend", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    let after = started_at(&engine);
    assert_ne!(after, before, "restarted with --yes: {out}");

    let (code, out, err) = tej(d.path(), &["emergency", "service-down", "backend"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("--yes"), "{out}{err}");
    assert_eq!(started_at(&engine), after, "nothing done without --yes");
    let (code, out, err) = tej(d.path(), &["emergency", "service-down", "backend", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");

    let a = audit_lines(&audit);
    let steps: Vec<(String, String)> = a
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        steps.contains(&("restart-service".into(), "applied".into())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("recover-service".into(), "applied".into())),
        "{steps:?}"
    );
    assert!(
        steps.iter().filter(|(_, o)| o == "refused").count() >= 2,
        "the unconfirmed runs are audited as refused: {steps:?}"
    );
}
