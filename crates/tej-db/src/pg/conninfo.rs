//! libpq connection strings: the URL form (`postgresql://user@host:port/db?k=v`) and the
//! keyword/value form (`host=h port=5432 dbname='my db'`), parsed to keyword → value the way
//! libpq parses them.

use std::collections::BTreeMap;

/// Keywords tej reads (a connection string with any other keyword is rejected, as libpq
/// rejects unknown ones).
pub(crate) const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "service",
    "connect_timeout",
    "application_name",
    "fallback_application_name",
    "options",
    "client_encoding",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslnegotiation",
    "channel_binding",
    "target_session_attrs",
    "load_balance_hosts",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "gssencmode",
    // Accepted and without effect: libpq ignores sslcompression since PostgreSQL 14, rustls
    // always sends SNI for host names, and tej has no GSSAPI.
    "sslcompression",
    "sslsni",
    "krbsrvname",
    "gsslib",
];

/// Keyword → value, as a connection string (or a service file, or the environment) gives them.
pub(crate) type Conninfo = BTreeMap<String, String>;

/// Parses a URL or keyword/value connection string. The error names what is wrong and never
/// quotes a value (a value may be a password).
pub(crate) fn parse(s: &str) -> Result<Conninfo, String> {
    let t = s.trim_start();
    let mut out = if let Some(rest) = t
        .strip_prefix("postgresql://")
        .or_else(|| t.strip_prefix("postgres://"))
    {
        parse_url(rest)?
    } else {
        parse_keywords(s)?
    };
    // The URL form's `ssl=true` is libpq's sslmode=require.
    if let Some(v) = out.remove("ssl") {
        if v != "true" {
            return Err("invalid value for URL parameter \"ssl\" (only \"true\" is valid)".into());
        }
        out.entry("sslmode".into())
            .or_insert_with(|| "require".into());
    }
    for k in out.keys() {
        check_keyword(k)?;
    }
    Ok(out)
}

/// An error unless `k` is a keyword tej reads.
pub(crate) fn check_keyword(k: &str) -> Result<(), String> {
    if KEYWORDS.contains(&k) {
        Ok(())
    } else {
        Err(format!("invalid connection option \"{k}\""))
    }
}

fn parse_keywords(s: &str) -> Result<Conninfo, String> {
    let mut out = Conninfo::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after \"{key}\" in connection info string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "unterminated quoted string in connection info string (value of \"{key}\")"
                        ));
                    }
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.insert(key, value);
    }
}

fn parse_url(rest: &str) -> Result<Conninfo, String> {
    let mut out = Conninfo::new();
    // userinfo ends at the first '@' before any '/' (libpq's rule; '?' does not end it).
    let (mut rest, userinfo) = match rest.find(['@', '/']) {
        Some(i) if rest.as_bytes()[i] == b'@' => (&rest[i + 1..], Some(&rest[..i])),
        _ => (rest, None),
    };
    if let Some(ui) = userinfo {
        let (user, password) = match ui.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (ui, None),
        };
        if !user.is_empty() {
            out.insert("user".into(), decode(user)?);
        }
        if let Some(p) = password {
            out.insert("password".into(), decode(p)?);
        }
    }
    // host[:port][,host[:port]...]
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    loop {
        let host;
        if let Some(r) = rest.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or("missing \"]\" after an IPv6 host address in the URI")?;
            host = &r[..end];
            rest = &r[end + 1..];
        } else {
            let end = rest.find([':', '/', '?', ',']).unwrap_or(rest.len());
            host = &rest[..end];
            rest = &rest[end..];
        }
        hosts.push(decode(host)?);
        if let Some(r) = rest.strip_prefix(':') {
            let end = r.find(['/', '?', ',']).unwrap_or(r.len());
            ports.push(decode(&r[..end])?);
            rest = &r[end..];
        } else {
            ports.push(String::new());
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None => break,
        }
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        out.insert("host".into(), hosts.join(","));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        out.insert("port".into(), ports.join(","));
    }
    if let Some(r) = rest.strip_prefix('/') {
        let end = r.find('?').unwrap_or(r.len());
        if end > 0 {
            out.insert("dbname".into(), decode(&r[..end])?);
        }
        rest = &r[end..];
    }
    if let Some(q) = rest.strip_prefix('?') {
        for kv in q.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                format!(
                    "missing key/value separator \"=\" in URI query parameter \"{}\"",
                    kv.chars().take(40).collect::<String>()
                )
            })?;
            out.insert(decode(k)?, decode(v)?);
        }
    } else if !rest.is_empty() {
        return Err("unexpected characters after the host and port of the URI".into());
    }
    Ok(out)
}

/// Percent-decodes a URL part (invalid escapes are errors, as in libpq).
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid percent-encoded token in the URI")?;
            if hex == 0 {
                return Err("forbidden value %00 in percent-encoded value".into());
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URI is not valid UTF-8 once decoded".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Conninfo {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keyword_strings_parse_as_libpq_does() {
        assert_eq!(
            parse("host=h  port = 5433 dbname='my \\'db\\'' user=a\\ b password=").unwrap(),
            kv(&[
                ("host", "h"),
                ("port", "5433"),
                ("dbname", "my 'db'"),
                ("user", "a b"),
                ("password", ""),
            ])
        );
        assert_eq!(parse("  ").unwrap(), Conninfo::new());
        assert_eq!(parse("port=1 port=2").unwrap(), kv(&[("port", "2")]));
        assert!(parse("host").unwrap_err().contains("missing \"=\""));
        assert!(
            parse("password='sekrit")
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(!parse("password='sekrit").unwrap_err().contains("sekrit"));
        assert_eq!(
            parse("nosuch=1").unwrap_err(),
            "invalid connection option \"nosuch\""
        );
    }

    #[test]
    fn urls_parse_as_libpq_does() {
        assert_eq!(
            parse("postgresql://al%40ce:p%3Aw@db.example:6432/my%20db?sslmode=verify-full&application_name=x")
                .unwrap(),
            kv(&[
                ("user", "al@ce"),
                ("password", "p:w"),
                ("host", "db.example"),
                ("port", "6432"),
                ("dbname", "my db"),
                ("sslmode", "verify-full"),
                ("application_name", "x"),
            ])
        );
        assert_eq!(parse("postgres://").unwrap(), Conninfo::new());
        assert_eq!(
            parse("postgres://[::1]:5433,h2/db").unwrap(),
            kv(&[("host", "::1,h2"), ("port", "5433,"), ("dbname", "db")])
        );
        assert_eq!(
            parse("postgresql://%2Fvar%2Frun%2Fpostgresql/db?ssl=true").unwrap(),
            kv(&[
                ("host", "/var/run/postgresql"),
                ("dbname", "db"),
                ("sslmode", "require")
            ])
        );
        assert_eq!(
            parse("postgresql:///db?host=/tmp&port=5999").unwrap(),
            kv(&[("host", "/tmp"), ("port", "5999"), ("dbname", "db")])
        );
        assert!(parse("postgres://h/db?sslmode").is_err());
        assert!(
            parse("postgres://h/db?bogus=1")
                .unwrap_err()
                .contains("bogus")
        );
        assert!(parse("postgres://u:%zz@h/db").is_err());
        assert!(parse("postgres://[::1/db").is_err());
    }
}
