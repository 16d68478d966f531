//! The nginx access log, read for the performance check (p95 response time, 5xx share) and the
//! security review (failed logins, SQL-injection probes, rate-limit hits, one address flooding).
//!
//! Lines are nginx's `combined` format, optionally followed by `$request_time` (seconds, as
//! `0.123` or `rt=0.123`), which is what response times need:
//!
//! ```text
//! log_format timed '$remote_addr - $remote_user [$time_local] "$request" $status '
//!                  '$body_bytes_sent "$http_referer" "$http_user_agent" $request_time';
//! ```
//!
//! The file is read with its rotated siblings (`access.log.1`, `access.log.2.gz`...), keeping
//! lines inside the window; lines that are not in this format are counted, never fatal.

use crate::error::{Result, RunbookError};
use jiff::Timestamp;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// One parsed request line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessEntry {
    /// Client address as logged.
    pub addr: String,
    /// When (`$time_local`).
    pub time: Option<Timestamp>,
    /// Method (`GET`).
    pub method: String,
    /// Request target (`/api/v1/users?page=2`).
    pub path: String,
    /// Status code.
    pub status: u16,
    /// `$request_time` in seconds, when logged.
    pub request_time: Option<f64>,
    /// User agent.
    pub user_agent: String,
}

fn quoted(s: &str) -> Option<(&str, &str)> {
    // `s` starts at an opening quote; nginx escapes `"` inside as `\x22`, so the next quote ends it.
    let rest = s.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// Parses one combined-format line (with an optional trailing `$request_time`).
pub fn parse_access_line(line: &str, now: Timestamp) -> Option<AccessEntry> {
    let line = line.trim_end();
    let (addr, rest) = line.split_once(' ')?;
    let open = rest.find('[')?;
    let close = rest[open..].find(']')? + open;
    let time = tej_host::parse_timestamp(&rest.as_bytes()[open..=close], now).map(|(t, _)| t);
    let rest = rest[close + 1..].trim_start();
    let (request, rest) = quoted(rest)?;
    let mut parts = request.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut fields = rest.trim_start().splitn(3, ' ');
    let status: u16 = fields.next()?.parse().ok()?;
    let _bytes = fields.next();
    let rest = fields.next().unwrap_or("").trim_start();
    let (user_agent, request_time) = match quoted(rest) {
        Some((_referer, after)) => match quoted(after.trim_start()) {
            Some((ua, tail)) => (ua.to_string(), request_time(tail)),
            None => (String::new(), request_time(after)),
        },
        None => (String::new(), request_time(rest)),
    };
    Some(AccessEntry {
        addr: addr.to_string(),
        time,
        method,
        path,
        status,
        request_time,
        user_agent,
    })
}

fn request_time(tail: &str) -> Option<f64> {
    tail.split_whitespace()
        .map(|t| {
            t.strip_prefix("rt=")
                .or_else(|| t.strip_prefix("request_time="))
                .unwrap_or(t)
        })
        .find_map(|t| t.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// The nearest-rank percentile `p` (0..=100) of `values` (reordered); `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let idx = rank.clamp(1, n) - 1;
    let (_, v, _) = values.select_nth_unstable_by(idx, |a, b| a.total_cmp(b));
    Some(*v)
}

/// Substrings (after decoding and lower-casing) that mark SQL-injection probes.
pub const SQLI_PATTERNS: &[&str] = &[
    "union select",
    "union all select",
    "' or '1'='1",
    "' or 1=1",
    "\" or 1=1",
    " or 1=1--",
    "'--",
    "';--",
    "; drop table",
    ";drop table",
    "information_schema",
    "pg_sleep(",
    "sleep(",
    "benchmark(",
    "waitfor delay",
    "xp_cmdshell",
    "load_file(",
    "into outfile",
    "@@version",
    "/*!",
];

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The SQL-injection pattern in a request target, if any (decoded twice, comments and runs of
/// whitespace collapsed, case ignored).
pub fn sql_injection_pattern(target: &str) -> Option<&'static str> {
    let decoded = percent_decode(&percent_decode(target)).to_lowercase();
    let no_comments = decoded.replace("/**/", " ");
    let norm = no_comments.split_whitespace().collect::<Vec<_>>().join(" ");
    SQLI_PATTERNS
        .iter()
        .copied()
        .find(|p| norm.contains(p) || decoded.contains(p))
}

/// Whether a request is a failed login: a POST to a path naming login/signin/auth answered 401/403.
pub fn is_failed_login(e: &AccessEntry) -> bool {
    let p = e.path.to_ascii_lowercase();
    e.method == "POST"
        && (e.status == 401 || e.status == 403)
        && (p.contains("login") || p.contains("signin") || p.contains("/auth"))
}

/// Requests of one client address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddressRequests {
    /// Address.
    pub addr: String,
    /// Requests.
    pub count: u64,
}

/// A request that looked like SQL injection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuspiciousRequest {
    /// Client address.
    pub addr: String,
    /// Pattern matched.
    pub pattern: String,
    /// The request target (cut to 200 bytes).
    pub path: String,
    /// Status answered.
    pub status: u16,
}

