//! # tej-benches
//!
//! Inputs for tej's criterion micro-benchmarks (`benches/`), generated from a seed so that
//! every run measures the same bytes, and shaped like production data rather than like
//! what the measured code is fast at:
//!
//! - [`write_file_set`]: an application's files (logs, JSON records, CSV exports, HTML
//!   templates and incompressible uploads, of varied sizes) for the backup pipeline;
//! - [`backup_history`]: a repository's history of finished and failed runs over years,
//!   in several series (three databases, a cluster's physical backups, a file set), for
//!   retention planning;
//! - [`plain_log`], [`json_log`] and [`log_lines`]: mixed log lines (application lines,
//!   nginx access lines, sshd syslog lines, PostgreSQL lines, stack traces; pino JSON lines)
//!   for the log review.
//!
//! [`full_size`] tells a measurement (`cargo bench`) from the smoke run that `cargo test
//! --benches` makes of each benchmark, which runs every benchmark once on smaller inputs.

use jiff::{SignedDuration, Timestamp};
use std::io::{self, Write};
use std::path::Path;
use tej_backup::{BackupId, BackupKind, Candidate, CandidateState, Series};

/// Whether this process measures (`cargo bench` passes `--bench`) rather than smoke-tests
/// the benchmarks (`cargo test --benches`, where each runs once).
pub fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A small, fast, seeded pseudo-random generator (xorshift64*): the same seed gives the same
/// inputs on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "session",
    "order",
    "payment",
    "invoice",
    "profile",
    "upload",
    "search",
    "cart",
    "token",
    "refresh",
    "webhook",
    "notification",
    "report",
    "export",
    "import",
    "queue",
    "worker",
    "cache",
    "timeout",
    "retry",
    "user",
    "account",
    "password",
    "email",
    "verified",
    "pending",
    "shipped",
    "cancelled",
    "refund",
    "subscription",
    "trial",
    "coupon",
    "address",
    "review",
];
const FIRST: &[&str] = &[
    "Aarav", "Priya", "Rohan", "Ananya", "Vikram", "Meera", "Arjun", "Kavya", "Sara", "Liam",
    "Noah", "Emma", "Olivia", "Lucas", "Mia", "Ishaan", "Diya", "Kabir", "Zoya", "Aditi",
];
const LAST: &[&str] = &[
    "Sharma", "Patel", "Iyer", "Reddy", "Nair", "Gupta", "Khan", "Singh", "Das", "Menon", "Smith",
    "Garcia", "Müller", "Rossi", "Kowalski", "Silva", "Chen", "Kim", "Ito", "Okafor",
];
const PATHS: &[&str] = &[
    "/api/v1/users/{}",
    "/api/v1/orders/{}",
    "/api/v1/orders/{}/items",
    "/api/v1/search?q={}",
    "/api/v1/sessions",
    "/static/js/app.{}.js",
    "/static/img/avatar/{}.jpg",
    "/health",
    "/api/v2/payments/{}/capture",
    "/admin/reports/{}",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "Prometheus/2.53.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

/// `min` to `min + extra` words.
fn words_upto(r: &mut Rng, min: usize, extra: u64) -> String {
    let n = min + r.below(extra + 1) as usize;
    words(r, n)
}

fn words(r: &mut Rng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(r.pick(WORDS));
    }
    s
}

/// A random version-4-shaped UUID.
pub fn uuid(r: &mut Rng) -> String {
    let a = r.next_u64();
    let b = r.next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a as u32,
        (a >> 32) as u16,
        (a >> 48) as u16 & 0xfff,
        b as u16,
        (b >> 16) & 0xffff_ffff_ffff
    )
}

/// An address from the documentation ranges (never routable).
fn ip(r: &mut Rng) -> String {
    let net = r.pick(&["192.0.2", "198.51.100", "203.0.113"]);
    format!("{net}.{}", r.below(254) + 1)
}

