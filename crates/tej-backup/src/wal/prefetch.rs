//! WAL prefetch for recovery: `restore_command` is one process and one round trip per
//! segment, so replay waits on the archive. [`WalArchive::fetch_prefetching`] keeps the
//! segments after the one asked for (same timeline) fetched and checked in a local spool,
//! several at a time; the following calls take their segment from the spool.
//!
//! Two ways to fill the spool:
//! - with [`PrefetchOptions::worker`] set (what `tej wal fetch` does), a background worker
//!   process ([`WalArchive::prefetch_worker`], pgBackRest's asynchronous archive-get design)
//!   keeps the window after the last segment asked for full while PostgreSQL replays, and a
//!   call returns as soon as its own segment is in place. One worker per spool (a lock file
//!   in it); it stops when the spool is removed, at the end of the archive, on an error, or
//!   after a few idle seconds, and the next call starts another;
//! - without it, each call tops the spool up before it returns, once half of it is used.
//!
//! Correctness first:
//! - a segment enters the spool only after [`WalArchive::read`] checked it in full (SHA-256,
//!   name, cluster, header), and its SHA-256 and size are recorded beside it;
//! - a spooled segment is used only after its bytes hash to the record and its header names
//!   the spool's cluster and the segment's own start; anything else is deleted and the
//!   segment is fetched from the archive as without prefetch;
//! - the spool belongs to one archive (repository and cluster): a spool of another is emptied;
//! - a failure while prefetching never fails the fetch asked for (it is logged, or ends the
//!   worker, and the call fetches its segment itself);
//! - the spool never outlives the recovery: it holds only the window after the segment asked
//!   for, and is removed (worker included) when PostgreSQL looks for a timeline history file
//!   the archive does not hold, which it does as recovery starts and as it ends (choosing the
//!   new timeline).
//!
//! The segment is handed to PostgreSQL atomically (renamed into place) but not fsynced, as
//! pgBackRest's archive-get does: PostgreSQL fsyncs and renames the WAL files it keeps
//! and, after a crash, asks for the others again.

use super::{FetchOutcome, SegmentHeader, WalArchive};
use crate::error::BackupError;
use crate::lsn::{DEFAULT_WAL_SEGMENT_SIZE, WalFileName};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The name of the spool directory [`PrefetchOptions::spool_dir`] defaults to, beside the
/// file PostgreSQL asked for (`pg_wal/`): a directory a base backup never copies.
pub const PREFETCH_SPOOL_NAME: &str = "tej-prefetch";

const MARKER: &str = "spool.json";
/// The first segment of the window the worker keeps spooled (the next one PostgreSQL asks).
const NEXT: &str = "next";
/// Written after the segment in [`NEXT`] when a call waits for that segment.
const WAITING: &str = "waiting";
/// Held (flock) by the spool's worker for its lifetime.
const LOCK: &str = "worker.lock";
/// A worker with nothing to fetch and no new request for this long stops.
const WORKER_IDLE: Duration = Duration::from_secs(10);
/// How often a worker with a full window looks for a new request.
const WORKER_POLL: Duration = Duration::from_millis(2);
/// How long a call waits for the running worker to bring its segment before fetching it
/// itself.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(30);

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
    /// How to start the background worker that fills the spool: a command that runs
    /// [`WalArchive::prefetch_worker`] for the same archive, destination and options.
    /// `None`: each call tops the spool up itself before it returns.
    pub worker: Option<WorkerCommand>,
}

/// The command that starts a prefetch worker ([`PrefetchOptions::worker`]): run detached,
/// in its own process group, without standard input or output, with this process's
/// environment and working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The program, e.g. [`std::env::current_exe`].
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    fn spawn(&self) -> std::io::Result<()> {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        let mut child = std::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        // Reaped by a thread in a long-lived process; a short one exits first and the worker
        // is adopted.
        std::thread::spawn(move || child.wait());
        Ok(())
    }
}

