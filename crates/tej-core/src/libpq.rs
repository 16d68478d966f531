//! libpq's environment: the one mapping of `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`,
//! `PGSSLMODE` and `PGAPPNAME` to a connection string, and `PGPASSWORD`. tej-core's
//! [`Config`](crate::Config) and tej-db's connection options both read it from here.

/// The variables tej maps and the connection keywords they set, in the order written.
pub const ENV_KEYWORDS: [(&str, &str); 6] = [
    ("PGHOST", "host"),
    ("PGPORT", "port"),
    ("PGUSER", "user"),
    ("PGDATABASE", "dbname"),
    ("PGSSLMODE", "sslmode"),
    ("PGAPPNAME", "application_name"),
];

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
/// when it names a server (`PGHOST` or `PGDATABASE` set and not empty); empty values are
/// unset. `env` looks variables up (`|k| std::env::var(k).ok()`).
pub fn conninfo_from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    if get("PGHOST").is_none() && get("PGDATABASE").is_none() {
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
    }
}
