//! Log review on real files: rotated and gzipped sets, JSON lines, `--since`, invalid UTF-8,
//! very long lines, and the multi-threaded scan agreeing with the single-threaded one.

use jiff::{SignedDuration, Timestamp};
use std::io::Write;
use std::path::{Path, PathBuf};
use tej_host::{LogClass, LogFormat, LogReviewOptions, LogThresholds, review_logs};

fn now() -> Timestamp {
    "2024-06-01T12:00:00Z".parse().unwrap()
}

fn at(hours_ago: i64) -> String {
    (now() - SignedDuration::from_hours(hours_ago))
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn write(path: &Path, text: &[u8]) {
    std::fs::write(path, text).unwrap();
}

fn gzip(path: &Path, text: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(text).unwrap();
    e.finish().unwrap();
}

fn all(paths: &[PathBuf]) -> tej_host::LogReviewReport {
    review_logs(paths, &LogReviewOptions::all_time(now())).unwrap()
}

#[test]
fn counts_classes_case_insensitively_with_tails_patterns_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("combined.log");
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&format!(
            "{} ERROR db timeout after {}ms req=6f1c2a9e-3b4d-4c5e-9f00-{:012x}\n",
            at(1),
            100 + i,
            i
        ));
    }
    text.push_str(&format!("{} Warning: disk 91% full\n", at(1)));
    text.push_str(&format!(
        "{} info user=4 Login Failed from 203.0.113.9\n",
        at(1)
    ));
    text.push_str(&format!(
        "{} info user=5 login failed from 203.0.113.9\n",
        at(1)
    ));
    text.push_str(&format!(
        "{} info user=6 LOGIN FAILED from 198.51.100.1\n",
        at(1)
    ));
    text.push_str(&format!("{} WARN Slow query (812ms): SELECT 1\n", at(1)));
    text.push_str("plain line without anything\n");
    text.push_str("no timestamp but an error\n");
    write(&p, text.as_bytes());
    let mut opts = LogReviewOptions::all_time(now());
    opts.tail_lines = 5;
    let r = review_logs(std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!(r.lines, 37);
    assert_eq!(r.count(LogClass::Error), 31);
    assert_eq!(r.count(LogClass::Warn), 2);
    assert_eq!(r.count(LogClass::LoginFailed), 3);
    assert_eq!(r.count(LogClass::SlowQuery), 1);
    let errors = &r.classes[0];
    assert_eq!(errors.last_lines.len(), 5);
    assert_eq!(errors.last_lines[4], "no timestamp but an error");
    let top = &r.top_patterns[0];
    assert_eq!(top.count, 30);
    assert_eq!(top.pattern, "ERROR db timeout after <n>ms req=<uuid>");
    assert_eq!(top.classes, vec![LogClass::Error]);
    assert_eq!(
        r.failed_logins_by_address[0].address.to_string(),
        "203.0.113.9"
    );
    assert_eq!(r.failed_logins_by_address[0].count, 2);
    assert_eq!(r.failed_logins_by_address[1].count, 1);
    let f = r.findings(&LogThresholds {
        brute_force_threshold: 2,
        ..LogThresholds::default()
    });
    assert!(
        f.iter()
            .any(|f| f.check == "logs.failed-logins" && f.target == "203.0.113.9")
    );
    assert!(!f.iter().any(|f| f.target == "198.51.100.1"));
}

#[test]
fn since_filters_timestamped_lines_and_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let text = format!(
        "{} ERROR old one\n{} ERROR recent one\nERROR no timestamp\n[{}] error bracketed old\n",
        at(30),
        at(2),
        at(48)
    );
    write(&p, text.as_bytes());
    let opts = LogReviewOptions::window(now(), SignedDuration::from_hours(24));
    let r = review_logs(std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!(r.count(LogClass::Error), 2);
    assert_eq!(r.older_than_since, 2);
    // A file last written before the window is skipped without reading it.
    let old = dir.path().join("old.log");
    write(&old, b"ERROR would count\n");
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let r = review_logs(&[dir.path().to_path_buf()], &opts).unwrap();
    assert_eq!(r.count(LogClass::Error), 2);
    let skipped = r.files.iter().find(|f| f.path == old).unwrap();
    assert!(skipped.skipped.as_deref().unwrap().contains("--since"));
}

#[test]
fn directory_with_rotated_and_gzipped_files_in_age_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    gzip(&d.join("app.log.2.gz"), b"error two-gz\nwarn a\n");
    write(&d.join("app.log.1"), b"error one\n");
    write(&d.join("app.log"), b"error current\nslow query x\n");
    write(&d.join("README.txt"), b"error not a log\n");
    let base = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for (i, n) in ["app.log.2.gz", "app.log.1", "app.log"].iter().enumerate() {
        let f = std::fs::File::options()
            .write(true)
            .open(d.join(n))
            .unwrap();
        f.set_modified(base + std::time::Duration::from_secs(i as u64 * 60))
            .unwrap();
    }
    let r = all(&[d.to_path_buf()]);
    assert_eq!(r.files.len(), 3);
    assert!(r.files[0].gzip);
    assert_eq!(r.count(LogClass::Error), 3);
    assert_eq!(r.count(LogClass::Warn), 1);
    assert_eq!(r.count(LogClass::SlowQuery), 1);
    assert_eq!(
        r.classes[0].last_lines,
        vec!["error two-gz", "error one", "error current"]
    );
}

