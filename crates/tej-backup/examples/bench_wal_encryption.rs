//! Benchmark: what encryption costs a WAL push. The same real 16 MiB pgbench segments of a
//! PostgreSQL 15 cluster are pushed without encryption, with a passphrase (scrypt at the
//! default work factor, 2^18) and to an age X25519 recipient, interleaved segment by
//! segment:
//!
//! - a new process per segment, as `archive_command` runs `tej wal push --repo R %p` (this
//!   example starts itself with `push`: the same library call the binary makes);
//! - then every segment pushed by one process, as the asynchronous mode and a long-lived
//!   archiver do: the passphrase is derived once per process.
//!
//! ```text
//! cargo run --release -p tej-backup --example bench_wal_encryption [-- SEGMENTS]
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tej_backup::{
    EncryptionOptions, PushOptions, Repository, WalArchive, system_identifier_from_pgdata,
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
    // A new process per segment.
    let mut per_process: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for f in &files {
        for (i, mode) in MODES.iter().enumerate() {
            let repo = work.path().join(format!("repo-process-{mode}"));
            std::fs::create_dir_all(&repo)?;
            per_process[i].push(run(&repo, mode, std::slice::from_ref(f))?);
        }
    }
    // One process for every segment.
    let mut one_process = Vec::new();
    for mode in MODES {
        let repo = work.path().join(format!("repo-one-{mode}"));
        std::fs::create_dir_all(&repo)?;
        one_process.push(run(&repo, mode, &files)? / files.len() as f64);
    }
    println!("WAL push, {n} real 16 MiB pgbench segments, zstd 3:");
    println!("| | no encryption | passphrase (scrypt 2^18) | age X25519 recipient |");
    println!("|---|---|---|---|");
    let meds: Vec<f64> = per_process.iter_mut().map(|v| median(v)).collect();
    println!(
        "| a process per segment (archive_command), median | {:.1} ms | {:.1} ms | {:.1} ms |",
        meds[0] * 1e3,
        meds[1] * 1e3,
        meds[2] * 1e3
    );
    println!(
        "| one process for all {n} segments, mean per segment | {:.1} ms | {:.1} ms | {:.1} ms |",
        one_process[0] * 1e3,
        one_process[1] * 1e3,
        one_process[2] * 1e3
    );
    println!(
        "xtask-summary: {}",
        serde_json::json!({"bench": "wal_encryption", "segments": n,
            "process_ms": {"off": meds[0] * 1e3, "passphrase": meds[1] * 1e3, "recipient": meds[2] * 1e3},
            "one_process_ms": {"off": one_process[0] * 1e3, "passphrase": one_process[1] * 1e3, "recipient": one_process[2] * 1e3}})
    );
    Ok(())
}
