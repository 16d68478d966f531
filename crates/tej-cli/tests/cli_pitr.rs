//! Point-in-time recovery end to end through the `tej` binary, on real PostgreSQL 15
//! clusters whose `archive_command` is the real `tej wal push`: a physical base backup
//! (`tej backup create --physical`), restores to three target times (exactly the rows
//! committed at or before each), a target beyond the archive refused before anything is
//! touched, the drill, a timeline switch (restore, promote, keep archiving, restore again
//! past it), a deleted segment reported by `tej wal verify` as a gap, and the archive
//! contract of `tej wal push|fetch` (same segment twice, different content, missing file,
//! storage down, killed mid-push), a failing `archive_command` failing the base backup
//! within `--archive-timeout`, a WAL gap refusing `--target latest` before anything is
//! touched, an in-place restore that keeps the old data directory and its archive
//! settings, and `tej wal fetch`'s background prefetch worker (killed, tampered with, ended
//! with the recovery).

use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tej_testkit::{PgCluster, PgClusterOptions, free_port, is_root, run_as_postgres};

/// This tej where the server's OS user can run it (`archive_command`, and the
/// `restore_command` that `tej restore` writes with its own path), wherever the checkout is.
const TEJ: Tej = Tej;

#[derive(Clone, Copy)]
struct Tej;

impl Tej {
    fn path(self) -> &'static str {
        static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        PATH.get_or_init(|| {
            tej_testkit::Reachable::shared(Path::new(env!("CARGO_BIN_EXE_tej")))
                .expect("make tej reachable for the postgres OS user")
                .display()
                .to_string()
        })
    }
}

impl std::fmt::Display for Tej {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path())
    }
}

impl AsRef<std::ffi::OsStr> for Tej {
    fn as_ref(&self) -> &std::ffi::OsStr {
        std::ffi::OsStr::new(self.path())
    }
}

/// Runs `tej` in `dir` with no configuration: (exit code, stdout, stderr).
fn tej_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(TEJ);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("TEJ_CONFIG")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tej");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory under /tmp owned by `postgres` when root (the server writes into it).
fn postgres_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let d = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?;
    give_to_postgres(d.path())?;
    Ok(d)
}

fn give_to_postgres(path: &Path) -> Result<()> {
    let st = Command::new("chmod").arg("0700").arg(path).status()?;
    ensure!(st.success(), "chmod {}", path.display());
    if is_root() {
        let st = Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(path)
            .status()?;
        ensure!(st.success(), "chown {}", path.display());
    }
    Ok(())
}

