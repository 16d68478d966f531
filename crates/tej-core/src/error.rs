//! The one error type of tej-core: running programs, reading `tej.toml`, building the
//! calendar, resolving secrets and quoting shell words. No message holds a secret value.

use crate::command::ExitInfo;
use crate::procedure::Refusal;
use std::path::PathBuf;
use std::time::Duration;

/// Everything tej-core can fail at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program is not installed.
    #[error("{program} not found{}", package.map(|p| format!(" (install the Debian package {p})")).unwrap_or_default())]
    NotFound {
        /// The program.
        program: String,
        /// The Debian package that provides it, when known.
        package: Option<&'static str>,
    },
    /// The program exists but may not be executed.
    #[error("permission denied executing {program}")]
    PermissionDenied {
        /// The program.
        program: String,
    },
    /// It ran longer than its timeout and was killed.
    #[error("{command} timed out after {after:?} and was killed")]
    TimedOut {
        /// The command line.
        command: String,
        /// The timeout.
        after: Duration,
    },
    /// It was cancelled and killed.
    #[error("{command} was cancelled")]
    Cancelled {
        /// The command line.
        command: String,
    },
    /// It ended unsuccessfully.
    #[error("{command} failed with {status}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitInfo,
        /// The tail of its stderr, redacted.
        stderr: String,
    },
    /// Any other I/O failure talking to the process.
    #[error("{command}: {reason}")]
    Io {
        /// The command line.
        command: String,
        /// What went wrong.
        reason: String,
    },
    /// A configuration problem: which file, which key, what was expected.
    #[error("{file}: {key}: {message}")]
    Config {
        /// The file (or `environment` for variables).
        file: String,
        /// The key path (`backup.retention.daily_days`), or `-` when not about one key.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A value that is not what its setting expects (a threshold, a time of day, a
    /// repository string); the reason names it.
    #[error("{reason}")]
    Invalid {
        /// What was checked (`threshold`, `time of day`, `repository`).
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The time zone name is not in the tz database.
    #[error("unknown time zone {0:?}")]
    UnknownZone(String),
    /// A calendar override names an entry the calendar does not have.
    #[error("calendar.{id}: no such calendar entry (expected one of: {known})")]
    UnknownEntry {
        /// The id in `tej.toml`.
        id: String,
        /// The ids the calendar has, comma-separated.
        known: String,
    },
    /// A calendar entry is malformed.
    #[error("calendar entry {id}: {reason}")]
    BadEntry {
        /// Entry id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The environment variable holding a secret is not set (or not UTF-8).
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The file holding a secret could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The OS error, as text.
        reason: String,
    },
    /// A value cannot be written as a shell word (it holds a NUL byte).
    #[error("{what} cannot be quoted for the shell: it contains a NUL byte")]
    Unquotable {
        /// What the value is (`repository`, `argument`).
        what: String,
    },
    /// The guard did not let a step run.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl Error {
    /// The key of a configuration error (`backup.retention.daily_days`).
    pub fn config_key(&self) -> Option<&str> {
        match self {
            Error::Config { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The file of a configuration error.
    pub fn config_file(&self) -> Option<&str> {
        match self {
            Error::Config { file, .. } => Some(file),
            _ => None,
        }
    }

    /// What a configuration error says is wrong.
    pub fn config_message(&self) -> Option<&str> {
        match self {
            Error::Config { message, .. } => Some(message),
            _ => None,
        }
    }
}

impl crate::retry::Retryable for Error {
    /// A program that timed out may succeed on another try; nothing else here does.
    fn is_retryable(&self) -> bool {
        matches!(self, Error::TimedOut { .. })
    }
}

/// A tej-core result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
