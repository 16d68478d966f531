//! WAL archiving for point-in-time recovery: `archive_command` (push), `restore_command`
//! (fetch), continuity of the archived chain, and WAL retention.
//!
//! # Key layout
//!
//! ```text
//! wal/archive.json                                  the archive's cluster (WalArchiveInfo)
//! wal/<TTTTTTTT>/<WAL file name>.tejwal             one object per archived file
//! ```
//!
//! `<TTTTTTTT>` is the file's timeline in hex (`00000001`), the WAL file name is exactly
//! what PostgreSQL passes (`000000010000000000000003`, `00000002.history`,
//! `000000010000000000000002.00000028.backup`, `000000010000000000000005.partial`).
//! Each object is self-describing (see [`object`]): the payload compressed (zstd by
//! default) and optionally age-encrypted, followed by a JSON trailer with the raw
//! SHA-256, raw size, the WAL file name and the cluster's system identifier. `fetch`
//! checks all of them, so a damaged object, an object copied under another name, or one
//! of another cluster is refused instead of replayed.
//!
//! # The archive marker
//!
//! `wal/archive.json` ([`WalArchiveInfo`]) is the archive marker: the cluster (system
//! identifier, segment size) the archive belongs to. [`WalArchive::init`] writes it (what
//! `tej wal init` and every base backup do); [`WalArchive::fetch`] refuses an archive
//! without it ([`BackupError::WalArchiveNotInitialised`], exit 255: a missing, empty or
//! unmounted repository must never read as "not archived"), and so does a push with
//! [`PushOptions::require_archive_info`] (what `tej wal push` sets).
//!
//! # Exit codes
//!
//! [`push_exit_code`]: 0 archived (or already archived with the same content), 1 any
//! failure (PostgreSQL retries). [`fetch_exit_code`]: 0 fetched, 1 not in the archive,
//! [`FETCH_FATAL_EXIT_CODE`] (255) for every other failure: PostgreSQL treats a
//! `restore_command` exit code above 125 as fatal and stops recovery, instead of taking an
//! outage for the end of WAL and promoting early (143 = 128 + SIGTERM is avoided, as
//! PostgreSQL reads it as a shutdown request).

use crate::error::BackupError;
use crate::lsn::{DEFAULT_WAL_SEGMENT_SIZE, WalFileName};
use crate::pipeline::{self, CompressionOptions, DecodeError, EncryptionOptions};
use crate::repo::Repository;
use crate::storage::{ObjectKey, get_bytes, put_bytes};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub mod continuity;
pub mod header;
pub mod object;
pub mod prefetch;
pub mod prune;
pub mod spool;
#[cfg(test)]
mod tests;

pub use continuity::{
    BackupChain, BaseBackupRef, ContinuityReport, PitrWindow, TimelineSwitch, WalGap,
    parse_history, wal_continuity,
};
pub use header::{SegmentHeader, system_identifier_from_pgdata};
pub use object::{WAL_OBJECT_MAGIC, WalObjectMeta, open_object};
pub use prefetch::{PREFETCH_SPOOL_NAME, PrefetchOptions, WorkerCommand};
pub use prune::{WalPruneOptions, WalPruneReport, prune_wal};
pub use spool::AsyncPushOptions;

/// Prefix of the WAL archive in a repository.
pub const WAL_PREFIX: &str = "wal/";
/// The key of the archive's info object.
pub const WAL_INFO_KEY: &str = "wal/archive.json";
/// The suffix of archived WAL objects.
pub const WAL_OBJECT_SUFFIX: &str = ".tejwal";
/// The `restore_command` exit code for every failure other than "not in the archive".
pub const FETCH_FATAL_EXIT_CODE: i32 = 255;
/// The largest history or backup-history file accepted.
const MAX_TEXT_FILE: u64 = 16 << 20;