fn path(r: &mut Rng) -> String {
    let p = r.pick(PATHS);
    p.replace("{}", &r.below(200_000).to_string())
}

/// One plain-text log line (without its newline) at `t`, in one of the formats a web
/// platform's host collects: the application's own lines (mostly INFO, some DEBUG, WARN,
/// ERROR, failed logins, slow queries), nginx access lines, sshd syslog lines, PostgreSQL
/// server lines and stack-trace continuation lines.
pub fn plain_line(r: &mut Rng, t: Timestamp) -> String {
    let iso = t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    match r.below(1000) {
        0..=519 => format!(
            "{iso} INFO  [{}] {} {} {} {}ms req={} ip={}",
            r.pick(&["http", "api", "worker", "mailer"]),
            r.pick(&["GET", "GET", "GET", "POST", "PUT", "DELETE"]),
            path(r),
            r.pick(&[200, 200, 200, 201, 204, 301, 304, 404]),
            r.below(800),
            uuid(r),
            ip(r)
        ),
        520..=639 => format!(
            "{} - - [{}] \"{} {} HTTP/1.1\" {} {} \"-\" \"{}\"",
            ip(r),
            t.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            r.pick(&["GET", "GET", "POST"]),
            path(r),
            r.pick(&[200, 200, 200, 304, 404, 499, 502]),
            r.below(90_000),
            r.pick(AGENTS)
        ),
        640..=719 => format!(
            "{iso} DEBUG [cache] {} key={}:{} ttl={}",
            r.pick(&["hit", "miss", "set", "evict"]),
            r.pick(WORDS),
            r.below(100_000),
            r.below(86_400)
        ),
        720..=809 => format!(
            "{iso} WARN  [{}] {} ({}% of {}), waiting={}",
            r.pick(&["pool", "queue", "rate-limit"]),
            words(r, 3),
            r.below(100),
            r.pick(&[20, 50, 100]),
            r.below(40)
        ),
        810..=859 => format!(
            "{} {} sshd[{}]: {} from {} port {} ssh2",
            t.strftime("%b %e %H:%M:%S"),
            r.pick(&["web-1", "web-2", "db-1"]),
            r.below(60_000) + 1000,
            r.pick(&[
                "Accepted publickey for deploy",
                "Failed password for invalid user admin",
                "Failed password for root",
                "Connection closed by authenticating user ubuntu",
            ]),
            ip(r),
            r.below(60_000) + 1024
        ),
        860..=909 => format!(
            "{} UTC [{}] {}@{} LOG:  duration: {}.{:03} ms  statement: SELECT {} FROM {} WHERE id = {}",
            t.strftime("%Y-%m-%d %H:%M:%S%.3f"),
            r.below(90_000) + 100,
            r.pick(&["app", "analytics", "auth"]),
            r.pick(&["app", "analytics"]),
            r.below(3000),
            r.below(1000),
            r.pick(&["*", "id, email", "count(*)"]),
            r.pick(&["orders", "sessions", "users", "events"]),
            r.below(1_000_000)
        ),
        910..=944 => format!(
            "{iso} ERROR [api] Unhandled error in {}: {} req={}",
            path(r),
            r.pick(&[
                "ECONNRESET",
                "ETIMEDOUT",
                "TypeError: Cannot read properties of undefined (reading 'id')",
                "connection terminated unexpectedly",
            ]),
            uuid(r)
        ),
        945..=974 => format!(
            "    at {} (/app/src/{}/{}.js:{}:{})",
            r.pick(&[
                "Object.<anonymous>",
                "async Promise.all",
                "Router.handle",
                "next"
            ]),
            r.pick(&["routes", "services", "models"]),
            r.pick(WORDS),
            r.below(400) + 1,
            r.below(80) + 1
        ),
        975..=989 => format!(
            "{iso} INFO  [auth] Login failed for user {}.{}{} from {}",
            r.pick(FIRST).to_lowercase(),
            r.pick(LAST).to_lowercase(),
            r.below(100),
            ip(r)
        ),
        _ => format!(
            "{iso} WARN  [db] Slow query ({}ms): SELECT * FROM {} WHERE user_id = {}",
            r.below(5000) + 500,
            r.pick(&["sessions", "orders", "events"]),
            r.below(100_000)
        ),
    }
}

