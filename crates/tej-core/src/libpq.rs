//! libpq's environment: the one table of the `PG*` variables tej reads and the connection
//! keywords they set ([`ENV_KEYWORDS`]), `PGPASSWORD`, and the variables that locate
//! libpq's files ([`FILE_VARS`]). tej-core's [`Config`](crate::Config) and tej-db's
//! connection options both read the environment through this table.

/// The variables tej maps and the connection keywords they set, in the order written: the
/// ones PostgreSQL 15's libpq knows too, since the connection string built from them also
/// goes to pg_dump, pg_restore and psql.
pub const ENV_KEYWORDS: [(&str, &str); 19] = [
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGUSER", "user"),
    ("PGDATABASE", "dbname"),
    ("PGSERVICE", "service"),
    ("PGPASSFILE", "passfile"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
    ("PGCHANNELBINDING", "channel_binding"),
    ("PGAPPNAME", "application_name"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGOPTIONS", "options"),
    ("PGCLIENTENCODING", "client_encoding"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
    ("PGGSSENCMODE", "gssencmode"),
    ("PGSSLCOMPRESSION", "sslcompression"),
];

/// Variables that locate libpq's files rather than set a keyword: the service file
/// (`PGSERVICEFILE`, else `~/.pg_service.conf`) and the directory of the system-wide
/// `pg_service.conf` (`PGSYSCONFDIR`).
pub const FILE_VARS: [&str; 2] = ["PGSERVICEFILE", "PGSYSCONFDIR"];

/// The variable holding the password (never put into a connection string).
pub const PASSWORD_VAR: &str = "PGPASSWORD";

/// A value as a keyword/value connection string reads it: bare when it can be, else in
/// single quotes with `\` and `'` escaped.
pub fn conninfo_value(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// The keyword/value connection string the environment describes (`host=... dbname=...`),
/// when it names a server (`PGHOST`, `PGHOSTADDR`, `PGDATABASE` or `PGSERVICE` set and not
/// empty); empty values are unset. `env` looks variables up (`|k| std::env::var(k).ok()`).
pub fn conninfo_from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    if ["PGHOST", "PGHOSTADDR", "PGDATABASE", "PGSERVICE"]
        .iter()
        .all(|k| get(k).is_none())
    {
        return None;
    }
    let parts: Vec<String> = ENV_KEYWORDS
        .iter()
        .filter_map(|(var, key)| get(var).map(|v| format!("{key}={}", conninfo_value(&v))))
        .collect();
    Some(parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(conninfo_value("127.0.0.1"), "127.0.0.1");
        assert_eq!(conninfo_value("it's"), "'it\\'s'");
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(conninfo_value("c:\\x"), "'c:\\\\x'");
    }

    #[test]
    fn only_a_named_server_makes_a_connection_string() {
        let env = |k: &str| match k {
            "PGDATABASE" => Some("app".to_string()),
            "PGUSER" => Some("ops".to_string()),
            "PGPORT" => Some(String::new()),
            PASSWORD_VAR => Some("secret".to_string()),
            _ => None,
        };
        assert_eq!(
            conninfo_from_env(&env).as_deref(),
            Some("user=ops dbname=app")
        );
        assert_eq!(
            conninfo_from_env(&|k| (k == "PGUSER").then(|| "x".into())),
            None
        );
        let env = |k: &str| match k {
            "PGSERVICE" => Some("main".to_string()),
            "PGCONNECT_TIMEOUT" => Some("7".to_string()),
            "PGSSLROOTCERT" => Some("/etc/ca dir/root.crt".to_string()),
            _ => None,
        };
        assert_eq!(
            conninfo_from_env(&env).as_deref(),
            Some("service=main sslrootcert='/etc/ca dir/root.crt' connect_timeout=7")
        );
    }
}
