//! Benchmark: tej's default logical backup (pg_dump -Fc -Z0 | zstd -3 multi-threaded |
//! SHA-256 | local repository) against the runbook's `pg_dump | gzip > file` and the
//! floor, bare `pg_dump > /dev/null`, on a generated ~500 MB text-heavy database.
//!
//! `cargo run --release -p tej-backup --example bench_backup` (`TEJ_BENCH_MB=100` for a
//! smaller database). tej's backup runs in a child process of this binary so that its
//! peak RSS (VmHWM) is measured alone.

use anyhow::{Context, Result, bail, ensure};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;
use tej_backup::{DbTarget, LogicalBackupOptions, Repository, create_logical_backup};
use tej_core::{SystemClock, TokioCommandRunner};
use tej_testkit::{PgCluster, PgClusterOptions};

#[path = "common/bench_data.rs"]
mod bench_data;
use bench_data::{generate, median, mib};

fn pg_dump() -> std::path::PathBuf {
    PgCluster::bin_dir().join("pg_dump")
}

fn time_bare(url: &str) -> Result<f64> {
    let t = Instant::now();
    let st = Command::new(pg_dump())
        .arg(format!("--dbname={url}"))
        .stdout(std::fs::File::create("/dev/null")?)
        .status()?;
    ensure!(st.success(), "pg_dump failed");
    Ok(t.elapsed().as_secs_f64())
}

fn time_runbook(url: &str, out: &Path) -> Result<(f64, u64)> {
    // The runbook: pg_dump skillswap | gzip > /opt/skillswap/backups/skillswap_backup_DATE.sql.gz
    let t = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --dbname='{url}' | gzip > '{}'",
            pg_dump().display(),
            out.display()
        ))
        .status()?;
    ensure!(st.success(), "pg_dump | gzip failed");
    Ok((t.elapsed().as_secs_f64(), std::fs::metadata(out)?.len()))
}

struct TejRun {
    wall: f64,
    stored: u64,
    raw: u64,
    hwm_kib: u64,
    cpu: f64,
    pg_dump_cpu: f64,
}

/// A shell pipeline's wall time and output size (reference points, not the runbook).
fn time_shell(script: &str, out: &Path) -> Result<(f64, u64)> {
    let t = Instant::now();
    let st = Command::new("sh").arg("-c").arg(script).status()?;
    ensure!(st.success(), "{script} failed");
    Ok((
        t.elapsed().as_secs_f64(),
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
    ))
}

/// A tej configuration: `LEVEL:THREADS:HASH_RAW` (0 = the default for each).
fn time_tej(url: &str, repo: &Path, variant: &str) -> Result<TejRun> {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args(["--child", url])
        .arg(repo)
        .arg(variant)
        .stderr(Stdio::inherit())
        .output()?;
    let wall = t.elapsed().as_secs_f64();
    ensure!(out.status.success(), "tej child failed");
    let text = String::from_utf8(out.stdout)?;
    let line = text.lines().last().context("child output")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    Ok(TejRun {
        wall,
        stored: v["stored"].as_u64().unwrap_or(0),
        raw: v["raw"].as_u64().unwrap_or(0),
        hwm_kib: v["hwm_kib"].as_u64().unwrap_or(0),
        cpu: v["cpu"].as_f64().unwrap_or(0.0),
        pg_dump_cpu: v["pg_dump_cpu"].as_f64().unwrap_or(0.0),
    })
}