/// A cluster archiving through `tej wal push` into a local repository.
struct Source {
    pg: PgCluster,
    repo: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Source {
    fn start() -> Result<Source> {
        let repo = postgres_dir("tejcli-repo-")?;
        let pg = PgCluster::start_with(PgClusterOptions {
            archive_mode: true,
            archive_command: Some(format!(
                "{TEJ} wal push --repo {} %p",
                repo.path().display()
            )),
            extra_conf: vec!["autovacuum = off".into()],
            preload_pg_stat_statements: false,
            ..Default::default()
        })?;
        let work = postgres_dir("tejcli-work-")?;
        let src = Source { pg, repo, work };
        // `tej wal push` archives only into an initialised repository.
        let (code, out, err) = src.tej(&[
            "wal",
            "init",
            "--repo",
            &src.repo(),
            "--db",
            &src.pg.url("postgres"),
        ]);
        ensure!(code == 0, "wal init: {code}\n{out}\n{err}");
        Ok(src)
    }

    fn repo(&self) -> String {
        self.repo.path().display().to_string()
    }

    fn tej(&self, args: &[&str]) -> (i32, String, String) {
        tej_in(self.work.path(), args, &[])
    }

    fn sql(&self, sql: &str) -> Result<String> {
        Ok(self.pg.psql("postgres", sql)?.trim().to_string())
    }

    /// Server time now (UTC, microseconds).
    fn now(&self) -> Result<String> {
        self.sql(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
    }

    /// Switches to a new segment and waits until the old one is archived.
    fn switch_and_wait(&self) -> Result<()> {
        let seg = self.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
        wait_archived(&self.pg, &seg)
    }
}

/// Waits until `pg_stat_archiver` reports `segment` (or a later one) archived.
fn wait_archived(pg: &PgCluster, segment: &str) -> Result<()> {
    wait_archived_via(|q| pg.psql("postgres", q), segment)
        .with_context(|| format!("server log:\n{}", pg.server_log()))
}

/// Waits until the server that `sql` queries reports `segment` (or a later one) archived.
fn wait_archived_via(sql: impl Fn(&str) -> Result<String>, segment: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = sql(
            "SELECT coalesce(last_archived_wal, '') || '|' || coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        )?
        .trim()
        .to_string();
        let (archived, failed) = last.split_once('|').unwrap_or((&last, ""));
        if archived.len() >= 24 && archived[..24] >= *segment {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "segment {segment} not archived within 60 s (last archived {archived:?}, last failed {failed:?})"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// psql against a restored server on `port` over TCP.
fn psql_port(port: u16, sql: &str) -> Result<String> {
    let out = Command::new(PgCluster::bin_dir().join("psql"))
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(sql)
        .output()?;
    ensure!(
        out.status.success(),
        "psql on port {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Stops the server on `pgdata` (fast), as postgres.
fn stop(pgdata: &Path) -> Result<()> {
    let mut cmd = Command::new(PgCluster::bin_dir().join("pg_ctl"));
    cmd.arg("-D")
        .arg(pgdata)
        .args(["stop", "-m", "fast", "-w"])
        .stdout(Stdio::null());
    run_as_postgres(&mut cmd);
    let st = cmd.status()?;
    ensure!(st.success(), "pg_ctl stop {}", pgdata.display());
    Ok(())
}

/// A restored server, stopped when dropped.
struct Restored {
    pgdata: PathBuf,
    port: u16,
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.pgdata.join("postmaster.pid").exists() {
            let _ = stop(&self.pgdata);
        }
    }
}

/// `tej restore ... --start` into `work/name` on a free port; the server is left running.
fn restore(src: &Source, name: &str, target: &[&str], extra: &[&str]) -> Result<Restored> {
    let pgdata = src.work.path().join(name);
    let port = free_port();
    let repo = src.repo();
    let pgdata_s = pgdata.display().to_string();
    let port_s = port.to_string();
    let mut args = vec![
        "restore",
        "--repo",
        &repo,
        "--pgdata",
        &pgdata_s,
        "--start",
        "--port",
        &port_s,
        "--timeout",
        "120",
        "--yes",
    ];
    args.extend_from_slice(target);
    args.extend_from_slice(extra);
    let restored = Restored { pgdata, port };
    let (code, out, err) = src.tej(&args);
    ensure!(
        code == 0,
        "tej {} exited {code}\nstdout:\n{out}\nstderr:\n{err}",
        args.join(" ")
    );
    // Recovery fetched through `tej wal fetch` (prefetching by default); its spool does
    // not outlive the recovery.
    let spool = restored
        .pgdata
        .join("pg_wal")
        .join(tej_backup::PREFETCH_SPOOL_NAME);
    ensure!(
        !spool.exists(),
        "{} left after the recovery",
        spool.display()
    );
    Ok(restored)
}

#[test]
fn pitr_through_the_binary_restores_exactly_to_each_target_and_verify_finds_a_gap() -> Result<()> {
    let src = Source::start()?;
    src.sql("CREATE TABLE t (id int PRIMARY KEY, batch text NOT NULL)")?;
    src.switch_and_wait()?;

    // A base backup through the CLI (it waits for its last segment to be archived).
    let url = src.pg.url("postgres");
    let repo = src.repo();
    let (code, out, err) = src.tej(&[
        "backup",
        "create",
        "--physical",
        "--repo",
        &repo,
        "--db",
        &url,
    ]);
    ensure!(code == 0, "backup create --physical: {code}\n{out}\n{err}");
    ensure!(out.contains("base backup"), "{out}");
    let (code, out, _) = src.tej(&["backup", "list", "--repo", &repo, "-o", "json"]);
    ensure!(code == 0 && out.contains("\"physical\""), "{out}");

    // Four batches, each in its own WAL segment, each with the time just after its commit;
    // the targets are the first three (recovery can only stop at a time target once it
    // meets a commit after it, as it would on a live server: batch "d").
    let mut times = Vec::new();
    for (b, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let first = b * 10 + 1;
        src.sql(&format!(
            "INSERT INTO t SELECT g, '{name}' FROM generate_series({first}, {}) g",
            first + 9
        ))?;
        times.push(src.now()?);
        std::thread::sleep(Duration::from_millis(50));
        src.switch_and_wait()?;
    }

    for (i, t) in times.iter().take(3).enumerate() {
        let r = restore(&src, &format!("at{i}"), &["--target-time", t], &[])?;
        let got = psql_port(r.port, "SELECT count(*) || ':' || max(id) FROM t")?;
        let want = format!("{}:{}", (i + 1) * 10, (i + 1) * 10);
        ensure!(got == want, "target {t}: got {got}, want {want}");
    }

    // A target beyond the newest archived WAL is refused before anything is touched.
    let later = "2099-01-01T00:00:00Z";
    let pgdata = src.work.path().join("too-late");
    let pgdata_s = pgdata.display().to_string();
    let (code, out, err) = src.tej(&[
        "restore",
        "--repo",
        &repo,
        "--pgdata",
        &pgdata_s,
        "--target-time",
        later,
        "--yes",
    ]);
    ensure!(
        code != 0,
        "a target beyond the archive was accepted:\n{out}\n{err}"
    );
    ensure!(
        !pgdata.exists(),
        "the refused restore created {}",
        pgdata.display()
    );
    ensure!(
        format!("{out}{err}").contains("archive"),
        "the refusal should name the archive:\n{out}\n{err}"
    );

    // The drill recovers everything archived and runs the sanity query.
    let (code, out, err) = src.tej(&[
        "drill",
        "--repo",
        &repo,
        "--query",
        "SELECT count(*) FROM t",
        "-o",
        "json",
    ]);
    ensure!(code == 0, "drill exited {code}\n{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("\"drill\""))
        .context("a drill JSON line")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let data = v.get("data").unwrap_or(&v);
    ensure!(data["ok"] == true, "{line}");
    ensure!(
        data["queries"][0]["output"].as_str().map(str::trim) == Some("40"),
        "{line}"
    );
    ensure!(
        data["restore_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{line}"
    );

    // Continuity: unbroken, then a deleted segment is a gap that breaks the backup's chain.
    let (code, out, err) = src.tej(&["wal", "verify", "--repo", &repo]);
    ensure!(
        code == 0,
        "verify of an unbroken archive exited {code}\n{out}\n{err}"
    );
    let (_, list, _) = src.tej(&["wal", "list", "--repo", &repo, "-o", "json"]);
    let segments: Vec<String> = list
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v.get("data").unwrap_or(&v)["name"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|n| n.len() == 24)
        .collect();
    ensure!(segments.len() >= 4, "archived: {segments:?}");
    // The segment holding batch "c" (the last one holds "d").
    let victim = &segments[segments.len() - 2];
    let victim_obj = walk(src.repo.path())
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy() == format!("{victim}.tejwal"))
        })
        .with_context(|| format!("object of {victim}"))?;
    std::fs::remove_file(&victim_obj)?;
    let (code, out, err) = src.tej(&["wal", "verify", "--repo", &repo]);
    ensure!(code == 2, "verify with a gap exited {code}\n{out}\n{err}");
    ensure!(
        out.contains("GAP") && out.contains(victim.as_str()) && out.contains("breaks"),
        "verify should name the gap and what it breaks:\n{out}"
    );
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
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

#[test]
fn a_timeline_switch_is_followed_by_the_next_restore() -> Result<()> {
    let src = Source::start()?;
    src.sql("CREATE TABLE t (id int PRIMARY KEY, tl text NOT NULL)")?;
    let url = src.pg.url("postgres");
    let repo = src.repo();
    let (code, out, err) = src.tej(&[
        "backup",
        "create",
        "--physical",
        "--repo",
        &repo,
        "--db",
        &url,
    ]);
    ensure!(code == 0, "backup create --physical: {code}\n{out}\n{err}");
    src.sql("INSERT INTO t SELECT g, 'one' FROM generate_series(1, 5) g")?;
    src.switch_and_wait()?;
    // The original is gone (disaster): restore it, promoted, archiving into the same repository.
    let mut src = src;
    src.pg.stop()?;
    let first = restore(&src, "tl2", &["--target", "latest"], &["--archive"])?;
    ensure!(
        psql_port(first.port, "SELECT count(*) FROM t")? == "5",
        "the first restore lost rows"
    );
    let tl = psql_port(
        first.port,
        "SELECT timeline_id FROM pg_control_checkpoint()",
    )?;
    ensure!(tl == "2", "promoted onto timeline {tl}, expected 2");
    psql_port(
        first.port,
        "INSERT INTO t SELECT g, 'two' FROM generate_series(6, 8) g",
    )?;
    let seg = psql_port(first.port, "SELECT pg_walfile_name(pg_switch_wal())")?;
    wait_archived_via(|q| psql_port(first.port, q), &seg).context("timeline 2 not archived")?;
    stop(&first.pgdata)?;
    let (_, list, _) = src.tej(&["wal", "list", "--repo", &repo]);
    ensure!(
        list.contains("00000002.history"),
        "no history file archived:\n{list}"
    );

    let second = restore(&src, "again", &["--target", "latest"], &[])?;
    let got = psql_port(
        second.port,
        "SELECT count(*) || ':' || count(*) FILTER (WHERE tl = 'two') FROM t",
    )?;
    ensure!(
        got == "8:3",
        "the restore past the switch gave {got}, want 8:3"
    );
    let tl = psql_port(
        second.port,
        "SELECT timeline_id FROM pg_control_checkpoint()",
    )?;
    ensure!(tl == "3", "promoted onto timeline {tl}, expected 3");
    Ok(())
}

#[test]
fn the_archive_contract_of_wal_push_and_fetch() -> Result<()> {
    let src = Source::start()?;
    src.sql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    )?;
    let seg = src.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    src.switch_and_wait()?;
    let data = src.pg.data_dir().to_path_buf();
    let data_s = data.display().to_string();
    let src_repo = src.repo();

    // A real segment, fetched from the cluster's archive (fetch into a fresh path).
    let work = tempfile::tempdir()?;
    let original = work.path().join("orig").join(&seg);
    std::fs::create_dir_all(original.parent().context("parent")?)?;
    let orig_s = original.display().to_string();
    let (code, _, err) = src.tej(&["wal", "fetch", "--repo", &src_repo, &seg, &orig_s]);
    ensure!(
        code == 0,
        "fetch of an archived segment exited {code}: {err}"
    );
    let bytes = std::fs::read(&original)?;
    ensure!(
        bytes.len() == 16 << 20,
        "a segment is 16 MiB, got {}",
        bytes.len()
    );

    // Repositories are initialised once for the cluster (`tej wal init`); push and fetch
    // never create one.
    let url = src.pg.url("postgres");
    let init = |dir: &Path| -> Result<String> {
        std::fs::create_dir(dir)?;
        let s = dir.display().to_string();
        let (code, out, err) = tej_in(
            work.path(),
            &["wal", "init", "--repo", &s, "--db", &url],
            &[],
        );
        ensure!(code == 0, "wal init {s}: {code}\n{out}\n{err}");
        Ok(s)
    };
    let repo = work.path().join("repo");
    let repo_s = init(&repo)?;
    let push = |path: &str| {
        tej_in(
            work.path(),
            &["wal", "push", "--repo", &repo_s, "--pgdata", &data_s, path],
            &[],
        )
    };

    // Same segment twice: both 0.
    let (c1, o1, e1) = push(&orig_s);
    ensure!(c1 == 0, "first push exited {c1}: {o1}{e1}");
    let (c2, o2, e2) = push(&orig_s);
    ensure!(c2 == 0, "the same segment again exited {c2}: {o2}{e2}");
    ensure!(
        o2.contains("already"),
        "the second push should say it was already archived: {o2}"
    );

    // Different content under the same name: non-zero, the stored one untouched.
    let forged = work.path().join("forged").join(&seg);
    std::fs::create_dir_all(forged.parent().context("parent")?)?;
    let mut changed = bytes.clone();
    changed[1 << 20] ^= 0xff;
    std::fs::write(&forged, &changed)?;
    let (c3, o3, e3) = push(&forged.display().to_string());
    ensure!(
        c3 != 0,
        "different content under the same name was accepted: {o3}{e3}"
    );
    let back = work.path().join("back");
    let back_s = back.display().to_string();
    let (c4, _, e4) = tej_in(
        work.path(),
        &["wal", "fetch", "--repo", &repo_s, &seg, &back_s],
        &[],
    );
    ensure!(c4 == 0, "fetch after the refused push exited {c4}: {e4}");
    ensure!(std::fs::read(&back)? == bytes, "the stored segment changed");

    // Missing: exit 1, nothing written.
    let missing = work.path().join("missing");
    let (c5, _, e5) = tej_in(
        work.path(),
        &[
            "wal",
            "fetch",
            "--repo",
            &repo_s,
            "0000000100000000000000FE",
            &missing.display().to_string(),
        ],
        &[],
    );
    ensure!(c5 == 1, "a missing file exited {c5} (want 1): {e5}");
    ensure!(
        !missing.exists(),
        "a missing fetch wrote {}",
        missing.display()
    );

    // Storage down: above 125, nothing written.
    let closed = free_port();
    let down = work.path().join("down");
    let endpoint = format!("http://127.0.0.1:{closed}");
    let (c6, _, e6) = tej_in(
        work.path(),
        &[
            "wal",
            "fetch",
            "--repo",
            "s3://tej-down/wal",
            &seg,
            &down.display().to_string(),
        ],
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    ensure!(c6 > 125, "storage down exited {c6} (want > 125): {e6}");
    ensure!(!down.exists(), "a failed fetch wrote {}", down.display());

    // A configuration error is fatal too, never "not found".
    let (c7, _, _) = tej_in(
        work.path(),
        &[
            "--config",
            "/nonexistent/tej.toml",
            "wal",
            "fetch",
            "--repo",
            &repo_s,
            &seg,
            &back_s,
        ],
        &[],
    );
    ensure!(c7 > 125, "a missing configuration exited {c7} (want > 125)");

    // Killed mid-push at several points: never a partial object; the next push succeeds.
    let killed_repo = work.path().join("killed");
    let killed_s = init(&killed_repo)?;
    for delay_ms in [0u64, 3, 10, 25, 60, 120] {
        let mut child = Command::new(TEJ)
            .args([
                "wal", "push", "--repo", &killed_s, "--pgdata", &data_s, &orig_s,
            ])
            .env_remove("TEJ_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait()?;
        let dest = work.path().join(format!("after-kill-{delay_ms}"));
        let (c, _, e) = tej_in(
            work.path(),
            &[
                "wal",
                "fetch",
                "--repo",
                &killed_s,
                &seg,
                &dest.display().to_string(),
            ],
            &[],
        );
        match c {
            0 => ensure!(
                std::fs::read(&dest)? == bytes,
                "a killed push left a different object"
            ),
            1 => ensure!(!dest.exists(), "a not-found fetch wrote a file"),
            _ => bail!("after a push killed at {delay_ms} ms, fetch exited {c}: {e}"),
        }
    }
    let (c8, o8, e8) = tej_in(
        work.path(),
        &[
            "wal", "push", "--repo", &killed_s, "--pgdata", &data_s, &orig_s,
        ],
        &[],
    );
    ensure!(c8 == 0, "push after the kills exited {c8}: {o8}{e8}");
    Ok(())
}

#[test]
fn pitr_with_an_s3_repository_archives_restores_and_drills() -> Result<()> {
    let s3 = tej_testkit::S3Server::start()?;
    let bucket = s3.unique_bucket("tejcli-pitr")?;
    let repo = format!("s3://{bucket}/cluster");
    let env = [
        ("AWS_ENDPOINT_URL", s3.endpoint()),
        ("AWS_REGION", s3.region().to_string()),
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_string()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
    ];
    // The server's archive_command carries the S3 settings itself.
    let prefix: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(format!("env {prefix}{TEJ} wal push --repo {repo} %p")),
        extra_conf: vec!["autovacuum = off".into()],
        preload_pg_stat_statements: false,
        ..Default::default()
    })?;
    let work = postgres_dir("tejcli-s3-")?;
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tej = |args: &[&str]| tej_in(work.path(), args, &env_ref);
    let sql = |q: &str| -> Result<String> { Ok(pg.psql("postgres", q)?.trim().to_string()) };

    sql("CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL)")?;
    let url = pg.url("postgres");
    let (code, out, err) = tej(&[
        "backup",
        "create",
        "--physical",
        "--repo",
        &repo,
        "--db",
        &url,
    ]);
    ensure!(
        code == 0,
        "backup create --physical to S3: {code}\n{out}\n{err}"
    );
    sql("INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 100) g")?;
    let seg = sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    wait_archived(&pg, &seg)?;

    let (code, out, err) = tej(&["wal", "verify", "--repo", &repo]);
    ensure!(code == 0, "wal verify on S3: {code}\n{out}\n{err}");
    ensure!(out.contains("PITR window: from"), "{out}");

    let pgdata = work.path().join("restored");
    let port = free_port();
    let restored = Restored {
        pgdata: pgdata.clone(),
        port,
    };
    let (pgdata_s, port_s) = (pgdata.display().to_string(), port.to_string());
    let (code, out, err) = tej(&[
        "restore",
        "--repo",
        &repo,
        "--pgdata",
        &pgdata_s,
        "--target",
        "latest",
        "--start",
        "--port",
        &port_s,
        "--timeout",
        "120",
        "--yes",
    ]);
    ensure!(code == 0, "restore from S3: {code}\n{out}\n{err}");
    ensure!(psql_port(restored.port, "SELECT count(*) FROM users")? == "100");
    drop(restored);

    let (code, out, err) = tej(&[
        "drill",
        "--repo",
        &repo,
        "--query",
        "SELECT count(*) FROM users",
    ]);
    ensure!(code == 0, "drill from S3: {code}\n{out}\n{err}");
    ensure!(
        out.contains("RTO") && out.contains("RPO") && out.contains(": 100"),
        "{out}"
    );
    Ok(())
}

/// Archived segment names of the repository, oldest first.
fn archived_segments(src: &Source) -> Result<Vec<String>> {
    let (code, list, err) = src.tej(&["wal", "list", "--repo", &src.repo(), "-o", "json"]);
    ensure!(code == 0, "wal list: {err}");
    Ok(list
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v.get("data").unwrap_or(&v)["name"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|n| n.len() == 24)
        .collect())
}

/// `tej backup create --physical --archive-timeout 5` against a cluster whose
/// `archive_command` is `command`: its stderr, once it failed (it must not hang).
fn failing_backup(repo: &Path, work: &Path, command: &str) -> Result<String> {
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        archive_command: Some(command.to_string()),
        extra_conf: vec!["autovacuum = off".into()],
        preload_pg_stat_statements: false,
        ..Default::default()
    })?;
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    )?;
    let url = pg.url("postgres");
    let repo_s = repo.display().to_string();
    let mut child = Command::new(TEJ)
        .args([
            "backup",
            "create",
            "--physical",
            "--repo",
            &repo_s,
            "--db",
            &url,
            "--archive-timeout",
            "5",
        ])
        .current_dir(work)
        .env_remove("TEJ_CONFIG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // A hang detector, far above the 5 s asked for: the old behaviour waited forever.
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("tej backup create --physical --archive-timeout 5 still ran after 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    ensure!(
        !out.status.success(),
        "a base backup with archive_command {command:?} succeeded:\n{stdout}\n{stderr}"
    );
    ensure!(
        stderr.contains("not archived") && stderr.contains("within 5s"),
        "the error names the archive timeout:\n{stderr}"
    );
    let (code, list, err) = tej_in(
        work,
        &["backup", "list", "--repo", &repo_s, "-o", "json"],
        &[],
    );
    ensure!(code == 0, "backup list: {err}");
    ensure!(
        !list.contains("\"physical\""),
        "the failed base backup is listed:\n{list}"
    );
    Ok(stderr)
}

#[test]
fn a_failing_archive_command_fails_the_base_backup_within_the_archive_timeout() -> Result<()> {
    let repo = postgres_dir("tejcli-noarch-repo-")?;
    let repo2 = postgres_dir("tejcli-noarch-repo-")?;
    let work = postgres_dir("tejcli-noarch-")?;
    // archive_command fails (exit 1): pg_stat_archiver records it, the error quotes it.
    let err = failing_backup(repo.path(), work.path(), "false")?;
    ensure!(
        err.contains("pg_stat_archiver: last failure archiving 0000000100000000000000"),
        "the error quotes pg_stat_archiver's last failure:\n{err}"
    );
    // The server's OS user cannot execute the binary archive_command names (exit 126):
    // the archiver exits before recording anything; the error says so.
    let noexec = work.path().join("tej-not-executable");
    std::fs::write(&noexec, "#!/bin/sh\nexit 0\n")?;
    let st = Command::new("chmod").arg("0644").arg(&noexec).status()?;
    ensure!(st.success());
    let command = format!(
        "{} wal push --repo {} %p",
        noexec.display(),
        repo2.path().display()
    );
    let err = failing_backup(repo2.path(), work.path(), &command)?;
    ensure!(
        err.contains("pg_stat_archiver: no failure recorded") && err.contains("exit 126"),
        "the error explains an archiver that records nothing:\n{err}"
    );
    Ok(())
}

#[test]
fn a_wal_gap_refuses_a_restore_to_latest_before_touching_anything() -> Result<()> {
    let src = Source::start()?;
    src.sql("CREATE TABLE t (id int PRIMARY KEY)")?;
    let url = src.pg.url("postgres");
    let repo = src.repo();
    let (code, out, err) = src.tej(&[
        "backup",
        "create",
        "--physical",
        "--repo",
        &repo,
        "--db",
        &url,
    ]);
    ensure!(code == 0, "backup create --physical: {code}\n{out}\n{err}");
    for b in 0..3 {
        src.sql(&format!(
            "INSERT INTO t SELECT g FROM generate_series({}, {}) g",
            b * 10 + 1,
            b * 10 + 10
        ))?;
        src.switch_and_wait()?;
    }
    let segments = archived_segments(&src)?;
    ensure!(segments.len() >= 3, "archived: {segments:?}");
    let victim = segments[segments.len() - 2].clone();
    let victim_obj = walk(src.repo.path())
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy() == format!("{victim}.tejwal"))
        })
        .with_context(|| format!("object of {victim}"))?;
    std::fs::remove_file(&victim_obj)?;

    let pgdata = src.work.path().join("gap");
    let pgdata_s = pgdata.display().to_string();
    let (code, out, err) = src.tej(&[
        "restore", "--repo", &repo, "--pgdata", &pgdata_s, "--target", "latest", "--yes",
    ]);
    let all = format!("{out}{err}");
    ensure!(
        code != 0,
        "a restore to latest across a gap was accepted:\n{all}"
    );
    ensure!(
        !pgdata.exists(),
        "the refused restore created {}",
        pgdata.display()
    );
    ensure!(
        all.contains(&victim) && all.contains("would stop at"),
        "the refusal names the gap and where replay would stop:\n{all}"
    );

    // The drill is a restore to latest too: it fails on the gap instead of promoting
    // early and reporting a recovered cluster.
    let (code, out, err) = src.tej(&[
        "drill",
        "--repo",
        &repo,
        "--query",
        "SELECT count(*) FROM t",
    ]);
    let all = format!("{out}{err}");
    ensure!(code != 0, "a drill across a gap passed:\n{all}");
    ensure!(
        all.contains(&victim) && all.contains("would stop at"),
        "the drill's failure names the gap:\n{all}"
    );
    Ok(())
}

