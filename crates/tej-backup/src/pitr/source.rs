//! [`RepositorySource`]: the [`BaseBackupSource`] over a tej repository — its physical
//! base backups and its WAL archive — which `tej restore` and `tej drill` use.

use super::choose::ArchiveHorizon;
use super::restore::BaseBackupSource;
use crate::error::BackupError;
use crate::lsn::WalFileName;
use crate::manifest::{BackupKind, Manifest};
use crate::physical::{PhysicalRestoreOptions, restore_physical_manifest};
use crate::pipeline::{EncryptionOptions, ProgressSink};
use crate::repo::Repository;
use crate::wal::{WalArchive, WalEntry};
use async_trait::async_trait;
use std::path::Path;

/// Base backups and WAL of one repository, for point-in-time recovery.
///
/// - [`base_backups`](BaseBackupSource::base_backups): the manifests of its physical
///   backups (logical backups are not base backups and are left out);
/// - [`archive_horizon`](BaseBackupSource::archive_horizon): the newest archived WAL
///   segment (highest segment number, then timeline) and when it was pushed;
/// - [`restore_base`](BaseBackupSource::restore_base): [`restore_physical_manifest`],
///   every byte checked, owned by the owner of the target directory.
///
/// ```no_run
/// use tej_backup::{Repository, RepositorySource, RecoveryConfig, RecoveryTarget, PitrRestoreOptions, restore_pitr};
/// use tej_core::TokioCommandRunner;
///
/// # async fn run() -> Result<(), tej_backup::BackupError> {
/// let source = RepositorySource::new(Repository::open("s3://skillswap-backups/db").await?);
/// let opts = PitrRestoreOptions::new(
///     "/var/lib/postgresql/15/restored",
///     RecoveryConfig::new("tej wal fetch --repo s3://skillswap-backups/db %f %p", RecoveryTarget::Latest),
/// );
/// restore_pitr(&source, &TokioCommandRunner, &opts).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RepositorySource {
    repo: Repository,
    wal: WalArchive,
    encryption: EncryptionOptions,
    jobs: usize,
    progress: Option<ProgressSink>,
}

impl std::fmt::Debug for RepositorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositorySource")
            .field("repo", &self.repo.name())
            .field("encryption", &self.encryption)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl RepositorySource {
    /// The base backups and WAL archive of `repo`, unencrypted, one restore job per core.
    pub fn new(repo: Repository) -> RepositorySource {
        RepositorySource {
            wal: WalArchive::new(repo.clone()),
            repo,
            encryption: EncryptionOptions::default(),
            jobs: 0,
            progress: None,
        }
    }

    /// Keys for encrypted backups and WAL.
    pub fn with_encryption(mut self, encryption: EncryptionOptions) -> RepositorySource {
        self.wal = WalArchive::new(self.repo.clone()).with_encryption(encryption.clone());
        self.encryption = encryption;
        self
    }

    /// Objects downloaded and decoded at once while restoring (0: one per core).
    pub fn with_jobs(mut self, jobs: usize) -> RepositorySource {
        self.jobs = jobs;
        self
    }

    /// Progress events of the base-backup restore.
    pub fn with_progress(mut self, progress: ProgressSink) -> RepositorySource {
        self.progress = Some(progress);
        self
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The WAL archive.
    pub fn wal(&self) -> &WalArchive {
        &self.wal
    }
}

/// The horizon of a list of archived files: the newest full segment (by segment number,
/// then timeline); history and backup-history files do not extend it.
pub fn horizon_of(entries: &[WalEntry]) -> Option<ArchiveHorizon> {
    let mut best: Option<(&WalEntry, (u64, u32))> = None;
    for e in entries {
        if !matches!(e.file, WalFileName::Segment { .. }) {
            continue;
        }
        let Some(seg) = e.file.segment() else {
            continue;
        };
        let key = (seg, e.file.timeline());
        if best.is_none_or(|(_, k)| key > k) {
            best = Some((e, key));
        }
    }
    let (e, _) = best?;
    // A store without modification times: the newest push time of any file is the best
    // lower bound there is; with none at all, the epoch (every time target then looks
    // beyond the archive, which is refused rather than silently cut short).
    let pushed = e
        .pushed_at
        .or_else(|| entries.iter().filter_map(|x| x.pushed_at).max())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Some(ArchiveHorizon {
        segment: e.file,
        newest_push_time: pushed,
    })
}

#[async_trait]
impl BaseBackupSource for RepositorySource {
    async fn base_backups(&self) -> Result<Vec<Manifest>, BackupError> {
        let inv = self.repo.inventory().await?;
        let mut out = Vec::new();
        for b in inv
            .backups
            .iter()
            .filter(|b| b.kind == BackupKind::Physical)
        {
            if let Some(m) = self.repo.manifest(&b.id).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    async fn archive_horizon(&self) -> Result<Option<ArchiveHorizon>, BackupError> {
        Ok(horizon_of(&self.wal.list().await?))
    }

    async fn restore_base(&self, backup: &Manifest, target_dir: &Path) -> Result<(), BackupError> {
        use std::os::unix::fs::MetadataExt;
        let owner = if nix::unistd::geteuid().is_root() {
            let meta = std::fs::metadata(target_dir)
                .map_err(|e| BackupError::io(format!("read {}", target_dir.display()), e))?;
            Some((meta.uid(), meta.gid()))
        } else {
            None
        };
        let opts = PhysicalRestoreOptions {
            encryption: self.encryption.clone(),
            jobs: self.jobs,
            replace: false,
            owner,
            progress: self.progress.clone(),
        };
        restore_physical_manifest(&self.repo, backup, target_dir, &opts).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::DEFAULT_WAL_SEGMENT_SIZE;
    use jiff::Timestamp;

    fn entry(name: &str, pushed: Option<&str>) -> WalEntry {
        WalEntry {
            name: name.into(),
            file: WalFileName::parse(name, DEFAULT_WAL_SEGMENT_SIZE).unwrap(),
            key: format!("wal/x/{name}.tejwal"),
            stored_size: 1,
            pushed_at: pushed.map(|p| p.parse::<Timestamp>().unwrap()),
        }
    }

    #[test]
    fn horizon_is_the_highest_segment_then_timeline_ignoring_history_files() {
        let entries = vec![
            entry("000000010000000000000005", Some("2026-01-01T00:05:00Z")),
            entry("000000010000000000000004", Some("2026-01-01T00:09:00Z")),
            entry("000000020000000000000005", Some("2026-01-01T00:06:00Z")),
            entry("00000002.history", Some("2026-01-01T00:10:00Z")),
            entry(
                "000000010000000000000003.00000028.backup",
                Some("2026-01-01T00:11:00Z"),
            ),
        ];
        let h = horizon_of(&entries).unwrap();
        assert_eq!(h.segment.to_string(), "000000020000000000000005");
        assert_eq!(h.newest_push_time.to_string(), "2026-01-01T00:06:00Z");
    }

    #[test]
    fn no_segment_means_no_horizon_and_missing_times_fall_back() {
        assert!(horizon_of(&[entry("00000002.history", None)]).is_none());
        let h = horizon_of(&[
            entry("000000010000000000000002", None),
            entry("000000010000000000000001", Some("2026-01-01T00:01:00Z")),
        ])
        .unwrap();
        assert_eq!(h.newest_push_time.to_string(), "2026-01-01T00:01:00Z");
        let h = horizon_of(&[entry("000000010000000000000002", None)]).unwrap();
        assert_eq!(h.newest_push_time, Timestamp::UNIX_EPOCH);
    }
}
