//! The crate's error type.

use tej_core::{CommandError, Retryable};

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// An object key is not a valid relative key.
    #[error("invalid object key {key:?}")]
    InvalidKey {
        /// The rejected key.
        key: String,
    },
    /// No such object in the repository.
    #[error("{repo}: object {key} not found")]
    ObjectNotFound {
        /// Repository description.
        repo: String,
        /// Key.
        key: String,
    },
    /// `if_not_exists` and the object is there.
    #[error("{repo}: object {key} already exists")]
    ObjectExists {
        /// Repository description.
        repo: String,
        /// Key.
        key: String,
    },
    /// Credentials refused or missing permission.
    #[error("{repo}: access denied: {reason}")]
    AccessDenied {
        /// Repository description.
        repo: String,
        /// Detail from the backend.
        reason: String,
    },
    /// Temporarily unavailable (5xx, SlowDown, timeout, connection refused): retryable.
    #[error("{repo}: temporarily unavailable: {reason}")]
    Unavailable {
        /// Repository description.
        repo: String,
        /// Detail.
        reason: String,
    },
    /// The operation was cancelled (its `CancellationToken`, see [`crate::CancellableStore`]).
    #[error("{repo}: cancelled")]
    Cancelled {
        /// Repository description.
        repo: String,
    },
    /// Any other storage failure.
    #[error("{repo}: {reason}")]
    Storage {
        /// Repository description.
        repo: String,
        /// Detail.
        reason: String,
    },
    /// An external program (pg_dump, pg_restore, psql) could not run or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// No backup with this id (or no backup at all for `latest`).
    #[error("{repo}: backup {id} not found")]
    NotFound {
        /// Repository.
        repo: String,
        /// The id asked for.
        id: String,
    },
    /// Another run holds the backup lock.
    #[error(
        "{repo}: backup of {target} is already running (lock held by {owner}); wait for it or remove {key} if that run is gone"
    )]
    Locked {
        /// Repository.
        repo: String,
        /// The lock's target.
        target: String,
        /// Who holds it (host, pid, since).
        owner: String,
        /// The lock object.
        key: String,
    },
    /// The repository lock is held in a conflicting mode (prune while a verify or restore
    /// reads, or the reverse).
    #[error(
        "{repo}: cannot {purpose} now: the repository is in use by {owner}; retry when it is done (or remove {key} if that process is gone)"
    )]
    Busy {
        /// Repository.
        repo: String,
        /// What was refused (`prune`, `verify`, `restore`).
        purpose: String,
        /// The conflicting holder (host, pid, purpose, since, mode).
        owner: String,
        /// Its lock object.
        key: String,
    },
    /// A selected backup is not of the kind or target required.
    #[error("{repo}: backup {id} is {found}, not {expected}")]
    WrongSeries {
        /// Repository.
        repo: String,
        /// The backup.
        id: String,
        /// What it is (`a logical backup of database otherdb`).
        found: String,
        /// What was asked for.
        expected: String,
    },
    /// An object's content does not match the manifest (SHA-256, size, decryption,
    /// decompression, or missing).
    #[error("{repo}: backup {id}: object {object} is corrupt: {reason}")]
    Corrupt {
        /// Repository.
        repo: String,
        /// Backup id.
        id: String,
        /// The object's key.
        object: String,
        /// What does not match.
        reason: String,
    },
    /// The manifest cannot be read or parsed.
    #[error("{repo}: manifest {key} is invalid: {reason}")]
    InvalidManifest {
        /// Repository.
        repo: String,
        /// The manifest key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Decryption failed: wrong key or passphrase, or no key given.
    #[error("cannot decrypt {object}: {reason}")]
    Decrypt {
        /// The object.
        object: String,
        /// Why (never the key).
        reason: String,
    },
    /// The options are invalid (bad recipient, missing passphrase variable...).
    #[error("invalid backup options: {0}")]
    InvalidOptions(String),
    /// The backup was written to no repository.
    #[error("backup {id} failed in every repository: {reasons}")]
    AllRepositoriesFailed {
        /// Backup id.
        id: String,
        /// One reason per repository.
        reasons: String,
    },
    /// A destructive step was refused (no confirmation, outside the maintenance window).
    #[error(transparent)]
    Refused(#[from] tej_core::Refusal),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A restore-test sanity query failed or returned an unexpected result.
    #[error("sanity query {query:?} failed: {reason}")]
    SanityCheck {
        /// The query.
        query: String,
        /// Why.
        reason: String,
    },
    /// Bytes handed to [`Manifest::from_json`](crate::Manifest::from_json) are not a
    /// manifest this crate reads (not JSON of a manifest, or an unknown version).
    #[error("not a tej backup manifest: {reason}")]
    #[non_exhaustive]
    MalformedManifest {
        /// What is wrong.
        reason: String,
    },
    /// Bytes handed to [`SegmentHeader::parse`](crate::SegmentHeader::parse) do not start
    /// with a WAL long page header.
    #[error("not a WAL segment: {reason}")]
    #[non_exhaustive]
    MalformedWalHeader {
        /// What is wrong.
        reason: String,
    },
    /// Bytes handed to [`open_object`](crate::open_object) are not a complete tej WAL
    /// object (trailer missing, truncated or of an unknown format).
    #[error("not a tej WAL object: {reason}")]
    #[non_exhaustive]
    MalformedWalObject {
        /// What is wrong.
        reason: String,
    },
    /// A file handed to WAL archiving is not a WAL file (bad name, bad page header, wrong size).
    #[error("{file} is not a valid WAL file: {reason}")]
    InvalidWal {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The WAL file belongs to another cluster than the archive (or the one expected).
    #[error(
        "{file} belongs to cluster {found}, not to cluster {expected} ({what}): refusing to mix clusters in one archive"
    )]
    WalForeignCluster {
        /// The file.
        file: String,
        /// The system identifier expected.
        expected: u64,
        /// The system identifier found in the file.
        found: u64,
        /// Where the expected one came from (`the archive`, `the options`).
        what: String,
    },
    /// The archive already holds this WAL file with different content; the stored one
    /// was left untouched.
    #[error(
        "{repo}: {name} is already archived with different content (stored SHA-256 {stored_sha256}, new {new_sha256}); the stored file was left untouched"
    )]
    WalConflict {
        /// Repository.
        repo: String,
        /// The WAL file name.
        name: String,
        /// SHA-256 of the stored file's raw content.
        stored_sha256: String,
        /// SHA-256 of the file that was pushed.
        new_sha256: String,
    },
    /// An archived WAL object is damaged, tampered with, or stored under the wrong key.
    #[error("{repo}: archived WAL object {key} is corrupt: {reason}")]
    WalCorrupt {
        /// Repository.
        repo: String,
        /// The object's key.
        key: String,
        /// What does not match.
        reason: String,
    },
    /// A PostgreSQL session of a base backup failed: connection refused, permission
    /// denied (`pg_backup_start` needs superuser or EXECUTE on it, SQLSTATE 42501), or
    /// another query error.
    #[error("PostgreSQL: {context}: {reason}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The server's or the client's message.
        reason: String,
        /// The SQLSTATE code, when the server sent one.
        sqlstate: Option<String>,
    },
    /// Point-in-time recovery: no physical base backup can serve the recovery target.
    #[error("no base backup can serve recovery target {target}: {reason}")]
    NoBaseBackup {
        /// The recovery target.
        target: String,
        /// Why none qualifies (none at all, all finished after the target...).
        reason: String,
    },
    /// Point-in-time recovery: the target lies beyond the newest archived WAL, so
    /// PostgreSQL could never reach it; refused before anything was touched.
    #[error(
        "recovery target {target} is beyond the newest archived WAL ({horizon}); nothing was touched"
    )]
    TargetBeyondArchive {
        /// The recovery target.
        target: String,
        /// The archive's horizon (newest segment, when it was pushed).
        horizon: String,
    },
    /// Point-in-time recovery: a data directory is not empty and replacing it was not
    /// confirmed, or a server is running on it.
    #[error("data directory {path} {reason}")]
    DataDirInUse {
        /// The data directory.
        path: String,
        /// Why it cannot be used (not empty, server running).
        reason: String,
    },
    /// Point-in-time recovery: PostgreSQL ended recovery before the configured target
    /// (`recovery ended before configured recovery target was reached`).
    #[error(
        "recovery ended before target {target} was reached (last replayed: {last_replayed}); server log:\n{log_excerpt}"
    )]
    TargetNotReached {
        /// The recovery target.
        target: String,
        /// The last replayed transaction time or WAL position the log names, if any.
        last_replayed: String,
        /// The relevant server log lines.
        log_excerpt: String,
    },
    /// Point-in-time recovery: the server failed to start or recover, or did not finish
    /// in time.
    #[error("recovery of {pgdata} failed: {reason}; server log:\n{log_excerpt}")]
    RecoveryFailed {
        /// The data directory.
        pgdata: String,
        /// What went wrong.
        reason: String,
        /// The tail of the server log.
        log_excerpt: String,
    },
    /// WAL archiving: the repository holds no archive marker (`wal/archive.json`): it was
    /// never initialised, or it is the wrong, empty or unmounted directory. An outage,
    /// never "not archived".
    #[error(
        "{repo} is not an initialised WAL archive (no wal/archive.json): {reason}; initialise it with `tej wal init --repo REPO --db URL` or `tej backup create --physical --repo REPO`"
    )]
    WalArchiveNotInitialised {
        /// The repository.
        repo: String,
        /// What was found instead.
        reason: String,
    },
    /// Point-in-time recovery: a gap in the archived WAL after the base backup would end
    /// replay early (and promote there); refused before anything was touched.
    #[error(
        "recovery target {target} cannot be reached from base backup {backup}: {gap}; replay would stop at {reachable_lsn} (end of {reachable_wal}) and promote there. Nothing was touched; to recover up to that point on purpose, pass --target-lsn {reachable_lsn}"
    )]
    WalGap {
        /// The recovery target.
        target: String,
        /// The base backup chosen.
        backup: String,
        /// The first gap (missing segments).
        gap: String,
        /// The last segment replay reaches.
        reachable_wal: String,
        /// Where replay stops.
        reachable_lsn: String,
    },
}

impl BackupError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> BackupError {
        BackupError::Io {
            context: context.into(),
            source,
        }
    }
}

impl Retryable for BackupError {
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            BackupError::Unavailable { .. } | BackupError::Locked { .. } | BackupError::Busy { .. }
        )
    }
}
