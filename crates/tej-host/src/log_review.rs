//! Log review: one streaming pass over log files (plain, JSON lines, gzipped, rotated) that
//! counts the runbook's classes, keeps the last lines of each, groups recurring messages into
//! masked patterns and counts failed logins per source address, in bounded memory.
//!
//! Plain files are scanned on bytes: a SIMD multi-literal search finds candidate lines for all
//! classes at once (ASCII case-insensitively), and only lines that hold a class are examined
//! further. Large plain files are split into line-aligned ranges scanned by several threads.

use crate::HostError;
use crate::log_line::{find_ip, normalize_message, parse_timestamp, timestamp_from_json};
use aho_corasick::{AhoCorasick, AhoCorasickKind, packed};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The runbook's classes of interesting lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogClass {
    /// Lines containing `error` (or JSON lines at level error/fatal).
    Error,
    /// Lines containing `warn` (or JSON lines at level warn).
    Warn,
    /// Lines containing `login failed`.
    LoginFailed,
    /// Lines containing `slow query`.
    SlowQuery,
}

impl LogClass {
    /// All classes, in report order.
    pub const ALL: [LogClass; 4] = [
        LogClass::Error,
        LogClass::Warn,
        LogClass::LoginFailed,
        LogClass::SlowQuery,
    ];

    /// The text searched for (case-insensitively).
    pub fn needle(self) -> &'static str {
        match self {
            LogClass::Error => "error",
            LogClass::Warn => "warn",
            LogClass::LoginFailed => "login failed",
            LogClass::SlowQuery => "slow query",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn from_bits(bits: u8) -> Vec<LogClass> {
        LogClass::ALL
            .into_iter()
            .filter(|c| bits & c.bit() != 0)
            .collect()
    }
}

/// How a review runs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReviewOptions {
    /// Lines with a timestamp older than this are not counted; `None` counts everything.
    /// Lines without a timestamp are always counted.
    pub since: Option<Timestamp>,
    /// "Now", for syslog timestamps that carry no year.
    pub now: Timestamp,
    /// Last lines kept per class (the runbook's `tail -50`).
    pub tail_lines: usize,
    /// Patterns reported, most frequent first.
    pub top_patterns: usize,
    /// Distinct patterns tracked; further new patterns are counted as untracked.
    pub max_patterns: usize,
    /// Distinct source addresses tracked for failed logins.
    pub max_addresses: usize,
    /// Longest line kept in a tail, in bytes (longer ones are cut).
    pub max_line_bytes: usize,
    /// Scanning threads for large plain files; 0 uses the available cores.
    pub threads: usize,
}

impl LogReviewOptions {
    /// The defaults with `since` set to `window` before `now` (the CLI's `--since 24h`).
    pub fn window(now: Timestamp, window: SignedDuration) -> LogReviewOptions {
        LogReviewOptions {
            since: now.checked_sub(window).ok(),
            now,
            ..LogReviewOptions::all_time(now)
        }
    }

    /// The defaults without a time filter.
    pub fn all_time(now: Timestamp) -> LogReviewOptions {
        LogReviewOptions {
            since: None,
            now,
            tail_lines: 50,
            top_patterns: 20,
            max_patterns: 10_000,
            max_addresses: 10_000,
            max_line_bytes: 4096,
            threads: 0,
        }
    }
}

impl Default for LogReviewOptions {
    /// The last 24 hours, up to the current system time.
    fn default() -> Self {
        LogReviewOptions::window(Timestamp::now(), SignedDuration::from_hours(24))
    }
}

/// How a file's lines were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Free text, one message per line.
    Plain,
    /// One JSON object per line (pino, winston, bunyan).
    JsonLines,
}

/// One file that was (or was not) read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFileSummary {
    /// The file.
    pub path: PathBuf,
    /// Its line format.
    pub format: LogFormat,
    /// True for gzip-compressed files.
    pub gzip: bool,
    /// Bytes of log text read (after decompression).
    pub bytes: u64,
    /// Lines read.
    pub lines: u64,
    /// Why the file was skipped or stopped early, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Counts and last lines for one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// The class.
    pub class: LogClass,
    /// Matching lines.
    pub count: u64,
    /// The last matching lines, oldest first (lossy UTF-8, cut to `max_line_bytes`).
    pub last_lines: Vec<String>,
}

