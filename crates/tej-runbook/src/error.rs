//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;
use tej_core::Retryable;

/// Everything that can go wrong in tej-runbook.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunbookError {
    /// The calendar has no entry with this id.
    #[error("no calendar entry {0:?}")]
    UnknownEntry(String),
    /// The schedule cannot be expressed in the requested format.
    #[error("cannot emit schedule: {0}")]
    Unsupported(String),
    /// Reading or writing a local file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`read daemon state`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A local file exists but its content is not what tej wrote.
    #[error("{path}:{line}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when not about one line).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The webhook answered with an HTTP error status.
    #[error("webhook answered HTTP {status}")]
    NotifyRejected {
        /// HTTP status code.
        status: u16,
    },
    /// The webhook could not be reached (connection refused, reset, DNS...).
    #[error("webhook unreachable: {0}")]
    NotifyTransport(String),
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// A query behind a custom check failed.
    #[error("query failed: {0}")]
    Query(String),
    /// A named database or Redis instance is not configured.
    #[error("{kind} {name:?} is not configured")]
    NotConfigured {
        /// `database` or `redis`.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A custom check declares neither (or both) of `sql` and `redis`.
    #[error("check {name}: {message}")]
    BadCheck {
        /// Check name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Not enough data to fit a trend.
    #[error("need at least {needed} measurements with distinct times, have {got}")]
    InsufficientData {
        /// Minimum number of points.
        needed: usize,
        /// Points available.
        got: usize,
    },
    /// A scheduled procedure failed.
    #[error("procedure {entry} failed: {message}")]
    Procedure {
        /// Calendar entry id.
        entry: String,
        /// What went wrong.
        message: String,
    },
    /// The cross-host run lock could not be checked.
    #[error("run lock: {0}")]
    Lock(String),
    /// The configuration cannot be run with (a malformed URL, an unreadable password file).
    #[error("configuration: {0}")]
    InvalidConfig(String),
    /// A deploy could not be prepared (no such `[[deploy.service]]`, a bad gate setting).
    #[error(transparent)]
    Deploy(#[from] tej_deploy::DeployError),
    /// A run cannot go ahead as asked (a disabled entry, a mutating procedure without an
    /// executor, a notifier that cannot be prepared); the message says why.
    #[error("{0}")]
    Refused(String),
    /// A rotation could not be prepared (a `[secrets]` setting missing, the probe's TLS).
    #[error(transparent)]
    Secrets(#[from] tej_secrets::SecretsError),
    /// A database or Redis server could not be reached, or refused what was asked.
    #[error(transparent)]
    Db(#[from] tej_db::DbError),
    /// A backup repository could not be opened or read.
    #[error(transparent)]
    Backup(#[from] tej_backup::BackupError),
    /// A client the run needs can never be made ([`crate::Lazy::failed`]); the message says why.
    #[error("{0}")]
    Unavailable(String),
    /// A timed HTTP probe got no answer (refused, reset, timed out); a password in the URL
    /// is masked.
    #[error("{0}")]
    HttpProbe(String),
}

impl Retryable for RunbookError {
    fn is_retryable(&self) -> bool {
        match self {
            RunbookError::NotifyRejected { status } => *status == 429 || *status >= 500,
            RunbookError::NotifyTransport(_) | RunbookError::Timeout { .. } => true,
            RunbookError::Db(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = RunbookError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_only_for_transient_failures() {
        assert!(RunbookError::NotifyRejected { status: 503 }.is_retryable());
        assert!(RunbookError::NotifyRejected { status: 429 }.is_retryable());
        assert!(!RunbookError::NotifyRejected { status: 404 }.is_retryable());
        assert!(RunbookError::NotifyTransport("refused".into()).is_retryable());
        assert!(!RunbookError::UnknownEntry("x".into()).is_retryable());
        assert!(!RunbookError::Query("syntax".into()).is_retryable());
    }
}
