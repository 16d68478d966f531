//! PostgreSQL errors mapped to [`DbError`]: SQLSTATE codes turned into what an operator can act on.

pub use crate::error::DbError;

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
    use tej_core::Retryable;

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
