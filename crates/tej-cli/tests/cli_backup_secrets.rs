//! The database password never reaches a child's command line, through the `tej` binary
//! on a real PostgreSQL 15 cluster whose role `app` needs its password (scram-sha-256):
//! backups, restores and restore tests with the password in `DATABASE_URL`, in `--db` and
//! `--target`, and in a `[[database]]` URL still work, while `pg_dump`, `pg_restore` and
//! `psql` wrappers first on PATH record every argv they are given.

use anyhow::{Context, Result, ensure};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tej_testkit::PgCluster;

const TEJ: &str = env!("CARGO_BIN_EXE_tej");
const PW: &str = "Cli-pw/7Rq%x";

fn encoded() -> String {
    PW.replace('%', "%25").replace('/', "%2F")
}

struct Fixture {
    pg: PgCluster,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Result<Fixture> {
        let pg = PgCluster::start()?;
        pg.create_database("src")?;
        pg.psql(
            "src",
            "CREATE TABLE users (id int PRIMARY KEY, name text);
             INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 300) g;",
        )?;
        pg.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE app LOGIN SUPERUSER PASSWORD '{PW}';"
            ),
        )?;
        let hba = pg.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!(
                "host all app 127.0.0.1/32 scram-sha-256\nhost all app ::1/128 scram-sha-256\n{old}"
            ),
        )?;
        pg.reload()?;
        let dir = tempfile::Builder::new()
            .prefix("tejcli-secrets-")
            .tempdir_in("/tmp")?;
        let f = Fixture { pg, dir };
        std::fs::create_dir_all(f.path("bin"))?;
        for prog in ["pg_dump", "pg_restore", "psql"] {
            let script = format!(
                "#!/bin/sh\nprintf '%s\\n' \"{prog} $*\" >> '{log}'\nexec '{real}' \"$@\"\n",
                log = f.log().display(),
                real = PgCluster::bin_dir().join(prog).display()
            );
            let p = f.path(&format!("bin/{prog}"));
            std::fs::write(&p, script)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        f.write_config("")?;
        Ok(f)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn log(&self) -> PathBuf {
        self.path("argv.log")
    }

    fn write_config(&self, extra: &str) -> Result<()> {
        std::fs::write(
            self.path("tej.toml"),
            format!(
                "{extra}[backup]\nrepositories = [\"{}\"]\n",
                self.path("repo").display()
            ),
        )?;
        Ok(())
    }

    fn url(&self, db: &str) -> String {
        format!(
            "postgres://app:{}@127.0.0.1:{}/{db}",
            encoded(),
            self.pg.port()
        )
    }

    fn keywords(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=app password='{PW}' dbname={db}",
            self.pg.port()
        )
    }

    /// Runs `tej` and requires exit 0; returns stdout.
    fn ok(&self, args: &[&str], database_url: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(TEJ);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("TEJ_CONFIG")
            .env_remove("DATABASE_URL")
            .env_remove("PGPASSWORD")
            .env("NO_COLOR", "1")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.path("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        if let Some(u) = database_url {
            cmd.env("DATABASE_URL", u);
        }
        let out = cmd.output().context("run tej")?;
        ensure!(
            out.status.success(),
            "tej {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a backup and returns its id (from `--output json`).
    fn create(&self, format: &str, extra: &[&str], database_url: Option<&str>) -> Result<String> {
        let mut args = vec!["--output", "json", "backup", "create", "--format", format];
        args.extend_from_slice(extra);
        let out = self.ok(&args, database_url)?;
        let id = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| {
                let d = &v["data"];
                d["id"]
                    .as_str()
                    .or_else(|| d["backup"]["id"].as_str())
                    .map(str::to_string)
            })
            .with_context(|| format!("no backup id in {out}"))?;
        Ok(id)
    }

    fn restored_rows(&self, db: &str) -> Result<String> {
        self.pg.psql(db, "SELECT count(*) FROM users")
    }
}

fn assert_no_password(log: &Path) -> Result<()> {
    let text = std::fs::read_to_string(log).context("read the argv log")?;
    for prog in ["pg_dump ", "pg_restore ", "psql "] {
        ensure!(
            text.lines().any(|l| l.starts_with(prog)),
            "{prog}never ran: {text}"
        );
    }
    for line in text.lines() {
        ensure!(
            !line.contains(PW) && !line.contains(&encoded()) && !line.contains("Cli-pw"),
            "a command line holds the password: {line}"
        );
    }
    Ok(())
}

#[test]
fn no_child_command_line_holds_the_database_password() -> Result<()> {
    let f = Fixture::start()?;
    // DATABASE_URL with the password: backup; restore into --target (a URL with it).
    for (n, format) in ["plain", "custom"].into_iter().enumerate() {
        let id = f.create(format, &[], Some(&f.url("src")))?;
        let name = format!("r{n}");
        f.pg.create_database(&name)?;
        f.ok(
            &[
                "backup",
                "restore",
                &id,
                "--target",
                &f.url(&name),
                "--jobs",
                "1",
                "--yes",
            ],
            Some(&f.url("src")),
        )?;
        ensure!(f.restored_rows(&name)? == "300");
    }
    // --db as keywords with password=, and a restore test on that server.
    let id = f.create("custom", &["--db", &f.keywords("src")], None)?;
    f.ok(
        &[
            "backup",
            "verify",
            &id,
            "--restore-test",
            "--db",
            &f.keywords("src"),
        ],
        None,
    )?;
    // [[database]] name = "default" with the password in its URL.
    f.write_config(&format!(
        "[[database]]\nname = \"default\"\nurl = \"{}\"\n\n",
        f.url("src")
    ))?;
    let id = f.create("plain", &[], None)?;
    f.pg.create_database("r_cfg")?;
    f.ok(
        &[
            "backup",
            "restore",
            &id,
            "--target",
            &f.keywords("r_cfg"),
            "--yes",
        ],
        None,
    )?;
    ensure!(f.restored_rows("r_cfg")? == "300");
    f.ok(&["backup", "verify", "latest", "--restore-test"], None)?;
    assert_no_password(&f.log())
}