/// A recurring message with its variable parts masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternCount {
    /// The masked message.
    pub pattern: String,
    /// How many counted lines had it.
    pub count: u64,
    /// Classes those lines belonged to.
    pub classes: Vec<LogClass>,
    /// One original line, cut to `max_line_bytes`.
    pub example: String,
}

/// Failed logins from one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressCount {
    /// The source address.
    pub address: IpAddr,
    /// Failed logins seen from it.
    pub count: u64,
}

/// The result of a review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogReviewReport {
    /// The time filter used.
    pub since: Option<Timestamp>,
    /// Files read, in the order read.
    pub files: Vec<LogFileSummary>,
    /// Lines read in all files.
    pub lines: u64,
    /// Bytes of log text read.
    pub bytes: u64,
    /// Lines of a class left out because their timestamp was before `since`.
    pub older_than_since: u64,
    /// One entry per class, in [`LogClass::ALL`] order.
    pub classes: Vec<ClassSummary>,
    /// The most frequent patterns among counted lines.
    pub top_patterns: Vec<PatternCount>,
    /// Counted lines whose pattern was not tracked because `max_patterns` was reached.
    pub untracked_pattern_lines: u64,
    /// Failed logins per source address, most first.
    pub failed_logins_by_address: Vec<AddressCount>,
    /// Failed-login lines whose address was not tracked because `max_addresses` was reached.
    pub untracked_address_lines: u64,
}

impl LogReviewReport {
    /// The count for one class.
    pub fn count(&self, class: LogClass) -> u64 {
        self.classes
            .iter()
            .find(|c| c.class == class)
            .map_or(0, |c| c.count)
    }

    /// Findings: one per class (errors warn at `error_warn` and are critical at `error_crit`),
    /// one per address with at least `brute_force_threshold` failed logins, and one for
    /// every file that could not be read.
    pub fn findings(&self, thresholds: &LogThresholds) -> Vec<tej_core::Finding> {
        use tej_core::{Finding, Metric, Severity, Threshold};
        let mut out = Vec::new();
        for c in &self.classes {
            let t = match c.class {
                LogClass::Error => Some(Threshold::above(
                    thresholds.error_warn as f64,
                    thresholds.error_crit as f64,
                )),
                LogClass::LoginFailed => Some(Threshold::above(
                    thresholds.failed_login_warn as f64,
                    thresholds.failed_login_crit as f64,
                )),
                _ => None,
            };
            let name = format!("log_{}_lines", c.class.needle().replace(' ', "_"));
            let summary = format!("{} line(s) matching {:?}", c.count, c.class.needle());
            let f = match t {
                Some(t) => {
                    Finding::measured("logs.review", name, c.count as f64, "count", t, summary)
                }
                None => Finding::ok("logs.review", summary).metric(Metric::new(
                    name,
                    c.count as f64,
                    "count",
                )),
            };
            let f = match c.last_lines.last() {
                Some(l) => f.detail(format!("last: {l}")),
                None => f,
            };
            out.push(f.target(c.class.needle()));
        }
        for a in &self.failed_logins_by_address {
            if a.count >= thresholds.brute_force_threshold {
                out.push(
                    Finding::new(
                        "logs.failed-logins",
                        Severity::Warning,
                        format!("{} failed logins from {}", a.count, a.address),
                    )
                    .target(a.address.to_string())
                    .detail("consider blocking the address (runbook: isolate affected systems)"),
                );
            }
        }
        for f in &self.files {
            if let Some(why) = &f.skipped
                && why.starts_with("unreadable")
            {
                out.push(
                    Finding::new("logs.review", Severity::Unknown, why.clone())
                        .target(f.path.display().to_string()),
                );
            }
        }
        out
    }
}

/// Thresholds for [`LogReviewReport::findings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogThresholds {
    /// Error lines that make a warning.
    pub error_warn: u64,
    /// Error lines that make a critical.
    pub error_crit: u64,
    /// Failed logins (all addresses) that make a warning.
    pub failed_login_warn: u64,
    /// Failed logins (all addresses) that make a critical.
    pub failed_login_crit: u64,
    /// Failed logins from one address that flag it.
    pub brute_force_threshold: u64,
}

