//! Benchmark: the archive side of recovery — `restore_command` run once per segment, in
//! order, a new process each time, as PostgreSQL runs it during replay — for `tej wal fetch`
//! with its prefetch (`--prefetch 8`, the default) and without (`--prefetch 0`), against
//! `pgbackrest archive-get` synchronous and asynchronous (`archive-async=y`, process-max 2).
//! All run as the `postgres` user on the same real 16 MiB segments of a pgbench-loaded
//! PostgreSQL 15 cluster, pushed into each tool's repository (zst 3), rounds interleaved.
//!
//! ```text
//! cargo build --release -p tej-cli
//! TEJ_BIN=target/release/tej cargo run --release -p tej-backup --example bench_wal_fetch [-- SEGMENTS [ROUNDS]]
//! ```
//!
//! The figure is the time recovery waits on the archive for SEGMENTS segments; replay itself
//! costs the same whichever tool fetched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use tej_testkit::run_as_postgres;

#[path = "common/wal_segments.rs"]
mod wal_segments;
use wal_segments::{chmod_777, median, pgbench_segments};

/// Runs `c` as postgres in `dir`; fails on a non-zero exit.
fn run(mut c: Command, dir: &Path, what: &str) -> Result<()> {
    c.current_dir(dir);
    run_as_postgres(&mut c);
    let out = c.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A fresh `pg_wal`-like directory (owned by everyone) under `work`.
fn fresh_dir(work: &Path, name: &str) -> Result<PathBuf> {
    let d = work.join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d)?;
    }
    std::fs::create_dir_all(d.join("pg_wal"))?;
    chmod_777(&d)?;
    chmod_777(&d.join("pg_wal"))?;
    Ok(d)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let bin = PathBuf::from(std::env::var("TEJ_BIN").context("set TEJ_BIN to the tej binary")?);
    let bin = std::fs::canonicalize(&bin).with_context(|| format!("TEJ_BIN {}", bin.display()))?;
    // Run as postgres: a copy every user can execute (the checkout may sit in a 0700 home).
    let reachable = tej_testkit::Reachable::file(&bin)?;
    let bin = reachable.path().to_path_buf();
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
             compress-type=zst\ncompress-level=3\nlog-level-console=warn\nlog-level-file=off\n\
             process-max=2\n\n\
             [bench]\npg1-path={data}\npg1-port={port}\npg1-socket-path={sock}\n",
            r = br.display(),
            data = pg.data_dir().display(),
            sock = pg.socket_dir().display(),
        ),
    )?;
    chmod_777(&conf)?;
    let brc = |args: &[&str]| {
        let mut c = Command::new("pgbackrest");
        c.arg(format!("--config={}", conf.display()))
            .arg("--stanza=bench")
            .args(args);
        c
    };
    run(
        brc(&["stanza-create"]),
        pg.data_dir(),
        "pgbackrest stanza-create",
    )?;

    let tej_repo = work.path().join("tej-repo");
    std::fs::create_dir(&tej_repo)?;
    chmod_777(&tej_repo)?;
    // Push refuses a repository without its archive marker: initialise it as an operator does.
    let mut c = Command::new(&bin);
    c.args(["wal", "init", "--repo"])
        .arg(&tej_repo)
        .args(["--db", &pg.url("postgres")]);
    run(c, pg.data_dir(), "tej wal init")?;
    for s in &segs {
        let path = seg_dir.join(s);
        let mut c = Command::new(&bin);
        c.args(["wal", "push", "--repo"]).arg(&tej_repo).arg(&path);
        run(c, pg.data_dir(), "tej wal push")?;
        let mut c = brc(&["archive-push"]);
        c.arg(&path);
        run(c, pg.data_dir(), "pgbackrest archive-push")?;
    }

    let modes = [
        "tej --prefetch 8",
        "tej --prefetch 0",
        "pgbackrest archive-get",
        "pgbackrest archive-get --archive-async",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for (m, mode) in modes.iter().enumerate() {
            let dir = fresh_dir(work.path(), &format!("restore-{round}-{m}"))?;
            // pgbackrest's async spool is per stanza: empty it so every run starts cold.
            let spool = br.join("spool");
            std::fs::remove_dir_all(&spool)?;
            std::fs::create_dir(&spool)?;
            chmod_777(&spool)?;
            // pgbackrest reads the data directory's pg_control (the system identifier).
            std::fs::create_dir(dir.join("global"))?;
            std::fs::copy(
                pg.data_dir().join("global/pg_control"),
                dir.join("global/pg_control"),
            )?;
            chmod_777(&dir.join("global"))?;
            chmod_777(&dir.join("global/pg_control"))?;
            let pg1 = format!("--pg1-path={}", dir.display());
            let t = Instant::now();
            for s in &segs {
                let dest = "pg_wal/RECOVERYXLOG";
                let c = match m {
                    0 | 1 => {
                        let mut c = Command::new(&bin);
                        c.args(["wal", "fetch", "--repo"]).arg(&tej_repo).args([
                            s.as_str(),
                            dest,
                            "--prefetch",
                            if m == 0 { "8" } else { "0" },
                        ]);
                        c
                    }
                    // archive-get runs in the data directory it restores into, as under
                    // recovery: that directory is pg1-path for this run.
                    2 => brc(&[&pg1, "archive-get", s, dest]),
                    _ => brc(&[&pg1, "--archive-async", "archive-get", s, dest]),
                };
                run(c, &dir, mode)?;
                let got = std::fs::read(dir.join(dest))?;
                ensure!(
                    got == std::fs::read(seg_dir.join(s))?,
                    "{mode} restored {s} with other bytes"
                );
                std::fs::remove_file(dir.join(dest))?;
            }
            times[m].push(t.elapsed().as_secs_f64());
        }
    }
    let med: Vec<f64> = times.iter_mut().map(|v| median(v)).collect();
    println!(
        "restore_command for {n} real 16 MiB pgbench segments in order, a new process each, \
         median of {rounds} interleaved rounds:"
    );
    println!("| | total | per segment | vs tej --prefetch 0 |");
    println!("|---|---|---|---|");
    for (m, mode) in modes.iter().enumerate() {
        println!(
            "| {mode} | {:.2} s | {:.1} ms | {:.2} |",
            med[m],
            med[m] * 1e3 / n as f64,
            med[m] / med[1]
        );
    }
    println!(
        "xtask-summary: {}",
        serde_json::json!({"bench": "wal_fetch", "segments": n, "rounds": rounds,
            "prefetch_s": med[0], "no_prefetch_s": med[1], "pgbackrest_s": med[2],
            "pgbackrest_async_s": med[3], "ratio": med[0] / med[1],
            "ratio_vs_pgbackrest_async": med[0] / med[3]})
    );
    Ok(())
}