#[test]
fn an_in_place_restore_keeps_the_old_data_directory_and_its_archive_settings() -> Result<()> {
    let src = Source::start()?;
    src.sql("CREATE TABLE t (id int PRIMARY KEY)")?;
    let url = src.pg.url("postgres");
    let repo = src.repo();
    let (code, out, err) = src.tej(&[
        "backup",
        "create",
        "--physical",
        "--repo",
        &repo,
        "--db",
        &url,
    ]);
    ensure!(code == 0, "backup create --physical: {code}\n{out}\n{err}");
    src.sql("INSERT INTO t SELECT g FROM generate_series(1, 5) g")?;
    src.switch_and_wait()?;
    let mut src = src;
    src.pg.stop()?;

    // The "production" data directory: a restored copy that archives into the repository
    // with its own archive_command, then stopped, with WAL nobody archived in pg_wal.
    let live = restore(&src, "live", &["--target", "latest"], &["--archive"])?;
    let old_command = format!("{TEJ} wal push --repo {repo} %p # old data directory");
    psql_port(
        live.port,
        &format!("ALTER SYSTEM SET archive_command = '{old_command}'"),
    )?;
    stop(&live.pgdata)?;
    let unarchived = live.pgdata.join("pg_wal/000000020000000000000099");
    std::fs::write(&unarchived, b"WAL never archived")?;

    // In place, with the repository given relative to the working directory.
    let rel_repo = format!(
        "../{}",
        src.repo
            .path()
            .file_name()
            .context("repo name")?
            .to_string_lossy()
    );
    let port = free_port();
    let (pgdata_s, port_s) = (live.pgdata.display().to_string(), port.to_string());
    let restored = Restored {
        pgdata: live.pgdata.clone(),
        port,
    };
    let (code, out, err) = src.tej(&[
        "restore",
        "--repo",
        &rel_repo,
        "--pgdata",
        &pgdata_s,
        "--target",
        "latest",
        "--start",
        "--port",
        &port_s,
        "--timeout",
        "120",
        "--yes",
    ]);
    ensure!(code == 0, "in-place restore exited {code}\n{out}\n{err}");
    ensure!(
        psql_port(restored.port, "SELECT count(*) FROM t")? == "5",
        "the in-place restore lost rows"
    );

    // The old data directory is kept, renamed, its path printed, unarchived WAL included.
    let name = live
        .pgdata
        .file_name()
        .context("pgdata name")?
        .to_string_lossy()
        .into_owned();
    let kept: Vec<PathBuf> = std::fs::read_dir(src.work.path())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{name}.")) && n.contains("replaced")
                })
        })
        .collect();
    ensure!(
        kept.len() == 1,
        "kept old data directories: {kept:?}\n{out}"
    );
    let kept = &kept[0];
    ensure!(
        out.contains(&kept.display().to_string()),
        "the kept directory's path is printed:\n{out}"
    );
    ensure!(
        std::fs::read(kept.join("pg_wal/000000020000000000000099"))? == b"WAL never archived",
        "the old pg_wal was not kept"
    );

    // The archive settings the restore switched off are back.
    ensure!(
        psql_port(restored.port, "SHOW archive_mode")? == "on",
        "archive_mode is not restored"
    );
    ensure!(
        psql_port(restored.port, "SHOW archive_command")? == old_command,
        "archive_command is not the old data directory's"
    );
    // The relative --repo went in absolute.
    let auto = std::fs::read_to_string(live.pgdata.join("postgresql.auto.conf"))?;
    let restore_line = auto
        .lines()
        .find(|l| l.starts_with("restore_command"))
        .context("restore_command written")?;
    ensure!(
        restore_line.contains(&format!("--repo {repo} ")) && !restore_line.contains("../"),
        "restore_command with a relative repository: {restore_line}"
    );
    drop(restored);
    drop(live);
    Ok(())
}