impl Default for LogThresholds {
    fn default() -> Self {
        LogThresholds {
            error_warn: 1,
            error_crit: 1000,
            failed_login_warn: 20,
            failed_login_crit: 200,
            brute_force_threshold: 10,
        }
    }
}

/// Compiled searchers shared by all threads.
struct Matcher {
    /// Candidate finder: every ASCII case variant of each needle's first three bytes (32
    /// literals: the fastest, "slim" form of the SIMD search).
    prefix: Option<packed::Searcher>,
    /// Exact classifier (ASCII case-insensitive).
    full: AhoCorasick,
}

const PREFIX: usize = 3;

impl Matcher {
    fn new() -> Result<Matcher, HostError> {
        let full = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(LogClass::ALL.map(LogClass::needle))
            .map_err(|e| HostError::Internal(format!("build log matcher: {e}")))?;
        let mut cfg = packed::Config::new().builder();
        for class in LogClass::ALL {
            let p = &class.needle().as_bytes()[..PREFIX];
            for mask in 0u32..(1 << PREFIX) {
                let v: Vec<u8> = p
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        if mask & (1 << i) != 0 {
                            c.to_ascii_uppercase()
                        } else {
                            *c
                        }
                    })
                    .collect();
                cfg.add(v);
            }
        }
        Ok(Matcher {
            prefix: cfg.build(),
            full,
        })
    }

    /// Class bits present in `text`.
    fn classify(&self, text: &[u8]) -> u8 {
        let mut bits = 0;
        for m in self.full.find_iter(text) {
            bits |= LogClass::ALL[m.pattern().as_usize()].bit();
        }
        bits
    }

    /// The classes whose needle starts at `text[0]` (ASCII case-insensitively).
    fn needles_at(&self, text: &[u8]) -> u8 {
        let mut bits = 0;
        for c in LogClass::ALL {
            let n = c.needle().as_bytes();
            if text
                .get(..n.len())
                .is_some_and(|t| t.eq_ignore_ascii_case(n))
            {
                bits |= c.bit();
            }
        }
        bits
    }

    /// Class bits present in `line[at..]`, where a needle starts at `at`: the candidate
    /// search walks the rest of the line (faster than the automaton on long lines).
    fn classify_from(&self, line: &[u8], at: usize) -> u8 {
        const ALL: u8 = (1 << LogClass::ALL.len()) - 1;
        let mut bits = self.needles_at(&line[at..]);
        let mut pos = at + 1;
        while bits != ALL
            && let Some(c) = self.next_candidate(line, pos)
        {
            bits |= self.needles_at(&line[c..]);
            pos = c + 1;
        }
        bits
    }

    /// Offset of the next position in `hay[from..]` where a needle may start.
    fn next_candidate(&self, hay: &[u8], from: usize) -> Option<usize> {
        match &self.prefix {
            Some(s) => s
                .find_in(hay, aho_corasick::Span::from(from..hay.len()))
                .map(|m| m.start()),
            None => self
                .full
                .find(aho_corasick::Input::new(hay).span(from..hay.len()))
                .map(|m| m.start()),
        }
    }
}

#[derive(Debug, Clone)]
struct PatternAcc {
    count: u64,
    classes: u8,
    example: String,
}

/// What one scanner accumulated; merged in file order.
struct Acc {
    lines: u64,
    bytes: u64,
    older: u64,
    counts: [u64; 4],
    tails: [VecDeque<Vec<u8>>; 4],
    patterns: HashMap<String, PatternAcc, FxBuild>,
    untracked_patterns: u64,
    addresses: HashMap<IpAddr, u64, FxBuild>,
    untracked_addresses: u64,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            lines: 0,
            bytes: 0,
            older: 0,
            counts: [0; 4],
            tails: Default::default(),
            patterns: HashMap::default(),
            untracked_patterns: 0,
            addresses: HashMap::default(),
            untracked_addresses: 0,
        }
    }

    fn merge(&mut self, other: Acc, opts: &LogReviewOptions) {
        self.lines += other.lines;
        self.bytes += other.bytes;
        self.older += other.older;
        for i in 0..4 {
            self.counts[i] += other.counts[i];
        }
        for (mine, theirs) in self.tails.iter_mut().zip(other.tails) {
            for l in theirs {
                push_tail(mine, &l, opts.tail_lines);
            }
        }
        for (k, v) in other.patterns {
            let len = self.patterns.len();
            match self.patterns.get_mut(&k) {
                Some(p) => {
                    p.count += v.count;
                    p.classes |= v.classes;
                }
                None if len < opts.max_patterns => {
                    self.patterns.insert(k, v);
                }
                None => self.untracked_patterns += v.count,
            }
        }
        self.untracked_patterns += other.untracked_patterns;
        for (k, v) in other.addresses {
            let len = self.addresses.len();
            match self.addresses.get_mut(&k) {
                Some(n) => *n += v,
                None if len < opts.max_addresses => {
                    self.addresses.insert(k, v);
                }
                None => self.untracked_addresses += v,
            }
        }
        self.untracked_addresses += other.untracked_addresses;
    }
}

