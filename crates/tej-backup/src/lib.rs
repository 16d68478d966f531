//! # tej-backup
//!
//! Logical PostgreSQL backups, physical base backups ([`create_physical_backup`]) and file backups to local disk and S3, that never lie
//! about a backup: `pg_dump` streams through multi-threaded zstd (or gzip), optional
//! [age](https://age-encryption.org) encryption and SHA-256 into every configured
//! repository with bounded memory; the [`Manifest`] is written last, so an interrupted
//! run is never listed; `verify` re-reads and decodes every object; `restore` is a
//! destructive [`tej_core::Step`]; `prune` applies grandfather-father-son retention.
//!
//! The stages (compression [`CompressionOptions`], encryption [`EncryptionOptions`],
//! progress [`ProgressEvent`]) and the manifest are shared with physical backups, so a
//! manifest carries a [`BackupKind`].
//!
//! [`Backups`] is the front door for programs that embed the crate: opened from `tej.toml`
//! (its `[backup]` becomes [`BackupSettings`] once) or built in code, it creates, lists,
//! verifies, restores (logical backups into a database with [`Backups::restore`], base
//! backups into a data directory with [`Backups::restore_physical`]) and prunes backups,
//! and hands out the WAL archive; backups are picked with a typed [`BackupSelector`], and
//! long operations stop when their [`CancellationToken`] is cancelled.
//!
//! ```no_run
//! use tej_backup::{BackupSelector, Backups, CancellationToken, db_target};
//!
//! # async fn run() -> Result<(), tej_backup::BackupError> {
//! let config = tej_core::Config::load_or_env(None).expect("tej.toml");
//! let backups = Backups::open(&config).await?;
//! let cancel = CancellationToken::new();
//! let created = backups.create_logical(db_target(&config.databases[0])?, &cancel).await?;
//! let newest = BackupSelector::latest_logical(created.database.clone().unwrap_or_default());
//! backups.verify(&newest, &cancel).await?;
//! for b in backups.list().await? {
//!     println!("{} {} {} bytes", b.repository, b.id, b.stored_size);
//! }
//! backups.prune(&cancel).await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`WalArchive`] is the WAL archive for point-in-time recovery:
//! `archive_command` ([`WalArchive::push`], [`WalArchive::push_async`]),
//! `restore_command` ([`WalArchive::fetch`] with [`fetch_exit_code`]), the continuity of
//! the archived chain ([`wal_continuity`]) and WAL retention ([`prune_wal`], also run by
//! [`prune`]).
//!
//! ```no_run
//! use tej_backup::{PushOptions, Repository, WalArchive, fetch_exit_code, system_identifier_from_pgdata};
//! use std::path::Path;
//!
//! # async fn run() -> Result<(), tej_backup::BackupError> {
//! let wal = WalArchive::new(Repository::open("/var/lib/tej/repo").await?);
//! // archive_command = '... %p', run in the data directory
//! let opts = PushOptions {
//!     system_identifier: Some(system_identifier_from_pgdata(Path::new("."))?),
//!     ..PushOptions::default()
//! };
//! wal.push(Path::new("pg_wal/000000010000000000000003"), &opts).await?;
//! // restore_command = '... %f %p': 0 fetched, 1 not archived, 255 anything else
//! let code = fetch_exit_code(&wal.fetch("000000010000000000000003", Path::new("pg_wal/RECOVERYXLOG")).await);
//! # let _ = code;
//! # Ok(())
//! # }
//! ```
//!
//! Point-in-time recovery: choose the base backup for a [`RecoveryTarget`],
//! refuse targets beyond the archived WAL, write exactly one target into
//! `postgresql.auto.conf`, follow the server's recovery to its end ([`restore_pitr`],
//! [`PitrRestoreStep`]), and the disaster-recovery drill ([`run_drill`]).
//!
//! ```no_run
//! use tej_backup::{
//!     DbTarget, LogicalBackupOptions, Repository, VerifyOptions, create_logical_backup,
//!     list_backups, verify_backup,
//! };
//! use tej_core::{SystemClock, TokioCommandRunner};
//!
//! # async fn run() -> Result<(), tej_backup::BackupError> {
//! let repos = vec![
//!     Repository::open("/opt/skillswap/backups").await?,
//!     Repository::open("s3://skillswap-backups/db").await?,
//! ];
//! let opts = LogicalBackupOptions::new(DbTarget::new("postgres://app@127.0.0.1/skillswap"));
//! let report = create_logical_backup(&TokioCommandRunner, &repos, &opts, &SystemClock).await?;
//! println!("{} stored in {} repositories", report.id, report.repositories.len());
//! for b in list_backups(&repos[0]).await? {
//!     println!("{} {} bytes", b.id, b.stored_size);
//! }
//! verify_backup(&TokioCommandRunner, &repos[0], "latest", &VerifyOptions::default(), &SystemClock).await?;
//! # Ok(())
//! # }
//! ```

//! ## One path per item
//!
//! Every module is private and every public item has exactly one path:
//! `tej_backup::Item`, at the crate root (storage, locks, WAL archive and point-in-time
//! recovery included). The mocks of the crate's traits (`MockObjectStore`,
//! `MockBackupSession`, `MockBaseBackupSource`) are there with the `mock` feature.

mod backups;
mod create;
mod db;
mod error;
mod files;
mod id;
mod lock;
mod logical;
mod lsn;
mod manifest;
mod physical;
mod pipeline;
mod pitr;
mod read;
mod repo;
mod restore;
mod retention;
mod settings;
mod storage;
mod verify;
mod wal;

