//! Colour and progress bars through the binary: `--color never|always|auto`, `NO_COLOR`
//! and a terminal or not (a pseudo-terminal from util-linux's `script`) decide whether any
//! ANSI escape reaches stdout or stderr; a backup against a real PostgreSQL draws its
//! progress bar only where colour is allowed.

use std::path::Path;
use std::process::Command;
use tej_testkit::{PgCluster, RedisServer};

const ESC: char = '\x1b';

/// Runs tej with pipes for stdout and stderr; (exit code, stdout, stderr).
fn piped(dir: &Path, args: &[&str], no_color: Option<&str>) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tej"));
    c.args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("TEJ_NO_PROGRESS")
        .env_remove("DATABASE_URL")
        .env_remove("TEJ_CONFIG");
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let out = c.output().expect("run tej");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs tej on a pseudo-terminal (stdout and stderr both a terminal); what it wrote there.
fn on_terminal(dir: &Path, args: &[&str], no_color: Option<&str>) -> String {
    let line = std::iter::once(env!("CARGO_BIN_EXE_tej"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Command::new("script");
    c.args(["-qefc", &line, "/dev/null"])
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("TEJ_NO_PROGRESS")
        .env_remove("DATABASE_URL")
        .env_remove("TEJ_CONFIG")
        .env("TERM", "xterm-256color");
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let out = c.output().expect("run script (util-linux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn color_flag_and_no_color_decide_every_ansi_escape() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let host = ["host", "check"];

    // Into pipes: none by default, none with never, some with always (even with NO_COLOR).
    let (_, out, _) = piped(dir, &host, None);
    assert!(!out.contains(ESC), "{out:?}");
    let (_, out, _) = piped(dir, &["--color", "never", "host", "check"], None);
    assert!(!out.contains(ESC), "{out:?}");
    let (_, out, _) = piped(dir, &["--color", "always", "host", "check"], Some("1"));
    assert!(out.contains("\x1b[3"), "--color always: {out:?}");

    // On a terminal: colour unless NO_COLOR is non-empty or --color never.
    let tty = on_terminal(dir, &host, None);
    assert!(tty.contains("\x1b[3"), "auto on a terminal: {tty:?}");
    assert!(tty.contains("host check"), "{tty:?}");
    let tty = on_terminal(dir, &host, Some(""));
    assert!(
        tty.contains("\x1b[3"),
        "an empty NO_COLOR does not count: {tty:?}"
    );
    for (args, no_color) in [
        (&host[..], Some("1")),
        (&["--color", "never", "host", "check"][..], None),
    ] {
        let tty = on_terminal(dir, args, no_color);
        assert!(tty.contains("host check"), "{tty:?}");
        assert!(
            !tty.contains(ESC),
            "{args:?} NO_COLOR={no_color:?}: {tty:?}"
        );
    }
}

#[test]
fn log_lines_on_stderr_follow_the_color_choice() {
    // A library error event (the audit log cannot be appended to: its path is a directory).
    let redis = RedisServer::start().unwrap();
    let d = tempfile::tempdir().unwrap();
    let audit = d.path().join("audit.jsonl");
    std::fs::create_dir(&audit).unwrap();
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\naudit_log = \"{}\"\n[[redis]]\nname = \"s\"\nurl = \"{}\"\n",
            audit.display(),
            redis.url()
        ),
    )
    .unwrap();
    let run = |color: &str, no_color: Option<&str>| {
        let (code, out, err) = piped(
            d.path(),
            &["--color", color, "redis", "invalidate-sessions"],
            no_color,
        );
        assert_eq!(code, 0, "{out}{err}");
        assert!(err.contains("cannot append to the audit log"), "{err:?}");
        err
    };
    assert!(run("always", Some("1")).contains(ESC));
    assert!(!run("never", None).contains(ESC));
    assert!(!run("auto", None).contains(ESC), "stderr is a pipe");
    let tty = on_terminal(
        d.path(),
        &["--color", "auto", "redis", "invalidate-sessions"],
        Some("1"),
    );
    assert!(tty.contains("cannot append to the audit log"), "{tty:?}");
    assert!(!tty.contains(ESC), "NO_COLOR on a terminal: {tty:?}");
}

#[test]
fn progress_bars_are_drawn_only_where_colour_is_allowed() {
    let pg = PgCluster::start().unwrap();
    let url = pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;",
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    std::fs::write(
        d.path().join("tej.toml"),
        format!(
            "environment = \"staging\"\n[[database]]\nname = \"main\"\nurl = \"{url}\"\n[backup]\nrepositories = [\"{}\"]\n",
            repo.display()
        ),
    )
    .unwrap();
    let create = ["backup", "create"];
    // On a terminal with colour allowed the bar draws (escapes that clear and redraw its line).
    let tty = on_terminal(d.path(), &create, None);
    assert!(tty.contains(ESC), "no progress bar on a terminal: {tty:?}");
    assert!(tty.contains("create "), "{tty:?}");
    // NO_COLOR and --color never: the same backup with no escape at all.
    for (args, no_color) in [
        (&create[..], Some("1")),
        (&["--color", "never", "backup", "create"][..], None),
    ] {
        let tty = on_terminal(d.path(), args, no_color);
        assert!(tty.contains("backup "), "{tty:?}");
        assert!(
            !tty.contains(ESC),
            "{args:?} NO_COLOR={no_color:?}: {tty:?}"
        );
    }
}
