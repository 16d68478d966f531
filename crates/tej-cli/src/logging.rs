//! The `tej` binary's log: one tracing subscriber writing to stderr (stdout carries the
//! command's output, so `--output json` stays parseable), with every line redacted.
//!
//! Levels: the tej crates log at `warn` by default, `-v` info, `-vv` debug, `-vvv` trace,
//! `-q` errors only, `-qq` nothing; other crates never log above `warn` unless `RUST_LOG`
//! (which replaces these defaults) says so. `--log-format json` writes one JSON object per
//! event (for the daemon under a log collector); `text` is the default.
//!
//! Redaction: each formatted line goes through tej-core's [`Redactor`] before it is
//! written, so a password inside a URL (`postgres://app:pw@db`), a libpq `password=...`
//! pair, and every secret value of the loaded configuration ([`register_config`]) read
//! `[REDACTED]` whatever field or dependency logged them.

use std::io::{self, Write};
use std::sync::{OnceLock, RwLock};
use tej_core::{Config, Redactor, Secret, SecretRef};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// One line per event for people: time, level, target, message, fields.
    #[default]
    Text,
    /// One JSON object per event (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// The crates whose events the verbosity flags govern.
const TEJ_CRATES: &[&str] = &[
    "tej",
    "tej_core",
    "tej_db",
    "tej_backup",
    "tej_secrets",
    "tej_deploy",
    "tej_host",
    "tej_runbook",
];

fn redactor() -> &'static RwLock<Redactor> {
    static REDACTOR: OnceLock<RwLock<Redactor>> = OnceLock::new();
    REDACTOR.get_or_init(|| RwLock::new(Redactor::new()))
}

/// Registers a secret value: from now on it reads `[REDACTED]` in every log line and in
/// [`redact`]ed text, also in its JSON-escaped form (as it appears in a JSON log line).
pub fn register_secret(secret: &Secret) {
    let mut r = redactor().write().unwrap_or_else(|e| e.into_inner());
    r.add(secret);
    if let Ok(quoted) = serde_json::to_string(secret.expose()) {
        let inner = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"'));
        r.add(&Secret::new(inner.unwrap_or(&quoted)));
    }
}

/// Registers every secret the configuration refers to that can be read now: database and
/// Redis passwords, the webhook URL, the backup passphrase and identity, the rotation's test
/// password. A reference that does not resolve is skipped (the command using it reports
/// that itself).
pub fn register_config(cfg: &Config) {
    let enc = cfg.backup.encryption.as_ref();
    let refs = cfg
        .databases
        .iter()
        .filter_map(|d| d.password.as_ref())
        .chain(cfg.redis.iter().filter_map(|r| r.password.as_ref()))
        .chain(cfg.notify_url.as_ref())
        .chain(enc.and_then(|e| e.passphrase.as_ref()))
        .chain(enc.and_then(|e| e.identity.as_ref()))
        .chain(cfg.secrets.as_ref().and_then(|s| s.test_password.as_ref()));
    for r in refs {
        register_ref(r);
    }
}

fn register_ref(r: &SecretRef) {
    let Ok(secret) = r.resolve() else { return };
    register_secret(&secret);
    // A key file (an age identity) is matched line by line.
    for line in secret.expose().lines().map(str::trim) {
        if !line.is_empty() && !line.starts_with('#') && line != secret.expose() {
            register_secret(&Secret::new(line));
        }
    }
}

/// `text` with URL passwords and every registered secret replaced by `[REDACTED]`.
pub fn redact(text: &str) -> String {
    redactor()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .redact(text)
}

/// The filter: `RUST_LOG` when set (an invalid one is reported and the defaults used),
/// else `level` for the tej crates and at most `warn` for the others.
pub fn filter(level: LevelFilter, rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    if let Some(spec) = rust_log.filter(|s| !s.trim().is_empty()) {
        match EnvFilter::builder().parse(spec) {
            Ok(f) => return (f, None),
            Err(e) => {
                let problem = format!("ignoring RUST_LOG={spec:?}: {e}");
                return (default_filter(level), Some(problem));
            }
        }
    }
    (default_filter(level), None)
}

fn default_filter(level: LevelFilter) -> EnvFilter {
    let others = level.min(LevelFilter::WARN);
    let mut spec = others.to_string().to_lowercase();
    for c in TEJ_CRATES {
        spec.push_str(&format!(",{c}={}", level.to_string().to_lowercase()));
    }
    EnvFilter::builder()
        .parse(&spec)
        .unwrap_or_else(|_| EnvFilter::new("warn"))
}

/// Installs the subscriber: events at `level` (unless `RUST_LOG` says otherwise), in
/// `format`, coloured when `ansi`, redacted, on stderr.
pub fn init(level: LevelFilter, format: LogFormat, ansi: bool) {
    let (filter, problem) = filter(level, std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .with_current_span(false)
            .try_init(),
    };
    if installed.is_ok()
        && let Some(p) = problem
    {
        tracing::warn!("{p}");
    }
}

/// Reports the error that ended the command on stderr, redacted: `error: ...` in text
/// format, an `ERROR` event in JSON format (so that stderr stays one object per line).
pub fn report_error(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {}", redact(message)),
        LogFormat::Json if tracing::enabled!(tracing::Level::ERROR) => {
            tracing::error!(error = message, "the command failed")
        }
        LogFormat::Json => eprintln!("error: {}", redact(message)),
    }
}

/// Writes each event to stderr redacted, in one write (lines of concurrent events never
/// interleave).
#[derive(Debug, Clone, Copy)]
pub struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingLine<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine::new(io::stderr())
    }
}

