//! Benchmark: per-segment `archive_command` latency of tej (`WalArchive::push` through the
//! `wal_archive_cmd` example, process start included) against `pgbackrest archive-push`,
//! both run as the `postgres` user on the same real 16 MiB segments of a pgbench-loaded
//! PostgreSQL 15 cluster, interleaved segment by segment: tej at its default level
//! (zstd 1) and at level 3, pgBackRest at `compress-type=zst`, `compress-level=3`. Also
//! prints tej's in-process push latency (no process start).
//!
//! Run: `cargo run --release -p tej-backup --example bench_wal [-- SEGMENTS]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use tej_backup::{PushOptions, Repository, WalArchive, system_identifier_from_pgdata};
use tej_testkit::run_as_postgres;

/// The release `wal_archive_cmd` beside this binary, built when missing or older.
#[path = "common/wal_segments.rs"]
mod wal_segments;
use wal_segments::{chmod_777, median, pgbench_segments};

fn cmd_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no examples dir")?;
    let bin = dir.join("wal_archive_cmd");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if mtime(&bin).is_some_and(|b| mtime(&exe).is_some_and(|e| b >= e)) {
        return Ok(bin);
    }
    let profile_dir = dir.parent().context("no profile dir")?;
    let target = profile_dir.parent().context("no target dir")?;
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args([
        "build",
        "-q",
        "-p",
        "tej-backup",
        "--example",
        "wal_archive_cmd",
    ])
    .arg("--manifest-path")
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", target);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        c.arg("--release");
    }
    ensure!(c.status()?.success(), "building wal_archive_cmd failed");
    Ok(bin)
}

fn timed(mut c: Command, what: &str) -> Result<f64> {
    run_as_postgres(&mut c);
    let t = Instant::now();
    let out = c.output().with_context(|| format!("run {what}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(secs)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let bin = cmd_bin()?;
    let (pg, segs) = pgbench_segments(n)?;
    let port = pg.port();

    let work = tempfile::tempdir()?;
    chmod_777(work.path())?;
    let seg_dir = work.path().join("segments");
    std::fs::create_dir(&seg_dir)?;
    chmod_777(&seg_dir)?;
    let mut raw_bytes = 0u64;
    for s in &segs {
        std::fs::copy(pg.data_dir().join("pg_wal").join(s), seg_dir.join(s))?;
        chmod_777(&seg_dir.join(s))?;
        raw_bytes += std::fs::metadata(seg_dir.join(s))?.len();
    }
    // pgBackRest: a stanza in the temp dir, zst level 3, synchronous archive-push.
    let br = work.path().join("pgbackrest");
    for d in ["repo", "log", "lock", "spool"] {
        std::fs::create_dir_all(br.join(d))?;
        chmod_777(&br.join(d))?;
    }
    chmod_777(&br)?;
    let conf = br.join("pgbackrest.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={r}/repo\nlog-path={r}/log\nlock-path={r}/lock\nspool-path={r}/spool\ncompress-type=zst\ncompress-level=3\nlog-level-console=warn\nlog-level-file=off\nstart-fast=y\n\n[bench]\npg1-path={data}\npg1-port={port}\npg1-socket-path={sock}\n",
            r = br.display(),
            data = pg.data_dir().display(),
            sock = pg.socket_dir().display(),
        ),
    )?;
    chmod_777(&conf)?;
    let mut c = Command::new("pgbackrest");
    c.arg(format!("--config={}", conf.display()))
        .args(["--stanza=bench", "stanza-create"]);
    timed(c, "pgbackrest stanza-create")?;

    let tej_repo = work.path().join("tej-repo");
    std::fs::create_dir(&tej_repo)?;
    chmod_777(&tej_repo)?;
    let tej_repo1 = work.path().join("tej-repo-level3");
    std::fs::create_dir(&tej_repo1)?;
    chmod_777(&tej_repo1)?;
    let (mut tej, mut brest, mut tej1) = (Vec::new(), Vec::new(), Vec::new());
    for s in &segs {
        let path = seg_dir.join(s);
        let mut c = Command::new(&bin);
        c.arg("push")
            .arg(&tej_repo)
            .arg(&path)
            .arg("--pgdata")
            .arg(pg.data_dir());
        tej.push(timed(c, "wal_archive_cmd push")?);
        let mut c = Command::new("pgbackrest");
        c.arg(format!("--config={}", conf.display()))
            .args(["--stanza=bench", "archive-push"])
            .arg(&path);
        brest.push(timed(c, "pgbackrest archive-push")?);
        let mut c = Command::new(&bin);
        c.arg("push")
            .arg(&tej_repo1)
            .arg(&path)
            .arg("--pgdata")
            .arg(pg.data_dir());
        c.args(["--level", "3"]);
        tej1.push(timed(c, "wal_archive_cmd push --level 3")?);
    }
    // In-process: the library call alone, into a fresh repository.
    let lib_repo = work.path().join("lib-repo");
    let wal = WalArchive::new(Repository::open(lib_repo.to_str().context("utf-8")?).await?);
    let opts = PushOptions {
        system_identifier: Some(system_identifier_from_pgdata(pg.data_dir())?),
        ..PushOptions::default()
    };
    let mut lib = Vec::new();
    let mut stored = 0u64;
    for s in &segs {
        let t = Instant::now();
        let r = wal.push(&seg_dir.join(s), &opts).await?;
        lib.push(t.elapsed().as_secs_f64());
        stored += r.stored_size;
    }
    let (mt, mb, ml) = (median(&mut tej), median(&mut brest), median(&mut lib));
    let mt1 = median(&mut tej1);
    println!(
        "WAL push, {n} real 16 MiB pgbench segments ({:.0} MiB raw, tej stored {:.1} MiB, ratio {:.2}):",
        raw_bytes as f64 / 1048576.0,
        stored as f64 / 1048576.0,
        raw_bytes as f64 / stored.max(1) as f64
    );
    println!(
        "  tej wal push, zstd 1 (process per segment)    median {:7.1} ms",
        mt * 1e3
    );
    println!(
        "  tej wal push, zstd 3 (process per segment)    median {:7.1} ms",
        mt1 * 1e3
    );
    println!(
        "  pgbackrest archive-push, zst 3                median {:7.1} ms",
        mb * 1e3
    );
    println!(
        "  tej WalArchive::push, zstd 1 (in process)     median {:7.1} ms",
        ml * 1e3
    );
    println!(
        "  ratio tej/pgbackrest (zstd 1 vs zst 3)        {:.2}",
        mt / mb
    );
    println!(
        "  ratio tej/pgbackrest (zstd 3 vs zst 3)        {:.2}",
        mt1 / mb
    );
    Ok(())
}
