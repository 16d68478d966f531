//! Benchmark: what encryption costs a WAL push. The same real 16 MiB pgbench segments of a
//! PostgreSQL 15 cluster are pushed without encryption, with a passphrase (scrypt at the
//! default work factor, 2^18) and to an age X25519 recipient, interleaved segment by
//! segment (the order of the three modes rotates):
//!
//! - a new process per segment, as `archive_command` runs `tej wal push --repo R %p` (this
//!   example starts itself with `push`: the same library call the binary makes); median
//!   over the segments;
//! - then every segment pushed by one process, as the asynchronous mode and a long-lived
//!   archiver do (the passphrase is derived once per process), ROUNDS times per mode into
//!   a fresh repository each; median over the rounds of the time per segment.
//!
//! Ratios are to the push without encryption measured in the same run.
//!
//! ```text
//! cargo run --release -p tej-backup --example bench_wal_encryption [-- SEGMENTS [ROUNDS]]
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tej_backup::{
    DEFAULT_WAL_ZSTD_LEVEL, EncryptionOptions, PushOptions, Repository, WalArchive,
    system_identifier_from_pgdata,
};
use tej_core::SecretRef;

#[path = "common/wal_segments.rs"]
#[allow(dead_code)]
mod wal_segments;
use wal_segments::{median, pgbench_segments};

const MODES: [&str; 3] = ["off", "passphrase", "recipient"];

/// The encryption of `mode`; `keys` holds `pass` and `key.txt`.
fn encryption(mode: &str, keys: &Path) -> Result<EncryptionOptions> {
    Ok(match mode {
        "off" => EncryptionOptions::default(),
        "passphrase" => EncryptionOptions {
            passphrase: Some(SecretRef::File {
                file: keys.join("pass"),
            }),
            ..EncryptionOptions::default()
        },
        "recipient" => {
            let text = std::fs::read_to_string(keys.join("key.txt"))?;
            let id: age::x25519::Identity = text.trim().parse().map_err(anyhow::Error::msg)?;
            EncryptionOptions {
                recipients: vec![id.to_public().to_string()],
                ..EncryptionOptions::default()
            }
        }
        other => bail!("unknown mode {other}"),
    })
}

async fn push(
    repo: &Path,
    files: &[PathBuf],
    pgdata: &Path,
    mode: &str,
    keys: &Path,
) -> Result<()> {
    let wal = WalArchive::new(Repository::open(repo.to_str().context("utf-8")?).await?)
        .with_encryption(encryption(mode, keys)?);
    let opts = PushOptions {
        system_identifier: Some(system_identifier_from_pgdata(pgdata)?),
        ..PushOptions::default()
    };
    for f in files {
        wal.push(f, &opts).await?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("push") {
        // push REPO PGDATA MODE KEYS FILE...
        let files: Vec<PathBuf> = args[5..].iter().map(PathBuf::from).collect();
        return rt.block_on(push(
            Path::new(&args[1]),
            &files,
            Path::new(&args[2]),
            &args[3],
            Path::new(&args[4]),
        ));
    }
    let n: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let rounds: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(5);
    if n == 0 || rounds == 0 {
        bail!(
            "usage: bench_wal_encryption [SEGMENTS (default 10) [ROUNDS (default 5)]], both above 0"
        );
    }
    let (pg, segs) = pgbench_segments(n)?;
    let work = tempfile::tempdir()?;
    let keys = work.path().join("keys");
    std::fs::create_dir(&keys)?;
    std::fs::write(keys.join("pass"), "correct horse battery staple\n")?;
    {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        std::fs::write(keys.join("key.txt"), id.to_string().expose_secret())?;
    }
    let seg_dir = work.path().join("segments");
    std::fs::create_dir(&seg_dir)?;
    let mut files = Vec::new();
    for s in &segs {
        std::fs::copy(pg.data_dir().join("pg_wal").join(s), seg_dir.join(s))?;
        files.push(seg_dir.join(s));
    }
    let exe = std::env::current_exe()?;
    let run = |repo: &Path, mode: &str, files: &[PathBuf]| -> Result<f64> {
        let mut c = Command::new(&exe);
        c.arg("push")
            .arg(repo)
            .arg(pg.data_dir())
            .arg(mode)
            .arg(&keys)
            .args(files);
        let t = Instant::now();
        let out = c.output()?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("push {mode}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(secs)
    };
    // The three modes take turns in a rotating order, so that a burst of load from
    // elsewhere falls on each of them alike.
    let order = |k: usize| (0..MODES.len()).map(move |j| (k + j) % MODES.len());
    // A new process per segment, into a repository of its own per mode.
    let mut per_process: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for (k, f) in files.iter().enumerate() {
        for i in order(k) {
            let repo = work.path().join(format!("repo-process-{}", MODES[i]));
            std::fs::create_dir_all(&repo)?;
            per_process[i].push(run(&repo, MODES[i], std::slice::from_ref(f))?);
        }
    }
    // One process for every segment, `rounds` times per mode (a fresh repository each).
    let mut one_process: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for round in 0..rounds {
        for i in order(round) {
            let repo = work.path().join(format!("repo-one-{}-{round}", MODES[i]));
            std::fs::create_dir_all(&repo)?;
            one_process[i].push(run(&repo, MODES[i], &files)? / files.len() as f64);
            std::fs::remove_dir_all(&repo)?;
        }
    }
    let meds: Vec<f64> = per_process.iter_mut().map(|v| median(v)).collect();
    let one: Vec<f64> = one_process.iter_mut().map(|v| median(v)).collect();
    println!(
        "WAL push, {n} real 16 MiB pgbench segments, zstd level {DEFAULT_WAL_ZSTD_LEVEL}, one thread:"
    );
    println!(
        "| | no encryption | passphrase (scrypt 2^18) | ratio | age X25519 recipient | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| a process per segment (archive_command), median of {n} | {:.1} ms | {:.1} ms | {:.2} | {:.1} ms | {:.2} |",
        meds[0] * 1e3,
        meds[1] * 1e3,
        meds[1] / meds[0],
        meds[2] * 1e3,
        meds[2] / meds[0]
    );
    println!(
        "| one process for all {n} segments, per segment, median of {rounds} | {:.1} ms | {:.1} ms | {:.2} | {:.1} ms | {:.2} |",
        one[0] * 1e3,
        one[1] * 1e3,
        one[1] / one[0],
        one[2] * 1e3,
        one[2] / one[0]
    );
    println!(
        "xtask-summary: {}",
        serde_json::json!({"bench": "wal_encryption", "segments": n, "rounds": rounds,
            "process_ms": {"off": meds[0] * 1e3, "passphrase": meds[1] * 1e3, "recipient": meds[2] * 1e3},
            "one_process_ms": {"off": one[0] * 1e3, "passphrase": one[1] * 1e3, "recipient": one[2] * 1e3}})
    );
    Ok(())
}