/// Appends `line` to a tail of at most `cap` lines, reusing the oldest line's buffer.
fn push_tail(q: &mut VecDeque<Vec<u8>>, line: &[u8], cap: usize) {
    if cap == 0 {
        return;
    }
    let mut buf = if q.len() >= cap {
        q.pop_front().unwrap_or_default()
    } else {
        Vec::new()
    };
    buf.clear();
    buf.extend_from_slice(line);
    q.push_back(buf);
}

/// FxHash (rustc's hasher): much faster than SipHash for the short keys counted here, which
/// come from logs but are capped in number, so flooding only costs speed, never memory.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

fn clip(line: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&line[..line.len().min(max)]).into_owned()
}

#[derive(Deserialize)]
struct JsonLine {
    #[serde(default)]
    level: Option<serde_json::Value>,
    #[serde(default, alias = "message")]
    msg: Option<String>,
    #[serde(default, alias = "timestamp", alias = "@timestamp")]
    time: Option<serde_json::Value>,
}

fn json_level_bits(v: &serde_json::Value) -> u8 {
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(l) if l >= 50.0 => LogClass::Error.bit(),
            Some(l) if l >= 40.0 => LogClass::Warn.bit(),
            _ => 0,
        },
        serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "error" | "err" | "fatal" | "crit" | "critical" | "alert" | "emerg" | "emergency"
            | "panic" => LogClass::Error.bit(),
            "warn" | "warning" => LogClass::Warn.bit(),
            _ => 0,
        },
        _ => 0,
    }
}

/// The raw value of the `"msg"` (or `"message"`) string of a JSON object, escapes kept: the
/// message a pino/winston/bunyan line carries, found without parsing the whole object.
/// `None` when `text` is not an object or has no such string.
fn json_message(text: &[u8]) -> Option<&[u8]> {
    let t = text.trim_ascii_start();
    if t.first() != Some(&b'{') {
        return None;
    }
    static KEYS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 2]> =
        std::sync::LazyLock::new(|| {
            [
                memchr::memmem::Finder::new(b"\"msg\""),
                memchr::memmem::Finder::new(b"\"message\""),
            ]
        });
    for key in KEYS.iter() {
        let mut from = 0;
        while let Some(p) = key.find(&t[from..]) {
            let after = from + p + key.needle().len();
            from = after;
            let rest = t[after..].trim_ascii_start();
            let Some(rest) = rest.strip_prefix(b":") else {
                continue;
            };
            let Some(rest) = rest.trim_ascii_start().strip_prefix(b"\"") else {
                continue;
            };
            let mut i = 0;
            while let Some(q) = memchr::memchr2(b'"', b'\\', &rest[i..]) {
                let at = i + q;
                if rest[at] == b'"' {
                    return Some(&rest[..at]);
                }
                i = at + 2;
                if i > rest.len() {
                    return None;
                }
            }
            return None;
        }
    }
    None
}

/// A long line being read in pieces.
#[derive(Clone, Copy)]
struct LongLine {
    counted: u8,
    included: bool,
}

/// Scans the lines of one stream.
struct Scanner<'a> {
    m: &'a Matcher,
    opts: &'a LogReviewOptions,
    format: LogFormat,
    acc: Acc,
    long: Option<LongLine>,
    scratch: String,
}

