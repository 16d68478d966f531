//! WAL prefetch for recovery: `restore_command` is one process and one round trip per
//! segment, so replay waits on the archive. [`WalArchive::fetch_prefetching`] fetches, beside
//! the segment asked for, the next ones of the same timeline, several at a time, into a local
//! spool; the following calls take their segment from the spool.
//!
//! Correctness first:
//! - a segment enters the spool only after [`WalArchive::read`] checked it in full (SHA-256,
//!   name, cluster, header), and its SHA-256 and size are recorded beside it;
//! - a spooled segment is used only after its bytes hash to the record and its header names
//!   the spool's cluster and the segment's own start; anything else is deleted and the
//!   segment is fetched from the archive as without prefetch;
//! - the spool belongs to one archive (repository and cluster): a spool of another is emptied;
//! - a failure while prefetching never fails the fetch asked for (it is logged);
//! - the spool never outlives the recovery: segments before the one asked for are deleted on
//!   every call, and the whole spool is removed when PostgreSQL looks for a timeline history
//!   file the archive does not hold, which it does as recovery starts and as it ends (choosing
//!   the new timeline).

use super::{FetchOutcome, SegmentHeader, WalArchive};
use crate::error::BackupError;
use crate::lsn::{DEFAULT_WAL_SEGMENT_SIZE, WalFileName};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The name of the spool directory [`PrefetchOptions::spool_dir`] defaults to, beside the
/// file PostgreSQL asked for (`pg_wal/`): a directory a base backup never copies.
pub const PREFETCH_SPOOL_NAME: &str = "tej-prefetch";

const MARKER: &str = "spool.json";

/// Options of [`WalArchive::fetch_prefetching`].
#[derive(Debug, Clone, PartialEq)]
pub struct PrefetchOptions {
    /// Segments kept fetched ahead of the one asked for (0: no prefetch).
    pub ahead: usize,
    /// The spool never holds more than this many bytes of segments.
    pub max_bytes: u64,
    /// Segments fetched at the same time.
    pub parallel: usize,
    /// The spool directory; `None`: [`PREFETCH_SPOOL_NAME`] beside the destination.
    pub spool_dir: Option<PathBuf>,
}

impl Default for PrefetchOptions {
    /// 8 segments ahead, at most 256 MiB, a fetch per core (at least 2).
    fn default() -> Self {
        PrefetchOptions {
            ahead: 8,
            max_bytes: 256 << 20,
            parallel: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2),
            spool_dir: None,
        }
    }
}

impl PrefetchOptions {
    /// The spool directory for a fetch into `dest`.
    pub fn spool_for(&self, dest: &Path) -> PathBuf {
        if let Some(d) = &self.spool_dir {
            return d.clone();
        }
        let abs = std::path::absolute(dest).unwrap_or_else(|_| dest.to_path_buf());
        abs.parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join(PREFETCH_SPOOL_NAME)
    }
}

/// Which archive a spool belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SpoolMarker {
    repository: String,
    system_identifier: u64,
    wal_segment_size: u64,
}

/// The record written beside a spooled segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SpoolRecord {
    sha256: String,
    size: u64,
}

fn io(what: String, e: std::io::Error) -> BackupError {
    BackupError::io(what, e)
}

/// The spool of one fetch: its directory, checked to belong to this archive.
#[derive(Clone)]
struct Spool {
    dir: PathBuf,
    marker: SpoolMarker,
}

