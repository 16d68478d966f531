//! Errors talking to Redis, classified so callers can tell what happened.

/// Why a Redis operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL or options are not usable.
    #[error("invalid Redis connection settings: {0}")]
    InvalidConfig(String),
    /// The server could not be reached (refused, reset, DNS, TLS handshake).
    #[error("Redis at {target} is unreachable: {reason}")]
    Unreachable {
        /// The server (password redacted).
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused the credentials (`WRONGPASS`, `NOAUTH`).
    #[error("Redis at {target} refused authentication: {reason}")]
    AuthRefused {
        /// The server (password redacted).
        target: String,
        /// The server's reply.
        reason: String,
    },
    /// The ACL user may not run a command (`NOPERM`).
    #[error("the Redis user may not run {command} (grant it with ACL SETUSER ... +{command})")]
    PermissionDenied {
        /// The command refused.
        command: String,
    },
    /// The server is loading its dataset (`LOADING`); try again shortly.
    #[error("Redis is loading its dataset into memory; try again shortly")]
    Loading,
    /// The server is busy running a script or function (`BUSY`).
    #[error("Redis is busy running a script (BUSY): {0}")]
    Busy(String),
    /// No reply in time.
    #[error("Redis did not answer {command} in time")]
    Timeout {
        /// The command.
        command: String,
    },
    /// A destructive command refused by tej's own rules.
    #[error("{command} refused: {reason}")]
    Refused {
        /// The command.
        command: String,
        /// Why.
        reason: String,
    },
    /// Any other error reply or unexpected reply.
    #[error("Redis {command} failed: {message}")]
    Server {
        /// The command.
        command: String,
        /// The reply (redacted).
        message: String,
    },
}

impl tej_core::Retryable for RedisError {
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            RedisError::Unreachable { .. }
                | RedisError::Loading
                | RedisError::Busy(_)
                | RedisError::Timeout { .. }
        )
    }
}

/// Maps a client error to a [`RedisError`]; `redact` removes secrets from messages.
pub(crate) fn classify(
    e: &redis::RedisError,
    command: &str,
    target: &str,
    redact: &dyn Fn(&str) -> String,
) -> RedisError {
    let msg = redact(&e.to_string());
    let code = e.code().unwrap_or("");
    match code {
        "LOADING" => return RedisError::Loading,
        "BUSY" => return RedisError::Busy(msg),
        "WRONGPASS" | "NOAUTH" => {
            return RedisError::AuthRefused {
                target: target.to_string(),
                reason: msg,
            };
        }
        "NOPERM" => {
            return RedisError::PermissionDenied {
                command: command.to_string(),
            };
        }
        _ => {}
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return RedisError::AuthRefused {
            target: target.to_string(),
            reason: msg,
        };
    }
    if e.kind() == redis::ErrorKind::InvalidClientConfig {
        return RedisError::InvalidConfig(msg);
    }
    if e.is_timeout() {
        return RedisError::Timeout {
            command: command.to_string(),
        };
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        return RedisError::Unreachable {
            target: target.to_string(),
            reason: msg,
        };
    }
    RedisError::Server {
        command: command.to_string(),
        message: msg,
    }
}
