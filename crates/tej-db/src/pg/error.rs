//! The one error type of tej-db's PostgreSQL half, with SQLSTATE codes mapped to what an operator can act on.

use tej_core::Retryable;

/// What went wrong talking to PostgreSQL, in terms an operator can act on.
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

/// Context used to turn a driver error into a [`DbError`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorContext {
    /// `host:port` (no password).
    pub target: String,
    /// Role name.
    pub user: String,
    /// Database name.
    pub database: String,
    /// The statement being run, to guess the privilege needed.
    pub sql: String,
}

/// The privilege an operator should grant, guessed from the statement that failed.
pub(crate) fn privilege_for(sql: &str, message: &str) -> String {
    let s = sql.to_ascii_lowercase();
    let m = message.to_ascii_lowercase();
    if s.contains("pg_stat_statements") || m.contains("pg_stat_statements") {
        "membership in pg_read_all_stats to see all statements".into()
    } else if s.contains("pgstattuple") || s.contains("pgstatindex") {
        "membership in pg_stat_scan_tables (or superuser)".into()
    } else if s.contains("verify_heapam") || s.contains("bt_index_check") {
        "EXECUTE on amcheck's functions (GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean), verify_heapam(...) TO the role) or superuser".into()
    } else if s.contains("reindex") || s.contains("drop index") {
        "ownership of the index's table (or superuser)".into()
    } else if s.contains("vacuum") || s.trim_start().starts_with("analyze") {
        "ownership of the table (or superuser; pg_maintain on PostgreSQL 16+)".into()
    } else if s.trim_start().starts_with("update") {
        "UPDATE privilege on the table".into()
    } else if s.contains("data_directory") || m.contains("pg_read_all_settings") {
        "membership in pg_read_all_settings".into()
    } else if m.contains("pg_monitor") || s.contains("pg_stat") {
        "membership in pg_monitor".into()
    } else {
        "a role with the privilege named in the message".into()
    }
}

/// Maps a tokio-postgres error to a [`DbError`].
pub(crate) fn map_pg_error(e: &tokio_postgres::Error, ctx: &ErrorContext) -> DbError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code().to_string();
        let message = redact_url_passwords_public(db.message());
        return match code.as_str() {
            "28P01" | "28000" => DbError::AuthRefused {
                user: ctx.user.clone(),
                reason: message,
            },
            "3D000" => DbError::DatabaseMissing {
                database: ctx.database.clone(),
            },
            "42501" => DbError::PermissionDenied {
                privilege: privilege_for(&ctx.sql, &message),
                message,
            },
            "57014" => DbError::Timeout {
                what: "running the statement (statement_timeout or cancel)".into(),
            },
            "55P03" => DbError::Timeout {
                what: format!("waiting for a lock (lock_timeout): {message}"),
            },
            "57P03" => DbError::Rejecting {
                target: ctx.target.clone(),
                reason: message,
            },
            "53300" | "53200" | "53100" | "53000" => DbError::Overloaded(message),
            "XX001" | "XX002" => DbError::Corruption(message),
            "57P01" | "57P02" => DbError::ConnectionLost(message),
            "58P01" | "42883"
                if message.contains("pg_stat_statements")
                    || message.contains("pgstattuple")
                    || message.contains("amcheck") =>
            {
                DbError::ExtensionMissing {
                    extension: guess_extension(&message),
                    hint: message,
                }
            }
            _ => DbError::Server { code, message },
        };
    }
    if e.is_closed() {
        return DbError::ConnectionLost("the server closed the connection".into());
    }
    let text = redact_url_passwords_public(&e.to_string());
    let io = find_io_error(e);
    if text.starts_with("timeout waiting for server")
        || io.is_some_and(|k| k == std::io::ErrorKind::TimedOut)
    {
        return DbError::Timeout {
            what: format!("connecting to {}", ctx.target),
        };
    }
    if text.starts_with("error performing TLS handshake") {
        let mut chain = text.clone();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            chain.push_str(": ");
            chain.push_str(&redact_url_passwords_public(&s.to_string()));
            src = s.source();
        }
        return DbError::Tls(chain);
    }
    if text.starts_with("authentication error") {
        return DbError::AuthRefused {
            user: ctx.user.clone(),
            reason: source_text(e)
                .unwrap_or_else(|| "the server asked for a password and none was given".into()),
        };
    }
    if text.starts_with("invalid connection string") || text.starts_with("invalid configuration") {
        return DbError::InvalidConfig(source_text(e).unwrap_or(text));
    }
    if text.starts_with("error connecting to server") {
        return DbError::Unreachable {
            target: ctx.target.clone(),
            reason: source_text(e).unwrap_or(text),
        };
    }
    if io.is_some() {
        return DbError::ConnectionLost(source_text(e).unwrap_or(text));
    }
    DbError::UnexpectedReply(match source_text(e) {
        Some(s) => format!("{text}: {s}"),
        None => text,
    })
}

fn source_text(e: &tokio_postgres::Error) -> Option<String> {
    std::error::Error::source(e).map(|s| redact_url_passwords_public(&s.to_string()))
}

fn find_io_error(e: &tokio_postgres::Error) -> Option<std::io::ErrorKind> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        src = s.source();
    }
    None
}

fn guess_extension(message: &str) -> String {
    for ext in ["pg_stat_statements", "pgstattuple", "amcheck"] {
        if message.contains(ext) {
            return ext.into();
        }
    }
    "unknown".into()
}

/// Masks passwords in text that may quote a connection string.
pub(crate) fn redact_url_passwords_public(text: &str) -> String {
    tej_core::secret::redact_url_passwords(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(
            DbError::Unreachable {
                target: "h:1".into(),
                reason: "refused".into()
            }
            .is_retryable()
        );
        let lock = DbError::Timeout {
            what: "waiting for a lock (lock_timeout): x".into(),
        };
        assert!(lock.is_retryable());
        assert!(lock.is_lock_timeout());
        assert!(
            !DbError::Timeout {
                what: "running the statement".into()
            }
            .is_retryable()
        );
        assert!(
            !DbError::AuthRefused {
                user: "u".into(),
                reason: "no".into()
            }
            .is_retryable()
        );
        assert!(
            !DbError::PermissionDenied {
                message: "m".into(),
                privilege: "p".into()
            }
            .is_retryable()
        );
        assert!(
            DbError::Server {
                code: "40P01".into(),
                message: "deadlock".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn privileges_are_named() {
        assert!(
            privilege_for("SELECT * FROM pg_stat_statements", "").contains("pg_read_all_stats")
        );
        assert!(privilege_for("REINDEX INDEX CONCURRENTLY x", "").contains("ownership"));
        assert!(privilege_for("VACUUM (ANALYZE) t", "").contains("ownership of the table"));
        assert!(privilege_for("UPDATE users SET x = true", "").contains("UPDATE privilege"));
        assert!(privilege_for("SELECT bt_index_check($1)", "").contains("EXECUTE"));
    }

    #[test]
    fn messages_never_show_passwords() {
        let e = DbError::Unreachable {
            target: "db:5432".into(),
            reason: redact_url_passwords_public("postgres://u:hunter22@db/x refused"),
        };
        assert!(!e.to_string().contains("hunter22"));
    }
}
