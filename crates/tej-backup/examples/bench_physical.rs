//! Benchmark: tej's physical base backup and restore against pgBackRest's
//! (`pgbackrest --type=full backup` with `compress-type=zst`, `compress-level=3`,
//! `process-max=2`, `start-fast=y`, and `pgbackrest restore`) on the same generated
//! ~500 MB text-heavy database as `bench_backup` (same generator).
//!
//! `cargo run --release -p tej-backup --example bench_physical` (`TEJ_BENCH_MB=100` for
//! a smaller database). Runs alternate (tej, pgBackRest) three times; medians are
//! compared. Both archive WAL through `pgbackrest archive-push`, and both wait for the
//! backup's last segment to be archived. tej runs in a child process of this binary, and
//! both are run under `/usr/bin/time` so peak RSS is measured the same way.

use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tej_backup::{
    DbTarget, PhysicalBackupOptions, PhysicalRestoreOptions, Repository, create_physical_backup,
    restore_physical_backup,
};
use tej_core::SystemClock;
use tej_testkit::{PgCluster, PgClusterOptions, run_as_postgres};

#[path = "common/bench_data.rs"]
mod bench_data;
use bench_data::{generate, median, mib};

fn postgres_ids() -> Option<(u32, u32)> {
    let u = nix::unistd::User::from_name("postgres").ok().flatten()?;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

fn chown_postgres(p: &Path) -> Result<()> {
    if let Some((uid, gid)) = postgres_ids()
        && nix::unistd::geteuid().is_root()
    {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
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

struct Timed {
    wall: f64,
    rss_kib: u64,
    /// User + system CPU seconds of the process and the children it waited for.
    cpu: f64,
    stdout: String,
}

/// Runs `cmd` under `/usr/bin/time -f %M` and returns wall time and peak RSS.
fn timed(cmd: Command, what: &str, scratch: &Path, as_postgres: bool) -> Result<Timed> {
    let rss_file = scratch.join("rss.txt");
    let _ = std::fs::remove_file(&rss_file);
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(&rss_file)
        .arg(program)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        wrapped.current_dir(d);
    }
    if as_postgres {
        run_as_postgres(&mut wrapped);
    }
    drop(cmd);
    Ok({
        let t = Instant::now();
        let out = wrapped.stderr(Stdio::piped()).output()?;
        let wall = t.elapsed().as_secs_f64();
        ensure!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = std::fs::read_to_string(&rss_file)
            .ok()
            .and_then(|s| s.lines().last().map(str::to_string))
            .unwrap_or_default();
        let f: Vec<f64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        Timed {
            wall,
            rss_kib: f.first().copied().unwrap_or(0.0) as u64,
            cpu: f.get(1).copied().unwrap_or(0.0) + f.get(2).copied().unwrap_or(0.0),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        }
    })
}

struct PgBackRest {
    conf: PathBuf,
    dir: PathBuf,
}

impl PgBackRest {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("pgbackrest");
        c.arg(format!("--config={}", self.conf.display()))
            .arg("--stanza=bench")
            .args(args)
            .current_dir(&self.dir);
        run_as_postgres(&mut c);
        c
    }
}

/// `TEJ_BENCH_JOBS` overrides tej's parallelism (default: one job per core).
fn jobs() -> usize {
    std::env::var("TEJ_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn child(args: &[String]) -> Result<()> {
    match args {
        [mode, url, repo] if mode == "backup" => {
            let repo = Repository::open(repo).await?;
            let mut opts = PhysicalBackupOptions::new(DbTarget::new(url.as_str()));
            opts.jobs = jobs();
            let r = create_physical_backup(&[repo], &opts, &SystemClock).await?;
            ensure!(
                r.backup.succeeded(),
                "backup failed: {:?}",
                r.backup.repositories
            );
            println!(
                "{}",
                serde_json::json!({"stored": r.backup.stored_size, "raw": r.backup.raw_size,
                    "objects": r.backup.objects.len(), "files": r.files})
            );
        }
        [mode, repo, target] if mode == "restore" => {
            let repo = Repository::open(repo).await?;
            let opts = PhysicalRestoreOptions {
                owner: postgres_ids(),
                jobs: jobs(),
                ..PhysicalRestoreOptions::default()
            };
            let r = restore_physical_backup(&repo, "latest", Path::new(target), &opts).await?;
            println!(
                "{}",
                serde_json::json!({"files": r.files, "bytes": r.bytes})
            );
        }
        _ => bail!("usage: --child backup URL REPO | --child restore REPO TARGET"),
    }
    Ok(())
}

fn fresh_dir(p: &Path) -> Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p)?;
    }
    std::fs::create_dir_all(p)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
    chown_postgres(p)?;
    Ok(())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(child(&args[2..]));
    }
    let mb: u64 = std::env::var("TEJ_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    println!("load average before: {}", loadavg());
    let mut pg = PgCluster::start_with(PgClusterOptions {
        extra_conf: vec![
            "max_wal_size = '4GB'".into(),
            "shared_buffers = '256MB'".into(),
            "checkpoint_timeout = '30min'".into(),
        ],
        ..PgClusterOptions::default()
    })?;
    let url = pg.create_database("skillswap")?;
    let t = Instant::now();
    generate(&pg, mb)?;
    let size = pg.psql("skillswap", "SELECT pg_database_size('skillswap')")?;
    println!(
        "generated database of {:.0} MiB in {:.1}s",
        mib(size.parse().unwrap_or(0)),
        t.elapsed().as_secs_f64()
    );

    // pgBackRest in a directory of its own, owned by postgres; archiving through it.
    let work = pg.base_dir().join("bench");
    std::fs::create_dir_all(&work)?;
    chown_postgres(&work)?;
    let br = PgBackRest {
        conf: work.join("pgbackrest.conf"),
        dir: work.clone(),
    };
    for d in ["repo", "log", "lock", "spool"] {
        std::fs::create_dir_all(work.join(d))?;
        chown_postgres(&work.join(d))?;
    }
    std::fs::write(
        &br.conf,
        format!(
            "[global]\nrepo1-path={w}/repo\nlog-path={w}/log\nlock-path={w}/lock\nspool-path={w}/spool\n\
             start-fast=y\ncompress-type=zst\ncompress-level=3\nprocess-max=2\nrepo1-retention-full=99\n\
             log-level-console=warn\nlog-level-file=off\n\n[bench]\npg1-path={data}\npg1-port={port}\npg1-socket-path={sock}\n",
            w = work.display(),
            data = pg.data_dir().display(),
            port = pg.port(),
            sock = pg.socket_dir().display(),
        ),
    )?;
    chown_postgres(&br.conf)?;
    pg.stop()?;
    {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data_dir().join("postgresql.conf"))?;
        writeln!(
            conf,
            "archive_mode = on\narchive_command = 'pgbackrest --config={} --stanza=bench archive-push %p'",
            br.conf.display()
        )?;
    }
    pg.start_again()?;
    let out = br.command(&["stanza-create"]).output()?;
    ensure!(
        out.status.success(),
        "pgbackrest stanza-create: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let exe = std::env::current_exe()?;
    let tej_repo = work.join("tej-repo");
    let scratch = work.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    chown_postgres(&scratch)?;
    let (mut tb, mut bb, mut tr, mut br_r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut tej_rss, mut br_rss, mut tej_rrss, mut br_rrss) = (0u64, 0u64, 0u64, 0u64);
    let mut tej_stored = 0u64;
    let mut tej_raw = 0u64;
    let mut br_size = 0u64;
    let mut loads = Vec::new();
    for i in 0..3 {
        loads.push(loadavg());
        let mut c = Command::new(&exe);
        c.args(["--child", "backup", &url]).arg(&tej_repo);
        let t = timed(c, "tej backup", &scratch, false)?;
        let v: serde_json::Value =
            serde_json::from_str(t.stdout.lines().last().context("tej output")?)?;
        tej_stored = v["stored"].as_u64().unwrap_or(0);
        tej_raw = v["raw"].as_u64().unwrap_or(0);
        tb.push(t.wall);
        tej_rss = tej_rss.max(t.rss_kib);

        let before = dir_size(&work.join("repo/backup"));
        let b = timed(
            br.command(&["--type=full", "backup"]),
            "pgbackrest backup",
            &scratch,
            true,
        )?;
        br_size = dir_size(&work.join("repo/backup")) - before;
        bb.push(b.wall);
        br_rss = br_rss.max(b.rss_kib);
        println!(
            "backup run {}: tej {:.2}s ({:.1}s CPU, {:.0} MiB RSS), pgBackRest {:.2}s ({:.1}s CPU, {:.0} MiB RSS)",
            i + 1,
            t.wall,
            t.cpu,
            t.rss_kib as f64 / 1024.0,
            b.wall,
            b.cpu,
            b.rss_kib as f64 / 1024.0
        );
    }
    let target = work.join("restored");
    for i in 0..3 {
        loads.push(loadavg());
        fresh_dir(&target)?;
        let mut c = Command::new(&exe);
        c.args(["--child", "restore"]).arg(&tej_repo).arg(&target);
        let t = timed(c, "tej restore", &scratch, false)?;
        tr.push(t.wall);
        tej_rrss = tej_rrss.max(t.rss_kib);

        fresh_dir(&target)?;
        let pg1 = format!("--pg1-path={}", target.display());
        let b = timed(
            br.command(&[&pg1, "restore"]),
            "pgbackrest restore",
            &scratch,
            true,
        )?;
        br_r.push(b.wall);
        br_rrss = br_rrss.max(b.rss_kib);
        println!(
            "restore run {}: tej {:.2}s ({:.1}s CPU, {:.0} MiB RSS), pgBackRest {:.2}s ({:.1}s CPU, {:.0} MiB RSS)",
            i + 1,
            t.wall,
            t.cpu,
            t.rss_kib as f64 / 1024.0,
            b.wall,
            b.cpu,
            b.rss_kib as f64 / 1024.0
        );
    }
    std::fs::remove_dir_all(&target).ok();
    let (tb, bb, tr, brr) = (median(tb), median(bb), median(tr), median(br_r));
    println!();
    println!("| | tej | pgBackRest (zst 3, process-max 2) | ratio tej/pgBackRest | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| full backup, median wall | {tb:.2}s | {bb:.2}s | {:.2} | <= 0.80 |",
        tb / bb
    );
    println!(
        "| restore, median wall | {tr:.2}s | {brr:.2}s | {:.2} | <= 1.00 |",
        tr / brr
    );
    println!(
        "| backup size | {:.1} MiB (of {:.0} MiB) | {:.1} MiB | {:.2} | |",
        mib(tej_stored),
        mib(tej_raw),
        mib(br_size),
        tej_stored as f64 / br_size.max(1) as f64
    );
    println!(
        "| peak RSS backup / restore | {:.0} / {:.0} MiB | {:.0} / {:.0} MiB (main process) | | |",
        tej_rss as f64 / 1024.0,
        tej_rrss as f64 / 1024.0,
        br_rss as f64 / 1024.0,
        br_rrss as f64 / 1024.0
    );
    println!();
    println!("load average at each run: {}", loads.join(" | "));
    Ok(())
}