/// The pids of the prefetch workers that `tej wal fetch` started for `dest`.
fn prefetch_workers(dest: &Path) -> Vec<u32> {
    let dest = dest.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.iter().any(|a| a == "--prefetch-worker") && args.contains(&dest)).then_some(pid)
        })
        .collect()
}

/// Waits (60 s at most) until `done` holds.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn wal_fetch_prefetches_in_a_background_worker_that_survives_being_killed() -> Result<()> {
    let src = Source::start()?;
    let mut segs = Vec::new();
    for i in 0..6 {
        src.sql(&format!(
            "CREATE TABLE t{i} AS SELECT g FROM generate_series(1, 1000) g"
        ))?;
        segs.push(src.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?);
        src.switch_and_wait()?;
    }
    let repo = src.repo();
    let pg_wal = src.work.path().join("restore/pg_wal");
    std::fs::create_dir_all(&pg_wal)?;
    let dest = pg_wal.join("RECOVERYXLOG");
    let spool = pg_wal.join("tej-prefetch");
    let fetch_with = |prefetch: &str, seg: &str, to: &Path| -> Result<Vec<u8>> {
        let to_s = to.display().to_string();
        let args = [
            "wal",
            "fetch",
            "--repo",
            &repo,
            "--prefetch",
            prefetch,
            seg,
            &to_s,
        ];
        let (code, _, err) = src.tej(&args);
        ensure!(
            code == 0,
            "fetch of {seg} (prefetch {prefetch}) exited {code}: {err}"
        );
        Ok(std::fs::read(to)?)
    };
    // Each segment's bytes must be those of a fetch without prefetch.
    let fetch = |seg: &str| -> Result<()> {
        let plain = fetch_with("0", seg, &src.work.path().join(format!("plain-{seg}")))?;
        ensure!(
            fetch_with("3", seg, &dest)? == plain,
            "{seg} restored with other bytes"
        );
        Ok(())
    };
    let spooled = |seg: &str| spool.join(format!("{seg}.sha256")).exists();

    // The first call returns with its segment; a worker it started brings the next three.
    fetch(&segs[0])?;
    wait_for("the worker to spool segments 1 to 3", || {
        segs[1..4].iter().all(|s| spooled(s))
    })?;
    let workers = prefetch_workers(&dest);
    ensure!(
        workers.len() == 1,
        "one worker per spool, found {workers:?}"
    );

    // SIGKILL it, leaving a half-written temporary file and a spooled segment whose bytes
    // no longer match its record: neither is ever handed to PostgreSQL.
    let status = Command::new("kill")
        .args(["-KILL", &workers[0].to_string()])
        .status()?;
    ensure!(status.success(), "kill the worker");
    wait_for("the killed worker to be gone", || {
        prefetch_workers(&dest).is_empty()
    })?;
    let good = std::fs::read(spool.join(&segs[1]))?;
    std::fs::write(
        spool.join(format!(".{}.tej-tmp.99999.0", segs[2])),
        &good[..1 << 20],
    )?;
    let mut tampered = good.clone();
    tampered[1 << 19] ^= 0xff;
    std::fs::write(spool.join(&segs[1]), &tampered)?;
    for seg in &segs[1..3] {
        fetch(seg)?;
    }
    ensure!(
        prefetch_workers(&dest).len() == 1,
        "the next call started one new worker: {:?}",
        prefetch_workers(&dest)
    );
    for seg in &segs[3..] {
        fetch(seg)?;
    }
    // The archive ends after the last segment: the worker stops.
    wait_for("the worker to stop at the end of the archive", || {
        prefetch_workers(&dest).is_empty()
    })?;

    // Recovery ends (a timeline history the archive does not hold): exit 1, the spool is
    // removed.
    let history = pg_wal.join("RECOVERYHISTORY").display().to_string();
    let (code, _, err) = src.tej(&[
        "wal",
        "fetch",
        "--repo",
        &repo,
        "00000002.history",
        &history,
    ]);
    ensure!(code == 1, "a missing history file exited {code}: {err}");
    wait_for("the worker to stop with the recovery", || {
        prefetch_workers(&dest).is_empty()
    })?;
    ensure!(!spool.exists(), "the spool outlived the recovery");
    let left: Vec<_> = std::fs::read_dir(&pg_wal)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("tej-prefetch"))
        .collect();
    ensure!(left.is_empty(), "left in pg_wal: {left:?}");
    Ok(())
}
