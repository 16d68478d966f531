//! The one error type of tej-host.

use std::path::{Path, PathBuf};

/// Why a host operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A path does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The process may not read or change a path.
    #[error("{path}: permission denied (run as a user that can read and write it, or as root)")]
    PermissionDenied {
        /// The path.
        path: PathBuf,
    },
    /// Any other I/O failure on a path.
    #[error("{path}: {reason}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An option or argument is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A firewall address was refused (too wide, not an address...).
    #[error("refused to block {address}: {reason}")]
    UnsafeAddress {
        /// The address as given.
        address: String,
        /// Why.
        reason: String,
    },
    /// An external program failed.
    #[error(transparent)]
    Command(#[from] tej_core::CommandError),
    /// A kernel interface (`/proc`, `statvfs`) gave something unexpected.
    #[error("unexpected system data: {0}")]
    Internal(String),
}

impl HostError {
    /// Maps an I/O error on `path` to the matching variant.
    pub fn io(path: &Path, e: std::io::Error) -> HostError {
        match e.kind() {
            std::io::ErrorKind::NotFound => HostError::NotFound {
                path: path.to_path_buf(),
            },
            std::io::ErrorKind::PermissionDenied => HostError::PermissionDenied {
                path: path.to_path_buf(),
            },
            _ => HostError::Io {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        }
    }
}

impl tej_core::Retryable for HostError {
    fn is_retryable(&self) -> bool {
        match self {
            HostError::Command(e) => matches!(e, tej_core::CommandError::TimedOut { .. }),
            HostError::Io { .. } => true,
            _ => false,
        }
    }
}