/// The cluster an archive belongs to, recorded by its first push (`wal/archive.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalArchiveInfo {
    /// Info format version (1).
    pub version: u32,
    /// The cluster's system identifier.
    pub system_identifier: u64,
    /// The cluster's WAL segment size, bytes.
    pub wal_segment_size: u64,
    /// When the archive was started.
    pub created_at: Timestamp,
}

/// Options of [`WalArchive::push`].
#[derive(Debug, Clone, PartialEq)]
pub struct PushOptions {
    /// The system identifier the file must carry (from `pg_control`, see
    /// [`system_identifier_from_pgdata`]); `None`: only the archive's recorded one is checked.
    pub system_identifier: Option<u64>,
    /// Compression (default zstd level [`DEFAULT_WAL_ZSTD_LEVEL`], one thread: the
    /// parallelism of archiving is across files, see [`WalArchive::push_async`]).
    pub compression: CompressionOptions,
    /// Refuse to push into an archive without its marker (`wal/archive.json`) instead of
    /// writing it from this first file ([`BackupError::WalArchiveNotInitialised`]):
    /// `archive_command` must not start an archive in a wrong or unmounted directory.
    pub require_archive_info: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            system_identifier: None,
            require_archive_info: false,
            compression: CompressionOptions {
                level: Some(DEFAULT_WAL_ZSTD_LEVEL),
                threads: 1,
                ..CompressionOptions::default()
            },
        }
    }
}

/// The default zstd level of WAL pushes: 1, fast enough for `archive_command` to keep
/// up with a busy server (on pgbench WAL it compresses as well as level 3, see
/// `examples/bench_wal.rs`).
pub const DEFAULT_WAL_ZSTD_LEVEL: i32 = 1;

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushStatus {
    /// Stored now, durably.
    Archived,
    /// Already stored with the same content: nothing written.
    AlreadyArchived,
    /// Stored earlier by an asynchronous push of this file (its spool record matched).
    ArchivedAhead,
}

/// What a push reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushReport {
    /// The WAL file name.
    pub name: String,
    /// The object key.
    pub key: String,
    /// How it ended.
    pub status: PushStatus,
    /// Bytes of the file.
    pub raw_size: u64,
    /// SHA-256 of the file, hex.
    pub raw_sha256: String,
    /// Bytes stored (0 when nothing was written).
    pub stored_size: u64,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
}

/// How a fetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FetchOutcome {
    /// Written to the destination, checked.
    Fetched,
    /// The archive does not hold this file (routine during recovery).
    NotFound,
}

/// One archived file, as [`WalArchive::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalEntry {
    /// The WAL file name.
    pub name: String,
    /// The parsed name.
    #[serde(skip)]
    pub file: WalFileName,
    /// The object key.
    pub key: String,
    /// Bytes stored.
    pub stored_size: u64,
    /// When it was stored (the object's modification time).
    pub pushed_at: Option<Timestamp>,
}

/// The `archive_command` exit code for a push result: 0 success, 1 failure.
pub fn push_exit_code(result: &Result<PushReport, BackupError>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

/// The `restore_command` exit code for a fetch result: 0 fetched, 1 not in the archive,
/// [`FETCH_FATAL_EXIT_CODE`] for any error (PostgreSQL stops recovery on codes above 125).
pub fn fetch_exit_code(result: &Result<FetchOutcome, BackupError>) -> i32 {
    match result {
        Ok(FetchOutcome::Fetched) => 0,
        Ok(FetchOutcome::NotFound) => 1,
        Err(_) => FETCH_FATAL_EXIT_CODE,
    }
}

/// The WAL archive of one cluster in a [`Repository`].
#[derive(Clone)]
pub struct WalArchive {
    repo: Repository,
    encryption: EncryptionOptions,
    info: Arc<Mutex<Option<WalArchiveInfo>>>,
    host: String,
}

impl std::fmt::Debug for WalArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalArchive")
            .field("repo", &self.repo.name())
            .field("encrypts", &self.encryption.encrypts())
            .finish()
    }
}

