//! Physical base backups of a running PostgreSQL cluster whose data directory is local
//! (as pgBackRest takes them), and their restore into a data directory.
//!
//! # How
//!
//! The non-exclusive backup API over one SQL session: `pg_backup_start(label, fast =>
//! true)`, a parallel copy of the data directory's files, `pg_backup_stop()` whose
//! `backup_label` and `tablespace_map` are stored as objects. This was chosen over
//! `pg_basebackup -Ft` streaming because the speed comes from compressing many
//! objects at once: `pg_basebackup` sends one tar stream over one connection, which
//! would have to be compressed as one stream (one zstd frame, or multi-threaded zstd
//! with its synchronisation), while reading the files directly lets each of `jobs`
//! workers (one per core plus one by default, so a worker waiting for its object's
//! fsync leaves no core idle) read, hash, compress (single-threaded zstd),
//! optionally encrypt and upload its own object, with nothing shared but the
//! repositories. Memory stays bounded: per worker at most one bundle (16 MiB) plus the
//! pipeline's channel buffers (4 × 1 MiB per repository). Files changing during the
//! copy are fine (WAL replay from the backup's start LSN repairs them); files vanishing
//! are skipped.
//!
//! # Object layout (`backups/<id>/...`)
//!
//! - `pg_data/<path>[.partNNNN].zst[.age]`: a file of at least 1 MiB, cut into parts of
//!   64 MiB (each its own object, checksummed, restored in parallel at its offset);
//! - `bundles/NNNNN.tar.zst[.age]`: smaller files packed into tar bundles of ~16 MiB
//!   (entries named by their path, so `zstd -d | tar x` works on an unencrypted one);
//! - `pg_data/global/pg_control.zst`: the control file, copied last;
//! - `backup_label.zst`, `tablespace_map.zst` (when there are tablespaces): from
//!   `pg_backup_stop`;
//! - `files.json.zst`: the [`PhysicalFileList`]: directories with modes, files with
//!   size, mode, mtime and their chunks (object, offset, size, SHA-256), so every file
//!   (every 64 MiB part of a large one) has its own SHA-256;
//! - `manifest.json`, last: [`crate::Manifest`] with `kind = physical` and
//!   [`crate::PhysicalInfo`] (system identifier, timeline, start/stop LSN and WAL,
//!   segment size, major version, data directory).
//!
//! Skipped as pgBackRest and `pg_basebackup` skip them (directories kept): the contents
//! of `pg_wal`, `pg_replslot`, `pg_dynshmem`, `pg_notify`, `pg_serial`, `pg_snapshots`,
//! `pg_stat_tmp`, `pg_subtrans` and `pgsql_tmp`; `postmaster.pid`/`.opts`, `backup_label`,
//! `tablespace_map`, signal files, `pg_internal.init`, temporary relations, and the main
//! forks of unlogged relations (their init fork is kept). See [`classify`].
//!
//! Not supported yet: tablespaces outside the data directory (refused with an error),
//! backups from a standby (refused).
//!
//! ```no_run
//! use tej_backup::{
//!     DbTarget, PhysicalBackupOptions, PhysicalRestoreOptions, Repository,
//!     create_physical_backup, restore_physical_backup,
//! };
//! use tej_core::SystemClock;
//!
//! # async fn run() -> Result<(), tej_backup::BackupError> {
//! let repos = vec![Repository::open("/opt/skillswap/backups").await?];
//! let opts = PhysicalBackupOptions::new(DbTarget::new("host=/var/run/postgresql user=postgres"));
//! let report = create_physical_backup(&repos, &opts, &SystemClock).await?;
//! println!("{} from {} to {}", report.backup.id, report.physical.start_lsn, report.physical.stop_lsn);
//! // Later, into an empty directory (then configure recovery and start the server):
//! let r = restore_physical_backup(
//!     &repos[0],
//!     "latest",
//!     std::path::Path::new("/var/lib/postgresql/15/restored"),
//!     &PhysicalRestoreOptions::default(),
//! )
//! .await?;
//! println!("{} files", r.files);
//! # Ok(())
//! # }
//! ```

mod backup;
mod layout;
mod restore;

#[cfg(any(test, feature = "mock"))]
pub use backup::MockBackupSession;
pub use backup::{
    ArchiveCheck, ArchiverStatus, BackupSession, BackupStop, DEFAULT_ARCHIVE_TIMEOUT,
    DEFAULT_BUNDLE_SIZE, DEFAULT_PART_SIZE, DEFAULT_SMALL_FILE, PgBackupSession,
    PhysicalBackupOptions, PhysicalBackupReport, ServerFacts, create_physical_backup,
    create_physical_backup_with,
};
pub use layout::{
    BACKUP_LABEL_NAME, BUNDLE_PREFIX, DATA_PREFIX, EMPTY_DIRECTORIES, EXCLUDED_FILES, Exclusion,
    FILE_LIST_NAME, FILE_LIST_VERSION, FileChunk, PG_CONTROL, PhysicalDir, PhysicalFile,
    PhysicalFileList, TABLESPACE_MAP_NAME, classify,
};
pub(crate) use restore::verify_physical_objects;
pub use restore::{
    PhysicalRestoreOptions, PhysicalRestoreReport, PhysicalRestoreStep, restore_physical_backup,
    restore_physical_manifest,
};

#[cfg(test)]
mod tests;