/// User + system CPU seconds of this process (`self_`) or of its waited-for children,
/// from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_secs(self_: bool) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default();
    // After the command name: state is index 0, utime 11, stime 12, cutime 13, cstime 14.
    let at = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    if self_ {
        (at(11) + at(12)) / 100.0
    } else {
        (at(13) + at(14)) / 100.0
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

async fn child(url: &str, repo: &str, variant: &str) -> Result<()> {
    let repo = Repository::open(repo).await?;
    let mut opts = LogicalBackupOptions::new(DbTarget::new(url));
    let v: Vec<u32> = variant.split(':').map(|x| x.parse().unwrap_or(0)).collect();
    if let Some(&l) = v.first().filter(|&&l| l > 0) {
        opts.run.compression.level = Some(l as i32);
    }
    if let Some(&t) = v.get(1).filter(|&&t| t > 0) {
        opts.run.compression.threads = t;
    }
    if v.get(2) == Some(&1) {
        opts.run.hash_raw = true;
    }
    let r = create_logical_backup(&TokioCommandRunner, &[repo], &opts, &SystemClock).await?;
    ensure!(r.succeeded(), "backup failed: {:?}", r.repositories);
    println!(
        "{}",
        serde_json::json!({"stored": r.stored_size, "raw": r.raw_size, "hwm_kib": vm_hwm_kib(),
            "cpu": cpu_secs(true), "pg_dump_cpu": cpu_secs(false)})
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let (Some(url), Some(repo)) = (args.get(2), args.get(3)) else {
            bail!("usage: --child URL REPO [LEVEL]");
        };
        let variant = args.get(4).cloned().unwrap_or_default();
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(child(url, repo, &variant));
    }
    let mb: u64 = std::env::var("TEJ_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let pg = PgCluster::start_with(PgClusterOptions {
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
    let rows = pg.psql(
        "skillswap",
        "SELECT (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM messages) || ' messages'",
    )?;
    println!(
        "generated {rows}; database size {:.0} MiB in {:.1}s",
        mib(size.parse().unwrap_or(0)),
        t.elapsed().as_secs_f64()
    );
    if let Some(path) = std::env::var_os("TEJ_BENCH_SAVE_DUMP") {
        // For compressor experiments: the custom-format dump tej compresses, then stop.
        let st = Command::new(pg_dump())
            .arg(format!("--dbname={url}"))
            .args(["-Fc", "-Z0", "-f"])
            .arg(&path)
            .status()?;
        ensure!(st.success(), "pg_dump -Fc failed");
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let env_num = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let runs = env_num("TEJ_BENCH_RUNS", 3).max(1);
    let gzip_runs = env_num("TEJ_BENCH_GZIP_RUNS", runs);
    // Extra tej configurations to compare besides the default:
    // TEJ_BENCH_VARIANTS=LEVEL:THREADS:HASH_RAW,... (0 = default), e.g. 1:0:0,3:1:0,3:0:1.
    let levels: Vec<String> = std::env::var("TEJ_BENCH_VARIANTS")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let pgd = pg_dump().display().to_string();
    let fc_out = work.path().join("fc.zst");
    let mut bare = Vec::new();
    let mut bare_fc = Vec::new();
    let mut cli_zstd = Vec::new();
    let mut cli_zstd_size = 0;
    let mut runbook = Vec::new();
    let mut tej = Vec::new();
    let mut extra: Vec<Vec<(f64, u64)>> = vec![Vec::new(); levels.len()];
    let mut gz_size = 0;
    let mut last = None;
    let mut hwm = 0;
    for i in 0..runs {
        bare.push(time_bare(&url)?);
        bare_fc.push(
            time_shell(
                &format!("'{pgd}' --dbname='{url}' -Fc -Z0 > /dev/null"),
                Path::new("/dev/null"),
            )?
            .0,
        );
        let (s, sz) = time_shell(
            &format!(
                "'{pgd}' --dbname='{url}' -Fc -Z0 | zstd -q -T2 -3 -o '{}' -f",
                fc_out.display()
            ),
            &fc_out,
        )?;
        cli_zstd.push(s);
        cli_zstd_size = sz;
        if i < gzip_runs {
            let (s, sz) = time_runbook(&url, &work.path().join("skillswap_backup.sql.gz"))?;
            runbook.push(s);
            gz_size = sz;
        }
        let repo = work.path().join(format!("repo{i}"));
        let r = time_tej(&url, &repo, "")?;
        std::fs::remove_dir_all(&repo).ok();
        tej.push(r.wall);
        hwm = hwm.max(r.hwm_kib);
        print!(
            "run {}: bare pg_dump {:.2}s, pg_dump -Fc -Z0 {:.2}s, pg_dump -Fc -Z0|zstd -T2 -3 {:.2}s, {}tej {:.2}s (peak RSS {:.1} MiB, CPU tej {:.2}s + pg_dump {:.2}s)",
            i + 1,
            bare[i],
            bare_fc[i],
            cli_zstd[i],
            runbook
                .get(i)
                .map(|g| format!("pg_dump|gzip {g:.2}s, "))
                .unwrap_or_default(),
            r.wall,
            r.hwm_kib as f64 / 1024.0,
            r.cpu,
            r.pg_dump_cpu
        );
        for (j, l) in levels.iter().enumerate() {
            let repo = work.path().join(format!("repo{i}-{j}"));
            let x = time_tej(&url, &repo, l)?;
            std::fs::remove_dir_all(&repo).ok();
            print!(", tej {l} {:.2}s (CPU {:.2}s)", x.wall, x.cpu);
            extra[j].push((x.wall, x.stored));
        }
        println!();
        last = Some(r);
    }
    let r = last.context("no run")?;
    let (b, t) = (median(bare), median(tej));
    println!();
    println!("| | median wall | output | ratio to floor |");
    println!("|---|---|---|---|");
    println!("| bare pg_dump > /dev/null (floor) | {b:.2}s | plain SQL | 1.00 |",);
    let bfc = median(bare_fc);
    println!(
        "| pg_dump -Fc -Z0 > /dev/null | {bfc:.2}s | {:.0} MiB archive | {:.2} |",
        mib(r.raw),
        bfc / b
    );
    let cz = median(cli_zstd);
    println!(
        "| shell pg_dump -Fc -Z0 \\| zstd -T2 -3 > file (no hash, no fsync) | {cz:.2}s | {:.1} MiB | {:.2} |",
        mib(cli_zstd_size),
        cz / b
    );
    let g = if runbook.is_empty() {
        None
    } else {
        Some(median(runbook))
    };
    if let Some(g) = g {
        println!(
            "| runbook pg_dump \\| gzip | {g:.2}s | {:.1} MiB | {:.2} |",
            mib(gz_size),
            g / b
        );
    }
    println!(
        "| tej default (-Fc -Z0, zstd-{} mt, SHA-256 of the stored bytes, fsync) | {t:.2}s | {:.1} MiB | {:.2} |",
        tej_backup::CompressionOptions::default_level(tej_backup::CompressionAlgo::Zstd),
        mib(r.stored),
        t / b
    );
    for (j, l) in levels.iter().enumerate() {
        let w = median(extra[j].iter().map(|x| x.0).collect());
        let sz = extra[j].last().map(|x| x.1).unwrap_or(0);
        println!(
            "| tej level:threads:hash_raw {l} | {w:.2}s | {:.1} MiB | {:.2} |",
            mib(sz),
            w / b
        );
    }
    println!();
    if let Some(g) = g {
        println!("tej vs pg_dump|gzip: {:.2}x faster (goal >= 6x)", g / t);
        println!(
            "tej output / gzip output: {:.3} (goal <= 1)",
            r.stored as f64 / gz_size as f64
        );
    }
    println!(
        "tej vs bare pg_dump: {:.2}x the floor (goal <= 1.5x)",
        t / b
    );
    println!(
        "tej peak RSS: {:.1} MiB (goal < 100 MiB)",
        hwm as f64 / 1024.0
    );
    Ok(())
}
