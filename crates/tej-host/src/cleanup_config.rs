//! `tej.toml` to cleanup options: what a cleanup must never reach beyond the system and
//! PostgreSQL data directories it recognises itself, the one place for the CLI and the
//! runbook alike.

use crate::cleanup::CleanupOptions;
use std::path::PathBuf;
use tej_core::Config;

impl CleanupOptions {
    /// A cleanup of `root` (files matching `pattern` older than `older_than_days`) that
    /// never reaches the local backup repositories of `[backup] repositories`.
    pub fn from_config(
        cfg: &Config,
        root: impl Into<PathBuf>,
        pattern: impl Into<String>,
        older_than_days: u32,
    ) -> CleanupOptions {
        let mut opts = CleanupOptions::new(root, pattern, older_than_days);
        opts.protected = cfg
            .backup
            .repositories
            .iter()
            .filter(|r| !r.starts_with("s3://"))
            .map(PathBuf::from)
            .collect();
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_backup_repositories_are_protected() {
        let cfg = Config::from_toml_with_env(
            "[backup]\nrepositories = [\"/srv/backups\", \"s3://bucket/tej\"]\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let o = CleanupOptions::from_config(&cfg, "/srv", "*.log", 7);
        assert_eq!(o.protected, [PathBuf::from("/srv/backups")]);
        assert_eq!((o.pattern.as_str(), o.older_than_days), ("*.log", 7));
        assert_eq!(o.keep_newest, 1);
    }
}