fn key_for(name: &str, timeline: u32) -> Result<ObjectKey, BackupError> {
    ObjectKey::new(format!(
        "{WAL_PREFIX}{timeline:08X}/{name}{WAL_OBJECT_SUFFIX}"
    ))
}

/// The timeline of a WAL file name (its first 8 hex digits), before the segment size is known.
fn name_timeline(name: &str) -> Option<u32> {
    let t = name.get(0..8)?;
    if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(t, 16).ok()
}

impl WalArchive {
    /// The WAL archive in `repo`, unencrypted.
    pub fn new(repo: Repository) -> WalArchive {
        WalArchive {
            repo,
            encryption: EncryptionOptions::default(),
            info: Arc::new(Mutex::new(None)),
            host: crate::lock::hostname(),
        }
    }

    /// Encrypts pushes to (and decrypts fetches with) `encryption`'s keys.
    pub fn with_encryption(mut self, encryption: EncryptionOptions) -> WalArchive {
        self.encryption = encryption;
        self
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The object key of a WAL file name.
    pub fn key(&self, name: &str) -> Result<ObjectKey, BackupError> {
        let tli = name_timeline(name).ok_or_else(|| BackupError::InvalidWal {
            file: name.to_string(),
            reason: "the name does not start with a timeline".into(),
        })?;
        key_for(name, tli)
    }

    fn cached_info(&self) -> Option<WalArchiveInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn cache_info(&self, info: &WalArchiveInfo) {
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
    }

    /// The archive's recorded cluster; `None` before the first push.
    pub async fn info(&self) -> Result<Option<WalArchiveInfo>, BackupError> {
        if let Some(i) = self.cached_info() {
            return Ok(Some(i));
        }
        let key = ObjectKey::new(WAL_INFO_KEY)?;
        let bytes = match get_bytes(&*self.repo.store, &key, None).await {
            Ok(b) => b,
            Err(BackupError::ObjectNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let info: WalArchiveInfo =
            serde_json::from_slice(&bytes).map_err(|e| BackupError::WalCorrupt {
                repo: self.repo.name(),
                key: WAL_INFO_KEY.into(),
                reason: format!("not a WAL archive info: {e}"),
            })?;
        self.cache_info(&info);
        Ok(Some(info))
    }

    /// The archive marker, or [`BackupError::WalArchiveNotInitialised`] without one.
    pub async fn require_info(&self) -> Result<WalArchiveInfo, BackupError> {
        self.info()
            .await?
            .ok_or_else(|| BackupError::WalArchiveNotInitialised {
                repo: self.repo.name(),
                reason: "the archive marker is missing (a wrong, empty or unmounted directory, or an archive never initialised)".into(),
            })
    }

    /// Initialises the archive for the cluster `system_identifier` with
    /// `wal_segment_size`-byte segments: writes the archive marker `wal/archive.json`
    /// (atomically, only if absent). Idempotent for the same cluster; an archive of
    /// another cluster (or segment size) is refused and left untouched.
    pub async fn init(
        &self,
        system_identifier: u64,
        wal_segment_size: u64,
    ) -> Result<WalArchiveInfo, BackupError> {
        if wal_segment_size == 0 {
            return Err(BackupError::InvalidOptions(
                "a WAL segment size of 0".into(),
            ));
        }
        let info = self.establish(system_identifier, wal_segment_size).await?;
        self.hand_to_repository_owner()?;
        if info.system_identifier != system_identifier {
            return Err(BackupError::WalForeignCluster {
                file: WAL_INFO_KEY.into(),
                expected: info.system_identifier,
                found: system_identifier,
                what: format!("the archive in {}", self.repo.name()),
            });
        }
        if info.wal_segment_size != wal_segment_size {
            return Err(BackupError::InvalidOptions(format!(
                "the archive in {} has {}-byte WAL segments, the cluster {wal_segment_size}",
                self.repo.name(),
                info.wal_segment_size
            )));
        }
        Ok(info)
    }

    /// In a local repository, when tej runs as root (`tej wal init`, a base backup):
    /// `wal/` and its marker belong to the repository directory's owner, with its mode,
    /// so that the server's OS user running `archive_command` can archive into it.
    fn hand_to_repository_owner(&self) -> Result<(), BackupError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Some(root) = &self.repo.local_path else {
            return Ok(());
        };
        if !nix::unistd::geteuid().is_root() {
            return Ok(());
        }
        let meta = std::fs::metadata(root)
            .map_err(|e| BackupError::io(format!("read {}", root.display()), e))?;
        let owner = (
            Some(nix::unistd::Uid::from_raw(meta.uid())),
            Some(nix::unistd::Gid::from_raw(meta.gid())),
        );
        let dir = root.join(WAL_PREFIX.trim_end_matches('/'));
        let info = root.join(WAL_INFO_KEY);
        for (path, mode) in [(&dir, meta.mode() & 0o777), (&info, 0o644)] {
            let chown = |p: &Path| {
                nix::unistd::chown(p, owner.0, owner.1).map_err(|e| {
                    BackupError::io(
                        format!("hand {} to the repository's owner", p.display()),
                        e.into(),
                    )
                })
            };
            chown(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| BackupError::io(format!("set the mode of {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Records the archive's cluster (first push), or returns the one already recorded.
    async fn establish(
        &self,
        system_identifier: u64,
        wal_segment_size: u64,
    ) -> Result<WalArchiveInfo, BackupError> {
        if let Some(i) = self.info().await? {
            return Ok(i);
        }
        let info = WalArchiveInfo {
            version: 1,
            system_identifier,
            wal_segment_size,
            created_at: Timestamp::now(),
        };
        let key = ObjectKey::new(WAL_INFO_KEY)?;
        let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
        match put_bytes(&*self.repo.store, &key, json, true).await {
            Ok(_) => {
                self.cache_info(&info);
                Ok(info)
            }
            Err(BackupError::ObjectExists { .. }) => {
                self.info().await?.ok_or_else(|| BackupError::WalCorrupt {
                    repo: self.repo.name(),
                    key: WAL_INFO_KEY.into(),
                    reason: "exists and vanished".into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Archives one WAL file (segment, `.partial`, `.history` or `.backup`), as
    /// `archive_command` does: read, check it belongs to this cluster, compress, encrypt,
    /// checksum, store. Success means durable. The same content already stored gives
    /// [`PushStatus::AlreadyArchived`]; different content gives
    /// [`BackupError::WalConflict`] and leaves the stored object untouched.
    pub async fn push(&self, path: &Path, opts: &PushOptions) -> Result<PushReport, BackupError> {
        let started = Instant::now();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| BackupError::InvalidWal {
                file: path.display().to_string(),
                reason: "no file name".into(),
            })?
            .to_string();
        let p = path.to_path_buf();
        let data = tokio::task::spawn_blocking(move || read_wal_file(&p))
            .await
            .map_err(|e| BackupError::io("read WAL file", std::io::Error::other(e)))??;
        self.push_bytes(&name, data, opts, started).await
    }

    /// [`WalArchive::push`] of bytes already read (`name` is the WAL file name).
    pub(crate) async fn push_bytes(
        &self,
        name: &str,
        data: Vec<u8>,
        opts: &PushOptions,
        started: Instant,
    ) -> Result<PushReport, BackupError> {
        let invalid = |reason: String| BackupError::InvalidWal {
            file: name.to_string(),
            reason,
        };
        let tli = name_timeline(name).ok_or_else(|| invalid("not a WAL file name".into()))?;
        if opts.require_archive_info {
            self.require_info().await?;
        }
        // Who wrote it: the page header of segments; nothing for text files.
        let is_segment = !(name.ends_with(".history") || name.ends_with(".backup"));
        let (file_sysid, seg_size) = if is_segment {
            let h = SegmentHeader::read(&data).map_err(invalid)?;
            let seg_size = u64::from(h.segment_size);
            let file = WalFileName::parse(name, seg_size).map_err(|e| invalid(e.to_string()))?;
            if data.len() as u64 != seg_size {
                return Err(invalid(format!(
                    "{} bytes, but the segment size is {seg_size}",
                    data.len()
                )));
            }
            if Some(h.page_address) != file.start_lsn() {
                return Err(invalid(format!(
                    "its first page is at {} but the name says {}: the file was renamed",
                    h.page_address,
                    file.start_lsn().unwrap_or_default()
                )));
            }
            (Some(h.system_identifier), seg_size)
        } else {
            let known = self
                .info()
                .await?
                .map(|i| i.wal_segment_size)
                .unwrap_or(DEFAULT_WAL_SEGMENT_SIZE);
            WalFileName::parse(name, known).map_err(|e| invalid(e.to_string()))?;
            (None, known)
        };
        if let (Some(expected), Some(found)) = (opts.system_identifier, file_sysid)
            && expected != found
        {
            return Err(BackupError::WalForeignCluster {
                file: name.to_string(),
                expected,
                found,
                what: "the data directory's pg_control".into(),
            });
        }
        let sysid = match file_sysid.or(opts.system_identifier) {
            Some(s) => s,
            None => match self.info().await? {
                Some(i) => i.system_identifier,
                None => {
                    return Err(BackupError::InvalidOptions(format!(
                        "cannot tell which cluster {name} belongs to: push a WAL segment first or give the system identifier"
                    )));
                }
            },
        };
        let info = self.establish(sysid, seg_size).await?;
        if info.system_identifier != sysid {
            return Err(BackupError::WalForeignCluster {
                file: name.to_string(),
                expected: info.system_identifier,
                found: sysid,
                what: format!("the archive in {}", self.repo.name()),
            });
        }
        if is_segment && info.wal_segment_size != seg_size {
            return Err(invalid(format!(
                "segment size {seg_size} differs from the archive's {}",
                info.wal_segment_size
            )));
        }
        let key = key_for(name, tli)?;
        let raw_size = data.len() as u64;
        // Compress, encrypt and hash on a blocking thread.
        let compression = opts.compression;
        let encryption = self.encryption.clone();
        let (payload, digests, comp_info, enc_info) = tokio::task::spawn_blocking(move || {
            let enc = encryption.encryptor()?;
            let comp_info = compression.info()?;
            let mut out = Vec::with_capacity(data.len() / 3 + 1024);
            let d = pipeline::encode(
                &mut &data[..],
                &compression,
                enc.as_ref(),
                &mut out,
                &mut |_, _| {},
            )
            .map_err(|e| BackupError::io("compress WAL file", e))?;
            Ok::<_, BackupError>((out, d, comp_info, enc.map(|e| e.info())))
        })
        .await
        .map_err(|e| BackupError::io("compress WAL file", std::io::Error::other(e)))??;
        let meta = WalObjectMeta {
            format: 1,
            name: name.to_string(),
            system_identifier: sysid,
            raw_size,
            raw_sha256: digests.raw_sha256.clone(),
            compression: comp_info,
            encryption: enc_info,
            pushed_at: Timestamp::now(),
            host: self.host.clone(),
        };
        let sealed = object::seal(payload, &meta);
        let stored_size = sealed.len() as u64;
        let status = match put_bytes(&*self.repo.store, &key, sealed, true).await {
            Ok(put) if put.size == stored_size => PushStatus::Archived,
            Ok(put) => {
                // The store took fewer bytes than were sent: remove the damaged object
                // (it was created by this put) and fail, so PostgreSQL retries.
                self.repo.store.delete(&key).await?;
                return Err(BackupError::WalCorrupt {
                    repo: self.repo.name(),
                    key: key.to_string(),
                    reason: format!(
                        "the store kept {} of {stored_size} bytes; removed, retry the push",
                        put.size
                    ),
                });
            }
            Err(BackupError::ObjectExists { .. }) => {
                let existing = get_bytes(&*self.repo.store, &key, None).await?;
                let (_, stored) =
                    object::open(&existing).map_err(|reason| BackupError::WalCorrupt {
                        repo: self.repo.name(),
                        key: key.to_string(),
                        reason,
                    })?;
                if stored.raw_sha256 == digests.raw_sha256
                    && stored.raw_size == raw_size
                    && stored.name == name
                {
                    PushStatus::AlreadyArchived
                } else {
                    return Err(BackupError::WalConflict {
                        repo: self.repo.name(),
                        name: name.to_string(),
                        stored_sha256: stored.raw_sha256,
                        new_sha256: digests.raw_sha256,
                    });
                }
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(repo = %self.repo.name(), wal = name, ?status, "pushed");
        Ok(PushReport {
            name: name.to_string(),
            key: key.to_string(),
            status,
            raw_size,
            raw_sha256: digests.raw_sha256,
            stored_size: if status == PushStatus::Archived {
                stored_size
            } else {
                0
            },
            elapsed_secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Reads, decrypts, decompresses and checks an archived file; `None` when absent.
    pub async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, BackupError> {
        let key = self.key(name)?;
        let info = self.info().await?;
        let seg_size = info
            .as_ref()
            .map(|i| i.wal_segment_size)
            .unwrap_or(DEFAULT_WAL_SEGMENT_SIZE);
        WalFileName::parse(name, seg_size).map_err(|e| BackupError::InvalidWal {
            file: name.to_string(),
            reason: e.to_string(),
        })?;
        let object = match get_bytes(&*self.repo.store, &key, None).await {
            Ok(b) => b,
            Err(BackupError::ObjectNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let repo = self.repo.name();
        let corrupt = |reason: String| BackupError::WalCorrupt {
            repo: repo.clone(),
            key: key.to_string(),
            reason,
        };
        let encryption = self.encryption.clone();
        // Resolve the keys before touching the data, so a missing key is an options error.
        drop(self.encryption.decryptor()?);
        let name_owned = name.to_string();
        let key_text = key.to_string();
        let decoded = tokio::task::spawn_blocking(move || {
            let keys = encryption.decryptor().map_err(|e| format!("decrypt: {e}"))?;
            let (payload, meta) = object::open(&object)?;
            if meta.name != name_owned {
                return Err(format!(
                    "it holds {} (stored under the wrong key)",
                    meta.name
                ));
            }
            let mut out = Vec::with_capacity(meta.raw_size.min(1 << 30) as usize);
            let d = pipeline::decode(
                &mut &payload[..],
                meta.compression.algorithm,
                meta.encryption.is_some(),
                &keys,
                &mut out,
                &mut |_, _| {},
            )
            .map_err(|e| match e {
                DecodeError::Decrypt(r) => format!("decrypt: {r}"),
                DecodeError::Data(r) => format!("damaged: {r}"),
                DecodeError::Input(e) | DecodeError::Output(e) => e.to_string(),
            })?;
            if d.raw_sha256 != meta.raw_sha256 || d.raw_size != meta.raw_size {
                return Err(format!(
                    "SHA-256 mismatch: {} bytes with {} decoded, trailer says {} bytes with {} ({key_text})",
                    d.raw_size, d.raw_sha256, meta.raw_size, meta.raw_sha256
                ));
            }
            Ok((out, meta))
        })
        .await
        .map_err(|e| corrupt(e.to_string()))?;
        let (out, meta) = decoded.map_err(|r| {
            if r.starts_with("decrypt: ") {
                BackupError::Decrypt {
                    object: key.to_string(),
                    reason: r.trim_start_matches("decrypt: ").to_string(),
                }
            } else {
                corrupt(r)
            }
        })?;
        if let Some(i) = &info
            && i.system_identifier != meta.system_identifier
        {
            return Err(BackupError::WalForeignCluster {
                file: name.to_string(),
                expected: i.system_identifier,
                found: meta.system_identifier,
                what: format!("the archive in {}", self.repo.name()),
            });
        }
        let is_segment = !(name.ends_with(".history") || name.ends_with(".backup"));
        if is_segment {
            let h = SegmentHeader::read(&out).map_err(&corrupt)?;
            if h.system_identifier != meta.system_identifier {
                return Err(corrupt(format!(
                    "the segment's header names cluster {}, the trailer {}",
                    h.system_identifier, meta.system_identifier
                )));
            }
            let file = WalFileName::parse(name, u64::from(h.segment_size))
                .map_err(|e| corrupt(e.to_string()))?;
            if file.start_lsn() != Some(h.page_address) {
                return Err(corrupt(format!(
                    "the segment starts at {} but its name says {}",
                    h.page_address,
                    file.start_lsn().unwrap_or_default()
                )));
            }
        }
        Ok(Some(out))
    }

    /// Restores one archived file to `dest`, as `restore_command` does: checked in full
    /// (SHA-256, name, cluster) before a temporary file beside `dest` is written and
    /// renamed, so `dest` never holds a partial file. Not fsynced: PostgreSQL makes durable
    /// the WAL files it keeps and asks again for the others after a crash (as with
    /// pgBackRest's archive-get).
    /// An archive without its marker is an error ([`BackupError::WalArchiveNotInitialised`]),
    /// never [`FetchOutcome::NotFound`].
    pub async fn fetch(&self, name: &str, dest: &Path) -> Result<FetchOutcome, BackupError> {
        self.require_info().await?;
        let Some(bytes) = self.read(name).await? else {
            return Ok(FetchOutcome::NotFound);
        };
        prefetch::write_dest(dest, bytes).await?;
        Ok(FetchOutcome::Fetched)
    }

    /// Every archived file, sorted by timeline and name.
    pub async fn list(&self) -> Result<Vec<WalEntry>, BackupError> {
        let seg_size = self
            .info()
            .await?
            .map(|i| i.wal_segment_size)
            .unwrap_or(DEFAULT_WAL_SEGMENT_SIZE);
        let mut out = Vec::new();
        for o in self.repo.store.list(WAL_PREFIX).await? {
            let k = o.key.as_str();
            let Some(rest) = k
                .strip_prefix(WAL_PREFIX)
                .and_then(|r| r.strip_suffix(WAL_OBJECT_SUFFIX))
            else {
                continue;
            };
            let Some((_, name)) = rest.split_once('/') else {
                continue;
            };
            let Ok(file) = WalFileName::parse(name, seg_size) else {
                continue;
            };
            out.push(WalEntry {
                name: name.to_string(),
                file,
                key: k.to_string(),
                stored_size: o.size,
                pushed_at: o.last_modified,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes one archived file (retention).
    pub(crate) async fn delete(&self, name: &str) -> Result<(), BackupError> {
        self.repo.store.delete(&self.key(name)?).await?;
        Ok(())
    }
}

/// Reads a WAL file, refusing oversized text files.
fn read_wal_file(path: &Path) -> Result<Vec<u8>, BackupError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| BackupError::io(format!("read {}", path.display()), e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if (name.ends_with(".history") || name.ends_with(".backup")) && meta.len() > MAX_TEXT_FILE {
        return Err(BackupError::InvalidWal {
            file: path.display().to_string(),
            reason: format!("{} bytes is too large for a history file", meta.len()),
        });
    }
    std::fs::read(path).map_err(|e| BackupError::io(format!("read {}", path.display()), e))
}
