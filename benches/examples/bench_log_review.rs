//! Benchmark: tej's one-pass log review against the runbook's four `grep -i` passes and one
//! `rg -c -i -e error -e warn -e 'login failed' -e 'slow query'` pass, on two shapes of log.
//!
//! For each shape in `TEJ_BENCH_LOG_SHAPES` (default `plain,pino-mixed`) it generates a log of
//! `TEJ_BENCH_LOG_MIB` MiB (default 1024) in a temporary directory under /tmp, warms the page
//! cache, then times, run by run interleaved (median of `TEJ_BENCH_RUNS`, default 5):
//! - the runbook's method: `grep -i -c error`, `warn`, `login failed`, `slow query`, one after
//!   another (the runbook pipes to `tail -50`/`wc -l`; `-c` is the fastest form of the same pass);
//! - `rg -c` with the four patterns (one pass, lines matching any);
//! - the release `tej` binary: `tej logs review FILE --since 100000h --output json` (counting
//!   the same classes plus tails, patterns and failed logins per address, and printing them),
//!   and the same with the text, nagios and prometheus outputs;
//! - `tej_host::review_logs` in this process, all threads and one thread, and with
//!   `--since 24h`.
//!
//! The shapes: `plain` is an application log of free-text lines (timestamp, level, component,
//! message); `pino-mixed` is what `docker compose logs -t` gives for a Node backend: every line
//! starts with the engine's timestamp, most lines are pino JSON (numeric levels, nested
//! request objects, `/api/auth/login` URLs), interleaved with plain-text lines from the process
//! and its libraries; about 8 % of lines mention error or warn, and tens of thousands of failed
//! logins come from a few dozen addresses.
//!
//! Checks that tej counts the same lines as grep, prints MB/s, the ratios and the peak resident
//! memory, and exits 1 when tej is less than 4 times faster than the greps or more than 1.5
//! times slower than rg on any shape. The files are deleted at the end.
//!
//! `TEJ_BENCH_LOG_GENERATE=FILE` only writes the first shape's log to FILE (for profiling).
//!
//! Run: `cargo xtask bench logs` (builds the release binary, then runs this example).

use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tej_benches::{Rng, uuid};

fn ip(r: &mut Rng) -> String {
    format!("203.0.{}.{}", r.below(4), r.below(250) + 1)
}

/// Writes about `bytes` of a free-text application log (timestamps within the last 12 hours).
fn generate_plain(path: &Path, bytes: u64) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut r = Rng::new(0x9e37_79b9_7f4a_7c15);
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