/// Read size: small enough that a block read stays in the CPU's L2 cache while it is scanned.
const BLOCK: usize = 256 << 10;
/// Pieces of a line longer than this are examined without waiting for its end.
const MAX_PENDING: usize = BLOCK;

impl<'a> Scanner<'a> {
    fn new(m: &'a Matcher, opts: &'a LogReviewOptions, format: LogFormat) -> Scanner<'a> {
        Scanner {
            m,
            opts,
            format,
            acc: Acc::new(),
            long: None,
            scratch: String::new(),
        }
    }

    /// `block` holds whole lines (the last one may lack its newline at end of input).
    fn lines(&mut self, block: &[u8]) {
        if block.is_empty() {
            return;
        }
        self.acc.bytes += block.len() as u64;
        let newlines = memchr::memchr_iter(b'\n', block).count() as u64;
        self.acc.lines += newlines + u64::from(block.last() != Some(&b'\n'));
        let mut rest = block;
        if let Some(long) = self.long.take() {
            // The end of a long line.
            let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            self.long_piece(&rest[..end], long);
            self.acc.lines -= 1; // already counted when the line began
            rest = rest.get(end + 1..).unwrap_or(&[]);
        }
        match self.format {
            LogFormat::Plain => self.plain_lines(rest),
            LogFormat::JsonLines => {
                for line in rest.split(|&c| c == b'\n') {
                    if !line.is_empty() {
                        self.json_line(line);
                    }
                }
            }
        }
    }

    /// A piece of a line without its newline yet (at least `MAX_PENDING` long).
    fn partial(&mut self, piece: &[u8]) {
        self.acc.bytes += piece.len() as u64;
        match self.long.take() {
            Some(long) => {
                let long = self.long_piece(piece, long);
                self.long = Some(long);
            }
            None => {
                self.acc.lines += 1;
                let bits = self.m.classify(piece);
                let included = if bits != 0 {
                    self.counted_line(piece, bits, piece)
                } else {
                    !self.older(piece)
                };
                self.long = Some(LongLine {
                    counted: bits,
                    included,
                });
            }
        }
    }

    fn long_piece(&mut self, piece: &[u8], long: LongLine) -> LongLine {
        let bits = self.m.classify(piece) & !long.counted;
        if bits != 0 && long.included {
            for c in LogClass::from_bits(bits) {
                self.acc.counts[c as usize] += 1;
            }
        }
        LongLine {
            counted: long.counted | bits,
            ..long
        }
    }

    fn plain_lines(&mut self, block: &[u8]) {
        let mut pos = 0;
        while pos < block.len() {
            let Some(mut at) = self.m.next_candidate(block, pos) else {
                break;
            };
            let start = memchr::memrchr(b'\n', &block[pos..at]).map_or(pos, |p| pos + p + 1);
            let end = memchr::memchr(b'\n', &block[at..]).map_or(block.len(), |p| at + p);
            // A candidate is only a needle's first bytes ("logi" of "/auth/login"): confirm a
            // whole needle starts there before classifying the rest of the line, else look
            // for the next candidate in the same line.
            let line = &block[..end];
            while self.m.needles_at(&line[at..]) == 0 {
                match self.m.next_candidate(line, at + 1) {
                    Some(next) => at = next,
                    None => break,
                }
            }
            if self.m.needles_at(&line[at..]) != 0 {
                // No needle starts in [start, at): the candidate search would have found it.
                let bits = self.m.classify_from(line, at);
                let line = &block[start..end];
                self.counted_line(line, bits, line);
            }
            pos = end + 1;
        }
    }

    fn json_line(&mut self, line: &[u8]) {
        let trimmed = line.trim_ascii_start();
        if trimmed.first() == Some(&b'{')
            && let Ok(j) = serde_json::from_slice::<JsonLine>(trimmed)
        {
            let msg = j.msg.unwrap_or_default();
            let mut bits = j.level.as_ref().map_or(0, json_level_bits);
            bits |= self.m.classify(msg.as_bytes())
                & (LogClass::LoginFailed.bit() | LogClass::SlowQuery.bit());
            if bits == 0 {
                return;
            }
            let ts = j
                .time
                .as_ref()
                .and_then(|t| timestamp_from_json(t, self.opts.now));
            self.count(line, bits, ts, msg.as_bytes(), trimmed);
            return;
        }
        let bits = self.m.classify(line);
        if bits != 0 {
            self.counted_line(line, bits, line);
        }
    }

    /// True when `text` starts with a timestamp before `since`.
    fn older(&self, text: &[u8]) -> bool {
        match (self.opts.since, parse_timestamp(text, self.opts.now)) {
            (Some(since), Some((ts, _))) => ts < since,
            _ => false,
        }
    }

    /// A plain line with classes `bits`; returns whether it was inside the time filter. A
    /// JSON object after the timestamp (a container engine's timestamp before a pino line)
    /// is grouped by its message field.
    fn counted_line(&mut self, line: &[u8], bits: u8, text: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (ts, msg) = match parse_timestamp(text, self.opts.now) {
            Some((t, end)) => (Some(t), text.get(end..).unwrap_or(&[])),
            None => (None, text),
        };
        match json_message(msg) {
            Some(m) => self.count(line, bits, ts, m, msg),
            None => self.count(line, bits, ts, msg, msg),
        }
    }

    /// Counts a line of classes `bits`: `msg` is grouped into a pattern, and a failed
    /// login's address is looked for in `msg`, then in the rest of the line's `text`.
    fn count(
        &mut self,
        line: &[u8],
        bits: u8,
        ts: Option<Timestamp>,
        msg: &[u8],
        text: &[u8],
    ) -> bool {
        if let (Some(since), Some(ts)) = (self.opts.since, ts)
            && ts < since
        {
            self.acc.older += 1;
            return false;
        }
        let max = self.opts.max_line_bytes;
        for c in LogClass::ALL {
            if bits & c.bit() == 0 {
                continue;
            }
            let i = c as usize;
            self.acc.counts[i] += 1;
            push_tail(
                &mut self.acc.tails[i],
                &line[..line.len().min(max)],
                self.opts.tail_lines,
            );
        }
        normalize_message(&msg[..msg.len().min(max)], &mut self.scratch);
        let len = self.acc.patterns.len();
        match self.acc.patterns.get_mut(self.scratch.as_str()) {
            Some(p) => {
                p.count += 1;
                p.classes |= bits;
            }
            None if len < self.opts.max_patterns => {
                self.acc.patterns.insert(
                    self.scratch.clone(),
                    PatternAcc {
                        count: 1,
                        classes: bits,
                        example: clip(line, max),
                    },
                );
            }
            None => self.acc.untracked_patterns += 1,
        }
        if bits & LogClass::LoginFailed.bit() != 0
            && let Some(ip) = find_ip(&msg[..msg.len().min(max)])
                .or_else(|| find_ip(&text[..text.len().min(max)]))
        {
            let len = self.acc.addresses.len();
            match self.acc.addresses.get_mut(&ip) {
                Some(n) => *n += 1,
                None if len < self.opts.max_addresses => {
                    self.acc.addresses.insert(ip, 1);
                }
                None => self.acc.untracked_addresses += 1,
            }
        }
        true
    }

    /// Feeds a stream through a bounded buffer: whole lines go to [`Scanner::lines`],
    /// over-long lines to [`Scanner::partial`].
    fn stream(&mut self, mut r: impl Read) -> std::io::Result<()> {
        let mut buf = vec![0u8; BLOCK];
        let mut filled = 0;
        loop {
            let n = match r.read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.lines(&buf[..filled]);
                return Ok(());
            }
            filled += n;
            filled = self.consume(&mut buf, filled);
        }
    }

    /// Processes the whole lines in `buf[..filled]`, moves the rest to the front and returns
    /// its length.
    fn consume(&mut self, buf: &mut [u8], filled: usize) -> usize {
        match memchr::memrchr(b'\n', &buf[..filled]) {
            Some(p) => {
                self.lines(&buf[..=p]);
                buf.copy_within(p + 1..filled, 0);
                filled - p - 1
            }
            None if filled >= MAX_PENDING.min(buf.len()) => {
                // Keep the last bytes so a needle split across pieces is still found.
                let keep = 16.min(filled);
                self.partial(&buf[..filled - keep]);
                buf.copy_within(filled - keep..filled, 0);
                keep
            }
            None => filled,
        }
    }
}

