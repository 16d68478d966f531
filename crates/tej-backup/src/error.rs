//! The crate's error type.

use crate::storage::StorageError;
use tej_core::{CommandError, Retryable};

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A storage call failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
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
        match self {
            BackupError::Storage(e) => e.is_retryable(),
            BackupError::Locked { .. } => true,
            _ => false,
        }
    }
}
