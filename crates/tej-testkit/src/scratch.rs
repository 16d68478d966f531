//! Temporary directories that are kept for inspection when a test fails.

use anyhow::{Context, Result};
use std::path::Path;
use tempfile::TempDir;

/// Set this environment variable to `1` to keep the directory of a server whose test
/// panicked or which failed to start (its path is printed on stderr).
pub const KEEP_DIRS_ENV: &str = "TEJ_KEEP_TEST_DIRS";

/// A directory under /tmp, removed on drop unless it should be kept.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    dir: Option<TempDir>,
    what: &'static str,
    failed: bool,
}

impl ScratchDir {
    /// Creates `/tmp/PREFIXxxxxxx` (mode 0700). Keep prefixes short: unix socket paths
    /// inside it must stay under 108 bytes.
    pub(crate) fn new(prefix: &str, what: &'static str) -> Result<ScratchDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .with_context(|| format!("create a temporary directory for {what}"))?;
        Ok(ScratchDir {
            dir: Some(dir),
            what,
            failed: false,
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .expect("scratch dir present until drop")
    }

    /// Marks the directory as belonging to a server that failed (kept when asked to).
    pub(crate) fn mark_failed(&mut self) {
        self.failed = true;
    }
}

/// Whether `TEJ_KEEP_TEST_DIRS` asks to keep failed servers' directories.
pub(crate) fn keep_requested() -> bool {
    std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if (self.failed || std::thread::panicking()) && keep_requested() {
            let path = dir.keep();
            eprintln!(
                "tej-testkit: kept the directory of the failed {} at {}",
                self.what,
                path.display()
            );
        }
        // Otherwise TempDir's own drop removes it, ignoring errors.
    }
}