/// Reads the lines that start in `[start, end)` of a plain file.
fn scan_range(file: &File, start: u64, end: u64, scanner: &mut Scanner<'_>) -> std::io::Result<()> {
    let mut buf = vec![0u8; BLOCK];
    let mut pos = start;
    // Skip the line that began before `start`.
    if start > 0 {
        pos = start - 1;
        loop {
            let n = file.read_at(&mut buf[..64 * 1024], pos)?;
            if n == 0 {
                return Ok(());
            }
            if let Some(p) = memchr::memchr(b'\n', &buf[..n]) {
                pos += p as u64 + 1;
                break;
            }
            pos += n as u64;
        }
    }
    if pos >= end {
        return Ok(());
    }
    let mut filled = 0usize;
    loop {
        if scanner.long.is_none() && pos - filled as u64 >= end {
            // What is left starts a line of the next range.
            return Ok(());
        }
        let n = file.read_at(&mut buf[filled..], pos)?;
        if n == 0 {
            scanner.lines(&buf[..filled]);
            return Ok(());
        }
        // Offset in the file of buf[0].
        let base = pos - filled as u64;
        filled += n;
        pos += n as u64;
        if pos >= end {
            // Lines starting before `end` end at the first newline at or after `end - 1`
            // (a long line being read in pieces started before `end` too).
            let rel = (end - 1).saturating_sub(base) as usize;
            if let Some(p) = memchr::memchr(b'\n', &buf[rel.min(filled)..filled]) {
                let stop = rel + p + 1;
                scanner.lines(&buf[..stop]);
                return Ok(());
            }
        }
        filled = scanner.consume(&mut buf, filled);
    }
}