#[test]
fn json_lines_use_levels_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.jsonl");
    let text = format!(
        concat!(
            "{{\"level\":50,\"time\":{},\"msg\":\"db down\"}}\n",
            "{{\"level\":40,\"time\":{},\"msg\":\"pool low\"}}\n",
            "{{\"level\":30,\"time\":{},\"msg\":\"login failed for bob from 198.51.100.4\"}}\n",
            "{{\"level\":\"error\",\"timestamp\":\"{}\",\"message\":\"winston error\"}}\n",
            "{{\"level\":\"info\",\"timestamp\":\"{}\",\"message\":\"all good, no errors field\",\"errors\":0}}\n",
            "{{\"level\":50,\"time\":{},\"msg\":\"too old\"}}\n",
            "not json but an ERROR line\n",
            "{{\"level\":50, broken json\n"
        ),
        (now() - SignedDuration::from_hours(1)).as_millisecond(),
        (now() - SignedDuration::from_hours(1)).as_millisecond(),
        (now() - SignedDuration::from_hours(1)).as_millisecond(),
        at(1),
        at(1),
        (now() - SignedDuration::from_hours(40)).as_millisecond(),
    );
    write(&p, text.as_bytes());
    let opts = LogReviewOptions::window(now(), SignedDuration::from_hours(24));
    let r = review_logs(std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!(r.files[0].format, LogFormat::JsonLines);
    // db down, winston error, the plain ERROR line, and the broken line (raw "level":50 has
    // no "error" text, so it is not counted).
    assert_eq!(r.count(LogClass::Error), 3);
    assert_eq!(r.count(LogClass::Warn), 1);
    assert_eq!(r.count(LogClass::LoginFailed), 1);
    assert_eq!(r.older_than_since, 1);
    assert_eq!(
        r.failed_logins_by_address[0].address.to_string(),
        "198.51.100.4"
    );
    assert!(r.top_patterns.iter().any(|p| p.pattern == "db down"));
}

#[test]
fn invalid_utf8_and_very_long_lines_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bin.log");
    let mut data = Vec::new();
    data.extend_from_slice(b"\xff\xfe ERROR \xc3\x28 bad bytes 12\n");
    // A 5 MiB line with "warn" near its end and "error" at its start.
    data.extend_from_slice(b"error at start ");
    data.extend(std::iter::repeat_n(b'a', 5 << 20));
    data.extend_from_slice(b" warn at end\n");
    data.extend_from_slice(b"slow query after the long line\n");
    data.extend_from_slice(b"\0\0\0 error with NULs\n");
    write(&p, &data);
    let mut opts = LogReviewOptions::all_time(now());
    opts.max_line_bytes = 64;
    let r = review_logs(std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!(r.lines, 4);
    assert_eq!(r.count(LogClass::Error), 3);
    assert_eq!(r.count(LogClass::Warn), 1);
    assert_eq!(r.count(LogClass::SlowQuery), 1);
    assert!(r.classes[0].last_lines[0].contains('\u{fffd}'));
    assert!(r.classes[0].last_lines.iter().all(|l| l.len() <= 64 * 3));
}

#[test]
fn parallel_scan_matches_single_thread_on_a_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.log");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    let mut i: u64 = 0;
    let mut written = 0usize;
    // ~40 MiB: above the parallel threshold. Lines of varied length so range boundaries
    // fall mid-line.
    while written < 40 << 20 {
        let line = match i % 7 {
            0 => format!(
                "{} ERROR job {i} failed{}\n",
                at(1),
                "x".repeat((i % 300) as usize)
            ),
            1 => format!("{} warn queue depth {i}\n", at(1)),
            2 => format!(
                "{} login failed from 10.0.{}.{}\n",
                at(1),
                i % 3,
                i % 200 + 1
            ),
            3 => format!("{} slow query {i}ms\n", at(1)),
            _ => format!("{} info ok {i}{}\n", at(1), "y".repeat((i % 97) as usize)),
        };
        w.write_all(line.as_bytes()).unwrap();
        written += line.len();
        i += 1;
    }
    // No trailing newline on the last line.
    w.write_all(b"final error").unwrap();
    drop(w);
    let mut one = LogReviewOptions::all_time(now());
    one.threads = 1;
    let mut many = one.clone();
    many.threads = 5;
    let a = review_logs(std::slice::from_ref(&p), &one).unwrap();
    let b = review_logs(std::slice::from_ref(&p), &many).unwrap();
    assert_eq!(a.lines, i + 1);
    assert_eq!(a, b);
    assert_eq!(a.count(LogClass::Error), i.div_ceil(7) + 1);
}

