//! The log review's inner loop: `tej_host::review_logs` on one thread over a mixed plain
//! log (application lines, nginx access lines, sshd syslog lines, PostgreSQL lines, stack
//! traces) and over pino JSON lines, all time and with `--since 24h` (a third of the lines
//! are older), the page cache warm; then the per-line helpers it runs on matching lines
//! (`parse_timestamp`, `normalize_message`, `find_ip`) over 10 000 mixed lines.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use std::hint::black_box;
use std::path::PathBuf;
use tej_host::{LogReviewOptions, find_ip, normalize_message, parse_timestamp, review_logs};

fn review(c: &mut Criterion) {
    let now = Timestamp::now();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let size: u64 = if tej_benches::full_size() {
        64 << 20
    } else {
        1 << 20
    };
    let plain = dir.path().join("app.log");
    let json = dir.path().join("app.json.log");
    let plain_bytes = tej_benches::plain_log(&plain, size, now, 0x10c).expect("write the log");
    let json_bytes = tej_benches::json_log(&json, size, now, 0x150).expect("write the log");
    let one_thread = |since: Option<SignedDuration>| LogReviewOptions {
        threads: 1,
        ..match since {
            Some(w) => LogReviewOptions::window(now, w),
            None => LogReviewOptions::all_time(now),
        }
    };
    let mut g = c.benchmark_group(format!("log_review/{}MiB", size >> 20));
    g.sample_size(10);
    let cases: [(&str, &PathBuf, u64, Option<SignedDuration>); 3] = [
        ("plain, all time, 1 thread", &plain, plain_bytes, None),
        (
            "plain, since 24h, 1 thread",
            &plain,
            plain_bytes,
            Some(SignedDuration::from_hours(24)),
        ),
        ("json lines, all time, 1 thread", &json, json_bytes, None),
    ];
    for (name, path, bytes, since) in cases {
        let opts = one_thread(since);
        let paths = vec![path.clone()];
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(name, |b| {
            b.iter(|| {
                let report = review_logs(&paths, &opts).expect("review the log");
                assert_eq!(report.files.len(), 1);
                report
            })
        });
    }
    g.finish();

    let lines = tej_benches::log_lines(10_000, now, 0x11e);
    let mut g = c.benchmark_group("log_line/10000-lines");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse_timestamp", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter(|l| parse_timestamp(black_box(l.as_bytes()), now).is_some())
                .count()
        })
    });
    let mut out = String::new();
    g.bench_function("normalize_message", |b| {
        b.iter(|| {
            let mut total = 0;
            for l in &lines {
                normalize_message(black_box(l.as_bytes()), &mut out);
                total += out.len();
            }
            total
        })
    });
    g.bench_function("find_ip", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter(|l| find_ip(black_box(l.as_bytes())).is_some())
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, review);
criterion_main!(benches);
