//! Retention planning over 10 000 manifests.
//!
//! - `plan_series_retention` alone, over a history of 1 000 and 10 000 finished backups in
//!   five series over years (three databases dumped nightly, one twice a day; a cluster's
//!   nightly and weekly base backups; a file set), with failed runs, unverified backups and
//!   failed verifications among them, and a 7-day PITR window;
//! - `prune --dry-run` over an in-memory repository holding that many real backups (file
//!   backups made at the history's times, one series per target): listing, reading and
//!   parsing every manifest, then planning.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use tej_backup::{
    FileBackupOptions, MemoryStore, PruneOptions, Repository, RetentionPolicy, create_file_backup,
    plan_series_retention, prune,
};
use tej_core::FakeClock;

fn now() -> jiff::Timestamp {
    "2026-12-02T06:30:00Z".parse().expect("a timestamp")
}

fn plan(c: &mut Criterion) {
    let now = now();
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

fn dry_run(c: &mut Criterion) {
    let now = now();
    let n: usize = if tej_benches::full_size() {
        10_000
    } else {
        100
    };
    let rt = tokio::runtime::Runtime::new().expect("start a tokio runtime");
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let repo = Repository::from_store(Arc::new(MemoryStore::new()));
    let (finished, _) = tej_benches::backup_history(n, now, 0x5eed);
    let clock = FakeClock::new(now);
    for (series, cand) in &finished {
        // One small directory per id target, so that each target is a series of its own.
        let target = cand.id.target().to_string();
        let src = dir.path().join(&target);
        if !src.exists() {
            std::fs::create_dir_all(&src).expect("create a directory");
            std::fs::write(src.join("settings.json"), series.to_string()).expect("write a file");
        }
        let mut opts = FileBackupOptions::new(vec![src]);
        opts.run.target = Some(target);
        clock.set(cand.id.time());
        rt.block_on(create_file_backup(
            std::slice::from_ref(&repo),
            &opts,
            &clock,
        ))
        .expect("make a backup");
    }
    let opts = PruneOptions {
        dry_run: true,
        pitr_window_days: Some(7),
        ..PruneOptions::default()
    };
    clock.set(now);
    let mut g = c.benchmark_group("retention/prune-dry-run");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            let report = rt
                .block_on(prune(&repo, &opts, &clock))
                .expect("plan the prune");
            assert_eq!(report.plan.decisions.len(), n);
            report
        })
    });
    g.finish();
}

criterion_group!(benches, plan, dry_run);
criterion_main!(benches);