#[test]
fn memory_stays_bounded_with_many_distinct_messages() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("distinct.log");
    let mut text = String::new();
    for i in 0..5000 {
        // Letters only vary, so masking cannot merge them.
        let word: String = format!("{i:05}")
            .chars()
            .map(|c| (b'a' + (c as u8 - b'0')) as char)
            .collect();
        text.push_str(&format!("error {word}\n"));
    }
    write(&p, text.as_bytes());
    let mut opts = LogReviewOptions::all_time(now());
    opts.max_patterns = 100;
    opts.top_patterns = 3;
    let r = review_logs(std::slice::from_ref(&p), &opts).unwrap();
    assert_eq!(r.count(LogClass::Error), 5000);
    assert_eq!(r.top_patterns.len(), 3);
    assert_eq!(r.untracked_pattern_lines, 4900);
}

#[test]
fn missing_paths_are_errors_and_unreadable_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let e = review_logs(
        &[dir.path().join("nope.log")],
        &LogReviewOptions::all_time(now()),
    )
    .unwrap_err();
    assert!(matches!(e, tej_host::HostError::NotFound { .. }), "{e}");
    let r = all(&[dir.path().to_path_buf()]);
    assert!(r.files.is_empty());
    assert_eq!(r.lines, 0);
}

/// Lines built from fragments that start like a needle without being one ("logi" of
/// `/auth/login`, "erro" of "errno", "slo" of "slots"), real needles in any case, needles cut
/// by the end of the line, JSON bodies and plain text.
fn fragment() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just("GET /api/auth/login 200".to_string()),
        Just("errno=5".to_string()),
        Just("{\"level\":30,\"msg\":\"slots ok\"}".to_string()),
        Just("warmup".to_string()),
        Just("Login Failed from 203.0.113.9".to_string()),
        Just("ERROR".to_string()),
        Just("eRrOr".to_string()),
        Just("warn".to_string()),
        Just("slow query".to_string()),
        Just("slow  query".to_string()),
        Just("login faile".to_string()),
        Just("logi".to_string()),
        Just("{\"level\":40,\"msg\":\"Login failed for bob\",\"ip\":\"198.51.100.4\"}".to_string()),
        "[a-z ]{0,12}",
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Every class counts exactly the lines that contain its needle (ASCII case-insensitively),
    /// with one thread and with several asked for.
    #[test]
    fn counts_equal_a_naive_case_insensitive_search(
        lines in proptest::collection::vec(proptest::collection::vec(fragment(), 0..6), 1..60),
        repeat in 1usize..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.log");
        let mut text = String::new();
        for l in &lines {
            text.push_str(&format!("{} {}\n", at(1), l.join(" ")));
        }
        let text = text.repeat(repeat);
        write(&p, text.as_bytes());
        let mut expected = [0u64; 4];
        for l in text.lines() {
            let low = l.to_ascii_lowercase();
            for (i, c) in LogClass::ALL.iter().enumerate() {
                if low.contains(c.needle()) {
                    expected[i] += 1;
                }
            }
        }
        for threads in [1, 3] {
            let opts = LogReviewOptions { threads, ..LogReviewOptions::all_time(now()) };
            let r = review_logs(std::slice::from_ref(&p), &opts).unwrap();
            let got: Vec<u64> = LogClass::ALL.iter().map(|c| r.count(*c)).collect();
            proptest::prop_assert_eq!(&got[..], &expected[..], "threads {}", threads);
        }
    }
}

#[test]
fn pino_lines_behind_an_engine_timestamp_group_by_their_message() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("backend.log");
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(
            "{} {{\"level\":40,\"time\":{},\"reqId\":\"req-{i:x}\",\"msg\":\"Login failed for user u{i}@example.com\",\"ip\":\"198.51.100.{}\"}}\n",
            at(1),
            1_700_000_000_000u64 + i,
            i % 3
        ));
    }
    text.push_str(&format!(
        "{} {{\"level\":50,\"msg\":\"Error: connect \\\"db\\\" refused\",\"err\":{{\"msg\":\"inner\"}}}}\n",
        at(1)
    ));
    write(&p, text.as_bytes());
    let r = all(std::slice::from_ref(&p));
    assert_eq!(r.count(LogClass::LoginFailed), 40);
    assert_eq!(r.count(LogClass::Error), 1);
    let top = &r.top_patterns[0];
    assert_eq!(top.count, 40, "{:#?}", r.top_patterns);
    assert!(
        top.pattern.starts_with("Login failed for user") && !top.pattern.contains("reqId"),
        "grouped by the msg field: {top:?}"
    );
    assert!(
        r.top_patterns
            .iter()
            .any(|p| p.pattern.contains("connect") && p.pattern.contains("refused")),
        "an escaped quote does not end the message: {:#?}",
        r.top_patterns
    );
    // The address is in another field: it is still counted per address.
    assert_eq!(
        r.failed_logins_by_address.len(),
        3,
        "{:?}",
        r.failed_logins_by_address
    );
    assert_eq!(
        r.failed_logins_by_address
            .iter()
            .map(|a| a.count)
            .sum::<u64>(),
        40
    );
}
