//! SQL that other crates run through `psql` (tej-backup's logical backups, restore tests and
//! recovery follow-up go through the command runner, not a driver connection): the text is
//! written here, the caller runs it with `psql -X -A -t` and reads the unaligned output.

use super::{DbError, quote_ident};

/// `SHOW server_version`: one line, the server's version.
pub const SERVER_VERSION: &str = "SHOW server_version";

/// A trivial query proving a connection works.
pub const CONNECTION_PROBE: &str = "SELECT 1";

/// The state of a server after recovery, one line of four `|`-separated columns:
/// `pg_is_in_recovery()` (`t`/`f`), `pg_last_wal_replay_lsn()`, the epoch seconds of
/// `pg_last_xact_replay_timestamp()`, and the WAL file being written (empty during
/// recovery; its first 8 hex digits are the timeline).
pub const RECOVERY_STATUS: &str = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), \
     extract(epoch FROM pg_last_xact_replay_timestamp()), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END";

/// `CREATE DATABASE name` (the name quoted as an identifier).
pub fn create_database(name: &str) -> Result<String, DbError> {
    Ok(format!("CREATE DATABASE {}", quote_ident(name)?))
}

/// `DROP DATABASE IF EXISTS name WITH (FORCE)`: sessions still connected are terminated.
pub fn drop_database_force(name: &str) -> Result<String, DbError> {
    Ok(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(name)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_quoted() {
        assert_eq!(
            create_database("tej_verify_1").unwrap(),
            "CREATE DATABASE \"tej_verify_1\""
        );
        assert_eq!(
            drop_database_force("a\"b").unwrap(),
            "DROP DATABASE IF EXISTS \"a\"\"b\" WITH (FORCE)"
        );
    }
}