fn sniff_format(head: &[u8]) -> LogFormat {
    let mut json = 0;
    let mut other = 0;
    for line in head.split(|&c| c == b'\n').take(16) {
        let t = line.trim_ascii();
        if t.is_empty() {
            continue;
        }
        if t.first() == Some(&b'{') {
            json += 1;
        } else {
            other += 1;
        }
    }
    if json > other {
        LogFormat::JsonLines
    } else {
        LogFormat::Plain
    }
}

/// True for names that look like (possibly rotated or compressed) log files:
/// `*.log`, `*.log.1`, `*.log.2.gz`, `*.log-20240101`, `*.jsonl`, `*.out`, `*.err`.
pub fn is_log_file_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".log")
        || n.contains(".log.")
        || n.contains(".log-")
        || n.contains(".log_")
        || n.ends_with(".jsonl")
        || n.ends_with(".jsonl.gz")
        || n.ends_with(".out")
        || n.ends_with(".err")
}

/// The files `paths` name: files as given, directories expanded (non-recursively) to their
/// log files (see [`is_log_file_name`]), oldest modification first.
pub fn collect_log_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, HostError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| HostError::io(p, e))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(p).map_err(|e| HostError::io(p, e))? {
                let entry = entry.map_err(|e| HostError::io(p, e))?;
                let path = entry.path();
                let Ok(m) = std::fs::metadata(&path) else {
                    continue;
                };
                if m.is_file() && is_log_file_name(&entry.file_name().to_string_lossy()) {
                    let mtime = m.modified().ok();
                    found.push((mtime, path));
                }
            }
            found.sort();
            out.extend(found.into_iter().map(|(_, p)| p));
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Reviews the log files under `paths` in one pass (see the module docs).
///
/// A path that does not exist is an error; a file that cannot be read is reported in
/// [`LogFileSummary::skipped`] and as an unknown finding, and the review goes on.
pub fn review_logs(
    paths: &[PathBuf],
    opts: &LogReviewOptions,
) -> Result<LogReviewReport, HostError> {
    let matcher = Matcher::new()?;
    let files = collect_log_files(paths)?;
    let mut total = Acc::new();
    let mut summaries = Vec::new();
    for path in files {
        let (acc, summary) = review_file(&path, &matcher, opts);
        summaries.push(summary);
        if let Some(acc) = acc {
            total.merge(acc, opts);
        }
    }
    Ok(build_report(total, summaries, opts))
}