/// One pino-style JSON log line (without its newline) at `t`: level 20–50, the time in
/// epoch milliseconds, host and process, a message and, for requests, a nested `req`.
pub fn json_line(r: &mut Rng, t: Timestamp) -> String {
    let level = match r.below(100) {
        0..=9 => 20,
        10..=84 => 30,
        85..=95 => 40,
        _ => 50,
    };
    let msg = match level {
        20 => format!(
            "cache {} {}:{}",
            r.pick(&["hit", "miss"]),
            r.pick(WORDS),
            r.below(1000)
        ),
        30 if r.chance(3) => format!("Login failed for user {}", r.pick(FIRST).to_lowercase()),
        30 => format!("request completed {}", words(r, 2)),
        40 if r.chance(20) => format!(
            "Slow query ({}ms) on {}",
            r.below(5000) + 500,
            r.pick(WORDS)
        ),
        40 => format!("{} nearly exhausted", r.pick(&["pool", "quota", "disk"])),
        _ => format!(
            "Unhandled rejection: {}",
            r.pick(&["ECONNRESET", "ETIMEDOUT", "EPIPE"])
        ),
    };
    format!(
        r#"{{"level":{level},"time":{},"pid":{},"hostname":"{}","reqId":"{}","req":{{"method":"{}","url":"{}","remoteAddress":"{}"}},"responseTime":{}.{},"msg":"{msg}"}}"#,
        t.as_millisecond(),
        r.below(30_000) + 1,
        r.pick(&["web-1", "web-2", "worker-1"]),
        uuid(r),
        r.pick(&["GET", "POST"]),
        path(r),
        ip(r),
        r.below(900),
        r.below(1000)
    )
}

/// `n` plain lines ([`plain_line`]) spread over the 12 hours before `now`, in time order.
pub fn log_lines(n: usize, now: Timestamp, seed: u64) -> Vec<String> {
    let mut r = Rng::new(seed);
    let span = 12 * 3600 * 1000;
    (0..n)
        .map(|i| {
            let ms = span - span * (i as i64) / (n.max(1) as i64);
            plain_line(&mut r, now - SignedDuration::from_millis(ms))
        })
        .collect()
}

fn write_log(
    path: &Path,
    bytes: u64,
    now: Timestamp,
    seed: u64,
    line: fn(&mut Rng, Timestamp) -> String,
) -> io::Result<u64> {
    let mut w = io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut r = Rng::new(seed);
    // About 150 bytes a line: spread the lines over the 36 hours before `now`, so a
    // `--since 24h` review skips about a third of them.
    let lines = (bytes / 150).max(1) as i64;
    let span_ms = 36 * 3600 * 1000;
    let mut written = 0u64;
    let mut i = 0i64;
    while written < bytes {
        let back = span_ms - span_ms * i.min(lines) / lines;
        let mut l = line(&mut r, now - SignedDuration::from_millis(back));
        l.push('\n');
        w.write_all(l.as_bytes())?;
        written += l.len() as u64;
        i += 1;
    }
    w.flush()?;
    Ok(written)
}

/// Writes about `bytes` of mixed plain log lines ([`plain_line`]) over the 36 hours
/// before `now` into `path`; returns the bytes written.
pub fn plain_log(path: &Path, bytes: u64, now: Timestamp, seed: u64) -> io::Result<u64> {
    write_log(path, bytes, now, seed, plain_line)
}