/// Writes about `bytes` of `docker compose logs -t` output of a Node backend: the engine's
/// RFC 3339 timestamp first on every line, then mostly pino JSON, interleaved with plain text.
fn generate_pino_mixed(path: &Path, bytes: u64) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut r = Rng::new(0x2545_f491_4f6c_dd1d);
    let start_ms = jiff::Timestamp::now().as_millisecond() - 12 * 3600 * 1000;
    // A few dozen addresses try passwords; the rest are ordinary clients.
    let attackers: Vec<String> = (0..36)
        .map(|i| format!("198.51.100.{}", 10 + i * 6))
        .collect();
    let routes = [
        "/api/v1/sessions",
        "/api/v1/skills",
        "/api/v1/users/me",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/v1/messages",
        "/health",
    ];
    let mut written = 0u64;
    let mut i = 0u64;
    while written < bytes {
        let ms = start_ms + (i / 4) as i64;
        let ts = jiff::Timestamp::from_millisecond(ms).map_err(std::io::Error::other)?;
        let engine_ts = format!(
            "{}.{:03}{:06}Z",
            ts.strftime("%Y-%m-%dT%H:%M:%S"),
            ms.rem_euclid(1000),
            r.below(1_000_000)
        );
        let pid = 17 + r.below(3);
        let req_id = format!("req-{:x}", r.next_u64() & 0xff_ffff);
        let client = format!("203.0.113.{}", r.below(250) + 1);
        let body = match r.below(1000) {
            // Access lines from pino-http: info, with nested req/res objects.
            0..=719 => {
                let route = routes[r.below(routes.len() as u64) as usize];
                let status = [200, 200, 200, 201, 204, 304, 401, 404][r.below(8) as usize];
                format!(
                    r#"{{"level":30,"time":{ms},"pid":{pid},"hostname":"backend-7f9c","reqId":"{req_id}","req":{{"method":"GET","url":"{route}?page={}","remoteAddress":"{client}","remotePort":{}}},"res":{{"statusCode":{status}}},"responseTime":{}.{},"msg":"request completed"}}"#,
                    r.below(40),
                    30000 + r.below(30000),
                    r.below(400),
                    r.below(10)
                )
            }
            // Application info and debug lines; some carry counters named like the needles.
            720..=799 => format!(
                r#"{{"level":{},"time":{ms},"pid":{pid},"hostname":"backend-7f9c","module":"scheduler","job":"digest-{}","retries":{},"msg":"job finished in {}ms"}}"#,
                [20, 30][r.below(2) as usize],
                r.below(500),
                r.below(3),
                r.below(2000)
            ),
            800..=819 => format!(
                r#"{{"level":30,"time":{ms},"pid":{pid},"hostname":"backend-7f9c","module":"import","batch":{},"rows":{},"errors":0,"msg":"import batch done"}}"#,
                r.below(10_000),
                r.below(5000)
            ),
            // Plain-text lines from the process (npm, node warnings, library banners).
            820..=879 => match r.below(4) {
                0 => format!(
                    "> skillswap-backend@2.4.1 start /app: listening on :3000 (worker {pid})"
                ),
                1 => format!(
                    "Mongoose-free pool: {} idle, {} busy, queue {}",
                    r.below(20),
                    r.below(20),
                    r.below(5)
                ),
                2 => format!(
                    "prisma:info Starting a postgresql pool with {} connections.",
                    5 + r.below(10)
                ),
                _ => format!(
                    "GC: scavenge {}ms, heap {} MB",
                    r.below(30),
                    80 + r.below(300)
                ),
            },
            // Failed logins: pino warn lines naming the address (tens of thousands per GiB).
            880..=919 => {
                let from = if r.below(10) < 8 {
                    attackers[r.below(attackers.len() as u64) as usize].clone()
                } else {
                    client.clone()
                };
                format!(
                    r#"{{"level":40,"time":{ms},"pid":{pid},"hostname":"backend-7f9c","reqId":"{req_id}","module":"auth","msg":"Login failed for user user{}@example.com from {from}"}}"#,
                    r.below(5000)
                )
            }
            // Warnings: pino level 40, and node's own plain-text warnings.
            920..=959 => match r.below(3) {
                0 => format!(
                    r#"{{"level":40,"time":{ms},"pid":{pid},"hostname":"backend-7f9c","module":"db","msg":"Slow query ({}ms): SELECT * FROM sessions WHERE user_id = $1"}}"#,
                    500 + r.below(5000)
                ),
                1 => format!(
                    "(node:{pid}) Warning: Possible EventEmitter memory leak detected. {} listeners added",
                    11 + r.below(20)
                ),
                _ => format!(
                    r#"{{"level":40,"time":{ms},"pid":{pid},"hostname":"backend-7f9c","module":"redis","msg":"warn: reconnecting to redis in {}ms"}}"#,
                    r.below(2000)
                ),
            },
            // Errors: pino level 50 with a stack, and uncaught errors in plain text.
            _ => match r.below(3) {
                0 => format!(
                    r#"{{"level":50,"time":{ms},"pid":{pid},"hostname":"backend-7f9c","reqId":"{req_id}","err":{{"type":"Error","message":"connect ECONNREFUSED 127.0.0.1:5432","stack":"Error: connect ECONNREFUSED 127.0.0.1:5432\n    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)"}},"msg":"Error handling {}"}}"#,
                    routes[r.below(routes.len() as u64) as usize]
                ),
                1 => format!(
                    "Error: ENOENT: no such file or directory, open '/app/uploads/{}.png'",
                    r.below(100_000)
                ),
                _ => format!(
                    r#"{{"level":50,"time":{ms},"pid":{pid},"hostname":"backend-7f9c","module":"mailer","msg":"SMTP error {}: message {} not sent"}}"#,
                    [421, 450, 550][r.below(3) as usize],
                    r.below(1_000_000)
                ),
            },
        };
        let line = format!("{engine_ts} {body}\n");
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

/// `rg -c -i -e error -e warn -e 'login failed' -e 'slow query' FILE`: lines matching any.
fn rg_count(path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("rg")
        .args([
            "-c",
            "-i",
            "-e",
            "error",
            "-e",
            "warn",
            "-e",
            "login failed",
            "-e",
            "slow query",
        ])
        .arg(path)
        .output()
        .map_err(|e| anyhow::anyhow!("run rg (Debian package ripgrep): {e}"))?;
    anyhow::ensure!(out.status.success(), "rg failed: {:?}", out);
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The release `tej` binary beside this example (target/release/tej).
fn tej_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or_else(|| anyhow::anyhow!("no target directory above {}", exe.display()))?;
    let tej = dir.join("tej");
    anyhow::ensure!(
        tej.is_file(),
        "{} is missing: build it first (cargo build --release -p tej-cli)",
        tej.display()
    );
    Ok(tej)
}

/// The output formats of `tej logs review`, each with a text its output must contain.
const FORMATS: [(&str, &str); 4] = [
    ("json", "log_error_lines"),
    ("text", "error"),
    ("nagios", "'log_error_lines'="),
    ("prometheus", "log_error_lines"),
];

/// `tej logs review FILE --since 100000h --output FORMAT`; returns the bytes it printed.
fn tej_cli(tej: &Path, path: &Path, format: &str) -> anyhow::Result<u64> {
    let out = Command::new(tej)
        .args(["logs", "review"])
        .arg(path)
        .args(["--since", "100000h", "--output", format])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let expect = FORMATS
        .iter()
        .find(|(f, _)| *f == format)
        .map_or("error", |(_, e)| *e);
    anyhow::ensure!(
        text.contains(expect),
        "tej logs review --output {format} printed no error count ({}):\n{}{}",
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout.len() as u64)
}

/// One shape's measurements; returns whether it met both goals.
fn bench_shape(shape: &str, mib: u64, runs: usize, tej: &Path) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("tej-bench-logs-")
        .tempdir_in("/tmp")?;
    let path = dir.path().join(format!("{shape}.log"));
    let t = Instant::now();
    let size = match shape {
        "plain" => generate_plain(&path, mib << 20)?,
        "pino-mixed" => generate_pino_mixed(&path, mib << 20)?,
        other => anyhow::bail!("unknown shape {other:?} (plain, pino-mixed)"),
    };
    println!(
        "\n== shape {shape}: generated {} ({:.0} MiB) in {:.1}s",
        path.display(),
        size as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    // Warm the page cache for every contender.
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    drop(buf);
    let rss_before = peak_rss_kib();

    let patterns = ["error", "warn", "login failed", "slow query"];
    let opts = tej_host::LogReviewOptions::all_time(jiff::Timestamp::now());
    let one_opts = tej_host::LogReviewOptions {
        threads: 1,
        ..opts.clone()
    };
    let since_opts = tej_host::LogReviewOptions::window(
        jiff::Timestamp::now(),
        jiff::SignedDuration::from_hours(24),
    );
    let (mut grep_t, mut rg_t, mut cli_t, mut lib_t, mut one_t, mut since_t) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut other_t: [Vec<Duration>; 3] = Default::default();
    let mut grep_counts = Vec::new();
    let mut rg_lines = 0;
    let mut report = None;
    let (mut grep_cpu, mut one_cpu) = (0.0, 0.0);
    // Interleaved: each run times every contender once, so that load from other processes
    // on a shared machine falls on all of them alike.
    for _ in 0..runs {
        let c = child_cpu_seconds();
        let t = Instant::now();
        grep_counts = patterns
            .iter()
            .map(|p| grep_count(p, &path))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        grep_t.push(t.elapsed());
        grep_cpu += child_cpu_seconds() - c;
        let t = Instant::now();
        rg_lines = rg_count(&path)?;
        rg_t.push(t.elapsed());
        let t = Instant::now();
        tej_cli(tej, &path, "json")?;
        cli_t.push(t.elapsed());
        for (i, (format, _)) in FORMATS.iter().enumerate().skip(1) {
            let t = Instant::now();
            tej_cli(tej, &path, format)?;
            other_t[i - 1].push(t.elapsed());
        }
        let t = Instant::now();
        let r = tej_host::review_logs(std::slice::from_ref(&path), &opts)?;
        lib_t.push(t.elapsed());
        let c = cpu_seconds();
        let t = Instant::now();
        let one = tej_host::review_logs(std::slice::from_ref(&path), &one_opts)?;
        one_t.push(t.elapsed());
        one_cpu += cpu_seconds() - c;
        anyhow::ensure!(one.classes == r.classes, "one thread and many disagree");
        let t = Instant::now();
        let since = tej_host::review_logs(std::slice::from_ref(&path), &since_opts)?;
        since_t.push(t.elapsed());
        anyhow::ensure!(
            since.classes == r.classes,
            "--since 24h changed the counts of a log written in the last 12 hours"
        );
        report = Some(r);
    }
    let report = report.ok_or_else(|| anyhow::anyhow!("no run"))?;
    let tej_counts: Vec<u64> = tej_host::LogClass::ALL
        .iter()
        .map(|c| report.count(*c))
        .collect();
    let rss_after = peak_rss_kib();
    let mb = size as f64 / 1e6;
    let line = |name: &str, d: Duration| {
        println!(
            "{name:<44}: {:>7.3} s {:>6.0} MB/s",
            d.as_secs_f64(),
            mb / d.as_secs_f64()
        )
    };
    let (g, rg, cli) = (median(grep_t), median(rg_t), median(cli_t));
    println!("runs per contender: {runs} (medians)");
    println!("counts grep -i -c (error, warn, login failed, slow query): {grep_counts:?}");
    println!("counts tej                                              : {tej_counts:?}");
    println!("lines rg -c (any of the four): {rg_lines}");
    line("4 x grep -i -c", g);
    line("rg -c -i, four patterns", rg);
    line("tej logs review --since 100000h --output json", cli);
    for (i, (format, _)) in FORMATS.iter().enumerate().skip(1) {
        line(
            &format!("tej logs review ... --output {format}"),
            median(std::mem::take(&mut other_t[i - 1])),
        );
    }
    line("review_logs, all threads", median(lib_t));
    line("review_logs, 1 thread", median(one_t));
    line("review_logs, --since 24h", median(since_t));
    println!(
        "CPU per run: 4 x grep {:.2} s, review_logs 1 thread {:.2} s",
        grep_cpu / runs as f64,
        one_cpu / runs as f64
    );
    println!(
        "load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let vs_grep = g.as_secs_f64() / cli.as_secs_f64();
    let vs_rg = cli.as_secs_f64() / rg.as_secs_f64();
    println!("tej vs 4 x grep: {vs_grep:.2}x faster (goal >= 4x)");
    println!("tej vs rg -c   : {vs_rg:.2}x rg's time (goal <= 1.5x)");
    println!(
        "peak RSS of this process: {rss_before} KiB before reviews, {rss_after} KiB after (file {} MiB)",
        size >> 20
    );
    println!(
        "top pattern: {:?}",
        report.top_patterns.first().map(|p| (&p.pattern, p.count))
    );
    println!(
        "failed-login addresses: {} (top {:?})",
        report.failed_logins_by_address.len(),
        report.failed_logins_by_address.first()
    );
    drop(dir);
    anyhow::ensure!(grep_counts == tej_counts, "tej and grep disagree on counts");
    Ok(vs_grep >= 4.0 && vs_rg <= 1.5)
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
    let shapes =
        std::env::var("TEJ_BENCH_LOG_SHAPES").unwrap_or_else(|_| "plain,pino-mixed".into());
    // `TEJ_BENCH_LOG_GENERATE=FILE`: only write the first shape's log to FILE (for profiling).
    if let Ok(out) = std::env::var("TEJ_BENCH_LOG_GENERATE") {
        let shape = shapes.split(',').next().unwrap_or("plain").trim();
        let path = Path::new(&out);
        let n = match shape {
            "pino-mixed" => generate_pino_mixed(path, mib << 20)?,
            _ => generate_plain(path, mib << 20)?,
        };
        println!("wrote {n} bytes of {shape} to {out}");
        return Ok(());
    }
    let tej = tej_binary()?;
    let mut met = true;
    for shape in shapes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        met &= bench_shape(shape, mib, runs, &tej)?;
    }
    if !met {
        println!("RESULT: FAIL (a goal was missed)");
        std::process::exit(1);
    }
    println!("RESULT: PASS");
    Ok(())
}