fn review_file(path: &Path, m: &Matcher, opts: &LogReviewOptions) -> (Option<Acc>, LogFileSummary) {
    let mut summary = LogFileSummary {
        path: path.to_path_buf(),
        format: LogFormat::Plain,
        gzip: false,
        bytes: 0,
        lines: 0,
        skipped: None,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            summary.skipped = Some(format!("unreadable: {e}"));
            return (None, summary);
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            summary.skipped = Some(format!("unreadable: {e}"));
            return (None, summary);
        }
    };
    if let (Some(since), Ok(mtime)) = (opts.since, meta.modified())
        && let Ok(mtime) = Timestamp::try_from(mtime)
        && mtime < since
    {
        summary.skipped = Some("last modified before --since".into());
        return (None, summary);
    }
    let mut head = vec![0u8; 64 * 1024];
    let n = match file.read_at(&mut head, 0) {
        Ok(n) => n,
        Err(e) => {
            summary.skipped = Some(format!("unreadable: {e}"));
            return (None, summary);
        }
    };
    head.truncate(n);
    summary.gzip = head.starts_with(&[0x1f, 0x8b]);
    let result = if summary.gzip {
        let mut peek = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(&file)
            .take(64 * 1024)
            .read_to_end(&mut peek);
        summary.format = sniff_format(&peek);
        let mut s = Scanner::new(m, opts, summary.format);
        match File::open(path) {
            Ok(f) => s
                .stream(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                    f,
                )))
                .map(|()| s.acc),
            Err(e) => Err(e),
        }
    } else {
        summary.format = sniff_format(&head);
        scan_plain(&file, meta.len(), m, opts, summary.format)
    };
    match result {
        Ok(acc) => {
            summary.bytes = acc.bytes;
            summary.lines = acc.lines;
            (Some(acc), summary)
        }
        Err(e) => {
            summary.skipped = Some(format!("unreadable: {e}"));
            (None, summary)
        }
    }
}

/// Files smaller than this are scanned by one thread.
const PARALLEL_MIN: u64 = 32 << 20;

fn scan_plain(
    file: &File,
    len: u64,
    m: &Matcher,
    opts: &LogReviewOptions,
    format: LogFormat,
) -> std::io::Result<Acc> {
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let threads = if len < PARALLEL_MIN {
        1
    } else {
        threads.max(1)
    } as u64;
    if threads == 1 {
        let mut s = Scanner::new(m, opts, format);
        scan_range(file, 0, u64::MAX, &mut s)?;
        return Ok(s.acc);
    }
    let part = len.div_ceil(threads);
    let results: Vec<std::io::Result<Acc>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let start = i * part;
                let end = if i + 1 == threads {
                    u64::MAX
                } else {
                    (i + 1) * part
                };
                scope.spawn(move || {
                    let mut s = Scanner::new(m, opts, format);
                    scan_range(file, start, end, &mut s).map(|()| s.acc)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("log scanning thread panicked")))
            })
            .collect()
    });
    let mut total = Acc::new();
    for r in results {
        total.merge(r?, opts);
    }
    Ok(total)
}

fn build_report(acc: Acc, files: Vec<LogFileSummary>, opts: &LogReviewOptions) -> LogReviewReport {
    let classes = LogClass::ALL
        .into_iter()
        .zip(acc.tails)
        .map(|(class, tail)| ClassSummary {
            class,
            count: acc.counts[class as usize],
            last_lines: tail
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect(),
        })
        .collect();
    let mut patterns: Vec<PatternCount> = acc
        .patterns
        .into_iter()
        .map(|(pattern, p)| PatternCount {
            pattern,
            count: p.count,
            classes: LogClass::from_bits(p.classes),
            example: p.example,
        })
        .collect();
    patterns.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.pattern.cmp(&b.pattern))
    });
    patterns.truncate(opts.top_patterns);
    let mut addresses: Vec<AddressCount> = acc
        .addresses
        .into_iter()
        .map(|(address, count)| AddressCount { address, count })
        .collect();
    addresses.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.address.cmp(&b.address))
    });
    LogReviewReport {
        since: opts.since,
        files,
        lines: acc.lines,
        bytes: acc.bytes,
        older_than_since: acc.older,
        classes,
        top_patterns: patterns,
        untracked_pattern_lines: acc.untracked_patterns,
        failed_logins_by_address: addresses,
        untracked_address_lines: acc.untracked_addresses,
    }
}
