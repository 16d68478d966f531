//! `tej config init` and `tej config check` through the binary: the search path
//! (`./tej.toml`, then `$XDG_CONFIG_HOME/tej/tej.toml`), where each value comes from, and
//! templates that load as written and are never written over by accident.

use std::path::Path;
use std::process::Command;

/// Runs tej in `dir` with `env` (and no configuration of the caller's); (code, stdout, stderr).
fn tej(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tej"));
    c.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("TEJ_CONFIG")
        .env_remove("TEJ_ENVIRONMENT")
        .env_remove("XDG_CONFIG_HOME")
        .env("NO_COLOR", "1");
    for var in ["PGHOST", "PGDATABASE", "PGUSER", "PGPORT", "PGSERVICE"] {
        c.env_remove(var);
    }
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

#[test]
fn the_search_path_finds_the_user_config_after_the_working_directory() {
    let work = tempfile::tempdir().unwrap();
    let xdg = tempfile::tempdir().unwrap();
    let xdg_path = xdg.path().display().to_string();
    let user_file = xdg.path().join("tej").join("tej.toml");
    std::fs::create_dir_all(user_file.parent().unwrap()).unwrap();
    std::fs::write(&user_file, "environment = \"staging\"\n").unwrap();
    let env = [("XDG_CONFIG_HOME", xdg_path.as_str())];

    // Nothing in the working directory: the user's file is used, and named.
    let (code, out, err) = tej(work.path(), &["config", "check"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("{}: ok", user_file.display())),
        "{out}"
    );
    assert!(out.contains("environment      staging"), "{out}");

    // ./tej.toml comes first.
    std::fs::write(
        work.path().join("tej.toml"),
        "environment = \"production\"\n",
    )
    .unwrap();
    let (code, out, _) = tej(work.path(), &["config", "check"], &env);
    assert_eq!(code, 0);
    assert!(out.starts_with("tej.toml: ok"), "{out}");
    assert!(out.contains("environment      production"), "{out}");

    // --config wins over both.
    let (code, out, _) = tej(
        work.path(),
        &[
            "--config",
            &user_file.display().to_string(),
            "config",
            "check",
        ],
        &env,
    );
    assert_eq!(code, 0);
    assert!(out.contains("environment      staging"), "{out}");

    // No file anywhere: the environment alone, and the places searched are named.
    let empty = tempfile::tempdir().unwrap();
    let (code, out, _) = tej(
        empty.path(),
        &["config", "check"],
        &[("XDG_CONFIG_HOME", &empty.path().display().to_string())],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("no tej.toml; environment only; searched tej.toml"),
        "{out}"
    );
    assert!(out.contains("/etc/tej/tej.toml"), "{out}");
}

#[test]
fn config_check_says_where_each_value_comes_from() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("tej.toml"),
        "environment = \"staging\"\n[backup]\ncompression = \"zstd\"\n",
    )
    .unwrap();
    let env = [
        (
            "DATABASE_URL",
            "postgres://app:env-Pa55word@127.0.0.1:5432/app",
        ),
        ("XDG_CONFIG_HOME", "/nonexistent"),
    ];
    let (code, out, _) = tej(d.path(), &["config", "check"], &env);
    assert_eq!(code, 0, "{out}");
    let sources = out
        .split("where each value comes from:")
        .nth(1)
        .unwrap_or_else(|| panic!("no sources: {out}"));
    let line = |key: &str| {
        sources
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no line for {key}: {out}"))
            .to_string()
    };
    assert!(line("environment").ends_with("file tej.toml"), "{out}");
    assert!(
        line("backup.compression").ends_with("file tej.toml"),
        "{out}"
    );
    assert!(line("database[0]").ends_with("env DATABASE_URL"), "{out}");
    assert!(line("serve").ends_with("default"), "{out}");
    assert!(!out.contains("env-Pa55word"), "{out}");
    let (code, out, _) = tej(d.path(), &["config", "check", "-o", "json"], &env);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let origins = v["data"]["origins"].as_array().expect("origins in JSON");
    assert!(
        origins
            .iter()
            .any(|o| o["key"] == "database[0]" && o["source"]["var"] == "DATABASE_URL"),
        "{out}"
    );
}

#[test]
fn config_init_writes_a_template_that_loads_and_never_overwrites_by_accident() {
    for platform in ["host", "compose"] {
        let d = tempfile::tempdir().unwrap();
        let env = [("XDG_CONFIG_HOME", "/nonexistent")];
        let (code, out, err) = tej(d.path(), &["config", "init", "--platform", platform], &env);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("wrote tej.toml"), "{out}");
        let written = std::fs::read_to_string(d.path().join("tej.toml")).unwrap();
        assert!(written.contains("[backup]"), "{written}");
        // The written file is what config check then loads.
        let (code, out, err) = tej(d.path(), &["config", "check"], &env);
        assert_eq!(code, 0, "{platform}: {out}{err}");
        assert!(out.starts_with("tej.toml: ok"), "{out}");

        // A second init leaves the edited file alone; --force replaces it.
        std::fs::write(d.path().join("tej.toml"), "environment = \"staging\"\n").unwrap();
        let (code, _, err) = tej(d.path(), &["config", "init", "--platform", platform], &env);
        assert_eq!(code, 1);
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(
            std::fs::read_to_string(d.path().join("tej.toml")).unwrap(),
            "environment = \"staging\"\n"
        );
        let (code, _, err) = tej(
            d.path(),
            &["config", "init", "--platform", platform, "--force"],
            &env,
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            std::fs::read_to_string(d.path().join("tej.toml")).unwrap(),
            written
        );
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
    // A directory that does not exist is a clear error naming the path.
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = tej(
        d.path(),
        &["config", "init", "--path", "missing/dir/tej.toml"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("missing/dir/tej.toml") && err.contains("cannot write"),
        "{err}"
    );
}
