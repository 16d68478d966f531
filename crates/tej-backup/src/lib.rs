//! # tej-backup
//!
//! Logical PostgreSQL backups, physical base backups ([`physical`]) and file backups to local disk and S3, that never lie
//! about a backup: `pg_dump` streams through multi-threaded zstd (or gzip), optional
//! [age](https://age-encryption.org) encryption and SHA-256 into every configured
//! repository with bounded memory; the [`Manifest`] is written last, so an interrupted
//! run is never listed; `verify` re-reads and decodes every object; `restore` is a
//! destructive [`tej_core::Step`]; `prune` applies grandfather-father-son retention.
//!
//! Stages ([`pipeline`]) and the manifest are shared with physical backups, so a
//! manifest carries a [`BackupKind`].
//!
//! [`Backups`] is the front door for programs that embed the crate: opened from `tej.toml`
//! (its `[backup]` becomes [`BackupSettings`] once) or built in code, it creates, lists,
//! verifies, restores and prunes backups and hands out the WAL archive; backups are picked
//! with a typed [`BackupSelector`], and long operations stop when their
//! [`CancellationToken`] is cancelled.
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
//! [`WalArchive`] ([`wal`]) is the WAL archive for point-in-time recovery:
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
//! Point-in-time recovery ([`pitr`]): choose the base backup for a [`RecoveryTarget`],
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

pub mod backups;
pub mod create;
pub mod db;
pub mod error;
pub mod files;
pub mod id;
pub mod lock;
pub mod logical;
pub mod lsn;
pub mod manifest;
pub mod physical;
pub mod pipeline;
pub mod pitr;
mod read;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod settings;
pub mod verify;
pub mod wal;

pub use backups::{Backups, BackupsBuilder};
pub use create::{CreateReport, RepositoryOutcome, RunOptions};
pub use db::DbTarget;
pub use error::BackupError;
pub use files::{
    FILES_OBJECT, FileBackupOptions, FileBackupReport, FileRestoreOptions, FileRestoreReport,
    FileRestoreStep, create_file_backup, restore_file_backup,
};
pub use id::{BackupId, InvalidBackupId};
pub use lock::{LockMode, LockOptions, LockOwner, RepoLock, TargetLock, target_locks};
pub use logical::{LogicalBackupOptions, create_logical_backup, plain_object_base};
pub use lsn::{DEFAULT_WAL_SEGMENT_SIZE, InvalidLsn, InvalidWalFileName, Lsn, WalFileName};
pub use manifest::{
    BackupKind, CompressionAlgo, CompressionInfo, DumpFormat, EncryptionInfo, MANIFEST_VERSION,
    Manifest, ManifestObject, PhysicalInfo,
};
pub use physical::{
    ArchiveCheck, ArchiverStatus, BackupSession, PgBackupSession, PhysicalBackupOptions,
    PhysicalBackupReport, PhysicalFileList, PhysicalRestoreOptions, PhysicalRestoreReport,
    PhysicalRestoreStep, create_physical_backup, create_physical_backup_with,
    restore_physical_backup, restore_physical_manifest,
};
pub use pipeline::{CompressionOptions, EncryptionOptions, ProgressEvent, ProgressSink};
pub use pitr::{
    ArchiveHorizon, BaseBackupSource, DrillOptions, DrillReport, PitrRestoreOptions,
    PitrRestoreReport, PitrRestoreStep, RecoveryAction, RecoveryConfig, RecoveryConfigReport,
    RecoveryReport, RecoveryTarget, RecoveryTimeline, RepositorySource, RestoredArchiving,
    ServerOptions, check_target_reachable, choose_base_backup, configure_recovery, restore_pitr,
    run_drill, run_recovery,
};
pub use repo::{
    BackupSelector, BackupSummary, FailureRecord, IncompleteRun, Inventory, Repository, Series,
    VerificationRecord, list_backups,
};
pub use restore::{RestoreOptions, RestoreReport, RestoreStep, restore_backup, restore_manifest};
pub use retention::{
    Candidate, CandidateState, Decision, PruneOptions, PruneReport, RetentionPlan, RetentionPolicy,
    is_usable, newest_usable, newest_usable_per_series, plan_retention, plan_series_retention,
    prune, wal_retained,
};
pub use settings::{BackupSettings, db_target};
/// The token long operations take (re-exported from tokio-util).
pub use tokio_util::sync::CancellationToken;
pub use verify::{
    ObjectCheck, QueryResult, RestoreTestOptions, RestoreTestReport, VerifyOptions, VerifyReport,
    verify_backup,
};

pub use wal::{
    AsyncPushOptions, BackupChain, BaseBackupRef, ContinuityReport, DEFAULT_WAL_ZSTD_LEVEL,
    FETCH_FATAL_EXIT_CODE, FetchOutcome, PitrWindow, PushOptions, PushReport, PushStatus,
    SegmentHeader, TimelineSwitch, WalArchive, WalArchiveInfo, WalEntry, WalGap, WalObjectMeta,
    WalPruneOptions, WalPruneReport, fetch_exit_code, parse_history, prune_wal, push_exit_code,
    system_identifier_from_pgdata, wal_continuity,
};

pub mod storage;

pub use storage::{
    ByteStream, CancellableStore, Fault, FaultyStore, LocalStore, MemoryStore, ObjectKey,
    ObjectMeta, ObjectStore, Op, PutCut, PutOptions, PutResult, RetryingStore, S3Location,
    S3Options, S3Store, StorageError, bytes_stream, get_bytes, open_repository, put_bytes,
};