/// What the access log says about a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AccessLogStats {
    /// Files read.
    pub files: Vec<PathBuf>,
    /// Lines read (any time).
    pub lines: u64,
    /// Lines not in the combined format.
    pub unparsed: u64,
    /// Requests inside the window.
    pub requests: u64,
    /// Of which answered 5xx.
    pub server_errors: u64,
    /// Of which answered 429 (rate limited).
    pub rate_limited: u64,
    /// Requests with `$request_time`.
    pub timed: u64,
    /// Median response time, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Failed logins (POST login answered 401/403).
    pub failed_logins: u64,
    /// Failed logins per address, most first (top 10).
    pub failed_logins_by_address: Vec<AddressRequests>,
    /// Requests matching SQL-injection patterns.
    pub sql_injection: u64,
    /// The first few of them.
    pub sql_injection_examples: Vec<SuspiciousRequest>,
    /// 429s per address, most first (top 10).
    pub rate_limited_by_address: Vec<AddressRequests>,
    /// Requests per address, most first (top 10).
    pub top_addresses: Vec<AddressRequests>,
}

impl AccessLogStats {
    /// Share of requests answered 5xx, percent (`None` without requests).
    pub fn error_rate_percent(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.server_errors as f64 * 100.0 / self.requests as f64)
    }
}

/// Accumulates entries into [`AccessLogStats`].
#[derive(Debug, Default)]
pub struct AccessLogAccumulator {
    stats: AccessLogStats,
    times: Vec<f64>,
    by_addr: HashMap<String, u64>,
    logins: HashMap<String, u64>,
    limited: HashMap<String, u64>,
}

fn top(map: HashMap<String, u64>, n: usize) -> Vec<AddressRequests> {
    let mut v: Vec<AddressRequests> = map
        .into_iter()
        .map(|(addr, count)| AddressRequests { addr, count })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.addr.cmp(&b.addr)));
    v.truncate(n);
    v
}

impl AccessLogAccumulator {
    /// Counts one entry.
    pub fn add(&mut self, e: &AccessEntry) {
        let s = &mut self.stats;
        s.requests += 1;
        if (500..600).contains(&e.status) {
            s.server_errors += 1;
        }
        if e.status == 429 {
            s.rate_limited += 1;
            *self.limited.entry(e.addr.clone()).or_default() += 1;
        }
        if let Some(t) = e.request_time {
            s.timed += 1;
            self.times.push(t * 1000.0);
        }
        if is_failed_login(e) {
            s.failed_logins += 1;
            *self.logins.entry(e.addr.clone()).or_default() += 1;
        }
        if let Some(p) = sql_injection_pattern(&e.path) {
            s.sql_injection += 1;
            if s.sql_injection_examples.len() < 10 {
                let mut path = e.path.clone();
                if path.len() > 200 {
                    let mut cut = 200;
                    while !path.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    path.truncate(cut);
                }
                s.sql_injection_examples.push(SuspiciousRequest {
                    addr: e.addr.clone(),
                    pattern: p.to_string(),
                    path,
                    status: e.status,
                });
            }
        }
        *self.by_addr.entry(e.addr.clone()).or_default() += 1;
    }

