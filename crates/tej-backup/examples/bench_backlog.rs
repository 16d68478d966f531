//! Benchmark: does WAL archiving keep up with a busy server? A PostgreSQL 15 cluster
//! archives through `tej wal push --repo DIR %p` (the released binary) while `pgbench`
//! writes for 60 seconds; the archive backlog (the `.ready` files in
//! `pg_wal/archive_status`) is sampled every second. The same run is then repeated on a
//! fresh cluster archiving through `pgbackrest archive-push` (`compress-type=zst`,
//! `compress-level=3`, synchronous), and both are printed side by side.
//!
//! ```text
//! cargo build --release -p tej-cli
//! TEJ_BIN=target/release/tej cargo run --release -p tej-backup --example bench_backlog
//! ```
//!
//! The tej binary comes from the first argument or `TEJ_BIN`; without either the
//! `wal_archive_cmd` example (the same library push) stands in for it. `TEJ_BENCH_SECONDS`
//! (default 60) and `TEJ_BENCH_SCALE` (pgbench scale, default 20) shorten the run.
//!
//! The cluster runs with `synchronous_commit = off` and `checkpoint_timeout = '30s'` so that
//! pgbench writes WAL (with frequent full-page images) as fast as the CPU allows. "Never grows" means: the least-squares slope of the backlog over the run, times the
//! run's length, is under 2 segments, and the backlog at the end is at most 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tej_testkit::{PgCluster, PgClusterOptions, run_as_postgres};

/// The largest backlog (segments) at the end of a run that still counts as keeping up.
const END_BOUND: u32 = 2;

/// What archives the segments.
enum Archiver {
    /// The `tej` binary: `tej wal push --repo REPO %p`.
    Tej(PathBuf),
    /// The `wal_archive_cmd` example: `wal_archive_cmd push REPO %p --pgdata .`.
    Example(PathBuf),
    /// `pgbackrest --config=CONF --stanza=bench archive-push %p`.
    PgBackRest,
}

/// The tej binary from the command line or `TEJ_BIN`, or the example beside this one.
fn tej_archiver() -> Result<Archiver> {
    if let Some(p) = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("TEJ_BIN").ok())
    {
        let p = std::fs::canonicalize(&p).with_context(|| format!("tej binary {p}"))?;
        return Ok(Archiver::Tej(p));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("no examples dir")?
        .join("wal_archive_cmd");
    ensure!(
        bin.is_file(),
        "no tej binary: pass it as the first argument or TEJ_BIN, or build the \
         wal_archive_cmd example (cargo build --release -p tej-backup --example wal_archive_cmd)"
    );
    Ok(Archiver::Example(bin))
}

fn chmod_777(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777))
        .with_context(|| format!("chmod {}", p.display()))
}

/// The backlog: `.ready` files in `pg_wal/archive_status`.
fn backlog(data: &Path) -> Result<u32> {
    let dir = data.join("pg_wal/archive_status");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        if e?.file_name().to_string_lossy().ends_with(".ready") {
            n += 1;
        }
    }
    Ok(n)
}

fn median(v: &[u32]) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => f64::from(v[n / 2]),
        n => (f64::from(v[n / 2 - 1]) + f64::from(v[n / 2])) / 2.0,
    }
}

/// Least-squares slope of `y` over `t` (per second).
fn slope(samples: &[(f64, u32)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mt = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| f64::from(s.1)).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, y) in samples {
        num += (t - mt) * (f64::from(*y) - my);
        den += (t - mt) * (t - mt);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

/// One run's figures.
struct RunResult {
    label: String,
    samples: Vec<(f64, u32)>,
    seconds: f64,
    archived: u64,
    failed: u64,
    wal_mib: f64,
    tps: f64,
    init_drain: f64,
    drain: Option<f64>,
}

impl RunResult {
    fn counts(&self) -> Vec<u32> {
        self.samples.iter().map(|s| s.1).collect()
    }
    fn start(&self) -> u32 {
        self.samples.first().map_or(0, |s| s.1)
    }
    fn end(&self) -> u32 {
        self.samples.last().map_or(0, |s| s.1)
    }
    fn max(&self) -> u32 {
        self.counts().into_iter().max().unwrap_or(0)
    }
    /// Fitted growth over the whole run, in segments.
    fn growth(&self) -> f64 {
        slope(&self.samples) * self.seconds
    }
    fn never_grows(&self) -> bool {
        self.growth() < 2.0 && self.end() <= END_BOUND && self.failed == 0
    }
}

fn stat_archiver(pg: &PgCluster) -> Result<(u64, u64)> {
    let s = pg.psql(
        "postgres",
        "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver",
    )?;
    let mut it = s.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(f))) => Ok((a, f)),
        _ => bail!("unexpected pg_stat_archiver row {s:?}"),
    }
}

