//! Benchmark: tej's one-pass log review against the runbook's four `grep -i` passes.
//!
//! Generates a log of `TEJ_BENCH_LOG_MIB` MiB (default 1024) in a temporary directory under
//! /tmp, warms the page cache, then times (median of `TEJ_BENCH_RUNS`, default 5, runs each, the two interleaved run by run):
//! - the runbook's method: `grep -i -c error`, `warn`, `login failed`, `slow query`, one after
//!   another (the runbook pipes to `tail -50`/`wc -l`; `-c` is the fastest form of the same pass);
//! - `tej_host::review_logs` on the same file, counting the same classes plus tails, patterns
//!   and failed logins per address.
//!
//! Checks that both count the same lines, prints MB/s, the ratio and the peak resident memory,
//! and exits 1 when tej is less than 4 times faster. The file is deleted at the end.
//!
//! Run: `cargo run --release -p tej-host --example bench_log_review`

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn uuid(r: &mut Rng) -> String {
    let a = r.next();
    let b = r.next();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a as u32,
        (a >> 32) as u16,
        (a >> 48) as u16 & 0xfff,
        b as u16,
        b >> 16 & 0xffff_ffff_ffff
    )
}

fn ip(r: &mut Rng) -> String {
    format!("203.0.{}.{}", r.below(4), r.below(250) + 1)
}

/// Writes about `bytes` of a mixed application log (timestamps within the last 12 hours).
fn generate(path: &Path, bytes: u64) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let start = jiff::Timestamp::now().as_second() - 12 * 3600;
    let mut written = 0u64;
    let mut i = 0u64;
    let users = ["alice", "bob", "carol", "dave", "erin", "mallory"];
    while written < bytes {
        let t = start + (i / 250) as i64;
        let ts = jiff::Timestamp::from_second(t)
            .map_err(std::io::Error::other)?
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let ms = r.below(1000);
        let line = match r.below(100) {
            0..=77 => format!(
                "{ts}.{ms:03}Z INFO  [http] GET /api/v1/users/{} 200 {}ms req={} ip={}\n",
                r.below(100_000),
                r.below(300),
                uuid(&mut r),
                ip(&mut r)
            ),
            78..=83 => format!(
                "{ts}.{ms:03}Z DEBUG [cache] hit key=user:{} ttl={}\n",
                r.below(100_000),
                r.below(3600)
            ),
            84..=91 => format!(
                "{ts}.{ms:03}Z WARN  [pool] connection pool {}% utilised, waiting={}\n",
                r.below(100),
                r.below(50)
            ),
            92..=95 => format!(
                "{ts}.{ms:03}Z ERROR [api] Unhandled error in /api/v1/orders/{}: ECONNRESET req={}\n",
                r.below(100_000),
                uuid(&mut r)
            ),
            96..=97 => format!(
                "{ts}.{ms:03}Z INFO  [auth] Login failed for user {}{} from {}\n",
                users[r.below(users.len() as u64) as usize],
                r.below(100),
                ip(&mut r)
            ),
            _ => format!(
                "{ts}.{ms:03}Z WARN  [db] Slow query ({}ms): SELECT * FROM sessions WHERE user_id = {}\n",
                r.below(5000) + 500,
                r.below(100_000)
            ),
        };
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
        i += 1;
    }
    w.flush()?;
    Ok(written)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used, from /proc/self/stat (clock ticks).
fn cpu_seconds() -> f64 {
    proc_stat_seconds(&[11, 12])
}

/// CPU time (user + system) of waited-for children (the greps).
fn child_cpu_seconds() -> f64 {
    proc_stat_seconds(&[13, 14])
}

fn proc_stat_seconds(fields: &[usize]) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name in parentheses; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