    /// Counts a line that is not in the format.
    pub fn unparsed(&mut self) {
        self.stats.unparsed += 1;
    }

    /// The statistics.
    pub fn finish(mut self) -> AccessLogStats {
        self.stats.p50_ms = percentile(&mut self.times, 50.0);
        self.stats.p95_ms = percentile(&mut self.times, 95.0);
        self.stats.p99_ms = percentile(&mut self.times, 99.0);
        self.stats.top_addresses = top(self.by_addr, 10);
        self.stats.failed_logins_by_address = top(self.logins, 10);
        self.stats.rate_limited_by_address = top(self.limited, 10);
        self.stats
    }
}

/// `path` and its rotated siblings (`path.1`, `path.2.gz`...), oldest first.
pub fn access_log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(rd) = std::fs::read_dir(dir) {
            for entry in rd.flatten() {
                let fname = entry.file_name();
                let Some(f) = fname.to_str() else { continue };
                let Some(suffix) = f.strip_prefix(name).and_then(|s| s.strip_prefix('.')) else {
                    continue;
                };
                let num = suffix.strip_suffix(".gz").unwrap_or(suffix);
                if let Ok(n) = num.parse::<u32>() {
                    rotated.push((n, entry.path()));
                }
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(path.to_path_buf());
    out
}

/// Reads the access log at `path` (and its rotated siblings), counting requests at or after
/// `since` (all when `None`; lines without a time are counted).
pub fn analyze_access_log(
    path: &Path,
    since: Option<Timestamp>,
    now: Timestamp,
) -> Result<AccessLogStats> {
    if !path.exists() {
        return Err(RunbookError::Io {
            action: "read access log",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let mut acc = AccessLogAccumulator::default();
    let mut files = Vec::new();
    let mut lines = 0u64;
    for file in access_log_files(path) {
        let f = std::fs::File::open(&file).map_err(|source| RunbookError::Io {
            action: "read access log",
            path: file.clone(),
            source,
        })?;
        let reader: Box<dyn Read> = if file.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|source| RunbookError::Io {
                    action: "read access log",
                    path: file.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            lines += 1;
            let line = String::from_utf8_lossy(&buf);
            if line.trim().is_empty() {
                continue;
            }
            match parse_access_line(&line, now) {
                Some(e) => {
                    if let (Some(s), Some(t)) = (since, e.time)
                        && t < s
                    {
                        continue;
                    }
                    acc.add(&e);
                }
                None => acc.unparsed(),
            }
        }
        files.push(file);
    }
    let mut stats = acc.finish();
    stats.files = files;
    stats.lines = lines;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-01-16T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn parses_combined_with_and_without_request_time() {
        let l = r#"203.0.113.9 - - [16/Jan/2025:10:00:00 +0530] "GET /api/v1/users?page=2 HTTP/1.1" 200 512 "-" "curl/8.0" 0.123"#;
        let e = parse_access_line(l, now()).unwrap();
        assert_eq!(e.addr, "203.0.113.9");
        assert_eq!(e.method, "GET");
        assert_eq!(e.path, "/api/v1/users?page=2");
        assert_eq!(e.status, 200);
        assert_eq!(e.request_time, Some(0.123));
        assert_eq!(e.user_agent, "curl/8.0");
        assert_eq!(e.time, Some("2025-01-16T04:30:00Z".parse().unwrap()));

        let l = r#"::1 - alice [16/Jan/2025:10:00:00 +0000] "POST /login HTTP/2.0" 401 0 "https://x/" "Mozilla/5.0 (X11; Linux)""#;
        let e = parse_access_line(l, now()).unwrap();
        assert_eq!(e.request_time, None);
        assert_eq!(e.user_agent, "Mozilla/5.0 (X11; Linux)");
        assert!(is_failed_login(&e));

        let l = r#"1.2.3.4 - - [16/Jan/2025:10:00:00 +0000] "GET / HTTP/1.1" 503 0 "-" "-" rt=1.5 uct="0.000""#;
        assert_eq!(parse_access_line(l, now()).unwrap().request_time, Some(1.5));
        assert!(parse_access_line("garbage", now()).is_none());
        assert!(parse_access_line(r#"1.2.3.4 - - [x] "GET / HTTP/1.1" abc"#, now()).is_none());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 95.0), Some(95.0));
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 100.0), Some(100.0));
        let mut one = vec![7.0];
        assert_eq!(percentile(&mut one, 95.0), Some(7.0));
        assert_eq!(percentile(&mut [], 95.0), None);
        // 19 fast and one slow: p95 is still fast (rank 19), p99 is the slow one.
        let mut v: Vec<f64> = std::iter::repeat_n(10.0, 19).chain([900.0]).collect();
        assert_eq!(percentile(&mut v, 95.0), Some(10.0));
        assert_eq!(percentile(&mut v, 99.0), Some(900.0));
    }

    #[test]
    fn sql_injection_patterns_are_found_encoded() {
        assert_eq!(
            sql_injection_pattern("/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users"),
            Some("union select")
        );
        assert_eq!(
            sql_injection_pattern("/item?id=1+or+1=1--"),
            Some(" or 1=1--")
        );
        assert_eq!(
            sql_injection_pattern("/x?id=1%2527%2520or%25201=1"),
            Some("' or 1=1")
        );
        assert_eq!(
            sql_injection_pattern("/a?q=union/**/select"),
            Some("union select")
        );
        assert_eq!(
            sql_injection_pattern("/api/v1/users?page=2&sort=name"),
            None
        );
        assert_eq!(
            sql_injection_pattern("/blog/the-union-of-selected-poems"),
            None
        );
        // A lone percent sign at the end is kept, not a panic.
        assert_eq!(sql_injection_pattern("/x?q=100%"), None);
    }

    #[test]
    fn analyze_counts_window_errors_and_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.log");
        let mut cur = String::new();
        for i in 0..1000 {
            let status = if i < 2 { 502 } else { 200 };
            let rt = if i % 100 == 0 { 0.9 } else { 0.05 };
            cur.push_str(&format!(
                "10.0.0.{} - - [16/Jan/2025:11:00:00 +0000] \"GET /api/{i} HTTP/1.1\" {status} 10 \"-\" \"ua\" {rt}\n",
                i % 5
            ));
        }
        cur.push_str("not an access log line\n");
        cur.push_str("10.0.0.9 - - [16/Jan/2025:11:30:00 +0000] \"GET /x?id=1%27%20union%20select%201 HTTP/1.1\" 429 0 \"-\" \"sqlmap\" 0.001\n");
        std::fs::write(&p, cur).unwrap();
        // A rotated file, gzipped, older than the window except one line.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            b"10.0.0.1 - - [14/Jan/2025:11:00:00 +0000] \"GET /old HTTP/1.1\" 500 0 \"-\" \"ua\" 5.0\n\
              10.0.0.1 - - [16/Jan/2025:01:00:00 +0000] \"POST /api/v1/auth/login HTTP/1.1\" 401 0 \"-\" \"ua\" 0.2\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("access.log.2.gz"), gz.finish().unwrap()).unwrap();
        let since = Some("2025-01-15T12:00:00Z".parse().unwrap());
        let s = analyze_access_log(&p, since, now()).unwrap();
        assert_eq!(s.files.len(), 2);
        assert_eq!(s.lines, 1004);
        assert_eq!(s.unparsed, 1);
        assert_eq!(s.requests, 1002);
        assert_eq!(s.server_errors, 2);
        assert_eq!(s.rate_limited, 1);
        assert_eq!(s.failed_logins, 1);
        assert_eq!(s.sql_injection, 1);
        assert_eq!(s.sql_injection_examples[0].addr, "10.0.0.9");
        assert_eq!(s.p95_ms, Some(50.0));
        // 1002 timed: 1 ms, 990 x 50 ms, 200 ms, 10 x 900 ms; rank 992 is the 200 ms login.
        assert_eq!(s.p99_ms, Some(200.0));
        assert_eq!(s.top_addresses[0].count, 201);
        let rate = s.error_rate_percent().unwrap();
        assert!((rate - 2.0 * 100.0 / 1002.0).abs() < 1e-9, "{rate}");
        assert!(analyze_access_log(&dir.path().join("nope.log"), None, now()).is_err());
    }
}
