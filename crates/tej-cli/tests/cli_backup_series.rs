//! Backups of several series in one repository, through the `tej` binary on a real
//! PostgreSQL 15 cluster: retention keeps the newest backup of every series (two
//! databases dumped the same day beside a file backup), prune leaves a running create
//! alone and clears what a killed one left, and `latest` means the configured database's
//! logical series (another database's dump or a file backup is never picked, and an
//! explicit id of the wrong kind or database is refused).
//!
//! A running create is held mid-run by a `pg_dump` wrapper first on PATH: for the
//! directory format it dumps with the real `pg_dump`, then turns `toc.dat` into a FIFO
//! that is fed only once the test creates the gate file, so the data files are stored
//! and the run waits on its last object for as long as the test needs.

use anyhow::{Context, Result, bail, ensure};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tej_testkit::{MotoServer, PgCluster};

const TEJ: &str = env!("CARGO_BIN_EXE_tej");

/// A cluster with two databases (`appdb`, configured; `otherdb`), a directory of files,
/// a local repository and a working directory holding `tej.toml`.
struct Fixture {
    pg: PgCluster,
    dir: tempfile::TempDir,
    /// The S3 server and bucket when the repository is `s3://BUCKET/site` on moto.
    s3: Option<(MotoServer, String)>,
}

impl Fixture {
    /// `retention` is the body of `[backup.retention]`.
    fn start(retention: &str) -> Result<Fixture> {
        Fixture::start_with(retention, false)
    }

