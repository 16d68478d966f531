//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Why a secrets or TLS operation failed. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// A file could not be read or written.
    #[error("cannot {action} {}: {reason}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `back up`...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error, as text.
        reason: String,
        /// Whether trying again may help.
        retryable: bool,
    },
    /// The file or directory exists but tej may not touch it.
    #[error("permission denied: {action} {} needs {needed}", path.display())]
    PermissionDenied {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The privilege needed (`root`, `write access to the directory`...).
        needed: String,
    },
    /// The file does not exist.
    #[error("{} does not exist", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The path is a symbolic link; tej refuses to replace a link's target silently.
    #[error(
        "{} is a symbolic link to {}; edit the target explicitly (or allow following links)",
        path.display(), target.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A key is not a valid environment variable name.
    #[error("invalid .env key {0:?}")]
    InvalidKey(String),
    /// A value cannot be written so that Docker Compose reads it back unchanged.
    #[error("the new value of {key} cannot be written to a .env file unchanged: {reason}")]
    Unrepresentable {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// Options are inconsistent or out of range.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// tej.toml lacks a setting the operation needs (the message names it).
    #[error("{0}")]
    NotConfigured(String),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// Invalidating sessions failed.
    #[error("session invalidation failed: {0}")]
    Sessions(String),
    /// Recreating the service failed.
    #[error("recreating service {service} failed: {reason}")]
    Service {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// The application did not answer as expected.
    #[error("application check failed: {0}")]
    Probe(String),
    /// Something took longer than allowed.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// A rotation is already recorded as in progress with different settings.
    #[error("a rotation of {} is in progress at stage {stage}; resume it or inspect {}", env_file.display(), state_file.display())]
    RotationInProgress {
        /// The `.env` file.
        env_file: PathBuf,
        /// The state file.
        state_file: PathBuf,
        /// The recorded stage.
        stage: String,
    },
    /// Another rotation of the same `.env` holds its lock.
    #[error("another rotation of this .env is running: {holder} holds {}", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it (command, pid, user, since when).
        holder: String,
    },
    /// The rotation state file is unreadable.
    #[error("rotation state {} is unreadable: {reason}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The guard refused the operation (confirmation or maintenance window).
    #[error(transparent)]
    Refused(#[from] tej_core::Refusal),
    /// A certificate or key could not be read or parsed.
    #[error("certificate error: {0}")]
    Certificate(String),
    /// TLS setup failed (no trust anchors, bad CA file...).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// An external program (certbot, nginx) failed.
    #[error(transparent)]
    Command(#[from] tej_core::CommandError),
}

impl SecretsError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        e: &std::io::Error,
    ) -> SecretsError {
        let path = path.into();
        match e.kind() {
            std::io::ErrorKind::NotFound => SecretsError::NotFound { path },
            std::io::ErrorKind::PermissionDenied => SecretsError::PermissionDenied {
                action,
                path,
                needed: "root or the file's owner".into(),
            },
            k => SecretsError::Io {
                action,
                path,
                reason: e.to_string(),
                retryable: matches!(
                    k,
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                ),
            },
        }
    }
}

impl tej_core::Retryable for SecretsError {
    fn is_retryable(&self) -> bool {
        match self {
            SecretsError::Io { retryable, .. } => *retryable,
            SecretsError::Timeout { .. } | SecretsError::Sessions(_) | SecretsError::Probe(_) => {
                true
            }
            SecretsError::Command(e) => matches!(e, tej_core::CommandError::TimedOut { .. }),
            _ => false,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = SecretsError> = std::result::Result<T, E>;
