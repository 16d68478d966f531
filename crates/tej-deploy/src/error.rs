//! The one error type of tej-deploy.

use std::time::Duration;
use tej_core::Retryable;

/// Why a Docker operation, a gate or a deploy failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The Docker engine could not be reached (socket missing, connection refused).
    #[error("docker engine at {host} unreachable: {reason}")]
    Unreachable {
        /// The engine address.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// The engine refused access to its socket.
    #[error(
        "permission denied on the docker socket {host} (run as root or a member of the docker group)"
    )]
    PermissionDenied {
        /// The engine address.
        host: String,
    },
    /// A container or image does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked up.
        what: String,
    },
    /// The engine refused because of a conflict (name in use, image used by a container).
    #[error("conflict: {reason}")]
    Conflict {
        /// The engine's message.
        reason: String,
    },
    /// Any other engine error, with its HTTP status (0 when there was none).
    #[error("docker engine error (status {status}): {message}")]
    Engine {
        /// HTTP status of the engine's reply.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// Something did not happen in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// No container of the service exists (or none is running, where one must be).
    #[error("no {state}container of service {service} in compose project {project}")]
    NoContainer {
        /// Compose project.
        project: String,
        /// Service.
        service: String,
        /// `running ` when a running one was needed, else empty.
        state: &'static str,
    },
    /// Another deploy holds the deploy lock.
    #[error("another deploy is in progress (lock {path} held by {holder})")]
    Locked {
        /// The lock file.
        path: String,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// A pre- or post-deployment gate failed.
    #[error("gate {gate} failed: {reason}")]
    GateFailed {
        /// The gate's name.
        gate: String,
        /// Why.
        reason: String,
    },
    /// The new container did not become healthy; it was removed and the old one kept.
    #[error("new container {container} not healthy: {reason}")]
    Unhealthy {
        /// The new container's name.
        container: String,
        /// Why.
        reason: String,
    },
    /// A service's container could not be recreated; the old one was brought back (or not).
    #[error("recreating {container} failed: {reason}; {old}")]
    RecreateFailed {
        /// The container's name.
        container: String,
        /// What failed (create, start or health of the new container).
        reason: String,
        /// What became of the old container (back and running, or where it is).
        old: String,
    },
    /// The migration step exited non-zero.
    #[error("migration {command} failed with exit code {exit_code}")]
    MigrationFailed {
        /// The command.
        command: String,
        /// Its exit code.
        exit_code: i64,
    },
    /// The traffic switch (proxy, nginx) failed.
    #[error("traffic switch failed: {reason}")]
    Switch {
        /// Why.
        reason: String,
    },
    /// tej.toml has no `[[deploy.service]]` of this name.
    #[error("no [[deploy.service]] named {name:?} in tej.toml (configured: {configured})")]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The configured services, comma-separated (`none` when there is none).
        configured: String,
    },
    /// The options or the service's configuration do not allow the operation.
    #[error("invalid configuration: {reason}")]
    Config {
        /// Why.
        reason: String,
    },
    /// A local file operation failed (lock, audit log, nginx config).
    #[error("{context}: {reason}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        reason: String,
    },
}

impl DeployError {
    pub(crate) fn io(context: impl Into<String>, e: impl std::fmt::Display) -> DeployError {
        DeployError::Io {
            context: context.into(),
            reason: e.to_string(),
        }
    }
}

impl Retryable for DeployError {
    fn is_retryable(&self) -> bool {
        match self {
            DeployError::Unreachable { .. }
            | DeployError::Timeout { .. }
            | DeployError::Locked { .. } => true,
            DeployError::Engine { status, .. } => *status >= 500 || *status == 0,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(
            DeployError::Engine {
                status: 503,
                message: "busy".into()
            }
            .is_retryable()
        );
        assert!(
            !DeployError::NotFound {
                what: "image x".into()
            }
            .is_retryable()
        );
        assert!(
            !DeployError::Engine {
                status: 400,
                message: "bad".into()
            }
            .is_retryable()
        );
        let e = DeployError::NoContainer {
            project: "p".into(),
            service: "s".into(),
            state: "running ",
        };
        assert_eq!(
            e.to_string(),
            "no running container of service s in compose project p"
        );
    }
}
