//! A throwaway S3-compatible server (s3s-fs).

use crate::process::{self, ChildGuard};
use crate::scratch::ScratchDir;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const INSTALL: &str = "set TEJ_S3S_FS, or install it: \
     cargo install s3s-fs@0.14.1 --features binary --locked --root /opt/tej-tools";

/// An S3-compatible server (s3s-fs) on 127.0.0.1 with its own port, random credentials
/// (it checks request signatures) and a temp directory as storage; killed and removed on
/// drop.
///
/// Clients use the [`endpoint`](Self::endpoint) with path-style addressing, region
/// `us-east-1` and the static credentials. A bucket is a directory under
/// [`root_dir`](Self::root_dir).
#[derive(Debug)]
pub struct S3Server {
    // Field order: the process is killed before the directory is removed.
    child: ChildGuard,
    port: u16,
    access_key: String,
    secret_key: String,
    root: PathBuf,
    log: PathBuf,
    dir: ScratchDir,
}

/// A process-wide counter mixed into names and keys.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A short value that differs between calls and between processes.
fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ (n << 20);
    format!("{n}{:08x}", mix.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32)
}

impl S3Server {
    /// Starts a server with fresh credentials and an empty root.
    pub fn start() -> Result<S3Server> {
        let bin = S3Server::binary()?;
        let mut dir = ScratchDir::new("tejs3-", "S3 server")?;
        let root = dir.path().join("root");
        let log = dir.path().join("s3s-fs.log");
        std::fs::create_dir(&root).with_context(|| format!("create {}", root.display()))?;
        let access_key = format!("tejtest{}", unique_suffix());
        let secret_key = format!("tejsecret{}{}", unique_suffix(), unique_suffix());
        let dir_path = dir.path().to_path_buf();
        let (child, port) = process::start_on_free_port(
            "s3s-fs",
            &mut dir,
            &log,
            |port| {
                let (out, err) = process::log_stdio(&log)?;
                Command::new(&bin)
                    .args(["--host", "127.0.0.1", "--port"])
                    .arg(port.to_string())
                    .arg("--access-key")
                    .arg(&access_key)
                    .arg("--secret-key")
                    .arg(&secret_key)
                    .arg(&root)
                    .current_dir(&dir_path)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
                    .with_context(|| format!("spawn {}", bin.display()))
            },
            process::port_accepts,
        )?;
        Ok(S3Server {
            child,
            port,
            access_key,
            secret_key,
            root,
            log,
            dir,
        })
    }

    /// Where s3s-fs is: `$TEJ_S3S_FS` if set, else on `PATH`, else
    /// `/opt/tej-tools/bin/s3s-fs`, else `~/.cargo/bin/s3s-fs`.
    pub fn binary() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("TEJ_S3S_FS") {
            let p = PathBuf::from(p);
            if !process::is_executable(&p) {
                bail!("TEJ_S3S_FS={} is not an executable file", p.display());
            }
            return Ok(p);
        }
        if let Some(p) = process::find_on_path("s3s-fs") {
            return Ok(p);
        }
        let mut candidates = vec![PathBuf::from("/opt/tej-tools/bin/s3s-fs")];
        if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".cargo/bin/s3s-fs"));
        }
        candidates
            .into_iter()
            .find(|p| process::is_executable(p))
            .with_context(|| format!("s3s-fs not found: {INSTALL}"))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The region to sign for: `us-east-1`.
    pub fn region(&self) -> &str {
        "us-east-1"
    }

    /// Creates bucket `name` (a directory under the root); fine if it exists.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        validate_bucket_name(name)?;
        let path = self.root.join(name);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("create bucket directory {}", path.display()))
    }

    /// Creates a fresh bucket named `PREFIX-UNIQUE` (the prefix made valid: lowercase
    /// letters, digits and hyphens) and returns its name.
    pub fn unique_bucket(&self, prefix: &str) -> Result<String> {
        let name = unique_bucket_name(prefix);
        self.create_bucket(&name)?;
        Ok(name)
    }

    /// The storage directory: one subdirectory per bucket, objects as files.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server log so far, for failing-test diagnostics.
    pub fn server_log(&self) -> String {
        process::read_log(&self.log)
    }

    /// The temp directory holding the root and the log.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `PREFIX-UNIQUE`, a valid bucket name (3–63 of `a-z0-9-`, alphanumeric at both ends).
pub(crate) fn unique_bucket_name(prefix: &str) -> String {
    let mut p: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    p.truncate(40);
    let p = p.trim_matches('-');
    let p = if p.is_empty() { "tej" } else { p };
    let mut name = format!("{p}-{}", unique_suffix());
    name.truncate(63);
    name
}

/// Checks S3's bucket naming rules (the strict subset: no dots).
pub(crate) fn validate_bucket_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && !name.contains("..");
    if !ok {
        bail!(
            "invalid bucket name {name:?}: 3 to 63 lowercase letters, digits, hyphens or dots, \
             starting and ending with a letter or digit"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_bucket_names_are_valid_and_distinct() {
        let a = unique_bucket_name("My_Test::Bucket");
        let b = unique_bucket_name("My_Test::Bucket");
        assert_ne!(a, b);
        assert!(a.starts_with("my-test--bucket-"), "{a}");
        for prefix in ["", "-", "x", &"long".repeat(30), "UPPER.case"] {
            let n = unique_bucket_name(prefix);
            validate_bucket_name(&n).unwrap_or_else(|e| panic!("{prefix:?} → {n}: {e}"));
        }
    }

    #[test]
    fn invalid_bucket_names_are_refused() {
        for n in [
            "ab",
            "Upper",
            "-lead",
            "trail-",
            "a..b",
            "has_underscore",
            &"a".repeat(64),
        ] {
            assert!(validate_bucket_name(n).is_err(), "{n}");
        }
        validate_bucket_name("tej-backups.2026").unwrap();
    }
}