/// Waits until the backlog is at most `bound` or `limit` passed; the seconds it took.
fn wait_drain(data: &Path, bound: u32, limit: Duration) -> Result<Option<f64>> {
    let t = Instant::now();
    loop {
        if backlog(data)? <= bound {
            return Ok(Some(t.elapsed().as_secs_f64()));
        }
        if t.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_one(archiver: &Archiver, label: &str, seconds: u64, scale: u32) -> Result<RunResult> {
    let pg = PgCluster::start_with(PgClusterOptions {
        archive_mode: true,
        // Commits without waiting for the WAL flush (pgbench is bound by CPU, not fsync) and
        // a checkpoint every 30 s (full-page images after each): several times more WAL per
        // second than the defaults, a harder test for the archiver.
        extra_conf: vec![
            "max_wal_size = '1GB'".into(),
            "synchronous_commit = off".into(),
            "checkpoint_timeout = '30s'".into(),
        ],
        ..PgClusterOptions::default()
    })?;
    let work = tempfile::tempdir()?;
    chmod_777(work.path())?;
    let repo = work.path().join("repo");
    std::fs::create_dir(&repo)?;
    chmod_777(&repo)?;
    let q = |p: &Path| format!("\"{}\"", p.display());
    let command = match archiver {
        Archiver::Tej(bin) => format!("{} wal push --repo {} %p", q(bin), q(&repo)),
        Archiver::Example(bin) => format!("{} push {} %p --pgdata .", q(bin), q(&repo)),
        Archiver::PgBackRest => {
            let br = work.path().join("pgbackrest");
            for d in ["log", "lock", "spool"] {
                std::fs::create_dir_all(br.join(d))?;
                chmod_777(&br.join(d))?;
            }
            chmod_777(&br)?;
            let conf = br.join("pgbackrest.conf");
            std::fs::write(
                &conf,
                format!(
                    "[global]\nrepo1-path={repo}\nlog-path={r}/log\nlock-path={r}/lock\nspool-path={r}/spool\n\
                     compress-type=zst\ncompress-level=3\nlog-level-console=warn\nlog-level-file=off\n\n\
                     [bench]\npg1-path={data}\npg1-port={port}\npg1-socket-path={sock}\n",
                    repo = repo.display(),
                    r = br.display(),
                    data = pg.data_dir().display(),
                    port = pg.port(),
                    sock = pg.socket_dir().display(),
                ),
            )?;
            chmod_777(&conf)?;
            let mut c = Command::new("pgbackrest");
            c.arg(format!("--config={}", conf.display()))
                .args(["--stanza=bench", "stanza-create"]);
            run_as_postgres(&mut c);
            let out = c.output().context("run pgbackrest stanza-create")?;
            ensure!(
                out.status.success(),
                "pgbackrest stanza-create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            format!(
                "pgbackrest --config={} --stanza=bench archive-push %p",
                q(&conf)
            )
        }
    };
    pg.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            command.replace('\'', "''")
        ),
    )?;
    pg.psql("postgres", "SELECT pg_reload_conf()")?;
    eprintln!("[{label}] archive_command = {command}");

    let pgbench = PgCluster::bin_dir().join("pgbench");
    let port = pg.port().to_string();
    let conn = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    eprintln!("[{label}] pgbench -i -s {scale}");
    let out = Command::new(&pgbench)
        .args(conn)
        .args(["-i", "-q", "-s", &scale.to_string(), "postgres"])
        .output()
        .context("run pgbench -i")?;
    ensure!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Start the timed run from a drained archive so that both tools start equal.
    let init_drain = wait_drain(pg.data_dir(), 1, Duration::from_secs(300))?
        .context("the archive did not drain the pgbench -i WAL within 300 s")?;
    let (archived0, failed0) = stat_archiver(&pg)?;
    let lsn0 = pg.psql("postgres", "SELECT pg_current_wal_lsn()")?;

    eprintln!("[{label}] pgbench -T {seconds} -c 4 -j 2, sampling the backlog every second");
    let mut child = Command::new(&pgbench)
        .args(conn)
        .args([
            "-T",
            &seconds.to_string(),
            "-c",
            "4",
            "-j",
            "2",
            "-n",
            "postgres",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start pgbench")?;
    let t0 = Instant::now();
    let mut samples = vec![(0.0, backlog(pg.data_dir())?)];
    let mut next = Duration::from_secs(1);
    while child.try_wait()?.is_none() {
        let now = t0.elapsed();
        if now >= next {
            samples.push((now.as_secs_f64(), backlog(pg.data_dir())?));
            next += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    samples.push((elapsed, backlog(pg.data_dir())?));
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let wal = pg.psql(
        "postgres",
        &format!("SELECT pg_current_wal_lsn() - '{lsn0}'::pg_lsn"),
    )?;
    let drain = wait_drain(pg.data_dir(), 0, Duration::from_secs(120))?;
    let (archived1, failed1) = stat_archiver(&pg)?;
    Ok(RunResult {
        label: label.to_string(),
        samples,
        seconds: elapsed,
        archived: archived1 - archived0,
        failed: failed1 - failed0,
        wal_mib: wal.trim().parse::<f64>().unwrap_or(f64::NAN) / 1048576.0,
        tps,
        init_drain,
        drain,
    })
}

fn main() -> Result<()> {
    let seconds: u64 = std::env::var("TEJ_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let scale: u32 = std::env::var("TEJ_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let tej = tej_archiver()?;
    let tej_label = match &tej {
        Archiver::Tej(_) => "tej wal push",
        _ => "wal_archive_cmd push",
    };
    let runs = [
        run_one(&tej, tej_label, seconds, scale)?,
        run_one(
            &Archiver::PgBackRest,
            "pgbackrest archive-push",
            seconds,
            scale,
        )?,
    ];
    for r in &runs {
        let series: Vec<String> = r.counts().iter().map(u32::to_string).collect();
        println!("{} backlog per second: {}", r.label, series.join(" "));
    }
    println!();
    println!(
        "Archive backlog during `pgbench -T {seconds} -c 4 -j 2` (scale {scale}), sampled every second:"
    );
    println!();
    println!("| | {} | {} (zst 3) |", runs[0].label, runs[1].label);
    println!("|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&RunResult) -> String| {
        println!("| {name} | {} | {} |", f(&runs[0]), f(&runs[1]));
    };
    row("backlog at start / end (segments)", &|r| {
        format!("{} / {}", r.start(), r.end())
    });
    row("backlog max / median", &|r| {
        format!("{} / {:.1}", r.max(), median(&r.counts()))
    });
    row("backlog slope (segments/min)", &|r| {
        format!("{:+.3}", slope(&r.samples) * 60.0)
    });
    row("segments archived during the run", &|r| {
        r.archived.to_string()
    });
    row("archive failures", &|r| r.failed.to_string());
    row("WAL written (MiB)", &|r| format!("{:.0}", r.wal_mib));
    row("pgbench tps", &|r| format!("{:.0}", r.tps));
    row("drain after pgbench -i (s)", &|r| {
        format!("{:.1}", r.init_drain)
    });
    row("drain to 0 after the run (s)", &|r| match r.drain {
        Some(d) => format!("{d:.1}"),
        None => "not within 120 s".into(),
    });
    row("never grows", &|r| {
        if r.never_grows() { "yes" } else { "NO" }.into()
    });
    for r in &runs {
        println!(
            "xtask-summary: {}",
            serde_json::json!({
                "bench": "backlog", "tool": r.label, "start": r.start(), "end": r.end(),
                "max": r.max(), "median": median(&r.counts()),
                "slope_per_min": slope(&r.samples) * 60.0, "archived": r.archived,
                "failed": r.failed, "never_grows": r.never_grows(),
            })
        );
    }
    Ok(())
}
