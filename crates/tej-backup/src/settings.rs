//! [`BackupSettings`]: `tej.toml`'s `[backup]` turned into the options of every backup
//! operation, in one place (the CLI, the runbook and the examples all start here).

use crate::create::RunOptions;
use crate::db::DbTarget;
use crate::error::BackupError;
use crate::files::{FileBackupOptions, FileRestoreOptions};
use crate::logical::LogicalBackupOptions;
use crate::manifest::{CompressionAlgo, DumpFormat};
use crate::physical::{PhysicalBackupOptions, PhysicalRestoreOptions};
use crate::pipeline::{CompressionOptions, EncryptionOptions};
use crate::repo::Repository;
use crate::restore::RestoreOptions;
use crate::retention::{PruneOptions, RetentionPolicy};
use crate::verify::VerifyOptions;
use crate::wal::WalArchive;
use std::path::PathBuf;
use std::time::Duration;
use tej_core::Config;
use tej_core::config::{BackupConfig, DatabaseConfig};

/// How backups are taken, kept and read, as `[backup]` in `tej.toml` says. Built once with
/// [`BackupSettings::from_config`], it hands out the options of each operation.
#[derive(Clone, PartialEq)]
pub struct BackupSettings {
    /// The repositories as written in `tej.toml` (a local path or `s3://bucket/prefix`);
    /// every backup goes to each.
    pub repositories: Vec<String>,
    /// The dump format of logical backups.
    pub format: DumpFormat,
    /// Compression of every backup.
    pub compression: CompressionOptions,
    /// Encryption keys (references to secrets, never their values).
    pub encryption: EncryptionOptions,
    /// Grandfather-father-son retention.
    pub retention: RetentionPolicy,
    /// The PITR window promised, in days: prune never cuts it.
    pub pitr_window_days: Option<u32>,
    /// How long a base backup waits for its WAL to reach the archive (`None`: the
    /// physical backup's default).
    pub archive_timeout: Option<Duration>,
    /// The directories of file backups.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for BackupSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let repos: Vec<String> = self
            .repositories
            .iter()
            .map(|r| tej_core::secret::redact_url_passwords(r))
            .collect();
        f.debug_struct("BackupSettings")
            .field("repositories", &repos)
            .field("format", &self.format)
            .field("compression", &self.compression)
            .field("encryption", &self.encryption)
            .field("retention", &self.retention)
            .field("pitr_window_days", &self.pitr_window_days)
            .field("archive_timeout", &self.archive_timeout)
            .field("files", &self.files)
            .finish()
    }
}

impl Default for BackupSettings {
    /// No repository, custom format, zstd at its default level, no encryption, the
    /// default retention.
    fn default() -> Self {
        BackupSettings {
            repositories: Vec::new(),
            format: DumpFormat::Custom,
            compression: CompressionOptions::default(),
            encryption: EncryptionOptions::default(),
            retention: RetentionPolicy::default(),
            pitr_window_days: None,
            archive_timeout: None,
            files: Vec::new(),
        }
    }
}

impl BackupSettings {
    /// The settings of `config`'s `[backup]` table.
    pub fn from_config(config: &Config) -> Result<BackupSettings, BackupError> {
        BackupSettings::from_backup_config(&config.backup)
    }

    /// The settings of a `[backup]` table. A format, compression or level the backup
    /// cannot use is an error naming the key.
    pub fn from_backup_config(c: &BackupConfig) -> Result<BackupSettings, BackupError> {
        let bad = |key: &str, why: String| {
            BackupError::InvalidOptions(format!("[backup] {key} in tej.toml: {why}"))
        };
        let format = DumpFormat::parse(&c.format).ok_or_else(|| {
            bad(
                "format",
                format!(
                    "unknown format {:?}: expected custom, directory or plain",
                    c.format
                ),
            )
        })?;
        let algorithm = CompressionAlgo::parse(&c.compression).ok_or_else(|| {
            bad(
                "compression",
                format!(
                    "unknown compression {:?}: expected zstd, gzip or none",
                    c.compression
                ),
            )
        })?;
        let compression = CompressionOptions {
            algorithm,
            level: c.compression_level,
            ..CompressionOptions::default()
        };
        compression
            .info()
            .map_err(|e| bad("compression_level", e.to_string()))?;
        for r in &c.repositories {
            tej_core::config::validate_repository(r)
                .map_err(|why| bad("repositories", why.to_string()))?;
        }
        Ok(BackupSettings {
            repositories: c.repositories.clone(),
            format,
            compression,
            encryption: c
                .encryption
                .as_ref()
                .map(EncryptionOptions::from_config)
                .unwrap_or_default(),
            retention: RetentionPolicy::from_config(&c.retention),
            pitr_window_days: c.pitr_window_days,
            archive_timeout: c.archive_timeout_secs.map(Duration::from_secs),
            files: c.files.clone(),
        })
    }

    /// Opens every repository, in order; the first that cannot be opened is the error.
    pub async fn open_repositories(&self) -> Result<Vec<Repository>, BackupError> {
        let mut out = Vec::with_capacity(self.repositories.len());
        for spec in &self.repositories {
            out.push(Repository::open(spec).await?);
        }
        Ok(out)
    }

