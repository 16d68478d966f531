//! `tej restore` and `tej drill` write commands that the PostgreSQL server runs as its own
//! OS user (`restore_command` names this very binary and its `--config`). A tej that
//! user cannot run (built in a checkout under root's 0700 home) or a tej.toml it cannot
//! read is refused at once, naming the directory in the way, before anything is touched.

use anyhow::{Result, ensure};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use tej_testkit::is_root;

fn run(tej: &Path, args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(tej)
        .args(args)
        .env_remove("TEJ_CONFIG")
        .env("NO_COLOR", "1")
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn restore_and_drill_refuse_a_tej_or_config_the_server_user_cannot_reach() -> Result<()> {
    ensure!(
        is_root(),
        "run as root: the server's OS user (postgres) must differ from the caller"
    );
    // A private "home" holding a copy of tej, as a clone in /root would.
    let home = tempfile::Builder::new()
        .prefix("tej-home-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))?;
    let private_tej = home.path().join("tej");
    std::fs::copy(env!("CARGO_BIN_EXE_tej"), &private_tej)?;
    std::fs::set_permissions(&private_tej, std::fs::Permissions::from_mode(0o755))?;
    let repo = tempfile::tempdir()?;
    let repo = repo.path().to_str().unwrap().to_string();
    let scratch = tempfile::tempdir()?;
    let pgdata = scratch.path().join("data");
    let pgdata_s = pgdata.to_str().unwrap();
    let home_s = home.path().display().to_string();

    // `tej restore` of the newest base backup into a new data directory, and more arguments.
    let restore = |tej: &Path, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--repo",
            &repo,
            "--pgdata",
            pgdata_s,
            "--target",
            "immediate",
            "--yes",
        ];
        args.extend_from_slice(extra);
        run(tej, &args)
    };

    let (code, err) = restore(&private_tej, &[])?;
    ensure!(code != 0, "restore must fail: {err}");
    ensure!(
        err.contains("could not run") && err.contains(&home_s) && err.contains("0700"),
        "the error names the unreachable directory: {err}"
    );
    ensure!(!pgdata.exists(), "nothing was created");

    let (code, err) = run(&private_tej, &["drill", "--repo", &repo])?;
    ensure!(code != 0, "drill must fail: {err}");
    ensure!(
        err.contains(&home_s),
        "the error names the directory: {err}"
    );

    // A reachable tej with a tej.toml in the private home: the config is what is refused.
    let reachable = tej_testkit::Reachable::file(Path::new(env!("CARGO_BIN_EXE_tej")))?;
    let config = home.path().join("tej.toml");
    std::fs::write(&config, "environment = \"development\"\n")?;
    let (code, err) = restore(reachable.path(), &["--config", config.to_str().unwrap()])?;
    ensure!(code != 0, "restore must fail: {err}");
    ensure!(
        err.contains("could not read") && err.contains(&home_s),
        "the error names the unreadable config: {err}"
    );
    ensure!(!pgdata.exists(), "nothing was created");
    Ok(())
}
