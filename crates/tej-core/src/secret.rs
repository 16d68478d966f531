//! Secrets: values that must never reach logs, errors, `Debug` or output.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The text that stands in for a secret everywhere it would be shown.
pub const REDACTED: &str = "[REDACTED]";

/// A secret value. `Debug` and `Display` print [`REDACTED`]; it has no
/// `Serialize`, so it cannot end up in a report by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself; call only where it is handed to the system that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Where a secret comes from: a reference, never the value.
///
/// In `tej.toml`: `password = { env = "PGPASSWORD" }` or
/// `password = { file = "/run/secrets/pg" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// Read from an environment variable.
    Env {
        /// Variable name.
        env: String,
    },
    /// Read from a file (trailing newline trimmed).
    File {
        /// Path of the file.
        file: PathBuf,
    },
}

/// Why a secret could not be resolved: tej-core's [`Error`](crate::Error) (its `EnvMissing`
/// and `SecretFile` variants). Never contains the value.
pub type SecretError = crate::Error;

impl SecretRef {
    /// Reads the secret.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env { env } => std::env::var(env)
                .map(Secret::new)
                .map_err(|_| SecretError::EnvMissing(env.clone())),
            SecretRef::File { file } => std::fs::read_to_string(file)
                .map(|s| Secret::new(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| SecretError::SecretFile {
                    path: file.clone(),
                    reason: e.kind().to_string(),
                }),
        }
    }

    /// A description safe to print (`env:PGPASSWORD`, `file:/run/secrets/pg`).
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env { env } => format!("env:{env}"),
            SecretRef::File { file } => format!("file:{}", file.display()),
        }
    }
}

/// Replaces known secret values in text, for audit lines and error messages
/// that may quote a command or a server reply.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

impl Redactor {
    /// A redactor that knows no secrets (URL passwords are still masked).
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Registers a secret; values shorter than 4 characters are ignored
    /// (redacting "a" everywhere would destroy the text without protecting anything).
    pub fn add(&mut self, secret: &Secret) {
        let v = secret.expose();
        if v.len() >= 4 && !self.values.iter().any(|x| x == v) {
            self.values.push(v.to_string());
            // Longest first so a secret containing another is replaced whole.
            self.values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// The text with every known secret and every URL password replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = redact_url_passwords(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), REDACTED);
            }
        }
        out
    }
}

/// Masks the password in any `scheme://user:password@host` inside `text`,
/// and `password=...` pairs of libpq keyword/value strings.
pub fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // userinfo ends at '@' before any '/', whitespace or quote
        let end_auth = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let auth = &tail[..end_auth];
        if let Some(at) = auth.rfind('@') {
            let userinfo = &auth[..at];
            if let Some(colon) = userinfo.find(':') {
                out.push_str(&userinfo[..colon]);
                out.push(':');
                out.push_str(REDACTED);
                out.push_str(&tail[at..end_auth]);
                rest = &tail[end_auth..];
                continue;
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    redact_keyword_password(&out)
}

fn redact_keyword_password(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut idx = 0;
    while let Some(rel) = lower[idx..].find("password=") {
        let start = idx + rel;
        // only at a word boundary
        let boundary = start == 0
            || !lower.as_bytes()[start - 1].is_ascii_alphanumeric()
                && lower.as_bytes()[start - 1] != b'_';
        let vstart = start + "password=".len();
        out.push_str(&text[idx..vstart]);
        if !boundary {
            idx = vstart;
            continue;
        }
        let bytes = text.as_bytes();
        let mut vend = vstart;
        if vend < bytes.len() && bytes[vend] == b'\'' {
            vend += 1;
            while vend < bytes.len() && bytes[vend] != b'\'' {
                vend += if bytes[vend] == b'\\' { 2 } else { 1 };
            }
            vend = (vend + 1).min(bytes.len());
        } else {
            while vend < bytes.len() && !bytes[vend].is_ascii_whitespace() && bytes[vend] != b'&' {
                vend += 1;
            }
        }
        if vend > vstart {
            out.push_str(REDACTED);
        }
        idx = vend;
    }
    out.push_str(&text[idx..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(format!("{s}"), "[REDACTED]");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            redact_url_passwords("connect postgres://app:s3cr%40t@db:5432/x failed"),
            "connect postgres://app:[REDACTED]@db:5432/x failed"
        );
        assert_eq!(
            redact_url_passwords("redis://:pw@127.0.0.1:6379/0"),
            "redis://:[REDACTED]@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url_passwords("postgres://app@db/x"),
            "postgres://app@db/x"
        );
        assert_eq!(
            redact_url_passwords("host=db password=abc user=x"),
            "host=db password=[REDACTED] user=x"
        );
        assert_eq!(
            redact_url_passwords("password='a b\\'c' user=x"),
            "password=[REDACTED] user=x"
        );
        assert_eq!(
            redact_url_passwords("?sslmode=require&password=abc&x=1"),
            "?sslmode=require&password=[REDACTED]&x=1"
        );
        assert_eq!(redact_url_passwords("no_password=abc"), "no_password=abc");
    }

    #[test]
    fn redactor_replaces_registered_values() {
        let mut r = Redactor::new();
        r.add(&Secret::new("abcdef123456"));
        r.add(&Secret::new("abc")); // too short, ignored
        assert_eq!(
            r.redact("JWT_SECRET=abcdef123456 ok abc"),
            "JWT_SECRET=[REDACTED] ok abc"
        );
        assert!(!format!("{r:?}").contains("abcdef"));
    }

    #[test]
    fn secret_ref_resolves_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "topsecret\n").unwrap();
        let r = SecretRef::File { file: p.clone() };
        assert_eq!(r.resolve().unwrap().expose(), "topsecret");
        assert_eq!(r.describe(), format!("file:{}", p.display()));
        let missing = SecretRef::Env {
            env: "TEJ_TEST_DEFINITELY_UNSET_VAR".into(),
        };
        assert_eq!(
            missing.resolve().unwrap_err(),
            SecretError::EnvMissing("TEJ_TEST_DEFINITELY_UNSET_VAR".into())
        );
        let parsed: SecretRef =
            toml::from_str::<std::collections::BTreeMap<String, SecretRef>>("p = { env = \"X\" }")
                .unwrap()
                .remove("p")
                .unwrap();
        assert_eq!(parsed, SecretRef::Env { env: "X".into() });
    }
}