/// Writes about `bytes` of pino JSON lines ([`json_line`]) over the 36 hours before `now`
/// into `path`; returns the bytes written.
pub fn json_log(path: &Path, bytes: u64, now: Timestamp, seed: u64) -> io::Result<u64> {
    write_log(path, bytes, now, seed, json_line)
}

fn file_content(r: &mut Rng, kind: u64, size: usize, now: Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 512);
    match kind {
        // Uploads: JPEG/PNG/PDF bodies are already compressed.
        0 => {
            out.extend_from_slice(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00");
            let start = out.len();
            out.resize(size.max(start), 0);
            r.fill(&mut out[start..]);
        }
        // Application logs.
        1 => {
            let mut i = 0i64;
            while out.len() < size {
                let l = plain_line(r, now - SignedDuration::from_secs(86_400 - i));
                out.extend_from_slice(l.as_bytes());
                out.push(b'\n');
                i += 1;
            }
        }
        // JSON records (user profiles), one per line.
        2 => {
            while out.len() < size {
                let (f, l) = (r.pick(FIRST), r.pick(LAST));
                let rec = format!(
                    r#"{{"id":"{}","name":"{f} {l}","email":"{}.{}{}@example.com","created":"{}","plan":"{}","bio":"{}","score":{}}}"#,
                    uuid(r),
                    f.to_lowercase(),
                    l.to_lowercase(),
                    r.below(1000),
                    (now - SignedDuration::from_secs(r.below(4 * 365 * 86_400) as i64))
                        .strftime("%Y-%m-%dT%H:%M:%SZ"),
                    r.pick(&["free", "pro", "team"]),
                    words_upto(r, 4, 11),
                    r.below(10_000)
                );
                out.extend_from_slice(rec.as_bytes());
                out.push(b'\n');
            }
        }
        // CSV exports of orders.
        3 => {
            out.extend_from_slice(b"order_id,user_id,amount_inr,status,created_at\n");
            while out.len() < size {
                let row = format!(
                    "{},{},{}.{:02},{},{}\n",
                    r.below(10_000_000),
                    r.below(500_000),
                    r.below(50_000),
                    r.below(100),
                    r.pick(&["paid", "pending", "shipped", "refunded"]),
                    (now - SignedDuration::from_secs(r.below(365 * 86_400) as i64))
                        .strftime("%Y-%m-%d %H:%M:%S")
                );
                out.extend_from_slice(row.as_bytes());
            }
        }
        // HTML templates and styles.
        _ => {
            while out.len() < size {
                let block = format!(
                    "<div class=\"card card-{}\">\n  <h2>{}</h2>\n  <p>{}</p>\n  <a href=\"{}\">{}</a>\n</div>\n",
                    r.pick(WORDS),
                    words(r, 3),
                    words_upto(r, 8, 19),
                    path(r),
                    r.pick(WORDS)
                );
                out.extend_from_slice(block.as_bytes());
            }
        }
    }
    out.truncate(size);
    out
}

/// Writes an application's files, about `bytes` in all, under `root` (created): uploads
/// (random bytes: incompressible, about a third of the bytes), application logs, JSON
/// records, CSV exports and HTML templates, in sizes from 1 KiB to 4 MiB (mostly small), spread over
/// nested directories. Returns the number of files and the bytes written.
pub fn write_file_set(
    root: &Path,
    bytes: u64,
    now: Timestamp,
    seed: u64,
) -> io::Result<(u64, u64)> {
    let mut r = Rng::new(seed);
    let dirs = [
        "uploads/avatars",
        "uploads/invoices",
        "logs",
        "data/users",
        "exports",
        "templates/email",
        "templates/web",
    ];
    let mut written = 0u64;
    let mut files = 0u64;
    while written < bytes {
        // Byte shares: uploads ~35 %, logs ~25 %, JSON ~15 %, CSV ~15 %, HTML ~10 %.
        let kind = match r.below(100) {
            0..=34 => 0,
            35..=59 => 1,
            60..=74 => 2,
            75..=89 => 3,
            _ => 4,
        };
        // Mostly small files, some large: 1 KiB · 2^k for k in 0..=12 (up to 4 MiB), smaller
        // k more likely (the smaller of two draws).
        let k = r.below(13).min(r.below(13));
        let size = (1024u64 << k) + r.below(1024);
        let size = size.min(bytes - written).max(1) as usize;
        let dir = root.join(match kind {
            0 => dirs[r.below(2) as usize],
            1 => dirs[2],
            2 => dirs[3],
            3 => dirs[4],
            _ => dirs[5 + r.below(2) as usize],
        });
        std::fs::create_dir_all(&dir)?;
        let ext = ["jpg", "log", "json", "csv", "html"][kind as usize];
        let data = file_content(&mut r, kind, size, now);
        std::fs::write(dir.join(format!("{files:05}.{ext}")), &data)?;
        written += data.len() as u64;
        files += 1;
    }
    Ok((files, written))
}

