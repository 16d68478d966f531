//! Benchmark: per-segment `archive_command` latency of the released `tej wal push --repo R
//! %p` (a new process per segment, exactly as PostgreSQL runs it) against `pgbackrest
//! archive-push` (`compress-type=zst`, `compress-level=3`, synchronous), both run as the
//! `postgres` user in the cluster's data directory on the same real 16 MiB segments of a
//! pgbench-loaded PostgreSQL 15 cluster, interleaved segment by segment.
//!
//! ```text
//! cargo build --release -p tej-cli
//! TEJ_BIN=target/release/tej cargo run --release -p tej-backup --example bench_wal_push [-- SEGMENTS]
//! ```
//!
//! `bench_wal` measures the library push through the `wal_archive_cmd` example; this one
//! measures the `tej` binary an operator installs. Without `TEJ_BIN`, `wal_archive_cmd`
//! (built beside this example) stands in for it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use tej_testkit::run_as_postgres;

/// Runs `c` as postgres in `dir`; its wall time.
#[path = "common/wal_segments.rs"]
mod wal_segments;
use wal_segments::{chmod_777, median, pgbench_segments};

fn timed(mut c: Command, dir: &Path, what: &str) -> Result<f64> {
    c.current_dir(dir);
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

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let (bin, is_tej): (PathBuf, bool) = match std::env::var("TEJ_BIN") {
        Ok(p) => (
            std::fs::canonicalize(&p).with_context(|| format!("TEJ_BIN {p}"))?,
            true,
        ),
        Err(_) => {
            let exe = std::env::current_exe()?;
            let b = exe
                .parent()
                .context("no examples dir")?
                .join("wal_archive_cmd");
            ensure!(
                b.is_file(),
                "set TEJ_BIN to the tej binary, or build the wal_archive_cmd example"
            );
            (b, false)
        }
    };
    let (pg, segs) = pgbench_segments(n)?;
    let port = pg.port();

    let work = tempfile::tempdir()?;
    chmod_777(work.path())?;
    let seg_dir = work.path().join("segments");
    std::fs::create_dir(&seg_dir)?;
    chmod_777(&seg_dir)?;
    for s in &segs {
        std::fs::copy(pg.data_dir().join("pg_wal").join(s), seg_dir.join(s))?;
        chmod_777(&seg_dir.join(s))?;
    }
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
            "[global]\nrepo1-path={r}/repo\nlog-path={r}/log\nlock-path={r}/lock\nspool-path={r}/spool\n\
             compress-type=zst\ncompress-level=3\nlog-level-console=warn\nlog-level-file=off\n\n\
             [bench]\npg1-path={data}\npg1-port={port}\npg1-socket-path={sock}\n",
            r = br.display(),
            data = pg.data_dir().display(),
            sock = pg.socket_dir().display(),
        ),
    )?;
    chmod_777(&conf)?;
    let mut c = Command::new("pgbackrest");
    c.arg(format!("--config={}", conf.display()))
        .args(["--stanza=bench", "stanza-create"]);
    timed(c, pg.data_dir(), "pgbackrest stanza-create")?;

    let tej_repo = work.path().join("tej-repo");
    std::fs::create_dir(&tej_repo)?;
    chmod_777(&tej_repo)?;
    let (mut tej, mut brest) = (Vec::new(), Vec::new());
    for s in &segs {
        let path = seg_dir.join(s);
        let mut c = Command::new(&bin);
        if is_tej {
            c.args(["wal", "push", "--repo"]).arg(&tej_repo).arg(&path);
        } else {
            c.arg("push")
                .arg(&tej_repo)
                .arg(&path)
                .args(["--pgdata", "."]);
        }
        tej.push(timed(c, pg.data_dir(), "tej wal push")?);
        let mut c = Command::new("pgbackrest");
        c.arg(format!("--config={}", conf.display()))
            .args(["--stanza=bench", "archive-push"])
            .arg(&path);
        brest.push(timed(c, pg.data_dir(), "pgbackrest archive-push")?);
    }
    let stored: u64 = walk_size(&tej_repo);
    let br_stored: u64 = walk_size(&br.join("repo/archive"));
    let (mt, mb) = (median(&mut tej), median(&mut brest));
    let who = if is_tej {
        "tej wal push"
    } else {
        "wal_archive_cmd push"
    };
    println!("WAL push, {n} real 16 MiB pgbench segments, a new process per segment, interleaved:");
    println!("| | {who} | pgbackrest archive-push (zst 3) | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| per-segment latency, median | {:.1} ms | {:.1} ms | {:.2} | <= 1.00 |",
        mt * 1e3,
        mb * 1e3,
        mt / mb
    );
    println!(
        "| stored for {n} segments | {:.1} MiB | {:.1} MiB | {:.2} | |",
        stored as f64 / 1048576.0,
        br_stored as f64 / 1048576.0,
        stored as f64 / br_stored.max(1) as f64
    );
    println!(
        "xtask-summary: {}",
        serde_json::json!({"bench": "push", "tool": who, "tej_ms": mt * 1e3, "pgbackrest_ms": mb * 1e3,
            "ratio": mt / mb, "segments": n})
    );
    Ok(())
}

fn walk_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
