//! Retention planning: `tej_backup::plan_series_retention` over a repository's history of
//! 1 000 and 10 000 finished backups in five series over years (three databases dumped
//! nightly, one twice a day; a cluster's nightly and weekly base backups; a file set), with
//! failed runs, unverified and failed verifications among them, and a 7-day PITR window.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tej_backup::{RetentionPolicy, plan_series_retention};

fn retention(c: &mut Criterion) {
    let now: jiff::Timestamp = "2026-12-02T06:30:00Z".parse().expect("a timestamp");
    let policy = RetentionPolicy::default();
    let mut g = c.benchmark_group("retention/plan_series_retention");
    for n in [1_000usize, 10_000] {
        let (finished, failed) = tej_benches::backup_history(n, now, 0x5eed);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let plan = plan_series_retention(
                    &policy,
                    std::hint::black_box(&finished),
                    &failed,
                    Some(7),
                    now,
                );
                assert_eq!(plan.decisions.len(), n);
                plan
            })
        });
    }
    g.finish();
}

criterion_group!(benches, retention);
criterion_main!(benches);