/// One series of a [`backup_history`]: what is backed up, how often, how it goes.
struct SeriesSpec {
    series: Series,
    /// The target name in the ids.
    target: &'static str,
    /// Start times in IST hours (one backup per hour listed, every day).
    hours: &'static [i64],
    /// Only on Sundays (weekly).
    weekly: bool,
}

/// A repository's history of `finished` finished backups before `now`, plus the failed
/// runs between them, as retention sees it: newest last day first, back over years.
///
/// Series: the `app` database dumped at 02:00 and 14:00 IST, `analytics` and `auth` at
/// 02:30, a physical base backup of the cluster every night at 01:00 and a full one on
/// Sundays at 03:00, the uploads and configuration file set at 04:00. Start times vary by
/// up to 20 minutes and runs take 1–90 minutes; about 2 % of runs fail (no manifest), 1 %
/// of nights are skipped (host down), about 60 % of backups were verified, 1 % failed
/// verification. The newest run of every series succeeded, so nothing is blocked.
pub fn backup_history(
    finished: usize,
    now: Timestamp,
    seed: u64,
) -> (Vec<(Series, Candidate)>, Vec<Candidate>) {
    let specs = [
        SeriesSpec {
            series: Series::logical("app"),
            target: "app",
            hours: &[2, 14],
            weekly: false,
        },
        SeriesSpec {
            series: Series::logical("analytics"),
            target: "analytics",
            hours: &[2],
            weekly: false,
        },
        SeriesSpec {
            series: Series::logical("auth"),
            target: "auth",
            hours: &[2],
            weekly: false,
        },
        SeriesSpec {
            series: Series {
                kind: BackupKind::Physical,
                target: "7312845590218735642".into(),
            },
            target: "cluster",
            hours: &[1],
            weekly: false,
        },
        SeriesSpec {
            series: Series {
                kind: BackupKind::Physical,
                target: "7312845590218735642".into(),
            },
            target: "cluster-full",
            hours: &[3],
            weekly: true,
        },
        SeriesSpec {
            series: Series {
                kind: BackupKind::Files,
                target: "/etc/nginx,/opt/app/uploads".into(),
            },
            target: "files",
            hours: &[4],
            weekly: false,
        },
    ];
    let ist = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap_or(jiff::tz::TimeZone::UTC);
    let mut r = Rng::new(seed);
    let mut done = Vec::with_capacity(finished);
    let mut failed = Vec::new();
    let today = now.to_zoned(ist.clone()).date();
    let mut day = 0i64;
    while done.len() < finished {
        let date = today - jiff::Span::new().days(day);
        day += 1;
        let newest_day = day == 1;
        if !newest_day && r.chance(1) {
            continue;
        }
        for spec in &specs {
            if spec.weekly && date.weekday() != jiff::civil::Weekday::Sunday {
                continue;
            }
            for &h in spec.hours {
                if done.len() == finished {
                    break;
                }
                let start = date
                    .at(h as i8, 0, 0, 0)
                    .to_zoned(ist.clone())
                    .map(|z| z.timestamp())
                    .unwrap_or(now)
                    + SignedDuration::from_secs(r.below(20 * 60) as i64);
                let end = start + SignedDuration::from_secs(60 + r.below(89 * 60) as i64);
                if end >= now {
                    continue;
                }
                let id = BackupId::new(start, spec.target);
                if !newest_day && r.chance(2) {
                    failed.push(Candidate {
                        id,
                        time: start,
                        state: CandidateState::Failed,
                    });
                    continue;
                }
                let state = match r.below(100) {
                    0 if !newest_day => CandidateState::VerifyFailed,
                    1..=60 => CandidateState::Verified,
                    _ => CandidateState::Unverified,
                };
                done.push((
                    spec.series.clone(),
                    Candidate {
                        id,
                        time: end,
                        state,
                    },
                ));
            }
        }
    }
    (done, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn now() -> Timestamp {
        "2026-12-02T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn history_has_the_size_asked_in_six_series_over_years_and_blocks_nothing() {
        let (done, failed) = backup_history(10_000, now(), 7);
        assert_eq!(done.len(), 10_000);
        let series: HashSet<_> = done.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(
            series.len(),
            5,
            "five series (the two physical targets share one)"
        );
        let oldest = done.iter().map(|(_, c)| c.time).min().unwrap();
        assert!(
            now().duration_since(oldest).as_hours() > 3 * 365 * 24,
            "{oldest}"
        );
        assert!(!failed.is_empty());
        assert!(
            done.iter()
                .any(|(_, c)| c.state == CandidateState::VerifyFailed)
        );
        let ids: HashSet<_> = done.iter().map(|(_, c)| c.id.clone()).collect();
        assert_eq!(ids.len(), done.len(), "ids are unique");
        let plan = tej_backup::plan_series_retention(
            &tej_backup::RetentionPolicy::default(),
            &done,
            &failed,
            Some(7),
            now(),
        );
        assert_eq!(plan.blocked, None);
        assert_eq!(plan.decisions.len(), 10_000);
        let kept = plan.decisions.iter().filter(|d| d.keep).count();
        assert!(kept > 10 && kept < 1_000, "{kept} kept");
    }

    #[test]
    fn logs_mix_every_class_and_format() {
        let lines = log_lines(5_000, now(), 1);
        let has = |s: &str| lines.iter().any(|l| l.to_lowercase().contains(s));
        for needle in [
            "error",
            "warn",
            "login failed",
            "slow query",
            "sshd[",
            "\" 200 ",
            "    at ",
        ] {
            assert!(has(needle), "no line with {needle:?}");
        }
        let stamped = lines
            .iter()
            .filter(|l| tej_host::parse_timestamp(l.as_bytes(), now()).is_some())
            .count();
        assert!(
            stamped > 4_500 && stamped < 5_000,
            "{stamped} of 5000 stamped"
        );
        let mut r = Rng::new(2);
        for _ in 0..200 {
            let l = json_line(&mut r, now());
            assert!(l.starts_with(r#"{"level":"#) && l.ends_with("\"}"), "{l}");
        }
    }

    #[test]
    fn file_set_has_its_size_and_an_incompressible_share() {
        let dir = std::env::temp_dir().join(format!("tej-benches-{}", std::process::id()));
        let (files, bytes) = write_file_set(&dir, 8 << 20, now(), 3).unwrap();
        let on_disk: u64 = walk(&dir).iter().map(|p| p.metadata().unwrap().len()).sum();
        let uploads: u64 = walk(&dir.join("uploads"))
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bytes, 8 << 20);
        assert_eq!(on_disk, bytes);
        assert!(files > 10, "{files} files");
        assert!(
            uploads > bytes / 10 && uploads < bytes * 7 / 10,
            "{uploads} of {bytes} in uploads"
        );
    }

    fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