fn grep_count(pattern: &str, path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("grep")
        .args(["-i", "-c", pattern])
        .arg(path)
        .output()?;
    anyhow::ensure!(out.status.code() != Some(2), "grep failed: {:?}", out);
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::var("TEJ_BENCH_LOG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let runs: usize = std::env::var("TEJ_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let dir = tempfile::Builder::new()
        .prefix("tej-bench-logs-")
        .tempdir_in("/tmp")?;
    let path = dir.path().join("combined.log");
    let t = Instant::now();
    let size = generate(&path, mib << 20)?;
    println!(
        "generated {} ({:.0} MiB) in {:.1}s",
        path.display(),
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    // Warm the page cache for both contenders.
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    drop(buf);
    let rss_before = peak_rss_kib();

    let patterns = ["error", "warn", "login failed", "slow query"];
    let locale = std::env::var("LC_ALL")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var("LANG").ok())
        .unwrap_or_else(|| "POSIX".into());
    // Interleaved: each run times the four greps and then tej, so that load from other
    // processes on a shared machine falls on both contenders alike.
    let opts = tej_host::LogReviewOptions::all_time(jiff::Timestamp::now());
    let mut grep_times = Vec::new();
    let mut grep_counts = Vec::new();
    let mut tej_times = Vec::new();
    let mut report = None;
    let mut grep_cpu = 0.0;
    let mut tej_cpu = 0.0;
    for _ in 0..runs {
        let c = child_cpu_seconds();
        let t = Instant::now();
        grep_counts = patterns
            .iter()
            .map(|p| grep_count(p, &path))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        grep_times.push(t.elapsed());
        grep_cpu += child_cpu_seconds() - c;
        let c = cpu_seconds();
        let t = Instant::now();
        report = Some(tej_host::review_logs(std::slice::from_ref(&path), &opts)?);
        tej_times.push(t.elapsed());
        tej_cpu += cpu_seconds() - c;
    }
    let grep_cpu = grep_cpu / runs as f64;
    let tej_cpu = tej_cpu / runs as f64;
    let report = report.ok_or_else(|| anyhow::anyhow!("no run"))?;
    let tej_counts: Vec<u64> = tej_host::LogClass::ALL
        .iter()
        .map(|c| report.count(*c))
        .collect();
    let since_opts = tej_host::LogReviewOptions::window(
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_hours(24),
    );
    let mut since_times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = tej_host::review_logs(std::slice::from_ref(&path), &since_opts)?;
        since_times.push(t.elapsed());
        anyhow::ensure!(
            r.count(tej_host::LogClass::Error) == tej_counts[0],
            "--since 24h changed the counts of a log written in the last 12 hours"
        );
    }
    let one_opts = tej_host::LogReviewOptions {
        threads: 1,
        ..opts.clone()
    };
    let mut one_times = Vec::new();
    let cpu_before = cpu_seconds();
    for _ in 0..runs {
        let t = Instant::now();
        let r = tej_host::review_logs(std::slice::from_ref(&path), &one_opts)?;
        one_times.push(t.elapsed());
        anyhow::ensure!(r.classes == report.classes, "one thread and many disagree");
    }
    let one_cpu = (cpu_seconds() - cpu_before) / runs as f64;
    let rss_after = peak_rss_kib();

    let g = median(grep_times);
    let tj = median(tej_times);
    let ts = median(since_times);
    let mb = size as f64 / 1e6;
    let ratio = g.as_secs_f64() / tj.as_secs_f64();
    println!("runs per contender: {runs} (medians below); grep locale: {locale}");
    println!("counts grep -i -c (error, warn, login failed, slow query): {grep_counts:?}");
    println!("counts tej review_logs                                  : {tej_counts:?}");
    println!(
        "4 x grep -i -c      : {:>8.3} s  {:>7.0} MB/s (of log, all four passes)",
        g.as_secs_f64(),
        mb / g.as_secs_f64()
    );
    println!(
        "tej one pass        : {:>8.3} s  {:>7.0} MB/s",
        tj.as_secs_f64(),
        mb / tj.as_secs_f64()
    );
    println!(
        "tej one pass --since 24h: {:>4.3} s  {:>7.0} MB/s",
        ts.as_secs_f64(),
        mb / ts.as_secs_f64()
    );
    let one = median(one_times);
    println!(
        "tej one pass, 1 thread: {:>5.3} s  {:>7.0} MB/s ({:.2}x grep total)",
        one.as_secs_f64(),
        mb / one.as_secs_f64(),
        g.as_secs_f64() / one.as_secs_f64()
    );
    println!(
        "CPU time per run: 4 x grep {grep_cpu:.2} s, tej {tej_cpu:.2} s, tej 1 thread {one_cpu:.2} s \
         (grep / tej 1 thread: {:.2}x)",
        grep_cpu / one_cpu.max(0.01)
    );
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("speed-up (grep total / tej): {ratio:.2}x (target >= 4x)");
    println!(
        "peak RSS of this process: {} KiB before reviews, {} KiB after (file {} MiB)",
        rss_before,
        rss_after,
        size >> 20
    );
    println!(
        "top pattern: {:?}",
        report.top_patterns.first().map(|p| (&p.pattern, p.count))
    );
    drop(dir);
    anyhow::ensure!(grep_counts == tej_counts, "tej and grep disagree on counts");
    if ratio < 4.0 {
        println!("RESULT: FAIL (below 4x)");
        std::process::exit(1);
    }
    println!("RESULT: PASS");
    Ok(())
}
