//! `tej daemon` end to end: starts with PostgreSQL advisory locks, primes its state file,
//! stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use tej_testkit::PgCluster;

#[test]
fn daemon_starts_with_postgres_locks_and_stops_on_sigterm() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "state_dir = \"{}\"\n[[database]]\nname = \"main\"\nurl = \"{url}\"\n",
            d.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tej"))
        .args(["daemon", "--output", "json"])
        .current_dir(d.path())
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["type"], "daemon_started");
    assert_eq!(v["data"]["entries"], 16);
    assert_eq!(
        v["data"]["lock"],
        "postgres advisory locks on database \"main\""
    );
    let state = d.path().join("state/daemon-state.json");
    assert_eq!(v["data"]["state_file"], state.display().to_string());
    // The first tick primes every entry (nothing runs retroactively).
    for _ in 0..200 {
        if state.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(st["entries"].as_object().unwrap().len(), 16);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        lines.next().is_none(),
        "no events expected before any entry is due"
    );
}
