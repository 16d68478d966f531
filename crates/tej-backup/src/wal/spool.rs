//! Asynchronous archiving: one `archive_command` call pushes, besides the file asked
//! for, the other segments PostgreSQL has marked ready (`pg_wal/archive_status/*.ready`),
//! several at a time, and records each one that is durably stored in a local spool
//! directory. When PostgreSQL then asks for one of those, the call finds its record,
//! checks the file still has the recorded SHA-256, and returns at once.
//!
//! Correctness first: a record is written only after the object is durably stored, and
//! a file is reported archived only if it matches its record; anything else takes the
//! ordinary [`WalArchive::push`] path (which compares with what is stored).

use super::{PushOptions, PushReport, PushStatus, WalArchive};
use crate::error::BackupError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of [`WalArchive::push_async`].
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncPushOptions {
    /// Options of every push.
    pub push: PushOptions,
    /// Files pushed at the same time.
    pub parallel: usize,
    /// At most this many ready files are pushed ahead per call.
    pub max_ahead: usize,
    /// The spool directory (local, private to this cluster and repository).
    pub spool_dir: PathBuf,
}

impl AsyncPushOptions {
    /// `parallel` pushes at a time, up to 64 ahead, spooling into `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>, parallel: usize) -> AsyncPushOptions {
        AsyncPushOptions {
            push: PushOptions::default(),
            parallel: parallel.max(1),
            max_ahead: 64,
            spool_dir: spool_dir.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SpoolRecord {
    name: String,
    raw_size: u64,
    raw_sha256: String,
    repository: String,
}

fn record_path(spool: &Path, name: &str) -> PathBuf {
    spool.join(format!("{name}.ok"))
}

/// The ready files of `pg_wal`, oldest first (segments sort before their history files
/// by name within a timeline; PostgreSQL archives in this order too).
fn ready_files(pg_wal: &Path) -> Vec<String> {
    let dir = pg_wal.join("archive_status");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
        .collect();
    names.sort();
    names
}

impl WalArchive {
    /// `archive_command` in asynchronous mode (see the module docs): returns the report of
    /// `path`'s push; the files pushed ahead only leave their spool records.
    pub async fn push_async(
        &self,
        path: &Path,
        pg_wal: &Path,
        opts: &AsyncPushOptions,
    ) -> Result<PushReport, BackupError> {
        let started = Instant::now();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| BackupError::InvalidWal {
                file: path.display().to_string(),
                reason: "no file name".into(),
            })?
            .to_string();
        if opts.push.require_archive_info {
            self.require_info().await?;
        }
        std::fs::create_dir_all(&opts.spool_dir).map_err(|e| {
            BackupError::io(format!("create spool {}", opts.spool_dir.display()), e)
        })?;
        let data = std::fs::read(path)
            .map_err(|e| BackupError::io(format!("read {}", path.display()), e))?;
        let rec_path = record_path(&opts.spool_dir, &name);
        if let Ok(text) = std::fs::read(&rec_path) {
            let _ = std::fs::remove_file(&rec_path);
            if let Ok(rec) = serde_json::from_slice::<SpoolRecord>(&text) {
                let sha = hex::encode(Sha256::digest(&data));
                if rec.name == name
                    && rec.raw_sha256 == sha
                    && rec.raw_size == data.len() as u64
                    && rec.repository == self.repository().name()
                {
                    return Ok(PushReport {
                        key: self.key(&name)?.to_string(),
                        name,
                        status: PushStatus::ArchivedAhead,
                        raw_size: rec.raw_size,
                        raw_sha256: sha,
                        stored_size: 0,
                        elapsed_secs: started.elapsed().as_secs_f64(),
                    });
                }
            }
        }
        // Push the asked-for file and up to `max_ahead` other ready files together.
        let mut ahead: Vec<String> = ready_files(pg_wal)
            .into_iter()
            .filter(|n| *n != name && !record_path(&opts.spool_dir, n).exists())
            .collect();
        ahead.truncate(opts.max_ahead);
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for other in ahead {
            let arch = self.clone();
            let sem = sem.clone();
            let file = pg_wal.join(&other);
            let push = opts.push.clone();
            let spool = opts.spool_dir.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                match arch.push(&file, &push).await {
                    Ok(r) => {
                        let rec = SpoolRecord {
                            name: r.name.clone(),
                            raw_size: r.raw_size,
                            raw_sha256: r.raw_sha256.clone(),
                            repository: arch.repository().name(),
                        };
                        let json = serde_json::to_vec(&rec).unwrap_or_default();
                        let path = record_path(&spool, &r.name);
                        if let Err(e) = tokio::task::spawn_blocking(move || {
                            tej_core::fsutil::atomic_write(&path, &json, Some(0o600))
                        })
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r)
                        {
                            tracing::warn!(wal = %other, error = %e, "could not record an archived file in the spool");
                        }
                    }
                    // PostgreSQL will ask for it again; the ordinary path reports the error then.
                    Err(e) => tracing::warn!(wal = %other, error = %e, "pushing ahead failed"),
                }
            });
        }
        let own = {
            let _permit = sem.clone().acquire_owned().await;
            self.push_bytes(&name, data, &opts.push, started).await
        };
        while set.join_next().await.is_some() {}
        own
    }
}