/// One event's text, written redacted to `inner` when dropped.
pub struct RedactingLine<W: Write> {
    buf: Vec<u8>,
    inner: W,
}

impl<W: Write> RedactingLine<W> {
    /// A line buffer in front of `inner`.
    pub fn new(inner: W) -> RedactingLine<W> {
        RedactingLine {
            buf: Vec::with_capacity(256),
            inner,
        }
    }
}

impl<W: Write> Write for RedactingLine<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingLine<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = redact(&String::from_utf8_lossy(&self.buf));
        let _ = self.inner.write_all(text.as_bytes());
        let _ = self.inner.flush();
    }
}

/// The command's output (stdout) redacted line by line: every complete line is written
/// through [`redact`], the rest when flushed. Reports quote text tej does not control
/// (another session's query, a server's error, a command's output), so a configured
/// secret can reach a finding; this writer keeps it off the terminal and out of pipes.
pub struct RedactingOutput<W: Write> {
    pending: Vec<u8>,
    inner: W,
}

impl<W: Write> RedactingOutput<W> {
    /// A redacting writer in front of `inner`.
    pub fn new(inner: W) -> RedactingOutput<W> {
        RedactingOutput {
            pending: Vec::new(),
            inner,
        }
    }

    fn emit(&mut self, upto: usize) -> io::Result<()> {
        let chunk: Vec<u8> = self.pending.drain(..upto).collect();
        match std::str::from_utf8(&chunk) {
            Ok(text) => self.inner.write_all(redact(text).as_bytes()),
            // Not text: passed through untouched.
            Err(_) => self.inner.write_all(&chunk),
        }
    }
}

impl<W: Write> Write for RedactingOutput<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(data);
        if let Some(last) = self.pending.iter().rposition(|&b| b == b'\n') {
            self.emit(last + 1)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let n = self.pending.len();
        if n > 0 {
            self.emit(n)?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingOutput<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = RedactingLine<Captured>;
        fn make_writer(&'a self) -> Self::Writer {
            RedactingLine::new(self.clone())
        }
    }

    fn logged(json: bool, emit: impl FnOnce()) -> String {
        let cap = Captured::default();
        let b = tracing_subscriber::fmt()
            .with_writer(cap.clone())
            .with_ansi(false);
        if json {
            tracing::subscriber::with_default(b.json().finish(), emit);
        } else {
            tracing::subscriber::with_default(b.finish(), emit);
        }
        String::from_utf8(cap.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn url_passwords_and_registered_secrets_are_redacted_in_text_and_json() {
        register_secret(&Secret::new("s3cret-\"quoted\"-value"));
        for json in [false, true] {
            let out = logged(json, || {
                tracing::warn!(
                    url = "postgres://app:hunter2pw@db:5432/x",
                    token = "s3cret-\"quoted\"-value",
                    "connect failed: host=db password=kw-secret user=app"
                );
            });
            for leaked in ["hunter2pw", "kw-secret", "s3cret-", "quoted"] {
                assert!(!out.contains(leaked), "{leaked} in {out}");
            }
            assert!(out.contains("[REDACTED]"), "{out}");
            assert!(out.contains("connect failed"), "{out}");
        }
    }

    #[test]
    fn output_is_redacted_even_when_a_secret_is_split_across_writes() {
        register_secret(&Secret::new("split-output-secret"));
        let captured = Captured::default();
        {
            let mut out = RedactingOutput::new(captured.clone());
            out.write_all(b"first line\nsummary: split-out").unwrap();
            // Nothing of an unfinished line is written before its end or a flush.
            assert_eq!(captured.0.lock().unwrap().as_slice(), b"first line\n");
            out.write_all(b"put-secret and postgres://u:pw@h/db\nno newline split-output-secret")
                .unwrap();
            out.flush().unwrap();
            out.write_all(&[0xff, 0xfe, b'\n']).unwrap();
        }
        let text = captured.0.lock().unwrap().clone();
        assert_eq!(
            String::from_utf8_lossy(&text[..text.len() - 3]),
            "first line\nsummary: [REDACTED] and postgres://u:[REDACTED]@h/db\nno newline [REDACTED]"
        );
        // Bytes that are not text pass untouched.
        assert_eq!(&text[text.len() - 3..], &[0xff, 0xfe, b'\n']);
    }

    #[test]
    fn verbosity_sets_the_tej_crates_level_and_caps_the_others() {
        let (f, p) = filter(LevelFilter::DEBUG, None);
        assert!(p.is_none());
        let directives = |f: EnvFilter| {
            let mut d: Vec<String> = f.to_string().split(',').map(String::from).collect();
            d.sort();
            d
        };
        let d = directives(f);
        assert!(d.contains(&"tej_backup=debug".into()), "{d:?}");
        assert!(d.contains(&"tej=debug".into()), "{d:?}");
        assert!(d.contains(&"warn".into()), "{d:?}");
        let d = directives(filter(LevelFilter::ERROR, None).0);
        assert!(
            d.contains(&"error".into()) && d.contains(&"tej_core=error".into()),
            "{d:?}"
        );
        let (f, p) = filter(LevelFilter::WARN, Some("tej_db=trace"));
        assert!(p.is_none());
        assert_eq!(f.to_string(), "tej_db=trace");
        let (f, p) = filter(LevelFilter::WARN, Some("tej_db=loud[["));
        assert!(p.unwrap().contains("ignoring RUST_LOG"));
        assert!(f.to_string().contains("tej_db=warn"));
    }
}