impl Spool {
    /// Opens (creating, 0700) the spool at `dir` for `marker`; a spool of another archive
    /// or cluster is emptied first.
    fn open(dir: &Path, marker: SpoolMarker) -> Result<Spool, BackupError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                io(
                    format!("create the WAL prefetch spool {}", dir.display()),
                    e,
                )
            })?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            marker,
        };
        let found = std::fs::read(dir.join(MARKER))
            .ok()
            .and_then(|b| serde_json::from_slice::<SpoolMarker>(&b).ok());
        if found.as_ref() != Some(&spool.marker) {
            spool.clear()?;
            let json = serde_json::to_vec(&spool.marker).map_err(|e| {
                io(
                    format!("encode {}", dir.join(MARKER).display()),
                    std::io::Error::other(e),
                )
            })?;
            tej_core::fsutil::atomic_write(&dir.join(MARKER), &json, Some(0o600))
                .map_err(|e| io(format!("write {}", dir.join(MARKER).display()), e))?;
        }
        Ok(spool)
    }

    /// Deletes every entry but the marker.
    fn clear(&self) -> Result<(), BackupError> {
        for name in self.entries()? {
            let _ = std::fs::remove_file(self.dir.join(&name));
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<String>, BackupError> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| io(format!("read {}", self.dir.display()), e))?;
        Ok(rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != MARKER)
            .collect())
    }

    /// The spooled segments (by name) whose record exists.
    fn segments(&self) -> Result<Vec<WalFileName>, BackupError> {
        let names = self.entries()?;
        Ok(names
            .iter()
            .filter_map(|n| n.strip_suffix(".sha256"))
            .filter(|n| names.iter().any(|m| m == n))
            .filter_map(|n| WalFileName::parse(n, self.marker.wal_segment_size).ok())
            .collect())
    }

    /// Deletes `name` and its record.
    fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.sha256")));
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Deletes what cannot serve a fetch of `asked` or later: segments of its timeline
    /// before it, and temporary files of interrupted prefetches.
    fn drop_before(&self, asked: &WalFileName) -> Result<(), BackupError> {
        for name in self.entries()? {
            if name.contains(".tmp.") {
                let _ = std::fs::remove_file(self.dir.join(&name));
                continue;
            }
            let base = name.strip_suffix(".sha256").unwrap_or(&name);
            if let Ok(f) = WalFileName::parse(base, self.marker.wal_segment_size)
                && f.timeline() == asked.timeline()
                && f.segment() < asked.segment()
            {
                let _ = std::fs::remove_file(self.dir.join(&name));
            }
        }
        Ok(())
    }

    /// The spooled bytes of `name` if they hash to their record and their header names
    /// this cluster and the segment's start; a spooled file that does not is deleted.
    fn take(&self, name: &str, file: &WalFileName) -> Option<Vec<u8>> {
        let record = std::fs::read(self.dir.join(format!("{name}.sha256")))
            .ok()
            .and_then(|b| serde_json::from_slice::<SpoolRecord>(&b).ok());
        let bytes = std::fs::read(self.dir.join(name)).ok();
        let (Some(record), Some(bytes)) = (record, bytes) else {
            self.remove(name);
            return None;
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        let header_ok = SegmentHeader::read(&bytes).is_ok_and(|h| {
            h.system_identifier == self.marker.system_identifier
                && Some(h.page_address) == file.start_lsn()
        });
        self.remove(name);
        if sha != record.sha256 || bytes.len() as u64 != record.size || !header_ok {
            tracing::warn!(
                segment = name,
                "the prefetched segment does not match its record; fetching it from the archive"
            );
            return None;
        }
        Some(bytes)
    }

    /// Stores checked `bytes` of `name`: the segment, then its record, each renamed into
    /// place (a crash leaves a temporary file or a segment without record: neither is used).
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), BackupError> {
        let tmp = |n: &str| self.dir.join(format!("{n}.tmp.{}", std::process::id()));
        let record = SpoolRecord {
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        };
        let json = serde_json::to_vec(&record).map_err(|e| {
            io(
                format!("encode the record of {name}"),
                std::io::Error::other(e),
            )
        })?;
        for (file, data) in [
            (name.to_string(), bytes),
            (format!("{name}.sha256"), &json[..]),
        ] {
            let t = tmp(&file);
            std::fs::write(&t, data).map_err(|e| io(format!("write {}", t.display()), e))?;
            std::fs::rename(&t, self.dir.join(&file))
                .map_err(|e| io(format!("rename {}", t.display()), e))?;
        }
        Ok(())
    }

    /// Removes the spool directory.
    fn remove_all(dir: &Path) {
        if dir.join(MARKER).exists() || dir.exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl WalArchive {
    /// Restores `name` to `dest` as [`fetch`](Self::fetch) does, keeping the next
    /// `opts.ahead` segments of its timeline fetched and checked in a local spool so that
    /// the following calls of `restore_command` take theirs without a round trip to the
    /// archive. The spool is topped up once half of it is used, `opts.parallel` segments
    /// at a time, and never exceeds `opts.max_bytes`. See the module documentation for
    /// the checks and the spool's lifetime.
    pub async fn fetch_prefetching(
        &self,
        name: &str,
        dest: &Path,
        opts: &PrefetchOptions,
    ) -> Result<FetchOutcome, BackupError> {
        let info = self.require_info().await?;
        let seg_size = if info.wal_segment_size == 0 {
            DEFAULT_WAL_SEGMENT_SIZE
        } else {
            info.wal_segment_size
        };
        let spool_dir = opts.spool_for(dest);
        let file = WalFileName::parse(name, seg_size).ok();
        let Some(file @ WalFileName::Segment { .. }) = file else {
            // A history lookup the archive cannot answer happens as recovery starts and as
            // it ends: no spooled segment is wanted after it.
            let outcome = self.fetch(name, dest).await?;
            if outcome == FetchOutcome::NotFound && name.ends_with(".history") {
                Spool::remove_all(&spool_dir);
            }
            return Ok(outcome);
        };
        if opts.ahead == 0 {
            return self.fetch(name, dest).await;
        }
        let marker = SpoolMarker {
            repository: self.repo.name(),
            system_identifier: info.system_identifier,
            wal_segment_size: seg_size,
        };
        let spool = match Spool::open(&spool_dir, marker) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "WAL prefetch off for this call");
                return self.fetch(name, dest).await;
            }
        };
        spool.drop_before(&file)?;

        let taken = {
            let (spool, name) = (spool.clone(), name.to_string());
            tokio::task::spawn_blocking(move || spool.take(&name, &file))
                .await
                .ok()
                .flatten()
        };
        match taken {
            Some(bytes) => {
                write_dest(dest, bytes).await?;
                self.top_up(&spool, &file, opts).await;
                Ok(FetchOutcome::Fetched)
            }
            // Not spooled: the segment and the ones after it at the same time.
            None => {
                let (outcome, ()) =
                    tokio::join!(self.fetch(name, dest), self.top_up(&spool, &file, opts));
                outcome
            }
        }
    }

    /// Fetches the missing segments after `file` into the spool when fewer than half of
    /// `opts.ahead` are there; stops at the first the archive does not hold.
    async fn top_up(&self, spool: &Spool, file: &WalFileName, opts: &PrefetchOptions) {
        let seg_size = spool.marker.wal_segment_size.max(1);
        let ahead = opts.ahead.min((opts.max_bytes / seg_size) as usize);
        let mut wanted = Vec::with_capacity(ahead);
        let mut next = file.next();
        while let Some(n) = next {
            if wanted.len() == ahead {
                break;
            }
            wanted.push(n);
            next = n.next();
        }
        let spooled = match spool.segments() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "WAL prefetch skipped");
                return;
            }
        };
        let missing: Vec<WalFileName> = wanted
            .iter()
            .filter(|w| !spooled.contains(w))
            .copied()
            .collect();
        if missing.is_empty() || (wanted.len() - missing.len()) * 2 >= ahead.max(1) {
            return;
        }
        let mut fetched = futures::stream::iter(missing.into_iter().map(|w| async move {
            let name = w.to_string();
            let r = self.read(&name).await;
            (name, r)
        }))
        .buffered(opts.parallel.max(1));
        while let Some((name, r)) = fetched.next().await {
            match r {
                Ok(Some(bytes)) => {
                    let (s, n) = (spool.clone(), name.clone());
                    let put = tokio::task::spawn_blocking(move || s.put(&n, &bytes))
                        .await
                        .unwrap_or_else(|e| {
                            Err(BackupError::io(
                                "spool a WAL segment",
                                std::io::Error::other(e),
                            ))
                        });
                    if let Err(e) = put {
                        tracing::warn!(segment = %name, error = %e, "WAL prefetch stopped");
                        break;
                    }
                }
                // The end of the archive (for now): nothing after it is there either.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(segment = %name, error = %e, "WAL prefetch stopped");
                    break;
                }
            }
        }
    }
}

/// Writes a checked WAL file to `dest` atomically (temporary file, fsync, rename), 0600.
pub(super) async fn write_dest(dest: &Path, bytes: Vec<u8>) -> Result<(), BackupError> {
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || {
        tej_core::fsutil::atomic_write(&dest, &bytes, Some(0o600))
            .map_err(|e| BackupError::io(format!("write {}", dest.display()), e))
    })
    .await
    .map_err(|e| BackupError::io("write WAL file", std::io::Error::other(e)))?
}
