//! libpq's files: the password file (`PGPASSFILE`, `~/.pgpass`) and the connection service
//! file (`PGSERVICEFILE`, `~/.pg_service.conf`, then `PGSYSCONFDIR/pg_service.conf`).

use super::conninfo::{Conninfo, check_keyword};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tej_core::Secret;

/// libpq's system configuration directory on Debian (`pg_config --sysconfdir`).
pub(crate) const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// The password for `host`, `port`, `dbname`, `user` in the password file `path`, read as
/// libpq reads it: `hostname:port:database:username:password` lines, `*` matching anything,
/// `\:` and `\\` escapes, `#` comments. A file that is not a plain file, or that the group
/// or others can read, is ignored with a warning (libpq's rule: mode 0600 or less).
pub(crate) fn pgpass_password(
    path: &Path,
    host: &str,
    port: &str,
    dbname: &str,
    user: &str,
) -> Option<Secret> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        tracing::warn!(file = %path.display(), "password file is not a plain file; ignored");
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "password file has group or world access; permissions should be u=rw (0600) or less; ignored"
        );
        return None;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the password file");
            return None;
        }
    };
    let want = [host, port, dbname, user];
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .find_map(|line| {
            let (fields, password) = split_pgpass_line(line)?;
            let matches = fields.iter().zip(want).all(|(f, w)| f.any || f.text == w);
            matches.then(|| Secret::new(password))
        })
}

/// A matching field of a password-file line.
struct PgpassField {
    /// Unescaped text.
    text: String,
    /// The field is a lone, unescaped `*`.
    any: bool,
}

/// The four matching fields and the password of a password-file line, unescaped; `None`
/// for a line with fewer than five fields.
fn split_pgpass_line(line: &str) -> Option<([PgpassField; 4], String)> {
    let mut fields = Vec::with_capacity(4);
    let mut text = String::new();
    let mut escaped_any = false;
    let mut chars = line.chars();
    while fields.len() < 4 {
        match chars.next()? {
            '\\' => {
                text.extend(chars.next());
                escaped_any = true;
            }
            ':' => {
                let any = text == "*" && !escaped_any;
                fields.push(PgpassField {
                    text: std::mem::take(&mut text),
                    any,
                });
                escaped_any = false;
            }
            c => text.push(c),
        }
    }
    let mut password = String::new();
    while let Some(c) = chars.next() {
        if c == '\\' {
            password.extend(chars.next());
        } else {
            password.push(c);
        }
    }
    Some((fields.try_into().ok()?, password))
}

/// The settings of service `name`: from `user_file` (`PGSERVICEFILE` or
/// `~/.pg_service.conf`) if it defines the service, else from `sysconf_dir/pg_service.conf`.
/// An error when neither does, or when the file that defines it has a syntax error.
pub(crate) fn service_settings(
    name: &str,
    user_file: Option<&Path>,
    sysconf_dir: &Path,
) -> Result<Conninfo, String> {
    let system = sysconf_dir.join("pg_service.conf");
    for file in user_file.into_iter().chain([system.as_path()]) {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if let Some(found) = parse_service(&text, name, file)? {
            return Ok(found);
        }
    }
    Err(format!("definition of service \"{name}\" not found"))
}

/// Service `name` of a service file's text (INI: `[name]` then `keyword=value` lines).
fn parse_service(text: &str, name: &str, file: &Path) -> Result<Option<Conninfo>, String> {
    let mut found: Option<Conninfo> = None;
    let mut in_group = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = || {
            format!(
                "syntax error in service file \"{}\", line {}",
                file.display(),
                i + 1
            )
        };
        if let Some(group) = line.strip_prefix('[') {
            if found.is_some() && in_group {
                // The service's group ended.
                break;
            }
            in_group = group.strip_suffix(']').ok_or_else(syntax)? == name;
            if in_group {
                found = Some(Conninfo::new());
            }
            continue;
        }
        if !in_group {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(syntax)?;
        if key == "service" {
            return Err(format!(
                "nested service specifications not supported in service file \"{}\", line {}",
                file.display(),
                i + 1
            ));
        }
        check_keyword(key).map_err(|e| format!("{}: {e}", syntax()))?;
        if let Some(f) = found.as_mut() {
            f.entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_with_stars_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        std::fs::write(
            &p,
            "# comment\n\
             \n\
             db1:5432:app:alice:first\n\
             *:5433:*:alice:second\n\
             db\\:2:*:*:bob:p\\:w\\\\x:y\n\
             \\*:*:*:carol:literal-star\n\
             *:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pw =
            |h, port, db, u| pgpass_password(&p, h, port, db, u).map(|s| s.expose().to_string());
        assert_eq!(pw("db1", "5432", "app", "alice").as_deref(), Some("first"));
        assert_eq!(pw("other", "5433", "x", "alice").as_deref(), Some("second"));
        assert_eq!(pw("db:2", "1", "x", "bob").as_deref(), Some("p:w\\x:y"));
        assert_eq!(pw("h", "1", "x", "carol").as_deref(), Some("fallback"));
        assert_eq!(pw("*", "1", "x", "carol").as_deref(), Some("literal-star"));
        assert_eq!(pw("db1", "5432", "app", "zed").as_deref(), Some("fallback"));

        // Readable by the group or others: ignored.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(pw("db1", "5432", "app", "alice"), None);
        // Missing, or a directory: none.
        assert!(pgpass_password(&dir.path().join("none"), "h", "1", "d", "u").is_none());
        assert!(pgpass_password(dir.path(), "h", "1", "d", "u").is_none());
    }

    #[test]
    fn service_files_are_read_user_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.conf");
        std::fs::write(
            &user,
            "# mine\n[a]\nhost=h1\nport=1\n[b]\n  dbname=x y\n\n[c]\nbad line\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pg_service.conf"),
            "[a]\nhost=system\n[sys]\nuser=s\n",
        )
        .unwrap();
        let get = |n| service_settings(n, Some(&user), dir.path());
        let a = get("a").unwrap();
        assert_eq!(a.get("host").map(String::as_str), Some("h1"));
        assert_eq!(a.get("port").map(String::as_str), Some("1"));
        assert_eq!(
            get("b").unwrap().get("dbname").map(String::as_str),
            Some("x y")
        );
        assert_eq!(
            get("sys").unwrap().get("user").map(String::as_str),
            Some("s")
        );
        assert!(get("c").unwrap_err().contains("line 9"));
        assert_eq!(
            get("zz").unwrap_err(),
            "definition of service \"zz\" not found"
        );
        std::fs::write(&user, "[n]\nservice=a\n").unwrap();
        assert!(get("n").unwrap_err().contains("nested"));
        std::fs::write(&user, "[n]\nhots=a\n").unwrap();
        assert!(
            get("n")
                .unwrap_err()
                .contains("invalid connection option \"hots\"")
        );
        // Without a user file, the system file.
        assert_eq!(
            service_settings("a", None, dir.path())
                .unwrap()
                .get("host")
                .map(String::as_str),
            Some("system")
        );
    }
}
