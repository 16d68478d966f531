//! The backup pipeline's throughput: a file set (an application's uploads, logs, JSON,
//! CSV and HTML, about a third incompressible) read, tarred, compressed, hashed (SHA-256 of
//! the stored bytes, optionally of the uncompressed ones too) and stored into an in-memory
//! repository through `tej_backup::create_file_backup`, once per compression setting.
//! Throughput is of the uncompressed bytes.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use tej_backup::{
    CompressionAlgo, CompressionOptions, FileBackupOptions, MemoryStore, Repository,
    create_file_backup,
};
use tej_core::SystemClock;

fn pipeline(c: &mut Criterion) {
    let now = jiff::Timestamp::now();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let size: u64 = if tej_benches::full_size() {
        32 << 20
    } else {
        1 << 20
    };
    let (files, bytes) = tej_benches::write_file_set(&dir.path().join("app"), size, now, 0x7e1)
        .expect("write the file set");
    let rt = tokio::runtime::Runtime::new().expect("start a tokio runtime");
    let mut g = c.benchmark_group(format!("pipeline/{files}-files-{}MiB", bytes >> 20));
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    let variants: [(&str, CompressionAlgo, Option<i32>, u32, bool); 6] = [
        (
            "zstd 3, a worker per core (default)",
            CompressionAlgo::Zstd,
            None,
            0,
            false,
        ),
        (
            "zstd 3, a worker per core, + raw sha-256",
            CompressionAlgo::Zstd,
            None,
            0,
            true,
        ),
        (
            "zstd 1, one thread (as wal push)",
            CompressionAlgo::Zstd,
            Some(1),
            1,
            false,
        ),
        ("zstd 3, one thread", CompressionAlgo::Zstd, None, 1, false),
        ("gzip 6", CompressionAlgo::Gzip, None, 0, false),
        (
            "none (tar, sha-256, store)",
            CompressionAlgo::None,
            None,
            0,
            false,
        ),
    ];
    for (name, algorithm, level, threads, hash_raw) in variants {
        let mut opts = FileBackupOptions::new(vec![dir.path().join("app")]);
        opts.run.compression = CompressionOptions {
            algorithm,
            level,
            threads,
        };
        opts.run.hash_raw = hash_raw;
        g.bench_function(name, |b| {
            b.iter_batched(
                || Repository::from_store(Arc::new(MemoryStore::new())),
                |repo| {
                    let report = rt
                        .block_on(create_file_backup(
                            std::slice::from_ref(&repo),
                            &opts,
                            &SystemClock,
                        ))
                        .expect("back up the file set");
                    assert_eq!(report.files, files);
                    repo
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
