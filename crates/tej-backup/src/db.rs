//! Which database to dump or restore into, and how to reach it.

use tej_core::{CommandSpec, Secret};

/// A database connection for pg_dump, pg_restore and psql: a libpq connection string
/// (`postgres://user@host:port/db` or `host=... dbname=...`) and an optional password
/// passed as the `PGPASSWORD` secret environment variable (never on the command line).
#[derive(Clone, PartialEq, Eq)]
pub struct DbTarget {
    /// The connection string without a password.
    pub conn: String,
    /// The password, when not in `~/.pgpass`.
    pub password: Option<Secret>,
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbTarget")
            .field("conn", &tej_core::secret::redact_url_passwords(&self.conn))
            .field("password", &self.password)
            .finish()
    }
}

impl DbTarget {
    /// A target from a connection string.
    pub fn new(conn: impl Into<String>) -> DbTarget {
        DbTarget {
            conn: conn.into(),
            password: None,
        }
    }

    /// With a password.
    pub fn with_password(mut self, password: Secret) -> DbTarget {
        self.password = Some(password);
        self
    }

    /// The database name the connection string names (`postgres` when none).
    pub fn database(&self) -> String {
        if let Some(rest) = self
            .conn
            .strip_prefix("postgres://")
            .or_else(|| self.conn.strip_prefix("postgresql://"))
        {
            let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
            let db = path.split('?').next().unwrap_or("");
            return if db.is_empty() {
                "postgres".into()
            } else {
                db.to_string()
            };
        }
        self.conn
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == "dbname")
            .map(|(_, v)| v.trim_matches('\'').to_string())
            .next_back()
            .unwrap_or_else(|| "postgres".into())
    }

    /// The same server, another database.
    pub fn with_database(&self, db: &str) -> DbTarget {
        let conn = if let Some((scheme, rest)) = self.conn.split_once("://") {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let query = path.split_once('?').map(|(_, q)| q);
            match query {
                Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
                None => format!("{scheme}://{authority}/{db}"),
            }
        } else {
            format!("{} dbname='{}'", self.conn, db.replace('\'', "\\'"))
        };
        DbTarget {
            conn,
            password: self.password.clone(),
        }
    }

    /// Adds the password (as `PGPASSWORD`) to a command.
    pub(crate) fn apply(&self, spec: CommandSpec) -> CommandSpec {
        match &self.password {
            Some(p) => spec.secret_env("PGPASSWORD", p.clone()),
            None => spec,
        }
    }

    /// `psql -X -A -t -q -v ON_ERROR_STOP=1 -d CONN -c SQL`.
    pub(crate) fn psql(&self, sql: &str) -> CommandSpec {
        self.apply(
            CommandSpec::new("psql")
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
                .arg(format!("--dbname={}", self.conn))
                .arg("-c")
                .arg(sql),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_and_switching() {
        let u = DbTarget::new("postgres://app@127.0.0.1:5432/skillswap?sslmode=disable");
        assert_eq!(u.database(), "skillswap");
        assert_eq!(
            u.with_database("scratch").conn,
            "postgres://app@127.0.0.1:5432/scratch?sslmode=disable"
        );
        let k = DbTarget::new("host=127.0.0.1 port=5 dbname=a");
        assert_eq!(k.database(), "a");
        assert_eq!(k.with_database("b").database(), "b");
        assert_eq!(DbTarget::new("postgres://h").database(), "postgres");
        let p = DbTarget::new("postgres://u:pw@h/db").with_password(Secret::new("s3cret"));
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains(":pw@"), "{dbg}");
    }
}
