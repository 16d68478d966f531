//! Redis client errors mapped to [`DbError`] (its `Redis*` variants), so callers can tell what happened.

use crate::error::DbError;

/// Maps a client error to a [`DbError`]; `redact` removes secrets from messages.
pub(crate) fn classify(
    e: &redis::RedisError,
    command: &str,
    target: &str,
    redact: &dyn Fn(&str) -> String,
) -> DbError {
    let msg = redact(&e.to_string());
    let code = e.code().unwrap_or("");
    match code {
        "LOADING" => return DbError::RedisLoading,
        "BUSY" => return DbError::RedisBusy(msg),
        "WRONGPASS" | "NOAUTH" => {
            return DbError::RedisAuthRefused {
                target: target.to_string(),
                reason: msg,
            };
        }
        "NOPERM" => {
            return DbError::RedisPermissionDenied {
                command: command.to_string(),
            };
        }
        _ => {}
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return DbError::RedisAuthRefused {
            target: target.to_string(),
            reason: msg,
        };
    }
    if e.kind() == redis::ErrorKind::InvalidClientConfig {
        return DbError::RedisInvalidConfig(msg);
    }
    if e.is_timeout() {
        return DbError::RedisTimeout {
            command: command.to_string(),
        };
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        return DbError::RedisUnreachable {
            target: target.to_string(),
            reason: msg,
        };
    }
    DbError::RedisServer {
        command: command.to_string(),
        message: msg,
    }
}
