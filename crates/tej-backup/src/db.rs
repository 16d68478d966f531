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
    /// A target from a connection string. A password in it (`postgres://user:PW@host`,
    /// `?password=PW`, `password=PW`) is taken out into [`DbTarget::password`], so that it
    /// never reaches a command line.
    pub fn new(conn: impl Into<String>) -> DbTarget {
        let (conn, password) = split_password(&conn.into());
        DbTarget { conn, password }
    }

    /// With a password (it replaces one the connection string held).
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

    /// Adds `--dbname=CONN` (never with a password: one left in [`DbTarget::conn`] is
    /// taken out here too) and the password as the `PGPASSWORD` secret environment
    /// variable to a pg_dump, pg_restore or psql command.
    pub(crate) fn command(&self, spec: CommandSpec) -> CommandSpec {
        let (conn, inline) = split_password(&self.conn);
        let spec = spec.arg(format!("--dbname={conn}"));
        match self.password.clone().or(inline) {
            Some(p) => spec.secret_env("PGPASSWORD", p),
            None => spec,
        }
    }

    /// `psql -X -A -t -q -v ON_ERROR_STOP=1 -d CONN -c SQL`.
    pub(crate) fn psql(&self, sql: &str) -> CommandSpec {
        self.command(CommandSpec::new("psql").args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
        ]))
        .arg("-c")
        .arg(sql)
    }
}

/// Splits a password out of a libpq connection string: the URL form's `user:PW@` and
/// `password=` query parameter, or the keyword form's `password=` (quoted or not).
/// Returns the string without it and the password (percent-decoded in a URL).
pub(crate) fn split_password(conn: &str) -> (String, Option<Secret>) {
    if let Some((scheme, rest)) = conn.split_once("://") {
        let mut password = None;
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, pw)) => {
                    password = Some(Secret::new(percent_decode(pw)));
                    format!("{user}@{host}")
                }
                None => authority.to_string(),
            },
            None => authority.to_string(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| match kv.split_once('=') {
                        Some(("password", v)) => {
                            password = Some(Secret::new(percent_decode(v)));
                            false
                        }
                        _ => true,
                    })
                    .collect();
                if kept.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{}", kept.join("&"))
                }
            }
            None => tail.to_string(),
        };
        return (format!("{scheme}://{authority}{tail}"), password);
    }
    // Keyword form: `key = value` pairs, values optionally single-quoted with `\` escapes.
    let b = conn.as_bytes();
    let mut out = String::new();
    let mut password = None;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &conn[key_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch = conn[i..].chars().next().unwrap_or(' ');
                value.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                let ch = conn[i..].chars().next().unwrap_or(' ');
                if ch == '\\' && i + 1 < b.len() {
                    i += 1;
                    let ch = conn[i..].chars().next().unwrap_or(' ');
                    value.push(ch);
                    i += ch.len_utf8();
                    continue;
                }
                value.push(ch);
                i += ch.len_utf8();
            }
        }
        let end = i.min(b.len());
        if key == "password" {
            password = Some(Secret::new(value));
        } else {
            out.push_str(&conn[start..end]);
        }
    }
    (out.trim().to_string(), password)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl DbTarget {}

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
        assert_eq!(p.conn, "postgres://u@h/db");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains(":pw@"), "{dbg}");
    }

    fn split(conn: &str) -> (String, Option<String>) {
        let (c, p) = split_password(conn);
        (c, p.map(|p| p.expose().to_string()))
    }

    #[test]
    fn passwords_are_taken_out_of_connection_strings() {
        assert_eq!(
            split("postgres://app:p%40ss%2Fw@127.0.0.1:5432/db?sslmode=disable"),
            (
                "postgres://app@127.0.0.1:5432/db?sslmode=disable".into(),
                Some("p@ss/w".into())
            )
        );
        assert_eq!(
            split("postgresql://app@h/db?password=x%20y&sslmode=require"),
            (
                "postgresql://app@h/db?sslmode=require".into(),
                Some("x y".into())
            )
        );
        assert_eq!(
            split("postgres://app:pw@h?password=q"),
            ("postgres://app@h".into(), Some("q".into()))
        );
        assert_eq!(split("postgres://h/db"), ("postgres://h/db".into(), None));
        assert_eq!(
            split("host=h password='a b\\'c' user=u dbname=d"),
            ("host=h user=u dbname=d".into(), Some("a b'c".into()))
        );
        assert_eq!(
            split("host=h password = pw user=u"),
            ("host=h user=u".into(), Some("pw".into()))
        );
        assert_eq!(split("host=h dbname=d"), ("host=h dbname=d".into(), None));
        let t = DbTarget::new("host=h password=pw dbname=d");
        assert_eq!(t.database(), "d");
        let spec = t.psql("SELECT 1");
        let argv: Vec<String> = spec
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(argv.iter().all(|a| !a.contains("pw")), "{argv:?}");
        // A password written straight into the public field is taken out when used.
        let raw = DbTarget {
            conn: "postgres://u:hunter2@h/d".into(),
            password: None,
        };
        let argv: Vec<String> = raw
            .psql("SELECT 1")
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(argv.iter().all(|a| !a.contains("hunter2")), "{argv:?}");
    }
}