impl Default for PrefetchOptions {
    /// 8 segments ahead, at most 256 MiB, a fetch per core (at least 2), filled by each call.
    fn default() -> Self {
        PrefetchOptions {
            ahead: 8,
            max_bytes: 256 << 20,
            parallel: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2),
            spool_dir: None,
            worker: None,
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

    /// Deletes every segment, record and request (the marker and lock stay).
    fn clear(&self) -> Result<(), BackupError> {
        for name in self.entries()? {
            let _ = std::fs::remove_file(self.dir.join(&name));
        }
        let _ = std::fs::remove_file(self.dir.join(NEXT));
        Ok(())
    }

    /// Segments, records and temporary files.
    fn entries(&self) -> Result<Vec<String>, BackupError> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| io(format!("read {}", self.dir.display()), e))?;
        Ok(rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n != MARKER && n != NEXT && n != LOCK)
            .collect())
    }

    /// Whether the spool's directory still holds this archive's marker (it is removed as
    /// recovery ends, and replaced for another archive).
    fn is_current(&self) -> bool {
        std::fs::read(self.dir.join(MARKER))
            .ok()
            .and_then(|b| serde_json::from_slice::<SpoolMarker>(&b).ok())
            .is_some_and(|m| m == self.marker)
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

    /// Whether `name` is spooled with its record.
    fn has(&self, name: &str) -> bool {
        self.dir.join(format!("{name}.sha256")).exists()
    }

    /// Deletes `name` and its record.
    fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.sha256")));
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Deletes the spooled segments of `asked`'s timeline before it: they cannot serve a
    /// fetch of `asked` or later.
    fn drop_before(&self, asked: &WalFileName) -> Result<(), BackupError> {
        self.retain(|f| f.timeline() != asked.timeline() || f.segment() >= asked.segment())
    }

    /// Deletes every spooled segment (and record) for which `keep` is false.
    fn retain(&self, keep: impl Fn(&WalFileName) -> bool) -> Result<(), BackupError> {
        for name in self.entries()? {
            if tej_core::fsutil::is_temp_name(&name) {
                continue;
            }
            let base = name.strip_suffix(".sha256").unwrap_or(&name);
            if let Ok(f) = WalFileName::parse(base, self.marker.wal_segment_size)
                && !keep(&f)
            {
                let _ = std::fs::remove_file(self.dir.join(&name));
            }
        }
        Ok(())
    }

    /// Deletes the temporary files of interrupted prefetches; only the holder of the lock
    /// calls it (no other writer is running).
    fn remove_temporaries(&self) -> Result<(), BackupError> {
        for name in self.entries()? {
            if tej_core::fsutil::is_temp_name(&name) {
                let _ = std::fs::remove_file(self.dir.join(&name));
            }
        }
        Ok(())
    }

    /// Checks the spooled `name` (its bytes hash to its record, its header names this
    /// cluster and the segment's start) and moves it to `dest`; `false` when it is not
    /// spooled or does not match (then it is deleted).
    fn take_into(&self, name: &str, file: &WalFileName, dest: &Path) -> Result<bool, BackupError> {
        let path = self.dir.join(name);
        let record = std::fs::read(self.dir.join(format!("{name}.sha256")))
            .ok()
            .and_then(|b| serde_json::from_slice::<SpoolRecord>(&b).ok());
        let Some(record) = record else {
            return Ok(false);
        };
        let Ok(bytes) = std::fs::read(&path) else {
            self.remove(name);
            return Ok(false);
        };
        let sha = hex::encode(Sha256::digest(&bytes));
        let header_ok = SegmentHeader::read(&bytes).is_ok_and(|h| {
            h.system_identifier == self.marker.system_identifier
                && Some(h.page_address) == file.start_lsn()
        });
        if sha != record.sha256 || bytes.len() as u64 != record.size || !header_ok {
            self.remove(name);
            tracing::warn!(
                segment = name,
                "the prefetched segment does not match its record; fetching it from the archive"
            );
            return Ok(false);
        }
        let _ = std::fs::remove_file(self.dir.join(format!("{name}.sha256")));
        // The checked file itself becomes `dest` (same file system: pg_wal); elsewhere, the
        // checked bytes are written there.
        if std::fs::rename(&path, dest).is_err() {
            let _ = std::fs::remove_file(&path);
            write_dest_blocking(dest, &bytes)?;
        }
        Ok(true)
    }

    /// Stores checked `bytes` of `name` (0600): the segment, then its record, each renamed
    /// into place (a crash leaves a temporary file or a segment without record: neither is
    /// used).
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), BackupError> {
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
            self.write(&file, data)?;
        }
        Ok(())
    }

    /// Writes `file` (0600) in the spool through a temporary file renamed into place.
    fn write(&self, file: &str, data: &[u8]) -> Result<(), BackupError> {
        let path = self.dir.join(file);
        tej_core::fsutil::atomic_replace(&path, data, 0o600)
            .map_err(|e| io(format!("write {}", path.display()), e))
    }

    /// Asks the worker to keep the window from `first`; `waiting`: a call waits for `first`
    /// itself, which the worker then fetches even if it spooled it before (a call took it).
    fn set_next(&self, first: &WalFileName, waiting: bool) {
        let text = if waiting {
            format!("{first} {WAITING}")
        } else {
            first.to_string()
        };
        if let Err(e) = self.write(NEXT, text.as_bytes()) {
            tracing::warn!(error = %e, "WAL prefetch request not written");
        }
    }

    /// The worker's request: the first segment of the window to keep, and whether a call
    /// waits for it.
    fn next(&self) -> Option<(WalFileName, bool)> {
        let text = std::fs::read_to_string(self.dir.join(NEXT)).ok()?;
        let mut words = text.split_whitespace();
        let first = WalFileName::parse(words.next()?, self.marker.wal_segment_size).ok()?;
        Some((first, words.next() == Some(WAITING)))
    }

    fn lock_file(dir: &Path) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK))
    }

    /// Takes the spool's lock, retrying briefly (a call looking whether a worker runs holds
    /// it for an instant); `None` when another holder keeps it.
    fn try_lock(dir: &Path) -> std::io::Result<Option<File>> {
        let f = Spool::lock_file(dir)?;
        for _ in 0..50 {
            match f.try_lock() {
                Ok(()) => return Ok(Some(f)),
                Err(std::fs::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Whether a worker holds the spool's lock.
    fn worker_running(&self) -> bool {
        let Ok(f) = Spool::lock_file(&self.dir) else {
            return false;
        };
        matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
    }

    /// Starts the worker unless one runs.
    fn ensure_worker(&self, cmd: &WorkerCommand) {
        if !self.worker_running()
            && let Err(e) = cmd.spawn()
        {
            tracing::warn!(program = %cmd.program.display(), error = %e, "WAL prefetch worker not started");
        }
    }

    /// Removes the spool directory, after its worker (which stops once the marker is gone)
    /// has let go of it, waiting a few seconds at most.
    fn remove_all(dir: &Path) {
        if !dir.exists() {
            return;
        }
        // Away from its name first: the worker's next write there fails, and it stops.
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let gone = dir.with_file_name(format!("{name}.removed.{}", std::process::id()));
        let target = if std::fs::rename(dir, &gone).is_ok() {
            gone
        } else {
            dir.to_path_buf()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        if let Ok(f) = Spool::lock_file(&target) {
            while matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = std::fs::remove_dir_all(&target);
    }
}

/// The segments the spool keeps after asking for `first`'s predecessor: `first` and those
/// after it, `opts.ahead` at most and within `opts.max_bytes`.
fn window(first: WalFileName, opts: &PrefetchOptions, seg_size: u64) -> Vec<WalFileName> {
    let ahead = opts.ahead.min((opts.max_bytes / seg_size.max(1)) as usize);
    std::iter::successors(Some(first), |f| f.next())
        .take(ahead)
        .collect()
}

impl WalArchive {
    /// Restores `name` to `dest` as [`fetch`](Self::fetch) does, keeping the next
    /// `opts.ahead` segments of its timeline fetched and checked in a local spool so that
    /// the following calls of `restore_command` take theirs without a round trip to the
    /// archive: filled by the worker of [`PrefetchOptions::worker`] while PostgreSQL
    /// replays, else by this call before it returns (once half of the spool is used),
    /// `opts.parallel` segments at a time, never more than `opts.max_bytes`. See the module
    /// documentation for the checks and the spool's lifetime.
    pub async fn fetch_prefetching(
        &self,
        name: &str,
        dest: &Path,
        opts: &PrefetchOptions,
    ) -> Result<FetchOutcome, BackupError> {
        let info = self.require_info().await?;
        let seg_size = segment_size(info.wal_segment_size);
        let spool_dir = opts.spool_for(dest);
        let file = WalFileName::parse(name, seg_size).ok();
        let Some(file @ WalFileName::Segment { .. }) = file else {
            // A history lookup the archive cannot answer happens as recovery starts and as
            // it ends: no spooled segment is wanted after it.
            let outcome = self.fetch(name, dest).await?;
            if outcome == FetchOutcome::NotFound && name.ends_with(".history") {
                tokio::task::spawn_blocking(move || Spool::remove_all(&spool_dir))
                    .await
                    .map_err(|e| {
                        BackupError::io("remove the WAL prefetch spool", std::io::Error::other(e))
                    })?;
            }
            return Ok(outcome);
        };
        if opts.ahead == 0 {
            return self.fetch(name, dest).await;
        }
        let spool = match Spool::open(&spool_dir, self.spool_marker(&info)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "WAL prefetch off for this call");
                return self.fetch(name, dest).await;
            }
        };
        spool.drop_before(&file)?;
        match &opts.worker {
            Some(cmd) => self.fetch_with_worker(&spool, name, file, dest, cmd).await,
            None => self.fetch_topping_up(&spool, name, file, dest, opts).await,
        }
    }

    /// [`fetch_prefetching`](Self::fetch_prefetching) with a worker filling the spool.
    async fn fetch_with_worker(
        &self,
        spool: &Spool,
        name: &str,
        file: WalFileName,
        dest: &Path,
        cmd: &WorkerCommand,
    ) -> Result<FetchOutcome, BackupError> {
        let (s, n, d, c) = (
            spool.clone(),
            name.to_string(),
            dest.to_path_buf(),
            cmd.clone(),
        );
        let taken = tokio::task::spawn_blocking(move || -> Result<bool, BackupError> {
            let after = |s: &Spool| {
                if let Some(next) = file.next() {
                    s.set_next(&next, false);
                }
                s.ensure_worker(&c);
            };
            if s.take_into(&n, &file, &d)? {
                after(&s);
                return Ok(true);
            }
            // The running worker is asked for this segment first, and brings it sooner
            // than a fetch started now (it is usually on its way already).
            if s.worker_running() {
                s.set_next(&file, true);
                let deadline = Instant::now() + WAIT_FOR_WORKER;
                loop {
                    let running = s.worker_running();
                    if s.has(&n) {
                        if s.take_into(&n, &file, &d)? {
                            after(&s);
                            return Ok(true);
                        }
                        break;
                    }
                    if !running || Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            // Fetched here; the worker fetches what follows meanwhile.
            after(&s);
            Ok(false)
        })
        .await
        .map_err(|e| BackupError::io("WAL prefetch", std::io::Error::other(e)))??;
        if taken {
            return Ok(FetchOutcome::Fetched);
        }
        self.fetch(name, dest).await
    }

    /// [`fetch_prefetching`](Self::fetch_prefetching) topping the spool up in this call.
    async fn fetch_topping_up(
        &self,
        spool: &Spool,
        name: &str,
        file: WalFileName,
        dest: &Path,
        opts: &PrefetchOptions,
    ) -> Result<FetchOutcome, BackupError> {
        let taken = {
            let (s, n, d) = (spool.clone(), name.to_string(), dest.to_path_buf());
            tokio::task::spawn_blocking(move || s.take_into(&n, &file, &d))
                .await
                .map_err(|e| BackupError::io("WAL prefetch", std::io::Error::other(e)))??
        };
        if taken {
            self.top_up(spool, &file, opts).await;
            return Ok(FetchOutcome::Fetched);
        }
        // Not spooled: the segment and the ones after it at the same time.
        let (outcome, ()) = tokio::join!(self.fetch(name, dest), self.top_up(spool, &file, opts));
        outcome
    }

    /// Fetches the missing segments after `file` into the spool when fewer than half of
    /// `opts.ahead` are there; stops at the first the archive does not hold. Skipped while
    /// another process fills the spool.
    async fn top_up(&self, spool: &Spool, file: &WalFileName, opts: &PrefetchOptions) {
        let Some(first) = file.next() else {
            return;
        };
        let wanted = window(first, opts, spool.marker.wal_segment_size);
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
        if missing.is_empty() || (wanted.len() - missing.len()) * 2 >= wanted.len().max(1) {
            return;
        }
        let _lock = match Spool::lock_file(&spool.dir).map(|f| f.try_lock().map(|()| f)) {
            Ok(Ok(f)) => f,
            _ => return,
        };
        let _ = spool.remove_temporaries();
        if let Err(e) = self.fill(spool, &missing, opts.parallel).await {
            tracing::warn!(error = %e, "WAL prefetch stopped");
        }
    }

    /// Reads `missing` (in order, `parallel` at a time) into the spool. `Ok(false)` when the
    /// archive does not hold one of them (the end of the archive, for now: the rest is not
    /// read).
    async fn fill(
        &self,
        spool: &Spool,
        missing: &[WalFileName],
        parallel: usize,
    ) -> Result<bool, BackupError> {
        let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
        let mut fetched = futures::stream::iter(names.into_iter().map(|name| async move {
            let r = self.read(&name).await;
            (name, r)
        }))
        .buffered(parallel.max(1));
        while let Some((name, r)) = fetched.next().await {
            match r? {
                Some(bytes) => {
                    let (s, n) = (spool.clone(), name.clone());
                    tokio::task::spawn_blocking(move || s.put(&n, &bytes))
                        .await
                        .map_err(|e| {
                            BackupError::io("spool a WAL segment", std::io::Error::other(e))
                        })??;
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The prefetch worker of [`PrefetchOptions::worker`] for fetches into `dest`: keeps the
    /// window the last call asked for spooled until the spool is removed or belongs to
    /// another archive, the archive ends (a segment it does not hold), a read or write
    /// fails, or nothing was asked for a few seconds. Returns at once when another worker
    /// holds the spool or the spool does not exist (the first call creates it).
    pub async fn prefetch_worker(
        &self,
        dest: &Path,
        opts: &PrefetchOptions,
    ) -> Result<(), BackupError> {
        let info = self.require_info().await?;
        let seg_size = segment_size(info.wal_segment_size);
        let spool = Spool {
            dir: opts.spool_for(dest),
            marker: self.spool_marker(&info),
        };
        if opts.ahead == 0 || !spool.is_current() {
            return Ok(());
        }
        let dir = spool.dir.clone();
        let lock = tokio::task::spawn_blocking(move || Spool::try_lock(&dir))
            .await
            .map_err(|e| BackupError::io("WAL prefetch lock", std::io::Error::other(e)))?
            .map_err(|e| io(format!("lock {}", spool.dir.join(LOCK).display()), e))?;
        let Some(_lock) = lock else {
            return Ok(());
        };
        spool.remove_temporaries()?;
        let (mut asked, mut since) = (None, Instant::now());
        // The segments of the window this worker spooled. One of them missing from the
        // spool was taken by a call (which then moves the window past it), and is not
        // fetched again unless a call waits for it.
        let mut mine: Vec<WalFileName> = Vec::new();
        loop {
            if !spool.is_current() {
                return Ok(());
            }
            let next = spool.next();
            if next != asked {
                (asked, since) = (next, Instant::now());
            }
            let missing = match next {
                Some((first, waiting)) => {
                    let keep = window(first, opts, seg_size);
                    spool.retain(|f| keep.contains(f))?;
                    mine.retain(|f| keep.contains(f) && !(waiting && *f == first));
                    let spooled = spool.segments()?;
                    keep.into_iter()
                        .filter(|w| !spooled.contains(w) && !mine.contains(w))
                        .collect::<Vec<_>>()
                }
                None => Vec::new(),
            };
            if missing.is_empty() {
                if since.elapsed() >= WORKER_IDLE {
                    return Ok(());
                }
                tokio::time::sleep(WORKER_POLL).await;
                continue;
            }
            let complete = self.fill(&spool, &missing, opts.parallel).await?;
            let spooled = spool.segments()?;
            mine.extend(missing.into_iter().filter(|w| spooled.contains(w)));
            if !complete {
                return Ok(());
            }
        }
    }
}

impl WalArchive {
    /// Which archive a spool filled from this one belongs to.
    fn spool_marker(&self, info: &super::WalArchiveInfo) -> SpoolMarker {
        SpoolMarker {
            repository: self.repo.name(),
            system_identifier: info.system_identifier,
            wal_segment_size: segment_size(info.wal_segment_size),
        }
    }
}

fn segment_size(recorded: u64) -> u64 {
    if recorded == 0 {
        DEFAULT_WAL_SEGMENT_SIZE
    } else {
        recorded
    }
}

/// Writes a checked WAL file to `dest` atomically (temporary file renamed into place), 0600,
/// without fsync: see the module documentation.
fn write_dest_blocking(dest: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    tej_core::fsutil::atomic_replace(dest, bytes, 0o600)
        .map_err(|e| BackupError::io(format!("write {}", dest.display()), e))
}

/// [`write_dest_blocking`] off the async runtime.
pub(super) async fn write_dest(dest: &Path, bytes: Vec<u8>) -> Result<(), BackupError> {
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || write_dest_blocking(&dest, &bytes))
        .await
        .map_err(|e| BackupError::io("write WAL file", std::io::Error::other(e)))?
}
