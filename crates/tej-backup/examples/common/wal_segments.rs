//! Shared by the WAL push benchmarks: real 16 MiB segments written by pgbench on a
//! PostgreSQL 15 cluster from the test kit, and small helpers.

use anyhow::{Result, ensure};
use std::path::Path;
use std::process::Command;
use tej_testkit::{PgCluster, PgClusterOptions};

/// The median of `v` (NaN when empty).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Opens `p` to everyone (the postgres user writes into the benchmark's temp dirs).
pub fn chmod_777(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777))?;
    Ok(())
}

/// A cluster loaded with pgbench and the names of its `n` newest completed WAL segments
/// (pgbench's, not initdb's), still in its `pg_wal` (kept by `wal_keep_size`).
pub fn pgbench_segments(n: usize) -> Result<(PgCluster, Vec<String>)> {
    let pg = PgCluster::start_with(PgClusterOptions {
        extra_conf: vec![
            "wal_keep_size = '4GB'".into(),
            "max_wal_size = '4GB'".into(),
        ],
        ..PgClusterOptions::default()
    })?;
    let pgbench = PgCluster::bin_dir().join("pgbench");
    let port = pg.port().to_string();
    let conn = ["-h", "127.0.0.1", "-p", &port, "-U", "postgres"];
    eprintln!("generating WAL with pgbench...");
    let st = Command::new(&pgbench)
        .args(conn)
        .args(["-i", "-q", "-s", "30", "postgres"])
        .output()?;
    ensure!(st.status.success(), "pgbench -i: {st:?}");
    let completed = |current: &str| -> Result<Vec<String>> {
        // Only segments before the current one are complete (and would be archived).
        let mut v: Vec<String> = std::fs::read_dir(pg.data_dir().join("pg_wal"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 24 && n.as_str() < current)
            .collect();
        v.sort();
        Ok(v)
    };
    let mut segs = Vec::new();
    // About 12 segments per pgbench run here; enough runs for `n`, bounded.
    for _ in 0..(n / 8 + 5) {
        let current = pg.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")?;
        segs = completed(current.trim())?;
        if segs.len() > n + 2 {
            break;
        }
        let st = Command::new(&pgbench)
            .args(conn)
            .args(["-c", "2", "-j", "2", "-t", "20000", "-n", "postgres"])
            .output()?;
        ensure!(st.status.success(), "pgbench: {st:?}");
    }
    let segs: Vec<String> = segs.into_iter().rev().take(n).rev().collect();
    ensure!(segs.len() == n, "only {} completed segments", segs.len());
    Ok((pg, segs))
}