    /// Compression and encryption of a backup run (the other run settings at their
    /// defaults).
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            compression: self.compression,
            encryption: self.encryption.clone(),
            ..RunOptions::default()
        }
    }

    /// A logical backup of `db` in the configured format, compression and encryption.
    pub fn logical(&self, db: DbTarget) -> LogicalBackupOptions {
        let mut o = LogicalBackupOptions::new(db);
        o.format = self.format;
        o.run = self.run_options();
        o
    }

    /// A base backup of the server `db` with the configured compression, encryption and
    /// archive timeout.
    pub fn physical(&self, db: DbTarget) -> PhysicalBackupOptions {
        let mut o = PhysicalBackupOptions::new(db);
        if let Some(t) = self.archive_timeout {
            o.archive_timeout = Some(t);
        }
        o.run = self.run_options();
        o
    }

    /// A file backup of the configured directories.
    pub fn files(&self) -> FileBackupOptions {
        let mut o = FileBackupOptions::new(self.files.clone());
        o.run = self.run_options();
        o
    }

    /// A verification with the configured keys, recorded beside the backup (retention
    /// reads the record).
    pub fn verify(&self) -> VerifyOptions {
        VerifyOptions {
            encryption: self.encryption.clone(),
            record: true,
            ..VerifyOptions::default()
        }
    }

    /// A restore into `target` with the configured keys.
    pub fn restore(&self, target: DbTarget) -> RestoreOptions {
        let mut o = RestoreOptions::new(target);
        o.encryption = self.encryption.clone();
        o
    }

    /// A restore of a physical base backup with the configured keys, into an empty data
    /// directory (set `replace` to empty a non-empty one).
    pub fn physical_restore(&self) -> PhysicalRestoreOptions {
        PhysicalRestoreOptions {
            encryption: self.encryption.clone(),
            ..PhysicalRestoreOptions::default()
        }
    }

    /// A restore of a file backup with the configured keys, into a missing or empty
    /// directory (set `overwrite` to replace files in a non-empty one).
    pub fn file_restore(&self) -> FileRestoreOptions {
        FileRestoreOptions {
            encryption: self.encryption.clone(),
            ..FileRestoreOptions::default()
        }
    }

    /// A prune with the configured retention and PITR window.
    pub fn prune(&self) -> PruneOptions {
        PruneOptions {
            policy: self.retention.clone(),
            pitr_window_days: self.pitr_window_days,
            ..PruneOptions::default()
        }
    }

    /// The WAL archive of `repo`, with the configured keys.
    pub fn wal(&self, repo: Repository) -> WalArchive {
        WalArchive::new(repo).with_encryption(self.encryption.clone())
    }
}

/// The connection to a `[[database]]` of `tej.toml`, its password read from where the
/// configuration says.
pub fn db_target(db: &DatabaseConfig) -> Result<DbTarget, BackupError> {
    let target = DbTarget::new(db.url.expose());
    match &db.password {
        None => Ok(target),
        Some(p) => {
            let secret = p.resolve().map_err(|e| {
                BackupError::InvalidOptions(format!(
                    "read the password of database {:?}: {e}",
                    db.name
                ))
            })?;
            Ok(target.with_password(secret))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::CompressionAlgo;

    fn config(backup: &str) -> Result<Config, String> {
        Config::from_toml_with_env(&format!("[backup]\n{backup}"), "tej.toml", &|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_operation_gets_the_configured_settings() {
        let c = config(
            "repositories = [\"/srv/backups\"]\nformat = \"plain\"\ncompression = \"gzip\"\ncompression_level = 4\n\
             encryption = { recipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"] }\n\
             pitr_window_days = 7\narchive_timeout_secs = 5\nfiles = [\"/srv/uploads\"]\n",
        )
        .unwrap();
        let s = BackupSettings::from_config(&c).unwrap();
        assert_eq!(s.repositories, ["/srv/backups"]);
        let l = s.logical(DbTarget::new("postgres://app@127.0.0.1/app"));
        assert_eq!(l.format, DumpFormat::Plain);
        assert_eq!(l.run.compression.algorithm, CompressionAlgo::Gzip);
        assert_eq!(l.run.compression.level, Some(4));
        assert!(l.run.encryption.encrypts());
        let p = s.physical(DbTarget::new("postgres://postgres@127.0.0.1/postgres"));
        assert_eq!(p.archive_timeout, Some(Duration::from_secs(5)));
        assert_eq!(p.run.compression.algorithm, CompressionAlgo::Gzip);
        assert_eq!(s.files().paths, [PathBuf::from("/srv/uploads")]);
        assert!(s.files().run.encryption.encrypts());
        assert_eq!(s.prune().pitr_window_days, Some(7));
        assert!(s.verify().record);
        assert_eq!(s.verify().encryption, s.encryption);
        assert_eq!(s.restore(DbTarget::new("")).encryption, s.encryption);
    }

    #[test]
    fn defaults_are_custom_zstd_and_no_encryption() {
        let s = BackupSettings::from_config(&config("").unwrap()).unwrap();
        assert_eq!(s.format, DumpFormat::Custom);
        assert_eq!(s.compression, CompressionOptions::default());
        assert!(!s.encryption.encrypts());
        assert_eq!(s.archive_timeout, None);
        assert_eq!(
            s.physical(DbTarget::new("")).archive_timeout,
            PhysicalBackupOptions::new(DbTarget::new("")).archive_timeout
        );
    }

    #[test]
    fn a_table_built_in_code_with_a_bad_value_names_the_key() {
        let c = BackupConfig {
            compression: "lz4".into(),
            ..BackupConfig::default()
        };
        let e = BackupSettings::from_backup_config(&c)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[backup] compression") && e.contains("lz4"),
            "{e}"
        );
        let c = BackupConfig {
            compression_level: Some(42),
            ..BackupConfig::default()
        };
        let e = BackupSettings::from_backup_config(&c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("compression_level"), "{e}");
        let c = BackupConfig {
            format: "tar".into(),
            ..BackupConfig::default()
        };
        let e = BackupSettings::from_backup_config(&c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[backup] format") && e.contains("tar"), "{e}");
    }
}