    /// With `s3`, the repository is a bucket on moto instead of a local directory.
    fn start_with(retention: &str, s3: bool) -> Result<Fixture> {
        let s3 = if s3 {
            let moto = MotoServer::start()?;
            let bucket = moto.unique_bucket("tejcli-series")?;
            Some((moto, bucket))
        } else {
            None
        };
        let pg = PgCluster::start()?;
        pg.create_database("appdb")?;
        pg.create_database("otherdb")?;
        pg.psql(
            "appdb",
            "CREATE TABLE app_users (id int PRIMARY KEY, name text);
             INSERT INTO app_users SELECT g, 'user ' || g FROM generate_series(1, 200) g;
             CREATE TABLE app_posts (id int PRIMARY KEY, body text);
             INSERT INTO app_posts SELECT g, repeat('x', 100) FROM generate_series(1, 200) g;",
        )?;
        pg.psql(
            "otherdb",
            "CREATE TABLE other_things (id int PRIMARY KEY);
             INSERT INTO other_things SELECT generate_series(1, 10);",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("tejcli-series-")
            .tempdir_in("/tmp")?;
        let f = Fixture { pg, dir, s3 };
        std::fs::create_dir_all(f.files_dir())?;
        std::fs::write(f.files_dir().join("a.txt"), b"uploaded file")?;
        std::fs::create_dir_all(f.path("bin"))?;
        std::fs::create_dir_all(f.path("scratch"))?;
        std::fs::write(
            f.path("tej.toml"),
            format!(
                "[[database]]\nname = \"app\"\nurl = \"{}\"\n\n[backup]\nrepositories = [\"{}\"]\n\n[backup.retention]\n{retention}\n",
                f.pg.url("appdb"),
                f.repo_spec()
            ),
        )?;
        f.install_slow_pg_dump()?;
        Ok(f)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    fn repo_spec(&self) -> String {
        match &self.s3 {
            Some((_, bucket)) => format!("s3://{bucket}/site"),
            None => self.repo().display().to_string(),
        }
    }

    /// The keys under `prefix` in the repository (S3: listed over plain HTTP from moto).
    fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let Some((moto, bucket)) = &self.s3 else {
            let root = self.repo();
            let mut out = Vec::new();
            let mut stack = vec![root.join(prefix)];
            while let Some(d) = stack.pop() {
                let Ok(rd) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in rd.flatten() {
                    if e.file_type()?.is_dir() {
                        stack.push(e.path());
                    } else if let Ok(rel) = e.path().strip_prefix(&root) {
                        out.push(rel.display().to_string());
                    }
                }
            }
            return Ok(out);
        };
        use std::io::{Read, Write};
        let get = || -> std::io::Result<String> {
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", moto.port()))?;
            write!(
                conn,
                "GET /{bucket}?list-type=2&prefix=site/{prefix} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                moto.port()
            )?;
            let mut body = String::new();
            conn.read_to_string(&mut body)?;
            Ok(body)
        };
        // The listing is a plain GET; a reset connection is simply asked again.
        let mut attempt = 0;
        let body = loop {
            match get() {
                Ok(b) if b.contains("</ListBucketResult>") => break b,
                Ok(b) if attempt >= 5 => bail!("unexpected listing: {b}"),
                Err(e) if attempt >= 5 => return Err(e.into()),
                _ => attempt += 1,
            }
        };
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k.to_string()))
            .filter_map(|k| k.strip_prefix("site/").map(String::from))
            .collect())
    }

    fn files_dir(&self) -> PathBuf {
        self.path("uploads")
    }

    fn gate(&self) -> PathBuf {
        self.path("gate")
    }

    /// The `pg_dump` wrapper (see the module docs).
    fn install_slow_pg_dump(&self) -> Result<()> {
        let real = PgCluster::bin_dir().join("pg_dump");
        let script = format!(
            r#"#!/bin/sh
real="{real}"
case " $* " in *" --format=directory "*) ;; *) exec "$real" "$@" ;; esac
"$real" "$@" || exit $?
dir=""
for a in "$@"; do case "$a" in --file=*) dir="${{a#--file=}}" ;; esac; done
mv "$dir/toc.dat" "$dir/toc.real" || exit 1
mkfifo "$dir/toc.dat" || exit 1
(
  while [ ! -e "{gate}" ]; do sleep 0.05; done
  [ -e "{gate}.cancel" ] && exit 0
  cat "$dir/toc.real" > "$dir/toc.dat"
) </dev/null >/dev/null 2>&1 &
exit 0
"#,
            real = real.display(),
            gate = self.gate().display()
        );
        let p = self.path("bin/pg_dump");
        std::fs::write(&p, script)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(TEJ);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("TEJ_CONFIG")
            .env_remove("DATABASE_URL")
            .env("NO_COLOR", "1")
            .env("TMPDIR", self.path("scratch"))
            .env("AWS_ACCESS_KEY_ID", "tejtest")
            .env("AWS_SECRET_ACCESS_KEY", "tejtestsecret")
            .env("AWS_REGION", "us-east-1")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.path("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            );
        if let Some((moto, _)) = &self.s3 {
            cmd.env("AWS_ENDPOINT_URL", moto.endpoint());
        }
        cmd
    }

    /// Runs `tej` in the working directory: (exit code, stdout, stderr).
    fn tej(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().expect("run tej");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `tej` and requires exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.tej(args);
        ensure!(
            code == 0,
            "tej {args:?} exited {code}\nstdout:\n{out}\nstderr:\n{err}"
        );
        Ok(out)
    }

    /// Creates a backup (`args` after `backup create`) and returns its id.
    fn create(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-o", "json", "backup", "create"];
        all.extend_from_slice(args);
        let out = self.ok(&all)?;
        let line = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["type"] == "backup_created")
            .with_context(|| format!("no backup_created line in {out}"))?;
        let data = if line["data"]["backup"].is_object() {
            &line["data"]["backup"]
        } else {
            &line["data"]
        };
        data["id"]
            .as_str()
            .map(String::from)
            .with_context(|| format!("no id in {line}"))
    }

    /// The ids of `backup list`, newest first.
    fn listed(&self) -> Result<Vec<String>> {
        let out = self.ok(&["-o", "json", "backup", "list"])?;
        Ok(out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["type"] == "backup")
            .filter_map(|v| v["data"]["id"].as_str().map(String::from))
            .collect())
    }

    /// Starts a directory-format create of `appdb` that stops before its last object,
    /// and waits until its data files are stored. Returns the child and the run's id.
    fn start_held_create(&self) -> Result<(Child, String)> {
        let child = self
            .command(&["backup", "create", "--format", "directory"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(id) = self.run_with_stored_objects()? {
                return Ok((child, id));
            }
            if Instant::now() > deadline {
                bail!("the held create never stored a data object");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A run holding a stored data file (not a temporary one) and no manifest.
    fn run_with_stored_objects(&self) -> Result<Option<String>> {
        let keys = self.keys("backups/")?;
        for k in &keys {
            let mut parts = k.split('/');
            let (Some("backups"), Some(id), Some("dir"), Some(name)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let manifest = format!("backups/{id}/manifest.json");
            if name.ends_with(".dat.zst") && !keys.contains(&manifest) {
                return Ok(Some(id.to_string()));
            }
        }
        Ok(None)
    }
}

fn wait_output(child: Child) -> Result<(i32, String, String)> {
    let out = child.wait_with_output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Moves a backup's manifest times `days` back, as if it had been taken then.
fn age_backup(f: &Fixture, id: &str, days: i64) -> Result<()> {
    let path = f.repo().join("backups").join(id).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    for field in ["started_at", "finished_at"] {
        let t: jiff::Timestamp = m[field].as_str().context("time")?.parse()?;
        let t = t.checked_sub(jiff::SignedDuration::from_hours(24 * days))?;
        m[field] = serde_json::Value::String(t.to_string());
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&m)?)?;
    Ok(())
}

#[test]
fn prune_keeps_the_newest_backup_of_every_series() -> Result<()> {
    // Past the dailies, only the newest of each weekly/monthly/yearly slot stays.
    let f =
        Fixture::start("daily_days = 1\nweekly_days = 90\nmonthly_days = 365\nyearly_days = 2555")?;
    let app_old = f.create(&[])?;
    let app_new = f.create(&[])?;
    let other = f.create(&["--db", &f.pg.url("otherdb")])?;
    let files = f.create(&["--files", f.files_dir().to_str().context("utf-8")?])?;
    ensure!(f.listed()?.len() == 4, "{:?}", f.listed()?);
    // All four were taken on one day, ten days ago.
    for id in [&app_old, &app_new, &other, &files] {
        age_backup(&f, id, 10)?;
    }

    // The dry run names the series of every decision and changes nothing.
    let dry = f.ok(&["backup", "prune", "--dry-run"])?;
    for (id, series) in [
        (&app_old, "logical appdb"),
        (&app_new, "logical appdb"),
        (&other, "logical otherdb"),
    ] {
        let line = dry
            .lines()
            .find(|l| l.contains(id.as_str()))
            .with_context(|| format!("{id} not in the dry run:\n{dry}"))?;
        ensure!(line.contains(series), "{line:?} does not name {series}");
    }
    let files_line = dry
        .lines()
        .find(|l| l.contains(files.as_str()))
        .context("file backup not in the dry run")?;
    ensure!(
        files_line.contains("files ") && files_line.contains("uploads"),
        "{files_line:?}"
    );
    ensure!(f.listed()?.len() == 4);

    f.ok(&["backup", "prune", "--yes"])?;
    let left = f.listed()?;
    for id in [&app_new, &other, &files] {
        ensure!(left.contains(id), "{id} was deleted; left: {left:?}");
    }
    ensure!(
        !left.contains(&app_old),
        "the older appdb dump shares its slots with the newer one and goes: {left:?}"
    );
    Ok(())
}

#[test]
fn prune_is_a_guarded_step_planned_without_yes_and_audited() -> Result<()> {
    let f =
        Fixture::start("daily_days = 1\nweekly_days = 90\nmonthly_days = 365\nyearly_days = 2555")?;
    let audit = f.path("audit.jsonl");
    let toml = std::fs::read_to_string(f.path("tej.toml"))?;
    std::fs::write(
        f.path("tej.toml"),
        format!("audit_log = \"{}\"\n{toml}", audit.display()),
    )?;
    let old = f.create(&[])?;
    let new = f.create(&[])?;
    for id in [&old, &new] {
        age_backup(&f, id, 10)?;
    }

    // Without --yes the plan is shown, the step refused and nothing deleted.
    let (code, out, err) = f.tej(&["backup", "prune"]);
    ensure!(code != 0, "prune without --yes succeeded:\n{out}\n{err}");
    ensure!(
        out.contains("REFUSED") && out.contains(&format!("delete {old}")),
        "no plan and refusal in:\n{out}\n{err}"
    );
    ensure!(
        f.listed()?.len() == 2,
        "prune without --yes deleted: {:?}",
        f.listed()?
    );

    // Production outside its window (Sunday 02:00-04:00 IST) is refused even with --yes.
    let prod = f.path("prod.toml");
    std::fs::write(
        &prod,
        format!(
            "environment = \"production\"\n{}",
            std::fs::read_to_string(f.path("tej.toml"))?
        ),
    )?;
    let prod_s = prod.display().to_string();
    let ist = Command::new("date")
        .env("TZ", "Asia/Kolkata")
        .arg("+%u%H")
        .output()?;
    let in_window = matches!(String::from_utf8_lossy(&ist.stdout).trim(), "702" | "703");
    if !in_window {
        let (code, out, err) = f.tej(&["--config", &prod_s, "backup", "prune", "--yes"]);
        ensure!(
            code != 0,
            "prune outside the window succeeded:\n{out}\n{err}"
        );
        ensure!(
            out.contains("REFUSED") && out.contains("window"),
            "{out}\n{err}"
        );
        ensure!(
            f.listed()?.len() == 2,
            "deleted outside the window: {:?}",
            f.listed()?
        );
    }

    // With --yes the older dump goes, and the audit log records the step.
    let out = f.ok(&["backup", "prune", "--yes"])?;
    ensure!(out.contains("applied"), "{out}");
    ensure!(f.listed()? == vec![new.clone()], "{:?}", f.listed()?);
    let log = std::fs::read_to_string(&audit)?;
    ensure!(
        log.lines()
            .any(|l| l.contains("backup-prune") && l.contains("applied")),
        "no audit entry of the prune:\n{log}"
    );
    Ok(())
}

const KEEP_ALL: &str = "daily_days = 30\nweekly_days = 90\nmonthly_days = 365\nyearly_days = 2555";

fn prune_during_a_running_create(s3: bool) -> Result<()> {
    let f = Fixture::start_with(KEEP_ALL, s3)?;
    let (child, id) = f.start_held_create()?;
    let (code, out, err) = f.tej(&["backup", "prune", "--yes"]);
    // Whatever prune says, the running run's objects are untouched.
    let stored_before = f.run_with_stored_objects()?;
    std::fs::write(f.gate(), b"")?;
    let (ccode, cout, cerr) = wait_output(child)?;
    ensure!(
        ccode == 0,
        "the create exited {ccode}\nstdout:\n{cout}\nstderr:\n{cerr}\nprune ({code}):\n{out}\n{err}"
    );
    ensure!(code == 0, "prune exited {code}\n{out}\n{err}");
    ensure!(
        out.contains(&format!("running {id}: left alone")),
        "prune did not see the running run:\n{out}"
    );
    ensure!(
        stored_before.as_deref() == Some(id.as_str()),
        "prune removed the objects of the running run {id}\nprune said:\n{out}"
    );
    ensure!(
        f.listed()? == vec![id.clone()],
        "{:?} (expected {id})",
        f.listed()?
    );
    ensure!(
        !f.keys("backups/")?
            .contains(&format!("backups/{id}/failed.json")),
        "the finished run carries a failure record"
    );
    f.ok(&["backup", "verify", &id])?;
    Ok(())
}

#[test]
fn prune_during_a_running_create_leaves_the_run_alone() -> Result<()> {
    prune_during_a_running_create(false)
}

#[test]
fn prune_during_a_running_create_on_s3_leaves_the_run_alone() -> Result<()> {
    prune_during_a_running_create(true)
}

fn lock_objects(f: &Fixture) -> Result<Vec<String>> {
    Ok(f.keys("locks/")?
        .into_iter()
        .filter(|k| k.ends_with(".lock"))
        .collect())
}

fn killed_create_is_cleaned(s3: bool) -> Result<()> {
    let f = Fixture::start_with(KEEP_ALL, s3)?;
    let (mut child, id) = f.start_held_create()?;
    child.kill()?;
    child.wait()?;
    std::fs::write(f.gate().with_extension("cancel"), b"")?;
    std::fs::write(f.gate(), b"")?;
    ensure!(
        !lock_objects(&f)?.is_empty(),
        "the killed run left no lock object"
    );

    let out = f.ok(&["backup", "prune", "--yes"])?;
    ensure!(
        out.contains("cleaned 1 interrupted run"),
        "prune did not clean the killed run:\n{out}"
    );
    let left: Vec<String> = f
        .keys("backups/")?
        .into_iter()
        .filter(|k| k.starts_with(&format!("backups/{id}/")))
        .collect();
    ensure!(left == [format!("backups/{id}/failed.json")], "{left:?}");
    let locks = lock_objects(&f)?;
    ensure!(
        locks.is_empty(),
        "the dead owner's lock is still there: {locks:?}"
    );
    // And the next create of the same database runs.
    let next = f.create(&[])?;
    ensure!(f.listed()? == vec![next]);
    Ok(())
}

#[test]
fn a_killed_create_is_cleaned_by_prune_and_its_lock_cleared() -> Result<()> {
    killed_create_is_cleaned(false)
}

#[test]
fn a_killed_create_on_s3_is_cleaned_by_prune_and_its_lock_cleared() -> Result<()> {
    killed_create_is_cleaned(true)
}

#[test]
fn latest_means_the_configured_database_and_wrong_ids_are_refused() -> Result<()> {
    let f = Fixture::start(
        "daily_days = 30\nweekly_days = 90\nmonthly_days = 365\nyearly_days = 2555",
    )?;
    let app = f.create(&[])?;
    let other = f.create(&["--db", &f.pg.url("otherdb")])?;
    let files = f.create(&["--files", f.files_dir().to_str().context("utf-8")?])?;
    ensure!(f.listed()?.first() == Some(&files), "{:?}", f.listed()?);

    // verify latest: the configured database's newest dump.
    let out = f.ok(&["backup", "verify"])?;
    ensure!(
        out.contains(&app),
        "verify latest did not pick {app}:\n{out}"
    );
    ensure!(!out.contains(&files) && !out.contains(&other), "{out}");
    let out = f.ok(&["backup", "verify", "latest"])?;
    ensure!(out.contains(&app), "{out}");

    // restore latest into a scratch database: appdb's tables arrive.
    let scratch = f.pg.create_database("scratch")?;
    let out = f.ok(&["backup", "restore", "latest", "--target", &scratch, "--yes"])?;
    ensure!(
        out.contains(&app),
        "restore latest did not use {app}:\n{out}"
    );
    let n = f.pg.psql("scratch", "SELECT count(*) FROM app_users")?;
    ensure!(n.trim() == "200", "{n}");

    // An explicit id of another database's dump, or of a file backup, is refused.
    let (code, out, err) = f.tej(&["backup", "restore", &other, "--target", &scratch, "--yes"]);
    ensure!(code != 0, "restored another database's dump:\n{out}\n{err}");
    ensure!(
        err.contains(&other) && err.contains("otherdb") && err.contains("appdb"),
        "unclear refusal: {err}"
    );
    let (code, _, err) = f.tej(&["backup", "restore", &files, "--target", &scratch, "--yes"]);
    ensure!(code != 0 && err.contains("file backup"), "{err}");
    let has_other = f.pg.psql(
        "scratch",
        "SELECT count(*) FROM pg_tables WHERE tablename = 'other_things'",
    )?;
    ensure!(has_other.trim() == "0", "otherdb's table reached scratch");

    // Naming the other database on purpose selects its series.
    let out = f.ok(&["backup", "verify", "--db", &f.pg.url("otherdb")])?;
    ensure!(out.contains(&other), "{out}");
    Ok(())
}

#[test]
fn the_corruption_emergency_restores_the_databases_own_newest_dump() -> Result<()> {
    let f = Fixture::start(
        "daily_days = 30\nweekly_days = 90\nmonthly_days = 365\nyearly_days = 2555",
    )?;
    let app = f.create(&[])?;
    // Then appdb loses a table, and newer backups of other things are taken.
    f.pg.psql("appdb", "DROP TABLE app_posts")?;
    let other = f.create(&["--db", &f.pg.url("otherdb")])?;
    let files = f.create(&["--files", f.files_dir().to_str().context("utf-8")?])?;
    ensure!(f.listed()?.first() == Some(&files));

    let (code, out, err) = f.tej(&["emergency", "db-corruption", "--restore-anyway", "--yes"]);
    ensure!(code == 0, "exit {code}\nstdout:\n{out}\nstderr:\n{err}");
    ensure!(out.contains(&app), "the restore did not use {app}:\n{out}");
    ensure!(!out.contains(&other) && !out.contains(&files), "{out}");
    let n = f.pg.psql("appdb", "SELECT count(*) FROM app_posts")?;
    ensure!(n.trim() == "200", "app_posts not restored: {n}");
    let stray = f.pg.psql(
        "appdb",
        "SELECT count(*) FROM pg_tables WHERE tablename = 'other_things'",
    )?;
    ensure!(stray.trim() == "0", "otherdb's dump reached appdb");
    Ok(())
}
