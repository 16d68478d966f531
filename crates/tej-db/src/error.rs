//! The one error type of tej-db, for both of its halves.

use tej_core::Retryable;

/// What went wrong talking to PostgreSQL or Redis, in terms an operator can act on: the one
/// error type of tej-db. The `Redis*` variants come from the Redis half, the others from the
/// PostgreSQL half.
///
/// No variant carries a password: server messages and connection strings are redacted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The connection string or options are invalid.
    #[error("invalid PostgreSQL connection settings: {0}")]
    InvalidConfig(String),
    /// Nothing answered at the address (refused, DNS failure, network unreachable).
    #[error("PostgreSQL at {target} is unreachable: {reason}")]
    Unreachable {
        /// `host:port` or socket directory.
        target: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The server is up but not accepting connections yet (starting, shutting down, in recovery).
    #[error("PostgreSQL at {target} is rejecting connections: {reason}")]
    Rejecting {
        /// `host:port`.
        target: String,
        /// The server's message.
        reason: String,
    },
    /// The server refused the credentials (or no password was supplied when one is needed).
    #[error("PostgreSQL refused authentication for user {user:?}: {reason}")]
    AuthRefused {
        /// The role name used.
        user: String,
        /// The server's message.
        reason: String,
    },
    /// The database named in the connection string does not exist.
    #[error("database {database:?} does not exist")]
    DatabaseMissing {
        /// The database name.
        database: String,
    },
    /// The role lacks a privilege.
    #[error("permission denied: {message} (needs {privilege})")]
    PermissionDenied {
        /// The server's message.
        message: String,
        /// The privilege or role that would allow it.
        privilege: String,
    },
    /// A timeout: connecting, `statement_timeout` or `lock_timeout`.
    #[error("timed out {what}")]
    Timeout {
        /// What timed out (`connecting`, `waiting for a lock`, `running the statement`).
        what: String,
    },
    /// A required extension is not installed in the database.
    #[error("extension {extension} is not installed: {hint}")]
    ExtensionMissing {
        /// Extension name.
        extension: String,
        /// How to install it.
        hint: String,
    },
    /// Too many connections, or out of resources; retrying later may help.
    #[error("PostgreSQL is out of resources: {0}")]
    Overloaded(String),
    /// TLS could not be set up or the handshake failed.
    #[error("TLS to PostgreSQL failed: {0}")]
    Tls(String),
    /// The connection broke during the conversation.
    #[error("connection to PostgreSQL lost: {0}")]
    ConnectionLost(String),
    /// Data corruption reported by the server (`XX001`, `XX002`).
    #[error("data corruption reported by PostgreSQL: {0}")]
    Corruption(String),
    /// Any other error the server reported.
    #[error("PostgreSQL error {code}: {message}")]
    Server {
        /// SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A reply had an unexpected shape (missing column, wrong type).
    #[error("unexpected reply from PostgreSQL: {0}")]
    UnexpectedReply(String),
    /// A guarded operation was refused before touching the server.
    #[error("refused: {0}")]
    Refused(String),

    // Redis.
    /// The URL or options are not usable.
    #[error("invalid Redis connection settings: {0}")]
    RedisInvalidConfig(String),
    /// The server could not be reached (refused, reset, DNS, TLS handshake).
    #[error("Redis at {target} is unreachable: {reason}")]
    RedisUnreachable {
        /// The server (password redacted).
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused the credentials (`WRONGPASS`, `NOAUTH`).
    #[error("Redis at {target} refused authentication: {reason}")]
    RedisAuthRefused {
        /// The server (password redacted).
        target: String,
        /// The server's reply.
        reason: String,
    },
    /// The ACL user may not run a command (`NOPERM`).
    #[error("the Redis user may not run {command} (grant it with ACL SETUSER ... +{command})")]
    RedisPermissionDenied {
        /// The command refused.
        command: String,
    },
    /// The server is loading its dataset (`LOADING`); try again shortly.
    #[error("Redis is loading its dataset into memory; try again shortly")]
    RedisLoading,
    /// The server is busy running a script or function (`BUSY`).
    #[error("Redis is busy running a script (BUSY): {0}")]
    RedisBusy(String),
    /// No reply in time.
    #[error("Redis did not answer {command} in time")]
    RedisTimeout {
        /// The command.
        command: String,
    },
    /// A destructive command refused by tej's own rules.
    #[error("{command} refused: {reason}")]
    RedisRefused {
        /// The command.
        command: String,
        /// Why.
        reason: String,
    },
    /// Any other error reply or unexpected reply.
    #[error("Redis {command} failed: {message}")]
    RedisServer {
        /// The command.
        command: String,
        /// The reply (redacted).
        message: String,
    },
}

impl Retryable for DbError {
    fn is_retryable(&self) -> bool {
        match self {
            DbError::Unreachable { .. }
            | DbError::Rejecting { .. }
            | DbError::Overloaded(_)
            | DbError::ConnectionLost(_) => true,
            DbError::Timeout { what } => what.contains("lock") || what.contains("connect"),
            DbError::Server { code, .. } => matches!(code.as_str(), "40001" | "40P01"),
            DbError::RedisUnreachable { .. }
            | DbError::RedisLoading
            | DbError::RedisBusy(_)
            | DbError::RedisTimeout { .. } => true,
            _ => false,
        }
    }
}

impl DbError {
    /// True for `lock_timeout` expiries (`55P03`), which a retry later may get past.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, DbError::Timeout { what } if what.contains("lock"))
    }

    /// The SQLSTATE behind this error, when the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Server { code, .. } => Some(code),
            DbError::PermissionDenied { .. } => Some("42501"),
            DbError::DatabaseMissing { .. } => Some("3D000"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_enum_keeps_both_halves_messages_and_retry_rules() {
        let redis = DbError::RedisUnreachable {
            target: "127.0.0.1:6379".into(),
            reason: "refused".into(),
        };
        assert_eq!(
            redis.to_string(),
            "Redis at 127.0.0.1:6379 is unreachable: refused"
        );
        assert!(redis.is_retryable());
        assert!(DbError::RedisLoading.is_retryable());
        assert!(
            !DbError::RedisPermissionDenied {
                command: "FLUSHDB".into()
            }
            .is_retryable()
        );
        let pg = DbError::Unreachable {
            target: "127.0.0.1:5432".into(),
            reason: "refused".into(),
        };
        assert_eq!(
            pg.to_string(),
            "PostgreSQL at 127.0.0.1:5432 is unreachable: refused"
        );
        assert!(pg.is_retryable());
        assert_eq!(
            DbError::RedisInvalidConfig("bad url".into()).to_string(),
            "invalid Redis connection settings: bad url"
        );
    }
}