pub use backups::{Backups, BackupsBuilder};
pub use create::{CreateReport, RepositoryOutcome, RunOptions};
pub use db::DbTarget;
pub use error::BackupError;
pub use files::{
    FILES_OBJECT, FileBackupOptions, FileBackupReport, FileRestoreOptions, FileRestoreReport,
    FileRestoreStep, create_file_backup, restore_file_backup,
};
pub use id::{BackupId, InvalidBackupId};
pub use lock::{
    LockMode, LockOptions, LockOwner, REPO_LOCK_PREFIX, RepoLock, TargetLock, hostname,
    remove_stale_target_lock, target_locks,
};
pub use logical::{LogicalBackupOptions, create_logical_backup, plain_object_base};
pub use lsn::{DEFAULT_WAL_SEGMENT_SIZE, InvalidLsn, InvalidWalFileName, Lsn, WalFileName};
pub use manifest::{
    BackupKind, CompressionAlgo, CompressionInfo, DumpFormat, EncryptionInfo, MANIFEST_VERSION,
    Manifest, ManifestObject, PhysicalInfo,
};
#[cfg(any(test, feature = "mock"))]
pub use physical::MockBackupSession;
pub use physical::{
    ArchiveCheck, ArchiverStatus, BACKUP_LABEL_NAME, BUNDLE_PREFIX, BackupSession, BackupStop,
    DATA_PREFIX, DEFAULT_ARCHIVE_TIMEOUT, DEFAULT_BUNDLE_SIZE, DEFAULT_PART_SIZE,
    DEFAULT_SMALL_FILE, EMPTY_DIRECTORIES, EXCLUDED_FILES, Exclusion, FILE_LIST_NAME,
    FILE_LIST_VERSION, FileChunk, PG_CONTROL, PgBackupSession, PhysicalBackupOptions,
    PhysicalBackupReport, PhysicalDir, PhysicalFile, PhysicalFileList, PhysicalRestoreOptions,
    PhysicalRestoreReport, PhysicalRestoreStep, ServerFacts, TABLESPACE_MAP_NAME, classify,
    create_physical_backup, create_physical_backup_with, restore_physical_backup,
    restore_physical_manifest,
};
pub use pipeline::{
    CompressionOptions, DEFAULT_WORK_FACTOR, EncryptionOptions, ProgressEvent, ProgressSink,
    passphrase_derivations,
};
#[cfg(any(test, feature = "mock"))]
pub use pitr::MockBaseBackupSource;
pub use pitr::{
    ArchiveHorizon, BaseBackupSource, DrillOptions, DrillReport, InvalidTarget, MANAGED_KEYS,
    MAX_RESTORE_POINT_NAME, PitrRestoreOptions, PitrRestoreReport, PitrRestoreStep, RecoveryAction,
    RecoveryConfig, RecoveryConfigReport, RecoveryLog, RecoveryReport, RecoveryTarget,
    RecoveryTimeline, RepositorySource, RestoredArchiving, SanityResult, ServerOptions,
    TARGET_KEYS, check_backup_covered, check_target_reachable, choose_base_backup, comment_out,
    conf_line_key, configure_recovery, horizon_of, parse_time, pick_free_port, plan_pitr_restore,
    postgres_time, quote_conf_value, restore_pitr, rewrite_auto_conf, run_drill, run_recovery,
    running_postmaster, stop_server,
};
pub use repo::{
    BackupSelector, BackupSummary, FailureRecord, IncompleteRun, Inventory, Repository, Series,
    VerificationRecord, list_backups,
};
pub use restore::{
    RestoreOptions, RestoreReport, RestoreStep, restore_backup, restore_manifest, scratch_parent,
};
pub use retention::{
    Candidate, CandidateState, Decision, PruneOptions, PruneReport, RetentionPlan, RetentionPolicy,
    is_usable, newest_usable, newest_usable_per_series, plan_retention, plan_series_retention,
    prune, wal_retained,
};
pub use settings::{BackupSettings, db_target};
#[cfg(any(test, feature = "mock"))]
pub use storage::MockObjectStore;
pub use storage::{
    ByteStream, CancellableStore, Fault, FaultyStore, LocalStore, MemoryStore, ObjectKey,
    ObjectMeta, ObjectStore, Op, PutCut, PutOptions, PutResult, RetryingStore, S3Location,
    S3Options, S3RetryMode, S3Store, bytes_stream, get_bytes, open_repository, put_bytes,
};
/// The token long operations take (re-exported from tokio-util).
pub use tokio_util::sync::CancellationToken;
pub use verify::{
    ObjectCheck, QueryResult, RestoreTestOptions, RestoreTestReport, VerifyOptions, VerifyReport,
    verify_backup,
};
pub use wal::{
    AsyncPushOptions, BackupChain, BaseBackupRef, ContinuityReport, DEFAULT_WAL_ZSTD_LEVEL,
    FETCH_FATAL_EXIT_CODE, FetchOutcome, PREFETCH_SPOOL_NAME, PitrWindow, PrefetchOptions,
    PushOptions, PushReport, PushStatus, SegmentHeader, TimelineSwitch, WAL_INFO_KEY,
    WAL_OBJECT_MAGIC, WAL_OBJECT_SUFFIX, WAL_PREFIX, WalArchive, WalArchiveInfo, WalEntry, WalGap,
    WalObjectMeta, WalPruneOptions, WalPruneReport, WorkerCommand, fetch_exit_code, open_object,
    parse_history, prune_wal, push_exit_code, system_identifier_from_pgdata, wal_continuity,
};
